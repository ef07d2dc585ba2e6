// The edge's nginx, run as a child of the agent: started once, reloaded with SIGHUP (old workers finish their
// requests) when the config's shape changes, handed new task addresses over its local socket when only they
// change, stopped gracefully with SIGQUIT.
import { spawn } from 'node:child_process';
import { chmod, rm } from 'node:fs/promises';
import http from 'node:http';
import type { ChildProcess } from 'node:child_process';
import { SwarmgateError } from '../errors.ts';
import { bundleArguments } from '../nginx/nginx-validator.ts';
import { localSocketGet } from './edge-metrics.ts';

export interface NginxProcess {
  /**
   * Starts nginx and resolves once it serves (its peers socket answers). Rejects, with nginx stopped, when it
   * exits or does not answer in time: a config it cannot load never leaves a half-started edge.
   */
  start(confPath: string): Promise<void>;
  reload(): void;
  /**
   * Hands nginx new task addresses (a peers.txt of the config it runs) without a reload. False when nginx did not
   * take them (not running, or still switching configs after a reload): then a reload does the job.
   */
  updatePeers(peersText: string, signal: AbortSignal): Promise<boolean>;
  /**
   * POST /early: the hosts the running nginx serves ahead of the reload (src/render/early-hosts-text.ts's post; ''
   * empties the table). False when it did not take them (not running, a config without early routing, refused).
   */
  updateEarly(body: string, signal: AbortSignal): Promise<boolean>;
  /** GET /peers: what a worker routes to now, in peers.txt form; null when nothing answers. */
  runningPeers(signal: AbortSignal): Promise<string | null>;
  /**
   * GET /health: what the active health checks think of each checked task (src/edge/task-health.ts has the
   * grammar); null when nothing answers or the config has no checks.
   */
  taskHealth(signal: AbortSignal): Promise<string | null>;
  /** GET /unreachable: the members that timed out lately (src/edge/stuck-connections.ts); null when nothing answers. */
  unreachable(signal: AbortSignal): Promise<string | null>;
  stop(graceMs: number): Promise<void>;
  readonly running: boolean;
  /** Called if nginx exits without being asked to, after start resolved. */
  onUnexpectedExit(listener: (code: number | null) => void): void;
}

/** One request to the Lua handler on nginx's local socket: status and body. */
function peersRequest(
  socketPath: string,
  method: 'GET' | 'POST',
  body: string,
  signal: AbortSignal,
  path: '/peers' | '/early' = '/peers',
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        socketPath,
        method,
        path,
        headers: { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) },
        signal: AbortSignal.any([signal, AbortSignal.timeout(5000)]),
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (text += chunk));
        res.once('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
      },
    );
    req.once('error', reject);
    req.end(body);
  });
}

/**
 * How the edge image starts nginx: without CAP_NET_ADMIN, which the edge container holds only so that the agent
 * can cut connections to dead tasks (src/edge/stuck-connections.ts). setpriv (util-linux) then execs nginx, so the
 * child's pid is nginx's own and signals reach it.
 */
export const WITHOUT_NET_ADMIN: readonly string[] = [
  'setpriv',
  '--bounding-set=-net_admin',
  '--inh-caps=-net_admin',
  '--',
];

export function createNginxProcess(
  nginxBinary: string,
  peersSocket: string,
  {
    startTimeoutMs = 60_000,
    launcher = [],
  }: {
    startTimeoutMs?: number;
    /** A command nginx is started through (WITHOUT_NET_ADMIN in the edge image); none in tests. */
    launcher?: readonly string[];
  } = {},
): NginxProcess {
  let child: ChildProcess | null = null;
  let stopping = false;
  const listeners: ((code: number | null) => void)[] = [];
  const isRunning = (): boolean =>
    child?.pid !== undefined && child.exitCode === null && child.signalCode === null;
  const runningPeers = async (signal: AbortSignal): Promise<string | null> => {
    const answer = await peersRequest(peersSocket, 'GET', '', signal).catch(() => null);
    return answer?.status === 200 ? answer.body : null;
  };

  return {
    get running() {
      return isRunning();
    },
    onUnexpectedExit(listener) {
      listeners.push(listener);
    },
    async start(confPath) {
      // A socket left by an nginx that was killed would make the bind fail (the template's other local sockets are
      // named after this one: the balancer's wait, the ACME relay, and the HTTPS and passthrough hops of TLS
      // passthrough).
      for (const suffix of ['', '.wait', '.acme', '.https', '.passthrough']) {
        await rm(`${peersSocket}${suffix}`, { force: true });
      }
      stopping = false;
      const command = [...launcher, nginxBinary, ...bundleArguments(confPath), '-g', 'daemon off;'];
      const proc = spawn(command[0]!, command.slice(1), { stdio: 'inherit' });
      child = proc;
      let started = false;
      const exited = new Promise<number | null>((resolve) => {
        proc.once('exit', (code) => {
          resolve(code);
          if (started && !stopping) for (const listener of listeners) listener(code);
        });
      });
      // Every branch resolves (never rejects), so the losers of the race cannot become unhandled rejections.
      const spawnFailed = new Promise<{ error: Error }>((resolve) =>
        proc.once('error', (error) => resolve({ error })),
      );
      const ready = (async () => {
        const deadline = Date.now() + startTimeoutMs;
        while (Date.now() < deadline && isRunning()) {
          if ((await runningPeers(AbortSignal.timeout(1000))) !== null) return 'ready' as const;
          await new Promise((resolve) => setTimeout(resolve, 25));
        }
        return 'timeout' as const;
      })();
      const outcome = await Promise.race([ready, spawnFailed, exited.then((code) => ({ code }))]);
      if (outcome === 'ready' && isRunning()) {
        started = true;
        // nginx makes unix listeners 0666, and its workers run as nobody: with 0600 only root (the agent) can
        // post peers (I4). Reloads keep the socket (nginx hands it over), so its mode stays.
        await chmod(peersSocket, 0o600).catch(() => undefined);
        return;
      }
      stopping = true;
      if (isRunning()) {
        proc.kill('SIGKILL');
        await exited;
      }
      if (typeof outcome === 'object' && 'error' in outcome) {
        throw new SwarmgateError(
          'ERR_NGINX_UNAVAILABLE',
          `cannot start nginx: ${outcome.error.message}`,
          {},
          outcome.error,
        );
      }
      throw new SwarmgateError(
        'ERR_NGINX_UNAVAILABLE',
        typeof outcome === 'object'
          ? `nginx exited with code ${outcome.code} while starting on ${confPath}`
          : `nginx did not answer on ${peersSocket} within ${startTimeoutMs} ms of starting on ${confPath}`,
      );
    },
    reload() {
      if (!child?.pid) throw new SwarmgateError('ERR_NGINX_UNAVAILABLE', 'nginx is not running');
      child.kill('SIGHUP');
    },
    async updatePeers(peersText, signal) {
      // Right after a reload an old worker can still take the post and answer 409 (another generation); the new
      // workers are up within milliseconds.
      for (let attempt = 0; attempt < 20 && isRunning() && !signal.aborted; attempt++) {
        const status = await peersRequest(peersSocket, 'POST', peersText, signal).then(
          (answer) => answer.status,
          () => 0,
        );
        if (status === 204) return true;
        if (status !== 409 && status !== 0) return false;
        await new Promise((resolve) => setTimeout(resolve, 25));
      }
      return false;
    },
    async updateEarly(body, signal) {
      if (!isRunning()) return false;
      const answer = await peersRequest(peersSocket, 'POST', body, signal, '/early').catch(() => null);
      return answer?.status === 204;
    },
    runningPeers,
    taskHealth: (signal) => localSocketGet(peersSocket, '/health', signal),
    unreachable: (signal) => localSocketGet(peersSocket, '/unreachable', signal),
    async stop(graceMs) {
      stopping = true;
      const proc = child;
      if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
      const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
      proc.kill('SIGQUIT');
      const timer = setTimeout(() => proc.kill('SIGKILL'), graceMs);
      await exited;
      clearTimeout(timer);
    },
  };
}

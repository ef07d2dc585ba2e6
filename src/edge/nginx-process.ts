// The edge's nginx, run as a child of the agent: started once, reloaded with SIGHUP (old workers finish their
// requests) when the config's shape changes, handed new task addresses over its local socket when only they
// change, stopped gracefully with SIGQUIT.
import { spawn } from 'node:child_process';
import http from 'node:http';
import type { ChildProcess } from 'node:child_process';
import { SwarmgateError } from '../errors.ts';
import { bundleArguments } from '../nginx/nginx-validator.ts';

export interface NginxProcess {
  start(confPath: string): Promise<void>;
  reload(): void;
  /**
   * Hands nginx new task addresses (a peers.txt of the config it runs) without a reload. False when nginx did not
   * take them (not running, or still switching configs after a reload): then a reload does the job.
   */
  updatePeers(peersText: string, signal: AbortSignal): Promise<boolean>;
  stop(graceMs: number): Promise<void>;
  readonly running: boolean;
  /** Called if nginx exits without being asked to. */
  onUnexpectedExit(listener: (code: number | null) => void): void;
}

/** Posts peers.txt to the Lua handler on nginx's local socket; the answer's status code. */
function postPeers(socketPath: string, body: string, signal: AbortSignal): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        socketPath,
        method: 'POST',
        path: '/peers',
        headers: { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) },
        signal: AbortSignal.any([signal, AbortSignal.timeout(5000)]),
      },
      (res) => {
        res.resume();
        res.once('end', () => resolve(res.statusCode ?? 0));
      },
    );
    req.once('error', reject);
    req.end(body);
  });
}

export function createNginxProcess(nginxBinary: string, peersSocket: string): NginxProcess {
  let child: ChildProcess | null = null;
  let stopping = false;
  const listeners: ((code: number | null) => void)[] = [];

  return {
    get running() {
      return child !== null && child.exitCode === null && child.signalCode === null;
    },
    onUnexpectedExit(listener) {
      listeners.push(listener);
    },
    start(confPath) {
      return new Promise((resolve, reject) => {
        const proc = spawn(nginxBinary, [...bundleArguments(confPath), '-g', 'daemon off;'], {
          stdio: 'inherit',
        });
        child = proc;
        proc.once('error', (error) =>
          reject(
            new SwarmgateError('ERR_NGINX_UNAVAILABLE', `cannot start nginx: ${error.message}`, {}, error),
          ),
        );
        proc.once('spawn', () => resolve());
        proc.once('exit', (code) => {
          if (!stopping) for (const listener of listeners) listener(code);
        });
      });
    },
    reload() {
      if (!child?.pid) throw new SwarmgateError('ERR_NGINX_UNAVAILABLE', 'nginx is not running');
      child.kill('SIGHUP');
    },
    async updatePeers(peersText, signal) {
      // Right after a reload an old worker can still take the post and answer 409 (another generation); the new
      // workers are up within milliseconds.
      for (let attempt = 0; attempt < 20 && this.running && !signal.aborted; attempt++) {
        const status = await postPeers(peersSocket, peersText, signal).catch(() => 0);
        if (status === 204) return true;
        if (status !== 409 && status !== 0) return false;
        await new Promise((resolve) => setTimeout(resolve, 25));
      }
      return false;
    },
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

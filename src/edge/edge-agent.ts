// The edge agent: no Docker socket. It long-polls the controller for the bundle, checks it (fingerprint, peers.txt,
// nginx -t), swaps it in atomically, reloads nginx and checks nginx took it, and says on its next poll what it
// applied or refused. A saved bundle that is damaged, or that nginx will not start on, is never served or reported:
// the edge serves the built-in empty config (503) and waits for the controller instead of exiting in a loop.
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { defaultProxySettings } from '../config.ts';
import type { EdgeConfig } from '../config.ts';
import { sleep } from '../discovery/event-watcher.ts';
import { describeError, isSwarmgateError, SwarmgateError } from '../errors.ts';
import type { ErrorCode } from '../errors.ts';
import { sendJson } from '../http/json-http.ts';
import type { Logger } from '../logger.ts';
import { EMPTY_MODEL } from '../model/routing-model.ts';
import type { BundleFs } from '../nginx/bundle-dir.ts';
import type { ValidationResult } from '../nginx/nginx-validator.ts';
import type { AppliedBundle, EdgeReport, PublishedBundle, TaskDown } from '../publish/bundle-store.ts';
import type { Clock, TimerHandle } from '../reconcile/clock.ts';
import type { TemplateRenderer } from '../render/nunjucks-env.ts';
import { parsePeers } from '../render/peers-text.ts';
import type { PeersFile } from '../render/peers-text.ts';
import { CERTIFICATE_PEMS_FILE } from '../render/certificates-text.ts';
import { EARLY_HOSTS_FILE, earlyPost } from '../render/early-hosts-text.ts';
import { bundleCertificatesProblem } from '../render/certificate-pairs.ts';
import {
  fingerprintBundle,
  PEERS_FILE,
  renderConfig,
  shapeFingerprint,
  STREAM_PEERS_FILE,
} from '../render/render-config.ts';
import type { BundleFiles } from '../render/render-config.ts';
import { BundleCache } from './bundle-cache.ts';
import { startEdgeMetricsServer } from './edge-metrics.ts';
import { kernelSocketTable, watchStuckConnections } from './stuck-connections.ts';
import type { SocketTable } from './stuck-connections.ts';
import { downForReport, parseTaskHealth } from './task-health.ts';
import type { ControllerChannel } from './controller-channel.ts';
import type { NginxProcess } from './nginx-process.ts';

export type { ControllerChannel } from './controller-channel.ts';

export interface EdgeAgentDeps {
  readonly config: EdgeConfig;
  readonly nodeId: string | null;
  readonly channel: ControllerChannel;
  readonly nginx: NginxProcess;
  readonly testConfig: (confPath: string, signal: AbortSignal) => Promise<ValidationResult>;
  readonly templates: TemplateRenderer;
  readonly logger: Logger;
  readonly clock: Clock;
  readonly version: string;
  /** The edge's volume; tests inject a full, read-only or refusing one. */
  readonly fs?: BundleFs;
  /** How long nginx gets, after a reload, to show (GET /peers) that it runs the new config. */
  readonly reloadTimeoutMs?: number;
  /** The built-in config served when there is no good bundle (503 for every host); tests move its ports. */
  readonly emptyBundle?: () => BundleFiles;
  /** nginx's local socket, where its traffic counts are read; without it the metrics port stays closed. */
  readonly metricsSocket?: string;
  /** Where the metrics port listens (all interfaces unless set; tests use 127.0.0.1). */
  readonly metricsHost?: string;
  /** The kernel's socket table, where stuck connections to dead tasks are found and cut; tests inject one. */
  readonly sockets?: SocketTable;
}

export interface RunningEdge {
  readonly healthPort: number;
  /** Prometheus text of the edge's traffic; null when off. */
  readonly metricsPort: number | null;
  applied(): AppliedBundle | null;
  stop(): Promise<void>;
}

/** An apply that failed for a reason the bundle's bytes will not outgrow: reported, never retried. */
const REFUSALS: readonly ErrorCode[] = ['ERR_BUNDLE_INVALID', 'ERR_NGINX_INVALID', 'ERR_NGINX_RELOAD'];
/** Any other failure (a full or read-only volume, nginx -t that could not run): retried from memory, backing off. */
export const APPLY_RETRY_MIN_MS = 1000;
export const APPLY_RETRY_MAX_MS = 60_000;
/** How often a polling edge looks at its health checks' view, and how long one read may take. */
export const HEALTH_WATCH_MS = 2000;
const HEALTH_READ_TIMEOUT_MS = 1000;

export interface ApplyFailure {
  readonly code: ErrorCode;
  /** The errno of a file-system failure (ENOSPC, EROFS, EPERM, ...). */
  readonly errno: string | null;
  readonly message: string;
  readonly fingerprint: string;
  readonly since: string;
}

/**
 * nginx -t's output with its error lines ([emerg], [alert], [crit], [error]) first. nginx 1.26 warns about every
 * `listen ... http2` before it reaches the error, so with a few dozen HTTPS hosts the warnings alone filled the
 * 1,800 characters an edge reports and the reason was cut off.
 */
function errorsFirst(output: string): string {
  const lines = output.split('\n');
  const isError = (line: string): boolean => /\[(emerg|alert|crit|error)\]/.test(line);
  return [...lines.filter(isError), ...lines.filter((line) => !isError(line))].join('\n');
}

function failureOf(error: unknown, fingerprint: string, now: number): ApplyFailure {
  const errno = (error as NodeJS.ErrnoException | null)?.code;
  return {
    code: isSwarmgateError(error) ? error.code : 'ERR_EDGE_APPLY',
    errno: typeof errno === 'string' && !isSwarmgateError(error) ? errno : null,
    message: describeError(error).slice(0, 1800),
    fingerprint,
    since: new Date(now).toISOString(),
  };
}

/** Same routes: the generation and each upstream's members, whatever the order of the upstream lines. */
function samePeers(a: string, b: string): boolean {
  const canonical = (text: string): string | null => {
    const parsed = parsePeers(text);
    if (!parsed.ok) return null;
    const upstreams = [...parsed.peers.upstreams].sort((x, y) => (x.name < y.name ? -1 : 1));
    return JSON.stringify([parsed.peers.generation, upstreams]);
  };
  const left = canonical(a);
  return left !== null && left === canonical(b);
}

/** What early routing needs of the running bundle: its table and its certificates. */
function pickEarlyFiles(files: BundleFiles): BundleFiles {
  const picked: Record<string, string> = {};
  for (const name of [EARLY_HOSTS_FILE, CERTIFICATE_PEMS_FILE]) {
    const content = files[name];
    if (content !== undefined) picked[name] = content;
  }
  return picked;
}

/** The same, of the saved bundle nginx starts on (a file the bundle lacks is left out). */
async function earlyFilesOf(dir: string): Promise<BundleFiles> {
  const picked: Record<string, string> = {};
  for (const name of [EARLY_HOSTS_FILE, CERTIFICATE_PEMS_FILE]) {
    const content = await readFile(path.join(dir, name), 'utf8').catch(() => undefined);
    if (content !== undefined) picked[name] = content;
  }
  return picked;
}

export async function startEdgeAgent(deps: EdgeAgentDeps): Promise<RunningEdge> {
  const { config, logger, clock } = deps;
  const reloadTimeoutMs = deps.reloadTimeoutMs ?? 30_000;
  const cache = new BundleCache(config.stateDir, deps.fs);
  const shutdown = new AbortController();
  let applied: AppliedBundle | null = null;
  /** The bundle `current` points at and nginx runs (the empty config has no AppliedBundle). */
  let activeFingerprint: string | null = null;
  let rejected: EdgeReport['rejected'] = null;
  /** Digests of certificate pairs found sound in earlier bundles (a renewal adds one; a check costs ~0.1 ms). */
  const soundCertificates = new Set<string>();
  let lastContact: string | null = null;
  let appliedShape: string | null = null;
  let reloads = 0;
  let peerUpdates = 0;
  /** New shapes whose new hosts nginx served before its reload (early routing). */
  let earlyPosts = 0;
  /** A table was posted and not yet emptied (nginx may hold one). */
  let earlyTable = false;
  /** The task addresses of the applied peers.txt (the stuck-connection watch looks at those that leave). */
  let routedMembers = new Set<string>();
  /** Why the edge serves the empty config instead of its saved bundle; cleared by the next apply. */
  let fallback: string | null = null;
  let applyFailure: ApplyFailure | null = null;
  /** The files of the running bundle that early routing compares a new bundle with (src/render/early-hosts-text.ts). */
  let runningEarly: BundleFiles | null = null;

  await cache.removeTemporaries();
  const saved = await cache.loadSaved();
  if (saved.kind === 'intact') {
    try {
      await deps.nginx.start(cache.currentConfPath);
      applied = saved.applied;
      activeFingerprint = saved.applied.fingerprint;
      runningEarly = await earlyFilesOf(path.dirname(cache.currentConfPath));
      logger.info(
        { version: applied.version },
        'serving the last applied bundle until the controller answers',
      );
    } catch (error) {
      fallback = `nginx did not start on the saved bundle (version ${saved.applied.version}): ${describeError(error)}`;
    }
  } else if (saved.kind === 'damaged') {
    fallback = `the saved bundle is damaged: ${saved.reason}`;
  }
  if (!applied) {
    if (fallback)
      logger.error(
        { reason: fallback },
        'not serving the saved bundle; serving 503 until the controller sends one',
      );
    // Nothing (good) yet: serve 503 for every host rather than nothing at all. If even this fails, nginx or the
    // volume is broken beyond what the edge can mend, and exiting is the honest answer.
    const files =
      deps.emptyBundle?.() ??
      renderConfig(
        EMPTY_MODEL,
        // The ACME location trusts the certificate this edge pins, wherever this edge mounts it.
        {
          proxy: { ...defaultProxySettings(), channelCertFile: config.controllerCertFile },
          generator: deps.version,
        },
        deps.templates,
      );
    const fingerprint = fingerprintBundle(files);
    await cache.stage(fingerprint, files);
    await cache.activate(fingerprint, null);
    await deps.nginx.start(cache.currentConfPath);
    activeFingerprint = fingerprint;
    if (!fallback) logger.info('no bundle yet: serving 503 until the controller answers');
  }

  const health = http.createServer((req, res) => {
    const running = deps.nginx.running;
    // Degraded is still 200: the edge serves what it has, and a restart would not mend a full disk.
    const status = !running ? 'nginx-down' : applyFailure || fallback ? 'degraded' : 'ok';
    sendJson(res, running ? 200 : 503, {
      status,
      edge: config.edgeId,
      applied,
      lastContact,
      reloads,
      peerUpdates,
      earlyPosts,
      applyFailure,
      fallback,
    });
  });
  await new Promise<void>((resolve) => health.listen(config.healthPort, '127.0.0.1', () => resolve()));

  const stuck = watchStuckConnections({
    unreachable: (signal) => deps.nginx.unreachable(signal),
    sockets: deps.sockets ?? kernelSocketTable,
    clock,
    logger: logger.child({ component: 'stuck-connections' }),
  });

  const metrics =
    deps.metricsSocket !== undefined && config.metricsPort !== 0
      ? await startEdgeMetricsServer({
          port: config.metricsPort,
          ...(deps.metricsHost === undefined ? {} : { host: deps.metricsHost }),
          socketPath: deps.metricsSocket,
          now: () => clock.now(),
          logger: logger.child({ component: 'metrics' }),
          agent: () => ({
            edge: config.edgeId,
            node: deps.nodeId,
            applied,
            lastContact,
            reloads,
            peerUpdates,
            applyFailing: applyFailure !== null,
            stuckConnectionsCut: stuck.cut(),
          }),
        })
      : null;

  /** After a SIGHUP: nginx answers GET /peers with the new peers, or it kept its old config (ERR_NGINX_RELOAD). */
  async function confirmReload(expected: string): Promise<void> {
    const deadline = clock.now() + reloadTimeoutMs;
    for (;;) {
      const running = await deps.nginx.runningPeers(shutdown.signal);
      if (running !== null && samePeers(running, expected)) return;
      if (clock.now() >= deadline || shutdown.signal.aborted) {
        const generation = running === null ? 'nothing' : (running.split('\n', 1)[0] ?? '');
        throw new SwarmgateError(
          'ERR_NGINX_RELOAD',
          `${reloadTimeoutMs} ms after the reload nginx still answers ${generation.slice(0, 80)}: it kept the previous config (its error log says why)`,
        );
      }
      await sleep(clock, 50, shutdown.signal);
    }
  }

  async function apply(bundle: PublishedBundle): Promise<void> {
    const actual = fingerprintBundle(bundle.files);
    if (actual !== bundle.fingerprint) {
      throw new SwarmgateError('ERR_BUNDLE_INVALID', 'bundle content does not match its fingerprint');
    }
    // nginx -t never runs init_by_lua: peers.txt is checked here, with the grammar the Lua uses.
    const peersText = bundle.files[PEERS_FILE] ?? '';
    const peers = parsePeers(peersText);
    if (!peers.ok) throw new SwarmgateError('ERR_BUNDLE_INVALID', `${PEERS_FILE}: ${peers.reason}`);
    const shape = shapeFingerprint(bundle.files);
    if (peers.peers.generation !== shape) {
      throw new SwarmgateError(
        'ERR_BUNDLE_INVALID',
        `${PEERS_FILE} names another generation than the bundle's shape`,
      );
    }
    // The stream balancer (njs) reads stream-peers.txt per connection and nothing checks it then: same grammar here.
    const streamPeersText = bundle.files[STREAM_PEERS_FILE];
    if (streamPeersText !== undefined) {
      const streamPeers = parsePeers(streamPeersText);
      if (!streamPeers.ok || streamPeers.peers.generation !== shape) {
        throw new SwarmgateError(
          'ERR_BUNDLE_INVALID',
          `${STREAM_PEERS_FILE}: ${streamPeers.ok ? "another generation than the bundle's shape" : streamPeers.reason}`,
        );
      }
    }
    // Same shape as what nginx runs now (only task addresses differ): nginx accepted it, no new nginx -t needed,
    // and the addresses go to the running nginx without a reload.
    const sameShape = shape === appliedShape;
    // nginx -t never reads the certificates nginx picks during the handshake (certificates.txt): checked here. The
    // shape holds them, so a bundle of the running shape has the certificates checked when it was applied (a
    // scaling publish does not read a 5 MB certificates.pem again).
    if (!sameShape) {
      const certificatesProblem = bundleCertificatesProblem(bundle.files, soundCertificates);
      if (certificatesProblem) throw new SwarmgateError('ERR_BUNDLE_INVALID', certificatesProblem);
    }
    // A new shape: its new hosts go to the running nginx's early routing now, ahead of the test and the reload below
    // (half a second at 2,000 hosts), and leave it once the reload is done or failed (finally, below).
    if (!sameShape) await postEarly(bundle.files);
    try {
      await applyShape(bundle, peersText, peers.peers, shape, sameShape);
    } finally {
      if (earlyTable) await clearEarly();
    }
  }

  /** Hands nginx the new hosts of `files` it can serve before the reload. */
  async function postEarly(files: BundleFiles): Promise<void> {
    const body = earlyPost(files, runningEarly);
    if (body === '') return;
    // Set before the answer: a post nginx stored but whose answer was lost is cleared all the same.
    earlyTable = true;
    if (await deps.nginx.updateEarly(body, shutdown.signal)) earlyPosts++;
  }

  /**
   * Empties the table. nginx also ignores it once it runs another config (lua/swarmgate/early.lua binds it to the
   * config that took it); this covers a failed reload or test, when that config keeps running. One that does not
   * go through is tried again after the next apply.
   */
  async function clearEarly(): Promise<void> {
    if (await deps.nginx.updateEarly('', shutdown.signal)) earlyTable = false;
    else logger.warn('nginx did not take the empty early table; asking again after the next bundle');
  }

  async function applyShape(
    bundle: PublishedBundle,
    peersText: string,
    peers: PeersFile,
    shape: string,
    sameShape: boolean,
  ): Promise<void> {
    let confPath: string;
    try {
      confPath = await cache.stage(bundle.fingerprint, bundle.files);
    } catch (error) {
      // A full or read-only volume must not freeze routing on this node: new task addresses need no new files, so
      // they go to the running nginx from memory. The bundle still counts as not applied (reported, retried from
      // memory until the volume takes it); a restart meanwhile starts from the older saved bundle and polls.
      if (sameShape && (await deps.nginx.updatePeers(peersText, shutdown.signal))) {
        peerUpdates++;
        logger.warn(
          { version: bundle.version, err: error },
          'cannot save the bundle; its task addresses are routed from memory',
        );
      }
      throw error;
    }
    const test = sameShape ? ({ ok: true } as const) : await deps.testConfig(confPath, shutdown.signal);
    if (!test.ok) {
      if (bundle.fingerprint !== activeFingerprint) await cache.discard(bundle.fingerprint);
      throw new SwarmgateError('ERR_NGINX_INVALID', errorsFirst(test.output).slice(0, 1800));
    }
    const previous = { fingerprint: activeFingerprint, applied };
    // Activated first: if nginx restarts or the post fails, the reload reads these same files.
    await cache.activate(bundle.fingerprint, { version: bundle.version, fingerprint: bundle.fingerprint });
    const withoutReload = sameShape && (await deps.nginx.updatePeers(peersText, shutdown.signal));
    try {
      if (!withoutReload) {
        deps.nginx.reload();
        reloads++;
        await confirmReload(peersText);
      }
    } catch (error) {
      // nginx still runs the previous config: point `current` back at it, so a restart loads what ran.
      if (previous.fingerprint && previous.fingerprint !== bundle.fingerprint) {
        await cache
          .activate(previous.fingerprint, previous.applied)
          .catch((rollback: unknown) =>
            logger.error({ err: rollback }, 'cannot point current back at the running bundle'),
          );
      }
      throw error;
    }
    if (withoutReload) peerUpdates++;
    // Tasks that left the routes may have left requests on connections to a dead node (the controller drops a down
    // node's tasks before any connect to them may have timed out): watched for a while.
    const members = new Set(
      peers.upstreams.flatMap((upstream) => upstream.members.map(({ ip, port }) => `${ip}:${port}`)),
    );
    stuck.watch([...routedMembers].filter((member) => !members.has(member)));
    routedMembers = members;
    applied = { version: bundle.version, fingerprint: bundle.fingerprint };
    activeFingerprint = bundle.fingerprint;
    appliedShape = shape;
    runningEarly = pickEarlyFiles(bundle.files);
    rejected = null;
    fallback = null;
    // Keep the previous bundle too, so a reload that is still finishing never loses files under it.
    await cache
      .prune([bundle.fingerprint, ...(previous.fingerprint ? [previous.fingerprint] : [])])
      .catch((error: unknown) => logger.warn({ err: error }, 'cannot remove old bundles'));
    logger.info(
      { version: bundle.version, fingerprint: bundle.fingerprint.slice(0, 12), reload: !withoutReload },
      'applied bundle',
    );
  }

  /** A bundle that could not be applied for a passing reason, kept in memory and retried (no new download). */
  interface Retained {
    readonly bundle: PublishedBundle;
    readonly retryAt: number;
    readonly backoff: number;
  }
  // (A cast: TypeScript would otherwise narrow it to null in the loop, not seeing the writes in applyOrRecord.)
  let retained = null as Retained | null;

  async function applyOrRecord(bundle: PublishedBundle, backoff: number): Promise<void> {
    try {
      await apply(bundle);
      retained = null;
      applyFailure = null;
    } catch (error) {
      if (shutdown.signal.aborted) return;
      const failure = failureOf(error, bundle.fingerprint, clock.now());
      // Reported either way, so the controller shows why and does not send the same bundle again.
      rejected = {
        fingerprint: bundle.fingerprint,
        error: `${failure.code}${failure.errno ? ` (${failure.errno})` : ''}: ${failure.message}`,
      };
      if (REFUSALS.includes(failure.code)) {
        retained = null;
        applyFailure = null;
        logger.error(
          { version: bundle.version, code: failure.code, err: error },
          'bundle refused; keeping the last one',
        );
        return;
      }
      applyFailure = failure;
      retained = {
        bundle,
        retryAt: clock.now() + backoff,
        backoff: Math.min(backoff * 2, APPLY_RETRY_MAX_MS),
      };
      logger.error(
        { version: bundle.version, code: failure.code, errno: failure.errno, err: error, retryMs: backoff },
        'cannot apply the bundle; serving the last one and retrying',
      );
    }
  }

  // What the health checks found (lua/swarmgate/health.lua), as the last report said it; `checking` once nginx
  // answered GET /health (its config has checks): only then is it watched during a poll.
  let tasksDown: TaskDown[] = [];
  let tasksDownOmitted = 0;
  let checking = false;
  const downKey = (down: readonly TaskDown[], omitted: number): string =>
    JSON.stringify([down.map((task) => [task.address, task.upstream, task.since]), omitted]);
  async function readTaskHealth(): Promise<{ down: TaskDown[]; omitted: number }> {
    const text = await deps.nginx
      .taskHealth(AbortSignal.any([shutdown.signal, AbortSignal.timeout(HEALTH_READ_TIMEOUT_MS)]))
      .catch(() => null);
    checking = text !== null;
    return text === null ? { down: [], omitted: 0 } : downForReport(parseTaskHealth(text));
  }
  /**
   * During a long poll, nginx's health view is read every HEALTH_WATCH_MS; a change ends the poll (`wake`), so the
   * next report tells the controller within seconds and not at the end of the long-poll window.
   */
  function watchTaskHealth(wake: AbortController): () => void {
    let timer: TimerHandle | null = null;
    let done = false;
    const check = (): void => {
      void readTaskHealth().then(({ down, omitted }) => {
        if (done) return;
        if (downKey(down, omitted) !== downKey(tasksDown, tasksDownOmitted)) wake.abort();
        else timer = clock.setTimer(HEALTH_WATCH_MS, check);
      });
    };
    if (checking) timer = clock.setTimer(HEALTH_WATCH_MS, check);
    return () => {
      done = true;
      timer?.cancel();
    };
  }

  const loop = (async () => {
    let backoff = 250;
    let failures = 0;
    while (!shutdown.signal.aborted) {
      if (retained && clock.now() >= retained.retryAt) await applyOrRecord(retained.bundle, retained.backoff);
      // While a bundle waits for its retry, the long poll ends at the retry time (the controller holds it open,
      // since the edge reported that bundle).
      const wake = new AbortController();
      let timer: TimerHandle | null = null;
      if (retained) timer = clock.setTimer(Math.max(0, retained.retryAt - clock.now()), () => wake.abort());
      ({ down: tasksDown, omitted: tasksDownOmitted } = await readTaskHealth());
      const stopWatching = watchTaskHealth(wake);
      try {
        const report: EdgeReport = {
          edge: config.edgeId,
          node: deps.nodeId,
          applied,
          rejected,
          reloads,
          peerUpdates,
          tasksDown,
          tasksDownOmitted,
        };
        // The applied bundle is the base: the controller sends only what changed since it.
        const bundle = await deps.channel.poll(
          report,
          AbortSignal.any([shutdown.signal, wake.signal]),
          applied ? cache.baseFor(applied.fingerprint) : null,
        );
        lastContact = new Date(clock.now()).toISOString();
        if (failures > 0) logger.info({ failures }, 'controller reachable again');
        failures = 0;
        backoff = 250;
        // Versions only move forward: an older or equal one is a replay, never applied.
        if (bundle && applied && bundle.version <= applied.version) {
          rejected = {
            fingerprint: bundle.fingerprint,
            error: `version ${bundle.version} is not above the applied version ${applied.version}`,
          };
          logger.error(
            { version: bundle.version, applied: applied.version },
            'refused a bundle that does not move the version forward',
          );
        } else if (bundle) await applyOrRecord(bundle, APPLY_RETRY_MIN_MS);
      } catch (error) {
        if (shutdown.signal.aborted) break;
        if (wake.signal.aborted) continue;
        failures++;
        // Log the first failure and then every tenth, so a long controller outage does not flood the log.
        if (failures === 1 || failures % 10 === 0) {
          logger.warn(
            { err: describeError(error), failures },
            'controller poll failed; serving the last applied bundle',
          );
        }
        await sleep(clock, backoff, shutdown.signal);
        backoff = Math.min(backoff * 2, config.retryMaxMs);
      } finally {
        timer?.cancel();
        stopWatching();
      }
    }
  })();

  return {
    healthPort: (health.address() as AddressInfo).port,
    metricsPort: metrics?.port ?? null,
    applied: () => applied,
    async stop() {
      shutdown.abort();
      await stuck.stop();
      await loop;
      await new Promise<void>((resolve) => health.close(() => resolve()));
      await metrics?.close();
      await deps.nginx.stop(10_000);
      logger.info('edge stopped');
    },
  };
}

// The edge agent: no Docker socket. It long-polls the controller for the bundle, checks it (fingerprint, then
// nginx -t), swaps it in atomically, reloads nginx, and says on its next poll what it applied or refused.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { defaultProxySettings } from '../config.ts';
import type { EdgeConfig } from '../config.ts';
import { sleep } from '../discovery/event-watcher.ts';
import { describeError, SwarmgateError } from '../errors.ts';
import { sendJson } from '../http/json-http.ts';
import type { Logger } from '../logger.ts';
import { EMPTY_MODEL } from '../model/routing-model.ts';
import type { ValidationResult } from '../nginx/nginx-validator.ts';
import type { AppliedBundle, EdgeReport, PublishedBundle } from '../publish/bundle-store.ts';
import type { Clock } from '../reconcile/clock.ts';
import type { TemplateRenderer } from '../render/nunjucks-env.ts';
import { fingerprintBundle, PEERS_FILE, renderConfig, shapeFingerprint } from '../render/render-config.ts';
import { BundleCache } from './bundle-cache.ts';
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
}

export interface RunningEdge {
  readonly healthPort: number;
  applied(): AppliedBundle | null;
  stop(): Promise<void>;
}

export async function startEdgeAgent(deps: EdgeAgentDeps): Promise<RunningEdge> {
  const { config, logger, clock } = deps;
  const cache = new BundleCache(config.stateDir);
  const shutdown = new AbortController();
  let applied = await cache.readApplied();
  let rejected: EdgeReport['rejected'] = null;
  let lastContact: string | null = null;
  let appliedShape: string | null = null;
  let reloads = 0;
  let peerUpdates = 0;

  if (applied) {
    logger.info({ version: applied.version }, 'serving the last applied bundle until the controller answers');
  } else if (!(await cache.hasCurrent())) {
    // Nothing yet: serve 503 for every host rather than nothing at all.
    const files = renderConfig(
      EMPTY_MODEL,
      { proxy: defaultProxySettings(), generator: deps.version },
      deps.templates,
    );
    const fingerprint = fingerprintBundle(files);
    await cache.stage(fingerprint, files);
    await cache.activate(fingerprint, null);
    logger.info('no bundle yet: serving 503 until the controller answers');
  }
  await deps.nginx.start(cache.currentConfPath);

  const health = http.createServer((req, res) => {
    const ok = deps.nginx.running;
    sendJson(res, ok ? 200 : 503, {
      status: ok ? 'ok' : 'nginx-down',
      edge: config.edgeId,
      applied,
      lastContact,
      reloads,
      peerUpdates,
    });
  });
  await new Promise<void>((resolve) => health.listen(config.healthPort, '127.0.0.1', () => resolve()));

  async function apply(bundle: PublishedBundle): Promise<void> {
    const actual = fingerprintBundle(bundle.files);
    if (actual !== bundle.fingerprint) {
      throw new SwarmgateError('ERR_BUNDLE_INVALID', 'bundle content does not match its fingerprint');
    }
    const confPath = await cache.stage(bundle.fingerprint, bundle.files);
    // Same shape as what nginx runs now (only task addresses differ): nginx accepted it, no new nginx -t needed,
    // and the addresses go to the running nginx without a reload.
    const shape = shapeFingerprint(bundle.files);
    const sameShape = shape === appliedShape;
    const test = sameShape ? ({ ok: true } as const) : await deps.testConfig(confPath, shutdown.signal);
    if (!test.ok) {
      rejected = { fingerprint: bundle.fingerprint, error: test.output.slice(0, 2000) };
      await cache.discard(bundle.fingerprint);
      logger.error(
        { version: bundle.version, output: test.output },
        'nginx rejected the bundle; keeping the last one',
      );
      return;
    }
    const previous = applied?.fingerprint;
    // Activated first: if nginx restarts or the post fails, the reload reads these same files.
    await cache.activate(bundle.fingerprint, { version: bundle.version, fingerprint: bundle.fingerprint });
    const peers = bundle.files[PEERS_FILE];
    const withoutReload =
      sameShape && peers !== undefined && (await deps.nginx.updatePeers(peers, shutdown.signal));
    if (withoutReload) peerUpdates++;
    else {
      deps.nginx.reload();
      reloads++;
    }
    applied = { version: bundle.version, fingerprint: bundle.fingerprint };
    appliedShape = shape;
    rejected = null;
    // Keep the previous bundle too, so a reload that is still finishing never loses files under it.
    await cache.prune([bundle.fingerprint, ...(previous ? [previous] : [])]);
    logger.info(
      { version: bundle.version, fingerprint: bundle.fingerprint.slice(0, 12), reload: !withoutReload },
      'applied bundle',
    );
  }

  const loop = (async () => {
    let backoff = 250;
    let failures = 0;
    while (!shutdown.signal.aborted) {
      try {
        const report: EdgeReport = {
          edge: config.edgeId,
          node: deps.nodeId,
          applied,
          rejected,
          reloads,
          peerUpdates,
        };
        const bundle = await deps.channel.poll(report, shutdown.signal);
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
        } else if (bundle) await apply(bundle);
      } catch (error) {
        if (shutdown.signal.aborted) break;
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
      }
    }
  })();

  return {
    healthPort: (health.address() as AddressInfo).port,
    applied: () => applied,
    async stop() {
      shutdown.abort();
      await loop;
      await new Promise<void>((resolve) => health.close(() => resolve()));
      await deps.nginx.stop(10_000);
      logger.info('edge stopped');
    },
  };
}

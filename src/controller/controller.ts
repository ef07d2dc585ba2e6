// The controller role: discovery triggers, the reconcile loop, and the HTTP API, wired together.
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import os from 'node:os';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import type { AcmePort } from '../acme/acme-adapter.ts';
import { CertificateManager } from '../acme/certificate-manager.ts';
import { StateLease } from '../acme/state-lease.ts';
import { StateStore } from '../acme/state-store.ts';
import type { LoadedCertificate } from '../acme/user-certificates.ts';
import type { ControllerConfig } from '../config.ts';
import { describeError, SwarmgateError } from '../errors.ts';
import { CredentialStore } from '../registry/credential-store.ts';
import { httpsTransport, RegistryClient } from '../registry/registry-client.ts';
import type { RegistryTransport } from '../registry/registry-client.ts';
import type { DockerPort } from '../docker/docker-port.ts';
import { sleep, watchSwarmEvents } from '../discovery/event-watcher.ts';
import type { Logger } from '../logger.ts';
import type { NginxValidator } from '../nginx/nginx-validator.ts';
import { BundleStore } from '../publish/bundle-store.ts';
import { acquireVersionEpoch, VERSIONS_PER_EPOCH } from '../publish/version-epoch.ts';
import type { Clock } from '../reconcile/clock.ts';
import { Reconciler } from '../reconcile/reconciler.ts';
import type { TemplateRenderer } from '../render/nunjucks-env.ts';
import { EdgeTraffic } from '../admin/status-page/edge-traffic.ts';
import { buildStatusView } from '../admin/status-page/status-view.ts';
import type { StatusPageDeps } from '../admin/status-page/status-routes.ts';
import {
  createChallengeServer,
  createControllerRouter,
  createHealthRouter,
  createStatusServer,
} from './controller-api.ts';
import { livenessOf, reconcileBoundOf, trackDockerCalls } from './liveness.ts';
import type { Liveness } from './liveness.ts';

export interface ControllerDeps {
  readonly config: ControllerConfig;
  /** Operators' token (swarmgate_token). */
  readonly adminToken: string;
  /** Edges' token (swarmgate_edge_token): the edge poll only. */
  readonly edgeToken: string;
  /** The API's TLS key pair (PEM); edges pin the certificate. */
  readonly channelTls: { readonly key: string; readonly cert: string };
  readonly docker: DockerPort;
  readonly validator: NginxValidator;
  readonly templates: TemplateRenderer;
  readonly logger: Logger;
  readonly clock: Clock;
  readonly version: string;
  readonly acme: AcmePort;
  /** 32 bytes that seal the state kept in Swarm (from the swarmgate_state_key secret). */
  readonly stateKey: Buffer;
  readonly userCertificates: readonly LoadedCertificate[];
  /** How registry browsing reaches registries; tests pass a fake. */
  readonly registryTransport?: RegistryTransport;
}

export interface RunningController {
  /** The HTTPS API. */
  readonly port: number;
  /** HTTPS with the channel key pair: ACME challenge tokens only. */
  readonly challengePort: number;
  /** Plain HTTP on 127.0.0.1: /healthz and /readyz. */
  readonly healthPort: number;
  /** HTTPS with the channel key pair, the status page only (the admin host's way in); null: no admin host. */
  readonly statusPort: number | null;
  /** Every route of the status listener; empty without an admin host. */
  readonly statusRoutes: readonly { readonly method: string; readonly path: string }[];
  liveness(): Liveness;
  /** Every route of the HTTPS API (method and path pattern). */
  readonly routes: readonly { readonly method: string; readonly path: string }[];
  readonly store: BundleStore;
  readonly reconciler: Reconciler;
  readonly certificates: CertificateManager;
  stop(): Promise<void>;
}

/** Shortest admin token accepted when the login form faces the internet (SWARMGATE_ADMIN_HOST). */
export const MIN_ADMIN_TOKEN_WITH_ADMIN_HOST = 32;

export async function startController(deps: ControllerDeps): Promise<RunningController> {
  const { config, logger, clock } = deps;
  if (deps.adminToken === deps.edgeToken) {
    // One value for both would give every edge the admin power the split exists to withhold.
    throw new SwarmgateError(
      'ERR_CONFIG_INVALID',
      `the edge token (${config.edgeTokenFile}) must differ from the admin token (${config.tokenFile})`,
    );
  }
  if (config.proxy.adminHost !== null && deps.adminToken.length < MIN_ADMIN_TOKEN_WITH_ADMIN_HOST) {
    // The admin host puts the login form on the internet: a short token could be guessed there.
    throw new SwarmgateError(
      'ERR_CONFIG_INVALID',
      `SWARMGATE_ADMIN_HOST needs an admin token (${config.tokenFile}) of at least ${MIN_ADMIN_TOKEN_WITH_ADMIN_HOST} characters (scripts/create-secrets.sh makes 64)`,
    );
  }
  const startedAt = clock.now();
  const shutdown = new AbortController();
  const tracked = trackDockerCalls(deps.docker, clock);
  const docker = tracked.docker;
  const store = new BundleStore(clock);
  // Only the lease holder orders and writes state; each process is a new holder (a new fence token).
  const lease = new StateLease({
    docker,
    clock,
    logger: logger.child({ component: 'state-lease' }),
    instance: config.instance,
    holder: `${os.hostname()}-${randomUUID().slice(0, 8)}`,
  });
  const stateStore = new StateStore(docker, deps.stateKey, { instance: config.instance, fence: lease });
  const credentials = new CredentialStore(stateStore, clock);
  const certificates = new CertificateManager({
    acme: deps.acme,
    store: stateStore,
    clock,
    logger: logger.child({ component: 'acme' }),
    settings: config.tls.acme,
    userCertificates: deps.userCertificates,
    onChange: () => reconciler.trigger('certificate'),
    lease,
  });
  const reconciler: Reconciler = new Reconciler(
    {
      docker,
      validator: deps.validator,
      templates: deps.templates,
      store,
      logger: logger.child({ component: 'reconciler' }),
      clock,
      certificates,
    },
    {
      networks: config.networks,
      debounce: config.debounce,
      fastPollMs: config.fastPollMs,
      fastPollWindowMs: config.fastPollWindowMs,
      proxy: config.proxy,
      generator: deps.version,
      tlsDefaults: {
        httpsMethod: config.tls.httpsMethod,
        hsts: config.tls.hsts,
        sslPolicy: config.tls.sslPolicy,
        acmeEmail: config.tls.acme.email,
        acmeDirectory: config.tls.acme.directoryUrl,
        acmeStagingDirectory: config.tls.acme.stagingDirectoryUrl,
        acmeDirectories: config.tls.acme.allowedDirectoryUrls,
        http3: config.tls.http3,
      },
      nonGetRedirect: config.tls.nonGetRedirect,
      defaultCertificate: config.tls.defaultCertificate,
    },
  );

  // Live traffic per route for the status page, from every edge's metrics port; none to read while edges count
  // nothing (SWARMGATE_TRAFFIC_METRICS=false), and the page then says traffic is off.
  const traffic = new EdgeTraffic({
    targets: config.proxy.trafficMetrics ? config.edgeMetricsTargets : [],
    intervalMs: config.edgeMetricsIntervalMs,
    clock,
    logger: logger.child({ component: 'edge-traffic' }),
  });
  const statusPage: StatusPageDeps = {
    adminToken: deps.adminToken,
    clock,
    logger: logger.child({ component: 'status-page' }),
    pushIntervalMs: 1000,
    view: () =>
      buildStatusView({
        now: clock.now(),
        version: deps.version,
        snapshot: reconciler.lastSnapshot,
        model: reconciler.currentModel,
        current: store.current,
        edges: store.edges(),
        certificates: certificates.status(),
        traffic: traffic.enabled ? traffic.routes() : null,
        edgeStaleMs: 90_000,
      }),
  };
  const router = createControllerRouter({
    adminToken: deps.adminToken,
    edgeToken: deps.edgeToken,
    store,
    reconciler,
    certificates,
    version: deps.version,
    edgeLongPollMs: config.edgeLongPollMs,
    admin: {
      docker,
      reconciler,
      store,
      certificates,
      credentials,
      registry: new RegistryClient(deps.registryTransport ?? httpsTransport, clock),
      clock,
      logger: logger.child({ component: 'admin' }),
      maxReplicas: config.maxReplicas,
      edgeLongPollMs: config.edgeLongPollMs,
      requestCounts: new Map(),
      statusPage,
    },
  });
  // A slow poll makes a Docker call every slowPollMs: the bound is never shorter than a few of them.
  const dockerBoundMs = Math.max(config.livenessDockerMs, 3 * config.slowPollMs);
  const liveness = (): Liveness => {
    const last = reconciler.lastOutcome;
    return livenessOf({
      now: clock.now(),
      startedAt,
      lastDockerSuccessAt: tracked.lastSuccessAt(),
      reconcileRunningSince: reconciler.runningSince,
      dockerBoundMs,
      reconcileTimeoutMs: reconciler.timeoutMs,
      lastReconcileFinishedAt: last ? Date.parse(last.at) + last.durationMs : null,
      reconcileBoundMs: reconcileBoundOf(dockerBoundMs, reconciler.timeoutMs, config.slowPollMs),
    });
  };
  const healthRouter = createHealthRouter({ store, liveness });

  const api = https.createServer(
    { key: deps.channelTls.key, cert: deps.channelTls.cert, minVersion: 'TLSv1.3' },
    (req, res) => void router.handle(req, res),
  );
  api.keepAliveTimeout = 75_000;
  const challenge = createChallengeServer(deps.channelTls, certificates);
  const health = http.createServer((req, res) => void healthRouter.handle(req, res));
  // Opened only with an admin host: without one, nothing of the page is meant to be reachable through an edge.
  const status = config.proxy.adminHost === null ? null : createStatusServer(deps.channelTls, statusPage);
  const servers = [api, challenge, health, ...(status ? [status.server] : [])];
  const listen = (server: http.Server, port: number, host?: string): Promise<number> =>
    new Promise<number>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => resolve((server.address() as AddressInfo).port));
    });
  const port = await listen(api, config.listenPort);
  const challengePort = await listen(challenge, config.challengePort);
  const healthPort = await listen(health, config.healthPort, '127.0.0.1');
  const statusPort = status ? await listen(status.server, config.statusPort) : null;
  logger.info(
    {
      port,
      challengePort,
      healthPort,
      statusPort,
      adminHost: config.proxy.adminHost,
      networks: config.networks,
    },
    'controller listening',
  );

  // Certificates first: a first bundle rendered without them would drop HTTPS on every edge, and an order placed
  // before the stored certificates are known could duplicate one.
  const discovery = (async () => {
    for (let delay = 500; !shutdown.signal.aborted; delay = Math.min(delay * 2, 30_000)) {
      try {
        // The first lease round before the state is read: a single controller can write (credentials) at once.
        await lease.tick(shutdown.signal);
        // Versions from Swarm's Raft index, before anything can publish: above every version an earlier controller
        // published, whatever edges report.
        if (store.versionsLeft === 0)
          store.startEpoch(await acquireVersionEpoch(docker, config.instance, shutdown.signal));
        const state = await stateStore.load(shutdown.signal);
        for (const [name, reason] of state.unreadable) {
          if (name.startsWith('registry.'))
            logger.error({ state: name, reason }, 'stored registry credentials cannot be opened');
        }
        certificates.adoptState(state);
        credentials.adopt(state.values);
        break;
      } catch (error) {
        logger.error(
          { err: describeError(error), retryInMs: delay },
          'cannot read the certificate state yet',
        );
        await sleep(clock, delay, shutdown.signal);
      }
    }
    const watcher = watchSwarmEvents({
      docker,
      clock,
      logger: logger.child({ component: 'events' }),
      signal: shutdown.signal,
      onConnect: () => void reconciler.reconcileNow(),
      onEvent: (event) => reconciler.trigger(`${event.Type ?? '?'}:${event.Action ?? '?'}`),
    });
    const scraping = traffic.run(shutdown.signal);
    // Task state changes and node loss emit no events: a slow poll is the safety net.
    while (!shutdown.signal.aborted) {
      await sleep(clock, config.slowPollMs, shutdown.signal);
      if (shutdown.signal.aborted) break;
      // A new epoch long before this one runs out (half of it left: years at any real publish rate).
      if (store.versionsLeft < VERSIONS_PER_EPOCH / 2) {
        try {
          store.startEpoch(await acquireVersionEpoch(docker, config.instance, shutdown.signal));
        } catch (error) {
          logger.warn(
            { err: describeError(error) },
            'no new version epoch yet; trying again at the next poll',
          );
        }
      }
      reconciler.trigger('poll');
    }
    await watcher;
    await scraping;
  })();

  return {
    port,
    challengePort,
    healthPort,
    statusPort,
    statusRoutes: status?.routes ?? [],
    liveness,
    routes: router.list(),
    store,
    reconciler,
    certificates,
    async stop() {
      shutdown.abort();
      reconciler.stop();
      await certificates.stop();
      await Promise.all(
        servers.map(
          (server) =>
            new Promise<void>((resolve) => {
              server.close(() => resolve());
              server.closeAllConnections();
            }),
        ),
      );
      await Promise.allSettled([discovery, reconciler.idle()]);
      logger.info('controller stopped');
    },
  };
}

// The admin API: routed services, scaling, registry credentials, image rollout, registry browsing, metrics.
// Every route here is behind the bearer token; bad input is a coded 4xx and changes nothing.
import type { ServerResponse } from 'node:http';
import type { CertificateManager } from '../acme/certificate-manager.ts';
import type { DockerPort } from '../docker/docker-port.ts';
import type { TaskInfo } from '../discovery/snapshot.ts';
import { SwarmgateError } from '../errors.ts';
import { readJsonBody, sendJson } from '../http/json-http.ts';
import type { RouteContext, RouteHandler, Router } from '../http/router.ts';
import type { Logger } from '../logger.ts';
import { MetricsWriter } from '../metrics.ts';
import type { RoutedService } from '../model/routing-model.ts';
import type { BundleStore } from '../publish/bundle-store.ts';
import type { Clock } from '../reconcile/clock.ts';
import type { Reconciler } from '../reconcile/reconciler.ts';
import { REGISTRY_HOST } from '../registry/credential-store.ts';
import type { CredentialStore } from '../registry/credential-store.ts';
import { parseImageReference } from '../registry/image-reference.ts';
import type { RegistryClient } from '../registry/registry-client.ts';
import { sleep } from '../discovery/event-watcher.ts';
import { describeEdges, rolloutStatus } from './rollout-status.ts';
import type { EdgeCondition, RolloutGoal, RolloutStatus } from './rollout-status.ts';
import { rollServiceImage, scaleService } from './service-operations.ts';
import { addStatusPage } from './status-page/status-routes.ts';
import type { StatusPageDeps } from './status-page/status-routes.ts';

export interface AdminDeps {
  readonly docker: DockerPort;
  readonly reconciler: Reconciler;
  readonly store: BundleStore;
  readonly certificates: CertificateManager;
  readonly credentials: CredentialStore;
  readonly registry: RegistryClient;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly maxReplicas: number;
  /** The edges' long-poll window: it bounds how long a live edge is silent (see rollout-status.ts). */
  readonly edgeLongPollMs: number;
  /** Requests served, by route and status class, for /metrics. */
  readonly requestCounts: Map<string, number>;
  /** The status page (login, page, live events); absent: not served. */
  readonly statusPage?: StatusPageDeps;
}

const BODY_LIMIT_BYTES = 64 * 1024;
const DEFAULT_WAIT_SECONDS = 60;
const MAX_WAIT_SECONDS = 600;
/** A wait checks again this often (a reconcile each time); the injected clock times it. */
const WAIT_STEP_MS = 200;

function bad(message: string): never {
  throw new SwarmgateError('ERR_BAD_REQUEST', message);
}

async function readObject(
  context: RouteContext,
  allowed: readonly string[],
): Promise<Record<string, unknown>> {
  const body = await readJsonBody(context.req, BODY_LIMIT_BYTES);
  if (typeof body !== 'object' || body === null || Array.isArray(body)) bad('the body must be a JSON object');
  const record = body as Record<string, unknown>;
  const unknown = Object.keys(record).filter((key) => !allowed.includes(key));
  if (unknown.length > 0) bad(`unknown field(s): ${unknown.join(', ')} (allowed: ${allowed.join(', ')})`);
  return record;
}

/** `wait`: false/absent (answer at once), true (the default deadline) or a number of seconds. */
function waitSeconds(value: unknown): number | null {
  if (value === undefined || value === false) return null;
  if (value === true) return DEFAULT_WAIT_SECONDS;
  if (typeof value === 'number' && Number.isInteger(value) && value > 0 && value <= MAX_WAIT_SECONDS)
    return value;
  return bad(`"wait" must be true, false or whole seconds 1..${MAX_WAIT_SECONDS}`);
}

function serviceName(params: Readonly<Record<string, string>>): string {
  const name = params.name ?? '';
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/.test(name)) bad(`"${name}" is not a service name`);
  return name;
}

function registryHost(params: Readonly<Record<string, string>>): string {
  const host = (params.host ?? '').toLowerCase();
  if (!REGISTRY_HOST.test(host)) bad(`"${host}" is not a registry host (name[:port])`);
  return host;
}

function paging(query: URLSearchParams): { n: number; last: string | null } {
  const rawN = query.get('n') ?? '100';
  if (!/^\d{1,4}$/.test(rawN) || Number(rawN) < 1 || Number(rawN) > 1000) bad('"n" must be 1..1000');
  const last = query.get('last');
  if (last !== null && (last.length > 256 || /\s/.test(last))) bad('"last" is not a valid cursor');
  return { n: Number(rawN), last };
}

interface WaitOutcome extends RolloutStatus {
  readonly waitedMs: number;
}

/** A change the API made: 200 when done (or not waited for), 202 when the wait ran out first. */
function sendChange(res: ServerResponse, result: object, outcome: WaitOutcome | null): void {
  sendJson(res, outcome && !outcome.complete ? 202 : 200, { ...result, wait: outcome });
}

export function addAdminRoutes(
  router: Router,
  deps: AdminDeps,
  authenticated: (handler: RouteHandler) => RouteHandler,
): Router {
  const { reconciler } = deps;

  function tasksOf(serviceId: string): TaskInfo[] {
    return (reconciler.lastSnapshot?.tasks ?? []).filter((task) => task.serviceId === serviceId);
  }

  function describeService(routed: RoutedService | undefined, name: string): object | undefined {
    const snapshot = reconciler.lastSnapshot;
    const info = snapshot?.services.find((service) => service.name === name);
    if (!info) return undefined;
    const routedIps = new Set(routed?.servers.map((server) => server.ip) ?? []);
    const nodes = new Map(snapshot?.nodes.map((node) => [node.id, node.hostname]) ?? []);
    const tasks = tasksOf(info.id)
      .filter((task) => task.desiredState === 'running' || task.state === 'running')
      .map((task) => {
        const address =
          task.addresses.find((candidate) => candidate.networkName === routed?.network)?.ip ?? null;
        return {
          id: task.id,
          slot: task.slot,
          node: nodes.get(task.nodeId) ?? task.nodeId,
          address,
          desiredState: task.desiredState,
          state: task.state,
          since: task.stateSince,
          image: task.image,
          routed: address !== null && routedIps.has(address),
          error: task.error,
        };
      });
    return {
      name: info.name,
      id: info.id,
      image: info.image,
      mode: info.mode,
      hosts: routed?.hosts ?? [],
      path: routed?.path ?? null,
      port: routed?.port ?? null,
      network: routed?.network ?? null,
      routed: routed !== undefined,
      desiredReplicas: info.replicas,
      runningReplicas: tasks.filter((task) => task.desiredState === 'running' && task.state === 'running')
        .length,
      routedTasks: routed?.servers.length ?? 0,
      problems: reconciler.currentModel.problems.filter((problem) => problem.service === name),
      tasks,
    };
  }

  /**
   * Reconciles until the goal is reached and every edge that is waited for runs the config that routes it, or until
   * the deadline; says what is still missing. Edges that are gone or unreachable are reported, not waited for.
   */
  async function waitUntilRouted(
    goal: RolloutGoal,
    seconds: number | null,
    signal: AbortSignal,
  ): Promise<WaitOutcome | null> {
    if (seconds === null) return null;
    const started = deps.clock.now();
    const deadline = started + seconds * 1000;
    for (;;) {
      await reconciler.reconcileNow();
      const now = deps.clock.now();
      const status = rolloutStatus(
        reconciler.lastSnapshot,
        reconciler.currentModel,
        deps.store.edges(),
        now,
        goal,
        { longPollMs: deps.edgeLongPollMs },
      );
      if (status.complete || now >= deadline || signal.aborted) {
        return { ...status, waitedMs: now - started };
      }
      await sleep(deps.clock, WAIT_STEP_MS, signal);
    }
  }

  const countedRoutes: [string, string, RouteHandler][] = [
    [
      'GET',
      '/v1/services',
      ({ res }) => {
        const names = reconciler.currentModel.services.map((service) => service.name);
        sendJson(res, 200, {
          services: names.map((name) =>
            describeService(
              reconciler.currentModel.services.find((service) => service.name === name),
              name,
            ),
          ),
        });
      },
    ],
    [
      'GET',
      '/v1/services/:name',
      ({ res, params }) => {
        const name = serviceName(params);
        const described = describeService(
          reconciler.currentModel.services.find((service) => service.name === name),
          name,
        );
        if (!described) throw new SwarmgateError('ERR_NOT_FOUND', `no service named "${name}"`);
        sendJson(res, 200, described);
      },
    ],
    [
      'POST',
      '/v1/services/:name/scale',
      async (context) => {
        const name = serviceName(context.params);
        const body = await readObject(context, ['replicas', 'wait']);
        const replicas = body.replicas;
        if (typeof replicas !== 'number' || !Number.isInteger(replicas) || replicas < 0) {
          bad('"replicas" must be a whole number ≥ 0');
        }
        if (replicas > deps.maxReplicas)
          bad(`"replicas" may be at most ${deps.maxReplicas} (SWARMGATE_MAX_REPLICAS)`);
        const wait = waitSeconds(body.wait);
        const result = await scaleService(deps.docker, name, replicas, context.signal);
        deps.logger.info({ service: name, from: result.previousReplicas, to: replicas }, 'scaled service');
        const outcome = await waitUntilRouted(
          { kind: 'replicas', service: name, replicas },
          wait,
          context.signal,
        );
        sendChange(context.res, result, outcome);
      },
    ],
    [
      'POST',
      '/v1/services/:name/image',
      async (context) => {
        const name = serviceName(context.params);
        const body = await readObject(context, ['image', 'wait']);
        if (typeof body.image !== 'string' || !parseImageReference(body.image)) {
          bad('"image" must be an image reference such as registry.example.com/team/app:1.2');
        }
        const image = body.image;
        const wait = waitSeconds(body.wait);
        const auth = deps.credentials.forImage(image);
        const result = await rollServiceImage(deps.docker, name, image, auth, context.signal);
        deps.logger.info(
          { service: name, image, credentials: result.usedCredentialsFor },
          'rolling service to a new image',
        );
        const outcome = await waitUntilRouted({ kind: 'image', service: name, image }, wait, context.signal);
        sendChange(context.res, result, outcome);
      },
    ],
    ['GET', '/v1/registries', ({ res }) => sendJson(res, 200, { registries: deps.credentials.list() })],
    [
      'GET',
      '/v1/registries/:host',
      ({ res, params }) => {
        const host = registryHost(params);
        const credential = deps.credentials.list().find((entry) => entry.host === host);
        if (!credential) throw new SwarmgateError('ERR_NOT_FOUND', `no credentials for registry ${host}`);
        sendJson(res, 200, credential);
      },
    ],
    [
      'PUT',
      '/v1/registries/:host',
      async (context) => {
        const host = registryHost(context.params);
        const body = await readObject(context, ['username', 'password', 'imagePrefix', 'ca', 'realmHosts']);
        const { username, password } = body;
        if (typeof username !== 'string' || !/^[^\s:]{1,256}$/.test(username)) {
          bad('"username" must be 1..256 characters without spaces or colons');
        }
        if (typeof password !== 'string' || password.length < 1 || password.length > 4096) {
          bad('"password" must be 1..4096 characters');
        }
        const imagePrefix = body.imagePrefix ?? null;
        if (
          imagePrefix !== null &&
          (typeof imagePrefix !== 'string' || !/^[a-z0-9][a-z0-9._/-]{0,254}$/.test(imagePrefix))
        ) {
          bad('"imagePrefix" must be a repository path prefix such as "team/"');
        }
        const ca = body.ca ?? null;
        if (
          ca !== null &&
          (typeof ca !== 'string' || !ca.includes('-----BEGIN CERTIFICATE-----') || ca.length > 64 * 1024)
        ) {
          bad('"ca" must be PEM certificates');
        }
        const realmHosts = body.realmHosts ?? [];
        if (
          !Array.isArray(realmHosts) ||
          realmHosts.length > 8 ||
          !realmHosts.every((entry) => typeof entry === 'string' && REGISTRY_HOST.test(entry))
        ) {
          bad(
            '"realmHosts" must be up to 8 token service hosts (name[:port], lower case) such as "auth.example.com"',
          );
        }
        const view = await deps.credentials.put(
          {
            host,
            username,
            password,
            imagePrefix,
            caPem: ca,
            realmHosts: [...new Set(realmHosts as string[])].sort(),
          },
          context.signal,
        );
        deps.logger.info({ registry: host, username }, 'stored registry credentials');
        sendJson(context.res, 200, view);
      },
    ],
    [
      'DELETE',
      '/v1/registries/:host',
      async ({ res, params, signal }) => {
        const host = registryHost(params);
        if (!(await deps.credentials.delete(host, signal))) {
          throw new SwarmgateError('ERR_NOT_FOUND', `no credentials for registry ${host}`);
        }
        deps.logger.info({ registry: host }, 'deleted registry credentials');
        sendJson(res, 200, { deleted: host });
      },
    ],
    [
      'GET',
      '/v1/registries/:host/repositories',
      async ({ res, params, query, signal }) => {
        const credential = requireCredential(registryHost(params));
        const { n, last } = paging(query);
        const page = await deps.registry.catalog(credential, n, last, signal);
        sendJson(res, 200, { repositories: page.items, next: page.next });
      },
    ],
    [
      'GET',
      '/v1/registries/:host/tags/*',
      async ({ res, params, query, signal }) => {
        const credential = requireCredential(registryHost(params));
        const repository = params['*'] ?? '';
        if (!/^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:\/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$/.test(repository)) {
          bad(`"${repository}" is not a repository name`);
        }
        const { n, last } = paging(query);
        const page = await deps.registry.tags(credential, repository, n, last, signal);
        sendJson(res, 200, { repository, tags: page.items, next: page.next });
      },
    ],
    [
      'GET',
      '/metrics',
      ({ res }) => {
        res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }).end(metricsText(deps));
      },
    ],
  ];

  function requireCredential(host: string): NonNullable<ReturnType<CredentialStore['get']>> {
    const credential = deps.credentials.get(host);
    if (!credential)
      throw new SwarmgateError(
        'ERR_NOT_FOUND',
        `no credentials for registry ${host}; PUT /v1/registries/${host} first`,
      );
    return credential;
  }

  for (const [method, path, handler] of countedRoutes) {
    router.add(
      method,
      path,
      authenticated(async (context) => {
        const key = `${method} ${path}`;
        try {
          await handler(context);
          count(key, context.res.statusCode);
        } catch (error) {
          count(key, error instanceof SwarmgateError ? 400 : 500);
          throw error;
        }
      }),
    );
  }
  if (deps.statusPage) addStatusPage(router, deps.statusPage);
  function count(route: string, status: number): void {
    const key = `${route}\u0000${Math.floor(status / 100)}xx`;
    deps.requestCounts.set(key, (deps.requestCounts.get(key) ?? 0) + 1);
  }
  return router;
}

const EDGE_CONDITIONS: readonly EdgeCondition[] = ['in-sync', 'behind', 'unreachable', 'gone'];
const FAILING_CERTIFICATE_STATES: ReadonlySet<string> = new Set([
  'failed',
  'expired',
  'budget-spent',
  'damaged',
  'sealed-with-another-key',
]);

function metricsText(deps: AdminDeps): string {
  const stats = deps.reconciler.stats;
  const model = deps.reconciler.currentModel;
  const current = deps.store.current;
  const edges = describeEdges(deps.store.edges(), deps.reconciler.lastSnapshot, deps.clock.now(), {
    longPollMs: deps.edgeLongPollMs,
  });
  const acme = deps.certificates.stats;
  const certificates = deps.certificates.status();
  const problemsBySeverity = (severity: string): number =>
    model.problems.filter((problem) => problem.severity === severity).length;
  return new MetricsWriter()
    .metric('swarmgate_reconciles_total', 'counter', 'Reconciles run.', [[{}, stats.reconciles]])
    .metric(
      'swarmgate_reconcile_failures_total',
      'counter',
      'Reconciles that failed (edges kept the last good config).',
      [[{}, stats.failures]],
    )
    .histogram(
      'swarmgate_reconcile_duration_seconds',
      'Time of one reconcile: snapshot, model, render, validate, publish.',
      stats.reconcileDuration,
    )
    .metric('swarmgate_config_publishes_total', 'counter', 'Config bundles published.', [
      [{}, stats.publishes],
    ])
    .metric('swarmgate_config_version', 'gauge', 'Version of the published config bundle.', [
      [{}, current?.version ?? 0],
    ])
    .metric('swarmgate_edges', 'gauge', 'Edges that have polled the controller.', [[{}, edges.length]])
    .metric(
      'swarmgate_edge_applied_version',
      'gauge',
      'Config version each edge has applied.',
      edges.map((edge) => [{ edge: edge.edge }, edge.applied?.version ?? 0] as const),
    )
    .metric(
      'swarmgate_edge_in_sync',
      'gauge',
      '1 when the edge runs the published config.',
      edges.map((edge) => [{ edge: edge.edge }, edge.inSync ? 1 : 0] as const),
    )
    .metric(
      'swarmgate_edges_by_condition',
      'gauge',
      'Edges by condition: in-sync, behind, unreachable (silent too long), gone (node down, drained or removed).',
      EDGE_CONDITIONS.map(
        (condition) => [{ condition }, edges.filter((edge) => edge.condition === condition).length] as const,
      ),
    )
    .metric(
      'swarmgate_edge_condition',
      'gauge',
      "1 for each edge's current condition.",
      edges.map((edge) => [{ edge: edge.edge, condition: edge.condition }, 1] as const),
    )
    .metric(
      'swarmgate_edge_last_contact_age_seconds',
      'gauge',
      'Seconds since each edge last polled the controller.',
      edges.map(
        (edge) =>
          [
            { edge: edge.edge },
            Math.max(0, (deps.clock.now() - Date.parse(edge.lastContact)) / 1000),
          ] as const,
      ),
    )
    .metric(
      'swarmgate_edge_node_info',
      'gauge',
      'The node each edge runs on.',
      edges.map((edge) => [{ edge: edge.edge, node: edge.node ?? '' }, 1] as const),
    )
    .metric(
      'swarmgate_controller_ready',
      'gauge',
      '1 once a config is published (what /readyz on the health port also says).',
      [[{}, current ? 1 : 0]],
    )
    .metric(
      'swarmgate_certificate_expiry_timestamp_seconds',
      'gauge',
      'When each certificate expires (Unix time).',
      certificates
        .filter((certificate) => certificate.notAfter !== null)
        .map(
          (certificate) =>
            [
              { name: certificate.name, source: certificate.source },
              Date.parse(certificate.notAfter ?? '') / 1000,
            ] as const,
        ),
    )
    .metric(
      'swarmgate_certificate_renewal_timestamp_seconds',
      'gauge',
      'When each ACME certificate is due for renewal (Unix time).',
      certificates
        .filter((certificate) => certificate.renewAt !== null)
        .map(
          (certificate) =>
            [{ name: certificate.name }, Date.parse(certificate.renewAt ?? '') / 1000] as const,
        ),
    )
    .metric(
      'swarmgate_certificate_failing',
      'gauge',
      '1 while a certificate cannot be obtained or renewed (its last order failed, budget spent, expired, damaged).',
      certificates.map(
        (certificate) =>
          [
            { name: certificate.name, state: certificate.state },
            FAILING_CERTIFICATE_STATES.has(certificate.state) || certificate.lastError !== null ? 1 : 0,
          ] as const,
      ),
    )
    .histogram(
      'swarmgate_routing_lag_seconds',
      'Task reaching running (Swarm clock) → first published config routing it.',
      stats.routingLag,
    )
    .metric('swarmgate_routed_services', 'gauge', 'Services with routes.', [[{}, model.services.length]])
    .metric('swarmgate_problems', 'gauge', 'Current service problems.', [
      [{ severity: 'error' }, problemsBySeverity('error')],
      [{ severity: 'warning' }, problemsBySeverity('warning')],
    ])
    .metric('swarmgate_acme_orders_total', 'counter', 'ACME orders by result.', [
      [{ result: 'started' }, acme.ordersStarted],
      [{ result: 'succeeded' }, acme.ordersSucceeded],
      [{ result: 'failed' }, acme.ordersFailed],
    ])
    .metric(
      'swarmgate_api_requests_total',
      'counter',
      'Admin API requests by route and status class.',
      [...deps.requestCounts.entries()].sort().map(([key, value]) => {
        const [route, status] = key.split('\u0000');
        return [{ route: route ?? '', status: status ?? '' }, value] as const;
      }),
    )
    .text();
}

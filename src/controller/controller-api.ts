// The controller's HTTP API: health (open), the edge bundle channel and status (bearer token).
import { SwarmgateError } from '../errors.ts';
import { hasBearerToken, readJsonBody, sendJson } from '../http/json-http.ts';
import type { RouteContext, RouteHandler } from '../http/router.ts';
import { Router } from '../http/router.ts';
import type { BundleStore, EdgeReport } from '../publish/bundle-store.ts';
import type { Reconciler } from '../reconcile/reconciler.ts';
import type { CertificateManager } from '../acme/certificate-manager.ts';
import { addAdminRoutes } from '../admin/admin-routes.ts';
import type { AdminDeps } from '../admin/admin-routes.ts';

export interface ControllerApiDeps {
  readonly token: string;
  readonly store: BundleStore;
  readonly reconciler: Reconciler;
  readonly certificates: CertificateManager;
  readonly version: string;
  readonly edgeLongPollMs: number;
  readonly admin: AdminDeps;
}

const EDGE_REPORT_LIMIT_BYTES = 64 * 1024;

export function createControllerRouter(deps: ControllerApiDeps): Router {
  const authenticated =
    (handler: RouteHandler): RouteHandler =>
    (context) => {
      if (!hasBearerToken(context.req, deps.token)) {
        throw new SwarmgateError('ERR_UNAUTHORIZED', 'a valid bearer token is required');
      }
      return handler(context);
    };

  return addAdminRoutes(
    new Router()
      .add('GET', '/healthz', ({ res }) => sendJson(res, 200, { status: 'ok' }))
      .add('GET', '/readyz', ({ res }) => {
        const ready = deps.store.current !== null;
        sendJson(res, ready ? 200 : 503, { status: ready ? 'ready' : 'starting' });
      })
      // HTTP-01: the edges proxy these to the controller; open, like the challenge itself.
      .add('GET', '/.well-known/acme-challenge/:token', ({ res, params }) => {
        const answer = deps.certificates.challengeResponse(params.token ?? '');
        if (answer === undefined) throw new SwarmgateError('ERR_NOT_FOUND', 'no such challenge');
        res.writeHead(200, { 'content-type': 'text/plain' }).end(answer);
      })
      .add('POST', '/v1/edge/poll', authenticated(pollForBundle))
      .add(
        'GET',
        '/v1/status',
        authenticated(({ res }) => sendJson(res, 200, statusOf(deps))),
      ),
    deps.admin,
    authenticated,
  );

  async function pollForBundle({ req, res, query, signal }: RouteContext): Promise<void> {
    const report = parseEdgeReport(await readJsonBody(req, EDGE_REPORT_LIMIT_BYTES));
    deps.store.recordEdge(report);
    const waitMs = Math.min(Number(query.get('waitMs') ?? deps.edgeLongPollMs) || 0, deps.edgeLongPollMs);
    const bundle = await deps.store.waitForBundle(report, waitMs, signal);
    if (signal.aborted) return;
    if (!bundle) {
      res.writeHead(204).end();
      return;
    }
    sendJson(res, 200, bundle);
  }
}

function statusOf(deps: ControllerApiDeps): object {
  const model = deps.reconciler.currentModel;
  const current = deps.store.current;
  return {
    version: deps.version,
    config: current
      ? { version: current.version, fingerprint: current.fingerprint, publishedAt: current.publishedAt }
      : null,
    lastReconcile: deps.reconciler.lastOutcome,
    // Seconds from a task reaching running (Swarm's clock) to the first published config that routes it.
    routingLagSeconds: deps.reconciler.stats.routingLagsSeconds.slice(-200),
    edges: deps.store.edges(),
    problems: model.problems,
    certificates: deps.certificates.status(),
    services: model.services.map((service) => ({
      name: service.name,
      hosts: service.hosts,
      path: service.path,
      routedTasks: service.servers.length,
      desiredReplicas: service.desiredReplicas,
    })),
  };
}

function parseEdgeReport(body: unknown): EdgeReport {
  const bad = (message: string): never => {
    throw new SwarmgateError('ERR_BAD_REQUEST', `edge report: ${message}`);
  };
  if (!isObject(body)) return bad('the body must be a JSON object');
  const edge = body.edge;
  if (typeof edge !== 'string' || !/^[A-Za-z0-9_.-]{1,128}$/.test(edge))
    return bad('"edge" must be a host name');
  const node = typeof body.node === 'string' ? body.node.slice(0, 128) : null;
  let applied: EdgeReport['applied'] = null;
  if (body.applied !== null && body.applied !== undefined) {
    if (!isObject(body.applied)) return bad('"applied" must be an object');
    const { version, fingerprint } = body.applied;
    if (
      !Number.isSafeInteger(version) ||
      typeof fingerprint !== 'string' ||
      !/^[0-9a-f]{64}$/.test(fingerprint)
    ) {
      return bad('"applied" needs an integer version and a sha256 fingerprint');
    }
    applied = { version: version as number, fingerprint };
  }
  let rejected: EdgeReport['rejected'] = null;
  if (body.rejected !== null && body.rejected !== undefined) {
    if (!isObject(body.rejected)) return bad('"rejected" must be an object');
    const { fingerprint, error } = body.rejected;
    if (typeof fingerprint !== 'string' || !/^[0-9a-f]{64}$/.test(fingerprint)) {
      return bad('"rejected" needs a sha256 fingerprint');
    }
    rejected = { fingerprint, error: typeof error === 'string' ? error.slice(0, 2000) : '' };
  }
  // Counters an older edge does not send read as 0.
  const count = (value: unknown): number =>
    Number.isSafeInteger(value) && (value as number) >= 0 ? (value as number) : 0;
  return {
    edge,
    node,
    applied,
    rejected,
    reloads: count(body.reloads),
    peerUpdates: count(body.peerUpdates),
  };
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

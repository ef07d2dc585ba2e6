// The controller's listeners: the HTTPS API (edge channel with the edge token, admin routes with the admin
// token), the challenge listener (HTTPS with the same key pair; HTTP-01 tokens and nothing else), and the loopback
// health listener.
import type { IncomingMessage, RequestListener, ServerResponse } from 'node:http';
import https from 'node:https';
import { gzipSync } from 'node:zlib';
import { SwarmgateError } from '../errors.ts';
import { hasBearerToken, readJsonBody, sendError, sendJson } from '../http/json-http.ts';
import type { RouteContext, RouteHandler } from '../http/router.ts';
import { Router } from '../http/router.ts';
import { MAX_REASON_CHARS, MAX_REPORTED_DOWN } from '../publish/bundle-store.ts';
import type { BundleStore, EdgeReport, TaskDown } from '../publish/bundle-store.ts';
import { SHA256 } from '../publish/bundle-delta.ts';
import type { WantedFile } from '../publish/bundle-delta.ts';
import type { Reconciler } from '../reconcile/reconciler.ts';
import type { CertificateManager } from '../acme/certificate-manager.ts';
import { addAdminRoutes } from '../admin/admin-routes.ts';
import type { AdminDeps } from '../admin/admin-routes.ts';
import { nameTasksDown } from '../admin/edge-health.ts';
import { describeEdges } from '../admin/rollout-status.ts';
import { addStatusPage } from '../admin/status-page/status-routes.ts';
import type { StatusPageDeps } from '../admin/status-page/status-routes.ts';
import { isIP } from 'node:net';
import type { Liveness } from './liveness.ts';

export interface ControllerApiDeps {
  /** Operators' token: every route but the edge poll. */
  readonly adminToken: string;
  /** Edges' token: the edge poll only. */
  readonly edgeToken: string;
  readonly store: BundleStore;
  readonly reconciler: Reconciler;
  readonly certificates: CertificateManager;
  readonly version: string;
  readonly edgeLongPollMs: number;
  readonly admin: AdminDeps;
}

const EDGE_REPORT_LIMIT_BYTES = 64 * 1024;

type Credential = 'admin' | 'edge';

/** The HTTPS API. Every route needs a token, and each token opens only its own routes. */
export function createControllerRouter(deps: ControllerApiDeps): Router {
  const requires =
    (needed: Credential) =>
    (handler: RouteHandler): RouteHandler =>
    (context) => {
      const presented: Credential | null = hasBearerToken(context.req, deps.adminToken)
        ? 'admin'
        : hasBearerToken(context.req, deps.edgeToken)
          ? 'edge'
          : null;
      if (presented === null) {
        throw new SwarmgateError('ERR_UNAUTHORIZED', 'a valid bearer token is required');
      }
      if (presented !== needed) {
        // Least privilege: an edge (internet-facing) cannot act as an operator, and the admin token is not for
        // pulling bundles full of private keys.
        throw new SwarmgateError(
          'ERR_FORBIDDEN',
          `the ${presented} token is not accepted here; this route needs the ${needed} token`,
        );
      }
      return handler(context);
    };

  return addAdminRoutes(
    new Router()
      .add('POST', '/v1/edge/poll', requires('edge')(pollForBundle))
      .add('POST', '/v1/edge/files', requires('edge')(filesByHash))
      .add(
        'GET',
        '/v1/status',
        requires('admin')(({ res }) => sendJson(res, 200, statusOf(deps))),
      ),
    deps.admin,
    requires('admin'),
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
    // An edge of the previous release asks for nothing else: the whole bundle, as it expects it.
    if (query.get('delta') !== '1') {
      sendJson(res, 200, bundle);
      return;
    }
    // Only what changed since the bundle the edge has, encoded once for every edge that has it.
    const have = query.get('have');
    if (have !== null && !SHA256.test(have)) {
      throw new SwarmgateError('ERR_BAD_REQUEST', '"have" must be a sha256 fingerprint');
    }
    const answer = deps.store.answers.encode(bundle, have, acceptsGzip(req));
    sendEncoded(res, answer.body, answer.gzip);
  }

  /** Files by content hash, for an edge whose own copy of one is missing or damaged. */
  async function filesByHash({ req, res }: RouteContext): Promise<void> {
    const wanted = parseWantedFiles(await readJsonBody(req, EDGE_REPORT_LIMIT_BYTES * 16));
    const json = Buffer.from(JSON.stringify({ files: deps.store.answers.files(wanted) }));
    const gzip = acceptsGzip(req) && json.length >= 1024;
    sendEncoded(res, gzip ? gzipSync(json) : json, gzip);
  }
}

function acceptsGzip(req: IncomingMessage): boolean {
  return /(^|[\s,])gzip(\s*(;|,|$))/i.test(String(req.headers['accept-encoding'] ?? ''));
}

function sendEncoded(res: ServerResponse, body: Buffer, gzip: boolean): void {
  res
    .writeHead(200, {
      'content-type': 'application/json',
      'cache-control': 'no-store',
      'content-length': body.length,
      ...(gzip ? { 'content-encoding': 'gzip' } : {}),
    })
    .end(body);
}

/** Most files one bundle has (certificates and keys of thousands of hosts, nginx.conf, peers.txt). */
const MAX_WANTED_FILES = 20_000;

function parseWantedFiles(body: unknown): WantedFile[] {
  const files = isObject(body) ? body.files : undefined;
  if (!Array.isArray(files) || files.length > MAX_WANTED_FILES) {
    throw new SwarmgateError('ERR_BAD_REQUEST', `"files" must be a list of at most ${MAX_WANTED_FILES}`);
  }
  return files.map((file: unknown) => {
    if (
      !isObject(file) ||
      typeof file.name !== 'string' ||
      typeof file.sha256 !== 'string' ||
      !SHA256.test(file.sha256)
    ) {
      throw new SwarmgateError('ERR_BAD_REQUEST', 'each wanted file needs a name and a sha256');
    }
    return { name: file.name.slice(0, 1024), sha256: file.sha256 };
  });
}

/** Exactly /.well-known/acme-challenge/<token>, matched on the raw request target: nothing is decoded or resolved. */
const CHALLENGE_TARGET = /^\/\.well-known\/acme-challenge\/([A-Za-z0-9_-]+)$/;

/**
 * The challenge listener: the CA's HTTP-01 request reaches it through any edge (which verifies the channel
 * certificate), and it serves the current challenge tokens and nothing else, so the public port 80 of every edge
 * leads to no other route.
 */
export function createChallengeListener(
  certificates: Pick<CertificateManager, 'challengeResponse'>,
): RequestListener {
  return (req, res) => {
    // HEAD too: nginx's `limit_except GET` lets HEAD through, and a CA may check with it.
    const match = req.method === 'GET' || req.method === 'HEAD' ? CHALLENGE_TARGET.exec(req.url ?? '') : null;
    const answer = match?.[1] === undefined ? undefined : certificates.challengeResponse(match[1]);
    if (answer === undefined) {
      sendError(res, new SwarmgateError('ERR_NOT_FOUND', 'no such challenge'));
      return;
    }
    res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'no-store' }).end(answer);
  };
}

/**
 * The challenge listener's server: HTTPS with the channel key pair, which edges verify against the pinned
 * certificate before they forward a challenge (an overlay container with the alias swarmgate-controller fails
 * that check and is never asked). Reachable from the internet through every edge: no slow clients holding sockets,
 * a cap on open ones.
 */
export function createChallengeServer(
  channelTls: { readonly key: string; readonly cert: string },
  certificates: Pick<CertificateManager, 'challengeResponse'>,
): https.Server {
  const server = https.createServer(
    { key: channelTls.key, cert: channelTls.cert, minVersion: 'TLSv1.3' },
    createChallengeListener(certificates),
  );
  server.headersTimeout = 10_000;
  server.requestTimeout = 15_000;
  server.maxConnections = 512;
  return server;
}

/**
 * The status listener (SWARMGATE_ADMIN_HOST): what the edges proxy the admin host to. HTTPS with the channel key pair
 * (edges verify it as for the challenge), and the status page's routes only, so even an edge that forwarded
 * anything could reach no admin route, no JSON API and no edge channel here: the surface the internet reaches
 * through the admin host is exactly the page and its login.
 */
export function createStatusServer(
  channelTls: { readonly key: string; readonly cert: string },
  statusPage: StatusPageDeps,
): { readonly server: https.Server; readonly routes: readonly { method: string; path: string }[] } {
  const router = addStatusPage(new Router(), { ...statusPage, clientAddress: forwardedClient });
  const server = https.createServer(
    { key: channelTls.key, cert: channelTls.cert, minVersion: 'TLSv1.3' },
    (req, res) => void router.handle(req, res),
  );
  server.headersTimeout = 10_000;
  server.requestTimeout = 15_000;
  server.maxConnections = 512;
  return { server, routes: router.list() };
}

/**
 * The visitor's address as the admin host's server sets it (X-Real-IP, replacing whatever the visitor sent). A
 * container on the overlay can reach this listener directly and claim any address: the throttle's cap on all
 * failures together still bounds it, and the admin token's length (at least 32 characters with an admin host) is what keeps it out.
 */
export function forwardedClient(req: IncomingMessage): string {
  const header = req.headers['x-real-ip'];
  const value = typeof header === 'string' ? header.trim() : '';
  return isIP(value) ? value : (req.socket.remoteAddress ?? '');
}

/** The loopback health listener for the container health check: liveness and readiness, no token. */
export function createHealthRouter(deps: {
  readonly store: Pick<BundleStore, 'current'>;
  readonly liveness: () => Liveness;
}): Router {
  return new Router()
    .add('GET', '/healthz', ({ res }) => {
      const liveness = deps.liveness();
      if (liveness.ok) sendJson(res, 200, { status: 'ok' });
      else sendJson(res, 503, { status: 'unhealthy', reason: liveness.reason });
    })
    .add('GET', '/readyz', ({ res }) => {
      const liveness = deps.liveness();
      const ready = liveness.ok && deps.store.current !== null;
      sendJson(res, ready ? 200 : 503, {
        status: ready ? 'ready' : liveness.ok ? 'starting' : 'unhealthy',
        ...(liveness.ok ? {} : { reason: liveness.reason }),
      });
    });
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
    // Each edge with its condition: a gone or unreachable edge is shown here and never waited for. With it, the
    // tasks its health checks took out of its rotation.
    edges: nameTasksDown(
      describeEdges(deps.store.edges(), deps.reconciler.lastSnapshot, deps.admin.clock.now(), {
        longPollMs: deps.edgeLongPollMs,
      }),
      model,
    ),
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
    ...parseTasksDown(body.tasksDown, count(body.tasksDownOmitted)),
  };
}

const TASK_ADDRESS = /^\d{1,3}(\.\d{1,3}){3}:\d{1,5}$/;
const UPSTREAM_NAME = /^[A-Za-z0-9_]{1,64}$/;

/**
 * The tasks an edge's health checks found down. Edge token holders can send anything: entries that do not fit are
 * dropped, the list is bounded (what is cut off is counted), and reasons are cut short.
 */
function parseTasksDown(
  value: unknown,
  omitted: number,
): { tasksDown: TaskDown[]; tasksDownOmitted: number } {
  const tasksDown: TaskDown[] = [];
  let extra = 0;
  for (const entry of Array.isArray(value) ? (value as unknown[]) : []) {
    if (!isObject(entry)) continue;
    const { address, upstream, since, reason } = entry;
    if (typeof address !== 'string' || !TASK_ADDRESS.test(address)) continue;
    if (typeof upstream !== 'string' || !UPSTREAM_NAME.test(upstream)) continue;
    if (typeof since !== 'string' || since.length > 40 || !Number.isFinite(Date.parse(since))) continue;
    if (tasksDown.length >= MAX_REPORTED_DOWN) {
      extra++;
      continue;
    }
    tasksDown.push({
      address,
      upstream,
      since,
      reason: typeof reason === 'string' ? reason.replace(/\p{Cc}/gu, ' ').slice(0, MAX_REASON_CHARS) : '',
    });
  }
  return { tasksDown, tasksDownOmitted: Math.min(omitted + extra, 1_000_000) };
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

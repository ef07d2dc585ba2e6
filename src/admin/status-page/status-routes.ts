// The status page on the admin API's listener (HTTPS): a login form for the admin token, then one static page
// (templates/status-page/) that renders the state it receives over server-sent events. Nothing is open without a
// session: the page, the events and the logout all check it; only the login form and the static CSS/JS (no data)
// are served to anyone.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { SwarmgateError } from '../../errors.ts';
import type { RouteContext, Router } from '../../http/router.ts';
import type { Logger } from '../../logger.ts';
import type { Clock } from '../../reconcile/clock.ts';
import { TEMPLATE_DIR } from '../../render/nunjucks-env.ts';
import { LoginThrottle } from './login-throttle.ts';
import type { LoginThrottleLimits } from './login-throttle.ts';
import { StatusSessions, tokenMatches } from './sessions.ts';
import type { StatusView } from './status-view.ts';

export interface StatusPageDeps {
  readonly adminToken: string;
  readonly clock: Clock;
  readonly logger: Logger;
  /** The state to show now. */
  readonly view: () => StatusView;
  /** How often an open page gets fresh state (it is sent only when it changed, and at least every 15 s). */
  readonly pushIntervalMs: number;
  readonly sessionTtlMs?: number;
  /**
   * The visitor's address, for the login throttle and the logs. Default: the socket's peer. The status listener
   * behind the edges reads the X-Real-IP the admin host's server sets (the peer is always an edge there).
   */
  readonly clientAddress?: (req: IncomingMessage) => string;
  readonly loginLimits?: LoginThrottleLimits;
}

const socketAddress = (req: IncomingMessage): string => req.socket.remoteAddress ?? '';

const ASSET_DIR = path.join(TEMPLATE_DIR, 'status-page');
const FORM_LIMIT_BYTES = 4096;
const MAX_STREAMS = 32;

/** Served with every page: no inline script or style, nothing from elsewhere, never framed. */
const SECURITY_HEADERS = {
  'content-security-policy':
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
  'x-content-type-options': 'nosniff',
  // same-origin, not no-referrer: with no-referrer the browser sends "Origin: null" on the login form's POST.
  'referrer-policy': 'same-origin',
  'cache-control': 'no-store',
} as const;

function asset(name: string): string {
  return readFileSync(path.join(ASSET_DIR, name), 'utf8');
}

async function readForm(req: IncomingMessage): Promise<URLSearchParams> {
  if (!(req.headers['content-type'] ?? '').startsWith('application/x-www-form-urlencoded')) {
    throw new SwarmgateError('ERR_BAD_REQUEST', 'the login form posts application/x-www-form-urlencoded');
  }
  let size = 0;
  const chunks: Buffer[] = [];
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > FORM_LIMIT_BYTES) throw new SwarmgateError('ERR_PAYLOAD_TOO_LARGE', 'the form is too large');
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

/**
 * A cross-site form post carries another Origin: refused (the SameSite cookie already keeps the session out). The
 * page is only ever served over HTTPS (the listener's own TLS, or the admin host's server, which forwards the
 * browser's Host: over HTTP/2 nginx makes it from `:authority`, port included), so its origin is https and the host
 * with port the browser asked for. Scheme, host and port must all match: an http:// page on the same name is
 * another origin.
 */
function sameOrigin(req: IncomingMessage): boolean {
  const origin = req.headers.origin;
  if (origin === undefined) return true;
  try {
    const url = new URL(origin);
    return url.protocol === 'https:' && url.host === req.headers.host;
  } catch {
    return false;
  }
}

export function addStatusPage(router: Router, deps: StatusPageDeps): Router {
  const sessions = new StatusSessions(deps.clock, deps.sessionTtlMs ?? 12 * 3600_000);
  // One per listener: a flood of wrong tokens at the admin host never locks operators out of the overlay's page.
  const throttle = new LoginThrottle(deps.clock, deps.loginLimits);
  const clientAddress = deps.clientAddress ?? socketAddress;
  const loginPage = asset('login.html');
  const statusPage = asset('status.html');
  const files: Record<string, { type: string; body: string }> = {
    'status.css': { type: 'text/css; charset=utf-8', body: asset('status.css') },
    'status.js': { type: 'text/javascript; charset=utf-8', body: asset('status.js') },
  };
  let streams = 0;

  const html = (
    res: ServerResponse,
    status: number,
    body: string,
    extra: Record<string, string> = {},
  ): void => {
    res
      .writeHead(status, { 'content-type': 'text/html; charset=utf-8', ...SECURITY_HEADERS, ...extra })
      .end(body);
  };
  const login = (res: ServerResponse, status: number, message: string): void =>
    html(res, status, loginPage.replace('<!--message-->', message));

  router.add('GET', '/status', ({ req, res }) => {
    if (sessions.valid(req)) html(res, 200, statusPage);
    else login(res, 200, '');
  });
  router.add('POST', '/status/login', async ({ req, res }) => {
    if (!sameOrigin(req)) {
      login(res, 403, '<p class="error" role="alert">This form was sent from another site.</p>');
      return;
    }
    const remote = clientAddress(req);
    // Refused before the token is read: a throttled address learns nothing, even with the right token.
    const waitMs = throttle.retryAfterMs(remote);
    if (waitMs > 0) {
      html(
        res,
        429,
        loginPage.replace(
          '<!--message-->',
          '<p class="error" role="alert">Too many failed sign-ins. Try again in a minute.</p>',
        ),
        { 'retry-after': String(Math.ceil(waitMs / 1000)) },
      );
      return;
    }
    const form = await readForm(req);
    if (!tokenMatches(form.get('token') ?? '', deps.adminToken)) {
      throttle.failed(remote);
      deps.logger.warn({ remote }, 'status page: wrong admin token');
      login(res, 401, '<p class="error" role="alert">That is not the admin token.</p>');
      return;
    }
    deps.logger.info({ remote }, 'status page: signed in');
    res.writeHead(303, { location: '/status', 'set-cookie': sessions.create(), ...SECURITY_HEADERS }).end();
  });
  router.add('POST', '/status/logout', ({ req, res }) => {
    if (!sameOrigin(req)) throw new SwarmgateError('ERR_FORBIDDEN', 'cross-site request');
    res.writeHead(303, { location: '/status', 'set-cookie': sessions.end(req), ...SECURITY_HEADERS }).end();
  });
  router.add('GET', '/status/assets/:name', ({ res, params }) => {
    const file = files[params.name ?? ''];
    if (!file) throw new SwarmgateError('ERR_NOT_FOUND', 'no such asset');
    res.writeHead(200, { 'content-type': file.type, ...SECURITY_HEADERS }).end(file.body);
  });
  router.add('GET', '/status/events', (context) => streamEvents(context));
  return router;

  function streamEvents({ req, res, signal }: RouteContext): Promise<void> {
    if (!sessions.valid(req)) throw new SwarmgateError('ERR_UNAUTHORIZED', 'sign in first');
    if (streams >= MAX_STREAMS) throw new SwarmgateError('ERR_CONFLICT', 'too many open status pages');
    streams++;
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'x-accel-buffering': 'no',
      ...SECURITY_HEADERS,
    });
    res.write('retry: 3000\n\n');
    let last = '';
    let lastSentAt = 0;
    const push = (): void => {
      // A session that expired or was ended stops its stream: the page then asks to sign in again.
      if (!sessions.valid(req)) {
        res.end('event: signed-out\ndata: {}\n\n');
        return;
      }
      const view = deps.view();
      const text = JSON.stringify({ ...view, generatedAt: undefined });
      const now = deps.clock.now();
      if (text === last && now - lastSentAt < 15_000) return;
      last = text;
      lastSentAt = now;
      res.write(`event: status\ndata: ${JSON.stringify(view)}\n\n`);
    };
    push();
    return new Promise<void>((resolve) => {
      // Wall-clock cadence of the page's updates, not part of any decision the controller takes.
      const timer = setInterval(push, deps.pushIntervalMs);
      const stop = (): void => {
        clearInterval(timer);
        streams--;
        resolve();
      };
      if (signal.aborted) stop();
      else signal.addEventListener('abort', stop, { once: true });
    });
  }
}

// The status page through the edge on the admin host (SWARMGATE_ADMIN_HOST): a real controller (fake Docker) with its
// status listener, and a real nginx running the bundle that controller published (only listen lines, pid, error log,
// Lua dir and socket paths moved to loopback). Through the admin host the page works after login, with the session
// cookie Secure, HttpOnly and SameSite=Strict; every admin API and edge channel path, and every traversal form
// aimed at one, is a 404 from nginx itself; a bearer token (admin or edge) opens nothing; the login throttle counts
// the visitor's address, whatever X-Real-IP the visitor claims; port 80 redirects to HTTPS.
import assert from 'node:assert/strict';
import { chmod, mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import http2 from 'node:http2';
import tls from 'node:tls';
import net from 'node:net';
import type { AcmePort } from '../../src/acme/acme-adapter.ts';
import { deriveStateKey } from '../../src/acme/state-store.ts';
import { describeCertificate } from '../../src/acme/user-certificates.ts';
import { EDGE_PEERS_SOCKET, readControllerConfig } from '../../src/config.ts';
import { startController } from '../../src/controller/controller.ts';
import type { RunningController } from '../../src/controller/controller.ts';
import { BundleCache } from '../../src/edge/bundle-cache.ts';
import { createNginxProcess } from '../../src/edge/nginx-process.ts';
import type { NginxProcess } from '../../src/edge/nginx-process.ts';
import { createLogger } from '../../src/logger.ts';
import { systemClock } from '../../src/reconcile/clock.ts';
import { createTemplateRenderer } from '../../src/render/nunjucks-env.ts';
import { fingerprintBundle, IMAGE_LUA_DIR } from '../../src/render/render-config.ts';
import { makeChannelKeyPair } from '../support/channel-tls.ts';
import type { ChannelKeyPair } from '../support/channel-tls.ts';
import { FakeDocker, rawService, rawTask } from '../support/fake-docker.ts';
import {
  freePort,
  loopbackConf,
  NGINX_BINARY,
  REPO_LUA_DIR,
  TEST_CHANNEL_CERT_FILE,
  TEST_PLACEHOLDER_KEY_FILE,
  withConf,
} from '../support/loopback-nginx.ts';
import type { LoopbackSetup } from '../support/loopback-nginx.ts';
import { waitUntil } from '../support/wait.ts';

const ADMIN_HOST = 'status.example.com';
const TOKEN = 'admin-host-admin-token-0123456789abcdef';
const EDGE_TOKEN = 'admin-host-edge-token-0123456789abcdef';
const FIXTURES = path.resolve(import.meta.dirname, '../fixtures');
const noAcme: AcmePort = {
  createAccountKey: () => Promise.reject(new Error('unused')),
  order: () => Promise.reject(new Error('unused')),
};

let docker: FakeDocker;
let controller: RunningController;
let channelTls: ChannelKeyPair & { remove: () => Promise<void> };
let nginx: NginxProcess;
let setup: LoopbackSetup;
let conf: string;

interface Answer {
  readonly status: number;
  readonly head: string;
  readonly body: string;
}

// Each request comes from its own loopback address unless a test names one: the admin host's per-address rate
// limit (10 r/s, burst 40) is not what these tests measure.
let nextSource = 0;
const freshSource = (): string => `127.0.${1 + Math.floor(nextSource / 250)}.${(nextSource++ % 250) + 2}`;

/**
 * One raw HTTP/1.1 request, byte for byte as written (no client-side normalisation of the target), over TLS to the
 * edge's 443 for the admin host, or in clear to its 80. With `until`, the answer is taken once its text matches
 * (a stream of server-sent events never ends by itself).
 */
function request(
  method: string,
  target: string,
  {
    headers = {},
    body = '',
    from = freshSource(),
    plain = false,
    until,
  }: {
    headers?: Record<string, string>;
    body?: string;
    from?: string;
    plain?: boolean;
    until?: RegExp;
  } = {},
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const tcp = net.connect({
      host: '127.0.0.1',
      port: plain ? setup.listenPort : setup.tlsPort,
      localAddress: from,
    });
    const socket = plain
      ? tcp
      : tls.connect({
          socket: tcp,
          servername: ADMIN_HOST,
          // The test certificate is self-signed; what is checked here is what nginx forwards, not its chain.
          rejectUnauthorized: false,
        });
    let text = '';
    const finish = (): void => {
      const at = text.indexOf('\r\n\r\n');
      const status = /^HTTP\/1\.[01] (\d{3})/.exec(text)?.[1];
      if (!status) {
        reject(new Error(`no status line for ${method} ${target}: ${JSON.stringify(text.slice(0, 80))}`));
        return;
      }
      resolve({ status: Number(status), head: text.slice(0, at), body: text.slice(at + 4) });
    };
    socket.setEncoding('latin1');
    socket.setTimeout(10_000, () => socket.destroy(new Error(`no answer to ${method} ${target}`)));
    socket.on('data', (chunk: string) => {
      text += chunk;
      if (until?.test(text)) {
        socket.destroy();
        finish();
      }
    });
    socket.on('error', reject);
    socket.on('close', () => {
      if (!until) finish();
    });
    const lines = [
      `${method} ${target} HTTP/1.1`,
      `Host: ${ADMIN_HOST}`,
      ...Object.entries(headers).map(([name, value]) => `${name}: ${value}`),
      `Content-Length: ${Buffer.byteLength(body)}`,
      'Connection: close',
    ];
    socket.write(`${lines.join('\r\n')}\r\n\r\n${body}`);
  });
}

const header = (answer: Answer, name: string): string[] =>
  answer.head
    .split('\r\n')
    .filter((line) => line.toLowerCase().startsWith(`${name.toLowerCase()}:`))
    .map((line) => line.slice(name.length + 1).trim());

/** nginx's own error page (server_tokens off): the controller answers errors as JSON, never this. */
function assertNginx404(answer: Answer, what: string): void {
  assert.equal(answer.status, 404, what);
  assert.match(answer.body, /<center>nginx<\/center>/, `${what}: the 404 comes from nginx itself`);
  assert.doesNotMatch(answer.body, /ERR_/, `${what}: not the controller's answer`);
}

/**
 * The login form's POST over HTTP/2, as a browser sends it to an edge on a port other than 443 (the lab publishes
 * HTTPS on 20443): `:authority` names host and port, there is no Host header, and Origin is the page's origin. The
 * certificate is verified (the test certificate covers *.example.com); ALPN must pick h2, or the request is not
 * what this test is about.
 */
async function http2Login(origin: string, token: string): Promise<{ status: number; cookie: string }> {
  const authority = `${ADMIN_HOST}:${setup.tlsPort}`;
  const ca = await readFile(path.join(FIXTURES, 'test-only.crt'), 'utf8');
  const session = http2.connect(`https://${authority}`, {
    createConnection: () =>
      tls.connect({
        socket: net.connect({ host: '127.0.0.1', port: setup.tlsPort, localAddress: freshSource() }),
        servername: ADMIN_HOST,
        ca,
        ALPNProtocols: ['h2'],
      }),
  });
  try {
    await new Promise<void>((resolve, reject) => {
      session.once('connect', () => resolve());
      session.once('error', reject);
    });
    assert.equal((session.socket as tls.TLSSocket).alpnProtocol, 'h2');
    const body = new URLSearchParams({ token }).toString();
    const stream = session.request({
      ':method': 'POST',
      ':path': '/status/login',
      ':authority': authority,
      ':scheme': 'https',
      'content-type': 'application/x-www-form-urlencoded',
      origin,
    });
    stream.setEncoding('utf8');
    stream.end(body);
    const headers = await new Promise<http2.IncomingHttpHeaders>((resolve, reject) => {
      stream.once('response', resolve);
      stream.once('error', reject);
    });
    // The body (the login page or nothing) is not what is checked: read to its end so the stream closes.
    stream.resume();
    await new Promise((resolve) => stream.once('end', resolve));
    const setCookie = headers['set-cookie'];
    return {
      status: Number(headers[':status']),
      cookie: ((Array.isArray(setCookie) ? setCookie[0] : setCookie) ?? '').split(';')[0] ?? '',
    };
  } finally {
    session.close();
  }
}

async function signIn(from: string): Promise<string> {
  const answer = await request('POST', '/status/login', {
    from,
    headers: {
      'Content-Type': 'application/x-www-form-urlencoded',
      Origin: `https://${ADMIN_HOST}`,
    },
    body: new URLSearchParams({ token: TOKEN }).toString(),
  });
  assert.equal(answer.status, 303, `sign in: ${answer.body}`);
  const cookie = header(answer, 'set-cookie')[0] ?? '';
  return cookie.split(';')[0] ?? '';
}

before(async () => {
  docker = new FakeDocker();
  docker.services = [rawService('web', { VIRTUAL_HOST: 'web.example.com' }, { replicas: 1 })];
  docker.tasks = [rawTask('t1', 'web', '10.0.0.11')];
  channelTls = await makeChannelKeyPair();
  const statusPort = await freePort();
  const certificatePem = await readFile(path.join(FIXTURES, 'test-only.crt'), 'utf8');
  controller = await startController({
    config: readControllerConfig({
      SWARMGATE_LISTEN_PORT: '0',
      SWARMGATE_CHALLENGE_PORT: '0',
      SWARMGATE_HEALTH_PORT: '0',
      SWARMGATE_STATUS_PORT: String(statusPort),
      // The edge reaches the status listener here (in a Swarm: swarmgate-controller:8403 over the overlay).
      SWARMGATE_STATUS_ADDRESS: `127.0.0.1:${statusPort}`,
      SWARMGATE_CHANNEL_CERT_FILE: channelTls.certFile,
      SWARMGATE_ADMIN_HOST: ADMIN_HOST,
      SWARMGATE_ACME_ENABLED: 'false',
      SWARMGATE_ACCESS_LOG: 'false',
      SWARMGATE_DEBOUNCE: '5ms:20ms',
      SWARMGATE_SLOW_POLL: '1h',
    }),
    adminToken: TOKEN,
    edgeToken: EDGE_TOKEN,
    channelTls,
    docker,
    validator: { validate: async () => ({ ok: true }) },
    templates: createTemplateRenderer(),
    logger: createLogger('silent'),
    clock: systemClock,
    version: 'test',
    acme: noAcme,
    stateKey: deriveStateKey('admin-host-state-key-0123456789'),
    // An operator certificate for *.example.com covers the admin host (the ACME one is ordered the same way).
    userCertificates: [
      {
        name: 'example.com',
        certificatePem,
        privateKeyPem: await readFile(path.join(FIXTURES, 'test-only.key'), 'utf8'),
        ...describeCertificate(certificatePem),
      },
    ],
  });
  await waitUntil('a bundle with the admin host', () =>
    (controller.store.current?.files['nginx.conf'] ?? '').includes(`server_name "${ADMIN_HOST}"`),
  );
  const stateDir = await mkdtemp(path.join(os.tmpdir(), 'swarmgate-admin-host-'));
  // nginx's workers (nobody) connect to the ACME relay's unix socket in it.
  await chmod(stateDir, 0o755);
  const peersSocket = path.join(stateDir, 'peers.sock');
  setup = {
    stateDir,
    listenPort: await freePort(),
    tlsPort: await freePort(),
    // The image's placeholder certificate (the default server of 443) is the test certificate here.
    proxy: {
      ...readControllerConfig({}).proxy,
      placeholderCertFile: TEST_CHANNEL_CERT_FILE,
      placeholderKeyFile: TEST_PLACEHOLDER_KEY_FILE,
    },
    pidFile: path.join(stateDir, 'nginx.pid'),
    errorLog: path.join(stateDir, 'error.log'),
  };
  const published = controller.store.current?.files ?? {};
  conf = loopbackConf(setup, published['nginx.conf'] ?? '')
    .replaceAll(IMAGE_LUA_DIR, REPO_LUA_DIR)
    .replaceAll(EDGE_PEERS_SOCKET, peersSocket);
  const files = withConf(published, conf);
  const cache = new BundleCache(stateDir);
  const fingerprint = fingerprintBundle(files);
  await cache.stage(fingerprint, files);
  await cache.activate(fingerprint, { version: 1, fingerprint });
  nginx = createNginxProcess(NGINX_BINARY, peersSocket);
  await nginx.start(cache.currentConfPath);
});

after(async () => {
  await nginx.stop(5000);
  await controller.stop();
  await channelTls.remove();
  await rm(setup.stateDir, { recursive: true, force: true });
});

test('the controller opens a status listener with the page routes only, and the edges reach only it', () => {
  assert.ok(controller.statusPort !== null);
  assert.deepEqual(controller.statusRoutes.map((route) => `${route.method} ${route.path}`).sort(), [
    'GET /status',
    'GET /status/assets/:name',
    'GET /status/events',
    'POST /status/login',
    'POST /status/logout',
  ]);
  assert.ok(!conf.includes(`:${controller.port};`) && !conf.includes(`:${controller.port}/`));
  assert.match(conf, new RegExp(`set \\$swarmgate_status "127\\.0\\.0\\.1:${controller.statusPort}";`));
});

test('through the admin host: the login form, then the page, its assets and its live events after login', async () => {
  const form = await request('GET', '/status');
  assert.equal(form.status, 200);
  assert.match(form.body, /<h2>Sign in<\/h2>/);
  // The root leads to the page by a relative Location: the port the browser used may not be the one nginx listens
  // on (Docker publishes the edge's 443 on another port), so the port is left to the browser.
  const root = await request('GET', '/');
  assert.equal(root.status, 302);
  assert.deepEqual(header(root, 'location'), ['/status']);

  const wrong = await request('POST', '/status/login', {
    headers: { 'Content-Type': 'application/x-www-form-urlencoded', Origin: `https://${ADMIN_HOST}` },
    body: 'token=not-the-token',
  });
  assert.equal(wrong.status, 401);

  const from = freshSource();
  const answer = await request('POST', '/status/login', {
    from,
    headers: { 'Content-Type': 'application/x-www-form-urlencoded', Origin: `https://${ADMIN_HOST}` },
    body: new URLSearchParams({ token: TOKEN }).toString(),
  });
  assert.equal(answer.status, 303);
  const setCookie = header(answer, 'set-cookie')[0] ?? '';
  for (const flag of ['Secure', 'HttpOnly', 'SameSite=Strict', 'Path=/status']) {
    assert.ok(setCookie.split('; ').includes(flag), `the session cookie has ${flag}: ${setCookie}`);
  }
  const cookie = setCookie.split(';')[0] ?? '';
  assert.match(header(answer, 'strict-transport-security')[0] ?? '', /^max-age=\d+/);

  const page = await request('GET', '/status', { headers: { Cookie: cookie } });
  assert.equal(page.status, 200);
  assert.match(page.body, /status\.js/);
  assert.doesNotMatch(page.body, /<h2>Sign in<\/h2>/);
  const script = await request('GET', '/status/assets/status.js');
  assert.equal(script.status, 200);
  assert.match(header(script, 'content-type')[0] ?? '', /^text\/javascript/);

  const events = await request('GET', '/status/events', {
    headers: { Cookie: cookie },
    until: /event: status\ndata: .*web\.example\.com/,
  });
  assert.equal(events.status, 200);
  assert.match(header(events, 'content-type')[0] ?? '', /^text\/event-stream/);

  const logout = await request('POST', '/status/logout', {
    headers: { Cookie: cookie, Origin: `https://${ADMIN_HOST}` },
  });
  assert.equal(logout.status, 303);
  const afterLogout = await request('GET', '/status/events', { headers: { Cookie: cookie } });
  assert.equal(afterLogout.status, 401, 'the ended session opens nothing');
});

test('through the admin host: every admin API and edge channel path is a 404 from nginx, tokens or not', async () => {
  const apiRoutes = controller.routes.filter((route) => !route.path.startsWith('/status'));
  assert.ok(apiRoutes.length >= 12, `the API lists its routes (${apiRoutes.length})`);
  const cookie = await signIn(freshSource());
  for (const { method, path: pattern } of apiRoutes) {
    const target = pattern
      .split('/')
      .map((part) => (part === '*' ? 'apps/web' : part.startsWith(':') ? 'web' : part))
      .join('/');
    for (const authorization of [null, `Bearer ${TOKEN}`, `Bearer ${EDGE_TOKEN}`]) {
      const answer = await request(method, target, {
        headers: { Cookie: cookie, ...(authorization ? { Authorization: authorization } : {}) },
        body: method === 'GET' || method === 'DELETE' ? '' : '{"replicas":0}',
      });
      assertNginx404(answer, `${method} ${target} with ${authorization?.slice(0, 12) ?? 'no token'}`);
    }
  }
  for (const target of ['/healthz', '/readyz', '/metrics', '/.well-known/nothing', '/status/', '/statusx']) {
    assertNginx404(await request('GET', target, { headers: { Cookie: cookie } }), target);
  }
});

test('through the admin host: traversal forms aimed at the API are 404 from nginx', async () => {
  const forms = [
    '/status/..\\v1\\status',
    '/status\\..\\v1\\status',
    '/status/assets/..\\..\\v1\\status',
    '/status/assets/..%5c..%5cv1%5cstatus',
    '/status/assets/..%2fv1%2fstatus',
    '/status/assets/..%2f..%2fv1%2fstatus',
    '/status/%2e%2e/v1/status',
    '/status/assets/%2e%2e/%2e%2e/v1/status',
    '/status/%2E%2E/v1/edge/poll',
    '/status/..%2fv1%2fedge%2fpoll',
    '//v1/status',
    '/status//../v1/status',
    '//status/..//v1//edge//poll',
    '/status/events/../../v1/status',
    '/status/assets/status.js/../../../v1/status',
    '/status/assets/status.js%2f..%2f..%2f..%2fv1%2fstatus',
  ];
  for (const target of forms) {
    for (const method of ['GET', 'POST']) {
      assertNginx404(
        await request(method, target, { headers: { Authorization: `Bearer ${TOKEN}` } }),
        `${method} ${target}`,
      );
    }
  }
});

test('through the admin host: a bearer token, admin or edge, is no session: the page asks to sign in and the events refuse', async () => {
  for (const token of [TOKEN, EDGE_TOKEN]) {
    const events = await request('GET', '/status/events', { headers: { Authorization: `Bearer ${token}` } });
    assert.equal(events.status, 401, 'the events need the session cookie');
    const page = await request('GET', '/status', { headers: { Authorization: `Bearer ${token}` } });
    assert.match(page.body, /<h2>Sign in<\/h2>/, 'the page asks to sign in');
  }
});

test('through the admin host: the login throttle counts the visitor, whatever X-Real-IP it sends', async () => {
  const visitor = freshSource();
  for (let attempt = 0; attempt < 10; attempt++) {
    const answer = await request('POST', '/status/login', {
      from: visitor,
      headers: {
        'Content-Type': 'application/x-www-form-urlencoded',
        Origin: `https://${ADMIN_HOST}`,
        // Each attempt claims another address: nginx replaces these with the connection's.
        'X-Real-IP': `203.0.113.${attempt + 1}`,
        'X-Forwarded-For': `198.51.100.${attempt + 1}`,
      },
      body: 'token=guess',
    });
    assert.equal(answer.status, 401, `attempt ${attempt + 1}`);
  }
  const held = await request('POST', '/status/login', {
    from: visitor,
    headers: {
      'Content-Type': 'application/x-www-form-urlencoded',
      Origin: `https://${ADMIN_HOST}`,
      'X-Real-IP': '203.0.113.99',
    },
    body: new URLSearchParams({ token: TOKEN }).toString(),
  });
  assert.equal(held.status, 429, 'the eleventh try, even with the right token');
  assert.ok(Number(header(held, 'retry-after')[0]) > 0);
  // Another visitor is not held by the first one's failures.
  assert.match(await signIn(freshSource()), /^swarmgate_session=/);
});

test('over HTTP/2 on a port other than 443, a same-origin login signs in; another origin, or the port left out, is refused', async () => {
  assert.notEqual(setup.tlsPort, 443);
  const page = `https://${ADMIN_HOST}:${setup.tlsPort}`;
  const signedIn = await http2Login(page, TOKEN);
  assert.equal(signedIn.status, 303, "the page's own origin, port included");
  assert.match(signedIn.cookie, /^swarmgate_session=/);
  for (const origin of [
    'https://attacker.example.net',
    `https://attacker.example.net:${setup.tlsPort}`,
    // Another port is another origin: a page on the default port may not post to this one.
    `https://${ADMIN_HOST}`,
    `http://${ADMIN_HOST}:${setup.tlsPort}`,
    'null',
  ]) {
    const refused = await http2Login(origin, TOKEN);
    assert.equal(refused.status, 403, `Origin ${origin}`);
    assert.equal(refused.cookie, '', `no session for Origin ${origin}`);
  }
});

test('port 80 of the admin host redirects to HTTPS and serves nothing of the page', async () => {
  for (const target of ['/status', '/v1/status', '/status/login']) {
    const answer = await request('GET', target, { plain: true });
    assert.equal(answer.status, 301, target);
    assert.deepEqual(header(answer, 'location'), [`https://${ADMIN_HOST}${target}`]);
  }
});

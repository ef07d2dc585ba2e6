// The issue-14 labels in the edge's real nginx on loopback (no Docker): what a user checks with curl. Basic auth
// 401/200, address rules 403, forward auth pass/deny with a copied header, 429 past the burst, headers and CORS,
// gzip negotiated, redirects, several routes of one service, an error page, and the default host.
import assert from 'node:assert/strict';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import type { Snapshot } from '../../src/discovery/snapshot.ts';
import { BundleCache } from '../../src/edge/bundle-cache.ts';
import { createNginxProcess } from '../../src/edge/nginx-process.ts';
import { buildRoutingModel } from '../../src/model/routing-model.ts';
import { createTemplateRenderer } from '../../src/render/nunjucks-env.ts';
import { fingerprintBundle, renderConfig } from '../../src/render/render-config.ts';
import { loopbackConf, loopbackSetup, REPO_LUA_DIR } from '../support/loopback-nginx.ts';
import { waitUntil } from '../support/wait.ts';
import { serviceInfo as service } from '../support/service-info.ts';

interface Answer {
  readonly status: number;
  readonly headers: http.IncomingHttpHeaders;
  readonly body: string;
}

function send(
  port: number,
  host: string,
  urlPath = '/',
  headers: Record<string, string> = {},
  method = 'GET',
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: '127.0.0.1',
        port,
        path: urlPath,
        method,
        headers: { host, ...headers },
        agent: false,
        timeout: 5000,
      },
      (res) => {
        let body = '';
        res.setEncoding('latin1');
        res.on('data', (chunk: string) => (body += chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      },
    );
    req.on('timeout', () => req.destroy(new Error(`no answer from ${host}${urlPath}`)));
    req.on('error', reject);
    req.end();
  });
}

/** An app that echoes its request (padded, so it is worth compressing), or an auth service by path. */
async function listen(
  handler: http.RequestListener,
  ip = '127.0.0.1',
): Promise<{ server: http.Server; port: number }> {
  const server = http.createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, ip, () => resolve()));
  return { server, port: (server.address() as AddressInfo).port };
}

// htpasswd -nbB -C 5 alice secret
const HTPASSWD = 'alice:$2y$05$LmMEpuUcmHIzjs1wbP3UOOmdiDoy5aGY7axzvrEkaXdm7sUsryBJm\n';
const basic = (user: string, password: string): string =>
  `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;

test('the migration labels behave in a real nginx as users check them with curl', async (t) => {
  const stateDir = await mkdtemp(path.join(os.tmpdir(), 'swarmgate-access-'));
  // nginx workers (nobody) read htpasswd files and error pages at request time: the image's state dir is 0755 too.
  await chmod(stateDir, 0o755);
  const app = await listen((req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ app: 'main', path: req.url, headers: req.headers, pad: 'x'.repeat(600) }));
  }, '127.0.0.2');
  const admin = await listen((req, res) => {
    res
      .writeHead(200, { 'content-type': 'application/json' })
      .end(JSON.stringify({ app: 'admin', path: req.url }));
  }, '127.0.0.2');
  const auth = await listen((req, res) => {
    const status = req.url === '/ok' ? 200 : req.url === '/forbid' ? 403 : 401;
    res.writeHead(status, { 'x-user': 'alice', 'x-original': req.headers['x-original-uri'] ?? '' }).end();
  });
  const setup = await loopbackSetup(stateDir, { defaultHost: 'main.test' });
  const services = [
    service('main', { VIRTUAL_HOST: 'main.test', VIRTUAL_PORT: String(app.port) }),
    service('basic', {
      VIRTUAL_HOST: 'basic.test',
      VIRTUAL_PORT: String(app.port),
      'swarmgate.auth.basic': 'users',
    }),
    service(
      'internal',
      { VIRTUAL_HOST: 'internal.test', VIRTUAL_PORT: String(app.port) },
      { NETWORK_ACCESS: 'internal' },
    ),
    service('listed', {
      VIRTUAL_HOST: 'listed.test',
      VIRTUAL_PORT: String(app.port),
      'swarmgate.allow': '203.0.113.0/24',
    }),
    service('denied', {
      VIRTUAL_HOST: 'denied.test',
      VIRTUAL_PORT: String(app.port),
      'swarmgate.deny': '127.0.0.0/8',
    }),
    service('sso', {
      VIRTUAL_HOST: 'sso.test',
      VIRTUAL_PORT: String(app.port),
      'swarmgate.auth.forward': `http://127.0.0.1:${auth.port}/ok`,
      'swarmgate.auth.forward.headers': 'X-User',
    }),
    service('sso-no', {
      VIRTUAL_HOST: 'sso-no.test',
      VIRTUAL_PORT: String(app.port),
      'swarmgate.auth.forward': `http://127.0.0.1:${auth.port}/no`,
    }),
    service('sso-forbid', {
      VIRTUAL_HOST: 'sso-forbid.test',
      VIRTUAL_PORT: String(app.port),
      'swarmgate.auth.forward': `http://127.0.0.1:${auth.port}/forbid`,
    }),
    service('rated', {
      VIRTUAL_HOST: 'rated.test',
      VIRTUAL_PORT: String(app.port),
      'swarmgate.rate-limit': '1r/m',
      'swarmgate.rate-limit.burst': '2',
    }),
    service('dressed', {
      VIRTUAL_HOST: 'dressed.test',
      VIRTUAL_PORT: String(app.port),
      'swarmgate.security-headers': 'on',
      'swarmgate.header.Content-Security-Policy': "default-src 'self'",
      'swarmgate.cors.origins': 'https://app.test',
    }),
    service('plain', { VIRTUAL_HOST: 'plain.test', VIRTUAL_PORT: String(app.port), 'swarmgate.gzip': 'off' }),
    service('moved', {
      VIRTUAL_HOST: 'old.test',
      VIRTUAL_PORT: String(app.port),
      'swarmgate.redirect': 'https://new.test',
    }),
    service('site', {
      VIRTUAL_HOST: 'site.test,www.site.test',
      VIRTUAL_PORT: String(app.port),
      'swarmgate.www-redirect': 'to-apex',
    }),
    service(
      'multi',
      {},
      {
        VIRTUAL_HOST_MULTIPORTS: JSON.stringify({
          'multi.test': { '/': { port: app.port }, '/admin/': { port: admin.port, dest: '/' } },
          'admin.multi.test': { '/': { port: admin.port } },
        }),
      },
    ),
    { ...service('down', { VIRTUAL_HOST: 'down.test', 'swarmgate.error-page': 'maintenance' }), replicas: 0 },
  ];
  const snapshot: Snapshot = {
    services,
    tasks: services
      .filter((one) => one.replicas !== 0)
      .map((one) => ({
        id: `t-${one.name}`,
        serviceId: one.id,
        nodeId: 'n1',
        slot: 1,
        desiredState: 'running',
        state: 'running',
        stateSince: '',
        error: null,
        image: 'x:1',
        addresses: [{ networkId: 'net', networkName: 'swarmgate', ip: '127.0.0.2' }],
      })),
    networks: [{ id: 'net', name: 'swarmgate', driver: 'overlay', scope: 'swarm', ingress: false }],
    nodes: [],
    configs: [
      { name: 'users', kind: 'htpasswd', data: HTPASSWD },
      { name: 'maintenance', kind: 'error-page', data: '<h1>back soon</h1>\n' },
    ],
  };
  const model = buildRoutingModel(snapshot, { networks: ['swarmgate'], defaultHost: 'main.test' });
  assert.deepEqual(model.problems, []);
  const rendered = renderConfig(
    model,
    { proxy: setup.proxy, generator: 'test', luaDir: REPO_LUA_DIR },
    createTemplateRenderer(),
  );
  const files = { ...rendered, 'nginx.conf': loopbackConf(setup, rendered['nginx.conf'] ?? '') };
  const cache = new BundleCache(stateDir);
  const fingerprint = fingerprintBundle(files);
  await cache.stage(fingerprint, files);
  await cache.activate(fingerprint, { version: 1, fingerprint });
  const nginx = createNginxProcess(process.env.SWARMGATE_NGINX ?? 'nginx', setup.proxy.peersSocket);
  t.after(async () => {
    await nginx.stop(5000);
    for (const one of [app, admin, auth]) one.server.close();
    await rm(stateDir, { recursive: true, force: true });
  });
  await nginx.start(cache.currentConfPath);
  const port = setup.listenPort;
  await waitUntil('nginx to serve main.test', async () => (await send(port, 'main.test')).status === 200);

  // Basic auth.
  assert.equal((await send(port, 'basic.test')).status, 401);
  assert.equal((await send(port, 'basic.test', '/', { authorization: basic('alice', 'nope') })).status, 401);
  assert.equal(
    (await send(port, 'basic.test', '/', { authorization: basic('alice', 'secret') })).status,
    200,
  );

  // Address rules: this client is 127.0.0.1.
  assert.equal((await send(port, 'internal.test')).status, 200, 'loopback is internal');
  assert.equal(
    (await send(port, 'internal.test', '/', { 'x-forwarded-for': '203.0.113.9' })).status,
    200,
    'without SWARMGATE_TRUSTED_PROXIES a client-sent X-Forwarded-For is ignored',
  );
  assert.equal((await send(port, 'listed.test')).status, 403, 'not in the allow list');
  assert.equal((await send(port, 'denied.test')).status, 403, 'in the deny list');

  // Forward auth.
  const passed = await send(port, 'sso.test', '/page?q=1', { 'x-user': 'forged' });
  assert.equal(passed.status, 200);
  const echoed = JSON.parse(passed.body) as { headers: Record<string, string> };
  assert.equal(echoed.headers['x-user'], 'alice', "the auth service's header replaced the client's");
  assert.equal(echoed.headers['x-forwarded-ssl'], 'off');
  assert.equal(echoed.headers['x-original-uri'], '/page?q=1');
  assert.equal((await send(port, 'sso-no.test')).status, 401);
  assert.equal((await send(port, 'sso-forbid.test')).status, 403);

  // Rate limit: 1 per minute with a burst of 2 lets three through, then 429.
  const statuses: number[] = [];
  for (let i = 0; i < 5; i++) statuses.push((await send(port, 'rated.test')).status);
  assert.deepEqual(statuses, [200, 200, 200, 429, 429]);

  // Headers, CORS and gzip.
  const dressed = await send(port, 'dressed.test', '/', {
    'accept-encoding': 'gzip',
    origin: 'https://app.test',
  });
  assert.equal(dressed.headers['x-content-type-options'], 'nosniff');
  assert.equal(dressed.headers['content-security-policy'], "default-src 'self'");
  assert.equal(dressed.headers['access-control-allow-origin'], 'https://app.test');
  assert.equal(dressed.headers['content-encoding'], 'gzip');
  const otherOrigin = await send(port, 'dressed.test', '/', { origin: 'https://evil.test' });
  assert.equal(otherOrigin.headers['access-control-allow-origin'], undefined);
  assert.equal(
    (await send(port, 'dressed.test', '/', { origin: 'https://app.test' }, 'OPTIONS')).status,
    204,
  );
  assert.equal(
    (await send(port, 'plain.test', '/', { 'accept-encoding': 'gzip' })).headers['content-encoding'],
    undefined,
  );

  // Redirects.
  const moved = await send(port, 'old.test', '/a?b=c');
  assert.deepEqual([moved.status, moved.headers.location], [301, 'https://new.test/a?b=c']);
  const www = await send(port, 'www.site.test', '/x');
  assert.deepEqual([www.status, www.headers.location], [301, 'http://site.test/x']);
  assert.equal((await send(port, 'site.test', '/x')).status, 200);

  // Several routes of one service.
  assert.match((await send(port, 'multi.test', '/')).body, /"app":"main"/);
  assert.match((await send(port, 'multi.test', '/admin/users')).body, /"app":"admin","path":"\/users"/);
  assert.match((await send(port, 'admin.multi.test', '/')).body, /"app":"admin"/);

  // An error page while the service has no task, and the default host for unknown names.
  const down = await send(port, 'down.test');
  assert.equal(down.status, 503);
  assert.match(down.body, /back soon/);
  assert.match((await send(port, 'unknown.test')).body, /"app":"main"/);
});

test('without SWARMGATE_DEFAULT_HOST an unknown name still gets 503 (the catch-all stays default)', async () => {
  const model = buildRoutingModel(
    { services: [service('a', { VIRTUAL_HOST: 'a.test' })], tasks: [], networks: [], nodes: [] },
    { networks: ['swarmgate'] },
  );
  const conf =
    renderConfig(
      model,
      { proxy: (await loopbackSetup(os.tmpdir())).proxy, generator: 't' },
      createTemplateRenderer(),
    )['nginx.conf'] ?? '';
  assert.match(conf, /listen 80 default_server;\n {8}server_name _;/);
});

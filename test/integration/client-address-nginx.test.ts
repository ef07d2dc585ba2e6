// The client address that access rules and limits see, in the edge's real nginx on loopback (no Docker), with
// SWARMGATE_TRUSTED_PROXIES naming loopback as the load balancer in front: a trusted peer's X-Forwarded-For is the
// client (a public one is refused by NETWORK_ACCESS=internal, a private one passes, each has its own rate bucket),
// also over HTTPS when a service asks for TLS passthrough; and swarmgate.max-connections gives 429 while its cap is
// held. Without trusted proxies the header is ignored: access-nginx.test.ts.
import assert from 'node:assert/strict';
import { mkdtemp, readFile } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import type { Snapshot } from '../../src/discovery/snapshot.ts';
import { buildRoutingModel } from '../../src/model/routing-model.ts';
import { createTemplateRenderer } from '../../src/render/nunjucks-env.ts';
import { renderConfig } from '../../src/render/render-config.ts';
import {
  loopbackConf,
  loopbackSetup,
  REPO_LUA_DIR,
  REPO_NJS_DIR,
  startBundleNginx,
  withConf,
} from '../support/loopback-nginx.ts';
import { serviceInfo as service } from '../support/service-info.ts';

const fixtures = new URL('../fixtures/', import.meta.url);
const certificate = {
  certificatePem: await readFile(new URL('test-only.crt', fixtures), 'utf8'),
  privateKeyPem: await readFile(new URL('test-only.key', fixtures), 'utf8'),
};

interface Answer {
  readonly status: number;
  readonly body: string;
}

/** One request on its own connection from 127.0.0.1 (the "load balancer"), over HTTP or HTTPS (SNI = host). */
function send(
  scheme: 'http' | 'https',
  port: number,
  host: string,
  headers: Record<string, string> = {},
  urlPath = '/',
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const options = {
      host: '127.0.0.1',
      port,
      path: urlPath,
      headers: { host, ...headers },
      agent: false,
      timeout: 5000,
    };
    const onAnswer = (res: http.IncomingMessage): void => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    };
    const req =
      scheme === 'http'
        ? http.request(options, onAnswer)
        : https.request({ ...options, servername: host, rejectUnauthorized: false }, onAnswer);
    req.on('timeout', () => req.destroy(new Error(`no answer from ${scheme}://${host}${urlPath}`)));
    req.on('error', reject);
    req.end();
  });
}

test('behind trusted proxies the client is the one in X-Forwarded-For, over HTTP and HTTPS', async (t) => {
  const stateDir = await mkdtemp(path.join(os.tmpdir(), 'swarmgate-client-address-'));
  // A slow path holds its answer until released: the connection cap's one slot stays taken meanwhile.
  let release = (): void => undefined;
  let held = (): void => undefined;
  const heldNow = new Promise<void>((resolve) => (held = resolve));
  const app = http.createServer((req, res) => {
    if (req.url === '/slow') {
      held();
      release = () => res.end('slow done');
      return;
    }
    res.end(`app sees ${String(req.headers['x-real-ip'])}`);
  });
  await new Promise<void>((resolve) => app.listen(0, '127.0.0.2', () => resolve()));
  const appPort = (app.address() as AddressInfo).port;
  t.after(async () => {
    app.closeAllConnections();
    await new Promise((resolve) => app.close(resolve));
  });

  const setup = await loopbackSetup(stateDir, {
    trustDownstreamProxy: true,
    trustedProxies: ['127.0.0.0/8'],
  });
  const services = [
    service(
      'internal',
      { VIRTUAL_HOST: 'internal.test', VIRTUAL_PORT: String(appPort), HTTPS_METHOD: 'noredirect' },
      { NETWORK_ACCESS: 'internal' },
    ),
    service('rated', {
      VIRTUAL_HOST: 'rated.test',
      VIRTUAL_PORT: String(appPort),
      'swarmgate.rate-limit': '1r/m',
    }),
    service('capped', {
      VIRTUAL_HOST: 'capped.test',
      VIRTUAL_PORT: String(appPort),
      'swarmgate.max-connections': '1',
    }),
    // Any passthrough service moves every HTTPS server behind the stream hop on 443.
    service('vault', { 'swarmgate.tls.passthrough': 'vault.test' }),
  ];
  const snapshot: Snapshot = {
    services,
    tasks: services.map((one) => ({
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
  };
  const model = buildRoutingModel(snapshot, {
    networks: ['swarmgate'],
    certificates: [{ name: 'internal', domains: ['internal.test'], source: 'user' }],
    trustedProxies: setup.proxy.trustedProxies,
  });
  const rendered = renderConfig(
    model,
    { proxy: setup.proxy, generator: 'test', luaDir: REPO_LUA_DIR, njsDir: REPO_NJS_DIR },
    createTemplateRenderer(),
    (name) => (name === 'internal' ? certificate : undefined),
  );
  const conf = loopbackConf(setup, rendered['nginx.conf'] ?? '').replace(
    /listen 443;/,
    `listen 127.0.0.1:${setup.tlsPort};`,
  );
  await startBundleNginx(t, stateDir, setup, withConf(rendered, conf));
  const { listenPort: httpPort, tlsPort } = setup;

  await t.test(
    'HTTP: a public client behind the balancer is refused by NETWORK_ACCESS=internal',
    async () => {
      const outside = await send('http', httpPort, 'internal.test', { 'x-forwarded-for': '203.0.113.9' });
      assert.equal(outside.status, 403);
      const inside = await send('http', httpPort, 'internal.test', { 'x-forwarded-for': '10.1.2.3' });
      assert.deepEqual([inside.status, inside.body], [200, 'app sees 10.1.2.3']);
    },
  );

  await t.test('HTTPS: the same, although a service asks for TLS passthrough', async () => {
    const outside = await send('https', tlsPort, 'internal.test', { 'x-forwarded-for': '203.0.113.9' });
    assert.equal(outside.status, 403, 'a public client must not pass as the private balancer');
    const inside = await send('https', tlsPort, 'internal.test', { 'x-forwarded-for': '10.1.2.3' });
    assert.deepEqual([inside.status, inside.body], [200, 'app sees 10.1.2.3']);
  });

  await t.test('each forwarded client has its own rate bucket', async () => {
    const first = { 'x-forwarded-for': '203.0.113.9' };
    const second = { 'x-forwarded-for': '203.0.113.10' };
    const statuses: number[] = [];
    for (const headers of [first, first, first, second]) {
      statuses.push((await send('http', httpPort, 'rated.test', headers)).status);
    }
    // 1r/m and the default burst of 1: two pass, the third is over; another client starts its own bucket.
    assert.deepEqual(statuses, [200, 200, 429, 200]);
  });

  await t.test('swarmgate.max-connections=1: a second request while one is held gets 429', async () => {
    const slow = send('http', httpPort, 'capped.test', {}, '/slow');
    await heldNow;
    assert.equal((await send('http', httpPort, 'capped.test')).status, 429);
    release();
    assert.deepEqual(await slow, { status: 200, body: 'slow done' });
    assert.equal((await send('http', httpPort, 'capped.test')).status, 200, 'the slot is free again');
  });

  await t.test('the passthrough service is refused, naming SWARMGATE_TRUSTED_PROXIES', () => {
    assert.equal(model.stream, undefined, 'no stream block: HTTPS listens on 443 itself');
    assert.deepEqual(
      model.problems.map((problem) => [problem.service, problem.label, problem.code, problem.severity]),
      [['vault', 'swarmgate.tls.passthrough', 'INVALID_LABEL', 'error']],
    );
    assert.match(model.problems[0]?.reason ?? '', /SWARMGATE_TRUSTED_PROXIES/);
  });
});

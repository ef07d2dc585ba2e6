// The admin API in-process against a fake Docker port and a fake registry: every route, auth, bad input, and
// secrets never in a response or a log line.
import assert from 'node:assert/strict';
import tls from 'node:tls';
import { after, before, test } from 'node:test';
import type { AcmePort } from '../../src/acme/acme-adapter.ts';
import { deriveStateKey } from '../../src/acme/state-store.ts';
import { readControllerConfig } from '../../src/config.ts';
import { startController } from '../../src/controller/controller.ts';
import type { RunningController } from '../../src/controller/controller.ts';
import { createCapturingLogger } from '../../src/logger.ts';
import { systemClock } from '../../src/reconcile/clock.ts';
import type { RegistryTransport } from '../../src/registry/registry-client.ts';
import { createTemplateRenderer } from '../../src/render/nunjucks-env.ts';
import type { RawMount, RawService } from '../../src/docker/docker-port.ts';
import { apiRequest, makeChannelKeyPair } from '../support/channel-tls.ts';
import type { ChannelKeyPair } from '../support/channel-tls.ts';
import { FakeDocker, rawService, rawTask } from '../support/fake-docker.ts';
import { waitUntil } from '../support/wait.ts';

const TOKEN = 'admin-api-test-token-0123456789';
const EDGE_TOKEN = 'admin-api-edge-token-0123456789';
const PASSWORD = 'hunter2-very-secret-registry-password';
const noAcme: AcmePort = {
  createAccountKey: () => Promise.reject(new Error('unused')),
  order: () => Promise.reject(new Error('unused')),
};

/** A registry with Bearer auth (token service at /token) holding 3 repositories. */
const registryRequests: { url: string; authorization: string }[] = [];
const fakeRegistry: RegistryTransport = async (url, headers) => {
  registryRequests.push({ url: url.toString(), authorization: headers.authorization ?? '' });
  const basic = `Basic ${Buffer.from(`robot:${PASSWORD}`).toString('base64')}`;
  if (url.pathname === '/token') {
    return headers.authorization === basic
      ? { status: 200, headers: {}, body: JSON.stringify({ token: 'tok-1', expires_in: 300 }) }
      : { status: 401, headers: {}, body: '{}' };
  }
  if (headers.authorization !== 'Bearer tok-1') {
    return {
      status: 401,
      headers: { 'www-authenticate': `Bearer realm="https://${url.host}/token",service="registry.test"` },
      body: '{}',
    };
  }
  if (url.pathname === '/v2/_catalog') {
    const all = ['apps/api', 'apps/web', 'tools/cli'];
    const last = url.searchParams.get('last');
    const n = Number(url.searchParams.get('n'));
    const start = last ? all.indexOf(last) + 1 : 0;
    const items = all.slice(start, start + n);
    const more = start + n < all.length;
    return {
      status: 200,
      headers: more ? { link: `</v2/_catalog?last=${items.at(-1)}&n=${n}>; rel="next"` } : {},
      body: JSON.stringify({ repositories: items }),
    };
  }
  if (url.pathname === '/v2/apps/web/tags/list') {
    return { status: 200, headers: {}, body: JSON.stringify({ name: 'apps/web', tags: ['1.0', '1.1'] }) };
  }
  return { status: 404, headers: {}, body: '{}' };
};

let docker: FakeDocker;
let controller: RunningController;
let channelTls: ChannelKeyPair & { remove: () => Promise<void> };
let logs: Record<string, unknown>[];
const bodies: string[] = [];

async function api(
  method: string,
  path: string,
  body?: unknown,
  token: string | null = TOKEN,
): Promise<{ status: number; json: Record<string, unknown> }> {
  const answer = await apiRequest(controller.port, channelTls.cert, method, path, { token, body });
  bodies.push(answer.text);
  return { status: answer.status, json: answer.json };
}

function errorCode(json: Record<string, unknown>): string | undefined {
  return (json.error as { code?: string } | undefined)?.code;
}

before(async () => {
  docker = new FakeDocker();
  docker.services = [
    rawService('web', { VIRTUAL_HOST: 'web.example.com' }, { replicas: 1 }),
    {
      ...rawService('stacked', { VIRTUAL_HOST: 'stacked.example.com', 'com.docker.stack.namespace': 'shop' }),
    },
    {
      ...rawService('agent', { VIRTUAL_HOST: 'agent.example.com' }),
      Spec: { ...rawService('agent', { VIRTUAL_HOST: 'agent.example.com' }).Spec, Mode: { Global: {} } },
    },
  ];
  docker.tasks = [rawTask('t1', 'web', '10.0.0.11'), rawTask('s1', 'stacked', '10.0.0.21')];
  // Swarm's part of a scale: tasks appear running (or go away) after the update.
  docker.onUpdate = (service) => {
    const id = service.ID ?? '';
    const replicas = service.Spec?.Mode?.Replicated?.Replicas ?? 0;
    const image = service.Spec?.TaskTemplate?.ContainerSpec?.Image ?? '';
    docker.tasks = docker.tasks.filter((task) => task.ServiceID !== id);
    for (let slot = 1; slot <= replicas; slot++) {
      const task = rawTask(`${id}-${slot}-${image.length}`, id, `10.0.1.${slot}`);
      task.Spec = { ContainerSpec: { Image: image } };
      docker.tasks.push(task);
    }
  };
  channelTls = await makeChannelKeyPair();
  const capture = createCapturingLogger('debug');
  logs = capture.lines;
  controller = await startController({
    config: readControllerConfig({
      SWARMGATE_LISTEN_PORT: '0',
      SWARMGATE_CHALLENGE_PORT: '0',
      SWARMGATE_HEALTH_PORT: '0',
      SWARMGATE_DEBOUNCE: '5ms:20ms',
      SWARMGATE_SLOW_POLL: '1h',
      SWARMGATE_MAX_REPLICAS: '20',
    }),
    adminToken: TOKEN,
    edgeToken: EDGE_TOKEN,
    channelTls,
    docker,
    validator: { validate: async () => ({ ok: true }) },
    templates: createTemplateRenderer(),
    logger: capture.logger,
    clock: systemClock,
    version: 'test',
    acme: noAcme,
    stateKey: deriveStateKey('admin-api-state-key-0123456789'),
    userCertificates: [],
    registryTransport: fakeRegistry,
  });
  await waitUntil('first publish', () => controller.store.current !== null);
});

after(async () => {
  await controller.stop();
  await channelTls.remove();
});

/** A concrete path for a route pattern ("/v1/services/:name" → "/v1/services/web"). */
function concretePath(pattern: string): string {
  const values: Record<string, string> = { ':name': 'web', ':host': 'registry.test', '*': 'apps/web' };
  return pattern
    .split('/')
    .map((part) => values[part] ?? part)
    .join('/');
}

test('every admin route needs the admin token: none or a wrong one is 401, the edge token is 403', async () => {
  // The status page signs in with a session cookie instead (its own test below and test/integration/status-page.test.ts).
  const adminRoutes = controller.routes.filter(
    (route) => !route.path.startsWith('/v1/edge/') && !route.path.startsWith('/status'),
  );
  assert.ok(adminRoutes.length >= 12, `the router lists its routes (${adminRoutes.length})`);
  for (const { method, path: pattern } of adminRoutes) {
    const path = concretePath(pattern);
    const body = method === 'GET' || method === 'DELETE' ? undefined : { replicas: 0, image: 'evil:1' };
    for (const [token, status, code] of [
      [null, 401, 'ERR_UNAUTHORIZED'],
      ['wrong-token-of-some-length', 401, 'ERR_UNAUTHORIZED'],
      [EDGE_TOKEN, 403, 'ERR_FORBIDDEN'],
    ] as const) {
      const answer = await api(method, path, body, token);
      assert.equal(answer.status, status, `${method} ${path} with ${token ?? 'no'} token`);
      assert.equal(errorCode(answer.json), code, `${method} ${path}`);
    }
  }
  assert.equal((await api('GET', '/v1/nothing-here')).status, 404);
  assert.equal(docker.updates.length, 0, 'nothing changed');
});

test('the status page shows nothing without a session: every /status route is the login form, static or refused', async () => {
  const statusRoutes = controller.routes.filter((route) => route.path.startsWith('/status'));
  assert.deepEqual(statusRoutes.map((route) => `${route.method} ${route.path}`).sort(), [
    'GET /status',
    'GET /status/assets/:name',
    'GET /status/events',
    'POST /status/login',
    'POST /status/logout',
  ]);
  // Even the admin bearer token is no session: the page's data never travels without the cookie.
  for (const token of [null, TOKEN]) {
    const page = await apiRequest(controller.port, channelTls.cert, 'GET', '/status', { token });
    assert.equal(page.status, 200);
    assert.match(page.text, /<h2>Sign in<\/h2>/);
    assert.doesNotMatch(page.text, /web\.example\.com|id="routes"/);
    const events = await apiRequest(controller.port, channelTls.cert, 'GET', '/status/events', { token });
    assert.equal(events.status, 401);
    assert.equal(errorCode(events.json), 'ERR_UNAUTHORIZED');
  }
  const asset = await apiRequest(controller.port, channelTls.cert, 'GET', '/status/assets/..%2fsessions.ts', {
    token: null,
  });
  assert.equal(asset.status, 400, 'only the named assets, no paths');
  const unknown = await apiRequest(controller.port, channelTls.cert, 'GET', '/status/assets/login.html', {
    token: null,
  });
  assert.equal(unknown.status, 404);
});

/** A raw request over the API's TLS, byte for byte (fetch would normalise the target first). */
function rawGet(target: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({
      port: controller.port,
      host: '127.0.0.1',
      servername: 'swarmgate-controller',
      ca: channelTls.cert,
    });
    let answer = '';
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => (answer += chunk));
    socket.on('error', reject);
    socket.on('close', () => resolve(answer));
    socket.write(
      `GET ${target} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${TOKEN}\r\nConnection: close\r\n\r\n`,
    );
  });
}

test('targets that the URL parser would turn into another route get a coded 400, even with the token', async () => {
  for (const target of [
    '/.well-known/acme-challenge/..\\..\\..\\v1/status',
    '/.well-known/acme-challenge/..\\..\\..\\healthz',
    '/.well-known/acme-challenge/%2e%2e/%2e%2e/v1/status',
    '/.well-known/acme-challenge/x%2f..%2f..%2fv1%2fstatus',
    '/.well-known/acme-challenge/..%5c..%5c..%5cv1/status',
    '//x/v1/status',
  ]) {
    const answer = await rawGet(target);
    assert.match(answer, /^HTTP\/1\.1 400 /, target);
    assert.match(answer, /"code":"ERR_REQUEST_TARGET"/, target);
  }
  assert.match(await rawGet('/v1/status'), /^HTTP\/1\.1 200 /);
});

test('health and readiness are on the loopback health listener only, without a token', async () => {
  const health = `http://127.0.0.1:${controller.healthPort}`;
  assert.equal((await fetch(`${health}/healthz`)).status, 200);
  assert.equal((await fetch(`${health}/readyz`)).status, 200);
  assert.equal((await fetch(`${health}/v1/status`)).status, 404, 'no API route on the health listener');
  assert.equal((await api('GET', '/healthz', undefined, null)).status, 404, 'no health route on the API');
});

test('services: routed services with hosts, replicas and tasks', async () => {
  const { status, json } = await api('GET', '/v1/services');
  assert.equal(status, 200);
  const services = json.services as { name: string }[];
  assert.deepEqual(
    services.map((service) => service.name),
    ['agent', 'stacked', 'web'],
  );
  const web = await api('GET', '/v1/services/web');
  assert.equal(web.status, 200);
  assert.deepEqual(web.json.hosts, ['web.example.com']);
  assert.equal(web.json.desiredReplicas, 1);
  const tasks = web.json.tasks as {
    id: string;
    address: string;
    state: string;
    node: string;
    routed: boolean;
  }[];
  assert.deepEqual(
    tasks.map((task) => [task.id, task.address, task.state, task.node, task.routed]),
    [['t1', '10.0.0.11', 'running', 'node-1', true]],
  );
  assert.equal((await api('GET', '/v1/services/nope')).status, 404);
  assert.equal(errorCode((await api('GET', '/v1/services/bad%20name')).json), 'ERR_BAD_REQUEST');
});

test('scale: bad input gets a coded 4xx and changes nothing', async () => {
  const cases: [unknown, number, string, RegExp][] = [
    [{ replicas: 2.5 }, 400, 'ERR_BAD_REQUEST', /whole number/],
    [{ replicas: '3' }, 400, 'ERR_BAD_REQUEST', /whole number/],
    [{ replicas: -1 }, 400, 'ERR_BAD_REQUEST', /whole number/],
    [{ replicas: 21 }, 400, 'ERR_BAD_REQUEST', /at most 20/],
    [{ replicas: 2, wait: 'soon' }, 400, 'ERR_BAD_REQUEST', /wait/],
    [{ replicas: 2, force: true }, 400, 'ERR_BAD_REQUEST', /unknown field/],
    ['{"replicas": ', 400, 'ERR_BAD_REQUEST', /not valid JSON/],
    [[2], 400, 'ERR_BAD_REQUEST', /JSON object/],
    [JSON.stringify({ replicas: 2, pad: 'x'.repeat(70 * 1024) }), 413, 'ERR_PAYLOAD_TOO_LARGE', /larger/],
  ];
  for (const [body, status, code, message] of cases) {
    const result = await api('POST', '/v1/services/web/scale', body);
    assert.equal(result.status, status, JSON.stringify(body).slice(0, 60));
    assert.equal(errorCode(result.json), code);
    assert.match((result.json.error as { message: string }).message, message);
  }
  const unknown = await api('POST', '/v1/services/nope/scale', { replicas: 2 });
  assert.equal(unknown.status, 404);
  const global = await api('POST', '/v1/services/agent/scale', { replicas: 2 });
  assert.equal(global.status, 409);
  assert.match((global.json.error as { message: string }).message, /not in replicated mode/);
  assert.equal(docker.updates.length, 0, 'no update reached Docker');
});

test('scale: updates with the inspected version, retries a conflict, and waits until every task is routed', async () => {
  docker.staleUpdates = 2;
  const { status, json } = await api('POST', '/v1/services/web/scale', { replicas: 3, wait: 10 });
  assert.equal(status, 200, JSON.stringify(json));
  assert.equal(json.previousReplicas, 1);
  assert.equal(json.replicas, 3);
  const wait = json.wait as { complete: boolean; routedTasks: number };
  assert.equal(wait.complete, true);
  assert.equal(wait.routedTasks, 3);
  const update = docker.updates.at(-1);
  assert.equal(update?.spec.Mode?.Replicated?.Replicas, 3);
  assert.equal(update?.auth, 'keep', 'a scale sends no credentials (Swarm keeps the stored ones)');
  assert.match(controller.store.current?.files['peers.txt'] ?? '', /10\.0\.1\.3:80/);
});

test('scale: warns that a stack deploy resets replicas; a wait that runs out answers 202 with what is missing', async () => {
  docker.onUpdateHold = true;
  const { status, json } = await api('POST', '/v1/services/stacked/scale', { replicas: 2, wait: 1 });
  docker.onUpdateHold = false;
  assert.equal(status, 202);
  assert.match((json.warnings as string[])[0] ?? '', /stack "shop".*resets its replicas/);
  const wait = json.wait as { complete: boolean; missing: string[] };
  assert.equal(wait.complete, false);
  assert.match(wait.missing.join(';'), /of 2 tasks running/);
});

test('registry credentials: stored sealed, listed without the password, validated, deleted', async () => {
  const put = await api('PUT', '/v1/registries/registry.test', {
    username: 'robot',
    password: PASSWORD,
    imagePrefix: 'apps/',
  });
  assert.equal(put.status, 200);
  assert.deepEqual(Object.keys(put.json).sort(), [
    'hasCustomCa',
    'host',
    'imagePrefix',
    'realmHosts',
    'updatedAt',
    'username',
  ]);
  assert.deepEqual(put.json.realmHosts, []);
  const list = await api('GET', '/v1/registries');
  assert.deepEqual(
    (list.json.registries as { host: string }[]).map((entry) => entry.host),
    ['registry.test'],
  );
  assert.equal((await api('GET', '/v1/registries/registry.test')).json.username, 'robot');
  const stored = docker.configs.find(
    (config) => config.Spec?.Labels?.['swarmgate.state'] === 'registry.registry.test',
  );
  assert.ok(stored, 'kept in Swarm configs');
  assert.ok(
    !Buffer.from(stored.Spec?.Data ?? '', 'base64')
      .toString()
      .includes(PASSWORD),
    'sealed',
  );

  for (const [body, message] of [
    [{ username: 'a b', password: 'x' }, /username/],
    [{ username: 'robot' }, /password/],
    [{ username: 'robot', password: 'x', imagePrefix: '../etc' }, /imagePrefix/],
    [{ username: 'robot', password: 'x', ca: 'not a pem' }, /PEM/],
    [{ username: 'robot', password: 'x', realmHosts: 'auth.test' }, /realmHosts/],
    [{ username: 'robot', password: 'x', realmHosts: ['http://auth.test/token'] }, /realmHosts/],
    [{ username: 'robot', password: 'x', realmHosts: ['Auth.test'] }, /realmHosts/],
  ] as const) {
    const result = await api('PUT', '/v1/registries/other.test', body);
    assert.equal(result.status, 400);
    assert.match((result.json.error as { message: string }).message, message);
  }
  assert.equal((await api('PUT', '/v1/registries/bad_host!', { username: 'a', password: 'b' })).status, 400);

  const withRealm = await api('PUT', '/v1/registries/old.test', {
    username: 'someone',
    password: 'temporary-password',
    realmHosts: ['auth.old.test', 'auth.old.test:8443', 'auth.old.test'],
  });
  assert.deepEqual(withRealm.json.realmHosts, ['auth.old.test', 'auth.old.test:8443']);
  assert.equal((await api('DELETE', '/v1/registries/old.test')).status, 200);
  assert.equal((await api('DELETE', '/v1/registries/old.test')).status, 404);
  assert.equal((await api('GET', '/v1/registries/old.test')).status, 404);
});

test('image rollout sends the matching credentials as X-Registry-Auth, and only those', async () => {
  await api('PUT', '/v1/registries/registry.test', {
    username: 'robot',
    password: PASSWORD,
    imagePrefix: 'apps/',
  });
  const matched = await api('POST', '/v1/services/web/image', {
    image: 'registry.test/apps/web:2',
    wait: 10,
  });
  assert.equal(matched.status, 200, JSON.stringify(matched.json));
  assert.equal(matched.json.usedCredentialsFor, 'registry.test');
  assert.equal((matched.json.wait as { complete: boolean }).complete, true);
  const update = docker.updates.at(-1);
  assert.deepEqual(update?.auth, { username: 'robot', password: PASSWORD, serveraddress: 'registry.test' });
  assert.equal(update?.spec.TaskTemplate?.ContainerSpec?.Image, 'registry.test/apps/web:2');
  assert.equal((update?.spec.TaskTemplate as { ForceUpdate?: number }).ForceUpdate, 1);

  const outsidePrefix = await api('POST', '/v1/services/web/image', { image: 'registry.test/other/web:2' });
  assert.equal(outsidePrefix.json.usedCredentialsFor, null);
  // No match: an explicit empty auth, so dockerd cannot reuse registry.test's credentials for this image.
  assert.equal(docker.updates.at(-1)?.auth, 'anonymous');
  const otherHost = await api('POST', '/v1/services/web/image', { image: 'elsewhere.test/apps/web:2' });
  assert.equal(otherHost.json.usedCredentialsFor, null);
  assert.equal(docker.updates.at(-1)?.auth, 'anonymous');

  for (const image of ['', 'UPPER/case', 'a b', 42]) {
    assert.equal((await api('POST', '/v1/services/web/image', { image })).status, 400, String(image));
  }
  assert.equal((await api('POST', '/v1/services/nope/image', { image: 'x:1' })).status, 404);
});

test("scale and image refuse swarmgate's own services, services that reach the Docker socket, and unrouted ones", async () => {
  const routed = { VIRTUAL_HOST: 'x.example.com' };
  const withMounts = (name: string, mounts: RawMount[]): RawService => {
    const service = rawService(name, routed);
    const container = service.Spec?.TaskTemplate?.ContainerSpec;
    if (container) container.Mounts = mounts;
    return service;
  };
  const refused: RawService[] = [
    rawService('swarmgate_controller', { ...routed, 'swarmgate.component': 'controller' }),
    rawService('swarmgate_edge', { ...routed, 'swarmgate.component': 'edge' }),
    withMounts('socket', [{ Type: 'bind', Source: '/var/run/docker.sock', Target: '/var/run/docker.sock' }]),
    withMounts('run-socket', [{ Type: 'bind', Source: '/run/docker.sock', Target: '/docker.sock' }]),
    withMounts('var-run', [{ Type: 'bind', Source: '/var/run/', Target: '/host-run' }]),
    withMounts('root', [{ Type: 'bind', Source: '/', Target: '/host' }]),
    withMounts('odd-path', [{ Type: 'bind', Source: '//var//run/./docker.sock', Target: '/s' }]),
    withMounts('volume-bind', [
      {
        Type: 'volume',
        Target: '/r',
        VolumeOptions: { DriverConfig: { Options: { device: '/var/run', o: 'bind' } } },
      },
    ]),
    rawService('unrouted', {}),
  ];
  const before = docker.services;
  docker.services = [...before, ...refused];
  const updates = docker.updates.length;
  try {
    for (const service of refused) {
      const name = service.Spec?.Name ?? '';
      for (const [path, body] of [
        [`/v1/services/${name}/scale`, { replicas: 0 }],
        [`/v1/services/${name}/image`, { image: 'elsewhere.test/evil:1' }],
      ] as const) {
        const result = await api('POST', path, body);
        assert.equal(result.status, 403, `${path}: ${JSON.stringify(result.json)}`);
        assert.equal(errorCode(result.json), 'ERR_SERVICE_NOT_MANAGED', path);
      }
    }
    const messages = await Promise.all(
      ['swarmgate_controller', 'socket', 'unrouted'].map(
        async (name) =>
          (
            (await api('POST', `/v1/services/${name}/scale`, { replicas: 1 })).json.error as {
              message: string;
            }
          ).message,
      ),
    );
    assert.match(messages[0] ?? '', /swarmgate's own controller/);
    assert.match(messages[1] ?? '', /mounts the host path \/var\/run\/docker\.sock/);
    assert.match(messages[2] ?? '', /no VIRTUAL_HOST/);
    // A routed service with an unrelated bind mount is still managed.
    docker.services.push(withMounts('data', [{ Type: 'bind', Source: '/srv/data', Target: '/data' }]));
    assert.equal((await api('POST', '/v1/services/data/scale', { replicas: 2 })).status, 200);
  } finally {
    docker.services = before;
  }
  assert.equal(docker.updates.length, updates + 1, 'only the managed service was updated');
});

test('registry browsing: catalog with paging and tags, over the Bearer token flow', async () => {
  await api('PUT', '/v1/registries/registry.test', { username: 'robot', password: PASSWORD });
  registryRequests.length = 0;
  const first = await api('GET', '/v1/registries/registry.test/repositories?n=2');
  assert.equal(first.status, 200, JSON.stringify(first.json));
  assert.deepEqual(first.json.repositories, ['apps/api', 'apps/web']);
  assert.equal(first.json.next, 'apps/web');
  const second = await api('GET', '/v1/registries/registry.test/repositories?n=2&last=apps/web');
  assert.deepEqual(second.json.repositories, ['tools/cli']);
  assert.equal(second.json.next, null);
  const tags = await api('GET', '/v1/registries/registry.test/tags/apps/web');
  assert.deepEqual(tags.json.tags, ['1.0', '1.1']);
  assert.ok(
    registryRequests.some(
      (entry) => entry.url.includes('/token?') && entry.url.includes('scope=registry%3Acatalog%3A*'),
    ),
  );
  assert.equal(
    registryRequests.filter((entry) => entry.url.includes('/token?')).length,
    2,
    'tokens are cached per scope',
  );

  assert.equal((await api('GET', '/v1/registries/unknown.test/repositories')).status, 404);
  assert.equal((await api('GET', '/v1/registries/registry.test/repositories?n=0')).status, 400);
  assert.equal((await api('GET', '/v1/registries/registry.test/tags/Bad..Name')).status, 400);
  assert.equal((await api('GET', '/v1/registries/registry.test/tags/apps/missing')).status, 404);
});

// Issue 13: a dead node's edge kept `scale --wait` waiting 33 s (its 90 s no-contact limit) and showed BEHIND.
test('an edge whose node is down is gone: it never blocks a wait, and status and metrics say so', async () => {
  docker.nodes = [
    ...docker.nodes,
    {
      ID: 'node-dead',
      Description: { Hostname: 'node-dead' },
      Spec: { Role: 'worker', Availability: 'active' },
      Status: { State: 'down' },
    },
  ];
  await controller.reconciler.reconcileNow();
  // The edge polled on an old config just before its node died; it will not poll again.
  const dead = await api(
    'POST',
    '/v1/edge/poll?waitMs=0',
    {
      edge: 'edge-dead',
      node: 'node-dead',
      applied: { version: 1, fingerprint: '0'.repeat(64) },
      rejected: null,
    },
    EDGE_TOKEN,
  );
  assert.equal(dead.status, 200);

  const { status, json } = await api('POST', '/v1/services/web/scale', { replicas: 2, wait: 3 });
  assert.equal(status, 200, JSON.stringify(json));
  const wait = json.wait as { complete: boolean; edgesGone: string[]; missing: string[] };
  assert.equal(wait.complete, true, wait.missing.join('; '));
  assert.deepEqual(wait.edgesGone, ['edge-dead']);

  const edges = (await api('GET', '/v1/status')).json.edges as { edge: string; condition: string }[];
  assert.equal(edges.find((edge) => edge.edge === 'edge-dead')?.condition, 'gone');
  const metrics = (await api('GET', '/metrics')).json.text as string;
  assert.ok(metrics.includes('swarmgate_edge_condition{condition="gone",edge="edge-dead"} 1'), metrics);
  assert.ok(metrics.includes('swarmgate_edges_by_condition{condition="gone"} 1'));
});

test("a new node's edge is served at once and waited for, though the last snapshot does not know its node yet", async () => {
  const report = { edge: 'edge-new', node: 'node-new', applied: null, rejected: null };
  const first = await api('POST', '/v1/edge/poll?waitMs=0', report, EDGE_TOKEN);
  assert.equal(first.status, 200);
  assert.equal(first.json.fingerprint, controller.store.current?.fingerprint);
  const condition = async (): Promise<string | undefined> =>
    ((await api('GET', '/v1/status')).json.edges as { edge: string; condition: string }[]).find(
      (edge) => edge.edge === 'edge-new',
    )?.condition;
  assert.equal(await condition(), 'behind', 'a live edge on an old config is waited for, not written off');
  const applied = { version: first.json.version, fingerprint: first.json.fingerprint };
  assert.equal((await api('POST', '/v1/edge/poll?waitMs=0', { ...report, applied }, EDGE_TOKEN)).status, 204);
  assert.equal(await condition(), 'in-sync');
});

// Last but one: the edge it reports would count in later rollout waits.
test('the edge poll takes the edge token only: the admin token cannot pull the bundle', async () => {
  const report = { edge: 'edge-1', node: null, applied: null, rejected: null };
  const asAdmin = await api('POST', '/v1/edge/poll?waitMs=0', report, TOKEN);
  assert.equal(asAdmin.status, 403);
  assert.equal(errorCode(asAdmin.json), 'ERR_FORBIDDEN');
  assert.equal((await api('POST', '/v1/edge/poll?waitMs=0', report, null)).status, 401);
  const asEdge = await api('POST', '/v1/edge/poll?waitMs=0', report, EDGE_TOKEN);
  assert.equal(asEdge.status, 200);
  assert.equal(asEdge.json.fingerprint, controller.store.current?.fingerprint);
});

test('metrics in Prometheus format', async () => {
  const response = await api('GET', '/metrics');
  const text = response.json.text as string;
  assert.equal(response.status, 200);
  for (const name of [
    'swarmgate_reconciles_total',
    'swarmgate_reconcile_duration_seconds_bucket',
    'swarmgate_config_version',
    'swarmgate_edges',
    'swarmgate_routing_lag_seconds_count',
    'swarmgate_problems{severity="error"}',
    'swarmgate_acme_orders_total{result="failed"}',
    'swarmgate_api_requests_total{route="POST /v1/services/:name/scale",status="2xx"}',
  ]) {
    assert.ok(text.includes(name), `${name} in /metrics`);
  }
});

test('secrets never appear in any response or log line', () => {
  for (const body of bodies) {
    assert.ok(!body.includes(PASSWORD), 'password in a response');
    assert.ok(!body.includes(TOKEN), 'token in a response');
    assert.ok(!body.includes(EDGE_TOKEN), 'edge token in a response');
  }
  const logText = JSON.stringify(logs);
  assert.ok(!logText.includes(PASSWORD), 'password in the log');
  assert.ok(!logText.includes(TOKEN), 'token in the log');
  assert.ok(!logText.includes(EDGE_TOKEN), 'edge token in the log');
  assert.ok(
    logs.some((line) => line.msg === 'stored registry credentials'),
    'the logs were captured',
  );
});

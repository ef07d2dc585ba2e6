// The controller against a fake Docker port, with a real edge agent (fake nginx) talking to it over the real
// HTTPS channel (a pinned test certificate).
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import type { AcmePort } from '../../src/acme/acme-adapter.ts';
import { deriveStateKey } from '../../src/acme/state-store.ts';
import { readControllerConfig, readEdgeConfig } from '../../src/config.ts';
import { startController } from '../../src/controller/controller.ts';
import type { RunningController } from '../../src/controller/controller.ts';
import { createHttpsControllerChannel } from '../../src/edge/controller-channel.ts';
import { startEdgeAgent } from '../../src/edge/edge-agent.ts';
import type { RunningEdge } from '../../src/edge/edge-agent.ts';
import { createCapturingLogger } from '../../src/logger.ts';
import type { NginxValidator, ValidationResult } from '../../src/nginx/nginx-validator.ts';
import { systemClock } from '../../src/reconcile/clock.ts';
import { createTemplateRenderer } from '../../src/render/nunjucks-env.ts';
import { apiRequest, loopbackResolver, makeChannelKeyPair } from '../support/channel-tls.ts';
import type { ChannelKeyPair } from '../support/channel-tls.ts';
import { FakeDocker, rawService, rawTask } from '../support/fake-docker.ts';
import { FakeNginx } from '../support/fake-nginx.ts';
import { publishCount } from '../support/versions.ts';
import { waitUntil } from '../support/wait.ts';

const TOKEN = 'integration-test-token-0123456789';
const EDGE_TOKEN = 'integration-edge-token-0123456789';

let channelTls: ChannelKeyPair & { remove: () => Promise<void> };
before(async () => {
  channelTls = await makeChannelKeyPair();
});
after(() => channelTls.remove());

function edgeChannel(port: number, timeoutMs = 12_000): ReturnType<typeof createHttpsControllerChannel> {
  return createHttpsControllerChannel({
    url: `https://swarmgate-controller:${port}`,
    token: EDGE_TOKEN,
    ca: channelTls.cert,
    timeoutMs,
    resolve: loopbackResolver(),
  });
}

const unusedAcme: AcmePort = {
  createAccountKey: () => Promise.reject(new Error('no ACME in this test')),
  order: () => Promise.reject(new Error('no ACME in this test')),
};

interface System {
  docker: FakeDocker;
  controller: RunningController;
  edge: RunningEdge;
  nginx: FakeNginx;
  stateDir: string;
  logs: Record<string, unknown>[];
  /** nginx.conf and peers.txt the edge currently serves. */
  served(): Promise<string>;
  stop(): Promise<void>;
}

/** The edges' state directories this file made: removed when it ends (a test may reuse one after its edge stops). */
const createdStateDirs: string[] = [];
after(() => Promise.all(createdStateDirs.map((dir) => rm(dir, { recursive: true, force: true }))));

async function createdStateDir(): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'swarmgate-edge-'));
  createdStateDirs.push(dir);
  return dir;
}

async function startSystem(
  options: {
    docker?: FakeDocker;
    rejectIf?: (config: string) => boolean;
    edgeRejectIf?: (config: string) => boolean;
    stateDir?: string;
    acme?: AcmePort;
    /** SWARMGATE_EDGE_LONG_POLL and the edge's request timeout (it waits that less 10 s); 2s unless a test needs a
     * poll that outlasts what it watches. */
    longPoll?: { controller: string; channelTimeoutMs: number };
    /** What the fake nginx answers on GET /health from the start (a config with health checks). */
    nginxHealth?: string;
  } = {},
): Promise<System> {
  const docker = options.docker ?? new FakeDocker();
  const { logger, lines } = createCapturingLogger('debug');
  const validator: NginxValidator = {
    async validate(files): Promise<ValidationResult> {
      const config = files['nginx.conf'] ?? '';
      return options.rejectIf?.(config)
        ? { ok: false, output: 'nginx: [emerg] fake rejection' }
        : { ok: true };
    },
  };
  const controller = await startController({
    config: readControllerConfig({
      SWARMGATE_LISTEN_PORT: '0',
      SWARMGATE_CHALLENGE_PORT: '0',
      SWARMGATE_HEALTH_PORT: '0',
      SWARMGATE_DEBOUNCE: '5ms:20ms',
      SWARMGATE_FAST_POLL: '50ms',
      SWARMGATE_SLOW_POLL: '1h',
      SWARMGATE_EDGE_LONG_POLL: options.longPoll?.controller ?? '2s',
    }),
    adminToken: TOKEN,
    edgeToken: EDGE_TOKEN,
    channelTls,
    docker,
    validator,
    templates: createTemplateRenderer(),
    logger,
    clock: systemClock,
    version: 'test',
    acme: options.acme ?? unusedAcme,
    stateKey: deriveStateKey('integration-state-key-0123456789'),
    userCertificates: [],
  });
  const stateDir = options.stateDir ?? (await createdStateDir());
  const nginx = new FakeNginx();
  nginx.health = options.nginxHealth ?? null;
  const edge = await startEdgeAgent({
    config: readEdgeConfig(
      {
        SWARMGATE_STATE_DIR: stateDir,
        SWARMGATE_EDGE_HEALTH_PORT: '0',
        SWARMGATE_EDGE_RETRY_MAX: '200ms',
        SWARMGATE_CONTROLLER_URL: `https://swarmgate-controller:${controller.port}`,
      },
      'edge-1',
    ),
    nodeId: 'node-1',
    channel: edgeChannel(controller.port, options.longPoll?.channelTimeoutMs),
    nginx,
    testConfig: async (confPath) => {
      const config = await readFile(confPath, 'utf8');
      return options.edgeRejectIf?.(config) ? { ok: false, output: 'edge nginx said no' } : { ok: true };
    },
    templates: createTemplateRenderer(),
    logger: logger.child({ role: 'edge' }),
    clock: systemClock,
    version: 'test',
  });
  return {
    docker,
    controller,
    edge,
    nginx,
    stateDir,
    logs: lines,
    served: async () =>
      (await readFile(path.join(stateDir, 'current', 'nginx.conf'), 'utf8')) +
      (await readFile(path.join(stateDir, 'current', 'peers.txt'), 'utf8')),
    async stop() {
      await edge.stop();
      await controller.stop();
    },
  };
}

function dockerWithWeb(): FakeDocker {
  const docker = new FakeDocker();
  docker.services = [rawService('web', { VIRTUAL_HOST: 'web.example.com' })];
  docker.tasks = [rawTask('t1', 'web', '10.0.0.11')];
  return docker;
}

test('startup: the controller resyncs, publishes, and the edge applies the bundle and reports it', async (t) => {
  const system = await startSystem({ docker: dockerWithWeb() });
  t.after(() => system.stop());
  await waitUntil('the edge to apply a bundle', () => system.edge.applied() !== null);
  assert.match(await system.served(), /upstream svc_web_\w+ 10\.0\.0\.11:80\n/);
  assert.equal(system.nginx.reloads, 1);
  await waitUntil('the controller to see the edge in sync', () =>
    system.controller.store.edges().some((edge) => edge.edge === 'edge-1' && edge.inSync),
  );
});

test('a service event triggers a reconcile, and a new task is routed', async (t) => {
  const system = await startSystem({ docker: dockerWithWeb() });
  t.after(() => system.stop());
  await waitUntil('first bundle', () => system.edge.applied() !== null);
  system.docker.tasks.push(rawTask('t2', 'web', '10.0.0.12'));
  system.docker.emit({ Type: 'service', Action: 'update', Actor: { ID: 'web' } });
  // The files change before the agent records the version (it activates, then posts or reloads): wait for the
  // version, which comes last, then read the files.
  await waitUntil('the edge to apply version 2', () => publishCount(system.edge.applied()?.version) === 2);
  assert.match(await system.served(), /10\.0\.0\.12:80/);
});

test('while a service converges the controller polls fast, and stops once it has converged', async (t) => {
  const docker = dockerWithWeb();
  docker.services = [rawService('web', { VIRTUAL_HOST: 'web.example.com' }, { replicas: 2 })];
  docker.tasks = [
    rawTask('t1', 'web', '10.0.0.11'),
    rawTask('t2', 'web', '10.0.0.12', { state: 'starting' }),
  ];
  const system = await startSystem({ docker });
  t.after(() => system.stop());
  await waitUntil('first bundle', () => system.edge.applied() !== null);
  const before = docker.calls.listTasks;
  await waitUntil('several fast polls with no event', () => docker.calls.listTasks >= before + 3);
  assert.ok(!(await system.served()).includes('10.0.0.12'), 'a starting task is not routed');

  // No event is sent: only the fast poll can notice the task is running now.
  docker.tasks[1] = rawTask('t2', 'web', '10.0.0.12');
  await waitUntil('the running task to be routed', async () =>
    (await system.served()).includes('10.0.0.12:80'),
  );
  await waitUntil('fast polling to stop', () => !system.controller.reconciler.fastPolling);
  const settled = docker.calls.listTasks;
  await new Promise((resolve) => setTimeout(resolve, 300));
  assert.ok(docker.calls.listTasks <= settled + 1, 'no more fast polls after convergence');
});

test('a task told to shut down leaves the upstream before it stops running', async (t) => {
  const docker = dockerWithWeb();
  docker.tasks.push(rawTask('t2', 'web', '10.0.0.12'));
  const system = await startSystem({ docker });
  t.after(() => system.stop());
  await waitUntil('both tasks routed', async () => (await system.served()).includes('10.0.0.12:80'));
  docker.tasks[1] = rawTask('t2', 'web', '10.0.0.12', { desiredState: 'shutdown', state: 'running' });
  docker.emit({ Type: 'service', Action: 'update', Actor: { ID: 'web' } });
  await waitUntil('the stopping task to leave', async () => !(await system.served()).includes('10.0.0.12'));
  assert.match(await system.served(), /10\.0\.0\.11:80/);
});

test('event stream loss: reconnect with backoff and resync in full; the edge keeps its config', async (t) => {
  const system = await startSystem({ docker: dockerWithWeb() });
  t.after(() => system.stop());
  await waitUntil('first bundle', () => system.edge.applied() !== null);
  await waitUntil('subscribed', () => system.docker.subscriberCount === 1);

  system.docker.down = true;
  system.docker.breakStreams();
  // A change made while the stream is down, with no event for it ever sent.
  system.docker.tasks.push(rawTask('t3', 'web', '10.0.0.13'));
  await waitUntil('the loss to be logged', () =>
    system.logs.some((line) => line.msg === 'swarm event stream lost; edges keep serving'),
  );
  assert.match(await system.served(), /10\.0\.0\.11:80/, 'the edge still serves the last bundle');

  system.docker.down = false;
  await waitUntil(
    'resubscribed',
    () => system.docker.calls.subscribe >= 2 && system.docker.subscriberCount === 1,
  );
  await waitUntil('the resync to pick up the change', async () =>
    (await system.served()).includes('10.0.0.13:80'),
  );
});

test('no change, no new version and no reload', async (t) => {
  const system = await startSystem({ docker: dockerWithWeb() });
  t.after(() => system.stop());
  await waitUntil('first bundle', () => system.edge.applied() !== null);
  const version = system.controller.store.current?.version;
  for (let i = 0; i < 5; i++) await system.controller.reconciler.reconcileNow();
  system.docker.emit({ Type: 'node', Action: 'update', Actor: { ID: 'node-1' } });
  await new Promise((resolve) => setTimeout(resolve, 100));
  await system.controller.reconciler.reconcileNow();
  assert.equal(system.controller.store.current?.version, version);
  assert.equal(system.nginx.reloads, 1);
  assert.ok(system.controller.reconciler.stats.reconciles >= 6);
  assert.equal(system.controller.reconciler.stats.validations, 1, 'unchanged bytes are not validated again');
});

test('nginx rejecting one service quarantines only that service', async (t) => {
  const docker = dockerWithWeb();
  docker.services.push(rawService('weird', { VIRTUAL_HOST: 'weird.example.com' }));
  docker.tasks.push(rawTask('t9', 'weird', '10.0.0.99'));
  const system = await startSystem({ docker, rejectIf: (config) => config.includes('weird.example.com') });
  t.after(() => system.stop());
  await waitUntil('first bundle', () => system.edge.applied() !== null);
  const served = await system.served();
  assert.match(served, /web\.example\.com/);
  assert.doesNotMatch(served, /weird/);
  const problem = system.controller.reconciler.currentModel.problems.find(
    (candidate) => candidate.service === 'weird',
  );
  assert.equal(problem?.code, 'NGINX_REJECTED');
  assert.match(problem?.reason ?? '', /fake rejection/);
});

test('an edge that rejects a bundle keeps its config, reports it, and is not offered it again', async (t) => {
  const docker = dockerWithWeb();
  const system = await startSystem({ docker, edgeRejectIf: (config) => config.includes('odd.example.com') });
  t.after(() => system.stop());
  await waitUntil('first bundle', () => system.edge.applied() !== null);
  docker.services.push(rawService('odd', { VIRTUAL_HOST: 'odd.example.com' }));
  docker.tasks.push(rawTask('t6', 'odd', '10.0.0.66'));
  docker.emit({ Type: 'service', Action: 'create', Actor: { ID: 'odd' } });
  await waitUntil('the rejection to reach the controller', () =>
    system.controller.store.edges().some((edge) => edge.rejected !== null),
  );
  const edgeState = system.controller.store.edges()[0];
  assert.equal(edgeState?.inSync, false);
  assert.equal(publishCount(edgeState?.applied?.version), 1);
  assert.match(edgeState?.rejected?.error ?? '', /edge nginx said no/);
  assert.doesNotMatch(await system.served(), /odd\.example\.com/);
  assert.equal(system.nginx.reloads, 1);
});

test('a change of task addresses only: no new nginx -t, and the edge posts the peers instead of reloading', async (t) => {
  const docker = dockerWithWeb();
  let edgeTests = 0;
  const system = await startSystem({
    docker,
    edgeRejectIf: () => {
      edgeTests++;
      return false;
    },
  });
  t.after(() => system.stop());
  await waitUntil('first bundle', () => system.edge.applied() !== null);
  const validations = system.controller.reconciler.stats.validations;
  docker.tasks.push(rawTask('t2', 'web', '10.0.0.12'));
  docker.emit({ Type: 'service', Action: 'update', Actor: { ID: 'web' } });
  await waitUntil('the edge to apply version 2', () => publishCount(system.edge.applied()?.version) === 2);
  assert.equal(
    system.controller.reconciler.stats.validations,
    validations,
    'the controller skipped nginx -t',
  );
  assert.equal(edgeTests, 1, 'the edge tested only its first bundle');
  assert.equal(system.nginx.reloads, 1, 'no reload for the new task');
  assert.equal(system.nginx.peerUpdates.length, 1);
  assert.match(
    system.nginx.peerUpdates[0] ?? '',
    /^generation [0-9a-f]{64}\nupstream svc_web_\w+ 10\.0\.0\.11:80 10\.0\.0\.12:80\n$/,
  );
  assert.match(
    await system.served(),
    /10\.0\.0\.12:80/,
    'the files on disk say the same, for the next start',
  );

  // A new host changes the shape: that takes a reload (and nginx -t), never a post.
  docker.services.push(rawService('api', { VIRTUAL_HOST: 'api.example.com' }));
  docker.tasks.push(rawTask('t3', 'api', '10.0.0.13'));
  docker.emit({ Type: 'service', Action: 'create', Actor: { ID: 'api' } });
  await waitUntil('the edge to apply version 3', () => publishCount(system.edge.applied()?.version) === 3);
  assert.equal(system.nginx.reloads, 2);
  assert.equal(system.nginx.peerUpdates.length, 1);
  assert.equal(edgeTests, 2);
});

test('a new host is posted to early routing before the edge tests and reloads, and taken away after; also when refused', async (t) => {
  const docker = dockerWithWeb();
  let postsAtTest: string[] = [];
  const system = await startSystem({
    docker,
    edgeRejectIf: (config) => {
      postsAtTest = [...system.nginx.earlyPosts];
      return config.includes('odd.example.com');
    },
  });
  t.after(() => system.stop());
  await waitUntil('first bundle', () => system.edge.applied() !== null);
  // The first bundle's hosts went early too (nginx ran the empty config); wait for their clear.
  await waitUntil('the first table emptied', () => system.nginx.earlyPosts.at(-1) === '');
  const before = system.nginx.earlyPosts.length;
  docker.services.push(rawService('api', { VIRTUAL_HOST: 'api.example.com' }));
  docker.tasks.push(rawTask('t3', 'api', '10.0.0.13'));
  docker.emit({ Type: 'service', Action: 'create', Actor: { ID: 'api' } });
  await waitUntil('the edge to apply version 2', () => publishCount(system.edge.applied()?.version) === 2);
  // While nginx -t ran, the new host (and only it: web is in the running bundle) was in nginx's early table.
  assert.match(
    postsAtTest.at(-1) ?? '',
    /^api\.example\.com\tapi\tsvc_api_\w+\tserve\t-\t-\t-\nupstream svc_api_\w+ 10\.0\.0\.13:80\n$/,
  );
  // After the reload the table is emptied (right after the bundle counts as applied): the host's own block serves it.
  await waitUntil('the table emptied', () => system.nginx.earlyPosts.length === before + 2);
  assert.deepEqual(
    system.nginx.earlyPosts.slice(before).map((body) => body.split('\t')[0]),
    ['api.example.com', ''],
  );
  assert.equal(system.nginx.reloads, 2);

  // A bundle the edge's nginx -t refuses: its host was early only while the test ran, and is taken away.
  docker.services.push(rawService('odd', { VIRTUAL_HOST: 'odd.example.com' }));
  docker.tasks.push(rawTask('t6', 'odd', '10.0.0.66'));
  docker.emit({ Type: 'service', Action: 'create', Actor: { ID: 'odd' } });
  await waitUntil('the rejection to reach the controller', () =>
    system.controller.store.edges().some((edge) => edge.rejected !== null),
  );
  assert.match(postsAtTest.at(-1) ?? '', /^odd\.example\.com\t/);
  assert.equal(system.nginx.earlyPosts.at(-1), '');
  assert.equal(system.nginx.reloads, 2);
});

test('a clear of the early table that does not go through is sent again with the next bundle', async (t) => {
  const docker = dockerWithWeb();
  const system = await startSystem({ docker });
  t.after(() => system.stop());
  await waitUntil('first bundle', () => system.edge.applied() !== null);
  await waitUntil('the first table emptied', () => system.nginx.earlyPosts.at(-1) === '');
  const before = system.nginx.earlyPosts.length;
  system.nginx.failClears = 1;
  docker.services.push(rawService('api', { VIRTUAL_HOST: 'api.example.com' }));
  docker.tasks.push(rawTask('t3', 'api', '10.0.0.13'));
  docker.emit({ Type: 'service', Action: 'create', Actor: { ID: 'api' } });
  await waitUntil('the edge to apply version 2', () => publishCount(system.edge.applied()?.version) === 2);
  assert.match(system.nginx.earlyPosts.at(-1) ?? '', /^api\.example\.com\t/, 'the clear after it failed');
  // The next bundle has nothing new to route early (api leaves), yet the table is emptied now.
  docker.services = docker.services.filter((service) => service.ID !== 'api');
  docker.tasks = docker.tasks.filter((task) => task.ServiceID !== 'api');
  docker.emit({ Type: 'service', Action: 'remove', Actor: { ID: 'api' } });
  await waitUntil('the edge to apply version 3', () => publishCount(system.edge.applied()?.version) === 3);
  await waitUntil('a post after the api one', () => system.nginx.earlyPosts.length === before + 2);
  assert.equal(system.nginx.earlyPosts.at(-1), '');
});

test('when nginx does not take posted peers, the edge reloads instead', async (t) => {
  const docker = dockerWithWeb();
  const system = await startSystem({ docker });
  t.after(() => system.stop());
  await waitUntil('first bundle', () => system.edge.applied() !== null);
  system.nginx.acceptPeers = false;
  docker.tasks.push(rawTask('t2', 'web', '10.0.0.12'));
  docker.emit({ Type: 'service', Action: 'update', Actor: { ID: 'web' } });
  await waitUntil('the edge to apply version 2', () => publishCount(system.edge.applied()?.version) === 2);
  assert.equal(system.nginx.reloads, 2);
  assert.match(await system.served(), /10\.0\.0\.12:80/);
});

test('a restarted edge serves its saved bundle while the controller is away', async (t) => {
  const first = await startSystem({ docker: dockerWithWeb() });
  await waitUntil('first bundle', () => first.edge.applied() !== null);
  const stateDir = first.stateDir;
  await first.stop();

  // A new edge on the same volume; its controller URL points at a port nobody listens on.
  const { logger } = createCapturingLogger();
  const nginx = new FakeNginx();
  const edge = await startEdgeAgent({
    config: readEdgeConfig({ SWARMGATE_STATE_DIR: stateDir, SWARMGATE_EDGE_HEALTH_PORT: '0' }, 'edge-1'),
    nodeId: null,
    channel: edgeChannel(9, 3000),
    nginx,
    testConfig: async () => ({ ok: true }),
    templates: createTemplateRenderer(),
    logger,
    clock: systemClock,
    version: 'test',
  });
  t.after(() => edge.stop());
  assert.equal(publishCount(edge.applied()?.version), 1);
  assert.ok(nginx.confPath?.startsWith(stateDir));
  assert.match(
    await readFile(path.join(path.dirname(nginx.confPath ?? ''), 'peers.txt'), 'utf8'),
    /10\.0\.0\.11:80/,
  );
});

test('the API refuses a missing or wrong token with a coded error', async (t) => {
  const system = await startSystem({ docker: dockerWithWeb() });
  t.after(() => system.stop());
  const call = (method: string, urlPath: string, token: string | null, body?: unknown) =>
    apiRequest(system.controller.port, channelTls.cert, method, urlPath, { token, body });
  for (const token of [null, 'wrong-token-wrong-token']) {
    const response = await call('GET', '/v1/status', token);
    assert.equal(response.status, 401);
    assert.equal((response.json.error as { code: string }).code, 'ERR_UNAUTHORIZED');
  }
  const bad = await call('POST', '/v1/edge/poll', EDGE_TOKEN, '{"edge": "bad name!"}');
  assert.equal(bad.status, 400);
  assert.equal((bad.json.error as { code: string }).code, 'ERR_BAD_REQUEST');
  const status = await call('GET', '/v1/status', TOKEN);
  assert.equal(status.status, 200);
  const body = status.json as { services: { name: string }[] };
  assert.deepEqual(
    body.services.map((service) => service.name),
    ['web'],
  );
  const logs = JSON.stringify(system.logs);
  assert.ok(!logs.includes(TOKEN) && !logs.includes(EDGE_TOKEN), 'no token reaches a log line');
});

test("health checks: the tasks an edge's checks took out reach the controller's status, named; a forged report is bounded", async (t) => {
  const docker = new FakeDocker();
  docker.services = [
    rawService('web', { VIRTUAL_HOST: 'web.example.com', 'swarmgate.healthcheck.path': '/healthz' }),
  ];
  docker.tasks = [rawTask('t1', 'web', '10.0.0.11'), rawTask('t2', 'web', '10.0.0.12')];
  const system = await startSystem({ docker });
  t.after(() => system.stop());
  await waitUntil('the edge to apply a bundle', () => system.edge.applied() !== null);
  const upstream = /upstream (svc_web_\w+) /.exec(await system.served())?.[1];
  assert.ok(upstream);
  // What lua/swarmgate/health.lua answers on GET /health: t2's app answers 500.
  system.nginx.health =
    `10.0.0.11:80\t${upstream}\tup\t1790000000.000\tstatus 200\n` +
    `10.0.0.12:80\t${upstream}\tdown\t1790000001.500\tstatus 500\n`;
  const status = async (): Promise<Record<string, unknown>[]> =>
    (await apiRequest(system.controller.port, channelTls.cert, 'GET', '/v1/status', { token: TOKEN })).json
      .edges as Record<string, unknown>[];
  await waitUntil('the status to list the down task', async () =>
    JSON.stringify((await status())[0]?.tasksDown ?? []).includes('10.0.0.12'),
  );
  assert.deepEqual((await status())[0]?.tasksDown, [
    {
      address: '10.0.0.12:80',
      upstream,
      since: new Date(1_790_000_001_500).toISOString(),
      reason: 'status 500',
      service: 'web',
      task: 't2',
    },
  ]);
  // It recovers: the agent notices during its poll and the status empties.
  system.nginx.health = `10.0.0.11:80\t${upstream}\tup\t1790000000.000\tstatus 200\n`;
  await waitUntil(
    'the status to list no down task',
    async () => ((await status())[0]?.tasksDown as unknown[] | undefined)?.length === 0,
  );

  // An edge token holder sends junk and too much: bad entries are dropped, the list is cut at 128 and counted,
  // reasons are cut at 120 characters and lose control characters.
  const entries = Array.from({ length: 200 }, (_, index) => ({
    address: `10.1.0.${index}:80`,
    upstream: 'svc_x',
    since: '2026-11-25T00:00:00.000Z',
    reason: `bad\n${'x'.repeat(130)}`,
  }));
  const forged = await apiRequest(system.controller.port, channelTls.cert, 'POST', '/v1/edge/poll?waitMs=0', {
    token: EDGE_TOKEN,
    body: {
      edge: 'edge-forged',
      node: null,
      applied: null,
      rejected: null,
      reloads: 0,
      peerUpdates: 0,
      tasksDown: [{ address: 'not an address', upstream: 'svc_x', since: 'x' }, ...entries],
      tasksDownOmitted: 5,
    },
  });
  assert.ok(forged.status === 200 || forged.status === 204, `poll answered ${forged.status}`);
  const edge = (await status()).find((one) => one.edge === 'edge-forged');
  const down = edge?.tasksDown as { reason: string; service: unknown }[];
  assert.equal(down.length, 128);
  assert.equal(edge?.tasksDownOmitted, 5 + 200 - 128);
  assert.equal(down[0]?.reason, `bad ${'x'.repeat(116)}`);
  assert.equal(down[0]?.service, null, 'an upstream the model does not have is named as unknown');
});

test('health checks: a change the edge sees during a long poll reaches the status within seconds, not at its end', async (t) => {
  const docker = new FakeDocker();
  docker.services = [
    rawService('web', { VIRTUAL_HOST: 'web.example.com', 'swarmgate.healthcheck.path': '/healthz' }),
  ];
  docker.tasks = [rawTask('t1', 'web', '10.0.0.11')];
  const up = 'svc_web_000000';
  const system = await startSystem({
    docker,
    longPoll: { controller: '10s', channelTimeoutMs: 25_000 },
    nginxHealth: `10.0.0.11:80\t${up}\tup\t1790000000.000\tstatus 200\n`,
  });
  t.after(() => system.stop());
  await waitUntil('the controller to see the edge in sync', () =>
    system.controller.store.edges().some((edge) => edge.edge === 'edge-1' && edge.inSync),
  );
  // The edge is now in a 10 s long poll; its health view changes.
  system.nginx.health = `10.0.0.11:80\t${up}\tdown\t1790000001.000\tstatus 503\n`;
  const changedAt = Date.now();
  await waitUntil(
    'the controller to hear of the down task',
    () =>
      system.controller.store
        .edges()
        .some((edge) => edge.edge === 'edge-1' && edge.tasksDown?.[0]?.address === '10.0.0.11:80'),
    { timeoutMs: 5000 },
  );
  t.diagnostic(`the controller heard ${Date.now() - changedAt} ms after the change (long poll 10 s)`);
});

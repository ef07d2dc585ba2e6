// Many nodes (issue 13), against one fake Docker: the controller moves (one stops, another starts while the config
// changed in between; the edge's versions only move forward), and a node goes down (its tasks leave at once).
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import type { AcmePort } from '../../src/acme/acme-adapter.ts';
import { deriveStateKey } from '../../src/acme/state-store.ts';
import { readControllerConfig, readEdgeConfig } from '../../src/config.ts';
import { startController } from '../../src/controller/controller.ts';
import type { RunningController } from '../../src/controller/controller.ts';
import { createHttpsControllerChannel } from '../../src/edge/controller-channel.ts';
import { startEdgeAgent } from '../../src/edge/edge-agent.ts';
import { createCapturingLogger } from '../../src/logger.ts';
import { systemClock } from '../../src/reconcile/clock.ts';
import { createTemplateRenderer } from '../../src/render/nunjucks-env.ts';
import { loopbackResolver, makeChannelKeyPair } from '../support/channel-tls.ts';
import { FakeDocker, rawService, rawTask } from '../support/fake-docker.ts';
import { FakeNginx } from '../support/fake-nginx.ts';
import { publishCount } from '../support/versions.ts';
import { waitUntil } from '../support/wait.ts';

const EDGE_TOKEN = 'move-test-edge-token-0123456789';
const unusedAcme: AcmePort = {
  createAccountKey: () => Promise.reject(new Error('no ACME in this test')),
  order: () => Promise.reject(new Error('no ACME in this test')),
};

test('a moved controller continues the versions: the edge takes its config, and versions never go back', async (t) => {
  const channelTls = await makeChannelKeyPair();
  t.after(() => channelTls.remove());
  const docker = new FakeDocker();
  docker.services = [rawService('web', { VIRTUAL_HOST: 'web.example.com' })];
  docker.tasks = [rawTask('t1', 'web', '10.0.0.11')];
  const { logger, lines } = createCapturingLogger('debug');

  async function controllerOn(port: number, name: string): Promise<RunningController> {
    return startController({
      config: readControllerConfig({
        SWARMGATE_LISTEN_PORT: String(port),
        SWARMGATE_CHALLENGE_PORT: '0',
        SWARMGATE_HEALTH_PORT: '0',
        SWARMGATE_DEBOUNCE: '5ms:20ms',
        SWARMGATE_FAST_POLL: '50ms',
        SWARMGATE_SLOW_POLL: '1h',
        SWARMGATE_EDGE_LONG_POLL: '2s',
      }),
      adminToken: 'move-test-admin-token-0123456789',
      edgeToken: EDGE_TOKEN,
      channelTls,
      docker,
      validator: { validate: async () => ({ ok: true }) },
      templates: createTemplateRenderer(),
      logger: logger.child({ controller: name }),
      clock: systemClock,
      version: 'test',
      acme: unusedAcme,
      stateKey: deriveStateKey('move-test-state-key-0123456789'),
      userCertificates: [],
    });
  }

  const first = await controllerOn(0, 'first');
  // The name the edges use: the moved controller answers at the same name and port (Docker's DNS in a swarm).
  const port = first.port;
  const stateDir = await mkdtemp(path.join(os.tmpdir(), 'swarmgate-move-'));
  t.after(() => rm(stateDir, { recursive: true, force: true }));
  const edge = await startEdgeAgent({
    config: readEdgeConfig(
      {
        SWARMGATE_STATE_DIR: stateDir,
        SWARMGATE_EDGE_HEALTH_PORT: '0',
        SWARMGATE_EDGE_RETRY_MAX: '200ms',
        SWARMGATE_CONTROLLER_URL: `https://swarmgate-controller:${port}`,
      },
      'edge-1',
    ),
    nodeId: 'node-1',
    channel: createHttpsControllerChannel({
      url: `https://swarmgate-controller:${port}`,
      token: EDGE_TOKEN,
      ca: channelTls.cert,
      timeoutMs: 12_000,
      resolve: loopbackResolver(),
    }),
    nginx: new FakeNginx(),
    testConfig: async () => ({ ok: true }),
    templates: createTemplateRenderer(),
    logger: logger.child({ role: 'edge' }),
    clock: systemClock,
    version: 'test',
  });
  t.after(() => edge.stop());

  // Several publishes on the first controller, so the edge's version is well above what a new one starts from.
  for (const [i, ip] of ['10.0.0.12', '10.0.0.13', '10.0.0.14'].entries()) {
    docker.tasks.push(rawTask(`t${i + 2}`, 'web', ip));
    docker.emit({ Type: 'service', Action: 'update', Actor: { ID: 'web' } });
    await waitUntil(
      `the edge to apply publish ${i + 2}`,
      () => publishCount(edge.applied()?.version) === i + 2,
    );
  }
  const before = edge.applied();
  assert.equal(publishCount(before?.version), 4);
  await first.stop();

  // While no controller runs, the swarm changes: the next controller's first bundle has other bytes.
  docker.tasks = docker.tasks.filter((task) => task.ID !== 't4');
  const second = await controllerOn(port, 'second');
  t.after(() => second.stop());
  await waitUntil(
    "the edge to apply the moved controller's config",
    () => edge.applied()?.fingerprint === second.store.current?.fingerprint,
  );
  const after = edge.applied();
  assert.ok(
    (after?.version ?? 0) > (before?.version ?? 0),
    `the version moved forward (was ${before?.version}, now ${after?.version})`,
  );
  assert.notEqual(after?.fingerprint, before?.fingerprint);
  assert.equal(second.store.current?.version, after?.version);

  // Two moves in a row: the next controller continues from there too.
  await second.stop();
  docker.tasks.push(rawTask('t5', 'web', '10.0.0.15'));
  const third = await controllerOn(port, 'third');
  t.after(() => third.stop());
  await waitUntil(
    "the edge to apply the third controller's config",
    () => edge.applied()?.fingerprint === third.store.current?.fingerprint,
  );
  assert.ok((edge.applied()?.version ?? 0) > (after?.version ?? 0));
  assert.ok(
    !lines.some((line) => line.msg === 'refused a bundle that does not move the version forward'),
    'the edge never had to refuse a version going backwards',
  );
});

test('a node Swarm reports down: its tasks leave the routes at the node event, before Swarm reschedules them', async (t) => {
  const channelTls = await makeChannelKeyPair();
  t.after(() => channelTls.remove());
  const docker = new FakeDocker();
  docker.nodes = [
    {
      ID: 'node-1',
      Description: { Hostname: 'node-1' },
      Spec: { Role: 'manager' },
      Status: { State: 'ready' },
    },
    {
      ID: 'node-2',
      Description: { Hostname: 'node-2' },
      Spec: { Role: 'worker' },
      Status: { State: 'ready' },
    },
  ];
  docker.services = [rawService('web', { VIRTUAL_HOST: 'web.example.com' })];
  const onNode2 = { ...rawTask('t2', 'web', '10.0.0.12'), NodeID: 'node-2' };
  docker.tasks = [rawTask('t1', 'web', '10.0.0.11'), onNode2];
  const controller = await startController({
    config: readControllerConfig({
      SWARMGATE_LISTEN_PORT: '0',
      SWARMGATE_CHALLENGE_PORT: '0',
      SWARMGATE_HEALTH_PORT: '0',
      SWARMGATE_DEBOUNCE: '5ms:20ms',
      SWARMGATE_SLOW_POLL: '1h',
    }),
    adminToken: 'move-test-admin-token-0123456789',
    edgeToken: EDGE_TOKEN,
    channelTls,
    docker,
    validator: { validate: async () => ({ ok: true }) },
    templates: createTemplateRenderer(),
    logger: createCapturingLogger('debug').logger,
    clock: systemClock,
    version: 'test',
    acme: unusedAcme,
    stateKey: deriveStateKey('move-test-state-key-0123456789'),
    userCertificates: [],
  });
  t.after(() => controller.stop());
  const peers = (): string => controller.store.current?.files['peers.txt'] ?? '';
  await waitUntil('both tasks routed', () => peers().includes('10.0.0.12:80'));

  // Swarm marks the node down (heartbeats missed); its task is still desired running, as Swarm left it.
  const node2 = docker.nodes[1];
  if (node2) node2.Status = { State: 'down' };
  docker.emit({ Type: 'node', Action: 'update', Actor: { ID: 'node-2' } });
  await waitUntil("the down node's task to leave the routes", () => !peers().includes('10.0.0.12:80'));
  assert.match(peers(), /10\.0\.0\.11:80/, 'the task on the live node stays');
  assert.equal(docker.tasks.find((task) => task.ID === 't2')?.DesiredState, 'running');
});

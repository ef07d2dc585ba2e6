// Delta transport between a controller and real edge agents (fake nginx) over the real HTTPS channel: an edge
// receives only what changed since the bundle it has, checks every file (its own copies too), fetches a damaged
// copy by hash, and an edge with nothing (or with a bundle the controller forgot) still gets every file.
import assert from 'node:assert/strict';
import { appendFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import type { AcmePort } from '../../src/acme/acme-adapter.ts';
import { deriveStateKey } from '../../src/acme/state-store.ts';
import { describeCertificate } from '../../src/acme/user-certificates.ts';
import type { LoadedCertificate } from '../../src/acme/user-certificates.ts';
import { readControllerConfig, readEdgeConfig } from '../../src/config.ts';
import { startController } from '../../src/controller/controller.ts';
import type { RunningController } from '../../src/controller/controller.ts';
import { createHttpsControllerChannel } from '../../src/edge/controller-channel.ts';
import type { Transfer } from '../../src/edge/controller-channel.ts';
import { startEdgeAgent } from '../../src/edge/edge-agent.ts';
import type { RunningEdge } from '../../src/edge/edge-agent.ts';
import { createLogger } from '../../src/logger.ts';
import { RECENT_BUNDLES } from '../../src/publish/bundle-answers.ts';
import { systemClock } from '../../src/reconcile/clock.ts';
import { createTemplateRenderer } from '../../src/render/nunjucks-env.ts';
import type { BundleFiles } from '../../src/render/render-config.ts';
import { apiRequest, loopbackResolver, makeChannelKeyPair } from '../support/channel-tls.ts';
import type { ChannelKeyPair } from '../support/channel-tls.ts';
import { FakeDocker, rawService, rawTask } from '../support/fake-docker.ts';
import { FakeNginx } from '../support/fake-nginx.ts';
import { publishCount } from '../support/versions.ts';
import { waitUntil } from '../support/wait.ts';

const ADMIN_TOKEN = 'delta-test-admin-token-0123456789';
const EDGE_TOKEN = 'delta-test-edge-token-0123456789';
const HOST = 'web.example.com';
const CERT = `certs/${HOST}.crt`;

type KeyPair = ChannelKeyPair & { remove: () => Promise<void> };
let channelTls: KeyPair;
let webKeyPair: KeyPair;
let webCertificate: LoadedCertificate;
before(async () => {
  channelTls = await makeChannelKeyPair();
  webKeyPair = await makeChannelKeyPair(HOST);
  webCertificate = {
    name: HOST,
    ...describeCertificate(webKeyPair.cert),
    certificatePem: webKeyPair.cert,
    privateKeyPem: webKeyPair.key,
  };
});
after(async () => {
  await channelTls.remove();
  await webKeyPair.remove();
});

const unusedAcme: AcmePort = {
  createAccountKey: () => Promise.reject(new Error('no ACME in this test')),
  order: () => Promise.reject(new Error('no ACME in this test')),
};

async function controllerOn(docker: FakeDocker, port = 0): Promise<RunningController> {
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
    adminToken: ADMIN_TOKEN,
    edgeToken: EDGE_TOKEN,
    channelTls,
    docker,
    validator: { validate: async () => ({ ok: true }) },
    templates: createTemplateRenderer(),
    logger: createLogger('silent'),
    clock: systemClock,
    version: 'test',
    acme: unusedAcme,
    stateKey: deriveStateKey('delta-test-state-key-0123456789'),
    userCertificates: [webCertificate],
  });
}

interface Edge {
  readonly agent: RunningEdge;
  readonly stateDir: string;
  readonly transfers: Transfer[];
  /** Every file of the bundle the edge serves, as its volume holds them. */
  served(): Promise<Record<string, string>>;
}

async function edgeOn(port: number, stateDir?: string): Promise<Edge> {
  const dir = stateDir ?? (await mkdtemp(path.join(os.tmpdir(), 'swarmgate-delta-')));
  const transfers: Transfer[] = [];
  const agent = await startEdgeAgent({
    config: readEdgeConfig(
      {
        SWARMGATE_STATE_DIR: dir,
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
      observe: (transfer) => transfers.push(transfer),
    }),
    nginx: new FakeNginx(),
    testConfig: async () => ({ ok: true }),
    templates: createTemplateRenderer(),
    logger: createLogger('silent'),
    clock: systemClock,
    version: 'test',
  });
  return {
    agent,
    stateDir: dir,
    transfers,
    async served() {
      const files: Record<string, string> = {};
      for (const name of [
        'nginx.conf',
        'peers.txt',
        'certificates.txt',
        'certificates.pem',
        'early-hosts.txt',
      ]) {
        files[name] = await readFile(path.join(dir, 'current', name), 'utf8');
      }
      return files;
    },
  };
}

function dockerWithWeb(): FakeDocker {
  const docker = new FakeDocker();
  docker.services = [rawService('web', { VIRTUAL_HOST: HOST })];
  docker.tasks = [rawTask('t1', 'web', '10.0.0.11')];
  // Enough services that nginx.conf is large enough to go as edits.
  for (let i = 0; i < 20; i++) {
    docker.services.push(rawService(`app${i}`, { VIRTUAL_HOST: `app${i}.example.com` }));
    docker.tasks.push(rawTask(`a${i}`, `app${i}`, `10.0.1.${i + 1}`));
  }
  return docker;
}

/** A change on the fake swarm, reconciled at once. */
async function addTask(controller: RunningController, docker: FakeDocker, n: number): Promise<void> {
  docker.tasks.push(rawTask(`t-extra-${n}`, 'web', `10.0.2.${n + 1}`));
  await controller.reconciler.reconcileNow();
}

function published(controller: RunningController): BundleFiles {
  return controller.store.current?.files ?? {};
}

/** The last transfer of a controller's n-th publish (waited for by the caller through applied()). */
function transferOf(edge: Edge, count: number): Transfer {
  const transfer = edge.transfers.findLast((candidate) => publishCount(candidate.version) === count);
  assert.ok(transfer, `a transfer of publish ${count}`);
  return transfer;
}

async function cleanUp(...parts: (Edge | RunningController)[]): Promise<void> {
  for (const part of parts) {
    if ('agent' in part) {
      await part.agent.stop();
      await rm(part.stateDir, { recursive: true, force: true });
    } else await part.stop();
  }
}

test('an edge with the previous bundle receives only the changed files, as edits, and serves the new bundle', async (t) => {
  const docker = dockerWithWeb();
  const controller = await controllerOn(docker);
  const edge = await edgeOn(controller.port);
  t.after(() => cleanUp(edge, controller));
  await waitUntil('the first bundle', () => publishCount(edge.agent.applied()?.version) === 1);
  const first = transferOf(edge, 1);
  assert.equal(first.base, null, 'a fresh edge builds on nothing');
  assert.deepEqual([...first.whole].sort(), [
    'certificates.pem',
    'certificates.txt',
    'early-hosts.txt',
    'nginx.conf',
    'peers.txt',
  ]);
  const v1 = controller.store.current?.fingerprint;

  // A new host without a certificate: nginx.conf, early-hosts.txt and peers.txt change, certificates.txt and
  // certificates.pem do not.
  docker.services.push(rawService('api', { VIRTUAL_HOST: 'api.example.com' }));
  docker.tasks.push(rawTask('p1', 'api', '10.0.3.1'));
  await controller.reconciler.reconcileNow();
  await waitUntil('version 2 applied', () => publishCount(edge.agent.applied()?.version) === 2);
  const second = transferOf(edge, 2);
  assert.equal(second.base, v1);
  assert.deepEqual(second.edited, ['nginx.conf'], 'the large file goes as edits');
  assert.deepEqual(second.whole, ['early-hosts.txt', 'peers.txt'], 'small ones whole');
  assert.equal(second.reused, 2, 'certificates.txt and certificates.pem come from the edge itself');
  assert.deepEqual(second.fetched, []);
  const bundleBytes = Object.values(published(controller)).reduce((sum, text) => sum + text.length, 0);
  assert.ok(
    second.bytes * 5 < bundleBytes,
    `${second.bytes} bytes received for a ${bundleBytes}-byte bundle`,
  );
  assert.deepEqual(await edge.served(), published(controller));
});

test('a damaged file in the edge cache is detected and fetched again by its hash', async (t) => {
  const docker = dockerWithWeb();
  const controller = await controllerOn(docker);
  const edge = await edgeOn(controller.port);
  t.after(() => cleanUp(edge, controller));
  await waitUntil('the first bundle', () => publishCount(edge.agent.applied()?.version) === 1);
  const dir = path.join(edge.stateDir, 'bundles', edge.agent.applied()?.fingerprint ?? '');
  // The volume damages two files after they were verified and applied: one the next bundle keeps as it is, and
  // one the next bundle changes (its edits would build on damaged text).
  await writeFile(path.join(dir, 'certificates.pem'), 'not the certificates\n');
  await appendFile(path.join(dir, 'nginx.conf'), '# damaged\n');

  docker.services.push(rawService('api', { VIRTUAL_HOST: 'api.example.com' }));
  docker.tasks.push(rawTask('p1', 'api', '10.0.3.1'));
  await controller.reconciler.reconcileNow();
  await waitUntil('version 2 applied', () => publishCount(edge.agent.applied()?.version) === 2);
  const second = transferOf(edge, 2);
  assert.equal(second.fallback, null, 'made whole without asking for every file');
  assert.deepEqual([...second.fetched].sort(), ['certificates.pem', 'nginx.conf']);
  assert.deepEqual(second.edited, [], 'nginx.conf came fetched: its edits would build on damaged text');
  assert.deepEqual(second.whole, ['early-hosts.txt', 'peers.txt']);
  assert.equal(second.reused, 1, 'certificates.txt is the edge’s own, checked');
  assert.deepEqual(await edge.served(), published(controller));
});

test('a fresh edge gets every file, and so does an edge whose bundle the controller no longer keeps', async (t) => {
  const docker = dockerWithWeb();
  const controller = await controllerOn(docker);
  const fresh = await edgeOn(controller.port);
  t.after(() => cleanUp(fresh, controller));
  await waitUntil('the first bundle', () => publishCount(fresh.agent.applied()?.version) === 1);
  await fresh.agent.stop();

  // The edge is away while more bundles are published than the controller keeps.
  for (let n = 0; n < RECENT_BUNDLES + 1; n++) await addTask(controller, docker, n);
  const latest = controller.store.current?.version ?? 0;
  assert.equal(publishCount(latest), RECENT_BUNDLES + 2);

  const stale = await edgeOn(controller.port, fresh.stateDir);
  t.after(() => stale.agent.stop());
  assert.equal(publishCount(stale.agent.applied()?.version), 1, 'it starts on its saved bundle');
  await waitUntil('the latest bundle applied', () => stale.agent.applied()?.version === latest);
  const transfer = transferOf(stale, RECENT_BUNDLES + 2);
  assert.equal(transfer.base, null, 'the controller forgot version 1: every file');
  assert.deepEqual([...transfer.whole].sort(), [
    'certificates.pem',
    'certificates.txt',
    'early-hosts.txt',
    'nginx.conf',
    'peers.txt',
  ]);
  assert.deepEqual(await stale.served(), published(controller));
});

test('versions only move forward: a restarted controller that forgot every bundle sends a higher version, whole', async (t) => {
  const docker = dockerWithWeb();
  let controller = await controllerOn(docker);
  const port = controller.port;
  const edge = await edgeOn(port);
  t.after(() => cleanUp(edge, controller));
  await waitUntil('the first bundle', () => publishCount(edge.agent.applied()?.version) === 1);
  await addTask(controller, docker, 1);
  await addTask(controller, docker, 2);
  await waitUntil('version 3 applied', () => publishCount(edge.agent.applied()?.version) === 3);
  const before = edge.agent.applied()?.version ?? 0;

  await controller.stop();
  // Changed meanwhile: the new controller's first bundle is its first publish, other bytes than the edge's, in a
  // later epoch.
  docker.tasks.push(rawTask('t-restart', 'web', '10.0.4.1'));
  controller = await controllerOn(docker, port);
  await waitUntil('a higher version applied', () => (edge.agent.applied()?.version ?? 0) > before);
  const applied = edge.agent.applied();
  assert.equal(publishCount(applied?.version), 1, "the restarted controller's first publish");
  assert.equal(applied?.fingerprint, controller.store.current?.fingerprint);
  const transfer = transferOf(edge, 1);
  assert.equal(transfer.base, null, 'the restarted controller has no bundle of the edge to build on');
  assert.deepEqual(await edge.served(), published(controller));
});

test('files by hash are for the edge token only: none is 401, the admin token 403', async (t) => {
  const controller = await controllerOn(dockerWithWeb());
  t.after(() => controller.stop());
  const body = { files: [{ name: CERT, sha256: 'a'.repeat(64) }] };
  const ask = (token: string | null) =>
    apiRequest(controller.port, channelTls.cert, 'POST', '/v1/edge/files', { token, body });
  assert.equal((await ask(null)).status, 401);
  assert.equal((await ask(ADMIN_TOKEN)).status, 403);
  const answer = await ask(EDGE_TOKEN);
  assert.equal(answer.status, 200);
  assert.deepEqual(answer.json, { files: {} }, 'a hash of no kept bundle gives nothing');
});

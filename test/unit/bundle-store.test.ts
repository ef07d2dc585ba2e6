import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isSwarmgateError } from '../../src/errors.ts';
import { BundleStore, EDGE_FORGET_MS, MAX_EDGES } from '../../src/publish/bundle-store.ts';
import type { EdgeReport } from '../../src/publish/bundle-store.ts';
import { acquireVersionEpoch, versionOf, VERSIONS_PER_EPOCH } from '../../src/publish/version-epoch.ts';
import { fingerprintBundle } from '../../src/render/render-config.ts';
import { FakeDocker } from '../support/fake-docker.ts';
import { FakeClock } from '../support/fake-clock.ts';

const filesA = { 'nginx.conf': 'a' };
const filesB = { 'nginx.conf': 'b' };
const fpA = fingerprintBundle(filesA);
const fpB = fingerprintBundle(filesB);
/** A store with Swarm's Raft index 7 as its epoch: versions 7·2^20 + 1, + 2, ... */
const EPOCH = 7;
const v = (counter: number, epoch = EPOCH): number => versionOf(epoch, counter);
function storeAt(clock: FakeClock, epoch = EPOCH): BundleStore {
  const store = new BundleStore(clock);
  store.startEpoch(epoch);
  return store;
}
const report = (applied: EdgeReport['applied'], rejected: EdgeReport['rejected'] = null): EdgeReport => ({
  edge: 'e1',
  node: null,
  applied,
  rejected,
  reloads: 0,
  peerUpdates: 0,
});

test('bundle store: same bytes publish no new version', () => {
  const store = storeAt(new FakeClock());
  assert.equal(store.publish(filesA, fpA).version, v(1));
  assert.equal(store.publish(filesA, fpA).version, v(1));
  assert.equal(store.publish(filesB, fpB).version, v(2));
});

test('bundle store: an edge without the bundle gets it at once; one with it waits for the next publish', async () => {
  const clock = new FakeClock();
  const store = storeAt(clock);
  store.publish(filesA, fpA);
  assert.equal(
    (await store.waitForBundle(report(null), 1000, new AbortController().signal))?.fingerprint,
    fpA,
  );

  const waiting = store.waitForBundle(
    report({ version: v(1), fingerprint: fpA }),
    1000,
    new AbortController().signal,
  );
  assert.equal(store.waitingEdges, 1);
  store.publish(filesB, fpB);
  assert.equal((await waiting)?.fingerprint, fpB);
  assert.equal(store.waitingEdges, 0);
});

test('bundle store: the long poll ends with null on timeout or abort', async () => {
  const clock = new FakeClock();
  const store = storeAt(clock);
  store.publish(filesA, fpA);
  const timedOut = store.waitForBundle(
    report({ version: v(1), fingerprint: fpA }),
    1000,
    new AbortController().signal,
  );
  clock.advance(1000);
  assert.equal(await timedOut, null);
  const abort = new AbortController();
  const aborted = store.waitForBundle(report({ version: v(1), fingerprint: fpA }), 1000, abort.signal);
  abort.abort();
  assert.equal(await aborted, null);
  assert.equal(store.waitingEdges, 0);
});

test('bundle store: a bundle an edge rejected is not offered to it again', async () => {
  const clock = new FakeClock();
  const store = storeAt(clock);
  store.publish(filesB, fpB);
  const waiting = store.waitForBundle(
    report({ version: v(1), fingerprint: fpA }, { fingerprint: fpB, error: 'no' }),
    500,
    new AbortController().signal,
  );
  clock.advance(500);
  assert.equal(await waiting, null);
});

test('bundle store: no publish before an epoch from Swarm; epochs only move forward', () => {
  const store = new BundleStore(new FakeClock());
  assert.equal(store.versionsLeft, 0);
  assert.throws(
    () => store.publish(filesA, fpA),
    (error: unknown) => isSwarmgateError(error, 'ERR_VERSION_EPOCH'),
  );
  store.startEpoch(5);
  assert.equal(store.publish(filesA, fpA).version, v(1, 5));
  assert.throws(
    () => store.startEpoch(5),
    (error: unknown) => isSwarmgateError(error, 'ERR_VERSION_EPOCH'),
  );
  store.startEpoch(9);
  assert.equal(store.publish(filesB, fpB).version, v(1, 9), 'a new epoch numbers above the old one');
  assert.equal(store.versionsLeft, VERSIONS_PER_EPOCH - 2);
});

// Review of the security work, item 2: an edge token holder reported applied.version = 2^40 once; the controller
// renumbered past it, and after a restart it answered every honest edge (reporting 2^40 + 1) ERR_BAD_REQUEST forever.
test('bundle store: reported versions are recorded, never followed nor refused; a restart still moves forward', async () => {
  const docker = new FakeDocker();
  const signal = new AbortController().signal;
  const first = new BundleStore(new FakeClock());
  first.startEpoch(await acquireVersionEpoch(docker, 'swarmgate', signal));
  const published = first.publish(filesA, fpA).version;
  for (const forged of [2 ** 40, Number.MAX_SAFE_INTEGER, published, published + 1]) {
    first.recordEdge({ ...report({ version: forged, fingerprint: fpB }), edge: 'evil' });
  }
  assert.equal(first.current?.version, published, 'no report moves the version');
  assert.equal(first.edges()[0]?.applied?.version, published + 1, 'the last report is recorded as sent');
  assert.equal(first.publish(filesB, fpB).version, published + 1, 'versions rise by one');

  // The controller restarts (a new process: a new epoch from Swarm, above the last one).
  const second = new BundleStore(new FakeClock());
  second.startEpoch(await acquireVersionEpoch(docker, 'swarmgate', signal));
  second.publish(filesA, fpA);
  const honest = report({ version: published + 1, fingerprint: fpB });
  second.recordEdge(honest);
  second.recordEdge({ ...report({ version: 2 ** 40 + 1, fingerprint: fpB }), edge: 'e2' });
  const offered = await second.waitForBundle(honest, 1000, signal);
  assert.ok(offered !== null && offered.version > published + 1, 'the restarted controller moved forward');
  assert.equal(offered.fingerprint, fpA);
  assert.deepEqual(
    docker.configs.filter((config) => config.Spec?.Labels?.['swarmgate.version-epoch'] !== undefined),
    [],
    'the epoch configs are removed',
  );
});

test('bundle store: an epoch config is read back from Swarm; a config without a usable index is refused', async () => {
  const docker = new FakeDocker();
  docker.raftIndex = 41;
  const signal = new AbortController().signal;
  assert.equal(await acquireVersionEpoch(docker, 'swarmgate', signal), 42);
  assert.ok((await acquireVersionEpoch(docker, 'swarmgate', signal)) > 42);
  docker.raftIndex = 2 ** 33;
  await assert.rejects(acquireVersionEpoch(docker, 'swarmgate', signal), (error: unknown) =>
    isSwarmgateError(error, 'ERR_VERSION_EPOCH'),
  );
});

test('bundle store: edges are capped and silent ones forgotten', () => {
  const clock = new FakeClock();
  const store = storeAt(clock);
  for (let i = 0; i < MAX_EDGES + 50; i++) store.recordEdge({ ...report(null), edge: `edge-${i}` });
  const edges = store.edges();
  assert.equal(edges.length, MAX_EDGES);
  assert.ok(!edges.some((edge) => edge.edge === 'edge-0'), 'the one heard of longest ago went first');
  assert.ok(edges.some((edge) => edge.edge === `edge-${MAX_EDGES + 49}`));

  clock.advance(EDGE_FORGET_MS - 1000);
  store.recordEdge({ ...report(null), edge: 'edge-60' });
  clock.advance(2000);
  store.recordEdge({ ...report(null), edge: 'live' });
  assert.deepEqual(
    store.edges().map((edge) => edge.edge),
    ['edge-60', 'live'],
    'edges not heard of for ten minutes are forgotten',
  );
});

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isSwarmgateError } from '../../src/errors.ts';
import { BundleStore, EDGE_FORGET_MS, MAX_EDGES } from '../../src/publish/bundle-store.ts';
import type { EdgeReport } from '../../src/publish/bundle-store.ts';
import { fingerprintBundle } from '../../src/render/render-config.ts';
import { FakeClock } from '../support/fake-clock.ts';

const filesA = { 'nginx.conf': 'a' };
const filesB = { 'nginx.conf': 'b' };
const fpA = fingerprintBundle(filesA);
const fpB = fingerprintBundle(filesB);
const report = (applied: EdgeReport['applied'], rejected: EdgeReport['rejected'] = null): EdgeReport => ({
  edge: 'e1',
  node: null,
  applied,
  rejected,
  reloads: 0,
  peerUpdates: 0,
});

test('bundle store: same bytes publish no new version', () => {
  const store = new BundleStore(new FakeClock());
  assert.equal(store.publish(filesA, fpA).version, 1);
  assert.equal(store.publish(filesA, fpA).version, 1);
  assert.equal(store.publish(filesB, fpB).version, 2);
});

test('bundle store: an edge without the bundle gets it at once; one with it waits for the next publish', async () => {
  const clock = new FakeClock();
  const store = new BundleStore(clock);
  store.publish(filesA, fpA);
  assert.equal(
    (await store.waitForBundle(report(null), 1000, new AbortController().signal))?.fingerprint,
    fpA,
  );

  const waiting = store.waitForBundle(
    report({ version: 1, fingerprint: fpA }),
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
  const store = new BundleStore(clock);
  store.publish(filesA, fpA);
  const timedOut = store.waitForBundle(
    report({ version: 1, fingerprint: fpA }),
    1000,
    new AbortController().signal,
  );
  clock.advance(1000);
  assert.equal(await timedOut, null);
  const abort = new AbortController();
  const aborted = store.waitForBundle(report({ version: 1, fingerprint: fpA }), 1000, abort.signal);
  abort.abort();
  assert.equal(await aborted, null);
  assert.equal(store.waitingEdges, 0);
});

test('bundle store: a bundle an edge rejected is not offered to it again', async () => {
  const clock = new FakeClock();
  const store = new BundleStore(clock);
  store.publish(filesB, fpB);
  const waiting = store.waitForBundle(
    report({ version: 1, fingerprint: fpA }, { fingerprint: fpB, error: 'no' }),
    500,
    new AbortController().signal,
  );
  clock.advance(500);
  assert.equal(await waiting, null);
});

test('bundle store: a restarted controller continues the version numbers the edges know', () => {
  const store = new BundleStore(new FakeClock());
  store.publish(filesA, fpA);
  store.recordEdge(report({ version: 41, fingerprint: fpA }));
  assert.equal(store.current?.version, 41, 'same bytes as the edge: take over its version');
  assert.equal(store.publish(filesB, fpB).version, 42);
  const [edge] = store.edges();
  assert.equal(edge?.inSync, false);
});

test('bundle store: an edge ahead of a restarted controller makes it renumber its bundle past the edge', async () => {
  const store = new BundleStore(new FakeClock());
  assert.equal(store.publish(filesB, fpB).version, 1, 'a new controller counts from 1');
  // The edge runs version 17 of other bytes (from the controller before the restart).
  store.recordEdge(report({ version: 17, fingerprint: fpA }));
  assert.equal(store.current?.version, 18, 'renumbered past the edge, never backwards');
  const offered = await store.waitForBundle(
    report({ version: 17, fingerprint: fpA }),
    1000,
    new AbortController().signal,
  );
  assert.equal(offered?.version, 18);
  assert.equal(store.publish(filesA, fpA).version, 19);
  // Same bytes as the edge runs: the controller takes over the edge's number.
  const again = new BundleStore(new FakeClock());
  again.publish(filesA, fpA);
  again.recordEdge(report({ version: 40, fingerprint: fpA }));
  assert.equal(again.current?.version, 40);
  assert.equal(again.publish(filesB, fpB).version, 41);
});

test('bundle store: an absurd applied version is refused and changes nothing', () => {
  const store = new BundleStore(new FakeClock());
  store.publish(filesA, fpA);
  assert.throws(
    () => store.recordEdge(report({ version: Number.MAX_SAFE_INTEGER, fingerprint: fpB })),
    (error: unknown) => isSwarmgateError(error, 'ERR_BAD_REQUEST'),
  );
  assert.equal(store.current?.version, 1);
  assert.deepEqual(store.edges(), []);
  assert.equal(store.publish(filesB, fpB).version, 2, 'versions still rise by one');
  // A large but plausible version (a long-lived cluster) is taken.
  store.recordEdge(report({ version: 5_000_000, fingerprint: fpA }));
  assert.equal(store.current?.version, 5_000_001);
});

test('bundle store: edges are capped and silent ones forgotten', () => {
  const clock = new FakeClock();
  const store = new BundleStore(clock);
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

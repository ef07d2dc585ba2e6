import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BundleStore } from '../../src/publish/bundle-store.ts';
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

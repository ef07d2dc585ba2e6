import assert from 'node:assert/strict';
import { test } from 'node:test';
import { livenessOf, reconcileBoundOf, trackDockerCalls } from '../../src/controller/liveness.ts';
import type { DockerEvent } from '../../src/docker/docker-port.ts';
import { FakeClock } from '../support/fake-clock.ts';
import { FakeDocker } from '../support/fake-docker.ts';

const base = {
  startedAt: 0,
  lastDockerSuccessAt: null,
  reconcileRunningSince: null,
  dockerBoundMs: 60_000,
  reconcileTimeoutMs: 60_000,
  lastReconcileFinishedAt: null,
  reconcileBoundMs: 135_000,
} as const;

test('liveness: a controller that never reached Docker is live for the bound from its start, then not', () => {
  assert.deepEqual(livenessOf({ ...base, now: 60_000 }), { ok: true });
  const verdict = livenessOf({ ...base, now: 60_001 });
  assert.equal(verdict.ok, false);
  assert.match(verdict.ok ? '' : verdict.reason, /no successful Docker call for 60 s \(limit 60 s\)/);
});

test('liveness: the bound counts from the last successful Docker call', () => {
  const turning = { ...base, lastReconcileFinishedAt: 150_000 };
  assert.equal(livenessOf({ ...turning, lastDockerSuccessAt: 100_000, now: 150_000 }).ok, true);
  assert.equal(livenessOf({ ...turning, lastDockerSuccessAt: 100_000, now: 160_001 }).ok, false);
});

test('liveness: a reconcile running past twice its timeout is a stuck loop; a long one is not', () => {
  const running = {
    ...base,
    lastDockerSuccessAt: 1_000_000,
    lastReconcileFinishedAt: 990_000,
    now: 1_000_000,
  };
  assert.equal(livenessOf({ ...running, reconcileRunningSince: 1_000_000 - 120_000 }).ok, true);
  const stuck = livenessOf({ ...running, reconcileRunningSince: 1_000_000 - 120_001 });
  assert.equal(stuck.ok, false);
  assert.match(stuck.ok ? '' : stuck.reason, /running for 120 s .*timeout is 60 s.*stuck/);
});

// Review of the security work, item 4: the state lease's ticks keep Docker fresh, so a reconcile loop that stopped
// starting (its trigger or slow poll died) looked healthy forever.
test('liveness: a loop that stopped starting reconciles fails once none finished for the bound', () => {
  const clock = new FakeClock(0);
  const bound = reconcileBoundOf(60_000, 60_000, 5000);
  assert.equal(bound, 135_000, '2 × the reconcile timeout + 3 slow polls, above the Docker bound');
  assert.equal(reconcileBoundOf(300_000, 60_000, 5000), 300_000, 'never below the Docker bound');
  const at = (finishedAt: number | null) =>
    livenessOf({
      ...base,
      now: clock.now(),
      // Docker is fresh all along: the lease renews every few seconds.
      lastDockerSuccessAt: clock.now() - 1000,
      lastReconcileFinishedAt: finishedAt,
      reconcileBoundMs: bound,
    });
  clock.advance(135_000);
  assert.deepEqual(at(null), { ok: true }, 'before the first reconcile: counted from the start');
  clock.advance(1);
  const never = at(null);
  assert.equal(never.ok, false);
  assert.match(never.ok ? '' : never.reason, /no reconcile has finished for 135 s \(limit 135 s\)/);
  assert.deepEqual(at(clock.now() - 5000), { ok: true }, 'a turning loop');
  clock.advance(135_000);
  const stopped = at(clock.now() - 135_001);
  assert.equal(stopped.ok, false);
  assert.match(stopped.ok ? '' : stopped.reason, /the loop stopped/);
});

test('liveness: tracked Docker calls note the fake clock time of every success, never of a failure', async () => {
  const clock = new FakeClock(1_000);
  const docker = new FakeDocker();
  const tracked = trackDockerCalls(docker, clock);
  assert.equal(tracked.lastSuccessAt(), null);
  await tracked.docker.listServices(new AbortController().signal);
  assert.equal(tracked.lastSuccessAt(), 1_000);
  clock.advance(5_000);
  docker.down = true;
  await assert.rejects(tracked.docker.listTasks(new AbortController().signal));
  assert.equal(tracked.lastSuccessAt(), 1_000, 'a failed call is no sign of life');
  docker.down = false;
  const abort = new AbortController();
  const stream = await tracked.docker.openEventStream(abort.signal);
  assert.equal(tracked.lastSuccessAt(), 6_000, 'subscribing counts');
  clock.advance(1_000);
  const iterator: AsyncIterator<DockerEvent> = stream[Symbol.asyncIterator]();
  const next = iterator.next();
  docker.emit({ Type: 'service', Action: 'update' });
  const first = await next;
  assert.equal(first.done ? null : first.value.Action, 'update');
  assert.equal(tracked.lastSuccessAt(), 7_000, 'an arriving event counts');
  abort.abort();
  await iterator.return?.();
});

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SingleFlight } from '../../src/reconcile/queues.ts';

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

test('single flight: runs again for every request made after the previous run finished', async () => {
  let runs = 0;
  const flight = new SingleFlight(async () => {
    runs++;
  });
  await flight.request();
  await flight.request();
  await flight.request();
  assert.equal(runs, 3);
});

test('single flight: requests during a run collapse into exactly one more run', async () => {
  let runs = 0;
  const gate = deferred();
  let concurrent = 0;
  let maxConcurrent = 0;
  const flight = new SingleFlight(async () => {
    runs++;
    concurrent++;
    maxConcurrent = Math.max(maxConcurrent, concurrent);
    if (runs === 1) await gate.promise;
    concurrent--;
  });
  const first = flight.request();
  const followers = [flight.request(), flight.request(), flight.request()];
  assert.equal(followers[0], followers[2], 'waiting requests share one promise');
  gate.resolve();
  await Promise.all([first, ...followers]);
  assert.equal(runs, 2);
  assert.equal(maxConcurrent, 1);
});

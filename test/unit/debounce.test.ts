import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Debouncer } from '../../src/reconcile/debounce.ts';
import { FakeClock } from '../support/fake-clock.ts';

function setup(minMs: number, maxMs: number): { clock: FakeClock; debouncer: Debouncer; fired: number[] } {
  const clock = new FakeClock(0);
  const fired: number[] = [];
  const debouncer = new Debouncer({ minMs, maxMs }, clock, () => fired.push(clock.now()));
  return { clock, debouncer, fired };
}

test('debounce: one trigger fires once, after min', () => {
  const { clock, debouncer, fired } = setup(50, 300);
  debouncer.trigger();
  clock.advance(49);
  assert.deepEqual(fired, []);
  clock.advance(1);
  assert.deepEqual(fired, [50]);
  clock.advance(1000);
  assert.deepEqual(fired, [50], 'the max timer of a finished burst does not fire again');
});

test('debounce: each trigger restarts the min timer', () => {
  const { clock, debouncer, fired } = setup(50, 300);
  debouncer.trigger();
  clock.advance(40);
  debouncer.trigger();
  clock.advance(40);
  debouncer.trigger();
  clock.advance(49);
  assert.deepEqual(fired, []);
  clock.advance(1);
  assert.deepEqual(fired, [130]);
});

test('debounce: a steady stream still fires every max, counted from the first trigger of the burst', () => {
  const { clock, debouncer, fired } = setup(50, 300);
  for (let i = 0; i < 100; i++) {
    debouncer.trigger();
    clock.advance(10);
  }
  // 1000 ms of triggers every 10 ms: the min timer never expires, the max timer fires at 300, 600 and 900.
  assert.deepEqual(fired, [300, 600, 900]);
  clock.advance(50);
  assert.deepEqual(fired, [300, 600, 900, 1040]);
});

test('debounce: cancel drops a pending burst; max 0 fires at once', () => {
  const { clock, debouncer, fired } = setup(50, 300);
  debouncer.trigger();
  debouncer.cancel();
  clock.advance(1000);
  assert.deepEqual(fired, []);
  assert.equal(clock.pendingTimers, 0);

  const immediate = setup(0, 0);
  immediate.debouncer.trigger();
  assert.deepEqual(immediate.fired, [0]);
});

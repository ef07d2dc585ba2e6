// The reconcile loop's reads on a fake clock: a full reconcile lists the tasks Swarm wants running (plus every
// task of services that are changing); a fast poll reads only the converging services' tasks and renders nothing
// when they are as they were.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { TestContext } from 'node:test';
import { readControllerConfig } from '../../src/config.ts';
import { createLogger } from '../../src/logger.ts';
import { BundleStore } from '../../src/publish/bundle-store.ts';
import { Reconciler } from '../../src/reconcile/reconciler.ts';
import { createTemplateRenderer } from '../../src/render/nunjucks-env.ts';
import { FakeClock } from '../support/fake-clock.ts';
import { FakeDocker, rawService, rawTask } from '../support/fake-docker.ts';

const FAST_POLL_MS = 200;

function harness(t: TestContext): {
  docker: FakeDocker;
  clock: FakeClock;
  store: BundleStore;
  reconciler: Reconciler;
  /** Fires the fast poll's timer and waits for the run it started. */
  tick: () => Promise<void>;
} {
  const docker = new FakeDocker();
  for (const name of ['stable', 'moving']) {
    docker.services.push(rawService(name, { VIRTUAL_HOST: `${name}.example.com` }, { replicas: 2 }));
  }
  docker.tasks.push(
    rawTask('stable-1', 'stable', '10.0.1.1'),
    rawTask('stable-2', 'stable', '10.0.1.2'),
    // History: an old task of a past update, which a full reconcile no longer lists.
    rawTask('stable-old', 'stable', '10.0.1.9', { desiredState: 'shutdown', state: 'shutdown' }),
    rawTask('moving-1', 'moving', '10.0.2.1'),
    rawTask('moving-2', 'moving', '10.0.2.2', { state: 'starting' }),
  );
  const clock = new FakeClock();
  const store = new BundleStore(clock);
  store.startEpoch(1);
  const config = readControllerConfig({});
  const reconciler = new Reconciler(
    {
      docker,
      validator: { validate: async () => ({ ok: true }) },
      templates: createTemplateRenderer(),
      store,
      logger: createLogger('silent'),
      clock,
    },
    {
      networks: ['swarmgate'],
      debounce: { minMs: 100, maxMs: 500 },
      fastPollMs: FAST_POLL_MS,
      fastPollWindowMs: 120_000,
      proxy: config.proxy,
      generator: 'test',
    },
  );
  t.after(() => reconciler.stop());
  return {
    docker,
    clock,
    store,
    reconciler,
    tick: async () => {
      clock.advance(FAST_POLL_MS);
      await reconciler.idle();
    },
  };
}

test('full reconcile: the tasks Swarm wants running, not the task history', async (t) => {
  const { docker, reconciler } = harness(t);
  await reconciler.reconcileNow();
  assert.deepEqual(docker.taskFilters, [{ desiredState: 'running' }]);
  assert.deepEqual(
    reconciler.lastSnapshot?.tasks.map((task) => task.id),
    ['moving-1', 'moving-2', 'stable-1', 'stable-2'],
  );
});

test('fast poll: only the converging service is read; unchanged tasks render and publish nothing', async (t) => {
  const { docker, store, reconciler, tick } = harness(t);
  await reconciler.reconcileNow();
  assert.equal(reconciler.fastPolling, true, 'moving-2 is starting');
  const version = store.current?.version;
  const listServices = docker.calls.listServices;

  await tick();
  assert.deepEqual(docker.taskFilters.at(-1), { services: ['moving'] });
  assert.equal(docker.calls.listServices, listServices, 'a fast poll does not list the services');
  assert.equal(reconciler.stats.quietFastPolls, 1);
  assert.equal(store.current?.version, version, 'nothing new: no publish');
  assert.equal(reconciler.fastPolling, true, 'still converging: the fast poll goes on');

  // The task reaches running: the next tick routes it, still without a full listing.
  const starting = docker.tasks.find((task) => task.ID === 'moving-2');
  assert.ok(starting?.Status);
  starting.Status.State = 'running';
  await tick();
  assert.deepEqual(docker.taskFilters.at(-1), { services: ['moving'] });
  assert.equal(docker.calls.listServices, listServices);
  assert.match(store.current?.files['peers.txt'] ?? '', / 10\.0\.2\.2:80\b/);
  assert.equal(reconciler.fastPolling, false, 'converged: back to the slow poll');
  // The untouched service keeps what the full reconcile read.
  assert.match(store.current?.files['peers.txt'] ?? '', / 10\.0\.1\.1:80 10\.0\.1\.2:80\b/);
});

test('fast poll: a trigger meanwhile makes the next run a full one', async (t) => {
  const { docker, clock, reconciler } = harness(t);
  await reconciler.reconcileNow();
  const listServices = docker.calls.listServices;
  const calls = docker.taskFilters.length;
  reconciler.trigger('service:update');
  clock.advance(100);
  await reconciler.idle();
  assert.equal(docker.calls.listServices, listServices + 1);
  // Every running task, and every task of the service still converging.
  assert.deepEqual(docker.taskFilters.slice(calls), [{ desiredState: 'running' }, { services: ['moving'] }]);
});

test('a service whose spec changed is read in full: a task told to stop but still running keeps it converging', async (t) => {
  const { docker, reconciler, tick } = harness(t);
  const moving = docker.tasks.find((task) => task.ID === 'moving-2');
  assert.ok(moving?.Status);
  moving.Status.State = 'running';
  await reconciler.reconcileNow();
  assert.equal(reconciler.fastPolling, false, 'everything converged');

  // Scaled 2 → 1: Swarm tells stable-2 to stop; it still runs for a while.
  const service = docker.services.find((candidate) => candidate.ID === 'stable');
  assert.ok(service?.Spec?.Mode?.Replicated && service.Version);
  service.Spec.Mode.Replicated.Replicas = 1;
  service.Version.Index = (service.Version.Index ?? 0) + 1;
  const stopping = docker.tasks.find((task) => task.ID === 'stable-2');
  assert.ok(stopping);
  stopping.DesiredState = 'shutdown';
  await reconciler.reconcileNow();
  assert.deepEqual(docker.taskFilters.slice(-2), [{ desiredState: 'running' }, { services: ['stable'] }]);
  assert.ok(
    reconciler.lastSnapshot?.tasks.some((task) => task.id === 'stable-2' && task.state === 'running'),
  );
  assert.doesNotMatch(
    reconciler.currentModel.services.map((s) => s.servers.map((x) => x.ip)).join(' '),
    /10\.0\.1\.2/,
  );
  assert.equal(reconciler.fastPolling, true, 'a task told to stop still runs');

  assert.ok(stopping.Status);
  stopping.Status.State = 'shutdown';
  await tick();
  assert.deepEqual(docker.taskFilters.at(-1), { services: ['stable'] });
  assert.equal(reconciler.fastPolling, false);
});

test('a converging service removed meanwhile: the fast poll fails once, the next full read drops it and routes on', async (t) => {
  const { docker, reconciler, tick } = harness(t);
  await reconciler.reconcileNow();
  assert.equal(reconciler.fastPolling, true, 'moving-2 is starting');
  // The Engine answers 404 for a task list naming a service that is gone.
  docker.services = docker.services.filter((service) => service.ID !== 'moving');
  docker.tasks = docker.tasks.filter((task) => task.ServiceID !== 'moving');
  await tick();
  await reconciler.reconcileNow();
  assert.equal(reconciler.lastOutcome?.ok, true, reconciler.lastOutcome?.error ?? '');
  assert.deepEqual(
    reconciler.currentModel.services.map((service) => service.name),
    ['stable'],
    'the removed service left the routes',
  );
  // A later full read does not ask for the removed service again.
  await reconciler.reconcileNow();
  assert.equal(reconciler.lastOutcome?.ok, true, reconciler.lastOutcome?.error ?? '');
});

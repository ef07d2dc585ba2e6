// Deployment on several nodes: every node's edge answers, and every node reaches every task wherever it runs.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  controllerStatus,
  createService,
  labNodes,
  removeService,
  request,
  uniqueName,
  waitForTasksThrough,
} from './support/nodes.ts';

test('every node’s edge answers 503 for an unknown host', async () => {
  const nodes = await labNodes();
  assert.ok(nodes.length >= 3, 'three lab nodes');
  for (const node of nodes) {
    const result = await request(node.ip, 'unknown.invalid');
    assert.equal(result.status, 503, `the edge on ${node.name} answers 503 for an unknown host`);
  }
});

test('a service spread over every node is reached from every node’s edge', async (t) => {
  const nodes = await labNodes();
  const name = uniqueName('sg-e2e-spread');
  const host = `${name}.e2e.test`;
  t.after(() => removeService(name));
  // Two per node: every node runs tasks, so each edge must route across the overlay to the other nodes.
  const tasks = await createService({
    name,
    host,
    replicas: 2 * nodes.length,
    extra: ['--replicas-max-per-node', '2'],
  });
  assert.deepEqual(
    new Set(tasks.map((task) => task.node)),
    new Set(nodes.map((node) => node.name)),
    'the tasks run on every node',
  );
  const started = Date.now();
  for (const node of nodes) {
    const seen = await waitForTasksThrough(
      node,
      host,
      tasks.map((task) => task.name),
    );
    assert.deepEqual(
      seen,
      new Set(tasks.map((task) => task.name)),
      `the edge on ${node.name} routes to every task and nothing else`,
    );
  }
  t.diagnostic(
    `all ${tasks.length} tasks seen through all ${nodes.length} edges after ${Date.now() - started} ms`,
  );
  const status = await controllerStatus();
  assert.equal(status.services.find((service) => service.name === name)?.routedTasks, tasks.length);
  assert.equal(status.edges.length, nodes.length, 'the controller knows one edge per node');
});

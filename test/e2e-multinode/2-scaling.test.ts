// Scaling 6→12→2 on three nodes under steady load through all three edges: no request fails.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { describe, startLoad, summarize } from './support/load.ts';
import type { LoadRun } from './support/load.ts';
import {
  createService,
  labNodes,
  removeService,
  runningTasks,
  scale,
  uniqueName,
  waitFor,
  waitForTasksThrough,
} from './support/nodes.ts';
import type { LabNode } from './support/nodes.ts';

const RATE_PER_NODE = 15;

/** Waits until the load has been answered by every named task through every node since `since` (ms of the load). */
async function waitForLoadToReach(
  load: LoadRun,
  nodes: readonly LabNode[],
  tasks: readonly string[],
  since: number,
): Promise<number> {
  await waitFor(
    `the load through ${nodes.length} edges to reach all ${tasks.length} tasks`,
    async () => {
      const seen = new Map(nodes.map((node) => [node.name, new Set<string>()]));
      for (const sample of load.samples())
        if (sample.at >= since && sample.task) seen.get(sample.node)?.add(sample.task);
      return [...seen.values()].every((set) => tasks.every((task) => set.has(task))) ? true : undefined;
    },
    { timeoutMs: 90_000, intervalMs: 250 },
  );
  return Date.now() - load.startedAt - since;
}

/** Waits until, for `quietMs`, the load has been answered only by the named tasks (the removed ones left). */
async function waitForOnly(
  load: LoadRun,
  tasks: readonly string[],
  since: number,
  quietMs: number,
): Promise<void> {
  const allowed = new Set(tasks);
  await waitFor(
    `the load to be answered only by the ${tasks.length} remaining tasks for ${quietMs} ms`,
    async () => {
      const now = Date.now() - load.startedAt;
      let last = since;
      for (const sample of load.samples())
        if (sample.at >= since && sample.task && !allowed.has(sample.task)) last = Math.max(last, sample.at);
      return now - last >= quietMs ? true : undefined;
    },
    { timeoutMs: 90_000, intervalMs: 250 },
  );
}

test('scaling 6→12→2 under load through every node: 0 failed requests', async (t) => {
  const nodes = await labNodes();
  const name = uniqueName('sg-e2e-scale');
  const host = `${name}.e2e.test`;
  t.after(() => removeService(name));
  const six = await createService({ name, host, replicas: 6 });
  for (const node of nodes)
    await waitForTasksThrough(
      node,
      host,
      six.map((task) => task.name),
    );

  const load = startLoad(nodes, host, { ratePerNode: RATE_PER_NODE, maxSeconds: 240 });
  let stopped = false;
  t.after(async () => {
    if (!stopped) await load.stop();
  });
  await new Promise((resolve) => setTimeout(resolve, 2000));

  const upAt = Date.now() - load.startedAt;
  const twelve = await scale(name, 12);
  const upMs = await waitForLoadToReach(
    load,
    nodes,
    twelve.map((task) => task.name),
    upAt,
  );
  t.diagnostic(
    `6→12: every new task answered through every edge ${(upMs / 1000).toFixed(1)} s after the scale`,
  );

  const downAt = Date.now() - load.startedAt;
  const two = await scale(name, 2);
  await waitForOnly(
    load,
    two.map((task) => task.name),
    downAt,
    3000,
  );
  t.diagnostic(
    `12→2: only the 2 remaining tasks answer ${((Date.now() - load.startedAt - downAt) / 1000).toFixed(1)} s after the scale`,
  );
  assert.deepEqual(
    new Set((await runningTasks(name)).map((task) => task.name)),
    new Set(two.map((task) => task.name)),
  );

  const report = await load.stop();
  stopped = true;
  const summary = summarize(report.samples);
  t.diagnostic(`load (${RATE_PER_NODE}/s through each of ${nodes.length} edges): ${describe(summary)}`);
  for (const node of nodes) {
    t.diagnostic(
      `  ${node.name}: ${describe(summarize(report.samples.filter((sample) => sample.node === node.name)))}`,
    );
  }
  assert.equal(report.unanswered, 0, 'every request was answered or failed');
  assert.equal(summary.failed, 0, `no request failed while scaling: ${describe(summary)}`);
});

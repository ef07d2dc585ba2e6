// A worker node reboots under load (issue 13: an edge on a worker whose node reboots). A worker joins the lab for
// this file (lab-nodes.sh `--workers 1`; files 1-6 keep running on the three managers) and leaves at its end. Its
// engine state is on a volume, so the reboot is its node container stopped and started again: `docker stop` sends
// the node a shutdown (its dockerd gets SIGTERM and stops every container, as systemd does at shutdown), then the
// node is off (no address on the lab's network) until Swarm calls it down, then it boots with its engine state,
// swarm membership, images and volumes (the edge's saved bundle) kept. Load goes through every node's edge the
// whole time; every object touched is one this suite made inside the lab's nodes.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { TestContext } from 'node:test';
import { describe, startLoad, summarize } from './support/load.ts';
import type { LoadReport, LoadRun, Sample } from './support/load.ts';
import {
  answeringTask,
  controllerCli,
  controllerStatus,
  createService,
  docker,
  edgesInSync,
  inNode,
  logLinesInNode,
  labNodes,
  labNodesUp,
  labWorkers,
  nodeIp,
  removeService,
  request,
  runningTasks,
  STACK,
  swarmNodes,
  uniqueName,
  waitFor,
  waitForRunning,
  waitForTasksThrough,
} from './support/nodes.ts';
import type { LabNode } from './support/nodes.ts';

const RATE_PER_NODE = 20;
const REPLICAS = 8;
const EDGE_SERVICE = `${STACK}_edge`;

let nodes: LabNode[] = [];
let worker: LabNode;
let others: LabNode[] = [];
let managerCount = 0;
let workersBefore = 0;
const name = uniqueName('sg-e2e-reboot');
const host = `${name}.e2e.test`;

before(async () => {
  const workers = await labWorkers();
  workersBefore = workers.length;
  managerCount = (await labNodes()).filter((node) => !workers.includes(node.name)).length;
  const joinStart = Date.now();
  if (workersBefore === 0) await labNodesUp(managerCount, 1);
  nodes = await labNodes();
  const workerName = (await labWorkers())[0];
  const found = nodes.find((node) => node.name === workerName);
  assert.ok(found, `the lab has a worker node (lab-nodes.sh up ${managerCount} --workers 1)`);
  worker = found;
  others = nodes.filter((node) => node !== worker);
  // Its edge is the global service's task there: it answers 503 for an unknown host once it has a bundle.
  await waitForRunning(EDGE_SERVICE, nodes.length);
  await waitFor(
    `the edge on ${worker.name} to answer 503 for an unknown host`,
    async () =>
      (await request(worker.ip, 'unknown.invalid').catch(() => undefined))?.status === 503 ? true : undefined,
    { timeoutMs: 120_000, intervalMs: 500 },
  );
  console.log(
    `# ${worker.name} joined as a worker and its edge answered ${((Date.now() - joinStart) / 1000).toFixed(1)} s after lab-nodes.sh up began`,
  );
  const tasks = await createService({ name, host, replicas: REPLICAS });
  assert.ok(
    tasks.some((task) => task.node === worker.name),
    `some of ${name}'s tasks run on the worker (Swarm spreads them): ${tasks.map((task) => task.node).join(' ')}`,
  );
  await routesEverywhere();
  console.log(
    `# the worker joined and ${name} was routed by every edge ${((Date.now() - joinStart) / 1000).toFixed(1)} s after lab-nodes.sh up began`,
  );
});

after(async () => {
  await removeService(name);
  // The lab as it was: a worker this file added leaves (its container, state volume and swarm entry go).
  if (workersBefore === 0) await labNodesUp(managerCount, 0);
});

/** Every edge routes the service to exactly the tasks Swarm runs, and the controller agrees. */
async function routesEverywhere(): Promise<string[]> {
  const tasks = (await runningTasks(name))
    .filter((task) => task.state.startsWith('Running'))
    .map((task) => task.name);
  for (const node of nodes) await waitForTasksThrough(node, host, tasks, 90_000);
  await edgesInSync(nodes.length);
  const routed = (await controllerStatus()).services.find((service) => service.name === name)?.routedTasks;
  assert.equal(routed, tasks.length, `the controller routes ${name} to its ${tasks.length} running tasks`);
  return tasks;
}

/** The running edge container on a node (its id changes when Swarm replaces the task). */
async function edgeContainer(node: string): Promise<string> {
  return waitFor(
    `a running edge container on ${node}`,
    async () =>
      (
        await inNode(node, ['ps', '-q', '--filter', `name=${EDGE_SERVICE}`, '--filter', 'status=running'])
      ).split('\n')[0] || undefined,
    { timeoutMs: 90_000, intervalMs: 250 },
  );
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function seconds(ms: number): string {
  return (ms / 1000).toFixed(1);
}

/** Steady load through every node's edge, stopped when the test ends even if it fails (its timer would hold the run). */
function loadDuring(t: TestContext, maxSeconds: number): LoadRun {
  const load = startLoad(nodes, host, { ratePerNode: RATE_PER_NODE, maxSeconds });
  let report: Promise<LoadReport> | null = null;
  const stop = (): Promise<LoadReport> => (report ??= load.stop());
  t.after(stop);
  return { startedAt: load.startedAt, samples: () => load.samples(), stop };
}

const ok = (sample: Sample): boolean => sample.status >= 200 && sample.status < 300;

test('a worker reboots under load: the other edges lose nothing, its edge is gone while down and back in sync after', async (t) => {
  const load = loadDuring(t, 240);
  await sleep(2000);
  const shutdownAt = Date.now();
  const shutdownAtLoad = shutdownAt - load.startedAt;

  // Shutdown: the node's dockerd stops its containers (the edge's nginx closes its connections), then the node is off.
  await docker(['stop', '--time', '30', worker.name], { timeoutMs: 60_000 });
  const offMs = Date.now() - shutdownAt;
  await waitFor(
    `Swarm to mark ${worker.name} down`,
    async () => ((await swarmNodes()).get(worker.name)?.status === 'Down' ? true : undefined),
    { timeoutMs: 90_000, intervalMs: 250 },
  );
  const downMs = Date.now() - shutdownAt;

  // While it is down: the controller's view of its edge, and a waited change (the worker's edge must not hold it).
  // The controller hears of it through its event stream and a reconcile, a moment after Swarm says Down.
  const downEdge = async () => (await controllerStatus()).edges.find((edge) => edge.edge === worker.name);
  const whileDown = await waitFor(
    `the controller to report the edge on ${worker.name} gone or unreachable`,
    async () => {
      const edge = await downEdge();
      return edge?.condition === 'gone' || edge?.condition === 'unreachable' ? edge : undefined;
    },
    { timeoutMs: 30_000, intervalMs: 250 },
  ).catch(downEdge);
  const scaled = await controllerCli(['scale', name, String(REPLICAS + 1), '--wait=60']).catch(
    (error: unknown) => ({ out: String(error), ms: NaN }),
  );
  const waited = (() => {
    try {
      return (
        JSON.parse(scaled.out) as {
          wait?: { complete: boolean; edgesGone: string[]; edgesUnreachable: string[]; waitedMs: number };
        }
      ).wait;
    } catch {
      return undefined;
    }
  })();

  // Power on: the same container (same address on the lab's network, the engine state on its volume) boots.
  const bootAt = Date.now();
  await docker(['start', worker.name]);
  const ipAfter = await nodeIp(worker.name);
  await waitFor(
    `the engine on ${worker.name} to answer`,
    async () =>
      (await inNode(worker.name, ['info'], { timeoutMs: 5_000 })
        .then(() => true)
        .catch(() => false))
        ? true
        : undefined,
    { timeoutMs: 60_000, intervalMs: 250 },
  );
  const engineMs = Date.now() - bootAt;
  await waitFor(
    `Swarm to call ${worker.name} Ready again`,
    async () => ((await swarmNodes()).get(worker.name)?.status === 'Ready' ? true : undefined),
    { timeoutMs: 120_000, intervalMs: 250 },
  );
  const readyMs = Date.now() - bootAt;
  await waitFor(
    `the edge on ${worker.name} to serve ${host} again`,
    async () => ((await request(worker.ip, host).catch(() => undefined))?.status === 200 ? true : undefined),
    { timeoutMs: 120_000, intervalMs: 100 },
  );
  const servedMs = Date.now() - bootAt;
  // In sync: the controller hears from the worker's edge again and it applied the current bundle (the scale made
  // while it was down is in it).
  await waitFor(
    `the edge on ${worker.name} to be in sync again`,
    async () => {
      const edge = (await controllerStatus()).edges.find((view) => view.edge === worker.name);
      return edge?.condition === 'in-sync' && Date.now() - Date.parse(edge.lastContact) < 45_000
        ? edge
        : undefined;
    },
    { timeoutMs: 120_000, intervalMs: 250 },
  );
  const syncMs = Date.now() - bootAt;
  const logs = await logLinesInNode(
    worker.name,
    await edgeContainer(worker.name),
    'serving the last applied bundle',
  ).catch((error: unknown) => String(error));
  const running = await routesEverywhere();
  // The right routes: every answer through the rebooted edge comes from a task Swarm runs now.
  const answers = new Set<string>();
  for (let i = 0; i < 3 * running.length; i++) {
    const task = await answeringTask(worker.ip, host);
    if (task) answers.add(task);
  }
  await sleep(1000);
  const report = await load.stop();

  const since = (node: LabNode, from: number): Sample[] =>
    report.samples.filter((sample) => sample.node === node.name && sample.at >= from);
  const onWorker = since(worker, shutdownAtLoad);
  const firstFailure = onWorker.findIndex((sample) => !ok(sample));
  const back = onWorker.findIndex((sample, index) => index > firstFailure && ok(sample));
  const failedAfterBack = back < 0 ? [] : onWorker.slice(back).filter((sample) => !ok(sample));
  const outageMs =
    firstFailure < 0 || back < 0 ? NaN : (onWorker[back]?.at ?? 0) - (onWorker[firstFailure]?.at ?? 0);
  const savedBundle = /serving the last applied bundle/.test(logs);

  t.diagnostic(
    `load ${RATE_PER_NODE}/s through each of ${nodes.map((node) => node.name).join(', ')}; ${worker.name} is a worker with ${REPLICAS} tasks spread over ${nodes.length} nodes`,
  );
  for (const node of nodes)
    t.diagnostic(
      `through ${node.name}, whole run: ${describe(summarize(report.samples.filter((sample) => sample.node === node.name)))}`,
    );
  t.diagnostic(
    `through ${others.map((node) => node.name).join(', ')} from the shutdown on: ${describe(summarize(report.samples.filter((sample) => sample.node !== worker.name && sample.at >= shutdownAtLoad)))}`,
  );
  t.diagnostic(
    `${worker.name}: shut down in ${seconds(offMs)} s, Swarm called it down ${seconds(downMs)} s after the shutdown began; its edge was ${whileDown?.condition ?? 'not listed'} then`,
  );
  t.diagnostic(
    `swarmgate scale ${name} ${REPLICAS + 1} --wait=60 with ${worker.name} down: returned after ${seconds(scaled.ms)} s (waited ${waited?.waitedMs} ms, gone ${JSON.stringify(waited?.edgesGone)}, unreachable ${JSON.stringify(waited?.edgesUnreachable)})`,
  );
  t.diagnostic(
    `boot: engine answered ${seconds(engineMs)} s, Swarm Ready ${seconds(readyMs)} s, its edge served ${host} ${seconds(servedMs)} s and was in sync ${seconds(syncMs)} s after the start (${seconds(bootAt - shutdownAt + servedMs)} s after the shutdown began); it came back ${savedBundle ? 'on its saved bundle' : 'without a saved bundle (a fresh poll)'}`,
  );
  t.diagnostic(
    `through ${worker.name}: no good answer for ${seconds(outageMs)} s (${onWorker.filter((sample) => !ok(sample)).length} failed while it was off and booting), ${failedAfterBack.length} failed once it served again; after that: ${describe(summarize(back < 0 ? [] : onWorker.slice(back)))}`,
  );

  assert.equal(ipAfter, worker.ip, `${worker.name} came back on its address (the load targets it)`);
  assert.ok(
    whileDown?.condition === 'gone' || whileDown?.condition === 'unreachable',
    `the down worker's edge is reported gone or unreachable, not behind: ${JSON.stringify(whileDown)}`,
  );
  assert.equal(waited?.complete, true, `the wait completed: ${scaled.out}`);
  assert.ok(
    [...(waited?.edgesGone ?? []), ...(waited?.edgesUnreachable ?? [])].includes(worker.name),
    `the wait names ${worker.name} gone or unreachable: ${scaled.out}`,
  );
  // Live edges apply a change within a second or two; a down edge once held a wait for its 90 s no-contact limit.
  assert.ok(scaled.ms < 10_000, `the wait was not held by the down worker: ${scaled.ms} ms`);
  assert.equal(report.unanswered, 0, 'every request was answered or failed');
  const othersAll = summarize(report.samples.filter((sample) => sample.node !== worker.name));
  assert.equal(othersAll.failed, 0, `the other edges lost nothing: ${describe(othersAll)}`);
  assert.deepEqual(failedAfterBack, [], `once the worker's edge served again, it failed nothing`);
  // The reboot kept the node's state: the new edge task found the bundle the old one saved on its volume.
  assert.ok(savedBundle, `the worker's edge came back on its saved bundle`);
  assert.equal(running.length, REPLICAS + 1);
  assert.deepEqual(
    [...answers].filter((task) => !running.includes(task)),
    [],
    `the rebooted edge answers only from running tasks`,
  );
});

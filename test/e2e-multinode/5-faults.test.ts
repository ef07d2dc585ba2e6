// Fault injection at steady load (issue 12): the edge's volume corrupted, the edge's volume full, the controller
// killed with SIGKILL during a publish, dockerd restarted on a node. Load goes through every node's edge the whole
// time. Each fault ends with the right routes on every edge and nothing lost; the figures are test diagnostics.
// Faults hit node3 (the spare node: the controller never runs there) or the controller's own container; every
// object touched is one this suite deployed inside the lab's nodes.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, before, test } from 'node:test';
import type { TestContext } from 'node:test';
import { describe, startLoad, summarize } from './support/load.ts';
import type { LoadReport, LoadRun, Sample } from './support/load.ts';
import {
  controllerContainer,
  controllerStatus,
  createService,
  docker,
  edgesInSync,
  inNode,
  logLinesInNode,
  labNodes,
  manager,
  removeService,
  request,
  runningTasks,
  scale,
  shInNode,
  SPARE_NODE,
  STACK,
  swarmNodes,
  uniqueName,
  waitFor,
  waitForTasksThrough,
} from './support/nodes.ts';
import type { LabNode } from './support/nodes.ts';

const RATE_PER_NODE = 20;
const REPLICAS = 6;
const EDGE_SERVICE = `${STACK}_edge`;
const EDGE_VOLUME = `${STACK}_edge-state`;
const EDGE_STATE_DIR = '/var/lib/swarmgate';

let nodes: LabNode[] = [];
let victim: LabNode;
let survivors: LabNode[] = [];
const name = uniqueName('sg-e2e-fault');
const host = `${name}.e2e.test`;

before(async () => {
  nodes = await labNodes();
  const found = nodes.find((node) => node.name === SPARE_NODE);
  assert.ok(found, `the lab has ${SPARE_NODE}`);
  victim = found;
  survivors = nodes.filter((node) => node !== victim);
  await createService({ name, host, replicas: REPLICAS });
  await routesEverywhere();
});

after(async () => {
  await removeService(name);
});

/** Every edge routes the service to exactly the tasks Swarm runs, and the controller agrees. */
async function routesEverywhere(): Promise<void> {
  const tasks = (await runningTasks(name)).filter((task) => task.state.startsWith('Running'));
  for (const node of nodes)
    await waitForTasksThrough(
      node,
      host,
      tasks.map((task) => task.name),
      90_000,
    );
  await edgesInSync(nodes.length);
  const routed = (await controllerStatus()).services.find((service) => service.name === name)?.routedTasks;
  assert.equal(routed, tasks.length, `the controller routes ${name} to its ${tasks.length} running tasks`);
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

/** The edge's own health answer (127.0.0.1:8081 inside its container). */
async function edgeHealth(node: string): Promise<{
  status: string;
  applied: { version: number } | null;
  applyFailure: { code: string; errno?: string } | null;
  fallback: string | null;
}> {
  const container = await edgeContainer(node);
  return JSON.parse(
    await docker([
      'exec',
      node,
      'docker',
      'exec',
      container,
      'curl',
      '-sS',
      '-m',
      '5',
      'http://127.0.0.1:8081/healthz',
    ]),
  ) as never;
}

/** Ids of the edge tasks Swarm has made on a node (a crash loop adds one per restart; Swarm keeps the last five). */
async function edgeTasksOn(node: string): Promise<Set<string>> {
  const rows = await inNode(await manager(), [
    'service',
    'ps',
    '--no-trunc',
    '--filter',
    `node=${node}`,
    '--format',
    '{{.ID}}',
    EDGE_SERVICE,
  ]);
  return new Set(rows.split('\n').filter(Boolean));
}

function after_(report: LoadReport, node: string, fromMs: number): Sample[] {
  return report.samples.filter((sample) => sample.node === node && sample.at >= fromMs);
}

/**
 * Through one node's edge after the fault: how long it answered nothing good (first failure → first success after
 * it) and the failures once it served again (none is the claim).
 */
function outage(samples: readonly Sample[]): { downMs: number; failedDuring: number; failedAfter: Sample[] } {
  const ok = (sample: Sample): boolean => sample.status >= 200 && sample.status < 300;
  const firstFailure = samples.findIndex((sample) => !ok(sample));
  if (firstFailure < 0) return { downMs: 0, failedDuring: 0, failedAfter: [] };
  const back = samples.findIndex((sample, index) => index > firstFailure && ok(sample));
  const end = back < 0 ? samples.length : back;
  const during = samples.slice(firstFailure, end);
  return {
    downMs: (samples[end]?.at ?? samples.at(-1)?.at ?? 0) - (samples[firstFailure]?.at ?? 0),
    failedDuring: during.filter((sample) => !ok(sample)).length,
    failedAfter: back < 0 ? [] : samples.slice(back).filter((sample) => !ok(sample)),
  };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Steady load through every node's edge, stopped when the test ends even if it fails (its timer would hold the run). */
function loadDuring(t: TestContext, maxSeconds: number): LoadRun {
  const load = startLoad(nodes, host, { ratePerNode: RATE_PER_NODE, maxSeconds });
  let report: Promise<LoadReport> | null = null;
  const stop = (): Promise<LoadReport> => (report ??= load.stop());
  t.after(stop);
  return { startedAt: load.startedAt, samples: () => load.samples(), stop };
}

test('the edge’s volume corrupted: the edge starts on 503, takes the current bundle, no crash loop', async (t) => {
  const load = loadDuring(t, 150);
  await sleep(2000);
  const tasksBefore = await edgeTasksOn(victim.name);
  const container = await edgeContainer(victim.name);
  const dir = `${await inNode(victim.name, ['volume', 'inspect', '--format', '{{.Mountpoint}}', EDGE_VOLUME])}`;
  // Bytes flipped in the config nginx would load, and a half-written peers file: what a torn write or a bad
  // disk leaves. Then the edge crashes (SIGKILL) and Swarm starts a new one on the same volume.
  await shInNode(
    victim.name,
    `set -e; cd '${dir}/current'; head -c "$(wc -c < nginx.conf)" /dev/urandom > nginx.conf; ` +
      `head -c 20 peers.txt > peers.tmp && mv peers.tmp peers.txt`,
  );
  const faultAt = Date.now() - load.startedAt;
  await inNode(victim.name, ['kill', container]);
  await waitFor(
    `the new edge on ${victim.name} to serve ${host}`,
    async () => ((await request(victim.ip, host)).status === 200 ? true : undefined),
    { timeoutMs: 90_000, intervalMs: 100 },
  );
  const servedMs = Date.now() - load.startedAt - faultAt;
  const logs = await logLinesInNode(
    victim.name,
    await edgeContainer(victim.name),
    'the saved bundle is damaged',
  ).catch((error: unknown) => String(error));
  await routesEverywhere();
  await sleep(2000);
  const report = await load.stop();
  const tasksAfter = await edgeTasksOn(victim.name);

  const survivorsAll = summarize(report.samples.filter((sample) => sample.node !== victim.name));
  const onVictim = outage(after_(report, victim.name, faultAt));
  t.diagnostic(`through ${survivors.map((node) => node.name).join(', ')}: ${describe(survivorsAll)}`);
  t.diagnostic(
    `through ${victim.name}: no answer for ${(onVictim.downMs / 1000).toFixed(1)} s (${onVictim.failedDuring} failed while its edge restarted), served again ${(servedMs / 1000).toFixed(1)} s after the crash; ${onVictim.failedAfter.length} failed after that`,
  );
  const replacements = [...tasksAfter].filter((id) => !tasksBefore.has(id));
  t.diagnostic(`edge tasks on ${victim.name}: ${replacements.length} new since the crash`);
  assert.match(logs, /the saved bundle is damaged/, 'the new edge found the damage instead of loading it');
  assert.equal(replacements.length, 1, 'one replacement edge task, no crash loop');
  assert.equal(report.unanswered, 0);
  assert.equal(survivorsAll.failed, 0, `other nodes lost nothing: ${describe(survivorsAll)}`);
  assert.deepEqual(onVictim.failedAfter, [], `once the new edge served, it failed nothing`);
});

test('the edge’s volume full: scaling still routes on that node, the bundle is saved once there is room', async (t) => {
  const load = loadDuring(t, 200);
  await sleep(2000);
  const container = await edgeContainer(victim.name);
  const pid = await inNode(victim.name, ['inspect', '--format', '{{.State.Pid}}', container]);
  // The edge's state directory, as the edge sees it, replaced by a small filesystem holding the same files and
  // filled to the last byte: every write the edge makes gets ENOSPC. (From the node, inside the edge's mount
  // namespace; the volume itself is untouched underneath and comes back with the unmount.)
  const inEdge = (script: string): Promise<string> =>
    shInNode(victim.name, `nsenter -t ${pid} -m sh -c '${script}'`);
  await inEdge(
    `set -e; rm -rf /tmp/sg-e2e-state.copy; mkdir /tmp/sg-e2e-state.copy; cp -a ${EDGE_STATE_DIR}/. /tmp/sg-e2e-state.copy/; ` +
      `mount -t tmpfs -o size=8m sg-e2e-full ${EDGE_STATE_DIR}; cp -a /tmp/sg-e2e-state.copy/. ${EDGE_STATE_DIR}/; ` +
      `rm -rf /tmp/sg-e2e-state.copy; dd if=/dev/zero of=${EDGE_STATE_DIR}/sg-e2e-filler bs=64k 2>/dev/null || true`,
  );
  let mounted = true;
  const unmount = async (): Promise<void> => {
    if (!mounted) return;
    await inEdge(`umount ${EDGE_STATE_DIR}`);
    mounted = false;
  };
  t.after(unmount);
  const free = await inEdge(`df -k ${EDGE_STATE_DIR} | tail -1`);
  t.diagnostic(`${victim.name}'s edge state directory now: ${free.replace(/\s+/g, ' ')}`);

  const before = new Set((await runningTasks(name)).map((task) => task.name));
  const scaledAt = Date.now() - load.startedAt;
  const scaled = await scale(name, REPLICAS + 2);
  const added = scaled.map((task) => task.name).filter((task) => !before.has(task));
  assert.equal(added.length, 2);
  // The new tasks answer through the full edge too: their addresses went to nginx from memory.
  await waitForTasksThrough(victim, host, added, 60_000);
  const routedMs = Date.now() - load.startedAt - scaledAt;
  const health = await waitFor(
    `${victim.name}'s edge to report the failed save`,
    async () => {
      const answer = await edgeHealth(victim.name);
      return answer.applyFailure ? answer : undefined;
    },
    { timeoutMs: 30_000, intervalMs: 250 },
  );
  t.diagnostic(
    `while full: new tasks answered through ${victim.name} ${(routedMs / 1000).toFixed(1)} s after the scale; edge health ${health.status}, ${health.applyFailure?.code} (${health.applyFailure?.errno})`,
  );
  assert.equal(health.status, 'degraded');
  assert.equal(health.applyFailure?.errno, 'ENOSPC');
  const edgeView = (await controllerStatus()).edges.find((edge) => edge.edge === victim.name);
  assert.equal(edgeView?.inSync, false, 'the controller shows the full edge behind, not applied');

  await sleep(3000);
  const freedAt = Date.now();
  await unmount();
  await edgesInSync(nodes.length, 120_000);
  const savedMs = Date.now() - freedAt;
  await routesEverywhere();
  const report = await load.stop();
  const afterHealth = await edgeHealth(victim.name);
  const all = summarize(report.samples);
  t.diagnostic(`space again: ${victim.name}'s edge saved the bundle ${(savedMs / 1000).toFixed(1)} s later`);
  t.diagnostic(`whole run, all edges: ${describe(all)}`);
  assert.equal(afterHealth.status, 'ok');
  assert.equal(report.unanswered, 0);
  assert.equal(all.failed, 0, `a full volume cost no request: ${describe(all)}`);
  await scale(name, REPLICAS);
  await routesEverywhere();
});

/** The controller's log from now on, with a way to wait for a line (for killing it at a chosen moment). */
function followLog(
  node: string,
  container: string,
): { waitFor(pattern: RegExp): Promise<void>; stop(): void } {
  const child = spawn('docker', ['exec', node, 'docker', 'logs', '-f', '--since', '0s', container], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let text = '';
  const waiters: { pattern: RegExp; resolve: () => void }[] = [];
  const onData = (chunk: Buffer): void => {
    text += chunk.toString('utf8');
    for (const waiter of [...waiters])
      if (waiter.pattern.test(text)) {
        waiters.splice(waiters.indexOf(waiter), 1);
        waiter.resolve();
      }
  };
  child.stdout.on('data', onData);
  child.stderr.on('data', onData);
  return {
    waitFor: (pattern) =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no log line ${pattern} within 30 s`)), 30_000);
        waiters.push({
          pattern,
          resolve: () => {
            clearTimeout(timer);
            resolve();
          },
        });
        onData(Buffer.alloc(0));
      }),
    stop: () => child.kill(),
  };
}

test('the controller killed (SIGKILL) during a publish: versions move forward, every edge routes the change', async (t) => {
  const load = loadDuring(t, 240);
  await sleep(2000);
  const rounds = [
    // The label change is on its way through discovery and nginx -t when the kill lands.
    { moment: 'right after the change', killAfter: null },
    // The new version is published and the edges' held polls are being answered when the kill lands.
    { moment: 'at "published config bundle"', killAfter: /published config bundle/ },
  ] as const;
  const hosts = [host];
  for (const [index, round] of rounds.entries()) {
    const versionBefore = (await controllerStatus()).config?.version ?? 0;
    const { node, container } = await controllerContainer();
    const log = followLog(node, container);
    const extra = `r${index}.${host}`;
    hosts.push(extra);
    // A host added by label: the service's tasks are not restarted, the bundle's shape changes (a full publish).
    const update = `docker service update --detach --label-add VIRTUAL_HOST=${hosts.join(',')} ${name}`;
    if (round.killAfter) {
      await shInNode(node, update);
      await log.waitFor(round.killAfter);
      await inNode(node, ['kill', '--signal', 'KILL', container]);
    } else {
      // In one shell on the controller's node (every lab node is a manager): no round trip between the two.
      await shInNode(node, `${update} >/dev/null && docker kill --signal KILL ${container}`);
    }
    log.stop();
    const lastWords = (await inNode(node, ['logs', '--tail', '3', container]).catch(() => ''))
      .split('\n')
      .map((line) => /"msg":"([^"]*)"/.exec(line)?.[1] ?? line.slice(0, 80))
      .join(' | ');
    const killedAt = Date.now();
    for (const node of nodes)
      await waitFor(
        `${extra} to be served through ${node.name}`,
        async () => ((await request(node.ip, extra)).status === 200 ? true : undefined),
        { timeoutMs: 120_000, intervalMs: 100 },
      );
    const servedMs = Date.now() - killedAt;
    const status = await edgesInSync(nodes.length);
    const versionAfter = status.config?.version ?? 0;
    t.diagnostic(
      `kill ${round.moment} (its last log lines: ${lastWords}): ${extra} served through every edge ${(servedMs / 1000).toFixed(1)} s after the kill; version ${versionBefore} → ${versionAfter}`,
    );
    assert.ok(versionAfter > versionBefore, `the version moved forward (${versionBefore} → ${versionAfter})`);
    // In sync means the same bundle as the new controller's; an edge may hold it under the version the killed
    // controller gave it (same bytes), never under one from before the change.
    for (const edge of status.edges)
      assert.ok(
        (edge.applied?.version ?? 0) > versionBefore,
        `${edge.edge} applied a version after ${versionBefore}: ${edge.applied?.version}`,
      );
  }
  await routesEverywhere();
  const report = await load.stop();
  const all = summarize(report.samples);
  t.diagnostic(`whole run, all edges: ${describe(all)}`);
  assert.equal(report.unanswered, 0);
  assert.equal(all.failed, 0, `the controller's death cost no request: ${describe(all)}`);
});

/** How the managers see a manager node's raft membership: `reachable` once it has rejoined. */
async function reachability(node: string): Promise<string> {
  return inNode(await manager(), [
    'node',
    'inspect',
    '--format',
    '{{.ManagerStatus.Reachability}}',
    node,
  ]).catch(() => '');
}

test('dockerd restarted on a node (what a reboot does to its tasks): its edge comes back on its saved bundle, the rest serve on', async (t) => {
  // node3 stays a manager: the other two keep quorum while it restarts. Demoting it first (as most edges run on
  // workers) and promoting it after is what a reboot of a worker would look like, but the lab's engine (26.1) then
  // panics in a loop on "tocommit(N) is out of range [lastIndex(0)]" (moby/moby#29180) and the next test finds no
  // engine on node3. The edge sees the same fault either way: every container on the node stops and starts again.
  t.after(async () => {
    await waitFor(
      `${victim.name} to be a reachable manager again`,
      async () => ((await reachability(victim.name)) === 'reachable' ? true : undefined),
      { timeoutMs: 120_000, intervalMs: 500 },
    );
  });
  const load = loadDuring(t, 240);
  await sleep(3000);
  const restartAt = Date.now() - load.startedAt;
  // SIGTERM, as `systemctl restart docker` does: every container on the node stops, the engine starts again with
  // its state and rejoins (the lab runs it under a restart loop, as systemd does).
  await shInNode(victim.name, 'pkill -TERM -x dockerd');
  await waitFor(
    `the engine on ${victim.name} to stop`,
    async () =>
      (await shInNode(victim.name, 'docker info >/dev/null 2>&1 && echo up || echo down')) === 'down'
        ? true
        : undefined,
    { timeoutMs: 60_000, intervalMs: 100 },
  );
  await waitFor(
    `the engine on ${victim.name} to answer again and Swarm to call it Ready`,
    async () => ((await swarmNodes()).get(victim.name)?.status === 'Ready' ? true : undefined),
    { timeoutMs: 120_000, intervalMs: 250 },
  );
  await waitFor(
    `the edge on ${victim.name} to serve ${host} again`,
    async () => ((await request(victim.ip, host)).status === 200 ? true : undefined),
    { timeoutMs: 120_000, intervalMs: 100 },
  );
  const servedMs = Date.now() - load.startedAt - restartAt;
  const logs = await logLinesInNode(
    victim.name,
    await edgeContainer(victim.name),
    'serving the last applied bundle',
  ).catch((error: unknown) => String(error));
  await waitFor(
    `${REPLICAS} running tasks of ${name}`,
    async () => {
      const running = (await runningTasks(name)).filter((task) => task.state.startsWith('Running'));
      return running.length === REPLICAS ? true : undefined;
    },
    { timeoutMs: 120_000, intervalMs: 500 },
  );
  await routesEverywhere();
  await sleep(2000);
  const report = await load.stop();
  const survivorsAll = summarize(
    report.samples.filter((sample) => sample.node !== victim.name && sample.at >= restartAt),
  );
  const onVictim = outage(after_(report, victim.name, restartAt));
  t.diagnostic(`through ${survivors.map((node) => node.name).join(', ')}: ${describe(survivorsAll)}`);
  t.diagnostic(
    `through ${victim.name}: no answer for ${(onVictim.downMs / 1000).toFixed(1)} s (${onVictim.failedDuring} failed while its engine restarted), served again ${(servedMs / 1000).toFixed(1)} s after the restart; after that: ${describe(summarize(report.samples.filter((sample) => sample.node === victim.name && sample.at >= restartAt + servedMs)))}`,
  );
  assert.match(logs, /serving the last applied bundle/, 'the edge came back on its saved bundle');
  assert.equal(report.unanswered, 0);
  assert.equal(survivorsAll.failed, 0, `other nodes lost nothing: ${describe(survivorsAll)}`);
  assert.deepEqual(onVictim.failedAfter, [], 'once its edge served again, it failed nothing');
});

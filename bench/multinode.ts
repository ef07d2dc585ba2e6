// swarmgate on several nodes, measured (issue 13): a nested Swarm of three managers (scripts/lab-nodes.sh), bounded
// open-loop load through every node's edge (HTTP only to the nodes' bridge addresses), and five scenarios:
//
//   1. convergence across nodes: task running (Swarm's clock) → first request it serves through each edge;
//   2. zero failed requests while scaling 6→12→2 and during `update --force` (stop-first, start-first);
//   3. the controller restarted (`docker kill` of its container), moved to another manager (an update that excludes
//      its node) and force-updated, under load; each followed by a scale 6→3→6 while it is away;
//   4. a node holding tasks (not the controller) lost: its network cut, then `docker kill` of its node container;
//   5. the manager running the controller lost: routing updates resume; no new certificate order.
//
// Every wait is bounded and names what it waited for; each scenario has a time budget; the whole run stops itself
// after RUN_BUDGET_MS. Load is modest (20 requests/s per edge by default) so it finishes on a busy 2-core machine; the
// load averages are reported beside every figure, and so is the load generator's own CPU.
//
//   flock /tmp/swarmgate-daemon.lock timeout 900 npm run lab -- up
//   flock /tmp/swarmgate-daemon.lock timeout 2400 npm run bench:multinode [-- --rate 20 --only 1,2]
//
// It brings the nested nodes up when they are not (and then takes them down at the end), deploys the stack inside
// them when it is not deployed (and then removes it), and removes only the services it created.
import { execFile } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { describe as describeLoad, startLoad, summarize } from '../test/e2e-multinode/support/load.ts';
import type { LoadRun, Sample } from '../test/e2e-multinode/support/load.ts';
import {
  controllerContainer,
  controllerMetrics,
  controllerNode,
  controllerStatus,
  createService,
  deployStack,
  docker,
  edgesInSync,
  inNode,
  killNode,
  labNodes,
  manager,
  removeStack,
  restoreNodes,
  runningTasks,
  SPARE_NODE,
  STACK,
  swarmNodes,
  taskTimes,
  waitFor,
  waitForRunning,
} from '../test/e2e-multinode/support/nodes.ts';
import type { LabNode } from '../test/e2e-multinode/support/nodes.ts';
import { REPO_ROOT } from '../test/e2e/support/lab.ts';
import {
  closeMachineWindow,
  openMachineWindow,
  printTable,
  round2,
  sleep,
  summary,
  writeResult,
} from './support.ts';
import type { MachineWindow } from './support.ts';

function flag(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? (process.argv[i + 1] ?? fallback) : fallback;
}

const RATE = Number(flag('rate', '20'));
const ONLY = new Set(
  flag('only', '1,2,3,4,5')
    .split(',')
    .map((part) => Number(part.trim())),
);
const NODES = 3;
const ROUNDS = Number(flag('rounds', '3'));
const SLOW_MS = 500;
/** The whole run, below the 2,400 s the lock's `timeout` gives it, so cleanup still runs. */
const RUN_BUDGET_MS = 2_100_000;
/** Marks every service this benchmark creates inside the nested swarm (removed at the start and the end). */
const BENCH_LABEL = 'sg-bench-mn=1';
/**
 * A health check, so Swarm's "running" means the app listens (the backend is a Node process that needs a second or
 * more to start on busy cores). One probe every 2 s per task: cheap on three nested engines sharing 2 cores.
 */
const APP_EXTRA = [
  '--label',
  BENCH_LABEL,
  '--health-cmd',
  'bash -c "exec 3<>/dev/tcp/127.0.0.1/80"',
  '--health-interval',
  '2s',
  '--health-retries',
  '1',
  '--health-timeout',
  '2s',
  '--update-parallelism',
  '1',
  '--update-delay',
  '1s',
];
const CONTROLLER = `${STACK}_controller`;
const NODE_IMAGE = process.env.SWARMGATE_LAB_NODE_IMAGE ?? 'swarmgate-lab-node:dev';

// --- what the run is doing now, and the load on the machine -------------------------------------------------
let current = 'starting';
function step(what: string): void {
  current = what;
  console.log(`[multinode ${new Date().toISOString().slice(11, 19)}] ${what}`);
}

function omit(row: Record<string, unknown>, keys: readonly string[]): Record<string, unknown> {
  return Object.fromEntries(Object.entries(row).filter(([key]) => !keys.includes(key)));
}

function seconds(ms: number): number {
  return Math.round(ms / 100) / 10;
}

/** Runs `body` within `budgetMs`; on overrun the error names what the scenario was waiting for. */
async function within<T>(name: string, budgetMs: number, body: () => Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const overrun = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(new Error(`${name} exceeded its ${budgetMs / 1000} s budget while waiting for: ${current}`)),
      budgetMs,
    );
  });
  try {
    return await Promise.race([body(), overrun]);
  } finally {
    clearTimeout(timer);
  }
}

function runCommand(command: string, args: string[], timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(command, args, { timeout: timeoutMs, maxBuffer: 8 * 1024 * 1024 }, (error, stdout, stderr) => {
      if (error) reject(new Error(`${command} ${args.join(' ')} failed: ${stderr.trim() || error.message}`));
      else resolve(`${stdout}${stderr}`);
    });
  });
}

// --- load helpers -----------------------------------------------------------------------------------------
/** ms since the load started → wall clock. */
function wall(load: LoadRun, sample: Sample): number {
  return load.startedAt + sample.at;
}

/** Waits until each task has answered through each edge in requests sent at or after `sinceWall`; returns
 * task → edge → wall time of the first such request. */
function firstServed(
  load: LoadRun,
  edges: readonly LabNode[],
  tasks: readonly string[],
  sinceWall: number,
  what: string,
  timeoutMs = 120_000,
): Promise<Map<string, Map<string, number>>> {
  step(`${what}: ${tasks.length} task(s) to answer through ${edges.map((edge) => edge.name).join(', ')}`);
  return waitFor(
    `${tasks.length} task(s) to answer through every edge (${what})`,
    async () => {
      const first = new Map<string, Map<string, number>>();
      for (const sample of load.samples()) {
        if (!sample.task || !tasks.includes(sample.task)) continue;
        const at = wall(load, sample);
        if (at < sinceWall) continue;
        const perEdge = first.get(sample.task) ?? new Map<string, number>();
        first.set(sample.task, perEdge);
        if (!perEdge.has(sample.node)) perEdge.set(sample.node, at);
      }
      const done = tasks.every((task) => edges.every((edge) => first.get(task)?.has(edge.name)));
      return done ? first : undefined;
    },
    { timeoutMs, intervalMs: 250 },
  );
}

function lastOf(first: Map<string, Map<string, number>>): number {
  return Math.max(...[...first.values()].flatMap((perEdge) => [...perEdge.values()]));
}

/** Failed/total, slow share, p99 of the samples sent in [from, to) (wall clock). */
function loadFigures(load: LoadRun, samples: readonly Sample[], from = -Infinity, to = Infinity) {
  const inside = samples.filter((sample) => wall(load, sample) >= from && wall(load, sample) < to);
  const figures = summarize(inside, SLOW_MS);
  return {
    requests: figures.sent,
    failed: figures.failed,
    failures: figures.failures,
    slow: figures.slow,
    slowPercent: round2(figures.slowShare * 100),
    p99Ms: Math.round(figures.p99Ms),
    maxMs: Math.round(figures.maxMs),
    text: describeLoad(figures),
  };
}

// --- Swarm helpers ----------------------------------------------------------------------------------------
async function scaleDetached(service: string, replicas: number): Promise<void> {
  // A surviving manager may be electing a leader just after a manager's loss: retried until accepted.
  await waitFor(
    `a manager to accept \`service scale ${service}=${replicas}\``,
    async () => {
      await inNode(await manager(), ['service', 'scale', '--detach', `${service}=${replicas}`], {
        timeoutMs: 15_000,
      });
      return true;
    },
    { timeoutMs: 60_000, intervalMs: 1000 },
  );
}

async function scaleTo(service: string, replicas: number): Promise<void> {
  step(`scale ${service} to ${replicas}`);
  await scaleDetached(service, replicas);
  step(`${service} to have ${replicas} running tasks`);
  await waitForRunning(service, replicas, 240_000);
}

async function updateStatus(service: string): Promise<{ state: string; startedAt: string }> {
  const [state = '', startedAt = ''] = (
    await inNode(await manager(), [
      'service',
      'inspect',
      '--format',
      '{{if .UpdateStatus}}{{.UpdateStatus.State}} {{.UpdateStatus.StartedAt}}{{end}}',
      service,
    ])
  ).split(' ');
  return { state, startedAt };
}

/**
 * `service update --force` and its end: an update that started after the command (its StartedAt differs from the
 * one before, which may be an earlier update's "completed") and completed.
 */
async function forceUpdate(service: string, timeoutMs = 300_000): Promise<void> {
  const before = await updateStatus(service);
  await inNode(await manager(), ['service', 'update', '--detach', '--force', service]);
  step(`the forced update of ${service} to complete`);
  await waitFor(
    `the forced update of ${service} to complete`,
    async () => {
      const now = await updateStatus(service);
      if (now.startedAt === before.startedAt) return undefined;
      if (/paused|rollback/.test(now.state)) throw new Error(`the update of ${service} is ${now.state}`);
      return now.state === 'completed' ? true : undefined;
    },
    { timeoutMs, intervalMs: 1000 },
  );
}

async function removeBenchServices(): Promise<void> {
  const node = await manager();
  const ids = (await inNode(node, ['service', 'ls', '-q', '--filter', `label=${BENCH_LABEL}`]))
    .split('\n')
    .filter(Boolean);
  if (ids.length > 0) await inNode(node, ['service', 'rm', ...ids]);
}

async function app(name: string, replicas: number, extra: readonly string[] = []): Promise<string> {
  step(`create ${name} with ${replicas} replicas`);
  await createService({ name, host: `${name}.bench.test`, replicas, extra: [...APP_EXTRA, ...extra] });
  return `${name}.bench.test`;
}

/** The app answers through every edge given, from every one of its running tasks. */
async function servedEverywhere(service: string, host: string, edges: readonly LabNode[]): Promise<void> {
  const tasks = (await runningTasks(service)).map((task) => task.name);
  const probe = startLoad(edges, host, { ratePerNode: RATE, maxSeconds: 90 });
  try {
    await firstServed(probe, edges, tasks, probe.startedAt, `${service} ready`, 90_000);
  } finally {
    await probe.stop();
  }
}

/** Controller milestones after an event, polled every second until `stop()`: ms after `since`. */
function watchController(since: number, oldTask: string, victim?: string) {
  const milestones = new Map<string, number>();
  let polling = true;
  const mark = (what: string): void => {
    if (!milestones.has(what)) milestones.set(what, Date.now() - since);
  };
  const poller = (async () => {
    while (polling && Date.now() - since < 300_000) {
      try {
        if (victim && (await swarmNodes()).get(victim)?.status === 'Down') mark(`Swarm marks ${victim} down`);
        const tasks = await runningTasks(CONTROLLER);
        const fresh = tasks.filter((task) => task.name !== oldTask && task.node !== victim);
        if (fresh.length > 0) mark('new controller task scheduled');
        const running = fresh.find((task) => task.state.startsWith('Running'));
        if (running) {
          mark('new controller task running (Swarm: healthy)');
          await controllerStatus();
          mark('new controller answers its status');
          if (!victim || milestones.has(`Swarm marks ${victim} down`)) return;
        }
      } catch {
        // a manager electing a leader, or the controller not answering yet: next round
      }
      await sleep(1000);
    }
  })();
  return {
    milestones,
    async stop(): Promise<Record<string, number>> {
      polling = false;
      await poller;
      return Object.fromEntries([...milestones].map(([what, ms]) => [what, seconds(ms)]));
    },
  };
}

interface OrderCounts {
  readonly attempts: number;
  readonly started: number;
  readonly failed: number;
  readonly succeeded: number;
  readonly certificates: number;
  readonly certificateAttempts: number;
}

/** ACME order counters of the running controller (its /metrics) and the certificates its status lists. */
async function orderCounts(): Promise<OrderCounts> {
  const text = await controllerMetrics();
  const counter = (result: string): number =>
    Number(
      new RegExp(`^swarmgate_acme_orders_total\\{result="${result}"\\} (\\d+)`, 'm').exec(text)?.[1] ?? NaN,
    );
  const status = await controllerStatus();
  const started = counter('started');
  const failed = counter('failed');
  return {
    // An order that fails before it reaches the CA (the multinode stack's ACME directory is a loopback URL) counts
    // as failed without ever being started: attempts are both.
    attempts: started + failed,
    started,
    failed,
    succeeded: counter('succeeded'),
    certificates: status.certificates.length,
    certificateAttempts: status.certificates.reduce((sum, certificate) => sum + certificate.attempts, 0),
  };
}

/** How many routing lags the running controller has observed (its histogram's count). */
async function routingLagCount(): Promise<number> {
  const text = await controllerMetrics();
  return Number(/^swarmgate_routing_lag_seconds_count (\d+)/m.exec(text)?.[1] ?? NaN);
}

// --- scenarios --------------------------------------------------------------------------------------------
const results: Record<string, unknown> = {};
const errors: Record<string, string> = {};
const checks: { check: string; ok: boolean; detail: string }[] = [];

async function convergence(nodes: readonly LabNode[]): Promise<void> {
  const name = 'sg-bench-mn-conv';
  const low = 2;
  const high = 6;
  const host = await app(name, low);
  await servedEverywhere(name, host, nodes);
  const lagCountBefore = await routingLagCount();
  const window = openMachineWindow();
  const load = startLoad(nodes, host, { ratePerNode: RATE, maxSeconds: 600 });
  const lags: number[] = [];
  const perEdge = new Map(nodes.map((node) => [node.name, [] as number[]]));
  const spread: Record<string, number>[] = [];
  try {
    await sleep(2000);
    for (let round = 0; round < ROUNDS; round++) {
      const before = new Set((await taskTimes(name)).map((task) => task.id));
      const since = Date.now();
      await scaleTo(name, high);
      const fresh = (await taskTimes(name)).filter((task) => !before.has(task.id));
      spread.push(
        Object.fromEntries(
          nodes.map((node) => [node.name, fresh.filter((t) => t.node === node.name).length]),
        ),
      );
      const first = await firstServed(
        load,
        nodes,
        fresh.map((task) => task.name),
        since,
        `round ${round + 1}`,
      );
      for (const task of fresh) {
        for (const node of nodes) {
          const lag = ((first.get(task.name)?.get(node.name) ?? NaN) - task.since) / 1000;
          lags.push(lag);
          perEdge.get(node.name)?.push(lag);
        }
      }
      await scaleTo(name, low);
      await sleep(2000);
    }
  } finally {
    await load.stop();
  }
  // The status keeps the last 200 lags: the ones this run added are the tail, as many as the counter grew by.
  const added = (await routingLagCount()) - lagCountBefore;
  const lagsAfter =
    ((await controllerStatus()) as unknown as { routingLagSeconds?: number[] }).routingLagSeconds ?? [];
  const routed = added > 0 ? lagsAfter.slice(-added) : [];
  const machine = closeMachineWindow(window);
  const rows = [
    { what: 'task running → routed (controller publishes)', ...summary(routed) },
    { what: 'task running → first request through an edge (all)', ...summary(lags) },
    ...nodes.map((node) => ({
      what: `  … through ${node.name}'s edge`,
      ...summary(perEdge.get(node.name) ?? []),
    })),
  ].map((row) => ({
    what: row.what,
    samples: row.n,
    'p50 s': row.p50,
    'p95 s': row.p95,
    'max s': row.max,
  }));
  printTable(
    `1. Convergence across ${nodes.length} nodes (${low}→${high}→${low} × ${ROUNDS}, ${RATE} req/s per edge; ` +
      `resolution ~${((high / RATE) * 1000).toFixed(0)} ms per task per edge; load avg ${machine.loadStart}→max ${machine.loadMax}, ` +
      `load generator ${machine.benchCpuPercent} % of a core)`,
    rows,
  );
  results.convergence = {
    replicas: { low, high },
    rounds: ROUNDS,
    newTasksPerNode: spread,
    routedSeconds: summary(routed),
    servedSeconds: summary(lags),
    servedSecondsPerEdge: Object.fromEntries([...perEdge].map(([edge, values]) => [edge, summary(values)])),
    routedLags: routed,
    servedLags: lags,
    machine,
  };
  await inNode(await manager(), ['service', 'rm', name]);
}

async function zeroFailed(nodes: readonly LabNode[]): Promise<void> {
  const name = 'sg-bench-mn-zd';
  const host = await app(name, 6);
  await servedEverywhere(name, host, nodes);
  const rows: Record<string, unknown>[] = [];
  const zeroRows: Record<string, unknown>[] = [];
  results.zeroFailed = zeroRows;
  const acts: { name: string; prepare?: () => Promise<void>; act: () => Promise<void> }[] = [
    {
      name: 'scale 6→12→2',
      act: async () => {
        await scaleTo(name, 12);
        await sleep(3000);
        await scaleTo(name, 2);
      },
    },
    {
      name: 'update --force, 6 replicas, stop-first',
      prepare: async () => {
        await scaleTo(name, 6);
        await servedEverywhere(name, host, nodes);
        await inNode(await manager(), [
          'service',
          'update',
          '--detach',
          '--update-order',
          'stop-first',
          name,
        ]);
      },
      act: () => forceUpdate(name),
    },
    {
      name: 'update --force, 6 replicas, start-first',
      prepare: async () => {
        await inNode(await manager(), [
          'service',
          'update',
          '--detach',
          '--update-order',
          'start-first',
          name,
        ]);
        await servedEverywhere(name, host, nodes);
      },
      act: () => forceUpdate(name),
    },
  ];
  for (const scenario of acts) {
    step(`2. ${scenario.name}: prepare`);
    await scenario.prepare?.();
    const window = openMachineWindow();
    const load = startLoad(nodes, host, { ratePerNode: RATE, maxSeconds: 420 });
    let acted = 0;
    try {
      await sleep(3000);
      const start = Date.now();
      step(`2. ${scenario.name}`);
      await scenario.act();
      acted = Date.now() - start;
      await sleep(3000);
    } finally {
      const report = await load.stop();
      const figures = loadFigures(load, report.samples);
      const machine = closeMachineWindow(window);
      rows.push({
        scenario: scenario.name,
        failed: `${figures.failed}/${figures.requests}`,
        'slow %': figures.slowPercent,
        'p99 ms': figures.p99Ms,
        'max ms': figures.maxMs,
        failures: JSON.stringify(figures.failures),
        'action s': seconds(acted),
        'load avg (start/max/end)': `${machine.loadStart}/${machine.loadMax}/${machine.loadEnd}`,
        'gen CPU %': machine.benchCpuPercent,
      });
      checks.push({
        check: `${scenario.name}: 0 failed`,
        ok: figures.failed === 0 && report.unanswered === 0,
        detail: figures.text,
      });
      zeroRows.push({ scenario: scenario.name, actionSeconds: seconds(acted), ...figures, machine });
    }
  }
  printTable(`2. Zero failed requests across ${nodes.length} nodes (${RATE} req/s through each edge)`, rows);
  await inNode(await manager(), ['service', 'rm', name]);
}

/**
 * A controller event under load; right after it a scale 6→3 (its removed tasks stop while the controller may be
 * away) and 3→6: routing updates have resumed when the re-added tasks answer through every edge.
 */
async function controllerEvent(
  label: string,
  name: string,
  host: string,
  edges: readonly LabNode[],
  event: () => Promise<void>,
  victim?: string,
): Promise<Record<string, unknown>> {
  const six = (await runningTasks(name)).map((task) => task.name);
  const oldTask =
    (await runningTasks(CONTROLLER)).find((task) => task.state.startsWith('Running'))?.name ?? '';
  const oldNode = await controllerNode();
  const leader = (
    await inNode(await manager(), ['node', 'ls', '--format', '{{.Hostname}} {{.ManagerStatus}}'])
  )
    .split('\n')
    .find((row) => row.endsWith(' Leader'))
    ?.split(' ')[0];
  const window = openMachineWindow();
  const load = startLoad(edges, host, { ratePerNode: RATE, maxSeconds: 400 });
  try {
    await sleep(3000);
    step(`${label}: the event`);
    const at = Date.now();
    await event();
    const watch = watchController(at, oldTask, victim);
    // The scale-down is meant to happen while no controller runs: after the old task stopped (a lost node's
    // controller is gone with it).
    let oldStopped: number | undefined;
    if (!victim) {
      step(`${label}: the old controller task to stop`);
      const oldId = oldTask.split('.').at(-1) ?? '';
      oldStopped = await waitFor(
        'the old controller task to stop',
        async () => {
          const state = await inNode(await manager(), ['inspect', '--format', '{{.Status.State}}', oldId]);
          return state === 'running' ? undefined : Date.now() - at;
        },
        { timeoutMs: 90_000, intervalMs: 250 },
      );
    }
    await scaleTo(name, 3);
    const downAt = Date.now() - at;
    const three = (await runningTasks(name)).map((task) => task.name);
    await scaleTo(name, 6);
    const sixAgain = await taskTimes(name);
    const added = sixAgain.filter((task) => !three.includes(task.name));
    const addedRunning = Math.max(...added.map((task) => task.since)) - at;
    const first = await firstServed(
      load,
      edges,
      added.map((task) => task.name),
      at,
      `${label}: routing updates resume`,
      180_000,
    );
    const resumed = lastOf(first) - at;
    step(`${label}: the new controller to answer`);
    await waitFor(
      'the controller to answer its status after the event',
      async () => ((await controllerStatus()) ? true : undefined),
      { timeoutMs: 120_000, intervalMs: 1000 },
    );
    const milestones = await watch.stop();
    await sleep(2000);
    const report = await load.stop();
    const removed = new Set(six.filter((task) => !three.includes(task)));
    const lastRemoved = Math.max(
      -Infinity,
      ...report.samples
        .filter((sample) => sample.task && removed.has(sample.task) && wall(load, sample) >= at)
        .map((sample) => wall(load, sample) - at),
    );
    const after = loadFigures(load, report.samples, at);
    const before = loadFigures(load, report.samples, -Infinity, at);
    const troubled = report.samples
      .filter(
        (sample) =>
          wall(load, sample) >= at && (sample.ms > SLOW_MS || sample.status < 200 || sample.status >= 300),
      )
      .map((sample) => (wall(load, sample) - at) / 1000);
    return {
      scenario: label,
      controller: `${oldNode} → ${await controllerNode()}`,
      'raft leader before': leader ?? '?',
      ...(oldStopped === undefined ? {} : { 'old controller stopped s': seconds(oldStopped) }),
      ...milestones,
      'scale 6→3 done s': seconds(downAt),
      'removed task last served s': Number.isFinite(lastRemoved) ? seconds(lastRemoved) : 'never',
      're-added tasks running s': seconds(addedRunning),
      'routing updates resumed s': seconds(resumed),
      'resumed after task running s': seconds(resumed - addedRunning),
      failedAfter: `${after.failed}/${after.requests}`,
      failures: after.failures,
      slowPercentAfter: after.slowPercent,
      p99MsAfter: after.p99Ms,
      maxMsAfter: after.maxMs,
      troubledWindowS: troubled.length
        ? [Math.min(...troubled), Math.max(...troubled)].map((value) => round2(value))
        : [],
      beforeEvent: before.text,
      afterEvent: after.text,
      unanswered: report.unanswered,
      machine: closeMachineWindow(window),
    };
  } finally {
    await load.stop();
  }
}

function printController(title: string, rows: readonly Record<string, unknown>[]): void {
  printTable(
    title,
    rows.map((row) => {
      const machine = row.machine as MachineWindow;
      return {
        ...omit(row, ['machine', 'beforeEvent', 'afterEvent', 'failures', 'troubledWindowS']),
        failures: JSON.stringify(row.failures),
        'troubled s': JSON.stringify(row.troubledWindowS),
        'load avg (start/max/end)': `${machine.loadStart}/${machine.loadMax}/${machine.loadEnd}`,
      };
    }),
  );
  for (const row of rows) console.log(`  ${String(row.scenario)}: after the event ${String(row.afterEvent)}`);
}

async function controllerRestartAndMove(nodes: readonly LabNode[]): Promise<void> {
  const name = 'sg-bench-mn-ctl';
  const host = await app(name, 6);
  await servedEverywhere(name, host, nodes);
  const rows: Record<string, unknown>[] = [];
  rows.push(
    await controllerEvent('controller container killed', name, host, nodes, async () => {
      const { node, container } = await controllerContainer();
      await inNode(node, ['kill', container]);
    }),
  );
  step('3. edges in sync before the next event');
  await edgesInSync(nodes.length, 180_000);
  await servedEverywhere(name, host, nodes);
  // A real move: the controller's node is excluded, so Swarm must start it on another manager.
  const from = await controllerNode();
  const exclude = `node.hostname!=${from}`;
  rows.push(
    await controllerEvent(`controller moved off ${from} (update)`, name, host, nodes, async () => {
      await inNode(await manager(), [
        'service',
        'update',
        '--detach',
        '--constraint-add',
        exclude,
        CONTROLLER,
      ]);
    }),
  );
  step('3. edges in sync before the next event');
  await edgesInSync(nodes.length, 180_000);
  await servedEverywhere(name, host, nodes);
  // The stack's own placement again, which rolls the controller once more: a forced update.
  rows.push(
    await controllerEvent('controller update --force', name, host, nodes, async () => {
      await inNode(await manager(), [
        'service',
        'update',
        '--detach',
        '--force',
        '--constraint-rm',
        exclude,
        CONTROLLER,
      ]);
    }),
  );
  step('3. edges in sync after the controller events');
  await edgesInSync(nodes.length, 180_000);
  printController(
    `3. Controller restart and move under load (${RATE} req/s through each edge; times after the event)`,
    rows,
  );
  for (const row of rows)
    checks.push({
      check: `${String(row.scenario)}: 0 failed`,
      ok: String(row.failedAfter).startsWith('0/') && row.unanswered === 0,
      detail: String(row.afterEvent),
    });
  results.controller = rows;
  await inNode(await manager(), ['service', 'rm', name]);
}

async function nodeLoss(nodes: readonly LabNode[]): Promise<void> {
  const name = 'sg-bench-mn-loss';
  const victim = nodes.find((node) => node.name === SPARE_NODE);
  if (!victim) throw new Error(`the lab has no ${SPARE_NODE}`);
  if ((await controllerNode()) === victim.name) throw new Error(`the controller runs on ${victim.name}`);
  const survivors = nodes.filter((node) => node !== victim);
  const host = await app(name, 6);
  const before = await taskTimes(name);
  const onVictim = before.filter((task) => task.node === victim.name).length;
  await servedEverywhere(name, host, survivors);
  const window = openMachineWindow();
  const load = startLoad(survivors, host, { ratePerNode: RATE, maxSeconds: 400 });
  let measured: Record<string, unknown> | undefined;
  try {
    await sleep(3000);
    step(`4. ${victim.name} cut off and killed`);
    const at = Date.now();
    await killNode(victim.name);
    step(`4. Swarm to mark ${victim.name} down`);
    const downMs = await waitFor(
      `Swarm to mark ${victim.name} down`,
      async () => ((await swarmNodes()).get(victim.name)?.status === 'Down' ? Date.now() - at : undefined),
      { timeoutMs: 120_000, intervalMs: 250 },
    );
    step(`4. 6 running tasks of ${name} on the surviving nodes`);
    const after = await waitFor(
      `6 running tasks of ${name} on the surviving nodes`,
      async () => {
        const tasks = (await taskTimes(name)).filter(
          (task) => task.state === 'running' && task.node !== victim.name,
        );
        return tasks.length === 6 ? tasks : undefined;
      },
      { timeoutMs: 180_000, intervalMs: 500 },
    );
    const replacements = after.filter((task) => !before.some((old) => old.id === task.id));
    const swarmFull = Math.max(0, ...replacements.map((task) => task.since - at));
    const first = await firstServed(
      load,
      survivors,
      replacements.map((task) => task.name),
      at,
      '4. replacements',
      120_000,
    );
    const routedFull = replacements.length ? lastOf(first) - at : 0;
    await sleep(3000);
    const report = await load.stop();
    const untilDown = loadFigures(load, report.samples, at, at + downMs);
    const afterDown = loadFigures(load, report.samples, at + downMs);
    const whole = loadFigures(load, report.samples, at);
    const slowAt = report.samples
      .filter((sample) => wall(load, sample) >= at && sample.ms > SLOW_MS)
      .map((sample) => (wall(load, sample) - at) / 1000);
    measured = {
      victim: victim.name,
      tasksOnVictim: `${onVictim} of 6`,
      'node down s': seconds(downMs),
      'replacements running s': seconds(swarmFull),
      'full capacity (routed everywhere) s': seconds(routedFull),
      failedAfterKill: `${whole.failed}/${whole.requests}`,
      failures: whole.failures,
      slowPercentAfterKill: whole.slowPercent,
      slowPercentUntilDown: untilDown.slowPercent,
      slowPercentAfterDown: afterDown.slowPercent,
      p99MsAfterKill: whole.p99Ms,
      maxMsAfterKill: whole.maxMs,
      slowWindowS: slowAt.length
        ? [Math.min(...slowAt), Math.max(...slowAt)].map((value) => round2(value))
        : [],
      untilDown: untilDown.text,
      afterDown: afterDown.text,
      unanswered: report.unanswered,
    };
  } finally {
    await load.stop();
  }
  const machine = closeMachineWindow(window);
  const row: Record<string, unknown> = { ...measured, machine };
  step(`4. ${victim.name} back (scripts/lab-nodes.sh up ${nodes.length})`);
  const restoreStart = Date.now();
  await restoreNodes(nodes.length, 420_000);
  await edgesInSync(nodes.length, 180_000);
  row['node back, edges in sync s'] = seconds(Date.now() - restoreStart);
  const rest = omit(row, ['machine', 'untilDown', 'afterDown', 'failures', 'slowWindowS']);
  printTable(
    `4. Node loss under load (${RATE} req/s through each surviving edge; times after the kill; load avg ${machine.loadStart}/${machine.loadMax}/${machine.loadEnd})`,
    [{ ...rest, failures: JSON.stringify(row.failures), 'slow s': JSON.stringify(row.slowWindowS) }],
  );
  console.log(`  kill → node down: ${String(row.untilDown)}`);
  console.log(`  node down → end:  ${String(row.afterDown)}`);
  checks.push({
    check: 'node loss: 0 failed on the surviving edges',
    ok: String(row.failedAfterKill).startsWith('0/') && row.unanswered === 0,
    detail: `${String(row.failedAfterKill)} failed, ${String(row.slowPercentAfterKill)} % slow`,
  });
  results.nodeLoss = row;
  await inNode(await manager(), ['service', 'rm', name]);
}

async function managerLoss(nodes: readonly LabNode[]): Promise<void> {
  const name = 'sg-bench-mn-mgr';
  const victimName = await controllerNode();
  const victim = nodes.find((node) => node.name === victimName);
  if (!victim) throw new Error(`the controller runs on ${victimName}, not a lab node`);
  const survivors = nodes.filter((node) => node !== victim);
  // The app runs on the survivors only: what is measured is the controller's absence, not a node's tasks lost.
  const host = await app(name, 6, ['--constraint', `node.hostname!=${victim.name}`]);
  await servedEverywhere(name, host, survivors);
  step('5. order counts before');
  const ordersBefore = await orderCounts();
  const row = await controllerEvent(
    `manager ${victim.name} (controller's node) killed`,
    name,
    host,
    survivors,
    () => killNode(victim.name),
    victim.name,
  );
  step('5. order counts after');
  const ordersAfter = await orderCounts();
  row.ordersBefore = ordersBefore;
  row.ordersAfter = ordersAfter;
  printController(
    `5. Manager loss with the controller on it (${RATE} req/s through each surviving edge; times after the kill)`,
    [row],
  );
  console.log(
    `  ACME order attempts: old controller ${ordersBefore.attempts} (started ${ordersBefore.started}, failed ${ordersBefore.failed}), ` +
      `new controller ${ordersAfter.attempts} (started ${ordersAfter.started}, failed ${ordersAfter.failed}); ` +
      `certificates listed ${ordersBefore.certificates} → ${ordersAfter.certificates}`,
  );
  // The new controller is a fresh process: every attempt its counters show was made after the move. No service here
  // asks for a certificate and the stack's ACME directory is loopback, so this shows that a move by itself starts no
  // order; that a moved controller serves an issued certificate without a new order is test/e2e/tls.test.ts (Pebble).
  checks.push({
    check: 'manager loss: the moved controller started no certificate order',
    ok: ordersAfter.attempts === 0 && ordersAfter.certificateAttempts === 0,
    detail: `new controller: ${ordersAfter.attempts} order attempt(s), ${ordersAfter.certificateAttempts} in its certificate status`,
  });
  checks.push({
    check: 'manager loss: routing updates resumed',
    ok: typeof row['routing updates resumed s'] === 'number',
    detail: `${String(row['routing updates resumed s'])} s after the kill`,
  });
  step(`5. ${victim.name} back (scripts/lab-nodes.sh up ${nodes.length})`);
  const restoreStart = Date.now();
  await restoreNodes(nodes.length, 420_000);
  await edgesInSync(nodes.length, 180_000);
  row['node back, edges in sync s'] = seconds(Date.now() - restoreStart);
  console.log(
    `  ${victim.name} back, all edges in sync after ${String(row['node back, edges in sync s'])} s`,
  );
  results.managerLoss = row;
  await inNode(await manager(), ['service', 'rm', name]);
}

// --- the run ----------------------------------------------------------------------------------------------
const runStart = Date.now();
const watchdog = setTimeout(() => {
  console.error(
    `\nmultinode: the run exceeded ${RUN_BUDGET_MS / 1000} s while waiting for: ${current}; stopping without cleanup ` +
      `(remove sg-bench-mn services and run \`bash scripts/lab-nodes.sh down\` by hand)`,
  );
  process.exit(2);
}, RUN_BUDGET_MS);
watchdog.unref();

let createdNodes = false;
let nodeImageExisted = true;
let deployedStack = false;
const runWindow = openMachineWindow();
try {
  step('the nested lab');
  const running = await labNodes().catch(() => [] as LabNode[]);
  const swarm = running.length >= NODES ? await swarmNodes().catch(() => undefined) : undefined;
  const ready = running.filter((node) => swarm?.get(node.name)?.status === 'Ready').length;
  if (running.length < NODES || ready < NODES) {
    const existed =
      (
        await docker([
          'ps',
          '-aq',
          '--filter',
          'label=swarmgate.lab=1',
          '--filter',
          'label=swarmgate.lab.role=node',
        ])
      ).length > 0;
    const imageExisted = await docker(['image', 'inspect', '--format', '{{.Id}}', NODE_IMAGE])
      .then(() => true)
      .catch(() => false);
    step(
      `the nested lab is not up (${running.length} node(s) running, ${ready} Ready): bringing it up with ` +
        `\`bash scripts/lab-nodes.sh up ${NODES}\`${existed ? '' : '; it is taken down at the end'}`,
    );
    console.log(
      await runCommand(
        'bash',
        [path.join(REPO_ROOT, 'scripts', 'lab-nodes.sh'), 'up', String(NODES)],
        900_000,
      ),
    );
    createdNodes = !existed;
    nodeImageExisted = imageExisted;
  } else {
    // The images inside the nodes should be the host's (the lab builds them from this worktree): say if not.
    for (const image of ['swarmgate:dev', 'swarmgate-test-backend:dev']) {
      const want = await docker(['image', 'inspect', '--format', '{{.Id}}', image]).catch(() => 'missing');
      for (const node of running) {
        const have = await inNode(node.name, ['image', 'inspect', '--format', '{{.Id}}', image]).catch(
          () => 'missing',
        );
        if (have !== want)
          console.log(
            `warning: ${image} in ${node.name} is not the host's: run \`bash scripts/lab-nodes.sh up ${NODES}\``,
          );
      }
    }
  }
  const nodes = await labNodes();
  if (nodes.length !== NODES) throw new Error(`expected ${NODES} lab nodes, found ${nodes.length}`);
  const stackThere =
    (await inNode(await manager(), ['service', 'ls', '-q', '--filter', `name=${CONTROLLER}`])) !== '';
  if (stackThere) {
    step(
      'the swarmgate stack is already deployed inside the nodes: using it as it is (not removed at the end)',
    );
  } else {
    step('deploying the swarmgate stack inside the nodes');
    deployedStack = true;
    await deployStack();
  }
  await removeBenchServices();
  step(`edges in sync; controller on ${await controllerNode()}`);
  await edgesInSync(nodes.length, 180_000);

  const scenarios: [number, string, number, (nodes: readonly LabNode[]) => Promise<void>][] = [
    [1, 'convergence', 420_000, convergence],
    [2, 'zero failed while scaling and updating', 600_000, zeroFailed],
    [3, 'controller restart and move', 600_000, controllerRestartAndMove],
    [4, 'node loss', 600_000, nodeLoss],
    [5, 'manager loss with the controller', 600_000, managerLoss],
  ];
  for (const [number, title, budget, body] of scenarios) {
    if (!ONLY.has(number)) continue;
    const started = Date.now();
    step(`scenario ${number}: ${title} (budget ${budget / 1000} s)`);
    try {
      await within(`scenario ${number} (${title})`, budget, () => body(nodes));
    } catch (error) {
      errors[title] = error instanceof Error ? error.message : String(error);
      console.error(`\nscenario ${number} (${title}) failed: ${errors[title]}`);
      // Later scenarios need three Ready nodes and no leftovers.
      await removeBenchServices().catch(() => undefined);
      await restoreNodes(NODES, 420_000).catch((restoreError: unknown) => {
        throw new Error(`the lab could not be restored after scenario ${number}: ${String(restoreError)}`);
      });
    }
    console.log(`scenario ${number}: ${seconds(Date.now() - started)} s`);
  }
} finally {
  step('cleanup');
  await removeBenchServices().catch((error: unknown) =>
    console.error(`removing bench services: ${String(error)}`),
  );
  if (deployedStack)
    await removeStack().catch((error: unknown) => console.error(`removing the stack: ${String(error)}`));
  if (createdNodes) {
    step('taking the nested nodes down (this run brought them up)');
    // The node image stays when it was there before this run.
    const down = ['down', ...(nodeImageExisted ? ['--keep-image'] : [])];
    await runCommand('bash', [path.join(REPO_ROOT, 'scripts', 'lab-nodes.sh'), ...down], 300_000).catch(
      (error: unknown) => console.error(String(error)),
    );
  }
}

const machine = closeMachineWindow(runWindow);
printTable(
  'Checks',
  checks.map((check) => ({ check: check.check, result: check.ok ? 'ok' : 'FAILED', detail: check.detail })),
);
for (const [title, message] of Object.entries(errors))
  console.log(`scenario "${title}" did not finish: ${message}`);
console.log(
  `\nrun time ${seconds(Date.now() - runStart)} s; load average (1 min) ${machine.loadStart} at the start, max ` +
    `${machine.loadMax}, ${machine.loadEnd} at the end (15 min: ${machine.load15End}); ${os.cpus().length} cores`,
);
writeResult('multinode', {
  nodes: NODES,
  managers: NODES,
  ratePerEdge: RATE,
  slowMs: SLOW_MS,
  runSeconds: seconds(Date.now() - runStart),
  machineLoad: machine,
  ...results,
  checks,
  errors,
});
clearTimeout(watchdog);
process.exit(Object.keys(errors).length === 0 ? 0 : 1);

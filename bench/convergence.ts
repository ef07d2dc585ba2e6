// Convergence on the lab: scale a backend 1→N under a steady request rate and measure, for each new task, Swarm's
// own "running" timestamp → the first request it serves through the edge; then scale N→1 and measure Swarm's
// time of the change (the service's UpdatedAt) → the last request a removed task serves. Then active health checks
// (issue 15): a task whose app starts failing its health path while it still accepts connections → the last request
// the edge sends it.
import {
  createService,
  deployStack,
  docker,
  removeService,
  request,
  serviceTasks,
  STACK,
  waitFor,
  waitForServiceRunning,
} from '../test/e2e/support/lab.ts';
import { startLoad } from './load.ts';
import {
  closeMachineWindow,
  openMachineWindow,
  printTable,
  SMOKE,
  sleep,
  summary,
  writeResult,
} from './support.ts';

const N = SMOKE ? 3 : 8;
const ROUNDS = SMOKE ? 1 : 3;
// Enough requests that each of N tasks is hit every few tens of ms, few enough to leave the 2 cores to Swarm.
const RATE = SMOKE ? 100 : 200;
const BACKEND = 'sg-bench-conv';
/**
 * With a health check, Swarm reports a task running once its app accepts connections (the backend is a Node
 * process that needs a second or two to start on 2 busy cores); without one, "running" only means the process was
 * started, and no proxy can serve a task before its app listens. One probe per second per task keeps the cost low.
 */
const HEALTH_CHECK = [
  '--health-cmd',
  'bash -c "exec 3<>/dev/tcp/127.0.0.1/80"',
  '--health-interval',
  '1s',
  '--health-retries',
  '1',
  '--health-timeout',
  '2s',
];
const HOST = 'conv.bench.test';

await deployStack();
/** The controller's own samples: task running → the first published config routing it. */
async function controllerLags(): Promise<number[]> {
  const container =
    (await docker(['ps', '-q', '--filter', `name=${STACK}_controller.`, '--filter', 'status=running'])).split(
      '\n',
    )[0] ?? '';
  const status = JSON.parse(await docker(['exec', container, 'swarmgate', 'status', '--json'])) as {
    routingLagSeconds?: number[];
  };
  return status.routingLagSeconds ?? [];
}
const lagsBefore = (await controllerLags()).length;
const machineWindow = openMachineWindow();
const upLags: number[] = [];
const downLags: number[] = [];
let neverServed = 0;
try {
  await removeService(BACKEND);
  await createService({ name: BACKEND, labels: { VIRTUAL_HOST: HOST }, replicas: 1, extra: HEALTH_CHECK });
  await waitFor(`${HOST} to answer`, async () => {
    const run = startLoad(HOST, 20, { maxSeconds: 1 });
    await sleep(300);
    return (await run.stop()).ok > 0 ? true : undefined;
  });
  for (let round = 0; round < ROUNDS; round++) {
    const load = startLoad(HOST, RATE);
    await sleep(1000);
    const before = new Set(
      (await serviceTasks(BACKEND)).filter((task) => task.desiredState === 'running').map((task) => task.id),
    );
    await docker(['service', 'scale', '--detach', `${BACKEND}=${N}`]);
    const running = await waitForServiceRunning(BACKEND, N, 180_000);
    await sleep(2000);
    await docker(['service', 'scale', '--detach', `${BACKEND}=1`]);
    // Swarm's own time of the desired-state change (the service spec update), not when our CLI call started.
    const scaleDownAt = Date.parse(
      JSON.parse(await docker(['service', 'inspect', '--format', '{{json .UpdatedAt}}', BACKEND])) as string,
    );
    await waitForServiceRunning(BACKEND, 1, 180_000);
    await sleep(2000);
    const report = await load.stop();
    const seen = (taskId: string): { first: number; last: number } | undefined =>
      [...report.tasks.entries()].find(([name]) => name.endsWith(taskId))?.[1];
    const keptId = (await serviceTasks(BACKEND)).find((task) => task.desiredState === 'running')?.id ?? '';
    for (const task of running) {
      const served = seen(task.id);
      if (!before.has(task.id)) {
        if (!served) neverServed++;
        else upLags.push((load.startedAt + served.first - task.since) / 1000);
      }
      if (task.id !== keptId && served)
        downLags.push(Math.max(0, (load.startedAt + served.last - scaleDownAt) / 1000));
    }
  }
} finally {
  await removeService(BACKEND);
}
// Active health checks: one of HEALTH_REPLICAS tasks turns unhealthy (its app answers 503 on the health path and
// keeps accepting connections, so only the health check can tell). Measured from the moment its flip was answered
// to the last request of the load it served; then it is made healthy again from inside its container.
const HEALTH_BACKEND = 'sg-bench-conv-health';
const HEALTH_HOST = 'health.conv.bench.test';
const HEALTH_REPLICAS = 3;
const HEALTH_INTERVAL_S = 1;
const healthLags: number[] = [];
try {
  await removeService(HEALTH_BACKEND);
  await createService({
    name: HEALTH_BACKEND,
    labels: {
      VIRTUAL_HOST: HEALTH_HOST,
      'swarmgate.healthcheck.path': '/health',
      'swarmgate.healthcheck.interval': `${HEALTH_INTERVAL_S}s`,
    },
    replicas: HEALTH_REPLICAS,
    extra: HEALTH_CHECK,
  });
  await waitFor(`${HEALTH_HOST} to answer from every task`, async () => {
    const run = startLoad(HEALTH_HOST, 50, { maxSeconds: 2 });
    await sleep(1500);
    return (await run.stop()).tasks.size === HEALTH_REPLICAS ? true : undefined;
  });
  for (let round = 0; round < ROUNDS; round++) {
    const load = startLoad(HEALTH_HOST, RATE);
    await sleep(1500);
    const flip = await request(HEALTH_HOST, '/health/fail', { method: 'POST' });
    const flippedAt = Date.now();
    const failing = (JSON.parse(flip.body) as { task: string }).task;
    await sleep(HEALTH_INTERVAL_S * 4000);
    const report = await load.stop();
    const served = report.tasks.get(failing);
    if (served) healthLags.push(Math.max(0, (load.startedAt + served.last - flippedAt) / 1000));
    // Healthy again, from inside its own container (the edge no longer sends it anything).
    // The backend's task name is Swarm's {{.Task.Name}}, which is also its container's task-name label.
    const container = (
      await docker(['ps', '-q', '--filter', `label=com.docker.swarm.task.name=${failing}`])
    ).split('\n')[0];
    if (container)
      await docker([
        'exec',
        container,
        'node',
        '-e',
        "fetch('http://127.0.0.1/health/ok', { method: 'POST' }).then((r) => process.exit(r.ok ? 0 : 1))",
      ]);
    await sleep(HEALTH_INTERVAL_S * 3000);
  }
} finally {
  await removeService(HEALTH_BACKEND);
}
const health = summary(healthLags);
const machine = closeMachineWindow(machineWindow);

const routedLags = (await controllerLags()).slice(lagsBefore);
const routed = summary(routedLags);
const up = summary(upLags);
const down = summary(downLags);
printTable(`Convergence (1→${N}→1, ${ROUNDS} round(s), ${RATE} requests/s)`, [
  {
    direction: 'scale up: task running → routed (controller publishes)',
    samples: routed.n,
    'p50 s': routed.p50,
    'p95 s': routed.p95,
    'max s': routed.max,
    target: '',
  },
  {
    direction: 'scale up: task running → first request served',
    samples: up.n,
    'p50 s': up.p50,
    'p95 s': up.p95,
    'max s': up.max,
    target: 'p95 ≤ 1 s',
  },
  {
    direction: 'scale down: desired state change → last request served',
    samples: down.n,
    'p50 s': down.p50,
    'p95 s': down.p95,
    'max s': down.max,
    target: 'p95 ≤ 0.5 s',
  },
  {
    direction: `health check (every ${HEALTH_INTERVAL_S} s) failing → last request served`,
    samples: health.n,
    'p50 s': health.p50,
    'p95 s': health.p95,
    'max s': health.max,
    target: `≤ 2 intervals (${2 * HEALTH_INTERVAL_S} s)`,
  },
]);
if (neverServed > 0) console.log(`\n${neverServed} new task(s) served no request before the scale-down`);
console.log(
  `\nmachine: load average ${machine.loadStart} at the start, ${machine.loadMax} at most, ${machine.loadEnd} at the end; ` +
    `this bench (load generator included) used ${machine.benchCpuPercent} % of one core`,
);
writeResult('convergence', {
  replicas: N,
  rounds: ROUNDS,
  ratePerSecond: RATE,
  routedSeconds: routed,
  upSeconds: up,
  downSeconds: down,
  healthCheckSeconds: health,
  healthCheckIntervalSeconds: HEALTH_INTERVAL_S,
  neverServed,
  machine,
  routedLags,
  upLags,
  downLags,
  healthLags,
});

// Zero failed requests: a steady request rate through the edge while Swarm scales and rolls the backend and while
// the controller restarts. Every non-2xx and every socket error is counted. The backend has a health check (a TCP
// connect to its port), as the README recommends, so Swarm's "running" means its app listens; scaling and updating
// are measured again without one, where Swarm calls a task running before its app listens and the edge's balancer
// must cover the gap (refused tries moved on, a lone task waited for). Two more scenarios are measured without a
// target: the gaps no proxy can avoid on one node (one replica updated stop-first, the edge itself restarting).
import {
  createService,
  deployStack,
  docker,
  removeService,
  STACK,
  waitFor,
  waitForServiceRunning,
} from '../test/e2e/support/lab.ts';
import { startLoad } from './load.ts';
import type { LoadReport } from './load.ts';
import { printTable, SMOKE, sleep, writeResult } from './support.ts';

const RATE = SMOKE ? 50 : 250;
const SETTLE_MS = SMOKE ? 1000 : 3000;
const BACKEND = 'sg-bench-zd';
const HOST = 'zd.bench.test';

interface Scenario {
  readonly name: string;
  readonly target: 'zero' | 'measured';
  /** A health check on the backend (the realistic case), or none (tasks routed before their app listens). */
  readonly healthCheck: boolean;
  readonly replicas: number;
  readonly order: 'stop-first' | 'start-first';
  readonly act: () => Promise<void>;
}

async function updateDone(service: string): Promise<void> {
  await waitFor(
    `${service} update to complete`,
    async () => {
      const state = await docker([
        'service',
        'inspect',
        '--format',
        '{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}',
        service,
      ]);
      return state === 'completed' || state === '' ? true : undefined;
    },
    { timeoutMs: 180_000, intervalMs: 250 },
  );
}

async function scaleTo(replicas: number): Promise<void> {
  await docker(['service', 'scale', '--detach', `${BACKEND}=${replicas}`]);
  await waitForServiceRunning(BACKEND, replicas, 180_000);
}

// A TCP connect to the app's port: cheap (no Node process per probe on busy cores) and true once it listens.
const HEALTH_CHECK = [
  '--health-cmd',
  'bash -c "exec 3<>/dev/tcp/127.0.0.1/80"',
  '--health-interval',
  '500ms',
  '--health-timeout',
  '2s',
  '--health-retries',
  '3',
  '--health-start-period',
  '30s',
];

const backendScenarios: Omit<Scenario, 'healthCheck'>[] = [
  {
    name: 'scale 1→8→1',
    target: 'zero',
    replicas: 1,
    order: 'stop-first',
    act: async () => {
      await scaleTo(SMOKE ? 3 : 8);
      await sleep(SETTLE_MS);
      await scaleTo(1);
    },
  },
  {
    name: 'update --force, 3 replicas, stop-first',
    target: 'zero',
    replicas: 3,
    order: 'stop-first',
    act: async () => {
      await docker(['service', 'update', '--detach', '--force', BACKEND]);
      await updateDone(BACKEND);
    },
  },
  {
    name: 'update --force, 1 replica, start-first',
    target: 'zero',
    replicas: 1,
    order: 'start-first',
    act: async () => {
      await docker(['service', 'update', '--detach', '--force', BACKEND]);
      await updateDone(BACKEND);
    },
  },
];

const scenarios: Scenario[] = [
  ...backendScenarios.map((scenario) => ({ ...scenario, healthCheck: true })),
  ...backendScenarios.map((scenario) => ({ ...scenario, healthCheck: false })),
  {
    name: 'controller restart',
    healthCheck: true,
    target: 'zero',
    replicas: 2,
    order: 'stop-first',
    act: async () => {
      await docker(['service', 'update', '--detach', '--force', `${STACK}_controller`]);
      await updateDone(`${STACK}_controller`);
      await waitForServiceRunning(`${STACK}_controller`, 1);
    },
  },
  {
    name: 'update --force, 1 replica, stop-first',
    healthCheck: false,
    target: 'measured',
    replicas: 1,
    order: 'stop-first',
    act: async () => {
      await docker(['service', 'update', '--detach', '--force', BACKEND]);
      await updateDone(BACKEND);
    },
  },
  {
    name: 'edge restart (one node)',
    healthCheck: false,
    target: 'measured',
    replicas: 2,
    order: 'stop-first',
    act: async () => {
      await docker(['service', 'update', '--detach', '--force', `${STACK}_edge`]);
      await updateDone(`${STACK}_edge`);
    },
  },
];

function failures(report: LoadReport): number {
  return (
    Object.values(report.non2xx).reduce((a, b) => a + b, 0) +
    Object.values(report.errors).reduce((a, b) => a + b, 0)
  );
}

await deployStack();
const results: Record<string, unknown>[] = [];
try {
  for (const scenario of scenarios) {
    await removeService(BACKEND);
    await waitFor('the old backend to go', async () =>
      (await docker(['service', 'ls', '-q', '--filter', `name=${BACKEND}`])) === '' ? true : undefined,
    );
    await createService({
      name: BACKEND,
      labels: { VIRTUAL_HOST: HOST },
      replicas: scenario.replicas,
      extra: [
        '--update-order',
        scenario.order,
        '--update-parallelism',
        '1',
        '--update-delay',
        '1s',
        ...(scenario.healthCheck ? HEALTH_CHECK : []),
      ],
    });
    await waitFor(`${HOST} to answer`, async () => {
      const run = startLoad(HOST, 20, { maxSeconds: 1 });
      await sleep(300);
      const report = await run.stop();
      return report.ok > 0 && failures(report) === 0 && report.tasks.size === scenario.replicas
        ? true
        : undefined;
    });
    const load = startLoad(HOST, RATE);
    await sleep(SETTLE_MS);
    const started = Date.now();
    await scenario.act();
    const actedMs = Date.now() - started;
    await sleep(SETTLE_MS);
    const report = await load.stop();
    const failed = failures(report);
    const first = report.failureTimes.length ? Math.min(...report.failureTimes) : null;
    const last = report.failureTimes.length ? Math.max(...report.failureTimes) : null;
    results.push({
      scenario: scenario.name,
      'health check': scenario.healthCheck ? 'yes' : 'no',
      target: scenario.target === 'zero' ? '0' : 'measured',
      requests: report.sent,
      ok: report.ok,
      failed,
      non2xx: JSON.stringify(report.non2xx),
      errors: JSON.stringify(report.errors),
      'keepalive retries': report.keepaliveRetries,
      'failure window ms': first === null || last === null ? 0 : Math.round(last - first),
      'action s': actedMs / 1000,
    });
  }
} finally {
  await removeService(BACKEND);
}
printTable(`Zero failed requests at ${RATE} requests/s through the edge`, results);
writeResult('zero-downtime', { ratePerSecond: RATE, scenarios: results });

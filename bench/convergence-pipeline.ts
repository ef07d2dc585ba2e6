// Convergence without Docker: where the time goes between a task reaching running and an edge being offered a
// bundle that routes it. A fake Docker (a swarm of SERVICES services) and a fake edge long-polling the bundle store;
// for each sample a task of one service starts, turns running at a random moment, and the edge's poll answers.
// What remains on the lab is Swarm's own report, the edge's write and post to nginx, and the first request.
//   node bench/convergence-pipeline.ts [--smoke] [--fast-poll-ms 200]
import os from 'node:os';
import { performance } from 'node:perf_hooks';
import { readControllerConfig } from '../src/config.ts';
import { createLogger } from '../src/logger.ts';
import { BundleStore } from '../src/publish/bundle-store.ts';
import { systemClock } from '../src/reconcile/clock.ts';
import { Reconciler } from '../src/reconcile/reconciler.ts';
import { createTemplateRenderer } from '../src/render/nunjucks-env.ts';
import { FakeDocker, rawService, rawTask } from '../test/support/fake-docker.ts';
import { printTable, SMOKE, sleep, summary, writeResult } from './support.ts';

const SERVICES = SMOKE ? 50 : 500;
const SAMPLES = SMOKE ? 10 : 40;
const flag = process.argv.indexOf('--fast-poll-ms');
const config = readControllerConfig(flag > 0 ? { SWARMGATE_FAST_POLL: process.argv[flag + 1] ?? '' } : {});

const docker = new FakeDocker();
for (let s = 0; s < SERVICES; s++) {
  docker.services.push(rawService(`svc${s}`, { VIRTUAL_HOST: `svc${s}.example.com` }, { replicas: 2 }));
  for (let t = 0; t < 2; t++)
    docker.tasks.push(
      rawTask(`svc${s}-t${t}`, `svc${s}`, `10.1.${s % 250}.${t + 1 + 2 * Math.floor(s / 250)}`),
    );
}
const store = new BundleStore(systemClock);
// The controller takes its epoch from Swarm's Raft index; there is no Swarm here.
store.startEpoch(1);
const reconciler = new Reconciler(
  {
    docker,
    validator: { validate: async () => ({ ok: true }) },
    templates: createTemplateRenderer(),
    store,
    logger: createLogger('silent'),
    clock: systemClock,
  },
  {
    networks: ['swarmgate'],
    debounce: config.debounce,
    fastPollMs: config.fastPollMs,
    fastPollWindowMs: config.fastPollWindowMs,
    proxy: config.proxy,
    generator: 'bench',
  },
);
await reconciler.reconcileNow();

const offered: number[] = [];
const cpuBefore = process.cpuUsage();
const started = performance.now();
for (let i = 0; i < SAMPLES; i++) {
  const service = docker.services[i % SERVICES];
  const id = service?.ID ?? '';
  const replicas = service?.Spec?.Mode?.Replicated;
  if (!service?.Version || !replicas) throw new Error('bench swarm is malformed');
  // docker service scale: a new version, one more replica, a task that starts (not yet routable).
  replicas.Replicas = (replicas.Replicas ?? 0) + 1;
  service.Version.Index = (service.Version.Index ?? 0) + 1;
  const ip = `10.2.${Math.floor(i / 250)}.${(i % 250) + 1}`;
  const task = rawTask(`${id}-new${i}`, id, ip, { state: 'starting' });
  docker.tasks.push(task);
  reconciler.trigger('service:update');
  await sleep(300 + Math.random() * 400);
  // The edge is waiting with what it has.
  const current = store.current;
  const applied = current ? { version: current.version, fingerprint: current.fingerprint } : null;
  const report = { edge: 'e1', node: null, applied, rejected: null, reloads: 0, peerUpdates: 0 };
  if (task.Status) {
    task.Status.State = 'running';
    task.Status.Timestamp = new Date().toISOString();
  }
  const runningAt = performance.now();
  for (;;) {
    const bundle = await store.waitForBundle(report, 5000, AbortSignal.timeout(5000));
    if (!bundle) throw new Error(`task ${ip} was not offered within 5 s`);
    if (bundle.files['peers.txt']?.includes(` ${ip}:80`)) break;
    report.applied = { version: bundle.version, fingerprint: bundle.fingerprint };
  }
  offered.push(performance.now() - runningAt);
}
const seconds = (performance.now() - started) / 1000;
const cpu = process.cpuUsage(cpuBefore);
await sleep(config.fastPollMs * 2);
reconciler.stop();
await reconciler.idle();
const lag = summary(offered);
printTable(
  `Task running → bundle offered to a waiting edge (${SERVICES} services, fast poll ${config.fastPollMs} ms)`,
  [
    { measure: 'p50', value: lag.p50, unit: 'ms' },
    { measure: 'p95', value: lag.p95, unit: 'ms' },
    { measure: 'max', value: lag.max, unit: 'ms' },
    {
      measure: 'controller CPU while converging',
      value: ((cpu.user + cpu.system) / 1e6 / seconds) * 100,
      unit: '% of a core',
    },
    { measure: 'fast polls that rendered nothing', value: reconciler.stats.quietFastPolls, unit: '' },
  ],
);
console.log(
  `\nload average ${os
    .loadavg()
    .map((value) => value.toFixed(2))
    .join(' ')}`,
);
writeResult('convergence-pipeline', {
  services: SERVICES,
  fastPollMs: config.fastPollMs,
  offeredMs: lag,
  samples: offered,
  loadAverage: os.loadavg(),
});

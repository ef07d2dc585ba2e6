// Controller at scale: a synthetic swarm (2,000 services / 20,000 tasks, and 10,000 / 100,000) behind a stand-in
// Docker daemon (bench/fake-docker-daemon.ts, its own process, answering with JSON shaped and sized like dockerd's).
// Each scale runs in a fresh controller process, so peak RSS is that scale's. Measured: one reconcile through the
// real Docker adapter (snapshot → model → render → fingerprint; the first one cold, before the JIT), nginx -t on the
// result, peak RSS, a storm of 500 service events in one second (publishes, and whether the final config is right),
// and the controller's CPU while one service converges (the fast poll).
//   npm run bench:controller-scale [-- --smoke]
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { request } from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { fetchSnapshot } from '../src/discovery/snapshot.ts';
import { createLogger } from '../src/logger.ts';
import { buildRoutingModel } from '../src/model/routing-model.ts';
import { createNginxValidator } from '../src/nginx/nginx-validator.ts';
import { BundleStore } from '../src/publish/bundle-store.ts';
import { systemClock } from '../src/reconcile/clock.ts';
import { Reconciler } from '../src/reconcile/reconciler.ts';
import { createTemplateRenderer } from '../src/render/nunjucks-env.ts';
import { fingerprintBundle, PEERS_FILE, renderConfig } from '../src/render/render-config.ts';
import type { BundleFiles } from '../src/render/render-config.ts';
import { RenderCache } from '../src/render/block-cache.ts';
import { defaultProxySettings, readControllerConfig } from '../src/config.ts';
import { createDockerodeAdapter } from '../src/docker/dockerode-adapter.ts';
import { printTable, SMOKE, sleep, summary, writeResult } from './support.ts';

// nginx -t loads the ACME location's trusted certificate (the channel certificate): one that exists here.
const TRUSTED_CERT_FILE = path.resolve('test/fixtures/test-only.crt'); // npm runs benches from the repository

const SCALES = SMOKE ? [200, 1000] : [2000, 10_000];
const TASKS_PER_SERVICE = 10;
/** Old tasks Docker keeps per slot (task history): one rolling update's worth. */
const HISTORY_PER_SLOT = 1;
const STORM_EVENTS = SMOKE ? 50 : 500;
/**
 * Measured reconciles after the cold one: more than 12, so the list cache's safety net (each element parsed again
 * at least every 12th read) is inside the measured rounds, not after them.
 */
const ROUNDS = SMOKE ? 3 : 24;
/** nginx -t of the 10,000-service config takes most of a minute on 2 busy cores; item 2 of issue 17 covers it. */
const NGINX_TEST_MAX_SERVICES = 2000;

const servicesArg = process.argv.indexOf('--services');
if (servicesArg > 0) await measure(Number(process.argv[servicesArg + 1]));
else await main();

interface ScaleResult {
  services: number;
  tasks: number;
  taskListMiB: number;
  coldReconcileMs: number;
  reconcileMs: { n: number; p50: number; p95: number; max: number };
  /** CPU of the process per reconcile (GC threads included): what the wall time is on an idle machine. */
  reconcileCpuMs: { n: number; p50: number; p95: number; max: number };
  phasesMs: Record<string, { n: number; p50: number; p95: number; max: number }>;
  nginxTestMs: number | null;
  nginxTestOk: boolean | null;
  configBytes: number;
  peakRssMiB: number;
  /** The peak as it was when the measured reconciles ended, and when the storm had settled (where the peak is). */
  peakRssAfterRoundsMiB: number;
  peakRssAfterStormMiB: number;
  storm: {
    events: number;
    durationMs: number;
    settledMs: number;
    publishes: number;
    publishesPerSecond: number;
    finalCorrect: boolean;
  };
  fastPoll: { seconds: number; cpuShare: number; reconciles: number; tasksRead: number };
}

async function main(): Promise<void> {
  const results: ScaleResult[] = [];
  for (const services of SCALES) {
    const socket = path.join(os.tmpdir(), `sg-bench-docker-${process.pid}-${services}.sock`);
    const daemon = spawn(
      process.execPath,
      [
        path.join(import.meta.dirname, `fake-docker-daemon${path.extname(import.meta.filename)}`),
        socket,
        String(services),
        String(TASKS_PER_SERVICE),
        String(HISTORY_PER_SLOT),
      ],
      { stdio: ['ignore', 'pipe', 'inherit', 'ipc'] },
    );
    try {
      const ready = JSON.parse(await firstLine(daemon)) as { tasks: number; taskBytes: number };
      const controller = spawn(
        process.execPath,
        [
          ...process.execArgv,
          import.meta.filename,
          '--services',
          String(services),
          '--socket',
          socket,
          ...(SMOKE ? ['--smoke'] : []),
        ],
        { stdio: ['ignore', 'pipe', 'inherit'] },
      );
      const result = JSON.parse(await lastLine(controller)) as ScaleResult;
      results.push({ ...result, taskListMiB: Math.round(ready.taskBytes / 2 ** 20) });
    } finally {
      daemon.kill();
    }
  }
  const row = (measure: string, target: string, value: (result: ScaleResult) => unknown, unit = '') => ({
    measure,
    ...Object.fromEntries(results.map((result) => [`${result.services} / ${result.tasks}`, value(result)])),
    unit,
    target,
  });
  printTable('Controller at scale (services / running tasks)', [
    row("Docker's task list (all tasks, history included)", '', (r) => r.taskListMiB, 'MiB'),
    row('first reconcile (cold, before the JIT)', '', (r) => r.coldReconcileMs, 'ms'),
    row('reconcile p50', '≤ 1000', (r) => r.reconcileMs.p50, 'ms'),
    row('reconcile p95', '≤ 1000', (r) => r.reconcileMs.p95, 'ms'),
    row('reconcile CPU p50 (GC threads included)', '', (r) => r.reconcileCpuMs?.p50, 'ms'),
    ...['snapshot', 'model', 'render', 'fingerprint'].map((phase) =>
      row(`  ${phase} p50`, '', (r) => r.phasesMs[`${phase}Ms`]?.p50, 'ms'),
    ),
    row('nginx -t on the result', 'passes', (r) =>
      r.nginxTestMs === null
        ? 'not run'
        : `${Math.round(r.nginxTestMs)} ms, ${r.nginxTestOk ? 'passes' : 'FAILED'}`,
    ),
    row('config bundle', '', (r) => Math.round(r.configBytes / 1024), 'KiB'),
    row('peak RSS', '≤ 500', (r) => r.peakRssMiB, 'MiB'),
    row('  peak RSS when the measured reconciles ended', '', (r) => r.peakRssAfterRoundsMiB, 'MiB'),
    row('  peak RSS when the event storm had settled', '', (r) => r.peakRssAfterStormMiB, 'MiB'),
    row(`event storm: ${STORM_EVENTS} events in`, '', (r) => r.storm.durationMs, 'ms'),
    row('event storm: publishes until settled', '', (r) => r.storm.publishes),
    row('event storm: publishes per second', '≤ 2', (r) => r.storm.publishesPerSecond, '/s'),
    row('event storm: final config right', 'yes', (r) => (r.storm.finalCorrect ? 'yes' : 'NO')),
    row('one service converging: controller CPU', '', (r) => r.fastPoll.cpuShare * 100, '% of a core'),
    row(
      'one service converging: tasks read per second',
      '',
      (r) => r.fastPoll.tasksRead / r.fastPoll.seconds,
      '/s',
    ),
  ]);
  console.log(
    `\nload average ${os
      .loadavg()
      .map((value) => value.toFixed(2))
      .join(' ')}`,
  );
  writeResult('controller-scale', { loadAverage: os.loadavg(), scales: results });
}

function firstLine(child: ChildProcess): Promise<string> {
  return new Promise((resolve, reject) => {
    const lines = createInterface({ input: child.stdout! });
    lines.once('line', (line) => resolve(line));
    child.once('exit', (code) =>
      reject(new Error(`the fake Docker daemon exited (${code}) before it was ready`)),
    );
  });
}

function lastLine(child: ChildProcess): Promise<string> {
  return new Promise((resolve, reject) => {
    let last = '';
    createInterface({ input: child.stdout! }).on('line', (line) => (last = line));
    child.once('exit', (code) =>
      code === 0 ? resolve(last) : reject(new Error(`the measuring controller process exited with ${code}`)),
    );
  });
}

/** The kernel's high-water mark of this process's RSS: nothing between two samples is missed. */
function maxRssMiB(): number {
  return Math.round(process.resourceUsage().maxRSS / 1024);
}

function daemonCall(socket: string, pathAndQuery: string, method = 'POST'): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: socket, path: pathAndQuery, method }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk)).on('end', () => resolve(body));
    });
    req.on('error', reject);
    req.end();
  });
}

async function measure(services: number): Promise<void> {
  const socket = process.argv[process.argv.indexOf('--socket') + 1] ?? '';
  const docker = createDockerodeAdapter(socket);
  const templates = createTemplateRenderer();
  const signal = new AbortController().signal;
  const reconcileMs: number[] = [];
  const reconcileCpuMs: number[] = [];
  const phases = {
    snapshotMs: [] as number[],
    modelMs: [] as number[],
    renderMs: [] as number[],
    fingerprintMs: [] as number[],
  };
  let coldReconcileMs = 0;
  // In a holder, so the bench can let go of it before the storm (see below).
  const last: { bundle: BundleFiles } = { bundle: {} };
  // In a function of its own: its locals (the last round's files, the render cache holding slices of that round's
  // nginx.conf) are gone when it returns, and are no part of the storm's peak below (12 MB at 10,000 services, which
  // an async function's frame kept alive when the loop was inline).
  const rounds = async (): Promise<void> => {
    // Owned across rounds, as the reconciler owns its own: unchanged hosts' and services' blocks are reused.
    const blocks = new RenderCache();
    for (let round = 0; round <= ROUNDS; round++) {
      const cpu0 = process.cpuUsage();
      const t0 = performance.now();
      const snapshot = await fetchSnapshot(docker, signal);
      const t1 = performance.now();
      const model = buildRoutingModel(snapshot, { networks: ['swarmgate'] });
      const t2 = performance.now();
      const files = renderConfig(
        model,
        { proxy: { ...defaultProxySettings(), channelCertFile: TRUSTED_CERT_FILE }, generator: 'bench' },
        templates,
        undefined,
        blocks,
      );
      const t3 = performance.now();
      fingerprintBundle(files);
      const t4 = performance.now();
      last.bundle = files;
      if (round === 0) {
        coldReconcileMs = t4 - t0;
        continue;
      }
      reconcileMs.push(t4 - t0);
      const cpu = process.cpuUsage(cpu0);
      reconcileCpuMs.push((cpu.user + cpu.system) / 1000);
      phases.snapshotMs.push(t1 - t0);
      phases.modelMs.push(t2 - t1);
      phases.renderMs.push(t3 - t2);
      phases.fingerprintMs.push(t4 - t3);
    }
  };
  await rounds();

  const peakRssAfterRoundsMiB = maxRssMiB();
  let nginxTestMs: number | null = null;
  let nginxTestOk: boolean | null = null;
  if (services <= NGINX_TEST_MAX_SERVICES) {
    const validator = createNginxValidator(process.env.SWARMGATE_NGINX ?? 'nginx');
    const nginxStart = performance.now();
    const validation = await validator.validate(last.bundle, AbortSignal.timeout(120_000));
    nginxTestMs = performance.now() - nginxStart;
    nginxTestOk = validation.ok;
    if (!validation.ok) console.error(validation.output);
  }
  const configBytes = Object.values(last.bundle).reduce((sum, content) => sum + content.length, 0);
  // The bench's own copy of a bundle is no part of the controller's memory (11 MB at 10,000 services, held through
  // the storm below into the peak RSS).
  last.bundle = {};

  // The event storm, through the real reconcile loop (debounce, single flight, fingerprint, publish).
  const config = readControllerConfig({ SWARMGATE_CHANNEL_CERT_FILE: TRUSTED_CERT_FILE });
  const store = new BundleStore(systemClock);
  // The controller takes its epoch from Swarm's Raft index; the fake daemon here has none to give.
  store.startEpoch(1);
  const makeReconciler = (): Reconciler =>
    new Reconciler(
      {
        docker,
        validator: { validate: async () => ({ ok: true }) },
        templates,
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
  const reconciler = makeReconciler();
  await reconciler.reconcileNow();
  const publishesBefore = reconciler.stats.publishes;
  const stormStart = performance.now();
  // Events arrive on the wall clock whether or not a reconcile is busy: each tick emits every event due by then.
  let emitted = 0;
  while (emitted < STORM_EVENTS) {
    const due = Math.min(
      STORM_EVENTS,
      Math.floor(((performance.now() - stormStart) / 1000) * STORM_EVENTS) + 1,
    );
    for (; emitted < due; emitted++) {
      // Each event is a real change: one more task for some service.
      const service = `svc${String(emitted % services).padStart(5, '0')}`;
      await daemonCall(
        socket,
        `/bench/tasks?service=${service}&ip=10.200.${Math.floor(emitted / 256)}.${emitted % 256}`,
      );
      reconciler.trigger('service:update');
    }
    await sleep(1);
  }
  const stormEventsMs = performance.now() - stormStart;
  await sleep(config.debounce.maxMs + 200);
  await reconciler.idle();
  const stormPublishes = reconciler.stats.publishes - publishesBefore;
  const peakRssAfterStormMiB = maxRssMiB();
  const stormSettledMs = performance.now() - stormStart;
  const finalConfig = store.current?.files[PEERS_FILE] ?? '';
  const lastStormAddress = ` 10.200.${Math.floor((STORM_EVENTS - 1) / 256)}.${(STORM_EVENTS - 1) % 256}:80`;
  const finalCorrect = finalConfig.includes(lastStormAddress) && finalConfig.includes(' 10.200.0.0:80');

  // One service converging (a task starting): what the fast poll costs the controller until it is running.
  const stats = async (): Promise<{ tasksSent: number }> =>
    JSON.parse(await daemonCall(socket, '/bench/stats', 'GET')) as { tasksSent: number };
  await daemonCall(socket, '/bench/state?task=svc00001-t0&state=starting');
  reconciler.trigger('service:update');
  await sleep(config.debounce.maxMs + 100);
  await reconciler.idle();
  const tasksBefore = (await stats()).tasksSent;
  const reconcilesBefore = reconciler.stats.reconciles;
  const cpuBefore = process.cpuUsage();
  const fastStart = performance.now();
  await sleep(SMOKE ? 1000 : 3000);
  const cpu = process.cpuUsage(cpuBefore);
  const fastSeconds = (performance.now() - fastStart) / 1000;
  const fastPoll = {
    seconds: fastSeconds,
    cpuShare: (cpu.user + cpu.system) / 1e6 / fastSeconds,
    reconciles: reconciler.stats.reconciles - reconcilesBefore,
    tasksRead: (await stats()).tasksSent - tasksBefore,
  };
  reconciler.stop();
  await reconciler.idle();

  const result: Omit<ScaleResult, 'taskListMiB'> = {
    services,
    tasks: services * TASKS_PER_SERVICE,
    coldReconcileMs,
    reconcileMs: summary(reconcileMs),
    reconcileCpuMs: summary(reconcileCpuMs),
    phasesMs: Object.fromEntries(Object.entries(phases).map(([key, values]) => [key, summary(values)])),
    nginxTestMs,
    nginxTestOk,
    configBytes,
    peakRssMiB: maxRssMiB(),
    peakRssAfterRoundsMiB,
    peakRssAfterStormMiB,
    storm: {
      events: STORM_EVENTS,
      durationMs: stormEventsMs,
      settledMs: stormSettledMs,
      publishes: stormPublishes,
      publishesPerSecond: stormPublishes / (stormSettledMs / 1000),
      finalCorrect,
    },
    fastPoll,
  };
  console.log(JSON.stringify(result));
}

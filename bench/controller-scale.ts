// Controller at scale: a synthetic swarm of 2,000 services and 20,000 tasks behind a fake Docker port.
// Measures one reconcile (snapshot → model → render → fingerprint), nginx -t on the result, peak RSS, and a storm
// of 500 service events in one second: how many reloads, and whether the final config is right.
import path from 'node:path';
import { performance } from 'node:perf_hooks';
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
import { defaultProxySettings, readControllerConfig } from '../src/config.ts';
import type { RawService, RawTask } from '../src/docker/docker-port.ts';
import { FakeDocker, rawService, rawTask } from '../test/support/fake-docker.ts';
import { printTable, SMOKE, sleep, summary, writeResult } from './support.ts';

// nginx -t loads the ACME location's trusted certificate (the channel certificate): one that exists here.
const TRUSTED_CERT_FILE = path.resolve('test/fixtures/test-only.crt'); // npm runs benches from the repository

const SERVICES = SMOKE ? 200 : 2000;
const TASKS_PER_SERVICE = 10;
const STORM_EVENTS = SMOKE ? 50 : 500;
const ROUNDS = SMOKE ? 2 : 10;

/**
 * The test fake deep-copies every list it returns; a real Docker client hands over freshly parsed JSON instead. The
 * bench hands out the arrays as they are, so it measures swarmgate and not the copying.
 */
class SyntheticDocker extends FakeDocker {
  override async listServices(): Promise<RawService[]> {
    return this.services;
  }
  override async listTasks(): Promise<RawTask[]> {
    return this.tasks;
  }
}

function syntheticSwarm(): FakeDocker {
  const docker = new SyntheticDocker();
  for (let s = 0; s < SERVICES; s++) {
    const id = `svc${String(s).padStart(5, '0')}`;
    const labels: Record<string, string> = { VIRTUAL_HOST: `app${s}.bench.example.com` };
    if (s % 10 === 0) labels.VIRTUAL_PATH = '/api/';
    if (s % 10 === 0) labels.VIRTUAL_HOST = `shared${Math.floor(s / 100)}.bench.example.com`;
    docker.services.push(rawService(id, labels, { replicas: TASKS_PER_SERVICE }));
    for (let t = 0; t < TASKS_PER_SERVICE; t++) {
      const n = s * TASKS_PER_SERVICE + t;
      docker.tasks.push(
        rawTask(`${id}-t${t}`, id, `10.${Math.floor(n / 65536) + 1}.${Math.floor(n / 256) % 256}.${n % 256}`),
      );
    }
  }
  return docker;
}

let peakRss = 0;
const rssTimer = setInterval(() => (peakRss = Math.max(peakRss, process.memoryUsage().rss)), 20);

const docker = syntheticSwarm();
const stage = (name: string): void =>
  void (
    process.env.BENCH_DEBUG &&
    console.error(
      name,
      JSON.stringify(
        Object.fromEntries(
          Object.entries(process.memoryUsage()).map(([k, v]) => [k, Math.round(v / 2 ** 20)]),
        ),
      ),
    )
  );
stage('swarm built');
const templates = createTemplateRenderer();
const signal = new AbortController().signal;
const reconcileMs: number[] = [];
const phases = {
  snapshotMs: [] as number[],
  modelMs: [] as number[],
  renderMs: [] as number[],
  fingerprintMs: [] as number[],
};
let lastBundle: BundleFiles = {};
for (let round = 0; round < ROUNDS; round++) {
  const t0 = performance.now();
  const snapshot = await fetchSnapshot(docker, signal);
  const t1 = performance.now();
  const model = buildRoutingModel(snapshot, { networks: ['swarmgate'] });
  const t2 = performance.now();
  const files = renderConfig(
    model,
    { proxy: { ...defaultProxySettings(), channelCertFile: TRUSTED_CERT_FILE }, generator: 'bench' },
    templates,
  );
  const t3 = performance.now();
  fingerprintBundle(files);
  const t4 = performance.now();
  reconcileMs.push(t4 - t0);
  phases.snapshotMs.push(t1 - t0);
  phases.modelMs.push(t2 - t1);
  phases.renderMs.push(t3 - t2);
  phases.fingerprintMs.push(t4 - t3);
  lastBundle = files;
}

stage('after rounds');
const validator = createNginxValidator(process.env.SWARMGATE_NGINX ?? 'nginx');
const nginxStart = performance.now();
const validation = await validator.validate(lastBundle, AbortSignal.timeout(120_000));
const bundleBytes = Object.values(lastBundle).reduce((sum, content) => sum + content.length, 0);
const nginxTestMs = performance.now() - nginxStart;

stage('after nginx -t');
// The event storm, through the real reconcile loop (debounce, single flight, fingerprint, publish).
const config = readControllerConfig({ SWARMGATE_CHANNEL_CERT_FILE: TRUSTED_CERT_FILE });
const store = new BundleStore(systemClock);
// The controller takes its epoch from Swarm's Raft index; the fake daemon here has none to give.
store.startEpoch(1);
const reconciler = new Reconciler(
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
    const service = `svc${String(emitted % SERVICES).padStart(5, '0')}`;
    docker.tasks.push(
      rawTask(`${service}-storm${emitted}`, service, `10.200.${Math.floor(emitted / 256)}.${emitted % 256}`),
    );
    reconciler.trigger('service:update');
  }
  await sleep(1);
}
const stormEventsMs = performance.now() - stormStart;
await sleep(config.debounce.maxMs + 200);
await reconciler.idle();
reconciler.stop();
const stormReloads = reconciler.stats.publishes - publishesBefore;
const stormSettledMs = performance.now() - stormStart;
const finalConfig = store.current?.files[PEERS_FILE] ?? '';
const lastStormAddress = ` 10.200.${Math.floor((STORM_EVENTS - 1) / 256)}.${(STORM_EVENTS - 1) % 256}:80`;
const finalCorrect = finalConfig.includes(lastStormAddress) && finalConfig.includes('10.200.0.0:80');
stage('after storm');
clearInterval(rssTimer);
peakRss = Math.max(peakRss, process.memoryUsage().rss);

const reconcile = summary(reconcileMs);
const rows = [
  {
    measure: `reconcile p50 (${SERVICES} services, ${SERVICES * TASKS_PER_SERVICE} tasks)`,
    value: reconcile.p50,
    unit: 'ms',
    target: '≤ 300',
  },
  {
    measure: 'reconcile max (the first round runs cold, before the JIT)',
    value: reconcile.max,
    unit: 'ms',
    target: '',
  },
  { measure: '  snapshot p50', value: summary(phases.snapshotMs).p50, unit: 'ms', target: '' },
  { measure: '  model p50', value: summary(phases.modelMs).p50, unit: 'ms', target: '' },
  { measure: '  render p50', value: summary(phases.renderMs).p50, unit: 'ms', target: '' },
  { measure: '  fingerprint p50', value: summary(phases.fingerprintMs).p50, unit: 'ms', target: '' },
  {
    measure: `nginx -t on the result (${Math.round(bundleBytes / 1024)} KiB)`,
    value: nginxTestMs,
    unit: 'ms',
    target: validation.ok ? 'passes' : 'FAILED',
  },
  { measure: 'peak RSS', value: Math.round(peakRss / 2 ** 20), unit: 'MiB', target: '≤ 250' },
  { measure: `event storm: ${STORM_EVENTS} events in`, value: stormEventsMs, unit: 'ms', target: '' },
  { measure: 'event storm: reloads (publishes) until settled', value: stormReloads, unit: '', target: '' },
  {
    measure: 'event storm: reloads per second',
    value: stormReloads / (stormSettledMs / 1000),
    unit: '/s',
    target: '≤ 2',
  },
  { measure: 'event storm: final config right', value: finalCorrect ? 'yes' : 'NO', unit: '', target: 'yes' },
];
printTable('Controller at scale', rows);
writeResult('controller-scale', {
  services: SERVICES,
  tasks: SERVICES * TASKS_PER_SERVICE,
  reconcileMs: reconcile,
  phasesMs: Object.fromEntries(Object.entries(phases).map(([key, values]) => [key, summary(values)])),
  nginxTestMs,
  nginxTestOk: validation.ok,
  configBytes: bundleBytes,
  peakRssMiB: Math.round(peakRss / 2 ** 20),
  storm: {
    events: STORM_EVENTS,
    durationMs: stormEventsMs,
    settledMs: stormSettledMs,
    reloads: stormReloads,
    reloadsPerSecond: stormReloads / (stormSettledMs / 1000),
    finalCorrect,
  },
});
if (!validation.ok) console.error(validation.output);

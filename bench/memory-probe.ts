// Where the controller's memory goes at scale: the reconcile loop of bench/controller-scale.ts against the fake
// Docker daemon, then the live heap after a full GC (and, with --heap-snapshot FILE, a heap snapshot of it).
//   npm run -s build && node --expose-gc build/bench/memory-probe.js --services 10000 [--heap-snapshot FILE]
import { spawn } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { writeHeapSnapshot } from 'node:v8';
import { readFileSync } from 'node:fs';
import { request } from 'node:http';
import { createLogger } from '../src/logger.ts';
import { BundleStore } from '../src/publish/bundle-store.ts';
import { systemClock } from '../src/reconcile/clock.ts';
import { Reconciler } from '../src/reconcile/reconciler.ts';
import { createTemplateRenderer } from '../src/render/nunjucks-env.ts';
import { readControllerConfig } from '../src/config.ts';
import { createDockerodeAdapter } from '../src/docker/dockerode-adapter.ts';

const arg = (name: string): string | undefined => {
  const at = process.argv.indexOf(name);
  return at > 0 ? process.argv[at + 1] : undefined;
};
const services = Number(arg('--services') ?? '10000');
const rounds = Number(arg('--rounds') ?? '12');
const snapshotFile = arg('--heap-snapshot');
const gc = (globalThis as { gc?: () => void }).gc;

const socket = path.join(os.tmpdir(), `sg-probe-${process.pid}.sock`);
const daemon = spawn(
  process.execPath,
  [path.join(import.meta.dirname, 'fake-docker-daemon.js'), socket, String(services), '10', '1'],
  { stdio: ['ignore', 'pipe', 'inherit'] },
);
await new Promise<void>((resolve) => createInterface({ input: daemon.stdout }).once('line', () => resolve()));

const post = (pathAndQuery: string): Promise<void> =>
  new Promise((resolve, reject) => {
    const req = request({ socketPath: socket, path: pathAndQuery, method: 'POST' }, (res) => {
      res.resume();
      res.on('end', resolve);
    });
    req.on('error', reject);
    req.end();
  });

const smaps = (): Record<string, number> => {
  const out: Record<string, number> = {};
  let name = '';
  for (const line of readFileSync('/proc/self/smaps', 'utf8').split('\n')) {
    const head = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (head) name = head[1] || '[anon]';
    const rss = /^Rss:\s+(\d+) kB/.exec(line);
    if (rss) out[name] = (out[name] ?? 0) + Number(rss[1]);
  }
  return Object.fromEntries(
    Object.entries(out)
      .filter(([, kb]) => kb > 4096)
      .map(([key, kb]) => [key, Math.round(kb / 1024)]),
  );
};

try {
  const docker = createDockerodeAdapter(socket);
  const config = readControllerConfig({
    SWARMGATE_CHANNEL_CERT_FILE: path.resolve('test/fixtures/test-only.crt'),
  });
  const store = new BundleStore(systemClock);
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
      fastPollMs: 1e9,
      fastPollWindowMs: 0,
      proxy: config.proxy,
      generator: 'bench',
    },
  );
  const times: number[] = [];
  const cpus: number[] = [];
  for (let round = 0; round < rounds; round++) {
    // A real change each round: one more task for some service, so every reconcile publishes.
    await post(`/bench/tasks?service=svc${String(round % services).padStart(5, '0')}&ip=10.200.0.${round}`);
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    await reconciler.reconcileNow();
    times.push(Math.round(performance.now() - t0));
    const cpu = process.cpuUsage(cpu0);
    cpus.push(Math.round((cpu.user + cpu.system) / 1000));
  }
  gc?.();
  gc?.();
  const memory = process.memoryUsage();
  console.log(
    JSON.stringify({
      services,
      times,
      cpus,
      publishes: reconciler.stats.publishes,
      heapUsedMiB: Math.round(memory.heapUsed / 2 ** 20),
      externalMiB: Math.round(memory.external / 2 ** 20),
      rssMiB: Math.round(memory.rss / 2 ** 20),
      peakRssMiB: Math.round(process.resourceUsage().maxRSS / 1024),
      smapsMiB: smaps(),
      loadAverage: os.loadavg(),
    }),
  );
  if (snapshotFile) writeHeapSnapshot(snapshotFile);
  reconciler.stop();
} finally {
  daemon.kill();
}

// Quarantine cost at scale: N routed services and one that nginx -t refuses, through the real reconcile loop
// (fake Docker, real nginx -t). Counts nginx -t runs and reconcile time per step, and whether the step
// published. The bad service names a certificate whose PEM is damaged: the label grammar cannot see that, only
// nginx can, so it always goes through quarantine.
//   node bench/quarantine.ts [--services 1000] [--smoke]
import os from 'node:os';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import type { CertificateSource } from '../src/acme/certificate-manager.ts';
import { readControllerConfig } from '../src/config.ts';
import { createLogger } from '../src/logger.ts';
import { createNginxValidator } from '../src/nginx/nginx-validator.ts';
import type { NginxValidator } from '../src/nginx/nginx-validator.ts';
import { BundleStore } from '../src/publish/bundle-store.ts';
import { systemClock } from '../src/reconcile/clock.ts';
import { Reconciler } from '../src/reconcile/reconciler.ts';
import { createTemplateRenderer } from '../src/render/nunjucks-env.ts';
import { FakeDocker, rawService, rawTask } from '../test/support/fake-docker.ts';
import { BENCH_DIR, printTable, SMOKE } from './support.ts';

function flag(name: string, fallback: number): number {
  const index = process.argv.indexOf(`--${name}`);
  const value = index >= 0 ? Number(process.argv[index + 1]) : fallback;
  if (!Number.isInteger(value) || value < 1) throw new Error(`--${name} must be a positive integer`);
  return value;
}

const SERVICES = flag('services', SMOKE ? 50 : 1000);
const fixtures = new URL('../test/fixtures/', import.meta.url);
const good = {
  certificatePem: readFileSync(new URL('test-only.crt', fixtures), 'utf8'),
  privateKeyPem: readFileSync(new URL('test-only.key', fixtures), 'utf8'),
};
// A certificate the operator gave that nginx cannot load.
const damaged = {
  certificatePem: '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n',
  privateKeyPem: good.privateKeyPem,
};
const certificates: CertificateSource = {
  available: () => [
    { name: 'damaged', domains: ['bad.bench.test'], source: 'user' },
    { name: 'fine', domains: ['fine.bench.test'], source: 'user' },
  ],
  material: (name) => (name === 'damaged' ? damaged : name === 'fine' ? good : undefined),
  sync: () => undefined,
};

let nginxRuns = 0;
const real = createNginxValidator(process.env.SWARMGATE_NGINX ?? 'nginx');
const validator: NginxValidator = {
  validate(files, signal) {
    nginxRuns++;
    return real.validate(files, signal);
  },
};

const docker = new FakeDocker();
for (let i = 0; i < SERVICES; i++) {
  const name = `svc${String(i).padStart(5, '0')}`;
  docker.services.push(
    rawService(name, { VIRTUAL_HOST: `${name}.bench.test` }, { createdAt: '2026-01-01T00:00:00Z' }),
  );
  docker.tasks.push(rawTask(`${name}-t1`, name, `10.1.${Math.floor(i / 250)}.${(i % 250) + 1}`));
}

// nginx -t loads the pinned channel certificate the ACME location verifies the controller with; the repository's
// test certificate stands in for it.
const config = readControllerConfig({
  SWARMGATE_CHANNEL_CERT_FILE: new URL('../test/fixtures/test-only.crt', import.meta.url).pathname,
});
const store = new BundleStore(systemClock);
// The controller takes its epoch from Swarm's Raft index; there is no Swarm here.
store.startEpoch(1);
const reconciler = new Reconciler(
  {
    docker,
    validator,
    templates: createTemplateRenderer(),
    store,
    logger: createLogger('silent'),
    clock: systemClock,
    certificates,
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

const rows: Record<string, unknown>[] = [];
async function step(name: string, change: () => void): Promise<void> {
  change();
  const runsBefore = nginxRuns;
  const started = performance.now();
  await reconciler.reconcileNow();
  const outcome = reconciler.lastOutcome;
  rows.push({
    step: name,
    'nginx -t runs': nginxRuns - runsBefore,
    'reconcile ms': Math.round(performance.now() - started),
    ok: outcome?.ok ?? false,
    published: outcome?.published ?? false,
    routed: reconciler.currentModel.services.length,
    error: outcome?.error?.slice(0, 60) ?? '',
  });
  console.log(JSON.stringify(rows.at(-1)));
}

await step(`${SERVICES} services`, () => undefined);
await step('+ 1 bad service (damaged certificate)', () => {
  docker.services.push(
    rawService(
      'bad',
      { VIRTUAL_HOST: 'bad.bench.test', CERT_NAME: 'damaged' },
      { createdAt: '2026-02-01T00:00:00Z' },
    ),
  );
  docker.tasks.push(rawTask('bad-t1', 'bad', '10.2.0.1'));
});
await step('scale svc00000 (peers only)', () => {
  docker.tasks.push(rawTask('svc00000-t2', 'svc00000', '10.3.0.1'));
});
await step('scale svc00001 (peers only)', () => {
  docker.tasks.push(rawTask('svc00001-t2', 'svc00001', '10.3.0.2'));
});
await step('+ 1 good service (new shape)', () => {
  docker.services.push(
    rawService('late', { VIRTUAL_HOST: 'late.bench.test' }, { createdAt: '2026-03-01T00:00:00Z' }),
  );
  docker.tasks.push(rawTask('late-t1', 'late', '10.2.0.2'));
});
await step('+ 2nd bad service (damaged certificate)', () => {
  docker.services.push(
    rawService(
      'bad2',
      { VIRTUAL_HOST: 'bad2.bench.test', CERT_NAME: 'damaged' },
      { createdAt: '2026-03-02T00:00:00Z' },
    ),
  );
  docker.tasks.push(rawTask('bad2-t1', 'bad2', '10.2.0.3'));
});
reconciler.stop();

printTable(`Quarantine with ${SERVICES} services and a service nginx refuses`, rows);
const result = {
  benchmark: 'quarantine',
  machine: {
    date: new Date().toISOString(),
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model ?? 'unknown',
    node: process.version,
    smoke: SMOKE,
  },
  services: SERVICES,
  rows,
};
const dir = path.join(BENCH_DIR, 'results');
mkdirSync(dir, { recursive: true });
const label = process.env.BENCH_LABEL ? `-${process.env.BENCH_LABEL}` : '';
const file = path.join(dir, `quarantine${SMOKE ? '-smoke' : ''}${label}-latest.json`);
writeFileSync(file, JSON.stringify(result, null, 2));
console.log(`\nwritten: ${path.relative(process.cwd(), file)}`);

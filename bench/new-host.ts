// One new host at 2,000 hosts: where the time goes between "its task runs" and "every edge serves it". Renders 2,000
// HTTPS hosts, times the real host nginx -t on the whole config (with and without certificates, and on the changed
// server block alone), then a real nginx on loopback: how long a reload takes until the new host is served, and
// how long a certificate posted to the running nginx takes until the next handshake shows it. No Docker.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import tls from 'node:tls';
import type { Snapshot } from '../src/discovery/snapshot.ts';
import { BundleCache } from '../src/edge/bundle-cache.ts';
import { bundleCertificatesProblem } from '../src/render/certificate-pairs.ts';
import { earlyPost } from '../src/render/early-hosts-text.ts';
import { createNginxProcess } from '../src/edge/nginx-process.ts';
import { buildRoutingModel } from '../src/model/routing-model.ts';
import type { AvailableCertificate } from '../src/model/routing-model.ts';
import { createNginxValidator, runNginxTest } from '../src/nginx/nginx-validator.ts';
import { restrictModel } from '../src/reconcile/reconciler.ts';
import { createTemplateRenderer } from '../src/render/nunjucks-env.ts';
import { fingerprintBundle, renderConfig } from '../src/render/render-config.ts';
import type { BundleFiles, CertificateMaterial } from '../src/render/render-config.ts';
import {
  freePort,
  loopbackConf,
  loopbackSetup,
  NGINX_BINARY,
  REPO_LUA_DIR,
  startBackend,
  withConf,
  workerPids,
} from '../test/support/loopback-nginx.ts';
import { servicesSnapshot } from '../test/support/one-service.ts';
import { printTable, SMOKE, sleep, summary, writeResult } from './support.ts';

const HOSTS = SMOKE ? 200 : 2000;
const ROUNDS = SMOKE ? 1 : Number(process.env.BENCH_ROUNDS ?? 3);
const NEW_HOST = 'newcomer.bench.example.com';

// Every host gets the same ECDSA P-256 key pair (what the ACME adapter orders), each in its own files: nginx reads
// and parses every file on its own, so the cost per host is that of distinct certificates.
const fixtures = new URL('../test/fixtures/', import.meta.url);
const material: CertificateMaterial = {
  certificatePem: readFileSync(new URL('test-only.crt', fixtures), 'utf8'),
  privateKeyPem: readFileSync(new URL('test-only.key', fixtures), 'utf8'),
};

function snapshot(hosts: readonly string[], backendPort: number): Snapshot {
  return servicesSnapshot(
    hosts.map((host, index) => ({
      name: `svc${index}`,
      labels: { VIRTUAL_HOST: host, LETSENCRYPT_HOST: host, VIRTUAL_PORT: String(backendPort) },
      // The new host's task is the loopback backend; the others are never asked.
      ips: [host === NEW_HOST ? '127.0.0.1' : `10.1.${Math.floor(index / 256)}.${index % 256}`],
    })),
  );
}

const templates = createTemplateRenderer();
const proxyDir = await mkdtemp(path.join(os.tmpdir(), 'swarmgate-bench-newhost-'));
const setup = await loopbackSetup(proxyDir);
const backendPort = await freePort();
const backend = await startBackend('127.0.0.1', backendPort);
const hosts = Array.from({ length: HOSTS }, (_, index) => `app${index}.bench.example.com`);

function render(names: readonly string[], withCertificates: boolean): { files: BundleFiles; ms: number } {
  const available: AvailableCertificate[] = withCertificates
    ? names.map((name) => ({ name, domains: [name], source: 'acme' }))
    : [];
  const started = performance.now();
  const model = buildRoutingModel(snapshot(names, backendPort), {
    networks: ['swarmgate'],
    certificates: available,
  });
  const files = renderConfig(
    model,
    { proxy: setup.proxy, generator: 'bench', luaDir: REPO_LUA_DIR },
    templates,
    () => (withCertificates ? material : undefined),
  );
  return {
    files: withConf(files, loopbackConf(setup, files['nginx.conf'] ?? '')),
    ms: performance.now() - started,
  };
}

function renderOnly(names: readonly string[], only: string): BundleFiles {
  const available: AvailableCertificate[] = names.map((name) => ({ name, domains: [name], source: 'acme' }));
  const model = buildRoutingModel(snapshot(names, backendPort), {
    networks: ['swarmgate'],
    certificates: available,
  });
  const service = `svc${names.indexOf(only)}`;
  const files = renderConfig(
    restrictModel(model, new Set([service])),
    { proxy: setup.proxy, generator: 'bench', luaDir: REPO_LUA_DIR },
    templates,
    () => material,
  );
  return withConf(files, loopbackConf(setup, files['nginx.conf'] ?? ''));
}

const validator = createNginxValidator(NGINX_BINARY);
async function nginxTest(files: BundleFiles): Promise<{ ms: number; ok: boolean; output: string }> {
  const times: number[] = [];
  let ok = true;
  let output = '';
  for (let round = 0; round < ROUNDS; round++) {
    const started = performance.now();
    const result = await validator.validate(files, AbortSignal.timeout(120_000));
    times.push(performance.now() - started);
    if (!result.ok) {
      ok = false;
      output = result.output;
    }
  }
  return { ms: summary(times).p50, ok, output };
}

/** CPU time (ns) the given processes have used, from /proc/<pid>/schedstat. */
async function workersCpuNs(pids: readonly number[]): Promise<number> {
  let total = 0;
  for (const pid of pids) total += Number((await readFile(`/proc/${pid}/schedstat`, 'utf8')).split(' ')[0]);
  return total;
}

const bytes = (files: BundleFiles): number =>
  Object.values(files).reduce((sum, content) => sum + Buffer.byteLength(content), 0);

/** The fingerprint of the certificate the loopback nginx hands a client asking for servername. */
function servedFingerprint(servername: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect(
      { host: '127.0.0.1', port: setup.tlsPort, servername, rejectUnauthorized: false },
      () => {
        resolve(socket.getPeerX509Certificate()?.fingerprint256 ?? '');
        socket.end();
      },
    );
    socket.once('error', reject);
  });
}

/** GET / over HTTPS on the loopback nginx for servername: the body. */
function httpsGet(servername: string): Promise<string> {
  return new Promise((resolve, reject) => {
    https
      .get(
        {
          host: '127.0.0.1',
          port: setup.tlsPort,
          servername,
          headers: { host: servername },
          rejectUnauthorized: false,
          agent: false,
        },
        (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (chunk: string) => (body += chunk));
          res.on('end', () => resolve(body));
        },
      )
      .on('error', reject);
  });
}

const rows: Record<string, unknown>[] = [];
const result: Record<string, unknown> = { hosts: HOSTS };
const withCerts = render(hosts, true);
const after = render([...hosts, NEW_HOST], true);
rows.push({ measure: `render ${HOSTS} HTTPS hosts (model + template)`, value: withCerts.ms, unit: 'ms' });
const full = await nginxTest(after.files);
rows.push({
  measure: `nginx -t, ${HOSTS + 1} hosts with certificates (${Math.round(bytes(after.files) / 1024)} KiB)`,
  value: full.ms,
  unit: 'ms',
  ok: full.ok,
});
const plain = render([...hosts, NEW_HOST], false);
const noCerts = await nginxTest(plain.files);
rows.push({
  measure: `nginx -t, ${HOSTS + 1} hosts without certificates (${Math.round(bytes(plain.files) / 1024)} KiB)`,
  value: noCerts.ms,
  unit: 'ms',
  ok: noCerts.ok,
});
const single = renderOnly([...hosts, NEW_HOST], NEW_HOST);
const alone = await nginxTest(single);
rows.push({
  measure: `nginx -t, prologue + the new host's server blocks (${Math.round(bytes(single) / 1024)} KiB)`,
  value: alone.ms,
  unit: 'ms',
  ok: alone.ok,
});
if (process.env.BENCH_DUMP) {
  const { writeBundleFiles } = await import('../src/nginx/bundle-dir.ts');
  await writeBundleFiles(path.join(process.env.BENCH_DUMP, 'full'), after.files);
  await writeBundleFiles(path.join(process.env.BENCH_DUMP, 'plain'), plain.files);
  await writeBundleFiles(path.join(process.env.BENCH_DUMP, 'single'), single);
}
result.nginxTest = { fullMs: full.ms, withoutCertificatesMs: noCerts.ms, changedOnlyMs: alone.ms };
// What the edge agent checks instead of nginx -t for the certificates nginx picks by name: every pair once, then only
// the pairs a new bundle changed (here none: the new host's certificate is one more file with the same content).
const sound = new Set<string>();
const coldAt = performance.now();
const coldProblem = bundleCertificatesProblem(withCerts.files, sound);
const coldMs = performance.now() - coldAt;
const warmAt = performance.now();
const warmProblem = bundleCertificatesProblem(after.files, sound);
const warmMs = performance.now() - warmAt;
rows.push({
  measure: `edge agent: check ${HOSTS} certificate pairs (first bundle)`,
  value: coldMs,
  unit: 'ms',
  ok: coldProblem === null,
});
rows.push({
  measure: "edge agent: check the next bundle's pairs (known ones skipped)",
  value: warmMs,
  unit: 'ms',
  ok: warmProblem === null,
});
result.certificateCheck = { firstMs: coldMs, nextMs: warmMs };
// nginx -v answers on stderr. The figures depend on it: Debian 12's nginx 1.22 with Lua module 0.10.23 makes a TLS
// context per location (12,000 at 2,000 hosts), the image's nginx 1.26 with 0.10.28 does not.
result.nginx = spawnSync(NGINX_BINARY, ['-v'], { encoding: 'utf8' }).stderr.trim();
console.log(result.nginx);

// A real nginx on loopback with the 2,000 hosts, then the new host by reload.
const cache = new BundleCache(proxyDir);
const nginx = createNginxProcess(NGINX_BINARY, setup.proxy.peersSocket);
const activate = async (files: BundleFiles): Promise<void> => {
  const fingerprint = fingerprintBundle(files);
  await cache.stage(fingerprint, files);
  await cache.activate(fingerprint, { version: 1, fingerprint });
};
try {
  await activate(withCerts.files);
  const startAt = performance.now();
  await nginx.start(cache.currentConfPath);
  const startMs = performance.now() - startAt;
  rows.push({ measure: `nginx start, ${HOSTS} hosts with certificates`, value: startMs, unit: 'ms' });
  // Early routing, what the edge agent does first with a new bundle: the new host goes to the running nginx's table
  // (POST /early), and is served by the catch-all servers until the reload. Timed from the agent having the
  // bundle to the new host answering over HTTPS (its certificate from the table) 20 new connections in a row.
  const earlyAt = performance.now();
  const earlyBody = earlyPost(after.files, withCerts.files);
  const earlyTaken = await nginx.updateEarly(earlyBody, AbortSignal.timeout(10_000));
  let earlyFirstMs: number | null = null;
  let earlyInARow = 0;
  while (earlyTaken && performance.now() - earlyAt < 10_000 && earlyInARow < 20) {
    const answer = await httpsGet(NEW_HOST).catch(() => null);
    earlyInARow = answer === '127.0.0.1' ? earlyInARow + 1 : 0;
    if (earlyInARow === 1 && earlyFirstMs === null) earlyFirstMs = performance.now() - earlyAt;
  }
  const earlyMs = performance.now() - earlyAt;
  const earlyFingerprint = await servedFingerprint(NEW_HOST).catch(() => '');
  const earlyServed = earlyInARow === 20 && earlyFingerprint === (await servedFingerprint(hosts[0] ?? ''));
  rows.push({
    measure: `edge, early routing: new bundle to first answer from the new host (HTTPS, ${Buffer.byteLength(earlyBody)} B posted)`,
    value: earlyFirstMs ?? NaN,
    unit: 'ms',
    ok: earlyTaken,
  });
  rows.push({
    measure: 'edge, early routing: new bundle to new host served (20 new connections in a row)',
    value: earlyMs,
    unit: 'ms',
    ok: earlyServed,
  });
  result.early = {
    firstMs: earlyFirstMs,
    servedMs: earlyMs,
    served: earlyServed,
    postBytes: Buffer.byteLength(earlyBody),
  };
  // The reload path below is measured on its own: the table is emptied first (the agent empties it after the reload).
  await nginx.updateEarly('', AbortSignal.timeout(10_000));
  // What the edge agent does with the new bundle, step by step: write it (every file, fsynced), nginx -t on it
  // (a new shape), point `current` at it, reload.
  const afterFingerprint = fingerprintBundle(after.files);
  const stageAt = performance.now();
  const stagedConf = await cache.stage(afterFingerprint, after.files);
  const stageMs = performance.now() - stageAt;
  rows.push({
    measure: `edge: write the new bundle (${Object.keys(after.files).length} files)`,
    value: stageMs,
    unit: 'ms',
  });
  const edgeTestAt = performance.now();
  const edgeTest = await runNginxTest(NGINX_BINARY, stagedConf, AbortSignal.timeout(120_000));
  const edgeTestMs = performance.now() - edgeTestAt;
  rows.push({
    measure: 'edge: nginx -t of the written bundle',
    value: edgeTestMs,
    unit: 'ms',
    ok: edgeTest.ok,
  });
  await cache.activate(afterFingerprint, { version: 2, fingerprint: afterFingerprint });
  const reloadAt = performance.now();
  nginx.reload();
  // Served = 20 new connections in a row answered: right after a reload the old workers still accept for a
  // moment, and they do not know the new host.
  let served = false;
  let firstMs: number | null = null;
  let inARow = 0;
  while (performance.now() - reloadAt < 60_000) {
    const answer = await httpsGet(NEW_HOST).catch(() => null);
    inARow = answer === '127.0.0.1' ? inARow + 1 : 0;
    if (inARow === 1 && firstMs === null) firstMs = performance.now() - reloadAt;
    if (inARow === 20) {
      served = true;
      break;
    }
    if (inARow === 0) await sleep(5);
  }
  const reloadMs = performance.now() - reloadAt;
  rows.push({
    measure: 'reload until the first answer from the new host (HTTPS)',
    value: firstMs ?? NaN,
    unit: 'ms',
  });
  rows.push({
    measure: 'reload until the new host is served (20 new connections in a row)',
    value: reloadMs,
    unit: 'ms',
    ok: served,
  });
  const handshakeAt = performance.now();
  const fingerprint = await servedFingerprint(NEW_HOST).catch(() => '');
  rows.push({
    measure: 'then: TLS handshake for the new host',
    value: performance.now() - handshakeAt,
    unit: 'ms',
    ok: fingerprint !== '',
  });
  // What a full handshake costs nginx's workers (no session resumption: each client is new), over many hosts, so
  // each worker also parses certificates at their first handshake when it picks them by name.
  const handshakes = SMOKE ? 200 : 2000;
  // The old workers leave once their connections closed: only the reloaded config's workers are measured.
  await sleep(2000);
  const workers = await workerPids(setup);
  const handshakeCpu: Record<string, number> = {};
  let failedHandshakes = 0;
  // First pass: each worker meets most certificates for the first time; second pass: the same hosts again.
  for (const pass of ['first', 'again']) {
    const cpuBefore = await workersCpuNs(workers);
    for (let index = 0; index < handshakes; index++) {
      const answer = await servedFingerprint(hosts[(index * 7) % hosts.length] ?? NEW_HOST).catch(() => '');
      if (answer === '') failedHandshakes++;
    }
    handshakeCpu[pass] = ((await workersCpuNs(workers)) - cpuBefore) / 1000 / handshakes;
    rows.push({
      measure: `workers' CPU per full TLS handshake, ${handshakes} over ${HOSTS} hosts (${pass})`,
      value: handshakeCpu[pass],
      unit: 'µs',
      ok: failedHandshakes === 0,
    });
  }
  result.handshake = { count: handshakes, cpuUsEach: handshakeCpu, failed: failedHandshakes };
  rows.push({
    measure: 'edge: new bundle to new host served (write + nginx -t + reload)',
    value: stageMs + edgeTestMs + reloadMs,
    unit: 'ms',
    ok: served && edgeTest.ok,
  });
  result.loopback = {
    startMs,
    reloadMs,
    served,
    stageMs,
    edgeTestMs,
    edgeMs: stageMs + edgeTestMs + reloadMs,
  };
} finally {
  await nginx.stop(10_000);
  await backend.close();
  await rm(proxyDir, { recursive: true, force: true });
}

printTable(`One new host at ${HOSTS} hosts`, rows);
writeResult('new-host', { ...result, rows }, { docker: false });
for (const check of [full, noCerts, alone]) if (!check.ok) console.error(check.output);

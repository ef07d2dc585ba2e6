// The reconcile loop against a fake Docker and a fake nginx -t that refuses chosen configs: quarantine by
// bisection, cached per-service verdicts, the validation budget, and what the API sees after a refusal.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { readControllerConfig } from '../../src/config.ts';
import { TEST_CHANNEL_CERT_FILE } from '../support/loopback-nginx.ts';
import { createLogger } from '../../src/logger.ts';
import type { NginxValidator, ValidationResult } from '../../src/nginx/nginx-validator.ts';
import { BundleStore } from '../../src/publish/bundle-store.ts';
import { systemClock } from '../../src/reconcile/clock.ts';
import { Reconciler } from '../../src/reconcile/reconciler.ts';
import type { ReconcilerSettings, RefusedCandidate } from '../../src/reconcile/reconciler.ts';
import { createTemplateRenderer } from '../../src/render/nunjucks-env.ts';
import { FakeDocker, rawService, rawTask } from '../support/fake-docker.ts';

interface Harness {
  docker: FakeDocker;
  store: BundleStore;
  reconciler: Reconciler;
  /** Every config the fake nginx -t saw. */
  validated: string[];
  /** Read through a function so a check of one value does not narrow the type of the next. */
  refused(): RefusedCandidate | null;
  peers(): string;
}

function harness(
  t: TestContext,
  services: number,
  judge: (config: string, signal: AbortSignal) => Promise<ValidationResult> | ValidationResult,
  settings: Partial<ReconcilerSettings> = {},
): Harness {
  const docker = new FakeDocker();
  for (let i = 0; i < services; i++) {
    docker.services.push(rawService(`svc${i}`, { VIRTUAL_HOST: `svc${i}.example.com` }));
    docker.tasks.push(rawTask(`svc${i}-t1`, `svc${i}`, `10.0.${Math.floor(i / 200)}.${(i % 200) + 1}`));
  }
  const validated: string[] = [];
  const validator: NginxValidator = {
    validate: async (files, signal) => {
      const config = files['nginx.conf'] ?? '';
      validated.push(config);
      return judge(config, signal);
    },
  };
  // nginx -t loads the pinned channel certificate the ACME location verifies the controller with.
  const config = readControllerConfig({ SWARMGATE_CHANNEL_CERT_FILE: TEST_CHANNEL_CERT_FILE });
  const store = new BundleStore(systemClock);
  store.startEpoch(1);
  const reconciler = new Reconciler(
    {
      docker,
      validator,
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
      generator: 'test',
      ...settings,
    },
  );
  t.after(() => reconciler.stop());
  return {
    docker,
    store,
    reconciler,
    validated,
    refused: () => reconciler.lastRefused,
    peers: () => store.current?.files['peers.txt'] ?? '',
  };
}

const refuse = (output: string): ValidationResult => ({ ok: false, output: `nginx: [emerg] ${output}` });

function addService(docker: FakeDocker, name: string, ip: string, host = `${name}.example.com`): void {
  docker.services.push(rawService(name, { VIRTUAL_HOST: host }, { createdAt: '2026-02-01T00:00:00Z' }));
  docker.tasks.push(rawTask(`${name}-t1`, name, ip));
}

test('one bad service among 64 is found by bisection, then scaling publishes without nginx -t', async (t) => {
  const h = harness(t, 64, (config) =>
    config.includes('bad.example.com') ? refuse('bad host') : { ok: true },
  );
  await h.reconciler.reconcileNow();
  assert.equal(h.validated.length, 1);

  addService(h.docker, 'bad', '10.9.0.1');
  await h.reconciler.reconcileNow();
  const runs = h.validated.length - 1;
  // One per service plus two (66) before; bisection needs about log2(65) to 2·log2(65), plus the whole and the rest.
  assert.ok(runs <= 2 * Math.ceil(Math.log2(65)) + 3, `nginx -t ran ${runs} times`);
  const problem = h.reconciler.currentModel.problems.find((candidate) => candidate.service === 'bad');
  assert.equal(problem?.code, 'NGINX_REJECTED');
  assert.match(problem?.reason ?? '', /bad host/);
  assert.equal(h.reconciler.currentModel.services.length, 64);
  assert.equal(h.reconciler.lastOutcome?.ok, true);

  // The reduced shape is the accepted one: a new task of a good service needs no nginx -t.
  const before = h.validated.length;
  h.docker.tasks.push(rawTask('svc3-t2', 'svc3', '10.8.0.3'));
  await h.reconciler.reconcileNow();
  assert.equal(h.validated.length, before, 'no nginx -t for a peers-only change after a quarantine');
  assert.match(h.peers(), /10\.8\.0\.3:80/);
  assert.equal(h.reconciler.lastOutcome?.published, true);

  // A second bad service: only the services nginx has not cleared yet are suspects.
  addService(h.docker, 'bad2', '10.9.0.2', 'bad.example.com.two');
  const beforeSecond = h.validated.length;
  await h.reconciler.reconcileNow();
  assert.ok(
    h.validated.length - beforeSecond <= 4,
    `second quarantine ran ${h.validated.length - beforeSecond}`,
  );
  assert.deepEqual(
    h.reconciler.currentModel.problems.filter((p) => p.code === 'NGINX_REJECTED').map((p) => p.service),
    ['bad', 'bad2'],
  );
});

test('a candidate refused as a whole is not the current model; it is exposed as lastRefused', async (t) => {
  // Refused only together with web: no service is bad alone, so the whole candidate is refused.
  const h = harness(t, 0, (config) =>
    config.includes('new.example.com') && config.includes('web.example.com')
      ? refuse('together')
      : { ok: true },
  );
  addService(h.docker, 'web', '10.1.0.1');
  await h.reconciler.reconcileNow();
  assert.equal(h.refused(), null);
  addService(h.docker, 'new', '10.1.0.2');
  await h.reconciler.reconcileNow();
  assert.equal(h.reconciler.lastOutcome?.ok, false);
  assert.match(h.reconciler.lastOutcome?.error ?? '', /together/);
  assert.deepEqual(
    h.reconciler.currentModel.services.map((service) => service.name),
    ['web'],
    'the API reports what the edges serve',
  );
  assert.deepEqual(
    h.refused()?.model.services.map((service) => service.name),
    ['new', 'web'],
  );
  assert.equal(h.refused()?.transient, false);
  assert.doesNotMatch(h.store.current?.files['nginx.conf'] ?? '', /new\.example\.com/);

  // While the candidate stays refused, web's new task is still published (its shape was accepted).
  const runs = h.validated.length;
  h.docker.tasks.push(rawTask('web-t2', 'web', '10.1.0.3'));
  await h.reconciler.reconcileNow();
  assert.match(h.peers(), /10\.1\.0\.3:80/);
  assert.deepEqual(
    h.reconciler.currentModel.services.map((service) => service.name),
    ['web'],
  );
  assert.ok(h.validated.length > runs, 'a changed candidate is validated again');

  // Once the conflict is gone, the refusal is cleared.
  h.docker.services = h.docker.services.filter((service) => service.ID !== 'new');
  await h.reconciler.reconcileNow();
  assert.equal(h.refused(), null);
  assert.equal(h.reconciler.lastOutcome?.ok, true);
});

test('a killed nginx -t is not remembered as a refusal: the same candidate is tried again', async (t) => {
  let kills = 1;
  const h = harness(t, 0, (config) => {
    if (config.includes('new.example.com') && kills > 0) {
      kills--;
      return { ok: false, output: 'nginx -t was killed by SIGKILL before it finished', transient: true };
    }
    return { ok: true };
  });
  addService(h.docker, 'web', '10.1.0.1');
  await h.reconciler.reconcileNow();
  addService(h.docker, 'new', '10.1.0.2');
  await h.reconciler.reconcileNow();
  assert.equal(h.reconciler.lastOutcome?.ok, false);
  assert.equal(h.refused()?.transient, true);
  assert.deepEqual(
    h.reconciler.currentModel.services.map((service) => service.name),
    ['web'],
  );
  const runs = h.validated.length;
  await h.reconciler.reconcileNow();
  assert.equal(h.validated.length, runs + 1, 'the identical candidate went to nginx -t again');
  assert.equal(h.reconciler.lastOutcome?.ok, true);
  assert.deepEqual(
    h.reconciler.currentModel.services.map((service) => service.name),
    ['new', 'web'],
  );
});

test('a killed nginx -t during quarantine blames no service', async (t) => {
  let killed = false;
  const h = harness(t, 8, (config) => {
    if (!config.includes('bad.example.com')) return { ok: true };
    // The whole candidate is refused; the first group tested alone is killed instead of judged.
    if (config.includes('svc0.example.com') && config.includes('svc7.example.com')) return refuse('bad host');
    if (!killed) {
      killed = true;
      return { ok: false, output: 'nginx -t was killed by SIGTERM before it finished', transient: true };
    }
    return refuse('bad host');
  });
  await h.reconciler.reconcileNow();
  addService(h.docker, 'bad', '10.9.0.1');
  await h.reconciler.reconcileNow();
  assert.equal(h.reconciler.lastOutcome?.ok, false);
  assert.ok(!h.reconciler.currentModel.problems.some((problem) => problem.code === 'NGINX_REJECTED'));
  await h.reconciler.reconcileNow();
  assert.equal(h.reconciler.lastOutcome?.ok, true);
  assert.deepEqual(
    h.reconciler.currentModel.problems.filter((p) => p.code === 'NGINX_REJECTED').map((p) => p.service),
    ['bad'],
  );
});

test('the validation budget never blocks a peers-only publish, and quarantine resumes where it stopped', async (t) => {
  // A slow nginx -t (60 ms) and 30 services: one run per service would take 1.8 s, more than the reconcile's 1 s,
  // and the new service's test, its test alone and the reduced candidate's (180 ms) more than one budget.
  const h = harness(
    t,
    30,
    async (config, signal) => {
      await sleep(60, undefined, { signal });
      return config.includes('bad.example.com') ? refuse('bad host') : { ok: true };
    },
    { reconcileTimeoutMs: 1_000, validationBudgetMs: 150, validationRetryMs: 60_000 },
  );
  await h.reconciler.reconcileNow();
  addService(h.docker, 'bad', '10.9.0.1');
  h.docker.tasks.push(rawTask('svc1-t2', 'svc1', '10.8.0.1'));
  await h.reconciler.reconcileNow();
  assert.match(h.reconciler.lastOutcome?.error ?? '', /budget/);
  assert.match(h.peers(), /10\.8\.0\.1:80/, 'the new task of a published service is routed anyway');
  assert.equal(h.reconciler.lastOutcome?.published, true);

  for (let attempt = 0; attempt < 20 && h.reconciler.lastOutcome?.ok !== true; attempt++) {
    await h.reconciler.reconcileNow();
  }
  assert.equal(h.reconciler.lastOutcome?.ok, true, 'quarantine finished within 20 budgets');
  assert.deepEqual(
    h.reconciler.currentModel.problems.filter((p) => p.code === 'NGINX_REJECTED').map((p) => p.service),
    ['bad'],
  );
  assert.equal(h.reconciler.currentModel.services.length, 30);
});

test('after a whole nginx -t, a new service is validated with its own hosts only, and a shared host whole', async (t) => {
  const h = harness(t, 30, () => ({ ok: true }));
  await h.reconciler.reconcileNow();
  assert.equal(h.validated.length, 1);
  assert.match(h.validated[0] ?? '', /svc29\.example\.com/, 'the first candidate is tested whole');

  addService(h.docker, 'newcomer', '10.9.0.1');
  await h.reconciler.reconcileNow();
  assert.equal(h.validated.length, 2);
  const partial = h.validated[1] ?? '';
  assert.match(partial, /server_name "newcomer\.example\.com"/);
  assert.doesNotMatch(partial, /svc\d+\.example\.com/, 'services nginx accepted before are not tested again');
  assert.match(h.peers(), /10\.9\.0\.1:80/, 'and the candidate is published whole');
  assert.match(h.store.current?.files['nginx.conf'] ?? '', /server_name "svc29\.example\.com"/);

  // A path on svc3's host: the server block holds both services, so both are tested, and nothing else.
  h.docker.services.push(
    rawService(
      'api',
      { VIRTUAL_HOST: 'svc3.example.com', VIRTUAL_PATH: '/api/' },
      { createdAt: '2026-02-01T00:00:00Z' },
    ),
  );
  h.docker.tasks.push(rawTask('api-t1', 'api', '10.9.0.2'));
  await h.reconciler.reconcileNow();
  assert.equal(h.validated.length, 3);
  const shared = h.validated[2] ?? '';
  assert.match(shared, /# service "svc3"/);
  assert.match(shared, /# service "api"/);
  assert.doesNotMatch(shared, /svc(?!3\b)\d+\.example\.com/);

  // Removing api changes svc3's server block again: it is tested alone.
  h.docker.services = h.docker.services.filter((service) => service.ID !== 'api');
  h.docker.tasks = h.docker.tasks.filter((task) => task.ServiceID !== 'api');
  await h.reconciler.reconcileNow();
  assert.equal(h.validated.length, 4);
  assert.match(h.validated[3] ?? '', /# service "svc3"/);
  assert.doesNotMatch(h.validated[3] ?? '', /# service "api"/);
});

test('a change of a switch every host shares (here the default host going away) is tested whole', async (t) => {
  const config = readControllerConfig({ SWARMGATE_CHANNEL_CERT_FILE: TEST_CHANNEL_CERT_FILE });
  const h = harness(t, 30, () => ({ ok: true }), {
    proxy: { ...config.proxy, defaultHost: 'svc7.example.com' },
  });
  await h.reconciler.reconcileNow();
  assert.equal(h.validated.length, 1);
  // svc7 leaves: the catch-all servers change for every host (port 80's default server, early routing), which a
  // test of the changed hosts alone (none here) would not show.
  h.docker.services = h.docker.services.filter((service) => service.ID !== 'svc7');
  h.docker.tasks = h.docker.tasks.filter((task) => task.ServiceID !== 'svc7');
  await h.reconciler.reconcileNow();
  assert.equal(h.validated.length, 2);
  assert.match(h.validated[1] ?? '', /svc29\.example\.com/, 'tested whole');
});

test('a new TLS passthrough route is tested whole: the stream block and 443 moving to a local socket', async (t) => {
  const h = harness(t, 5, () => ({ ok: true }));
  await h.reconciler.reconcileNow();
  h.docker.services.push(
    rawService(
      'vault',
      { 'swarmgate.tls.passthrough': 'vault.example.com' },
      { createdAt: '2026-02-01T00:00:00Z' },
    ),
  );
  h.docker.tasks.push(rawTask('vault-t1', 'vault', '10.9.0.3'));
  await h.reconciler.reconcileNow();
  assert.match(h.store.current?.files['nginx.conf'] ?? '', /\nstream \{/, 'published with a stream block');
  assert.match(h.validated.at(-1) ?? '', /\nstream \{/, 'and nginx -t saw it');
  assert.match(h.validated.at(-1) ?? '', /svc4\.example\.com/, 'whole');
});

test('a refused change is searched among the changed services only', async (t) => {
  const h = harness(t, 30, (config) =>
    config.includes('bad.example.com') ? refuse('bad host') : { ok: true },
  );
  await h.reconciler.reconcileNow();
  addService(h.docker, 'bad', '10.9.0.1');
  await h.reconciler.reconcileNow();
  assert.equal(h.reconciler.lastOutcome?.ok, true);
  assert.deepEqual(
    h.reconciler.currentModel.problems.filter((p) => p.code === 'NGINX_REJECTED').map((p) => p.service),
    ['bad'],
  );
  // The changed services (bad alone), bad alone again before it is blamed, and the candidate without it.
  assert.equal(h.validated.length, 4);
  assert.ok(h.validated.slice(1, 3).every((config) => !config.includes('svc0.example.com')));
});

test("a quarantined HTTP service leaves the other services' TCP ports in the published bundle", async (t) => {
  // Found by the pass-through e2e's author: every bundle published while a service was quarantined (and every later
  // one, peers-only publishes included) lost the stream block and stream-peers.txt, closing every TCP port.
  const config = readControllerConfig({
    SWARMGATE_CHANNEL_CERT_FILE: TEST_CHANNEL_CERT_FILE,
    SWARMGATE_TCP_PORTS: '5432',
  });
  const h = harness(
    t,
    1,
    (conf) =>
      conf.includes('bad.example.com') ? { ok: false, output: 'nginx: [emerg] bad host' } : { ok: true },
    {
      proxy: config.proxy,
    },
  );
  h.docker.services.push(rawService('db', { 'swarmgate.tcp.port': '5432' }));
  h.docker.tasks.push(rawTask('db-t1', 'db', '10.0.9.1'));
  const conf = (): string => h.store.current?.files['nginx.conf'] ?? '';
  const streamPeers = (): string => h.store.current?.files['stream-peers.txt'] ?? '';
  await h.reconciler.reconcileNow();
  assert.match(conf(), /listen 5432;/);
  assert.match(streamPeers(), /10\.0\.9\.1:5432/);

  h.docker.services.push(
    rawService('bad', { VIRTUAL_HOST: 'bad.example.com' }, { createdAt: '2026-02-01T00:00:00Z' }),
  );
  h.docker.tasks.push(rawTask('bad-t1', 'bad', '10.0.9.9'));
  await h.reconciler.reconcileNow();
  assert.deepEqual(
    h.reconciler.currentModel.problems.map((problem) => [problem.service, problem.code]),
    [['bad', 'NGINX_REJECTED']],
  );
  assert.match(conf(), /listen 5432;/, 'the TCP port stays while bad is quarantined');

  // A later task change of the TCP service reaches the edges too (the peers-only path).
  h.docker.tasks.push(rawTask('db-t2', 'db', '10.0.9.2'));
  await h.reconciler.reconcileNow();
  assert.match(conf(), /listen 5432;/);
  assert.match(streamPeers(), /10\.0\.9\.2:5432/);
});

test('a quarantined service loses its own TCP port with its HTTP routes; the others keep theirs', async (t) => {
  // Found in review: quarantine kept the whole stream block, so a service refused by nginx -t (NGINX_REJECTED)
  // still got its TCP traffic while the status showed it refused.
  const config = readControllerConfig({
    SWARMGATE_CHANNEL_CERT_FILE: TEST_CHANNEL_CERT_FILE,
    SWARMGATE_TCP_PORTS: '5432,6379',
  });
  const h = harness(
    t,
    1,
    (conf) =>
      conf.includes('bad.example.com') ? { ok: false, output: 'nginx: [emerg] bad host' } : { ok: true },
    { proxy: config.proxy },
  );
  h.docker.services.push(rawService('db', { 'swarmgate.tcp.port': '5432' }));
  h.docker.tasks.push(rawTask('db-t1', 'db', '10.0.9.1'));
  h.docker.services.push(
    rawService(
      'bad',
      { VIRTUAL_HOST: 'bad.example.com', 'swarmgate.tcp.port': '6379' },
      { createdAt: '2026-02-01T00:00:00Z' },
    ),
  );
  h.docker.tasks.push(rawTask('bad-t1', 'bad', '10.0.9.9'));
  await h.reconciler.reconcileNow();
  const conf = h.store.current?.files['nginx.conf'] ?? '';
  assert.match(conf, /listen 5432;/);
  assert.doesNotMatch(conf, /listen 6379;/, "the quarantined service's TCP port is closed");
  assert.doesNotMatch(h.store.current?.files['stream-peers.txt'] ?? '', /10\.0\.9\.9/);
});

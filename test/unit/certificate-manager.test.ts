import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  CertificateManager,
  decideCertificateAction,
  renewalTime,
  retryDelay,
} from '../../src/acme/certificate-manager.ts';
import type { AcmeSettings } from '../../src/acme/certificate-manager.ts';
import { StateLease } from '../../src/acme/state-lease.ts';
import { deriveStateKey, StateStore } from '../../src/acme/state-store.ts';
import { createCapturingLogger } from '../../src/logger.ts';
import type { CertificateRequest } from '../../src/model/routing-model.ts';
import { FakeAcme } from '../support/fake-acme.ts';
import { FakeClock } from '../support/fake-clock.ts';
import { FakeDocker } from '../support/fake-docker.ts';

const DAY = 86_400_000;
const settings: AcmeSettings = {
  enabled: true,
  directoryUrl: 'https://ca.test/dir',
  renewFraction: 1 / 3,
  concurrency: 2,
  retryMinMs: 10_000,
  retryMaxMs: 80_000,
};
const shop: CertificateRequest = {
  name: 'shop.test',
  domains: ['shop.test', 'www.shop.test'],
  email: 'ops@shop.test',
  service: 'shop',
};
const other: CertificateRequest = {
  name: 'other.test',
  domains: ['other.test'],
  email: null,
  service: 'other',
};
const signal = new AbortController().signal;
/** The controller's staging directory and one more the operator allowed (SWARMGATE_ACME_DIRECTORIES). */
const STAGING = 'https://staging.ca.test/dir';
const ALLOWED = 'https://other-ca.test/dir';
const directories: Partial<AcmeSettings> = { stagingDirectoryUrl: STAGING, allowedDirectoryUrls: [ALLOWED] };

function manager(
  docker: FakeDocker,
  acme: FakeAcme,
  clock: FakeClock,
  key = 'state key for the unit tests',
  options: { settings?: Partial<AcmeSettings>; lease?: StateLease } = {},
) {
  const capture = createCapturingLogger();
  let changes = 0;
  const certificates = new CertificateManager({
    acme,
    store: new StateStore(docker, deriveStateKey(key), options.lease ? { fence: options.lease } : {}),
    clock,
    logger: capture.logger,
    settings: { ...settings, ...options.settings },
    userCertificates: [],
    onChange: () => changes++,
    ...(options.lease ? { lease: options.lease } : {}),
  });
  return { certificates, logs: capture.lines, changes: () => changes };
}

test('renewal time: when a third of the lifetime remains', () => {
  const at = renewalTime('2026-01-01T00:00:00Z', '2026-04-01T00:00:00Z', 1 / 3);
  assert.equal(new Date(at).toISOString(), '2026-03-02T00:00:00.000Z');
});

test('decide: missing → order; valid → wait for renewal; due → renew; names changed → order; backoff; blocked', () => {
  const now = Date.parse('2026-02-01T00:00:00Z');
  const stored = { domains: ['a.test'], notBefore: '2026-01-01T00:00:00Z', notAfter: '2026-04-01T00:00:00Z' };
  const idle = { inFlight: false, nextAttemptAt: 0 };
  assert.deepEqual(decideCertificateAction(undefined, { domains: ['a.test'] }, idle, false, now, 1 / 3), {
    kind: 'order',
    reason: 'missing',
  });
  assert.deepEqual(decideCertificateAction(stored, { domains: ['a.test'] }, idle, false, now, 1 / 3), {
    kind: 'wait',
    until: Date.parse('2026-03-02T00:00:00Z'),
  });
  assert.deepEqual(
    decideCertificateAction(
      stored,
      { domains: ['a.test'] },
      idle,
      false,
      Date.parse('2026-03-02T00:00:00Z'),
      1 / 3,
    ),
    {
      kind: 'order',
      reason: 'renewal',
    },
  );
  assert.deepEqual(
    decideCertificateAction(stored, { domains: ['a.test', 'b.test'] }, idle, false, now, 1 / 3),
    {
      kind: 'order',
      reason: 'names-changed',
    },
  );
  assert.deepEqual(
    decideCertificateAction(
      stored,
      { domains: ['a.test'] },
      idle,
      false,
      Date.parse('2026-05-01T00:00:00Z'),
      1 / 3,
    ),
    {
      kind: 'order',
      reason: 'expired',
    },
  );
  assert.deepEqual(
    decideCertificateAction(
      undefined,
      { domains: ['a.test'] },
      { inFlight: false, nextAttemptAt: now + 5 },
      false,
      now,
      1 / 3,
    ),
    {
      kind: 'wait',
      until: now + 5,
    },
  );
  assert.deepEqual(
    decideCertificateAction(
      undefined,
      { domains: ['a.test'] },
      { inFlight: true, nextAttemptAt: 0 },
      false,
      now,
      1 / 3,
    ),
    {
      kind: 'wait',
      until: null,
    },
  );
  assert.deepEqual(decideCertificateAction(undefined, { domains: ['a.test'] }, idle, true, now, 1 / 3), {
    kind: 'blocked',
  });
});

test('decide: a certificate from another directory than the chosen one is ordered again', () => {
  const now = Date.parse('2026-02-01T00:00:00Z');
  const stored = {
    domains: ['a.test'],
    notBefore: '2026-01-01T00:00:00Z',
    notAfter: '2026-04-01T00:00:00Z',
    directoryUrl: STAGING,
  };
  const idle = { inFlight: false, nextAttemptAt: 0 };
  assert.deepEqual(
    decideCertificateAction(
      stored,
      { domains: ['a.test'], directoryUrl: settings.directoryUrl },
      idle,
      false,
      now,
      1 / 3,
    ),
    { kind: 'order', reason: 'directory-changed' },
  );
  assert.deepEqual(
    decideCertificateAction(stored, { domains: ['a.test'], directoryUrl: STAGING }, idle, false, now, 1 / 3),
    { kind: 'wait', until: Date.parse('2026-03-02T00:00:00Z') },
  );
});

test('backoff doubles from the minimum up to the maximum', () => {
  assert.deepEqual(
    [1, 2, 3, 4, 5, 6].map((n) => retryDelay(n, 10_000, 80_000)),
    [10_000, 20_000, 40_000, 80_000, 80_000, 80_000],
  );
});

test('orders a requested certificate once, persists it, and serves it', async () => {
  const docker = new FakeDocker();
  const acme = new FakeAcme();
  const clock = new FakeClock(Date.now());
  const { certificates, changes } = manager(docker, acme, clock);
  await certificates.loadState(signal);
  certificates.sync([shop]);
  certificates.sync([shop]);
  await certificates.idle();
  assert.equal(acme.orders.length, 1);
  assert.deepEqual(acme.orders[0]?.domains, ['shop.test', 'www.shop.test']);
  assert.equal(acme.orders[0]?.email, 'ops@shop.test');
  assert.equal(changes(), 1);
  assert.deepEqual(certificates.available(), [
    { name: 'shop.test', domains: ['shop.test', 'www.shop.test'], source: 'acme' },
  ]);
  assert.match(certificates.material('shop.test')?.privateKeyPem ?? '', /PRIVATE KEY/);
  assert.equal(certificates.status()[0]?.state, 'valid');
  assert.deepEqual(
    docker.configs.map((config) => config.Spec?.Labels?.['swarmgate.state']).sort(),
    ['account.3f0f069f145c', 'cert.shop.test', 'orders.shop.test'],
    'account, certificate and order log are stored in Swarm',
  );
  for (const config of docker.configs)
    assert.ok(
      !Buffer.from(config.Spec?.Data ?? '', 'base64')
        .toString()
        .includes('PRIVATE KEY'),
    );
});

test('a controller restarted elsewhere finds the certificate in Swarm and orders nothing', async () => {
  const docker = new FakeDocker();
  const acme = new FakeAcme();
  const clock = new FakeClock(Date.now());
  const first = manager(docker, acme, clock);
  await first.certificates.loadState(signal);
  first.certificates.sync([shop]);
  await first.certificates.idle();
  await first.certificates.stop();

  const second = manager(docker, acme, clock);
  second.certificates.sync([shop]);
  await second.certificates.idle();
  assert.equal(acme.orders.length, 1, 'nothing is ordered before the state is loaded');
  await second.certificates.loadState(signal);
  second.certificates.sync([shop]);
  await second.certificates.idle();
  assert.equal(acme.orders.length, 1, 'the stored certificate is used');
  assert.equal(acme.accountKeys, 1, 'the stored account is used');
  assert.equal(
    second.certificates.material('shop.test')?.certificatePem,
    first.certificates.material('shop.test')?.certificatePem,
  );
});

test('failures retry with exponential backoff on the clock, and are reported', async () => {
  const docker = new FakeDocker();
  const acme = new FakeAcme();
  acme.failNext = 2;
  const clock = new FakeClock(Date.now());
  const { certificates, logs } = manager(docker, acme, clock);
  await certificates.loadState(signal);
  certificates.sync([shop]);
  await certificates.idle();
  assert.equal(acme.orders.length, 1);
  assert.equal(certificates.status()[0]?.state, 'failed');
  assert.match(certificates.status()[0]?.lastError ?? '', /fake CA is unavailable/);
  assert.ok(
    logs.some((line) => line.msg === 'certificate order failed; will retry' && line.retryInMs === 10_000),
  );

  clock.advance(9_999);
  await certificates.idle();
  assert.equal(acme.orders.length, 1, 'no retry before the backoff');
  clock.advance(1);
  await certificates.idle();
  assert.equal(acme.orders.length, 2);
  clock.advance(19_999);
  await certificates.idle();
  assert.equal(acme.orders.length, 2, 'the second wait is twice as long');
  clock.advance(1);
  await certificates.idle();
  assert.equal(acme.orders.length, 3);
  assert.equal(certificates.status()[0]?.state, 'valid');
  assert.equal(certificates.stats.ordersFailed, 2);
  assert.equal(certificates.stats.ordersSucceeded, 1);
});

test('renews when a third of the lifetime remains', async () => {
  const docker = new FakeDocker();
  const acme = new FakeAcme();
  acme.lifetimeDays = 3;
  const clock = new FakeClock(Date.now());
  const { certificates } = manager(docker, acme, clock);
  await certificates.loadState(signal);
  certificates.sync([shop]);
  await certificates.idle();
  const renewAt = Date.parse(certificates.status()[0]?.renewAt ?? '');
  assert.ok(Math.abs(renewAt - (clock.now() + 2 * DAY)) < 60_000, 'renewal is due after two of three days');
  clock.advance(renewAt - clock.now() - 1000);
  await certificates.idle();
  assert.equal(acme.orders.length, 1);
  clock.advance(2000);
  await certificates.idle();
  assert.equal(acme.orders.length, 2);
});

test('records sealed with another key: no order, status sealed-with-another-key, publishing held (F8)', async () => {
  const docker = new FakeDocker();
  const acme = new FakeAcme();
  const clock = new FakeClock(Date.now());
  const first = manager(docker, acme, clock);
  await first.certificates.loadState(signal);
  first.certificates.sync([shop]);
  await first.certificates.idle();
  assert.equal(first.certificates.publishBlocked(), null);

  const wrongKey = manager(docker, acme, clock, 'a different state key, wrongly set');
  assert.match(
    wrongKey.certificates.publishBlocked() ?? '',
    /not been read/,
    'nothing is published before loading',
  );
  await wrongKey.certificates.loadState(signal);
  for (let i = 0; i < 5; i++) wrongKey.certificates.sync([shop]);
  clock.advance(10 * DAY);
  await wrongKey.certificates.idle();
  assert.equal(acme.orders.length, 1, 'no new order');
  const status = wrongKey.certificates.status()[0];
  assert.equal(status?.state, 'sealed-with-another-key');
  assert.match(status?.lastError ?? '', /sealed with another state key/);
  assert.match(wrongKey.certificates.publishBlocked() ?? '', /cert\.shop\.test.*another swarmgate_state_key/);
  assert.ok(
    wrongKey.logs.some((line) =>
      String(line.msg).startsWith('stored state was sealed with another state key'),
    ),
  );
});

test('one damaged record under the right key is reported and ordered again within the budget (F8)', async () => {
  const docker = new FakeDocker();
  const acme = new FakeAcme();
  const clock = new FakeClock(Date.now());
  const first = manager(docker, acme, clock);
  await first.certificates.loadState(signal);
  first.certificates.sync([shop, other]);
  await first.certificates.idle();
  await first.certificates.stop();
  assert.equal(acme.orders.length, 2);

  const damaged = docker.configs.find(
    (config) => config.Spec?.Labels?.['swarmgate.state'] === 'cert.shop.test',
  );
  assert.ok(damaged?.Spec);
  damaged.Spec.Data = Buffer.from('{"v":1,"iv":"AAAA","tag":"AAAA","data":"AAAA"}').toString('base64');
  const second = manager(docker, acme, clock);
  await second.certificates.loadState(signal);
  assert.equal(second.certificates.publishBlocked(), null, 'damage is not a key change: publishing goes on');
  assert.ok(second.logs.some((line) => String(line.msg).startsWith('stored state is damaged')));
  second.certificates.sync([shop, other]);
  await second.certificates.idle();
  assert.equal(acme.orders.length, 3, 'only the damaged certificate is ordered again');
  assert.deepEqual(
    second.certificates.status().map((row) => [row.name, row.state]),
    [
      ['other.test', 'valid'],
      ['shop.test', 'valid'],
    ],
  );
  const reloaded = await new StateStore(docker, deriveStateKey('state key for the unit tests')).load(signal);
  assert.equal(reloaded.unreadable.size, 0, 'the damaged record was replaced');
});

test('the HTTP-01 answer is available while the order runs', async () => {
  const docker = new FakeDocker();
  const clock = new FakeClock(Date.now());
  let seen: string | undefined;
  const acme = new FakeAcme();
  const { certificates } = manager(docker, acme, clock);
  acme.order = async (input) => {
    input.challenges.add('token-1', 'token-1.thumbprint');
    seen = certificates.challengeResponse('token-1');
    input.challenges.remove('token-1');
    throw new Error('stop here');
  };
  await certificates.loadState(signal);
  certificates.sync([shop]);
  await certificates.idle();
  assert.equal(seen, 'token-1.thumbprint');
  assert.equal(certificates.challengeResponse('token-1'), undefined);
});

test('a long host name (35 characters) is issued once, stored and served, and found again after a restart (F3)', async () => {
  const docker = new FakeDocker();
  const acme = new FakeAcme();
  const clock = new FakeClock(Date.now());
  const host = 'grafana.monitoring.prod.example.com';
  const long: CertificateRequest = { name: host, domains: [host], email: null, service: 'grafana' };
  const first = manager(docker, acme, clock);
  await first.certificates.loadState(signal);
  first.certificates.sync([long]);
  await first.certificates.idle();
  clock.advance(DAY);
  await first.certificates.idle();
  assert.equal(acme.orders.length, 1);
  assert.equal(first.certificates.status()[0]?.state, 'valid');
  assert.ok(docker.configs.some((config) => config.Spec?.Labels?.['swarmgate.state'] === `cert.${host}`));
  await first.certificates.stop();

  const second = manager(docker, acme, clock);
  await second.certificates.loadState(signal);
  second.certificates.sync([long]);
  await second.certificates.idle();
  assert.equal(acme.orders.length, 1, 'the stored certificate is used');
  assert.deepEqual(second.certificates.available(), [{ name: host, domains: [host], source: 'acme' }]);
});

test('a save that fails after issuance keeps the certificate served and retries only the save (F3)', async () => {
  const docker = new FakeDocker();
  const acme = new FakeAcme();
  const clock = new FakeClock(Date.now());
  const { certificates, logs, changes } = manager(docker, acme, clock);
  await certificates.loadState(signal);
  docker.refuseConfig = (_name, labels) => labels['swarmgate.state'] === 'cert.shop.test';
  certificates.sync([shop]);
  await certificates.idle();
  assert.equal(acme.orders.length, 1);
  assert.equal(changes(), 1, 'served at once');
  assert.deepEqual(certificates.available(), [
    { name: 'shop.test', domains: ['shop.test', 'www.shop.test'], source: 'acme' },
  ]);
  assert.equal(certificates.status()[0]?.state, 'unsaved');
  assert.match(certificates.status()[0]?.lastError ?? '', /not saved yet \(served from memory\)/);
  // An hour of failing saves: the backoff (10 s doubling to 80 s) retries the save, never the order.
  for (let i = 0; i < 60; i++) {
    clock.advance(60_000);
    await certificates.idle();
  }
  assert.equal(acme.orders.length, 1, 'never ordered again');
  const failures = logs.filter(
    (line) => line.msg === 'state not saved; it is served from memory and only the save is retried',
  );
  assert.ok(failures.length >= 20, `the save was retried (${failures.length} times)`);
  docker.refuseConfig = null;
  clock.advance(80_000);
  await certificates.idle();
  assert.equal(certificates.status()[0]?.state, 'valid');
  const stored = await new StateStore(docker, deriveStateKey('state key for the unit tests')).load(signal);
  assert.equal(
    (stored.values.get('cert.shop.test') as { certificatePem: string } | undefined)?.certificatePem,
    certificates.material('shop.test')?.certificatePem,
    'the certificate that was served is the one stored',
  );
  assert.equal(acme.orders.length, 1);
});

test('the order budget stops a loop: 3 orders per name per 24 h, across restarts', async () => {
  const docker = new FakeDocker();
  const acme = new FakeAcme();
  acme.lifetimeDays = 1;
  const clock = new FakeClock(Date.now());
  // A bug-like loop: every certificate is due for renewal 86 s after it is issued.
  const looping = { renewFraction: 0.999 };
  const { certificates } = manager(docker, acme, clock, undefined, { settings: looping });
  await certificates.loadState(signal);
  certificates.sync([shop]);
  for (let i = 0; i < 60; i++) {
    clock.advance(60_000);
    await certificates.idle();
  }
  assert.equal(acme.orders.length, 3, 'the budget allows 3 orders in the window');
  const status = certificates.status()[0];
  assert.equal(status?.state, 'budget-spent');
  assert.equal(status.recentOrders, 3);
  assert.match(status.lastError ?? '', /the order budget is spent; the next order is allowed at/);
  await certificates.stop();

  // A restart loop where every save of the certificate fails: each new controller finds no certificate.
  docker.refuseConfig = (_name, labels) => labels['swarmgate.state'] === 'cert.shop.test';
  for (let restart = 0; restart < 5; restart++) {
    const again = manager(docker, acme, clock, undefined, { settings: looping });
    await again.certificates.loadState(signal);
    again.certificates.sync([shop]);
    await again.certificates.idle();
    await again.certificates.stop();
    clock.advance(60_000);
  }
  assert.equal(acme.orders.length, 3, 'no restart buys an order');

  clock.advance(DAY);
  const later = manager(docker, acme, clock, undefined, { settings: looping });
  await later.certificates.loadState(signal);
  later.certificates.sync([shop]);
  await later.certificates.idle();
  assert.equal(acme.orders.length, 4, 'once the window has passed, one more order is allowed');
});

test('orders the CA refused leave the budget: a CA outage is paced by the backoff, not stopped for a day', async () => {
  const docker = new FakeDocker();
  const acme = new FakeAcme();
  acme.failNext = 5;
  const clock = new FakeClock(Date.now());
  const { certificates } = manager(docker, acme, clock);
  await certificates.loadState(signal);
  certificates.sync([shop]);
  for (let i = 0; i < 10; i++) {
    clock.advance(80_000);
    await certificates.idle();
  }
  assert.equal(acme.orders.length, 6);
  assert.equal(certificates.status()[0]?.state, 'valid');
  assert.equal(certificates.status()[0]?.recentOrders, 1);
});

test('a local clock far ahead of the CA neither drops the certificate from bundles nor re-orders in a loop (F15)', async () => {
  const docker = new FakeDocker();
  const acme = new FakeAcme();
  const realNow = Date.now();
  const first = manager(docker, acme, new FakeClock(realNow));
  await first.certificates.loadState(signal);
  first.certificates.sync([shop]);
  await first.certificates.idle();
  await first.certificates.stop();

  // The same Swarm, a controller whose clock is 100 days ahead (past the 90-day certificate's notAfter).
  const clock = new FakeClock(realNow + 100 * DAY);
  const skewed = manager(docker, acme, clock);
  await skewed.certificates.loadState(signal);
  assert.deepEqual(
    skewed.certificates.available().map((certificate) => certificate.name),
    ['shop.test'],
    'still in the bundles',
  );
  skewed.certificates.sync([shop]);
  for (let i = 0; i < 24 * 6; i++) {
    clock.advance(10 * 60_000);
    await skewed.certificates.idle();
  }
  assert.equal(acme.orders.length, 2, 'one order, then the new certificate shows the clock is ahead');
  assert.ok(
    skewed.logs.some(
      (line) =>
        line.msg === 'the local clock is ahead of the CA; certificate dates are judged by the CA’s time',
    ),
  );
  assert.equal(skewed.certificates.status()[0]?.state, 'valid');
  assert.deepEqual(
    skewed.certificates.available().map((certificate) => certificate.name),
    ['shop.test'],
  );
});

test('two controllers on one Swarm: only the lease holder orders and writes; the other follows and takes over (F9)', async () => {
  const docker = new FakeDocker();
  const acme = new FakeAcme();
  const clock = new FakeClock(Date.now());
  const lease = (holder: string): StateLease =>
    new StateLease({
      docker,
      clock,
      logger: createCapturingLogger().logger,
      instance: 'swarmgate',
      holder,
      ttlMs: 30_000,
    });
  const leaseA = lease('a');
  const leaseB = lease('b');
  const a = manager(docker, acme, clock, undefined, { lease: leaseA });
  const b = manager(docker, acme, clock, undefined, { lease: leaseB });
  await Promise.all([a.certificates.loadState(signal), b.certificates.loadState(signal)]);
  a.certificates.sync([shop]);
  b.certificates.sync([shop]);
  await Promise.all([a.certificates.idle(), b.certificates.idle()]);
  for (let i = 0; i < 3; i++) {
    clock.advance(10_000);
    await Promise.all([a.certificates.idle(), b.certificates.idle()]);
  }
  assert.equal(acme.orders.length, 1, 'one order between the two');
  assert.ok((leaseA.token() === null) !== (leaseB.token() === null), 'exactly one holds the lease');
  assert.equal(
    a.certificates.material('shop.test')?.certificatePem,
    b.certificates.material('shop.test')?.certificatePem,
    'the standby serves what the holder stored: both publish the same bundle',
  );

  // The holder crashes (no release); once its lease has expired the other takes over, and orders nothing new.
  const [dead, deadLease, alive] = leaseA.token() !== null ? [a, leaseA, b] : [b, leaseB, a];
  deadLease.release = async () => undefined;
  await dead.certificates.stop();
  for (let i = 0; i < 6; i++) {
    clock.advance(10_000);
    await alive.certificates.idle();
  }
  assert.ok(alive.logs.some((line) => line.msg === 'state lease changed' && line.holds === true));
  assert.equal(acme.orders.length, 1, 'the new holder found the certificate');
  clock.advance(61 * DAY);
  for (let i = 0; i < 3; i++) {
    clock.advance(10_000);
    await alive.certificates.idle();
  }
  assert.equal(acme.orders.length, 2, 'the new holder renews');
  await alive.certificates.stop();
});

/** The sealed records in Swarm, by name. */
function storedRecords(docker: FakeDocker): string[] {
  return docker.configs.map((config) => config.Spec?.Labels?.['swarmgate.state'] ?? '').sort();
}

test('LETSENCRYPT_TEST: the certificate is ordered from the staging directory, with its own account', async () => {
  const docker = new FakeDocker();
  const acme = new FakeAcme();
  const clock = new FakeClock(Date.now());
  const { certificates } = manager(docker, acme, clock, undefined, { settings: directories });
  await certificates.loadState(signal);
  certificates.sync([shop, { ...other, directory: STAGING }]);
  await certificates.idle();
  const byName = new Map(acme.orders.map((order) => [order.domains[0], order]));
  assert.equal(byName.get('shop.test')?.directoryUrl, settings.directoryUrl);
  assert.equal(byName.get('other.test')?.directoryUrl, STAGING);
  assert.equal(acme.accountKeys, 2, 'one account per directory');
  assert.notEqual(byName.get('shop.test')?.accountKeyPem, byName.get('other.test')?.accountKeyPem);
  assert.equal(storedRecords(docker).filter((name) => name.startsWith('account.')).length, 2);
  assert.deepEqual(
    certificates.status().map((row) => [row.name, row.directory, row.state]),
    [
      ['other.test', STAGING, 'valid'],
      ['shop.test', settings.directoryUrl, 'valid'],
    ],
  );
});

test('a directory the controller was not given is never contacted, whatever the request says (SSRF)', async () => {
  const docker = new FakeDocker();
  const acme = new FakeAcme();
  const clock = new FakeClock(Date.now());
  const { certificates, logs } = manager(docker, acme, clock, undefined, { settings: directories });
  await certificates.loadState(signal);
  certificates.sync([shop, { ...other, directory: 'https://169.254.169.254/latest' }]);
  await certificates.idle();
  clock.advance(DAY);
  await certificates.idle();
  assert.deepEqual(
    acme.orders.map((order) => [order.domains[0], order.directoryUrl]),
    [['shop.test', settings.directoryUrl]],
    'only the allowed request is ordered',
  );
  assert.equal(acme.accountKeys, 1, 'no account is made for it either');
  assert.ok(!storedRecords(docker).includes('orders.other.test'), 'no order is counted for it');
  const row = certificates.status().find((status) => status.name === 'other.test');
  assert.equal(row?.state, 'failed');
  assert.match(row?.lastError ?? '', /169\.254\.169\.254.*SWARMGATE_ACME_DIRECTORIES/);
  assert.equal(logs.filter((line) => line.msg === 'ACME directory not allowed').length, 1, 'logged once');

  // An allowed directory is ordered from.
  certificates.sync([shop, { ...other, directory: ALLOWED }]);
  await certificates.idle();
  assert.equal(acme.orders.at(-1)?.directoryUrl, ALLOWED);
});

test('switching a certificate to another directory and back re-orders it each time, within the order budget', async () => {
  const docker = new FakeDocker();
  const acme = new FakeAcme();
  const clock = new FakeClock(Date.now());
  const { certificates, logs } = manager(docker, acme, clock, undefined, { settings: directories });
  await certificates.loadState(signal);
  certificates.sync([{ ...shop, directory: STAGING }]);
  await certificates.idle();
  const staged = certificates.material('shop.test')?.certificatePem;
  assert.equal(acme.orders.at(-1)?.directoryUrl, STAGING);

  // Back to the controller's directory: ordered again once the minimum retry time has passed.
  certificates.sync([shop]);
  await certificates.idle();
  assert.equal(acme.orders.length, 1, 'not within the minimum retry time');
  assert.equal(certificates.material('shop.test')?.certificatePem, staged, 'the old one is served meanwhile');
  clock.advance(settings.retryMinMs);
  await certificates.idle();
  assert.equal(acme.orders.length, 2);
  assert.equal(acme.orders.at(-1)?.directoryUrl, settings.directoryUrl);
  assert.notEqual(certificates.material('shop.test')?.certificatePem, staged);
  assert.ok(logs.some((line) => line.msg === 'ordering certificate' && line.reason === 'directory-changed'));
  assert.equal(certificates.status()[0]?.directory, settings.directoryUrl);

  // Flapping the label cannot loop against a CA: the third switch in a day spends the budget (3 orders).
  certificates.sync([{ ...shop, directory: STAGING }]);
  clock.advance(settings.retryMinMs);
  await certificates.idle();
  certificates.sync([shop]);
  clock.advance(settings.retryMinMs);
  await certificates.idle();
  assert.equal(acme.orders.length, 3);
  assert.equal(certificates.status()[0]?.state, 'budget-spent');
});

test("every directory's account survives a restart: no new account key after the controller moves", async () => {
  const docker = new FakeDocker();
  const acme = new FakeAcme();
  const clock = new FakeClock(Date.now());
  const first = manager(docker, acme, clock, undefined, { settings: directories });
  await first.certificates.loadState(signal);
  first.certificates.sync([shop, { ...other, directory: STAGING }]);
  await first.certificates.idle();
  await first.certificates.stop();
  const keyOf = new Map(acme.orders.map((order) => [order.directoryUrl, order.accountKeyPem]));
  assert.equal(acme.accountKeys, 2);

  const second = manager(docker, acme, clock, undefined, { settings: directories });
  await second.certificates.loadState(signal);
  // Swap the two certificates' directories: both are ordered again, each with the stored account of its new one.
  second.certificates.sync([
    { ...shop, directory: STAGING },
    { ...other, directory: null },
  ]);
  clock.advance(settings.retryMinMs);
  await second.certificates.idle();
  assert.equal(acme.orders.length, 4);
  assert.equal(acme.accountKeys, 2, 'no account key is made after the restart');
  for (const order of acme.orders.slice(2))
    assert.equal(
      order.accountKeyPem,
      keyOf.get(order.directoryUrl),
      `${order.domains[0]} uses the stored account`,
    );
});

test('the controller moved from staging to production (SWARMGATE_ACME_DIRECTORY): its certificates are ordered again', async () => {
  const docker = new FakeDocker();
  const acme = new FakeAcme();
  const clock = new FakeClock(Date.now());
  const staging = manager(docker, acme, clock, undefined, { settings: { directoryUrl: STAGING } });
  await staging.certificates.loadState(signal);
  staging.certificates.sync([shop]);
  await staging.certificates.idle();
  await staging.certificates.stop();
  const served = staging.certificates.material('shop.test')?.certificatePem;

  const production = manager(docker, acme, clock);
  await production.certificates.loadState(signal);
  production.certificates.sync([shop]);
  await production.certificates.idle();
  assert.deepEqual(
    acme.orders.map((order) => order.directoryUrl),
    [STAGING, settings.directoryUrl],
  );
  assert.notEqual(production.certificates.material('shop.test')?.certificatePem, served);
});

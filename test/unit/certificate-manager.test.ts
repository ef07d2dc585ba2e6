import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  CertificateManager,
  decideCertificateAction,
  renewalTime,
  retryDelay,
} from '../../src/acme/certificate-manager.ts';
import type { AcmeSettings } from '../../src/acme/certificate-manager.ts';
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

function manager(docker: FakeDocker, acme: FakeAcme, clock: FakeClock, key = 'state key for the unit tests') {
  const capture = createCapturingLogger();
  let changes = 0;
  const certificates = new CertificateManager({
    acme,
    store: new StateStore(docker, deriveStateKey(key)),
    clock,
    logger: capture.logger,
    settings,
    userCertificates: [],
    onChange: () => changes++,
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

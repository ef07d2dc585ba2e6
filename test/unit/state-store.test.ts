import assert from 'node:assert/strict';
import { test } from 'node:test';
import { deriveStateKey, seal, stateConfigName, StateStore, unseal } from '../../src/acme/state-store.ts';
import { StateLease } from '../../src/acme/state-lease.ts';
import { isSwarmgateError } from '../../src/errors.ts';
import { createCapturingLogger } from '../../src/logger.ts';
import { FakeClock } from '../support/fake-clock.ts';
import { FakeDocker } from '../support/fake-docker.ts';

const key = deriveStateKey('a state key that is long enough');
const otherKey = deriveStateKey('another state key, also long enough');
const signal = new AbortController().signal;

test('state: sealed values open with the same key and name', () => {
  const value = { keyPem: '-----BEGIN PRIVATE KEY-----\nsecret\n-----END PRIVATE KEY-----', n: 1 };
  const blob = seal(key, 'cert.a', value);
  assert.ok(!blob.toString().includes('secret'), 'the private key is not readable in the stored blob');
  assert.deepEqual(unseal(key, 'cert.a', blob), value);
});

test('state: a wrong key, tampered data or a blob moved to another name is detected', () => {
  const blob = seal(key, 'cert.a', { hello: 'world' });
  const unreadable = (run: () => unknown): void =>
    assert.throws(run, (error: unknown) => isSwarmgateError(error, 'ERR_STATE_UNREADABLE'));
  unreadable(() => unseal(otherKey, 'cert.a', blob));
  unreadable(() => unseal(key, 'cert.b', blob));
  const sealed = JSON.parse(blob.toString()) as { data: string };
  const bytes = Buffer.from(sealed.data, 'base64');
  bytes[0] = (bytes[0] ?? 0) ^ 1;
  unreadable(() =>
    unseal(key, 'cert.a', Buffer.from(JSON.stringify({ ...sealed, data: bytes.toString('base64') }))),
  );
  unreadable(() => unseal(key, 'cert.a', Buffer.from('not json')));
});

test('state store: saves new generations in Docker configs, keeps only the newest, and reloads it', async () => {
  const docker = new FakeDocker();
  const store = new StateStore(docker, key);
  await store.save('cert.shop', { version: 1 }, signal);
  await store.save('cert.shop', { version: 2 }, signal);
  await store.save('account.x', { url: 'u' }, signal);
  assert.equal(docker.configs.length, 2, 'older generations are removed');
  const fresh = new StateStore(docker, key);
  const loaded = await fresh.load(signal);
  assert.deepEqual(loaded.values.get('cert.shop'), { version: 2 });
  assert.deepEqual(loaded.values.get('account.x'), { url: 'u' });
  assert.equal(loaded.unreadable.size, 0);
  await fresh.save('cert.shop', { version: 3 }, signal);
  assert.deepEqual((await new StateStore(docker, key).load(signal)).values.get('cert.shop'), { version: 3 });
});

test('state store: records that do not open are listed as unreadable, not dropped', async () => {
  const docker = new FakeDocker();
  await new StateStore(docker, key).save('cert.shop', { version: 1 }, signal);
  const loaded = await new StateStore(docker, otherKey).load(signal);
  assert.equal(loaded.values.size, 0);
  assert.match(loaded.unreadable.get('cert.shop') ?? '', /sealed with another state key/);
});

test('fake Docker enforces swarmkit config names: at most 64 [a-zA-Z0-9-_.], alphanumeric at both ends', async () => {
  const docker = new FakeDocker();
  await docker.createConfig('a'.repeat(64), {}, Buffer.from('x'));
  for (const name of ['a'.repeat(65), '-a', 'a_', 'a b', 'a/b', ''])
    await assert.rejects(
      docker.createConfig(name, {}, Buffer.from('x')),
      (error: unknown) => isSwarmgateError(error, 'ERR_DOCKER_REQUEST') && /invalid name/.test(error.message),
      name,
    );
});

test('state store: records of long names (host names of 35+ characters) are saved under a bounded name', async () => {
  const docker = new FakeDocker();
  const store = new StateStore(docker, key);
  const record = `cert.${'grafana.monitoring.prod.example.com'}`;
  const longest = `registry.${'a'.repeat(60)}.${'b'.repeat(60)}.${'c'.repeat(60)}.example.com:5000`;
  for (let generation = 1; generation <= 3; generation++) await store.save(record, { generation }, signal);
  await store.save(longest, { host: 'long' }, signal);
  for (const config of docker.configs) {
    assert.ok((config.Spec?.Name ?? '').length <= 64, config.Spec?.Name);
    assert.match(config.Spec?.Name ?? '', /^sg-[0-9a-f]{8}-[0-9a-f]{16}-\d+$/);
  }
  const loaded = await new StateStore(docker, key).load(signal);
  assert.deepEqual(loaded.values.get(record), { generation: 3 });
  assert.deepEqual(loaded.values.get(longest), { host: 'long' });
  assert.ok(
    docker.configs.some((config) => config.Spec?.Labels?.['swarmgate.state'] === record),
    'the readable record name is a label',
  );
});

test('state store: the largest generation still fits in 64 characters', () => {
  assert.ok(
    stateConfigName('a-very-long-instance-name'.repeat(2), 'cert.x', Number.MAX_SAFE_INTEGER).length <= 64,
  );
});

/** A config as the store wrote them before names were hashed (no instance or key id label). */
function legacyConfig(
  docker: FakeDocker,
  record: string,
  generation: number,
  value: unknown,
  sealKey = key,
): void {
  docker.configs.push({
    ID: `legacy-${record}-${generation}`,
    Spec: {
      Name: `swarmgate-state-${record.slice(0, 40)}-00000000-${generation}`,
      Labels: { 'swarmgate.state': record, 'swarmgate.state.generation': String(generation) },
      Data: seal(sealKey, record, value).toString('base64'),
    },
  });
}

test('state store: old-format records are read, rewritten in the new form, and removed only after that save', async () => {
  const docker = new FakeDocker();
  legacyConfig(docker, 'cert.shop', 4, { version: 4 });
  legacyConfig(docker, 'account.x', 2, { url: 'u' });
  const store = new StateStore(docker, key);
  const loaded = await store.load(signal);
  assert.deepEqual(loaded.values.get('cert.shop'), { version: 4 });
  assert.deepEqual(loaded.values.get('account.x'), { url: 'u' });

  docker.createConfigFailures = 1;
  await assert.rejects(store.save('cert.shop', { version: 5 }, signal));
  assert.ok(
    docker.configs.some((config) => config.ID === 'legacy-cert.shop-4'),
    'a failed save leaves the old record in place',
  );
  await store.save('cert.shop', { version: 5 }, signal);
  assert.ok(!docker.configs.some((config) => config.ID === 'legacy-cert.shop-4'), 'the old record is gone');
  const written = docker.configs.find((config) => config.Spec?.Labels?.['swarmgate.state'] === 'cert.shop');
  assert.equal(written?.Spec?.Labels?.['swarmgate.state.generation'], '5', 'generations continue');
  assert.equal(written?.Spec?.Labels?.['swarmgate.instance'], 'swarmgate');
  const reloaded = await new StateStore(docker, key).load(signal);
  assert.deepEqual(reloaded.values.get('cert.shop'), { version: 5 });
  assert.deepEqual(reloaded.values.get('account.x'), { url: 'u' }, 'records not saved again stay readable');
});

test('state store: two instances on one Swarm never read, overwrite or remove each other’s records', async () => {
  const docker = new FakeDocker();
  legacyConfig(docker, 'cert.old', 1, { owner: 'default' });
  const real = new StateStore(docker, key);
  const e2e = new StateStore(docker, otherKey, { instance: 'sg-e2e' });
  await real.save('cert.shop', { owner: 'real' }, signal);
  await e2e.save('cert.shop', { owner: 'e2e' }, signal);
  await e2e.save('cert.shop', { owner: 'e2e', again: true }, signal);
  await e2e.save('cert.e2e-only', { owner: 'e2e' }, signal);
  await e2e.remove('cert.old', signal);

  const realLoaded = await new StateStore(docker, key).load(signal);
  assert.deepEqual(Object.fromEntries(realLoaded.values), {
    'cert.old': { owner: 'default' },
    'cert.shop': { owner: 'real' },
  });
  assert.equal(realLoaded.unreadable.size, 0, 'the other instance’s records (another key) are not even seen');
  const e2eLoaded = await new StateStore(docker, otherKey, { instance: 'sg-e2e' }).load(signal);
  assert.deepEqual(Object.fromEntries(e2eLoaded.values), {
    'cert.shop': { owner: 'e2e', again: true },
    'cert.e2e-only': { owner: 'e2e' },
  });
  assert.equal(e2eLoaded.unreadable.size, 0);
  for (const config of docker.configs.filter((c) => !c.ID?.startsWith('legacy-')))
    assert.ok(config.Spec?.Labels?.['swarmgate.instance'], 'every new record carries its instance');
  assert.throws(() => new StateStore(docker, key, { instance: 'Bad Name' }));
});

test('state store: a record sealed with another key is told apart from a damaged one', async () => {
  const docker = new FakeDocker();
  await new StateStore(docker, key).save('cert.a', { a: 1 }, signal);
  await new StateStore(docker, key).save('cert.b', { b: 1 }, signal);
  const wrong = await new StateStore(docker, otherKey).load(signal);
  assert.deepEqual([...wrong.sealedWithOtherKey].sort(), ['cert.a', 'cert.b']);
  assert.match(wrong.unreadable.get('cert.a') ?? '', /sealed with another state key/);

  const damaged = docker.configs.find((config) => config.Spec?.Labels?.['swarmgate.state'] === 'cert.a');
  assert.ok(damaged?.Spec);
  damaged.Spec.Data = Buffer.from('{"v":1,"iv":"AAAA","tag":"AAAA","data":"AAAA"}').toString('base64');
  const right = await new StateStore(docker, key).load(signal);
  assert.deepEqual(right.values.get('cert.b'), { b: 1 });
  assert.match(right.unreadable.get('cert.a') ?? '', /wrong state key or tampered/);
  assert.equal(
    right.sealedWithOtherKey.size,
    0,
    'one damaged record under the right key is damage, not a key change',
  );
});

test('state store: old records without a key id count as another key only when none of them opens', async () => {
  const docker = new FakeDocker();
  legacyConfig(docker, 'cert.a', 1, { a: 1 });
  legacyConfig(docker, 'cert.b', 1, { b: 1 });
  assert.deepEqual([...(await new StateStore(docker, otherKey).load(signal)).sealedWithOtherKey].sort(), [
    'cert.a',
    'cert.b',
  ]);
  const damaged = docker.configs[0];
  assert.ok(damaged?.Spec);
  damaged.Spec.Data = 'bm90IGpzb24=';
  const right = await new StateStore(docker, key).load(signal);
  assert.equal(right.unreadable.size, 1);
  assert.equal(right.sealedWithOtherKey.size, 0);
});

test('state store: concurrent saves of one record that collide on a generation both land, the newest wins', async () => {
  const docker = new FakeDocker();
  const a = new StateStore(docker, key);
  const b = new StateStore(docker, key);
  await a.save('account.x', { n: 0 }, signal);
  await b.load(signal);
  // Both read generation 1 and both try generation 2: Docker lets one create it, the other must take 3.
  await Promise.all([a.save('account.x', { n: 1 }, signal), b.save('account.x', { n: 2 }, signal)]);
  // The same from one store: saves of one record queue instead of racing.
  await Promise.all([a.save('cert.y', { n: 1 }, signal), a.save('cert.y', { n: 2 }, signal)]);
  const loaded = await new StateStore(docker, key).load(signal);
  assert.deepEqual(loaded.values.get('account.x'), { n: 2 });
  assert.deepEqual(loaded.values.get('cert.y'), { n: 2 });
  assert.equal(
    docker.configs.filter((config) => config.Spec?.Labels?.['swarmgate.state'] === 'account.x').length,
    1,
    'older generations are removed',
  );
});

test('state lease: one holder at a time; a holder whose lease lapsed cannot write, a late write never wins (F9)', async () => {
  const docker = new FakeDocker();
  const clock = new FakeClock();
  const logger = createCapturingLogger().logger;
  const leaseA = new StateLease({ docker, clock, logger, instance: 'swarmgate', holder: 'a', ttlMs: 30_000 });
  const leaseB = new StateLease({ docker, clock, logger, instance: 'swarmgate', holder: 'b', ttlMs: 30_000 });
  const a = new StateStore(docker, key, { fence: leaseA });
  const b = new StateStore(docker, key, { fence: leaseB });
  const [gotA, gotB] = await Promise.all([leaseA.tick(signal), leaseB.tick(signal)]);
  assert.deepEqual([gotA, gotB], [true, false], 'the create-by-name lets exactly one win');
  await a.save('cert.shop', { by: 'a' }, signal);
  await assert.rejects(b.save('cert.shop', { by: 'b' }, signal), (error: unknown) =>
    isSwarmgateError(error, 'ERR_STATE_LEASE'),
  );
  assert.equal(await leaseB.tick(signal), false, 'not while A holds it');

  clock.advance(30_001); // A is paused past its lease
  assert.equal(await leaseB.tick(signal), true);
  assert.ok((leaseB.token() ?? 0) > 1, 'the new holder has a higher fence token');
  await assert.rejects(a.save('cert.shop', { by: 'a, late' }, signal), (error: unknown) =>
    isSwarmgateError(error, 'ERR_STATE_LEASE'),
  );
  await b.save('cert.shop', { by: 'b' }, signal);

  // A write that was already in flight when the lease moved: the store takes it back after reading the lease.
  const inFlight = new StateStore(docker, key, { fence: { token: () => 1, confirm: async () => false } });
  await assert.rejects(inFlight.save('cert.shop', { by: 'a, in flight' }, signal), (error: unknown) =>
    isSwarmgateError(error, 'ERR_STATE_LEASE'),
  );
  // And if that writer crashed before taking it back: readers rank the fence above the generation.
  const crashed = new StateStore(docker, key, { fence: { token: () => 1, confirm: async () => true } });
  await crashed.save('cert.shop', { by: 'a, crashed' }, signal);
  const loaded = await new StateStore(docker, key).load(signal);
  assert.deepEqual(loaded.values.get('cert.shop'), { by: 'b' });
});

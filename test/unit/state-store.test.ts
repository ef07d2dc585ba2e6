import assert from 'node:assert/strict';
import { test } from 'node:test';
import { deriveStateKey, seal, StateStore, unseal } from '../../src/acme/state-store.ts';
import { isSwarmgateError } from '../../src/errors.ts';
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
  assert.match(loaded.unreadable.get('cert.shop') ?? '', /wrong state key or tampered/);
});

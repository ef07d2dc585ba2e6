// The registry client's Bearer flow with a fake transport: the registry picks the realm, so the stored password
// goes there only over https and only to the registry's own host or a realm host the operator stored.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isSwarmgateError } from '../../src/errors.ts';
import type { StoredCredential } from '../../src/registry/credential-store.ts';
import { RegistryClient } from '../../src/registry/registry-client.ts';
import type { RegistryTransport } from '../../src/registry/registry-client.ts';
import { FakeClock } from '../support/fake-clock.ts';

const PASSWORD = 'stored-registry-password';
const BASIC = `Basic ${Buffer.from(`robot:${PASSWORD}`).toString('base64')}`;

function credential(realmHosts: string[] = []): StoredCredential {
  return {
    host: 'registry.test',
    username: 'robot',
    password: PASSWORD,
    imagePrefix: null,
    caPem: null,
    realmHosts,
    updatedAt: '2026-06-01T00:00:00.000Z',
  };
}

/** A registry at registry.test whose challenge names `realm`; every token service answers with a token. */
function registryWithRealm(realm: string): {
  transport: RegistryTransport;
  requests: { url: string; authorization: string }[];
} {
  const requests: { url: string; authorization: string }[] = [];
  const transport: RegistryTransport = async (url, headers) => {
    requests.push({ url: url.toString(), authorization: headers.authorization ?? '' });
    if (url.pathname !== '/v2/_catalog') {
      return headers.authorization === BASIC
        ? { status: 200, headers: {}, body: JSON.stringify({ token: 'tok-1' }) }
        : { status: 401, headers: {}, body: '{}' };
    }
    if (headers.authorization !== 'Bearer tok-1') {
      return {
        status: 401,
        headers: { 'www-authenticate': `Bearer realm="${realm}",service="registry"` },
        body: '{}',
      };
    }
    return { status: 200, headers: {}, body: JSON.stringify({ repositories: ['apps/web'] }) };
  };
  return { transport, requests };
}

/** Every place the stored password was sent to. */
function basicSentTo(requests: { url: string; authorization: string }[]): string[] {
  return requests
    .filter((request) => request.authorization === BASIC)
    .map((request) => new URL(request.url).host);
}

test('a realm over plain http is refused and gets nothing', async () => {
  const { transport, requests } = registryWithRealm('http://registry.test/token');
  const client = new RegistryClient(transport, new FakeClock());
  await assert.rejects(
    client.catalog(credential(), 10, null, AbortSignal.timeout(5000)),
    (error: unknown) => isSwarmgateError(error, 'ERR_REGISTRY_REALM') && /https/.test(error.message),
  );
  assert.ok(!requests.some((request) => request.url.startsWith('http:')), 'nothing sent over http');
});

test('a realm on another host (an internal address) is refused unless the credential allows that host', async () => {
  for (const realm of [
    'https://169.254.169.254/latest/meta-data/iam/',
    'https://auth.test/token',
    'https://registry.test:8443/token',
    'https://robot:x@registry.test/token',
  ]) {
    const { transport, requests } = registryWithRealm(realm);
    const client = new RegistryClient(transport, new FakeClock());
    await assert.rejects(
      client.catalog(credential(), 10, null, AbortSignal.timeout(5000)),
      (error: unknown) => isSwarmgateError(error, 'ERR_REGISTRY_REALM'),
      realm,
    );
    assert.deepEqual(
      requests.map((request) => new URL(request.url).host),
      ['registry.test'],
      realm,
    );
    assert.deepEqual(
      basicSentTo(requests),
      ['registry.test'],
      `${realm}: the password went only to the registry`,
    );
  }
});

test("the registry's own host and an allowed realm host get the credentials and the flow works", async () => {
  for (const [realm, allowed] of [
    ['https://registry.test/token', []],
    ['https://registry.test:443/token', []],
    ['https://auth.test/token', ['auth.test']],
    ['https://auth.test:8443/token', ['auth.test:8443']],
  ] as const) {
    const { transport, requests } = registryWithRealm(realm);
    const client = new RegistryClient(transport, new FakeClock());
    const page = await client.catalog(credential([...allowed]), 10, null, AbortSignal.timeout(5000));
    assert.deepEqual(page.items, ['apps/web'], realm);
    assert.ok(
      requests.some(
        (request) => request.url.startsWith(new URL(realm).href) && request.authorization === BASIC,
      ),
      realm,
    );
  }
});

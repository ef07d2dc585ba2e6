// TLS on a real Swarm with a real ACME CA (Pebble): certificates through any edge, HTTPS semantics, state that
// survives the controller moving, and a CA outage that leaves HTTP routing alone.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { test } from 'node:test';
import tls from 'node:tls';
import type { ControllerStatus, HttpsResult } from './support/lab.ts';
import {
  controllerStatus,
  edgesInSync,
  httpsGet,
  pebbleRoot,
  createService,
  docker,
  EDGE_HTTPS_PORT,
  removeService,
  request,
  STACK,
  uniqueName,
  waitFor,
  waitForServiceRunning,
} from './support/lab.ts';

/** HTTPS to the lab edge on 127.0.0.1, verified against Pebble's root. */
function edgeHttps(host: string, root: string, urlPath = '/'): Promise<HttpsResult> {
  return httpsGet(EDGE_HTTPS_PORT, urlPath, host, root);
}

async function waitForHttps(host: string, service: string): Promise<HttpsResult> {
  const root = await pebbleRoot();
  return waitFor(
    `a verified HTTPS answer for ${host}`,
    async () => {
      const result = await edgeHttps(host, root);
      return result.status === 200 && result.body.includes(`"task":"${service}.`) ? result : undefined;
    },
    { timeoutMs: 90_000, intervalMs: 250 },
  );
}

function negotiatedProtocol(host: string, root: string): Promise<string | false> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect(
      {
        host: '127.0.0.1',
        port: EDGE_HTTPS_PORT,
        servername: host,
        ca: root,
        ALPNProtocols: ['h2', 'http/1.1'],
      },
      () => {
        resolve(socket.alpnProtocol ?? false);
        socket.end();
      },
    );
    socket.on('error', reject);
  });
}

async function runningContainer(service: string): Promise<string> {
  const id = (await docker(['ps', '-q', '--filter', `name=${service}.`, '--filter', 'status=running'])).split(
    '\n',
  )[0];
  if (!id) throw new Error(`no running container of ${service}`);
  return id;
}

async function pebbleOrders(): Promise<number> {
  const logs = await docker(['service', 'logs', '--raw', `${STACK}_pebble`]);
  return logs.split('\n').filter((line) => line.includes('POST /order-plz')).length;
}

/**
 * The status once `host`'s certificate is stored: a certificate is served first, then stored in Swarm in the
 * background, and reads 'unsaved' meanwhile.
 */
function storedCertificate(host: string): Promise<ControllerStatus> {
  return waitFor(`the certificate of ${host} to be stored`, async () => {
    const current = await controllerStatus();
    const entry = current.certificates.find((row) => row.name === host);
    return entry && entry.state !== 'unsaved' ? current : undefined;
  });
}

test('a labelled service gets a certificate from the CA through the edge, with nginx-proxy HTTPS semantics', async (t) => {
  const name = uniqueName('sg-e2e-tls');
  const host = `${name}.e2e.test`;
  t.after(() => removeService(name));
  await createService({ name, labels: { VIRTUAL_HOST: host, LETSENCRYPT_HOST: host } });

  const answer = await waitForHttps(host, name);
  assert.equal(answer.headers['strict-transport-security'], 'max-age=31536000', 'HSTS on HTTPS');
  const root = await pebbleRoot();
  assert.equal(await negotiatedProtocol(host, root), 'h2', 'HTTP/2 is on');

  const get = await request(host, '/some/page?x=1');
  assert.equal(get.status, 301);
  assert.equal(get.headers.location, `https://${host}/some/page?x=1`);
  assert.equal(get.headers['strict-transport-security'], undefined, 'no HSTS over plain HTTP');
  const post = await request(host, '/form', { method: 'POST' });
  assert.equal(post.status, 308, 'other methods keep method and body');
  const challenge = await request(host, '/.well-known/acme-challenge/unknown-token');
  assert.equal(challenge.status, 404, 'the challenge path reaches the controller, never a redirect');

  const status = await storedCertificate(host);
  const certificate = status.certificates.find((entry) => entry.name === host);
  assert.equal(certificate?.state, 'valid');
  assert.ok(Date.parse(certificate.notAfter ?? '') > Date.now());
  assert.ok(!JSON.stringify(status).includes('PRIVATE KEY'), 'no key in the status API');

  await assert.rejects(negotiatedProtocol('unknown-name.e2e.test', root), 'unknown names get no handshake');
});

/** The lab controller's staging directory (stack.e2e.yml): the same Pebble under a second name. */
const STAGING_DIRECTORY = 'https://pebble-staging:14000/dir';

test('LETSENCRYPT_TEST=true orders from the staging directory with its own account; an ACME_CA_URI not allowed orders nothing', async (t) => {
  const staged = uniqueName('sg-e2e-staging');
  const stagedHost = `${staged}.e2e.test`;
  const refused = uniqueName('sg-e2e-ca');
  const refusedHost = `${refused}.e2e.test`;
  t.after(() => Promise.all([removeService(staged), removeService(refused)]));
  await createService({
    name: staged,
    labels: { VIRTUAL_HOST: stagedHost, LETSENCRYPT_HOST: stagedHost, LETSENCRYPT_TEST: 'true' },
  });
  // A directory no operator listed (the cloud metadata address): the controller must never contact it.
  await createService({
    name: refused,
    labels: {
      VIRTUAL_HOST: refusedHost,
      LETSENCRYPT_HOST: refusedHost,
      ACME_CA_URI: 'https://169.254.169.254/directory',
    },
  });

  await waitForHttps(stagedHost, staged);
  const status = await storedCertificate(stagedHost);
  const certificate = status.certificates.find((entry) => entry.name === stagedHost);
  assert.equal(certificate?.state, 'valid');
  assert.equal(certificate.directory, STAGING_DIRECTORY, 'ordered from the staging directory');
  // Its account is a sealed record of its own, beside the one of the controller's directory.
  const accounts = (
    await docker([
      'config',
      'ls',
      '--filter',
      'label=swarmgate.instance=sg-e2e',
      '--format',
      '{{.Label "swarmgate.state"}}',
    ])
  )
    .split('\n')
    .filter((record) => record.startsWith('account.'));
  const accountOf = (directory: string): string =>
    `account.${createHash('sha256').update(directory).digest('hex').slice(0, 12)}`;
  assert.ok(
    accounts.includes(accountOf(STAGING_DIRECTORY)),
    `a staging account among ${accounts.join(', ')}`,
  );
  assert.ok(
    accounts.includes(accountOf('https://pebble:14000/dir')),
    'the production account is still there',
  );

  const problem = status.problems.find((entry) => entry.service === refused);
  assert.equal(problem?.label, 'ACME_CA_URI');
  assert.equal(problem.code, 'INVALID_LABEL');
  assert.ok(
    !status.certificates.some((entry) => entry.name === refusedHost && entry.state !== 'pending'),
    `nothing ordered for ${refusedHost}: ${JSON.stringify(status.certificates.filter((entry) => entry.name === refusedHost))}`,
  );
  const plain = await request(refusedHost, '/');
  assert.equal(plain.status, 200, 'the refused service is still routed over HTTP');
});

test('the controller moved to a fresh container serves the same certificate, and the CA sees no new order', async (t) => {
  const name = uniqueName('sg-e2e-keep');
  const host = `${name}.e2e.test`;
  t.after(() => removeService(name));
  await createService({ name, labels: { VIRTUAL_HOST: host, LETSENCRYPT_HOST: host } });
  const before = await waitForHttps(host, name);
  // Stored in Swarm before the move: a controller moved while it was still saving would rightly order again.
  await storedCertificate(host);
  const ordersBefore = await pebbleOrders();

  const oldController = await runningContainer(`${STACK}_controller`);
  await docker(['service', 'update', '--detach', '--force', `${STACK}_controller`]);
  const newController = await waitFor(
    'a new controller container',
    async () => {
      const id = await runningContainer(`${STACK}_controller`).catch(() => '');
      return id && id !== oldController ? id : undefined;
    },
    { timeoutMs: 90_000, intervalMs: 500 },
  );
  const startedAt = Date.parse(await docker(['inspect', '--format', '{{.State.StartedAt}}', newController]));
  await waitFor(
    'the new controller to reconcile and the edges to follow it',
    async () => {
      const status = await controllerStatus();
      const reconciled = status.lastReconcile !== null && Date.parse(status.lastReconcile.at) > startedAt;
      return reconciled &&
        status.config &&
        status.edges.length > 0 &&
        status.edges.every((edge) => edge.inSync)
        ? true
        : undefined;
    },
    { timeoutMs: 90_000, intervalMs: 500 },
  );
  assert.equal(
    await runningContainer(`${STACK}_controller`),
    newController,
    'the status came from the new controller',
  );
  const after = await waitForHttps(host, name);
  assert.equal(after.serial, before.serial, 'the same certificate is served');
  assert.equal(await pebbleOrders(), ordersBefore, 'no new order reached the CA');
});

test('with the CA down, HTTP routing is unaffected, retries are logged, and the certificate comes once the CA is back', async (t) => {
  const pebble = `${STACK}_pebble`;
  const name = uniqueName('sg-e2e-outage');
  const host = `${name}.e2e.test`;
  t.after(async () => {
    await docker(['service', 'scale', '--detach', `${pebble}=1`]);
    await waitForServiceRunning(pebble, 1);
    await removeService(name);
  });
  // The previous test moved the controller: start once the edges talk to the new one, so this test times the CA
  // outage and not the edges' reconnection.
  await edgesInSync();
  await docker(['service', 'scale', '--detach', `${pebble}=0`]);
  // Gone, not only told to stop: a stopping Pebble still answers, and would issue the certificate below.
  await waitFor('Pebble to stop', async () =>
    (await docker(['service', 'ps', '-q', '--filter', 'desired-state=running', pebble])) === '' &&
    (await docker(['ps', '-q', '--filter', `name=${pebble}.`])) === ''
      ? true
      : undefined,
  );

  await createService({ name, labels: { VIRTUAL_HOST: host, LETSENCRYPT_HOST: host } });
  const plain = await waitFor(`${host} over HTTP`, async () => {
    const result = await request(host);
    return result.status === 200 ? result : undefined;
  });
  assert.ok(plain.body.includes(`"task":"${name}.`), 'no certificate yet: the host is served over HTTP');

  const failed = await waitFor(
    'the failed order to be reported',
    async () => {
      const status = await controllerStatus();
      const entry = status.certificates.find((candidate) => candidate.name === host);
      return entry && entry.attempts >= 1 ? entry : undefined;
    },
    // With the CA's name gone from DNS, one attempt can take a minute of resolver timeouts.
    { timeoutMs: 360_000, intervalMs: 500 },
  );
  assert.equal(failed.state === 'failed' || failed.state === 'ordering', true);
  const logs = await docker(['service', 'logs', '--raw', `${STACK}_controller`]);
  assert.ok(
    logs
      .split('\n')
      .some((line) => line.includes('certificate order failed; will retry') && line.includes(host)),
  );
  assert.equal((await request(host)).status, 200, 'HTTP keeps working during retries');

  await docker(['service', 'scale', '--detach', `${pebble}=1`]);
  await waitForServiceRunning(pebble, 1);
  await waitForHttps(host, name);
  assert.equal((await request(host)).status, 301, 'with a certificate, HTTP redirects');
});

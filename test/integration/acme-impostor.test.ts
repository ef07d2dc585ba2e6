// An overlay container that takes the alias swarmgate-controller: Docker's DNS then returns its address beside the
// controller's, and the edge's ACME location once proxied to either in plain HTTP. The impostor answered most of
// the CA's validations (a certificate for every routed host, or sabotaged real orders) and received the visitors'
// Cookie and Authorization headers. With a real nginx and a DNS server that returns the real controller and two
// impostors (one with a certificate of the same name, one in plain HTTP), every answer must be the controller's,
// no impostor may receive a request, and no visitor header may reach any of them.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import type http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { createChallengeServer } from '../../src/controller/controller-api.ts';
import { BundleCache } from '../../src/edge/bundle-cache.ts';
import { createNginxProcess } from '../../src/edge/nginx-process.ts';
import { createTemplateRenderer } from '../../src/render/nunjucks-env.ts';
import { fingerprintBundle } from '../../src/render/render-config.ts';
import { makeChannelKeyPair } from '../support/channel-tls.ts';
import { startFakeDns } from '../support/fake-dns.ts';
import { loopbackBundle, loopbackSetup, NGINX_BINARY } from '../support/loopback-nginx.ts';
import { waitUntil } from '../support/wait.ts';

const TOKEN = 'TOKEN-FROM-CA_1';
const REAL_ANSWER = `${TOKEN}.real-account-thumbprint`;

/** One raw HTTP/1.0 exchange (no chunked answer) with a visitor's credentials: status and body. */
function visit(port: number, method: string, target: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let answer = '';
    socket.setEncoding('latin1');
    socket.setTimeout(10_000, () => socket.destroy(new Error(`no answer to ${method} ${target}`)));
    socket.on('data', (chunk: string) => (answer += chunk));
    socket.on('error', reject);
    socket.on('close', () => {
      const status = /^HTTP\/1\.[01] (\d{3})/.exec(answer)?.[1];
      if (!status) reject(new Error(`no status line: ${JSON.stringify(answer.slice(0, 80))}`));
      else resolve({ status: Number(status), body: answer.split('\r\n\r\n').slice(1).join('\r\n\r\n') });
    });
    socket.write(
      `${method} ${target} HTTP/1.0\r\nHost: shop.example.com\r\nCookie: session=VICTIM-SESSION\r\n` +
        `Authorization: Basic dXNlcjpwYXNz\r\nConnection: close\r\n\r\n`,
    );
  });
}

function listenOn(server: net.Server, port: number, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve((server.address() as AddressInfo).port));
  });
}

test('an impostor with the alias swarmgate-controller answers no ACME validation and sees no visitor header', async (t) => {
  const stateDir = await mkdtemp(path.join(os.tmpdir(), 'swarmgate-acme-impostor-'));
  const channel = await makeChannelKeyPair();
  // Same name on the certificate: only the pinned key tells it apart.
  const other = await makeChannelKeyPair();

  const realHeaders: http.IncomingHttpHeaders[] = [];
  const real = createChallengeServer(channel, {
    challengeResponse: (token) => (token === TOKEN ? REAL_ANSWER : undefined),
  });
  real.on('request', (req: http.IncomingMessage) => realHeaders.push(req.headers));
  const port = await listenOn(real, 0, '127.0.0.2');

  const tlsImpostorRequests: string[] = [];
  let tlsImpostorConnections = 0;
  const tlsImpostor = https.createServer({ key: other.key, cert: other.cert }, (req, res) => {
    tlsImpostorRequests.push(JSON.stringify(req.headers));
    res.writeHead(200).end(`${req.url?.split('/').pop() ?? ''}.ATTACKER-account-thumbprint`);
  });
  tlsImpostor.on('connection', () => tlsImpostorConnections++);
  tlsImpostor.on('tlsClientError', () => undefined);
  await listenOn(tlsImpostor, port, '127.0.0.3');

  // Plain HTTP: whatever nginx sends arrives here as bytes; it answers every connection as a challenge server.
  const plainImpostorBytes: Buffer[] = [];
  const plainImpostor = net.createServer((socket) => {
    socket.on('error', () => undefined);
    socket.on('data', (chunk: Buffer) => {
      plainImpostorBytes.push(chunk);
      socket.end(
        'HTTP/1.1 200 OK\r\nContent-Length: 35\r\nConnection: close\r\n\r\nTOKEN-FROM-CA_1.ATTACKER-thumbprint',
      );
    });
  });
  await listenOn(plainImpostor, port, '127.0.0.4');

  const dns = await startFakeDns(['127.0.0.3', '127.0.0.2', '127.0.0.4']);
  const setup = await loopbackSetup(stateDir, {
    controllerAddress: `swarmgate-controller:${port}`,
    resolver: `127.0.0.1:${dns.port}`,
    channelCertFile: channel.certFile,
  });
  const files = loopbackBundle(setup, createTemplateRenderer(), 'shop.example.com', ['127.0.0.9'], 9);
  const cache = new BundleCache(stateDir);
  const fingerprint = fingerprintBundle(files);
  await cache.stage(fingerprint, files);
  await cache.activate(fingerprint, { version: 1, fingerprint });
  const nginx = createNginxProcess(NGINX_BINARY, setup.proxy.peersSocket);
  t.after(async () => {
    await nginx.stop(5000);
    for (const server of [real, tlsImpostor, plainImpostor]) server.close();
    real.closeAllConnections();
    tlsImpostor.closeAllConnections();
    await dns.close();
    await Promise.all([channel.remove(), other.remove()]);
    await rm(stateDir, { recursive: true, force: true });
  });
  await nginx.start(cache.currentConfPath);
  await waitUntil(
    'nginx to listen',
    async () => (await visit(setup.listenPort, 'GET', '/.well-known/acme-challenge/none')).status === 404,
    { intervalMs: 200 },
  );
  realHeaders.length = 0;

  // As a CA validates: several requests, from one address, spaced under the location's rate limit. nginx starts each
  // request at a random one of the resolved addresses (its resolver rotates the answer), and the plain impostor is
  // tried only when the rotation starts there (1 in 3): so the CA's requests go on until both impostors were tried
  // (12 at least; at most 80, when the chance of missing one is below 1e-13).
  const answers: string[] = [];
  const impostorsTried = (): boolean => tlsImpostorConnections > 0 && plainImpostorBytes.length > 0;
  while (answers.length < 12 || (!impostorsTried() && answers.length < 80)) {
    const { status, body } = await visit(setup.listenPort, 'GET', `/.well-known/acme-challenge/${TOKEN}`);
    answers.push(`${status} ${body}`);
    await new Promise((resolve) => setTimeout(resolve, 120));
  }
  const head = await visit(setup.listenPort, 'HEAD', `/.well-known/acme-challenge/${TOKEN}`);
  // A token the controller does not know (the attacker's own order): the controller's 404, never the impostor's 200.
  const unknown = await visit(setup.listenPort, 'GET', '/.well-known/acme-challenge/ATTACKERS-OWN-TOKEN');

  assert.ok(dns.queries > 0, 'nginx resolved the controller through the test DNS');
  assert.ok(impostorsTried(), 'nginx did try the impostors (the DNS answer rotates)');
  assert.deepEqual(
    answers,
    Array.from({ length: answers.length }, () => `200 ${REAL_ANSWER}`),
    'every answer is the real one',
  );
  assert.equal(head.status, 200, 'HEAD is answered as nginx forwards it');
  assert.equal(unknown.status, 404);
  assert.deepEqual(
    tlsImpostorRequests,
    [],
    'no request reached the impostor with a certificate of the same name',
  );
  const plainText = Buffer.concat(plainImpostorBytes).toString('latin1');
  assert.doesNotMatch(
    plainText,
    /GET |HEAD |acme-challenge|VICTIM|dXNlcjpwYXNz/,
    'only a TLS hello reached it',
  );
  assert.equal(realHeaders.length, answers.length + 2);
  for (const headers of realHeaders) {
    assert.equal(headers.cookie, undefined, 'no visitor cookie reaches the controller');
    assert.equal(headers.authorization, undefined, 'no visitor credentials reach the controller');
  }
});

// Docker's DNS returns every container that took the alias swarmgate-controller. The edge's channel once remembered
// only the last failed address, so with two impostors it could alternate between them and never reach the
// controller (review of the security work, item 3). Now one poll tries every address at once when the TLS check
// fails before the token is sent, and the address that proved itself is tried first afterwards.
import assert from 'node:assert/strict';
import type http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import { createHttpsControllerChannel } from '../../src/edge/controller-channel.ts';
import type { EdgeReport } from '../../src/publish/bundle-store.ts';
import { makeChannelKeyPair } from '../support/channel-tls.ts';
import type { ChannelKeyPair } from '../support/channel-tls.ts';

const TOKEN = 'edge-token-for-the-address-test';
const report: EdgeReport = {
  edge: 'e1',
  node: null,
  applied: null,
  rejected: null,
  reloads: 0,
  peerUpdates: 0,
};

type KeyPair = ChannelKeyPair & { remove: () => Promise<void> };
let real: KeyPair;
let other: KeyPair;
before(async () => {
  [real, other] = await Promise.all([makeChannelKeyPair(), makeChannelKeyPair()]);
});
after(async () => {
  await real.remove();
  await other.remove();
});

interface Listener {
  readonly server: net.Server;
  connections: number;
  readonly tokens: string[];
}

function listen(server: net.Server, port: number, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve((server.address() as AddressInfo).port));
  });
}

/** An HTTPS server on `host` that answers every poll with 204 and notes the tokens it receives. */
async function httpsListener(
  pair: KeyPair,
  port: number,
  host: string,
): Promise<Listener & { port: number }> {
  const tokens: string[] = [];
  const server = https.createServer({ key: pair.key, cert: pair.cert }, (req: http.IncomingMessage, res) => {
    tokens.push(req.headers.authorization ?? '');
    req.resume();
    req.on('end', () => res.writeHead(204).end());
  });
  server.on('tlsClientError', () => undefined);
  const listener = { server, connections: 0, tokens, port: 0 };
  server.on('connection', () => listener.connections++);
  listener.port = await listen(server, port, host);
  return listener;
}

async function close(listeners: readonly Listener[]): Promise<void> {
  for (const { server } of listeners) {
    if (server instanceof https.Server) server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
}

for (const order of ['impostors first', 'real in the middle'] as const) {
  test(`two impostors with the alias: the first poll reaches the controller (${order})`, async (t) => {
    const realListener = await httpsListener(real, 0, '127.0.0.4');
    const port = realListener.port;
    const impostors = [
      await httpsListener(other, port, '127.0.0.2'),
      await httpsListener(other, port, '127.0.0.3'),
    ];
    t.after(() => close([realListener, ...impostors]));
    const addresses =
      order === 'impostors first'
        ? ['127.0.0.2', '127.0.0.3', '127.0.0.4']
        : ['127.0.0.2', '127.0.0.4', '127.0.0.3'];
    const channel = createHttpsControllerChannel({
      url: `https://swarmgate-controller:${port}`,
      token: TOKEN,
      ca: real.cert,
      timeoutMs: 5000,
      resolve: async () => addresses,
    });

    assert.equal(await channel.poll(report, AbortSignal.timeout(5000)), null, 'the real controller answered');
    assert.deepEqual(realListener.tokens, [`Bearer ${TOKEN}`]);
    const tried = impostors.map((impostor) => impostor.connections);
    assert.ok(tried[0] === 1, 'the impostor DNS named first was tried and left at once');
    // Later polls go to the address that proved itself; the impostors are not asked again.
    for (let i = 0; i < 3; i++) assert.equal(await channel.poll(report, AbortSignal.timeout(5000)), null);
    assert.deepEqual(
      impostors.map((impostor) => impostor.connections),
      tried,
    );
    assert.deepEqual(
      impostors.flatMap((impostor) => impostor.tokens),
      [],
      'no impostor ever received the token',
    );
  });
}

test('an impostor that never finishes the handshake costs one connect timeout, then the controller is polled', async (t) => {
  const realListener = await httpsListener(real, 0, '127.0.0.4');
  const port = realListener.port;
  const silent = net.createServer((socket) => socket.on('error', () => undefined));
  const silentListener = { server: silent, connections: 0, tokens: [] };
  silent.on('connection', () => silentListener.connections++);
  await listen(silent, port, '127.0.0.2');
  t.after(async () => {
    for (const socket of sockets) socket.destroy();
    await close([realListener, silentListener]);
  });
  const sockets: net.Socket[] = [];
  silent.on('connection', (socket: net.Socket) => sockets.push(socket));
  const channel = createHttpsControllerChannel({
    url: `https://swarmgate-controller:${port}`,
    token: TOKEN,
    ca: real.cert,
    timeoutMs: 20_000,
    connectTimeoutMs: 300,
    resolve: async () => ['127.0.0.2', '127.0.0.4'],
  });
  assert.equal(await channel.poll(report, AbortSignal.timeout(10_000)), null);
  assert.equal(silentListener.connections, 1);
  assert.deepEqual(realListener.tokens, [`Bearer ${TOKEN}`]);
});

test('a failed address is tried after the others until its failure is older than the TTL', async (t) => {
  const realListener = await httpsListener(real, 0, '127.0.0.4');
  const port = realListener.port;
  const impostor = await httpsListener(other, port, '127.0.0.2');
  t.after(() => close([realListener, impostor]));
  let clock = 1_000_000;
  let addresses = ['127.0.0.2', '127.0.0.4'];
  const channel = createHttpsControllerChannel({
    url: `https://swarmgate-controller:${port}`,
    token: TOKEN,
    ca: real.cert,
    timeoutMs: 5000,
    failedTtlMs: 60_000,
    now: () => clock,
    resolve: async () => addresses,
  });
  assert.equal(await channel.poll(report, AbortSignal.timeout(5000)), null);
  assert.equal(impostor.connections, 1);
  // The controller moves: a new address, listed after the impostor. The impostor's failure is recent: new first.
  const moved = await httpsListener(real, port, '127.0.0.5');
  t.after(() => close([moved]));
  addresses = ['127.0.0.2', '127.0.0.5'];
  clock += 30_000;
  assert.equal(await channel.poll(report, AbortSignal.timeout(5000)), null);
  assert.equal(impostor.connections, 1, 'the recently failed impostor was not tried before the new address');
  assert.equal(moved.tokens.length, 1);
  // Past the TTL the impostor is forgotten, but the proven address still comes first.
  clock += 61_000;
  assert.equal(await channel.poll(report, AbortSignal.timeout(5000)), null);
  assert.equal(impostor.connections, 1);
  assert.equal(moved.tokens.length, 2);
});

// Pass-through on a real Swarm (issue 15, item 9): WebSocket, server-sent events, and gRPC/gRPCs through the lab
// edge on 127.0.0.1, to tasks of the test backend's image running its protocols server (test/backend/protocols.mjs:
// WebSocket echo that closes with 1001 on SIGTERM, SSE with the time each event was written, a gRPC Echo service
// over cleartext HTTP/2 and over TLS). The tasks and this test share the machine's clock, so "written at" in an
// event and "read at" here are comparable.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import http from 'node:http';
import http2 from 'node:http2';
import { test } from 'node:test';
import type * as grpc from '@grpc/grpc-js';
import WebSocket from 'ws';
import { makeChannelKeyPair } from '../support/channel-tls.ts';
import { edgeEchoClient, unaryEcho } from '../support/grpc-echo.ts';
import {
  createService,
  docker,
  EDGE_HTTP_PORT,
  EDGE_HTTPS_PORT,
  httpsGet,
  pebbleRoot,
  removeService,
  sleep,
  uniqueName,
  waitFor,
  waitForRouted,
  waitForServiceRunning,
} from './support/lab.ts';

const PROTOCOLS_SERVER = ['node', '/srv/protocols.mjs'];

/** Until the edge serves `host` over HTTPS with its Pebble certificate (verified against `root`). */
async function waitForCertificate(host: string, root: string): Promise<void> {
  await waitFor(
    `a verified TLS handshake for ${host} on the edge's HTTPS port`,
    // Any status will do (a gRPC location answers HTTP/1.1 requests with an error): the handshake is the point.
    () => httpsGet(EDGE_HTTPS_PORT, '/', host, root).then(() => true),
    { timeoutMs: 90_000, intervalMs: 500 },
  );
}

function taskIdOf(taskName: string): string {
  return taskName.split('.').pop() ?? '';
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? NaN;
}

// --- WebSocket ---------------------------------------------------------------------------------------------------

interface Closed {
  readonly code: number;
  readonly reason: string;
  readonly at: number;
  /** When the app got its SIGTERM (its "sigterm <at>" message before the close frame; its clock is this machine's). */
  readonly sigtermAt: number | undefined;
}

interface OpenWs {
  readonly socket: WebSocket;
  /** The task that echoes on this connection (service.slot.taskid). */
  readonly task: string;
  readonly closed: Promise<Closed>;
  ask(message: string): Promise<string>;
}

/** A WebSocket through the lab edge; the first echo tells which task carries it. */
async function openWs(url: string, options: WebSocket.ClientOptions): Promise<OpenWs> {
  const socket = new WebSocket(url, options);
  let sigtermAt: number | undefined;
  socket.on('message', (data: Buffer) => {
    const said = /^sigterm (\d+)$/.exec(String(data));
    if (said) sigtermAt = Number(said[1]);
  });
  const closed = new Promise<Closed>((resolve) =>
    socket.on('close', (code: number, reason: Buffer) =>
      resolve({ code, reason: String(reason), at: Date.now(), sigtermAt }),
    ),
  );
  // An error is followed by 'close', which is what the tests read.
  socket.on('error', () => undefined);
  await once(socket, 'open', { signal: AbortSignal.timeout(5000) });
  const ask = async (message: string): Promise<string> => {
    const answer = once(socket, 'message', { signal: AbortSignal.timeout(5000) });
    socket.send(message);
    const [data] = (await answer) as [Buffer];
    return String(data);
  };
  const hello = await ask('hello');
  assert.match(hello, / hello$/);
  return { socket, task: hello.slice(0, -' hello'.length), closed, ask };
}

/** How the connection closed, or null if it is still open after `ms`. */
function closedWithin(ws: OpenWs, ms: number): Promise<Closed | null> {
  return Promise.race([ws.closed, sleep(ms).then(() => null)]);
}

test('WebSocket: a connection lives while the service scales 2→4→2 around it, closes with 1001 when its own task stops, and 1006 (no hang) when its task is killed', async (t) => {
  const name = uniqueName('sg-e2e-ws');
  const host = `${name}.e2e.test`;
  t.after(() => removeService(name));
  await createService({
    name,
    replicas: 2,
    labels: { VIRTUAL_HOST: host, LETSENCRYPT_HOST: host, HTTPS_METHOD: 'noredirect' },
    args: PROTOCOLS_SERVER,
  });
  await waitForRouted(name, 2);
  const open: OpenWs[] = [];
  t.after(() => open.forEach((ws) => ws.socket.terminate()));
  const ws = (): Promise<OpenWs> =>
    openWs(`ws://127.0.0.1:${EDGE_HTTP_PORT}/chat`, { headers: { host } }).then((socket) => {
      open.push(socket);
      return socket;
    });

  // wss:// on the edge's HTTPS port, once the host has its certificate.
  const root = await pebbleRoot();
  await waitForCertificate(host, root);
  // ws hands servername on to tls.connect (its types leave it out): the SNI that picks the host's certificate.
  const tlsOptions: WebSocket.ClientOptions & { servername: string } = {
    headers: { host },
    servername: host,
    ca: root,
  };
  const secure = await openWs(`wss://127.0.0.1:${EDGE_HTTPS_PORT}/chat`, tlsOptions);
  open.push(secure);
  assert.ok(secure.task.startsWith(`${name}.`), `wss:// reached a task: ${secure.task}`);
  assert.equal(await secure.ask('over TLS'), `${secure.task} over TLS`);
  secure.socket.close(1000);
  assert.equal((await secure.closed).code, 1000);

  // Scaled up around an open connection: it keeps its task.
  const first = await ws();
  await docker(['service', 'scale', '--detach', `${name}=4`]);
  await waitForServiceRunning(name, 4);
  await waitForRouted(name, 4);
  assert.equal(await first.ask('after scale up'), `${first.task} after scale up`);

  // One open connection on each of the 4 tasks (the edge's workers each go round robin over them), so that whichever
  // 2 tasks Swarm removes on the scale down, some connections lose their task and some keep theirs.
  const byTask = new Map<string, OpenWs>([[first.task, first]]);
  for (let i = 0; i < 80 && byTask.size < 4; i += 1) {
    const next = await ws();
    if (byTask.has(next.task)) next.socket.close(1000);
    else byTask.set(next.task, next);
  }
  assert.equal(byTask.size, 4, `one connection per task: ${[...byTask.keys()].join(', ')}`);

  const scaledAt = Date.now();
  await docker(['service', 'scale', '--detach', `${name}=2`]);
  const survivors = new Set((await waitForServiceRunning(name, 2)).map((task) => task.id));
  const closeMs: number[] = [];
  const fromSigtermMs: number[] = [];
  for (const [task, socket] of byTask) {
    if (survivors.has(taskIdOf(task))) continue;
    // Its own task stops: the app's close frame reaches the client through the edge. Swarm's stop grace period is
    // 5 s (createService), after which it would kill the task and the client would see 1006 instead.
    const closed = await closedWithin(socket, 20_000);
    assert.ok(closed, `the connection on the removed task ${task} closed`);
    assert.deepEqual({ code: closed.code, reason: closed.reason }, { code: 1001, reason: 'task stopping' });
    // From the app's SIGTERM (the time it sent before its close frame) to the client reading the close frame.
    const sigtermAt = closed.sigtermAt;
    assert.ok(sigtermAt !== undefined, `the app on ${task} said when it got SIGTERM`);
    assert.ok(closed.at - sigtermAt < 1000, `the close frame took ${closed.at - sigtermAt} ms from SIGTERM`);
    closeMs.push(closed.at - scaledAt);
    fromSigtermMs.push(closed.at - sigtermAt);
  }
  assert.equal(closeMs.length, 2, 'two of the four connections lost their task');
  await waitForRouted(name, 2);
  const kept = [...byTask].filter(([task]) => survivors.has(taskIdOf(task))).map(([, socket]) => socket);
  assert.equal(kept.length, 2);
  for (const socket of kept) {
    assert.equal(await closedWithin(socket, 0), null, `the connection on ${socket.task} is still open`);
    assert.equal(await socket.ask('after scale down'), `${socket.task} after scale down`);
  }
  t.diagnostic(
    `scale 4→2: the connections on the 2 removed tasks closed with 1001 ${closeMs.map((ms) => `${ms} ms`).join(' and ')} after the scale command, ${fromSigtermMs.map((ms) => `${ms} ms`).join(' and ')} after their app's SIGTERM; the first connection (opened before 2→4) ${survivors.has(taskIdOf(first.task)) ? 'kept its task' : 'was on a removed task'}`,
  );

  // A new connection works, on a task that runs.
  const fresh = await ws();
  assert.ok(survivors.has(taskIdOf(fresh.task)), `a new connection reached a running task: ${fresh.task}`);

  // A task killed without a close frame (SIGKILL: as an app that ignores SIGTERM ends after the grace period): the
  // kernel closes its TCP connection, the edge closes the client's, and the client sees 1006 (abnormal closure).
  const [victim] = kept;
  assert.ok(victim);
  const container = await docker([
    'inspect',
    '--format',
    '{{.Status.ContainerStatus.ContainerID}}',
    taskIdOf(victim.task),
  ]);
  const killedAt = Date.now();
  await docker(['kill', '--signal', 'KILL', container]);
  const killed = await closedWithin(victim, 10_000);
  assert.ok(killed, 'the connection on the killed task closed');
  assert.equal(killed.code, 1006);
  t.diagnostic(`SIGKILL: the client saw 1006 ${killed.at - killedAt} ms after docker kill was called`);
  const other = kept[1];
  assert.ok(other);
  assert.equal(await other.ask('after the kill'), `${other.task} after the kill`);
});

// --- Server-sent events ------------------------------------------------------------------------------------------

const SSE_EVENTS = 20;
const SSE_EVERY_MS = 100;

interface SseEvent {
  readonly n: number;
  readonly sentAt: number;
  readonly readAt: number;
}

/** Splits an event stream into events as the chunks arrive, stamping each with the time it was read. */
function sseReader(): { read: (chunk: string) => void; events: SseEvent[] } {
  const events: SseEvent[] = [];
  let pending = '';
  return {
    events,
    read: (chunk) => {
      pending += chunk;
      let end: number;
      while ((end = pending.indexOf('\n\n')) >= 0) {
        const data = /^data: (.*)$/m.exec(pending.slice(0, end))?.[1];
        pending = pending.slice(end + 2);
        if (data === undefined) continue;
        const event = JSON.parse(data) as { n: number; sentAt: number };
        events.push({ n: event.n, sentAt: event.sentAt, readAt: Date.now() });
      }
    },
  };
}

const SSE_PATH = `/events?n=${SSE_EVENTS}&ms=${SSE_EVERY_MS}`;

function sseOverHttp1(host: string): Promise<SseEvent[]> {
  const reader = sseReader();
  return new Promise((resolve, reject) => {
    const req = http.get(
      {
        host: '127.0.0.1',
        port: EDGE_HTTP_PORT,
        path: SSE_PATH,
        headers: { host },
        agent: false,
        timeout: 10_000,
      },
      (res) => {
        assert.equal(res.statusCode, 200);
        res.setEncoding('utf8');
        res.on('data', reader.read);
        res.on('end', () => resolve(reader.events));
      },
    );
    req.on('timeout', () => req.destroy(new Error('SSE over HTTP/1.1 timed out')));
    req.on('error', reject);
  });
}

async function sseOverHttp2(host: string, root: string): Promise<SseEvent[]> {
  const reader = sseReader();
  const session = http2.connect(`https://127.0.0.1:${EDGE_HTTPS_PORT}`, { ca: root, servername: host });
  session.on('error', () => undefined);
  try {
    const stream = session.request({ ':path': SSE_PATH, ':authority': host });
    stream.setEncoding('utf8');
    stream.on('data', reader.read);
    await once(stream, 'end', { signal: AbortSignal.timeout(10_000) });
    return reader.events;
  } finally {
    session.close();
  }
}

function checkSse(t: test.TestContext, what: string, events: readonly SseEvent[]): void {
  assert.deepEqual(
    events.map((event) => event.n),
    Array.from({ length: SSE_EVENTS }, (_, i) => i + 1),
    `${what}: every event, in order`,
  );
  const delays = events.map((event) => event.readAt - event.sentAt);
  t.diagnostic(
    `${what}: ${SSE_EVENTS} events ${SSE_EVERY_MS} ms apart, written→read median ${median(delays)} ms, max ${Math.max(...delays)} ms`,
  );
  // The stream lasts about 2 s: an edge that held events back (to fill a buffer, or to the end) would make the
  // first events late by up to that.
  assert.ok(Math.max(...delays) < 500, `${what}: no event waited: ${delays.join(', ')} ms`);
}

test('SSE: events written every 100 ms reach the client as they are written, over HTTP/1.1 and HTTP/2, with no label', async (t) => {
  const name = uniqueName('sg-e2e-sse');
  const host = `${name}.e2e.test`;
  t.after(() => removeService(name));
  await createService({
    name,
    labels: { VIRTUAL_HOST: host, LETSENCRYPT_HOST: host, HTTPS_METHOD: 'noredirect' },
    args: PROTOCOLS_SERVER,
  });
  await waitForRouted(name, 1);
  checkSse(t, 'HTTP/1.1 on the HTTP port', await sseOverHttp1(host));
  const root = await pebbleRoot();
  await waitForCertificate(host, root);
  checkSse(t, 'HTTP/2 on the HTTPS port', await sseOverHttp2(host, root));
});

// --- gRPC --------------------------------------------------------------------------------------------------------

const deadline = (): grpc.CallOptions => ({ deadline: Date.now() + 10_000 });

for (const proto of ['grpc', 'grpcs'] as const) {
  test(`gRPC, VIRTUAL_PROTO=${proto}: unary, server streaming, client streaming and bidi through the edge's HTTPS port`, async (t) => {
    const name = uniqueName(`sg-e2e-${proto}`);
    const host = `${name}.e2e.test`;
    t.after(() => removeService(name));
    const own = proto === 'grpcs' ? await makeChannelKeyPair(name) : null;
    if (own) t.after(() => own.remove());
    await createService({
      name,
      labels: {
        VIRTUAL_HOST: host,
        LETSENCRYPT_HOST: host,
        VIRTUAL_PROTO: proto,
        // protocols.mjs: cleartext HTTP/2 on 50051, TLS (its own self-signed certificate) on 50052.
        VIRTUAL_PORT: proto === 'grpc' ? '50051' : '50052',
      },
      env: own
        ? {
            TLS_CERT: Buffer.from(own.cert).toString('base64'),
            TLS_KEY: Buffer.from(own.key).toString('base64'),
          }
        : {},
      args: PROTOCOLS_SERVER,
    });
    await waitForRouted(name, 1);
    const root = await pebbleRoot();
    await waitForCertificate(host, root);
    const client = edgeEchoClient(EDGE_HTTPS_PORT, root, host);
    t.after(() => client.close());

    // Unary.
    const pong = await unaryEcho(client, 'ping');
    assert.match(pong, new RegExp(`^${name}\\.\\d+\\.\\w+ ping$`));
    const task = pong.slice(0, -' ping'.length);

    // Server streaming: 10 messages written 100 ms apart, each read as it is written.
    const count = client.count(Buffer.from('10'), deadline());
    const delays: number[] = [];
    const numbers: number[] = [];
    count.on('data', (message: Buffer) => {
      const [n, sentAt] = String(message).split(' ').map(Number);
      numbers.push(n ?? NaN);
      delays.push(Date.now() - (sentAt ?? NaN));
    });
    await once(count, 'end');
    assert.deepEqual(numbers, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    t.diagnostic(`server streaming: written→read median ${median(delays)} ms, max ${Math.max(...delays)} ms`);
    // The stream lasts about 1 s: a message held back to the end would be late by up to that.
    assert.ok(Math.max(...delays) < 500, `no message waited: ${delays.join(', ')} ms`);

    // Client streaming: three messages, one answer after the client ends.
    const joined = await new Promise<string>((resolve, reject) => {
      const call = client.join(deadline(), (error, reply) =>
        error ? reject(error) : resolve(String(reply)),
      );
      for (const message of ['a', 'b', 'c']) call.write(Buffer.from(message));
      call.end();
    });
    assert.equal(joined, `${task} a,b,c`);

    // Bidi in lock step: each message is sent only after the answer to the one before arrived, and the client ends
    // its side last, so each message crossed the edge both ways on its own while both directions stayed open.
    const chat = client.chat(deadline());
    const roundTrips: number[] = [];
    for (let i = 1; i <= 5; i += 1) {
      const answer = once(chat, 'data', { signal: AbortSignal.timeout(5000) });
      const sentAt = Date.now();
      chat.write(Buffer.from(`m${i}`));
      const [reply] = (await answer) as [Buffer];
      roundTrips.push(Date.now() - sentAt);
      assert.equal(String(reply), `${task} m${i}`);
    }
    chat.end();
    await once(chat, 'end');
    t.diagnostic(
      `bidi: round trip per message median ${median(roundTrips)} ms, max ${Math.max(...roundTrips)} ms`,
    );
  });
}

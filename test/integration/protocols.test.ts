// Pass-through the edge promises, carried by a real nginx running the rendered edge config (Lua balancer and all):
// WebSocket across scaling and reloads, gRPC and gRPCs (unary, server, client and bidi streaming) over TLS with
// HTTP/2, and server-sent events that reach the client while the upstream still holds the response open.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import http from 'node:http';
import http2 from 'node:http2';
import { test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import WebSocket, { WebSocketServer } from 'ws';
import { ECHO_SERVICE, edgeEchoClient, unaryEcho } from '../support/grpc-echo.ts';
import type { EchoClient } from '../support/grpc-echo.ts';
import { freePort, get, workerPids } from '../support/loopback-nginx.ts';
import { startProtocolEdge, TEST_CERTIFICATE } from '../support/protocol-edge.ts';
import { waitUntil } from '../support/wait.ts';

const HOST = 'app.example.com';

// --- WebSocket ---------------------------------------------------------------------------------------------------

/** A task: HTTP answers with its address; WebSocket echoes "<address> <message>". */
interface WsTask {
  readonly ip: string;
  readonly sockets: Set<WebSocket>;
  close(): Promise<void>;
}

async function startWsTask(t: test.TestContext, ip: string, port: number): Promise<WsTask> {
  const server = http.createServer((_req, res) => res.end(ip));
  const wss = new WebSocketServer({ server });
  const sockets = new Set<WebSocket>();
  wss.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    // ws hands text and binary messages to Node as a Buffer (binaryType "nodebuffer").
    socket.on('message', (data) => socket.send(`${ip} ${(data as Buffer).toString()}`));
  });
  server.listen(port, ip);
  await once(server, 'listening');
  const task: WsTask = {
    ip,
    sockets,
    close: async () => {
      for (const socket of sockets) socket.terminate();
      wss.close();
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
  t.after(() => task.close());
  return task;
}

/** A WebSocket through the edge, with a queue of what it received. */
async function openWs(port: number): Promise<{ socket: WebSocket; ask(message: string): Promise<string> }> {
  const socket = new WebSocket(`ws://127.0.0.1:${port}/chat`, { headers: { host: HOST } });
  await once(socket, 'open');
  return {
    socket,
    async ask(message) {
      const answer = once(socket, 'message');
      socket.send(message);
      const [data] = (await answer) as [Buffer];
      return String(data);
    },
  };
}

test('WebSocket: a connection lives across peers posts that scale the service up and drop its own task', async (t) => {
  const port = await freePort();
  await Promise.all(['127.0.0.2', '127.0.0.3', '127.0.0.4'].map((ip) => startWsTask(t, ip, port)));
  const edge = await startProtocolEdge(t, HOST, ['127.0.0.2'], port);
  const ws = await openWs(edge.setup.listenPort);
  t.after(() => ws.socket.terminate());
  assert.equal(await ws.ask('hello'), '127.0.0.2 hello');
  const workers = await workerPids(edge.setup);

  // Scaled up: two more tasks. New requests reach them; the open socket keeps talking to its own task.
  assert.equal(
    await edge.nginx.updatePeers(
      edge.peersFor(['127.0.0.2', '127.0.0.3', '127.0.0.4']),
      AbortSignal.timeout(5000),
    ),
    true,
  );
  const bodies = new Set<string>();
  for (let i = 0; i < 6; i++) bodies.add((await get(edge.setup.listenPort, HOST)).body);
  assert.deepEqual([...bodies].sort(), ['127.0.0.2', '127.0.0.3', '127.0.0.4'], 'the new peers are routed');
  assert.equal(await ws.ask('after scale up'), '127.0.0.2 after scale up');

  // Its own task leaves the routing (draining before it stops): the established socket is not cut.
  assert.equal(
    await edge.nginx.updatePeers(edge.peersFor(['127.0.0.3', '127.0.0.4']), AbortSignal.timeout(5000)),
    true,
  );
  assert.notEqual((await get(edge.setup.listenPort, HOST)).body, '127.0.0.2');
  assert.equal(await ws.ask('after drain'), '127.0.0.2 after drain');
  assert.deepEqual(
    await workerPids(edge.setup),
    workers,
    'no reload happened: the same worker carries the socket',
  );
});

test('WebSocket: a reload (a new host elsewhere) leaves an open socket on the old worker, still working', async (t) => {
  const port = await freePort();
  await startWsTask(t, '127.0.0.2', port);
  const edge = await startProtocolEdge(t, HOST, ['127.0.0.2'], port);
  const ws = await openWs(edge.setup.listenPort);
  t.after(() => ws.socket.terminate());
  const before = await workerPids(edge.setup);
  edge.nginx.reload();
  await waitUntil('a new worker beside the old one', async () => {
    const now = await workerPids(edge.setup);
    return now.some((pid) => !before.includes(pid));
  });
  assert.equal(await ws.ask('after reload'), '127.0.0.2 after reload');
});

test('WebSocket: when its task closes it (1001 on shutdown), the client sees a clean close with that code', async (t) => {
  const port = await freePort();
  const task = await startWsTask(t, '127.0.0.2', port);
  const edge = await startProtocolEdge(t, HOST, ['127.0.0.2'], port);
  const ws = await openWs(edge.setup.listenPort);
  assert.equal(await ws.ask('hi'), '127.0.0.2 hi');
  const closed = once(ws.socket, 'close');
  // What an app does on SIGTERM: close its sockets with "going away" before it exits.
  for (const socket of task.sockets) socket.close(1001, 'task stopping');
  const [code, reason] = (await closed) as [number, Buffer];
  assert.equal(code, 1001);
  assert.equal(String(reason), 'task stopping');
});

// --- Server-sent events ------------------------------------------------------------------------------------------

const SSE_EVENTS = 5;

interface SseRun {
  /** How many events the client read while the task still held the response open. */
  readonly whileHeld: number;
  /** The longest time from the task writing an event to the client reading it. */
  readonly maxDelayMs: number;
  readonly body: string;
}

/**
 * A task that writes an event, then waits until the client has read it before writing the next (lock step), and
 * ends the response after the last one. An edge that buffered an event would stall that lock step until the task's
 * 3 s patience runs out and it ends the response: the event would then arrive with the end, not while held.
 */
async function sseThroughEdge(
  t: test.TestContext,
  options: { labels?: Record<string, string>; accelBufferingNo?: boolean; http2?: boolean },
): Promise<SseRun> {
  const port = await freePort();
  let onRead: () => void = () => undefined;
  let held = false;
  let writtenAt = 0;
  const server = http.createServer((_req, res) => {
    res.writeHead(200, {
      'content-type': 'text/event-stream',
      'cache-control': 'no-cache',
      ...(options.accelBufferingNo ? { 'x-accel-buffering': 'no' } : {}),
    });
    held = true;
    let sent = 0;
    const next = (): void => {
      if (sent === SSE_EVENTS) {
        held = false;
        res.end();
        return;
      }
      sent++;
      const timer = setTimeout(() => {
        held = false;
        res.end();
      }, 3000);
      onRead = () => {
        clearTimeout(timer);
        next();
      };
      writtenAt = performance.now();
      res.write(`data: ${sent}\n\n`);
    };
    next();
  });
  server.listen(port, '127.0.0.2');
  await once(server, 'listening');
  t.after(() => {
    server.closeAllConnections();
    server.close();
  });
  const edge = await startProtocolEdge(t, HOST, ['127.0.0.2'], port, {
    labels: options.labels,
    tls: options.http2,
  });
  let body = '';
  let whileHeld = 0;
  let maxDelayMs = 0;
  let pending = '';
  const read = (chunk: string): void => {
    pending += chunk;
    let end: number;
    while ((end = pending.indexOf('\n\n')) >= 0) {
      maxDelayMs = Math.max(maxDelayMs, performance.now() - writtenAt);
      if (held) whileHeld++;
      body += pending.slice(0, end + 2);
      pending = pending.slice(end + 2);
      onRead();
    }
  };
  if (options.http2) {
    const session = http2.connect(`https://127.0.0.1:${edge.setup.tlsPort}`, {
      ca: TEST_CERTIFICATE.certificatePem,
      servername: HOST,
    });
    t.after(() => session.close());
    const stream = session.request({ ':path': '/events', ':authority': HOST });
    stream.setEncoding('utf8');
    stream.on('data', read);
    await once(stream, 'end');
  } else {
    await new Promise<void>((resolve, reject) => {
      http
        .get(
          {
            host: '127.0.0.1',
            port: edge.setup.listenPort,
            path: '/events',
            headers: { host: HOST },
            agent: false,
          },
          (res) => {
            res.setEncoding('utf8');
            res.on('data', read);
            res.on('end', resolve);
          },
        )
        .on('error', reject);
    });
  }
  return { whileHeld, maxDelayMs, body: body + pending };
}

const ALL_EVENTS = Array.from({ length: SSE_EVENTS }, (_, i) => `data: ${i + 1}\n\n`).join('');

for (const [name, options] of [
  ['the defaults (proxy_buffering on)', {}],
  ['swarmgate.buffering=off', { labels: { 'swarmgate.buffering': 'off' } }],
  ['the task sending X-Accel-Buffering: no', { accelBufferingNo: true }],
  ['HTTP/2 over TLS on 443', { http2: true }],
] as const) {
  test(`SSE with ${name}: every event reaches the client while the task holds the stream open`, async (t) => {
    const run = await sseThroughEdge(t, options);
    t.diagnostic(`slowest event: ${run.maxDelayMs.toFixed(1)} ms from write to read`);
    assert.equal(run.body, ALL_EVENTS);
    assert.equal(run.whileHeld, SSE_EVENTS);
  });
}

// --- gRPC --------------------------------------------------------------------------------------------------------

const GRPC_HOST = 'grpc.example.com';

interface GrpcTask {
  /** Count: messages written; the stream writes the next one only when released (see releaseNext). */
  releaseNext(): void;
  /** Whether the Count stream is still open on the task. */
  streaming: boolean;
}

/**
 * A gRPC task on ip:port (TLS when `tls`). Echo answers "<ip> <request>". Count(n) writes "1", then each next
 * number only when the test releases it, then ends: the client's reads show whether the edge passes each message on
 * while the task holds the stream open.
 */
async function startGrpcTask(t: test.TestContext, ip: string, port: number, tls: boolean): Promise<GrpcTask> {
  const server = new grpc.Server();
  const task: GrpcTask = { releaseNext: () => undefined, streaming: false };
  server.addService(ECHO_SERVICE, {
    echo: (call: grpc.ServerUnaryCall<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => {
      const reply = (): void => callback(null, Buffer.from(`${ip} ${call.request.toString()}`));
      // "slow": the answer takes 3 s, longer than the timeout a test sets on the edge.
      if (call.request.toString() === 'slow') setTimeout(reply, 3000);
      else reply();
    },
    count: (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
      const total = Number(call.request.toString());
      let sent = 0;
      task.streaming = true;
      const next = (): void => {
        sent++;
        call.write(Buffer.from(String(sent)));
        if (sent === total) {
          task.streaming = false;
          call.end();
        }
      };
      task.releaseNext = next;
      next();
    },
    // Client streaming: one answer with every request message, once the client ends its stream.
    join: (call: grpc.ServerReadableStream<Buffer, Buffer>, callback: grpc.sendUnaryData<Buffer>) => {
      const received: string[] = [];
      call.on('data', (message: Buffer) => received.push(message.toString()));
      call.on('end', () => callback(null, Buffer.from(`${ip} ${received.join(',')}`)));
    },
    // Bidi: each message answered as it arrives; the task ends its side when the client ends its own.
    chat: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
      call.on('data', (message: Buffer) => call.write(Buffer.from(`${ip} ${message.toString()}`)));
      call.on('end', () => call.end());
    },
  });
  const credentials = tls
    ? grpc.ServerCredentials.createSsl(null, [
        {
          cert_chain: Buffer.from(TEST_CERTIFICATE.certificatePem),
          private_key: Buffer.from(TEST_CERTIFICATE.privateKeyPem),
        },
      ])
    : grpc.ServerCredentials.createInsecure();
  await new Promise<void>((resolve, reject) =>
    server.bindAsync(`${ip}:${port}`, credentials, (error) => (error ? reject(error) : resolve())),
  );
  t.after(() => server.forceShutdown());
  return task;
}

/** A gRPC client of the edge's 443: TLS with the test certificate, HTTP/2 by ALPN, the host as :authority. */
function edgeClient(t: test.TestContext, tlsPort: number): EchoClient {
  const client = edgeEchoClient(tlsPort, TEST_CERTIFICATE.certificatePem, GRPC_HOST);
  t.after(() => client.close());
  return client;
}

/** Count(n) through the edge; per message, whether it arrived while the task still held the stream open. */
async function streamed(
  client: EchoClient,
  task: GrpcTask,
  total: number,
): Promise<{ messages: string[]; whileHeld: number }> {
  const call = client.count(Buffer.from(String(total)), {
    deadline: Date.now() + 10_000,
  });
  const messages: string[] = [];
  let whileHeld = 0;
  call.on('data', (message: Buffer) => {
    messages.push(String(message));
    if (task.streaming) whileHeld++;
    task.releaseNext();
  });
  await once(call, 'end');
  return { messages, whileHeld };
}

/** Join: three messages, then the client ends; the answer comes after that. */
function joined(client: EchoClient, messages: readonly string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const call = client.join({ deadline: Date.now() + 10_000 }, (error, reply) =>
      error ? reject(error) : resolve(String(reply)),
    );
    for (const message of messages) call.write(Buffer.from(message));
    call.end();
  });
}

/**
 * Chat in lock step: each message is sent only once the answer to the one before arrived, and the client ends its side
 * last. An edge that held request or response messages back (until the stream ends, or a buffer fills) would stall it
 * until the deadline.
 */
async function lockStep(client: EchoClient, count: number): Promise<string[]> {
  const call = client.chat({ deadline: Date.now() + 10_000 });
  const answers: string[] = [];
  for (let i = 1; i <= count; i++) {
    const answer = once(call, 'data');
    call.write(Buffer.from(`m${i}`));
    const [reply] = (await answer) as [Buffer];
    answers.push(String(reply));
  }
  call.end();
  await once(call, 'end');
  return answers;
}

for (const proto of ['grpc', 'grpcs'] as const) {
  test(`gRPC, VIRTUAL_PROTO=${proto}: unary, server, client and bidi streaming through 443 (TLS, HTTP/2)`, async (t) => {
    const port = await freePort();
    const task = await startGrpcTask(t, '127.0.0.2', port, proto === 'grpcs');
    const edge = await startProtocolEdge(t, GRPC_HOST, ['127.0.0.2'], port, {
      labels: { VIRTUAL_PROTO: proto },
      tls: true,
    });
    const client = edgeClient(t, edge.setup.tlsPort);
    assert.equal(await unaryEcho(client, 'ping'), '127.0.0.2 ping');
    const run = await streamed(client, task, 5);
    assert.deepEqual(run.messages, ['1', '2', '3', '4', '5']);
    // The last message comes with the end of the stream; every one before it arrived while the task held it open.
    assert.equal(run.whileHeld, 4);
    assert.equal(await joined(client, ['a', 'b', 'c']), '127.0.0.2 a,b,c');
    assert.deepEqual(await lockStep(client, 3), ['127.0.0.2 m1', '127.0.0.2 m2', '127.0.0.2 m3']);
  });
}

test('gRPC: swarmgate.proxy-timeout bounds how long the edge waits on a gRPC task, as it does for HTTP', async (t) => {
  const port = await freePort();
  await startGrpcTask(t, '127.0.0.2', port, false);
  const edge = await startProtocolEdge(t, GRPC_HOST, ['127.0.0.2'], port, {
    labels: { VIRTUAL_PROTO: 'grpc', 'swarmgate.proxy-timeout': '1s' },
    tls: true,
  });
  const client = edgeClient(t, edge.setup.tlsPort);
  // The task answers after 3 s, the client waits up to 10 s: only the edge's 1 s timeout can end the call with a
  // 504, which gRPC clients read as UNAVAILABLE. Without it nginx waits its default 60 s and the answer arrives.
  await assert.rejects(unaryEcho(client, 'slow'), (error: grpc.ServiceError) => {
    assert.equal(error.code, grpc.status.UNAVAILABLE, error.message);
    return true;
  });
});

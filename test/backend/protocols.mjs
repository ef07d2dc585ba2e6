// A second server in the test backend's image, for the pass-through e2e (test/e2e/protocols.test.ts): WebSocket and
// server-sent events over HTTP/1.1 on PORT, gRPC over cleartext HTTP/2 on GRPC_PORT, and gRPC over TLS on
// GRPCS_PORT when TLS_CERT/TLS_KEY (base64 PEM) are set. The image has no npm packages, so the WebSocket and gRPC
// framing is written out here (RFC 6455 frames; gRPC's 5-byte length prefix and grpc-status trailer), with raw
// bytes as gRPC messages. Run as `node /srv/protocols.mjs`; the image's default server (server.mjs) is unchanged.
import { Buffer } from 'node:buffer';
import { createHash } from 'node:crypto';
import http from 'node:http';
import http2 from 'node:http2';
import os from 'node:os';
import { clearInterval, setInterval } from 'node:timers';

const port = Number(process.env.PORT ?? 80);
const grpcPort = Number(process.env.GRPC_PORT ?? 50051);
const grpcsPort = Number(process.env.GRPCS_PORT ?? 50052);
const task = process.env.TASK_NAME ?? os.hostname();
const log = (msg, extra = {}) => console.log(JSON.stringify({ msg, task, ...extra }));

// --- WebSocket (RFC 6455): echo "<task> <message>"; on SIGTERM, close with 1001 as a well-behaved app does ---------

const sockets = new Set();

function frame(opcode, payload) {
  const length = payload.length;
  const head =
    length < 126
      ? Buffer.from([0x80 | opcode, length])
      : Buffer.from([0x80 | opcode, 126, length >> 8, length & 0xff]);
  return Buffer.concat([head, payload]);
}

function closePayload(code, reason) {
  const payload = Buffer.alloc(2 + Buffer.byteLength(reason));
  payload.writeUInt16BE(code, 0);
  payload.write(reason, 2);
  return payload;
}

function acceptWebSocket(req, socket) {
  const key = req.headers['sec-websocket-key'];
  if (req.headers.upgrade?.toLowerCase() !== 'websocket' || !key) return socket.destroy();
  const accept = createHash('sha1').update(`${key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64');
  socket.write(
    `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`,
  );
  const state = { socket, closing: false };
  sockets.add(state);
  socket.on('close', () => sockets.delete(state));
  socket.on('error', () => {});
  let buffer = Buffer.alloc(0);
  socket.on('data', (chunk) => {
    buffer = Buffer.concat([buffer, chunk]);
    // Client frames are masked; the tests send small unfragmented ones (no 64-bit lengths).
    for (;;) {
      if (buffer.length < 2) return;
      const opcode = buffer[0] & 0x0f;
      let length = buffer[1] & 0x7f;
      let offset = 2;
      if (length === 126) {
        if (buffer.length < 4) return;
        length = buffer.readUInt16BE(2);
        offset = 4;
      } else if (length === 127) return socket.destroy();
      const masked = (buffer[1] & 0x80) !== 0;
      const maskAt = offset;
      if (masked) offset += 4;
      if (buffer.length < offset + length) return;
      const payload = Buffer.from(buffer.subarray(offset, offset + length));
      if (masked) for (let i = 0; i < length; i++) payload[i] ^= buffer[maskAt + (i % 4)];
      buffer = buffer.subarray(offset + length);
      if (opcode === 0x1) socket.write(frame(0x1, Buffer.from(`${task} ${payload.toString()}`)));
      else if (opcode === 0x9) socket.write(frame(0xa, payload));
      else if (opcode === 0x8) {
        // The client's close, or its answer to ours: answer once, then end the TCP connection.
        if (!state.closing) socket.write(frame(0x8, payload.subarray(0, 2)));
        state.closing = true;
        return socket.end();
      }
    }
  });
}

// --- Server-sent events: GET /events?n=&ms= writes n events ms apart, each with the time it was written ---------

function events(url, res) {
  const total = Math.min(Number(url.searchParams.get('n') ?? 10), 1000);
  const every = Math.min(Number(url.searchParams.get('ms') ?? 100), 10_000);
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
  let sent = 0;
  const timer = setInterval(() => {
    sent++;
    res.write(`id: ${sent}\ndata: ${JSON.stringify({ task, n: sent, sentAt: Date.now() })}\n\n`);
    if (sent === total) {
      clearInterval(timer);
      res.end();
    }
  }, every);
  res.on('close', () => clearInterval(timer));
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url ?? '/', 'http://backend');
  if (url.pathname === '/events') return events(url, res);
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ task, path: url.pathname }));
});
server.on('upgrade', acceptWebSocket);
server.listen(port, () => log('listening', { port }));

// --- gRPC: /swarmgate.test.Echo/{Echo,Count,Join,Chat}, raw bytes as messages --------------------------------------

function grpcMessage(text) {
  const payload = Buffer.from(text);
  const head = Buffer.alloc(5);
  head.writeUInt32BE(payload.length, 1);
  return Buffer.concat([head, payload]);
}

/** Calls `onMessage` with each length-prefixed request message as it arrives, and `onEnd` when the client ends. */
function readMessages(stream, onMessage, onEnd) {
  let buffer = Buffer.alloc(0);
  stream.on('data', (chunk) => {
    buffer = Buffer.concat([buffer, chunk]);
    while (buffer.length >= 5 && buffer.length >= 5 + buffer.readUInt32BE(1)) {
      const length = buffer.readUInt32BE(1);
      onMessage(buffer.subarray(5, 5 + length).toString());
      buffer = buffer.subarray(5 + length);
    }
  });
  stream.on('end', onEnd);
}

function onGrpcStream(stream, headers) {
  stream.on('error', () => {});
  const method = String(headers[':path'] ?? '');
  const known = ['Echo', 'Count', 'Join', 'Chat'].map((name) => `/swarmgate.test.Echo/${name}`);
  stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
  stream.on('wantTrailers', () =>
    stream.sendTrailers(
      known.includes(method)
        ? { 'grpc-status': '0' }
        : { 'grpc-status': '12', 'grpc-message': 'unknown method' },
    ),
  );
  if (!known.includes(method)) return stream.end();
  const received = [];
  readMessages(
    stream,
    (message) => {
      received.push(message);
      // Chat (bidi): each message is answered as it arrives, while both directions stay open.
      if (method.endsWith('/Chat')) stream.write(grpcMessage(`${task} ${message}`));
    },
    () => {
      if (method.endsWith('/Echo')) stream.end(grpcMessage(`${task} ${received[0] ?? ''}`));
      // Join (client streaming): one answer once the client has ended its stream.
      else if (method.endsWith('/Join')) stream.end(grpcMessage(`${task} ${received.join(',')}`));
      else if (method.endsWith('/Chat')) stream.end();
      else {
        // Count (server streaming): "n" asks for n messages 100 ms apart, each "<i> <time written>".
        const total = Math.min(Number(received[0] ?? 0), 1000);
        let sent = 0;
        const timer = setInterval(() => {
          sent++;
          stream.write(grpcMessage(`${sent} ${Date.now()}`));
          if (sent >= total) {
            clearInterval(timer);
            stream.end();
          }
        }, 100);
        stream.on('close', () => clearInterval(timer));
      }
    },
  );
}

const grpcServer = http2.createServer();
grpcServer.on('stream', onGrpcStream);
grpcServer.listen(grpcPort, () => log('listening', { grpcPort }));
let grpcsServer = null;
if (process.env.TLS_CERT && process.env.TLS_KEY) {
  const pem = (name) => Buffer.from(process.env[name], 'base64');
  grpcsServer = http2.createSecureServer({ cert: pem('TLS_CERT'), key: pem('TLS_KEY') });
  grpcsServer.on('stream', onGrpcStream);
  grpcsServer.on('tlsClientError', () => {});
  grpcsServer.listen(grpcsPort, () => log('listening', { grpcsPort }));
}

// --- SIGTERM: what a well-behaved app does: stop accepting, send every WebSocket a close frame, exit ---------------

process.on('SIGTERM', () => {
  const at = Date.now();
  log('SIGTERM', { webSockets: sockets.size, at });
  server.close();
  grpcServer.close();
  grpcsServer?.close();
  for (const state of sockets) {
    state.closing = true;
    // "sigterm <at>" first: the e2e times the close frame's way through the edge from it. (Not from the task's log:
    // Swarm reaps a scaled-down task, and its log with it, within moments of its exit.)
    state.socket.write(frame(0x1, Buffer.from(`sigterm ${at}`)));
    state.socket.write(frame(0x8, closePayload(1001, 'task stopping')));
    // The client answers with its own close frame, and the connection ends; a client that does not gets 2 s.
    setTimeout(() => state.socket.destroy(), 2000).unref();
  }
  const exitWhenDone = setInterval(() => {
    if (sockets.size === 0) process.exit(0);
  }, 50);
  setTimeout(() => {
    clearInterval(exitWhenDone);
    process.exit(0);
  }, 3000).unref();
});

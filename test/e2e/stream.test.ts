// TCP ports and TLS passthrough (issue 15, item 8) on the lab, through the edge image's nginx stream module and njs
// balancer (Debian trixie: nginx 1.26, njs 0.8). The lab controller declares one TCP port (SWARMGATE_TCP_PORTS in
// stack.e2e.yml) and the edge publishes it in host mode. The backends are the test backend's image running a small
// Node server of their own (below): plain TCP that greets with its task name and echoes, and TLS with its own
// self-signed certificate, made here with openssl.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import http2 from 'node:http2';
import net from 'node:net';
import { test } from 'node:test';
import tls from 'node:tls';
import type { ControllerStatus, HttpsResult } from './support/lab.ts';
import { http3Get } from './support/http3.ts';
import { makeChannelKeyPair } from '../support/channel-tls.ts';
import {
  createService,
  docker,
  EDGE_HTTPS_PORT,
  EDGE_TCP_PORT,
  edgesInSync,
  httpsGet,
  pebbleRoot,
  removeService,
  STACK,
  uniqueName,
  waitFor,
  waitForServiceRunning,
} from './support/lab.ts';

/**
 * The backends' server: greets each connection with "hello <task>\n", then echoes. Over TLS when TLS_CERT/TLS_KEY
 * (base64 PEM) are set. On SIGTERM it keeps accepting for 3 s, as an app that drains does (the stop grace period is
 * 5 s), so a connection the edge still sent to a stopping task would be greeted by that task and seen by the test.
 */
const ECHO_SERVER = `
const net = require('node:net');
const tls = require('node:tls');
const task = process.env.TASK_NAME;
const onConnection = (socket) => {
  socket.on('error', () => {});
  socket.write('hello ' + task + '\\n');
  socket.pipe(socket);
};
const pem = (name) => Buffer.from(process.env[name], 'base64');
const server = process.env.TLS_CERT
  ? tls.createServer({ cert: pem('TLS_CERT'), key: pem('TLS_KEY') }, onConnection)
  : net.createServer(onConnection);
server.on('tlsClientError', () => {});
server.listen(Number(process.env.PORT), () => console.log('listening', process.env.PORT, task));
process.on('SIGTERM', () => setTimeout(() => process.exit(0), 3000));
`;

const TCP_TARGET_PORT = 7000;
const TLS_TARGET_PORT = 8443;

interface Greeting {
  readonly task: string | null;
  readonly error: string | null;
}

function greetingOf(line: string): string | null {
  return line.startsWith('hello ') ? line.slice('hello '.length) : null;
}

/** One new TCP connection to the lab edge's TCP port: the task that greeted it, or why none did. */
function tcpGreeting(timeoutMs = 3000): Promise<Greeting> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port: EDGE_TCP_PORT });
    let data = '';
    const done = (greeting: Greeting): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(greeting);
    };
    const timer = setTimeout(() => done({ task: null, error: 'timeout' }), timeoutMs);
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      data += chunk;
      const end = data.indexOf('\n');
      if (end >= 0) done({ task: greetingOf(data.slice(0, end)), error: null });
    });
    socket.on('error', (error) => done({ task: null, error: error.message }));
    socket.on('close', () => done({ task: null, error: `closed after ${JSON.stringify(data)}` }));
  });
}

async function tcpBatch(count: number): Promise<Greeting[]> {
  const greetings: Greeting[] = [];
  // One after another: each is a new connection, as a client pool opening connections would make.
  for (let i = 0; i < count; i += 1) greetings.push(await tcpGreeting());
  return greetings;
}

/** An open connection that stays: its greeting, and an echo of what is sent on it. */
class OpenConnection {
  private readonly socket: net.Socket;
  private buffer = '';
  private readonly waiters: (() => void)[] = [];
  closed = false;

  constructor() {
    this.socket = net.connect({ host: '127.0.0.1', port: EDGE_TCP_PORT });
    this.socket.setEncoding('utf8');
    this.socket.on('data', (chunk: string) => {
      this.buffer += chunk;
      this.waiters.splice(0).forEach((wake) => wake());
    });
    this.socket.on('error', () => {});
    this.socket.on('close', () => {
      this.closed = true;
      this.waiters.splice(0).forEach((wake) => wake());
    });
  }

  /** The next line from the server, or null if the connection closed or nothing came within the timeout. */
  async line(timeoutMs = 3000): Promise<string | null> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const end = this.buffer.indexOf('\n');
      if (end >= 0) {
        const line = this.buffer.slice(0, end);
        this.buffer = this.buffer.slice(end + 1);
        return line;
      }
      if (this.closed || Date.now() >= deadline) return null;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, deadline - Date.now());
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  async echo(text: string): Promise<string | null> {
    this.socket.write(`${text}\n`);
    return this.line();
  }

  close(): void {
    this.socket.destroy();
  }
}

function edgeCounters(status: ControllerStatus): { reloads: number; peerUpdates: number } {
  return status.edges.reduce(
    (sum, edge) => ({ reloads: sum.reloads + edge.reloads, peerUpdates: sum.peerUpdates + edge.peerUpdates }),
    { reloads: 0, peerUpdates: 0 },
  );
}

/** The nginx.conf this node's lab edge runs (its `current` bundle; read after edgesInSync, which says it applied it). */
async function edgeConfig(): Promise<string> {
  const id = (
    await docker(['ps', '-q', '--filter', `name=${STACK}_edge.`, '--filter', 'status=running'])
  ).split('\n')[0];
  if (!id) throw new Error('no running edge container');
  return docker(['exec', id, 'cat', '/var/lib/swarmgate/current/nginx.conf']);
}

function tally(greetings: readonly Greeting[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const greeting of greetings) {
    const key = greeting.task ?? `failed: ${greeting.error ?? ''}`;
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  return counts;
}

/** The running tasks' names as TASK_NAME gives them (service.slot.taskid), matched by task id. */
function taskIdOf(taskName: string): string {
  return taskName.split('.').pop() ?? '';
}

test('TCP port: a service on the edge port is balanced over its tasks; scaling needs no reload, keeps an open connection and never reaches a removed task', async (t) => {
  const name = uniqueName('sg-e2e-tcp');
  t.after(() => removeService(name));
  await createService({
    name,
    labels: {
      'swarmgate.tcp.port': String(EDGE_TCP_PORT),
      'swarmgate.tcp.target_port': String(TCP_TARGET_PORT),
    },
    env: { PORT: String(TCP_TARGET_PORT) },
    args: ['node', '-e', ECHO_SERVER],
  });
  const [first] = await waitForServiceRunning(name, 1);
  assert.ok(first);
  await waitFor(
    'a TCP connection to the edge port to be greeted by the task',
    async () => ((await tcpGreeting()).task?.endsWith(first.id) ? true : undefined),
    { timeoutMs: 90_000, intervalMs: 250 },
  );
  const open = new OpenConnection();
  t.after(() => open.close());
  assert.ok((await open.line())?.endsWith(first.id), 'the open connection is greeted by the task');
  assert.equal(await open.echo('before scaling'), 'before scaling');
  const countersBefore = edgeCounters(await edgesInSync());

  // 1 → 3: new connections spread over the new tasks (chosen at random: 60 connections miss one of 3 tasks with a
  // probability of 3·(2/3)^60 ≈ 10^-10).
  await docker(['service', 'scale', '--detach', `${name}=3`]);
  const running = await waitForServiceRunning(name, 3);
  const runningIds = new Set(running.map((task) => task.id));
  const spread = await waitFor(
    'new connections to reach all three tasks',
    async () => {
      const batch = await tcpBatch(60);
      const tasks = new Set(batch.map((greeting) => taskIdOf(greeting.task ?? '')));
      return [...runningIds].every((id) => tasks.has(id)) ? batch : undefined;
    },
    { timeoutMs: 60_000, intervalMs: 100 },
  );
  t.diagnostic(`60 connections after scaling to 3: ${JSON.stringify(Object.fromEntries(tally(spread)))}`);
  assert.ok(
    spread.every((greeting) => greeting.task !== null && runningIds.has(taskIdOf(greeting.task))),
    'every connection was greeted by a running task',
  );
  assert.equal(await open.echo('after scaling'), 'after scaling', 'the open connection carries on');
  assert.equal(open.closed, false);
  const countersAfter = edgeCounters(await edgesInSync());
  assert.equal(countersAfter.reloads, countersBefore.reloads, 'no nginx reload for scaling a TCP service');
  open.close();

  // 3 → 1: while Swarm stops two tasks, new connections keep being greeted; once the edges run the bundle without
  // them, none reaches a removed task (they still accept for 3 s after SIGTERM, so one would be seen).
  const during: Greeting[] = [];
  let scaling = true;
  const load = (async () => {
    while (scaling && during.length < 2000) during.push(await tcpGreeting());
  })();
  await docker(['service', 'scale', '--detach', `${name}=1`]);
  const [kept] = await waitForServiceRunning(name, 1);
  assert.ok(kept);
  await waitFor(
    'new connections to reach only the task that stays',
    async () => {
      const batch = await tcpBatch(20);
      return batch.every((greeting) => greeting.task?.endsWith(kept.id)) ? true : undefined;
    },
    { timeoutMs: 60_000, intervalMs: 100 },
  );
  const countersDown = edgeCounters(await edgesInSync());
  scaling = false;
  await load;
  const after = await tcpBatch(30);
  t.diagnostic(
    `during the scale-down: ${JSON.stringify(Object.fromEntries(tally(during)))}; after: ${JSON.stringify(Object.fromEntries(tally(after)))}`,
  );
  assert.deepEqual(
    after.filter((greeting) => !greeting.task?.endsWith(kept.id)),
    [],
    'no new connection reaches a removed task',
  );
  assert.deepEqual(
    during.filter((greeting) => greeting.task === null),
    [],
    'no connection failed while tasks were removed',
  );
  assert.equal(countersDown.reloads, countersBefore.reloads, 'no nginx reload for scaling down either');

  assert.match(await edgeConfig(), new RegExp(`listen ${EDGE_TCP_PORT};`));

  // Removed: the port's listener goes with the last TCP service.
  await docker(['service', 'rm', name]);
  await waitFor(
    'the edge to drop the TCP listener',
    async () => ((await edgeConfig()).includes(`listen ${EDGE_TCP_PORT};`) ? undefined : true),
    { timeoutMs: 60_000, intervalMs: 500 },
  );
  // The agent switches `current` before it reloads nginx: in sync only once the reload took. Then the old workers
  // let go of the port as they shut down (moments later); the removed task still answers for a few seconds.
  await edgesInSync();
  await waitFor(
    'nothing to greet on the port',
    async () => ((await tcpGreeting()).task === null ? true : undefined),
    {
      timeoutMs: 10_000,
      intervalMs: 200,
    },
  );
});

interface TlsGreeting {
  readonly greeting: string | null;
  /** SHA-256 of the certificate the edge's port presented (hex, lower case). */
  readonly certificate: string | null;
  readonly error: string | null;
}

/** A TLS connection to the edge's HTTPS port with `servername` as SNI, verified against `ca` only. */
function tlsGreeting(servername: string, ca: string): Promise<TlsGreeting> {
  return new Promise((resolve) => {
    const socket = tls.connect({ host: '127.0.0.1', port: EDGE_HTTPS_PORT, servername, ca });
    let data = '';
    let certificate: string | null = null;
    const done = (result: Omit<TlsGreeting, 'certificate'>): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve({ ...result, certificate });
    };
    const timer = setTimeout(() => done({ greeting: null, error: 'timeout' }), 5000);
    socket.on('secureConnect', () => {
      const raw = socket.getPeerCertificate().raw;
      certificate = createHash('sha256').update(raw).digest('hex');
    });
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      data += chunk;
      const end = data.indexOf('\n');
      if (end >= 0) done({ greeting: greetingOf(data.slice(0, end)), error: null });
    });
    socket.on('error', (error: Error) => done({ greeting: null, error: error.message }));
    socket.on('close', () => done({ greeting: null, error: `closed after ${JSON.stringify(data)}` }));
  });
}

function pemSha256(pem: string): string {
  return createHash('sha256')
    .update(Buffer.from(pem.replace(/-----[^-]+-----|\s/g, ''), 'base64'))
    .digest('hex');
}

/** The headers the normal host's service received over HTTPS, with the certificate serial the edge presented. */
async function httpsHeaders(
  host: string,
  root: string,
): Promise<{ result: HttpsResult; headers: Record<string, string> }> {
  const result = await httpsGet(EDGE_HTTPS_PORT, '/headers', host, root);
  assert.equal(result.status, 200, `GET https://${host}/headers: ${result.body}`);
  return { result, headers: (JSON.parse(result.body) as { headers: Record<string, string> }).headers };
}

function h2Get(host: string, root: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`https://127.0.0.1:${EDGE_HTTPS_PORT}`, { servername: host, ca: root });
    session.on('error', reject);
    const stream = session.request({ ':path': '/', ':authority': host });
    let body = '';
    let status = 0;
    stream.setEncoding('utf8');
    stream.on('response', (headers) => (status = Number(headers[':status'])));
    stream.on('data', (chunk: string) => (body += chunk));
    stream.on('end', () => {
      session.close();
      resolve({ status, body });
    });
    stream.on('error', (error: Error) => {
      session.close();
      reject(error);
    });
    stream.end();
  });
}

/**
 * curl's "<http version> <status>" of a GET over HTTP/3, tried for up to 30 s until "3 200", or the last try's line.
 * Each try is a fresh `docker run` and QUIC handshake a moment after a reload, whose first Initial packet an old worker
 * may read as it shuts down.
 */
async function http3Line(host: string, root: string): Promise<string> {
  let line = '';
  await waitFor(
    `HTTP/3 from ${host}`,
    async () => {
      const answer = await http3Get(host, root);
      line = answer.ok ? `${answer.version} ${answer.status}` : `failed: ${answer.error}`;
      return line === '3 200' ? true : undefined;
    },
    { timeoutMs: 30_000, intervalMs: 500 },
  ).catch(() => undefined);
  return line;
}

test("TLS passthrough on the HTTPS port: the passthrough name gets the backend's own certificate, a normal host keeps the edge's, its client address, HTTP/2 and HTTP/3; removed, the edge goes back", async (t) => {
  const web = uniqueName('sg-e2e-web');
  const webHost = `${web}.e2e.test`;
  const vault = uniqueName('sg-e2e-vault');
  const vaultHost = `${vault}.e2e.test`;
  t.after(() => Promise.all([removeService(web), removeService(vault)]));
  await createService({
    name: web,
    labels: {
      VIRTUAL_HOST: webHost,
      LETSENCRYPT_HOST: webHost,
      'swarmgate.http3': 'on',
      EXTERNAL_HTTPS_PORT: String(EDGE_HTTPS_PORT),
    },
  });
  const root = await pebbleRoot();
  await waitFor(
    `a verified HTTPS answer for ${webHost}`,
    async () => {
      const result = await httpsGet(EDGE_HTTPS_PORT, '/', webHost, root);
      return result.status === 200 && result.body.includes(`"task":"${web}.`) ? true : undefined;
    },
    { timeoutMs: 90_000, intervalMs: 250 },
  );
  // Before any passthrough service: 443 is nginx's HTTPS itself. What the service sees of the client then is the
  // reference for after.
  const direct = await httpsHeaders(webHost, root);
  assert.ok(direct.headers['x-real-ip'], 'X-Real-IP is set');
  const webCertificate = direct.result.serial;

  // The backend's own self-signed certificate for its name.
  const own = await makeChannelKeyPair(vaultHost);
  t.after(() => own.remove());
  await createService({
    name: vault,
    labels: {
      'swarmgate.tls.passthrough': vaultHost,
      'swarmgate.tls.passthrough.port': String(TLS_TARGET_PORT),
    },
    env: {
      PORT: String(TLS_TARGET_PORT),
      TLS_CERT: Buffer.from(own.cert).toString('base64'),
      TLS_KEY: Buffer.from(own.key).toString('base64'),
    },
    args: ['node', '-e', ECHO_SERVER],
  });
  const [vaultTask] = await waitForServiceRunning(vault, 1);
  assert.ok(vaultTask);
  // Verified against the backend's own certificate only: the handshake succeeds only with the backend at the end.
  const passed = await waitFor(
    `a TLS connection for ${vaultHost} to reach its backend`,
    async () => {
      const result = await tlsGreeting(vaultHost, own.cert);
      return result.greeting?.endsWith(vaultTask.id) ? result : undefined;
    },
    { timeoutMs: 90_000, intervalMs: 250 },
  );
  assert.equal(
    passed.certificate,
    pemSha256(own.cert),
    "the backend's own certificate, undecrypted by the edge",
  );

  // The normal host on the same port, now behind the SNI hop: the edge's certificate, the client's address.
  const hopped = await httpsHeaders(webHost, root);
  assert.equal(hopped.result.serial, webCertificate, "the normal host keeps the edge's certificate");
  assert.equal(hopped.headers.host, webHost);
  for (const header of ['x-real-ip', 'x-forwarded-for', 'x-forwarded-port', 'x-forwarded-proto']) {
    assert.equal(hopped.headers[header], direct.headers[header], `${header} is what it was without the hop`);
  }
  t.diagnostic(
    `the normal host's service saw X-Real-IP ${direct.headers['x-real-ip']} before and ${hopped.headers['x-real-ip']} behind the SNI hop`,
  );
  const h2 = await h2Get(webHost, root);
  assert.equal(h2.status, 200, 'HTTP/2 on the normal host');
  assert.match(h2.body, new RegExp(`"task":"${web}\\.`));
  assert.equal(await http3Line(webHost, root), '3 200', 'HTTP/3 on the normal host (443/udp has no hop)');
  // A name nobody routes is still refused by nginx's HTTPS, not passed to a backend.
  const unknown = await tlsGreeting(`nobody-${vault}.e2e.test`, own.cert);
  assert.equal(unknown.greeting, null);
  assert.match(unknown.error ?? '', /unrecognized name/i, 'rejected by the HTTPS servers');
  assert.match(await edgeConfig(), /ssl_preread on;/);

  // Removed: 443 is nginx's HTTPS again (no stream hop in the edge's config), the name refused like any unknown one.
  await docker(['service', 'rm', vault]);
  await waitFor(
    'the edge to drop the passthrough listener',
    async () => ((await edgeConfig()).includes('ssl_preread on;') ? undefined : true),
    { timeoutMs: 60_000, intervalMs: 500 },
  );
  // As for the TCP port: in sync once the reload took, then the old workers' last moments pass.
  await edgesInSync();
  const gone = await waitFor(
    `${vaultHost} to be refused`,
    async () => {
      const greeting = await tlsGreeting(vaultHost, own.cert);
      return greeting.greeting === null ? greeting : undefined;
    },
    { timeoutMs: 10_000, intervalMs: 200 },
  );
  assert.equal(gone.greeting, null);
  assert.match(gone.error ?? '', /unrecognized name/i, `${vaultHost} is refused like any unknown name`);
  const back = await httpsHeaders(webHost, root);
  assert.equal(back.result.serial, webCertificate);
  assert.equal(back.headers['x-real-ip'], direct.headers['x-real-ip']);
  assert.equal(await http3Line(webHost, root), '3 200');
});

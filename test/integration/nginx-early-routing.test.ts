// Early routing (lua/swarmgate/early.lua), in a real nginx on loopback: nginx runs the bundle of one HTTPS host; the
// next bundle adds an HTTPS host, an HTTP host and a host with an access rule. Posted to POST /early as the edge agent
// posts it (before `nginx -t` and the reload), the plain hosts are served at once, exactly as their own server blocks
// serve them after the reload (port 80 redirects with the same statuses, HTTPS with its own certificate and HSTS,
// counted under their host and service), while the host with the rule, unknown names and clients without SNI get what
// they got before. An empty post takes them away again; a malformed post is refused whole and changes nothing.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import http from 'node:http';
import https from 'node:https';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import tls from 'node:tls';
import { promisify } from 'node:util';
import { X509Certificate } from 'node:crypto';
import { buildRoutingModel } from '../../src/model/routing-model.ts';
import type { AvailableCertificate } from '../../src/model/routing-model.ts';
import { EARLY_HOSTS_FILE, earlyPost } from '../../src/render/early-hosts-text.ts';
import { createTemplateRenderer } from '../../src/render/nunjucks-env.ts';
import { renderConfig } from '../../src/render/render-config.ts';
import type { BundleFiles } from '../../src/render/render-config.ts';
import { BundleCache } from '../../src/edge/bundle-cache.ts';
import { localSocketGet } from '../../src/edge/edge-metrics.ts';
import { fingerprintBundle } from '../../src/render/render-config.ts';
import { makeChannelKeyPair } from '../support/channel-tls.ts';
import { servicesSnapshot } from '../support/one-service.ts';
import type { RoutedService } from '../support/one-service.ts';
import {
  freePort,
  loopbackConf,
  loopbackSetup,
  REPO_LUA_DIR,
  startBackend,
  startBundleNginx,
  withConf,
} from '../support/loopback-nginx.ts';
import type { Backend, LoopbackSetup } from '../support/loopback-nginx.ts';

const templates = createTemplateRenderer();
const DOMAINS = ['old.example.test', 'new.example.test', 'late.example.test'];
const pairs = new Map<string, { certificatePem: string; privateKeyPem: string; fingerprint: string }>();
const removals: (() => Promise<void>)[] = [];
const backends: Backend[] = [];
let backendPort: number;

before(async () => {
  for (const domain of DOMAINS) {
    const made = await makeChannelKeyPair(domain);
    removals.push(made.remove);
    pairs.set(domain, {
      certificatePem: made.cert,
      privateKeyPem: made.key,
      fingerprint: new X509Certificate(made.cert).fingerprint256,
    });
  }
  backendPort = await freePort();
  for (let index = 1; index <= 4; index++) backends.push(await startBackend(`127.0.0.${index}`, backendPort));
});

after(async () => {
  await Promise.all(backends.map((backend) => backend.close()));
  await Promise.all(removals.map((remove) => remove()));
});

const service = (name: string, labels: Record<string, string>, index: number): RoutedService => ({
  name,
  labels: { ...labels, VIRTUAL_PORT: String(backendPort) },
  ips: [`127.0.0.${index + 1}`],
});

// Functions: the backends' port is known once before() ran.
const OLD = (): RoutedService[] => [service('old', { VIRTUAL_HOST: 'old.example.test' }, 0)];
const NEW = (): RoutedService[] => [
  ...OLD(),
  service('new', { VIRTUAL_HOST: 'new.example.test' }, 1),
  service('plain', { VIRTUAL_HOST: 'plain.test' }, 2),
  service('guarded', { VIRTUAL_HOST: 'guarded.test', 'swarmgate.allow': '10.9.9.0/24' }, 3),
];

function bundle(
  setup: LoopbackSetup,
  services: RoutedService[],
  domains: readonly string[] = DOMAINS,
): BundleFiles {
  const certificates: AvailableCertificate[] = domains.map((domain) => ({
    name: domain,
    domains: [domain],
    source: 'user',
  }));
  const model = buildRoutingModel(servicesSnapshot(services), { networks: ['swarmgate'], certificates });
  const files = renderConfig(
    model,
    { proxy: setup.proxy, generator: 'test', luaDir: REPO_LUA_DIR },
    templates,
    (name) => pairs.get(name),
  );
  return withConf(files, loopbackConf(setup, files['nginx.conf'] ?? ''));
}

interface Answer {
  readonly status: number;
  readonly body: string;
  readonly headers: http.IncomingHttpHeaders;
}

function request(setup: LoopbackSetup, host: string, method = 'GET', secure = false): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const options = {
      host: '127.0.0.1',
      port: secure ? setup.tlsPort : setup.listenPort,
      method,
      path: '/some/path?q=1',
      headers: { host },
      agent: false,
      ...(secure ? { servername: host, rejectUnauthorized: false } : {}),
    } as const;
    const req = (secure ? https : http).request(options, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }));
    });
    req.on('error', reject);
    req.end();
  });
}

function handshake(setup: LoopbackSetup, servername: string | undefined): Promise<string> {
  return new Promise((resolve) => {
    const socket = tls.connect(
      {
        host: '127.0.0.1',
        port: setup.tlsPort,
        ...(servername === undefined ? {} : { servername }),
        rejectUnauthorized: false,
      },
      () => {
        resolve(socket.getPeerX509Certificate()?.fingerprint256 ?? '');
        socket.end();
      },
    );
    socket.once('error', (error: Error) => resolve(`refused: ${error.message}`));
  });
}

/** What one connection of `openssl s_client` got: a resumed session or not, and the HTTP status line's code, if any. */
interface Visit {
  readonly reused: boolean;
  readonly status: number | null;
  readonly body: string;
}

const execFileAsync = promisify(execFile);

/**
 * One GET over TLS with `openssl s_client`, which offers a saved session whatever name it asks for (Node's client
 * offers a session only to the name it was made for; an attacker's client offers it anywhere). `servername` null:
 * no SNI at all. The session the server hands out is saved to `sessionOut`; `sessionIn` is offered.
 */
async function visit(
  setup: LoopbackSetup,
  servername: string | null,
  version: '-tls1_2' | '-tls1_3',
  files: { readonly sessionIn?: string; readonly sessionOut?: string },
): Promise<Visit> {
  const args = [
    's_client',
    '-connect',
    `127.0.0.1:${setup.tlsPort}`,
    version,
    '-ign_eof',
    ...(servername === null ? ['-noservername'] : ['-servername', servername]),
    ...(files.sessionIn ? ['-sess_in', files.sessionIn] : []),
    ...(files.sessionOut ? ['-sess_out', files.sessionOut] : []),
  ];
  const child = execFileAsync('openssl', args, { timeout: 10_000 });
  child.child.stdin?.end(
    `GET / HTTP/1.1\r\nHost: ${servername ?? 'unknown.test'}\r\nConnection: close\r\n\r\n`,
  );
  // s_client ends with a non-zero code after a refused handshake and, often, after the server closes: the output says which.
  const stdout = await child.then(
    ({ stdout: out }) => out,
    (error: { stdout?: string }) => error.stdout ?? '',
  );
  const status = /^HTTP\/1\.1 (\d{3}) /m.exec(stdout);
  return {
    reused: /^Reused, /m.test(stdout),
    status: status ? Number(status[1]) : null,
    // The backends answer with their address, and s_client prints "closed" right after it.
    body: /\r\n\r\n(127\.0\.0\.\d+)/.exec(stdout)?.[1] ?? '',
  };
}

function post(setup: LoopbackSetup, body: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        socketPath: setup.proxy.peersSocket,
        path: '/early',
        method: 'POST',
        headers: { 'content-length': Buffer.byteLength(body) },
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (text += chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

test('the hosts of the next bundle are served before its reload, exactly as their own blocks serve them', async (t) => {
  const stateDir = await mkdtemp(path.join(os.tmpdir(), 'swarmgate-early-'));
  // One worker: GET /metrics adds the answering worker's pending counts, and another worker's wait for its timer.
  const setup = await loopbackSetup(stateDir, { workerProcesses: '1' });
  const running = bundle(setup, OLD());
  const next = bundle(setup, NEW());
  await startBundleNginx(t, stateDir, setup, running);

  // The table: plain hosts only; the one with an access rule waits for the reload.
  assert.equal(
    next[EARLY_HOSTS_FILE],
    'new.example.test\tnew\tsvc_new_289996\tredirect\tnew.example.test\t-\tmax-age=31536000\n' +
      'old.example.test\told\tsvc_old_bd2b9b\tredirect\told.example.test\t-\tmax-age=31536000\n' +
      'plain.test\tplain\tsvc_plain_d3be3f\tserve\t-\t-\t-\n',
  );
  const body = earlyPost(next, running);
  // Only what is new: old.example.test's entry and certificate are the running ones.
  assert.doesNotMatch(body, /old\.example\.test/);
  assert.match(body, /^upstream svc_new_289996 127\.0\.0\.2:\d+$/m);
  assert.match(body, /^certificate new\.example\.test$/m);

  // Before the post: nothing of the next bundle is served.
  assert.equal((await request(setup, 'plain.test')).status, 503);
  assert.match(await handshake(setup, 'new.example.test'), /^refused/);

  assert.deepEqual(await post(setup, body), { status: 204, body: '' });

  const plain = await request(setup, 'plain.test');
  assert.equal(plain.status, 200);
  assert.equal(plain.body, '127.0.0.3');
  assert.equal(plain.headers['strict-transport-security'], undefined);
  // Port 80 of an HTTPS host: GET moves with 301, other methods with 308, to the same path.
  const redirected = await request(setup, 'new.example.test');
  assert.equal(redirected.status, 301);
  assert.equal(redirected.headers.location, 'https://new.example.test/some/path?q=1');
  const posted = await request(setup, 'new.example.test', 'POST');
  assert.equal(posted.status, 308);
  assert.equal(posted.headers.location, 'https://new.example.test/some/path?q=1');
  // HTTPS: its own certificate, its service, HSTS.
  assert.equal(await handshake(setup, 'new.example.test'), pairs.get('new.example.test')?.fingerprint);
  const secure = await request(setup, 'new.example.test', 'GET', true);
  assert.equal(secure.status, 200);
  assert.equal(secure.body, '127.0.0.2');
  assert.equal(secure.headers['strict-transport-security'], 'max-age=31536000');

  // What the table does not hold gets what it got before: the host with a rule, unknown names, no SNI.
  assert.equal((await request(setup, 'guarded.test')).status, 503);
  assert.equal((await request(setup, 'unknown.test')).status, 503);
  assert.match(await handshake(setup, 'unknown.example.test'), /^refused/);
  assert.match(await handshake(setup, undefined), /^refused/);
  // The running hosts are untouched.
  assert.equal(await handshake(setup, 'old.example.test'), pairs.get('old.example.test')?.fingerprint);
  assert.equal((await request(setup, 'old.example.test', 'GET', true)).body, '127.0.0.1');

  // Counted under the host and service the table names, as the host's own block will count them.
  const metrics = await localSocketGet(setup.proxy.peersSocket, '/metrics', AbortSignal.timeout(5000));
  assert.match(metrics ?? '', /^req\tplain\.test\tplain\t2xx\t1$/m);
  assert.match(metrics ?? '', /^req\tnew\.example\.test\tnew\t2xx\t1$/m);
  // Its redirects under its name with no service, as the shared port-80 block of the hosts that redirect counts them.
  assert.match(metrics ?? '', /^req\tnew\.example\.test\t\t3xx\t2$/m);

  // A malformed table is refused whole; the one before stays.
  const refused = await post(setup, `not a line\n${body}`);
  assert.equal(refused.status, 400);
  assert.match(refused.body, /line \d+: not 7 fields/);
  assert.equal((await request(setup, 'plain.test')).status, 200);

  // Emptied (after the reload, or when it fails): back to 503 and a refused handshake.
  assert.deepEqual(await post(setup, ''), { status: 204, body: '' });
  assert.equal((await request(setup, 'plain.test')).status, 503);
  assert.match(await handshake(setup, 'new.example.test'), /^refused/);
});

test('a certificate issued for a running HTTP host is served over HTTPS before the reload', async (t) => {
  const stateDir = await mkdtemp(path.join(os.tmpdir(), 'swarmgate-early-'));
  const setup = await loopbackSetup(stateDir);
  const services = [...OLD(), service('late', { VIRTUAL_HOST: 'late.example.test' }, 2)];
  // Running: late.example.test has no certificate yet, so it is served over HTTP only.
  const running = bundle(setup, services, ['old.example.test']);
  const next = bundle(setup, services);
  await startBundleNginx(t, stateDir, setup, running);
  assert.equal((await request(setup, 'late.example.test')).body, '127.0.0.3');
  assert.match(await handshake(setup, 'late.example.test'), /^refused/);

  const body = earlyPost(next, running);
  assert.match(body, /^late\.example\.test\tlate\t\w+\tredirect\tlate\.example\.test\t/m);
  assert.deepEqual(await post(setup, body), { status: 204, body: '' });
  assert.equal(await handshake(setup, 'late.example.test'), pairs.get('late.example.test')?.fingerprint);
  const secure = await request(setup, 'late.example.test', 'GET', true);
  assert.equal(secure.body, '127.0.0.3');
  assert.equal(secure.headers['strict-transport-security'], 'max-age=31536000');
  // Port 80 keeps the running block (it serves, not redirects) until the reload brings the new one.
  assert.equal((await request(setup, 'late.example.test')).status, 200);
});

test('with traffic counting off, an early host is served the same', async (t) => {
  const stateDir = await mkdtemp(path.join(os.tmpdir(), 'swarmgate-early-'));
  const setup = await loopbackSetup(stateDir, { trafficMetrics: false });
  const running = bundle(setup, OLD());
  const next = bundle(setup, NEW());
  await startBundleNginx(t, stateDir, setup, running);
  assert.deepEqual(await post(setup, earlyPost(next, running)), { status: 204, body: '' });
  const plain = await request(setup, 'plain.test');
  assert.equal(plain.status, 200);
  assert.equal(plain.body, '127.0.0.3');
  assert.equal((await request(setup, 'new.example.test', 'GET', true)).body, '127.0.0.2');
});

test('a table never outlives the config that took it: after a reload it is ignored, cleared or not', async (t) => {
  const stateDir = await mkdtemp(path.join(os.tmpdir(), 'swarmgate-early-'));
  const setup = await loopbackSetup(stateDir);
  const running = bundle(setup, OLD());
  const next = bundle(setup, NEW());
  const { nginx } = await startBundleNginx(t, stateDir, setup, running);
  assert.deepEqual(await post(setup, earlyPost(next, running)), { status: 204, body: '' });
  assert.equal((await request(setup, 'plain.test')).status, 200);

  // The edge moves on to another bundle without plain.test and new.example.test, and the clear never arrives.
  const other = bundle(setup, [...OLD(), service('guarded', { VIRTUAL_HOST: 'guarded.test' }, 3)]);
  const cache = new BundleCache(stateDir);
  const fingerprint = fingerprintBundle(other);
  await cache.stage(fingerprint, other);
  await cache.activate(fingerprint, { version: 2, fingerprint });
  nginx.reload();
  const generation = /^generation \w+/.exec(other['peers.txt'] ?? '')?.[0] ?? '';
  for (let i = 0; i < 200; i++) {
    if ((await nginx.runningPeers(AbortSignal.timeout(2000)))?.startsWith(generation)) break;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  // Fresh connections reach the new workers only (request() uses no keep-alive).
  assert.equal((await request(setup, 'guarded.test')).status, 200);
  assert.equal((await request(setup, 'plain.test')).status, 503);
  assert.match(await handshake(setup, 'new.example.test'), /^refused/);
});

test("early requests are balanced round robin, never by the running config's options for the same upstream", async (t) => {
  const stateDir = await mkdtemp(path.join(os.tmpdir(), 'swarmgate-early-'));
  const setup = await loopbackSetup(stateDir);
  const late = (labels: Record<string, string>): RoutedService => ({
    name: 'late',
    labels: { VIRTUAL_HOST: 'late.example.test', VIRTUAL_PORT: String(backendPort), ...labels },
    ips: ['127.0.0.3', '127.0.0.4'],
  });
  // Running: the host is HTTP only and hashed by the client's address (one client: one task); next: plain round robin, with its certificate.
  const hashed = late({ 'swarmgate.balance': 'hash', 'swarmgate.balance.key': 'client_ip' });
  const running = bundle(setup, [...OLD(), hashed], ['old.example.test']);
  const next = bundle(setup, [...OLD(), late({})]);
  await startBundleNginx(t, stateDir, setup, running);
  assert.deepEqual(await post(setup, earlyPost(next, running)), { status: 204, body: '' });
  const answered = new Set<string>();
  for (let i = 0; i < 8; i++) answered.add((await request(setup, 'late.example.test', 'GET', true)).body);
  assert.deepEqual([...answered].sort(), ['127.0.0.3', '127.0.0.4']);
});

test('no TLS session for a name neither configured nor early, not even one resumed from a host that had one', async (t) => {
  const stateDir = await mkdtemp(path.join(os.tmpdir(), 'swarmgate-early-'));
  const setup = await loopbackSetup(stateDir);
  const running = bundle(setup, OLD());
  const next = bundle(setup, NEW());
  await startBundleNginx(t, stateDir, setup, running);
  assert.deepEqual(await post(setup, earlyPost(next, running)), { status: 204, body: '' });
  const sessions = await mkdtemp(path.join(os.tmpdir(), 'swarmgate-sessions-'));
  t.after(() => rm(sessions, { recursive: true, force: true }));

  for (const version of ['-tls1_2', '-tls1_3'] as const) {
    // Sessions a client legitimately gets: from a running host (the default server's TLS context, certificate picked
    // by name) and from an early host (the catch-all's context).
    for (const [host, answer] of [
      ['old.example.test', '127.0.0.1'],
      ['new.example.test', '127.0.0.2'],
    ] as const) {
      const saved = path.join(sessions, `${host}${version}.pem`);
      const first = await visit(setup, host, version, { sessionOut: saved });
      assert.deepEqual(first, { reused: false, status: 200, body: answer }, `${version} ${host}`);
      // Under its own name the session is resumed and the host served.
      assert.deepEqual(
        await visit(setup, host, version, { sessionIn: saved }),
        { reused: true, status: 200, body: answer },
        `${version} ${host} resumed`,
      );
      // Offered for a name nobody configured, or with no name at all: refused, never resumed and answered 503.
      for (const other of ['unknown.example.test', null]) {
        assert.deepEqual(
          await visit(setup, other, version, { sessionIn: saved }),
          { reused: false, status: null, body: '' },
          `${version} ${host}'s session offered for ${String(other)}`,
        );
      }
    }
  }

  // Emptied (a failed test or reload): the early host's session is no way back in; the running host keeps its own.
  assert.deepEqual(await post(setup, ''), { status: 204, body: '' });
  for (const version of ['-tls1_2', '-tls1_3'] as const) {
    assert.deepEqual(
      await visit(setup, 'new.example.test', version, {
        sessionIn: path.join(sessions, `new.example.test${version}.pem`),
      }),
      { reused: false, status: null, body: '' },
    );
    assert.deepEqual(
      await visit(setup, 'old.example.test', version, {
        sessionIn: path.join(sessions, `old.example.test${version}.pem`),
      }),
      { reused: true, status: 200, body: '127.0.0.1' },
    );
  }
});

test('a regular expression among the HTTPS hosts keeps 443 without early routing: the client hello Lua could not tell its names', async () => {
  const stateDir = await mkdtemp(path.join(os.tmpdir(), 'swarmgate-early-'));
  const setup = await loopbackSetup(stateDir);
  await rm(stateDir, { recursive: true, force: true });
  const regex = service(
    'regex',
    { VIRTUAL_HOST: '~^api\\d+\\.example\\.test$', CERT_NAME: 'old.example.test' },
    1,
  );
  const plain = bundle(setup, OLD());
  const withRegex = bundle(setup, [...OLD(), regex]);
  assert.match(plain['nginx.conf'] ?? '', /^ {8}server_name ~\.;$/m);
  assert.match(plain['nginx.conf'] ?? '', /swarmgate_certificates\.select\(true\)/);
  assert.match(withRegex['nginx.conf'] ?? '', /server_name "~\^api/);
  assert.doesNotMatch(withRegex['nginx.conf'] ?? '', /^ {8}server_name ~\.;$/m);
  assert.match(withRegex['nginx.conf'] ?? '', /swarmgate_certificates\.select\(\)/);
  assert.doesNotMatch(withRegex[EARLY_HOSTS_FILE] ?? '', /example\.test/);
});

// TCP ports and TLS passthrough (issue 15, item 8) in a real nginx on loopback, with the stream balancer
// (njs/swarmgate/stream.js) and the config the controller renders: connections to a TCP port are spread over the
// service's tasks; a bundle that only changes tasks (staged and swapped as the edge agent does, no reload) changes
// where new connections go while an open one carries on; on the TLS port a passthrough name reaches its own TLS
// backend with that backend's certificate while another name is terminated by nginx, whose service sees the
// client's address through the PROXY hop.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { chmod, mkdtemp, readFile, rm } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import tls from 'node:tls';
import type { Snapshot } from '../../src/discovery/snapshot.ts';
import { BundleCache } from '../../src/edge/bundle-cache.ts';
import { buildRoutingModel } from '../../src/model/routing-model.ts';
import { createTemplateRenderer } from '../../src/render/nunjucks-env.ts';
import { fingerprintBundle, renderConfig } from '../../src/render/render-config.ts';
import type { BundleFiles } from '../../src/render/render-config.ts';
import {
  freePort,
  loopbackConf,
  loopbackSetup,
  REPO_LUA_DIR,
  REPO_NJS_DIR,
  startBundleNginx,
  withConf,
  workerPids,
} from '../support/loopback-nginx.ts';
import type { LoopbackSetup } from '../support/loopback-nginx.ts';

const fixtures = new URL('../fixtures/', import.meta.url);
const nginxCertificate = {
  certificatePem: await readFile(new URL('test-only.crt', fixtures), 'utf8'),
  privateKeyPem: await readFile(new URL('test-only.key', fixtures), 'utf8'),
};

/** A TCP backend: greets each connection with its address, then echoes. */
async function startEchoBackend(ip: string, port: number): Promise<{ close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    socket.write(`${ip}\n`);
    socket.pipe(socket);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, ip, () => resolve());
  });
  return {
    close: () =>
      new Promise((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

/** Opens a connection to the edge port and returns it with the first line the backend sent. */
function connectTcp(port: number): Promise<{ socket: net.Socket; greeting: string }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    let data = '';
    socket.setEncoding('utf8');
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error('no greeting within 3 s'));
    }, 3000);
    socket.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    socket.on('data', function onData(chunk: string) {
      data += chunk;
      const newline = data.indexOf('\n');
      if (newline < 0) return;
      clearTimeout(timer);
      socket.off('data', onData);
      resolve({ socket, greeting: data.slice(0, newline) });
    });
  });
}

/** Where n new connections, one after another, were greeted from. */
async function spread(port: number, n: number): Promise<Map<string, number>> {
  const counts = new Map<string, number>();
  for (let i = 0; i < n; i++) {
    const { socket, greeting } = await connectTcp(port);
    socket.destroy();
    counts.set(greeting, (counts.get(greeting) ?? 0) + 1);
  }
  return counts;
}

function task(id: string, serviceId: string, ip: string): Snapshot['tasks'][number] {
  return {
    id,
    serviceId,
    nodeId: 'n1',
    slot: 1,
    desiredState: 'running',
    state: 'running',
    stateSince: '2026-01-01T00:00:00Z',
    error: null,
    image: 'example/app:1',
    addresses: [{ networkId: 'net-swarmgate', networkName: 'swarmgate', ip }],
  };
}

function service(id: string, labels: Record<string, string>): Snapshot['services'][number] {
  return {
    id,
    name: id,
    createdAt: '2026-01-01T00:00:00Z',
    labels,
    env: {},
    mode: 'replicated',
    replicas: 1,
    networks: ['swarmgate'],
    image: 'example/app:1',
    updateState: null,
  };
}

interface Ports {
  readonly tcp: number;
  readonly echo: number;
  readonly vault: number;
  readonly web: number;
}

/** The edge bundle for: db on the TCP port (tasks dbIps), vault.test passed through, web.test terminated. */
function bundle(setup: LoopbackSetup, ports: Ports, dbIps: readonly string[]): BundleFiles {
  const snapshot: Snapshot = {
    services: [
      service('db', {
        'swarmgate.tcp.port': String(ports.tcp),
        'swarmgate.tcp.target_port': String(ports.echo),
      }),
      service('vault', {
        'swarmgate.tls.passthrough': 'vault.test',
        'swarmgate.tls.passthrough.port': String(ports.vault),
      }),
      service('web', {
        VIRTUAL_HOST: 'web.test',
        VIRTUAL_PORT: String(ports.web),
        HTTPS_METHOD: 'noredirect',
      }),
    ],
    tasks: [
      ...dbIps.map((ip, index) => task(`db${index}`, 'db', ip)),
      task('vault0', 'vault', '127.0.0.20'),
      task('web0', 'web', '127.0.0.30'),
    ],
    networks: [],
    nodes: [],
  };
  const model = buildRoutingModel(snapshot, {
    networks: ['swarmgate'],
    tcpPorts: [ports.tcp],
    certificates: [{ name: 'web', domains: ['web.test'], source: 'user' }],
  });
  assert.deepEqual(model.problems, []);
  const files = renderConfig(
    model,
    { proxy: setup.proxy, generator: 'test', luaDir: REPO_LUA_DIR, njsDir: REPO_NJS_DIR },
    createTemplateRenderer(),
    (name) => (name === 'web' ? nginxCertificate : undefined),
  );
  const conf = loopbackConf(setup, files['nginx.conf'] ?? '')
    .replace(`listen ${ports.tcp};`, `listen 127.0.0.1:${ports.tcp};`)
    .replace(/listen 443;/, `listen 127.0.0.1:${setup.tlsPort};`);
  return withConf(files, conf);
}

/** A self-signed certificate of the passthrough backend's own, which nginx never has. */
function backendCertificate(dir: string): { cert: string; key: string } {
  const result = spawnSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-days',
      '1',
      '-subj',
      '/CN=vault.test',
      '-keyout',
      path.join(dir, 'vault.key'),
      '-out',
      path.join(dir, 'vault.crt'),
    ],
    { encoding: 'utf8', timeout: 20_000 },
  );
  assert.equal(result.status, 0, result.stderr);
  return {
    cert: readFileSync(path.join(dir, 'vault.crt'), 'utf8'),
    key: readFileSync(path.join(dir, 'vault.key'), 'utf8'),
  };
}

test('stream: TCP spread over tasks, tasks changed without a reload, SNI passthrough beside HTTPS', async (t) => {
  const stateDir = await mkdtemp(path.join(os.tmpdir(), 'swarmgate-stream-'));
  // nginx's workers (user nobody) read stream-peers.txt through the state directory, as on the edge's volume
  // (/var/lib/swarmgate is 0755 in the image); mkdtemp makes it 0700.
  await chmod(stateDir, 0o755);
  const setup = await loopbackSetup(stateDir, { workerProcesses: '2' });
  const ports: Ports = {
    tcp: await freePort(),
    echo: await freePort(),
    vault: await freePort(),
    web: await freePort(),
  };

  const backends = await Promise.all(
    ['127.0.0.2', '127.0.0.3', '127.0.0.4', '127.0.0.5'].map((ip) => startEchoBackend(ip, ports.echo)),
  );
  const certDir = await mkdtemp(path.join(os.tmpdir(), 'swarmgate-stream-cert-'));
  const vaultCert = backendCertificate(certDir);
  const vault = tls.createServer({ cert: vaultCert.cert, key: vaultCert.key }, (socket) =>
    socket.end('vault says hi\n'),
  );
  await new Promise<void>((resolve) => vault.listen(ports.vault, '127.0.0.20', () => resolve()));
  const web = http.createServer((req, res) => res.end(`web ${String(req.headers['x-real-ip'])}`));
  await new Promise<void>((resolve) => web.listen(ports.web, '127.0.0.30', () => resolve()));
  t.after(async () => {
    await Promise.all(backends.map((backend) => backend.close()));
    await new Promise((resolve) => vault.close(resolve));
    web.closeAllConnections();
    await new Promise((resolve) => web.close(resolve));
    await rm(certDir, { recursive: true, force: true });
  });

  const first = bundle(setup, ports, ['127.0.0.2', '127.0.0.3', '127.0.0.4']);
  await startBundleNginx(t, stateDir, setup, first);
  const workers = await workerPids(setup);

  await t.test('connections to the TCP port are spread over every task', async () => {
    const counts = await spread(ports.tcp, 60);
    assert.deepEqual([...counts.keys()].sort(), ['127.0.0.2', '127.0.0.3', '127.0.0.4']);
    // Uniform at random: each of 3 gets 20 on average; fewer than 5 has a chance of about 1 in 100,000.
    for (const [ip, count] of counts) assert.ok(count >= 5, `${ip} got ${count} of 60`);
  });

  await t.test(
    'a bundle with other tasks moves new connections, without a reload, open ones carry on',
    async () => {
      const open = await connectTcp(ports.tcp);
      const next = bundle(setup, ports, ['127.0.0.3', '127.0.0.4', '127.0.0.5']);
      assert.equal(next['nginx.conf'], first['nginx.conf'], 'only the task addresses differ');
      // As the edge agent applies a same-shape bundle: staged, then `current` swapped; nginx is not signalled.
      const cache = new BundleCache(stateDir);
      const fingerprint = fingerprintBundle(next);
      await cache.stage(fingerprint, next);
      await cache.activate(fingerprint, { version: 2, fingerprint });

      const counts = await spread(ports.tcp, 60);
      assert.deepEqual([...counts.keys()].sort(), ['127.0.0.3', '127.0.0.4', '127.0.0.5']);
      assert.deepEqual(await workerPids(setup), workers, 'the same workers: no reload');
      // The connection opened before the change still reaches its task.
      const echoed = await new Promise<string>((resolve, reject) => {
        open.socket.once('data', (chunk: string) => resolve(chunk));
        open.socket.once('error', reject);
        open.socket.write('still here\n');
      });
      assert.equal(echoed, 'still here\n');
      open.socket.destroy();
    },
  );

  await t.test("a passthrough name reaches its TLS backend, with the backend's own certificate", async () => {
    const { subject, text } = await new Promise<{ subject: string; text: string }>((resolve, reject) => {
      const socket = tls.connect(
        { host: '127.0.0.1', port: setup.tlsPort, servername: 'vault.test', rejectUnauthorized: false },
        () => {
          const subject = socket.getPeerCertificate().subject?.CN?.toString() ?? '';
          let text = '';
          socket.setEncoding('utf8');
          socket.on('data', (chunk: string) => (text += chunk));
          socket.on('end', () => resolve({ subject, text }));
        },
      );
      socket.on('error', reject);
    });
    assert.equal(subject, 'vault.test');
    assert.equal(text, 'vault says hi\n');
  });

  await t.test(
    'another name on the same port is HTTPS from nginx, and its service sees the client address',
    async () => {
      const answer = await new Promise<{ body: string; issuer: string }>((resolve, reject) => {
        const req = https.request(
          {
            host: '127.0.0.1',
            port: setup.tlsPort,
            servername: 'web.test',
            headers: { host: 'web.test' },
            path: '/',
            rejectUnauthorized: false,
            agent: false,
            // A client address that is not the hop's: the service must see this one.
            localAddress: '127.0.0.9',
          },
          (res) => {
            const issuer = (res.socket as tls.TLSSocket).getPeerCertificate().subject?.CN?.toString() ?? '';
            let body = '';
            res.setEncoding('utf8');
            res.on('data', (chunk: string) => (body += chunk));
            res.on('end', () => resolve({ body, issuer }));
          },
        );
        req.on('error', reject);
        req.end();
      });
      assert.equal(answer.body, 'web 127.0.0.9');
      assert.notEqual(answer.issuer, 'vault.test');
    },
  );
});

// The Lua balancer (lua/swarmgate/balancer.lua) in a real nginx on loopback: what it promises, each checked so that
// removing the behaviour from the Lua fails the test: round robin, a refused member skipped and tried again after
// its backoff, the retry that moves a request off a refused member, peers replaced without a reload, the same
// peers.txt grammar as src/render/peers-text.ts, and a peers socket nginx's workers cannot use.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmod, mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { BundleCache } from '../../src/edge/bundle-cache.ts';
import { createNginxProcess } from '../../src/edge/nginx-process.ts';
import type { NginxProcess } from '../../src/edge/nginx-process.ts';
import { createTemplateRenderer } from '../../src/render/nunjucks-env.ts';
import { parsePeers } from '../../src/render/peers-text.ts';
import { fingerprintBundle, PEERS_FILE } from '../../src/render/render-config.ts';
import type { BundleFiles } from '../../src/render/render-config.ts';
import {
  freePort,
  get,
  loopbackBundle,
  loopbackSetup,
  NGINX_BINARY,
  startBackend,
  workerPids,
} from '../support/loopback-nginx.ts';
import type { Backend, LoopbackSetup } from '../support/loopback-nginx.ts';
import { PEERS_CASES, peersCaseText } from '../support/peers-cases.ts';
import { waitUntil } from '../support/wait.ts';

const HOST = 'app.test';

interface Edge {
  readonly setup: LoopbackSetup;
  readonly nginx: NginxProcess;
  readonly backendPort: number;
  readonly files: BundleFiles;
  /** The upstream's name and the generation the running config has. */
  readonly upstream: string;
  readonly generation: string;
  /** peers.txt for the running config with these members. */
  peersFor(ips: readonly string[]): string;
  /** Sends n requests one after another; the body of each (the backend's address) or "status <n>". */
  requests(n: number): Promise<string[]>;
  /** Connection refusals nginx logged for this address so far. */
  refusals(ip: string): Promise<number>;
}

/** One worker, so the round robin a test sees is one worker's. */
async function startEdge(t: test.TestContext, ips: readonly string[], backendPort: number): Promise<Edge> {
  const stateDir = await mkdtemp(path.join(os.tmpdir(), 'swarmgate-balancer-'));
  const setup = await loopbackSetup(stateDir, { workerProcesses: '1' });
  const files = loopbackBundle(setup, createTemplateRenderer(), HOST, ips, backendPort);
  const cache = new BundleCache(stateDir);
  const fingerprint = fingerprintBundle(files);
  await cache.stage(fingerprint, files);
  await cache.activate(fingerprint, { version: 1, fingerprint });
  const nginx = createNginxProcess(NGINX_BINARY, setup.proxy.peersSocket);
  t.after(async () => {
    await nginx.stop(5000);
    await rm(stateDir, { recursive: true, force: true });
  });
  await nginx.start(cache.currentConfPath);
  const parsed = parsePeers(files[PEERS_FILE] ?? '');
  assert.ok(parsed.ok);
  const upstream = parsed.peers.upstreams[0]?.name ?? '';
  return {
    setup,
    nginx,
    backendPort,
    files,
    upstream,
    generation: parsed.peers.generation,
    peersFor: (members) =>
      `generation ${parsed.peers.generation}\nupstream ${upstream}${members.map((ip) => ` ${ip}:${backendPort}`).join('')}\n`,
    async requests(n) {
      const bodies: string[] = [];
      for (let i = 0; i < n; i++) {
        const answer = await get(setup.listenPort, HOST);
        bodies.push(answer.status === 200 ? answer.body : `status ${answer.status}`);
      }
      return bodies;
    },
    async refusals(ip) {
      const log = await readFile(setup.errorLog, 'utf8').catch(() => '');
      return log
        .split('\n')
        .filter((line) => line.includes('Connection refused') && line.includes(`${ip}:${backendPort}`))
        .length;
    },
  };
}

async function backends(t: test.TestContext, ips: readonly string[], port: number): Promise<Backend[]> {
  const started = await Promise.all(ips.map((ip) => startBackend(ip, port)));
  t.after(() => Promise.all(started.map((backend) => backend.close())));
  return started;
}

function count(bodies: readonly string[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const body of bodies) counts[body] = (counts[body] ?? 0) + 1;
  return counts;
}

function socketRequest(
  socketPath: string,
  method: 'GET' | 'POST',
  body = '',
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath, method, path: '/peers' }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (text += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
    });
    req.once('error', reject);
    req.end(body);
  });
}

test('round robin: 30 requests over 3 members give each exactly 10', async (t) => {
  const port = await freePort();
  const ips = ['127.0.0.2', '127.0.0.3', '127.0.0.4'];
  await backends(t, ips, port);
  const edge = await startEdge(t, ips, port);
  assert.deepEqual(count(await edge.requests(30)), { '127.0.0.2': 10, '127.0.0.3': 10, '127.0.0.4': 10 });
});

test('retries: with one member refusing connections, every request is answered by another', async (t) => {
  const port = await freePort();
  await backends(t, ['127.0.0.2', '127.0.0.3'], port);
  // 127.0.0.4 has nothing listening on the port: connecting to it is refused at once.
  const edge = await startEdge(t, ['127.0.0.2', '127.0.0.3', '127.0.0.4'], port);
  const counts = count(await edge.requests(30));
  assert.deepEqual(Object.keys(counts).sort(), ['127.0.0.2', '127.0.0.3'], JSON.stringify(counts));
  assert.ok((await edge.refusals('127.0.0.4')) >= 1, 'the refused member was tried');
});

test('a refused member is skipped for its backoff, then tried again and routed once it listens', async (t) => {
  const port = await freePort();
  await backends(t, ['127.0.0.2', '127.0.0.3'], port);
  const edge = await startEdge(t, ['127.0.0.2', '127.0.0.3', '127.0.0.4'], port);
  const started = performance.now();
  const bodies = await edge.requests(60);
  const elapsedS = (performance.now() - started) / 1000;
  assert.ok(!bodies.includes('127.0.0.4') && bodies.every((body) => !body.startsWith('status')));
  // Without the skip, round robin tries the refused member on every third request (20 times). With it, the member
  // is tried again only after 0.1 s, 0.2 s, 0.4 s, ...: at most 2 + log2(1 + elapsed / 0.1) times.
  const refusals = await edge.refusals('127.0.0.4');
  const bound = 2 + Math.ceil(Math.log2(1 + elapsedS / 0.1));
  assert.ok(
    refusals >= 1 && refusals <= bound,
    `${refusals} refusals in ${elapsedS.toFixed(2)} s (bound ${bound})`,
  );

  // It comes back: once it listens, it is routed again within its longest backoff (2 s) and a little.
  const late = await startBackend('127.0.0.4', port);
  t.after(() => late.close());
  await waitUntil(
    'the recovered member to serve a request',
    async () => (await edge.requests(3)).includes('127.0.0.4'),
    { timeoutMs: 4000 },
  );
  assert.ok(late.requests >= 1);
});

test('posted peers replace the members without a reload (the same workers answer)', async (t) => {
  const port = await freePort();
  await backends(t, ['127.0.0.2', '127.0.0.3', '127.0.0.4'], port);
  const edge = await startEdge(t, ['127.0.0.2'], port);
  assert.deepEqual(count(await edge.requests(4)), { '127.0.0.2': 4 });
  const workers = await workerPids(edge.setup);

  assert.equal(
    await edge.nginx.updatePeers(edge.peersFor(['127.0.0.3', '127.0.0.4']), AbortSignal.timeout(5000)),
    true,
  );
  assert.deepEqual(count(await edge.requests(4)), { '127.0.0.3': 2, '127.0.0.4': 2 });
  assert.deepEqual(await workerPids(edge.setup), workers, 'no reload: the same worker answered');
  assert.equal(
    await edge.nginx.runningPeers(AbortSignal.timeout(5000)),
    edge.peersFor(['127.0.0.3', '127.0.0.4']),
    'GET /peers shows what the worker routes to',
  );
});

test('the Lua accepts and refuses exactly the peers.txt that peers-text.ts does', async (t) => {
  const port = await freePort();
  const edge = await startEdge(t, ['127.0.0.2'], port);
  const disagreements: string[] = [];
  for (const peersCase of PEERS_CASES) {
    const answer = await socketRequest(
      edge.setup.proxy.peersSocket,
      'POST',
      peersCaseText(peersCase, edge.generation),
    );
    const luaAccepts = answer.status === 204;
    if (answer.status !== 204 && answer.status !== 400)
      disagreements.push(`${peersCase.name}: HTTP ${answer.status}`);
    else if (luaAccepts !== peersCase.ok)
      disagreements.push(`${peersCase.name}: Lua ${luaAccepts ? 'accepts' : 'refuses'}`);
    if (luaAccepts !== parsePeers(peersCaseText(peersCase, edge.generation)).ok) {
      disagreements.push(`${peersCase.name}: TypeScript and Lua disagree`);
    }
  }
  assert.deepEqual(disagreements, []);
});

test('the peers socket is mode 0600 before and after a reload: nginx workers (nobody) cannot post peers', async (t) => {
  const port = await freePort();
  const edge = await startEdge(t, ['127.0.0.2'], port);
  // The state dir is 0700 from mkdtemp; open it so that only the socket's own mode decides.
  await chmod(edge.setup.stateDir, 0o755);
  const socket = edge.setup.proxy.peersSocket;
  const asNobody = (): string => {
    const script = `require('node:http').request({ socketPath: ${JSON.stringify(socket)}, method: 'POST', path: '/peers' },
      (res) => console.log('HTTP ' + res.statusCode)).on('error', (e) => console.log(e.code)).end('x')`;
    const run = spawnSync(process.execPath, ['-e', script], {
      uid: 65534,
      gid: 65534,
      encoding: 'utf8',
      timeout: 10_000,
    });
    return run.stdout.trim();
  };
  assert.equal((await stat(socket)).mode & 0o777, 0o600);
  assert.equal(asNobody(), 'EACCES');
  assert.equal((await socketRequest(socket, 'GET')).status, 200, 'root (the agent) still can');

  const before = await workerPids(edge.setup);
  edge.nginx.reload();
  await waitUntil('the reload to replace the workers', async () => {
    const now = await workerPids(edge.setup);
    return now.length > 0 && now.every((pid) => !before.includes(pid));
  });
  assert.equal((await stat(socket)).mode & 0o777, 0o600);
  assert.equal(asNobody(), 'EACCES');
});

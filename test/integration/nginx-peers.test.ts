// The edge's real nginx (with its Lua balancer) on loopback: task addresses posted to its socket take effect
// without a reload, and a reload always serves the addresses of the files it loads.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { defaultProxySettings } from '../../src/config.ts';
import { BundleCache } from '../../src/edge/bundle-cache.ts';
import { createNginxProcess } from '../../src/edge/nginx-process.ts';
import { buildRoutingModel } from '../../src/model/routing-model.ts';
import { createTemplateRenderer } from '../../src/render/nunjucks-env.ts';
import { fingerprintBundle, PEERS_FILE, renderConfig } from '../../src/render/render-config.ts';
import type { BundleFiles } from '../../src/render/render-config.ts';
import { oneServiceSnapshot } from '../support/one-service.ts';
import { waitUntil } from '../support/wait.ts';

/** A backend on one loopback address that answers with that address. */
async function startBackend(ip: string, port: number): Promise<http.Server> {
  const server = http.createServer((_req, res) => res.end(ip));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, ip, () => resolve());
  });
  return server;
}

function get(port: number, host: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path: '/', headers: { host }, agent: false }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (body += chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      })
      .on('error', reject);
  });
}

async function freePort(): Promise<number> {
  const probe = http.createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', () => resolve()));
  const { port } = probe.address() as AddressInfo;
  await new Promise((resolve) => probe.close(resolve));
  return port;
}

test('posted peers route without a reload; a reload to a known shape serves the files it loads', async (t) => {
  const stateDir = await mkdtemp(path.join(os.tmpdir(), 'swarmgate-nginx-'));
  const backendPort = await freePort();
  const backends = await Promise.all(['127.0.0.2', '127.0.0.3'].map((ip) => startBackend(ip, backendPort)));
  const listenPort = await freePort();
  const tlsPort = await freePort();
  // No access log: the test runner's stdout is a pipe, which nginx cannot open as /dev/stdout.
  const proxy = {
    ...defaultProxySettings(),
    accessLog: false,
    peersSocket: path.join(stateDir, 'peers.sock'),
  };
  const templates = createTemplateRenderer();
  const cache = new BundleCache(stateDir);
  const nginx = createNginxProcess(process.env.SWARMGATE_NGINX ?? 'nginx', proxy.peersSocket);
  t.after(async () => {
    await nginx.stop(5000);
    for (const backend of backends) backend.close();
    await rm(stateDir, { recursive: true, force: true });
  });

  /** The edge's bundle on loopback ports: only the listen lines and the pid file differ from production. */
  const bundle = (host: string, ip: string): BundleFiles => {
    const model = buildRoutingModel(oneServiceSnapshot(host, [ip], backendPort), { networks: ['swarmgate'] });
    const files = renderConfig(model, { proxy, generator: 'test' }, templates);
    return {
      ...files,
      'nginx.conf': (files['nginx.conf'] ?? '')
        .replace(/listen 80( default_server)?;/g, `listen 127.0.0.1:${listenPort}$1;`)
        .replace(/listen 443 ssl http2( default_server)?;/g, `listen 127.0.0.1:${tlsPort} ssl http2$1;`)
        .replace('pid /run/swarmgate-nginx.pid;', `pid ${path.join(stateDir, 'nginx.pid')};`),
    };
  };
  const activate = async (files: BundleFiles): Promise<void> => {
    const fingerprint = fingerprintBundle(files);
    await cache.stage(fingerprint, files);
    await cache.activate(fingerprint, { version: 1, fingerprint });
  };
  const answers = (host: string, body: string) => async () => (await get(listenPort, host)).body === body;

  await activate(bundle('a.test', '127.0.0.2'));
  await nginx.start(cache.currentConfPath);
  await waitUntil('nginx to route a.test to the first task', answers('a.test', '127.0.0.2'));

  // Same shape, another task: posted, no reload.
  const moved = bundle('a.test', '127.0.0.3');
  await activate(moved);
  assert.equal(await nginx.updatePeers(moved[PEERS_FILE] ?? '', AbortSignal.timeout(5000)), true);
  await waitUntil('posted peers to route', answers('a.test', '127.0.0.3'));

  // A peers.txt of another shape is refused, so the agent reloads instead.
  const otherShape = bundle('b.test', '127.0.0.2');
  assert.equal(await nginx.updatePeers(otherShape[PEERS_FILE] ?? '', AbortSignal.timeout(2000)), false);

  // Reload to another shape, then back to the first shape with the first task: the peers posted for that shape
  // before are stale and must not win over the files loaded now.
  await activate(otherShape);
  nginx.reload();
  await waitUntil('the reload to route b.test', answers('b.test', '127.0.0.2'));
  await activate(bundle('a.test', '127.0.0.2'));
  nginx.reload();
  await waitUntil(
    'the reload to route a.test again',
    async () => (await get(listenPort, 'b.test')).status === 503,
  );
  for (let i = 0; i < 10; i++) assert.equal((await get(listenPort, 'a.test')).body, '127.0.0.2');
});

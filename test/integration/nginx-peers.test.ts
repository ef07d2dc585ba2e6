// The edge's real nginx (with its Lua balancer) on loopback: task addresses posted to its socket take effect
// without a reload, and a reload always serves the addresses of the files it loads.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { BundleCache } from '../../src/edge/bundle-cache.ts';
import { createNginxProcess } from '../../src/edge/nginx-process.ts';
import { createTemplateRenderer } from '../../src/render/nunjucks-env.ts';
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
import { waitUntil } from '../support/wait.ts';

test('posted peers route without a reload; a reload to a known shape serves the files it loads', async (t) => {
  const stateDir = await mkdtemp(path.join(os.tmpdir(), 'swarmgate-nginx-'));
  const backendPort = await freePort();
  const backends = await Promise.all(['127.0.0.2', '127.0.0.3'].map((ip) => startBackend(ip, backendPort)));
  const setup = await loopbackSetup(stateDir);
  const templates = createTemplateRenderer();
  const cache = new BundleCache(stateDir);
  const nginx = createNginxProcess(NGINX_BINARY, setup.proxy.peersSocket);
  t.after(async () => {
    await nginx.stop(5000);
    await Promise.all(backends.map((backend) => backend.close()));
    await rm(stateDir, { recursive: true, force: true });
  });

  const bundle = (host: string, ip: string): BundleFiles =>
    loopbackBundle(setup, templates, host, [ip], backendPort);
  const activate = async (files: BundleFiles): Promise<void> => {
    const fingerprint = fingerprintBundle(files);
    await cache.stage(fingerprint, files);
    await cache.activate(fingerprint, { version: 1, fingerprint });
  };
  /**
   * SIGHUP, then wait until every worker of the old config has exited: until then an old worker can still accept
   * a connection and answer from the config it was started with.
   */
  const reload = async (): Promise<void> => {
    const before = await workerPids(setup);
    nginx.reload();
    await waitUntil('the old workers to exit', async () => {
      const now = await workerPids(setup);
      return now.length > 0 && now.every((pid) => !before.includes(pid));
    });
  };

  await activate(bundle('a.test', '127.0.0.2'));
  await nginx.start(cache.currentConfPath);
  assert.equal((await get(setup.listenPort, 'a.test')).body, '127.0.0.2');

  // Same shape, another task: posted, no reload.
  const moved = bundle('a.test', '127.0.0.3');
  await activate(moved);
  assert.equal(await nginx.updatePeers(moved[PEERS_FILE] ?? '', AbortSignal.timeout(5000)), true);
  assert.equal((await get(setup.listenPort, 'a.test')).body, '127.0.0.3');

  // A peers.txt of another shape is refused, so the agent reloads instead.
  const otherShape = bundle('b.test', '127.0.0.2');
  assert.equal(await nginx.updatePeers(otherShape[PEERS_FILE] ?? '', AbortSignal.timeout(2000)), false);

  // Reload to another shape, then back to the first shape with the first task: the peers posted for that shape
  // before are stale and must not win over the files loaded now.
  await activate(otherShape);
  await reload();
  assert.equal((await get(setup.listenPort, 'b.test')).body, '127.0.0.2');
  await activate(bundle('a.test', '127.0.0.2'));
  await reload();
  assert.equal((await get(setup.listenPort, 'b.test')).status, 503);
  for (let i = 0; i < 10; i++) assert.equal((await get(setup.listenPort, 'a.test')).body, '127.0.0.2');
});

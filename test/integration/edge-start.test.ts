// F4: the edge agent with a real nginx on loopback, started on a volume whose saved bundle is damaged or that nginx
// will not run: it serves the empty config (503), reports nothing applied, keeps polling, and takes the next bundle.
// And a reload nginx refuses (nginx -t passed) is reported as rejected, never as applied.
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { readEdgeConfig } from '../../src/config.ts';
import { BundleCache } from '../../src/edge/bundle-cache.ts';
import { startEdgeAgent } from '../../src/edge/edge-agent.ts';
import type { ControllerChannel, RunningEdge } from '../../src/edge/edge-agent.ts';
import { createNginxProcess } from '../../src/edge/nginx-process.ts';
import { createCapturingLogger } from '../../src/logger.ts';
import { EMPTY_MODEL } from '../../src/model/routing-model.ts';
import { runNginxTest } from '../../src/nginx/nginx-validator.ts';
import type { EdgeReport, PublishedBundle } from '../../src/publish/bundle-store.ts';
import { systemClock } from '../../src/reconcile/clock.ts';
import { createTemplateRenderer } from '../../src/render/nunjucks-env.ts';
import { fingerprintBundle, renderConfig } from '../../src/render/render-config.ts';
import type { BundleFiles } from '../../src/render/render-config.ts';
import {
  freePort,
  get,
  loopbackBundle,
  loopbackConf,
  loopbackSetup,
  NGINX_BINARY,
  REPO_LUA_DIR,
  startBackend,
  withConf,
} from '../support/loopback-nginx.ts';
import type { LoopbackSetup } from '../support/loopback-nginx.ts';
import { waitUntil } from '../support/wait.ts';

const HOST = 'app.test';
const templates = createTemplateRenderer();

/** A controller that has nothing to say until the test hands it a bundle; it keeps every report. */
class FakeChannel implements ControllerChannel {
  reports: EdgeReport[] = [];
  private bundle: PublishedBundle | null = null;
  private wake: (() => void) | null = null;
  offer(files: BundleFiles, version: number): void {
    this.bundle = {
      version,
      fingerprint: fingerprintBundle(files),
      files,
      publishedAt: '2026-11-25T00:00:00Z',
    };
    this.wake?.();
  }
  async poll(report: EdgeReport, signal: AbortSignal): Promise<PublishedBundle | null> {
    this.reports.push(report);
    const wanted = (): PublishedBundle | null =>
      this.bundle &&
      this.bundle.fingerprint !== report.applied?.fingerprint &&
      this.bundle.fingerprint !== report.rejected?.fingerprint
        ? this.bundle
        : null;
    if (wanted()) return wanted();
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, 200);
      this.wake = resolve;
      signal.addEventListener('abort', () => {
        clearTimeout(timer);
        resolve();
      });
    });
    return wanted();
  }
}

interface Volume {
  readonly setup: LoopbackSetup;
  readonly backendPort: number;
  bundle(ips: readonly string[], luaDir?: string): BundleFiles;
  /** Stages and activates files as version 1, as an earlier run of the edge would have. */
  save(files: BundleFiles): Promise<void>;
  start(channel: FakeChannel, reloadTimeoutMs?: number): Promise<RunningEdge>;
}

async function volume(t: test.TestContext): Promise<Volume> {
  const stateDir = await mkdtemp(path.join(os.tmpdir(), 'swarmgate-edge-start-'));
  const setup = await loopbackSetup(stateDir);
  const backendPort = await freePort();
  const backend = await startBackend('127.0.0.2', backendPort);
  t.after(async () => {
    await backend.close();
    await rm(stateDir, { recursive: true, force: true });
  });
  const bundle = (ips: readonly string[], luaDir?: string): BundleFiles => {
    const files = loopbackBundle(setup, templates, HOST, ips, backendPort);
    return luaDir === undefined
      ? files
      : withConf(files, (files['nginx.conf'] ?? '').replaceAll(REPO_LUA_DIR, luaDir));
  };
  return {
    setup,
    backendPort,
    bundle,
    async save(files) {
      const cache = new BundleCache(stateDir);
      const fingerprint = fingerprintBundle(files);
      await cache.stage(fingerprint, files);
      await cache.activate(fingerprint, { version: 1, fingerprint });
    },
    async start(channel, reloadTimeoutMs = 3000) {
      const { logger } = createCapturingLogger('debug');
      const edge = await startEdgeAgent({
        config: readEdgeConfig({ SWARMGATE_STATE_DIR: stateDir, SWARMGATE_EDGE_HEALTH_PORT: '0' }, 'edge-1'),
        nodeId: null,
        channel,
        nginx: createNginxProcess(NGINX_BINARY, setup.proxy.peersSocket, { startTimeoutMs: 10_000 }),
        testConfig: (confPath, signal) => runNginxTest(NGINX_BINARY, confPath, signal),
        templates,
        logger,
        clock: systemClock,
        version: 'test',
        reloadTimeoutMs,
        emptyBundle: () => {
          const files = renderConfig(
            EMPTY_MODEL,
            { proxy: setup.proxy, generator: 'test', luaDir: REPO_LUA_DIR },
            templates,
          );
          return withConf(files, loopbackConf(setup, files['nginx.conf'] ?? ''));
        },
      });
      t.after(() => edge.stop());
      return edge;
    },
  };
}

async function health(edge: RunningEdge): Promise<{ status: string; fallback: string | null }> {
  const response = await fetch(`http://127.0.0.1:${edge.healthPort}/healthz`);
  return (await response.json()) as { status: string; fallback: string | null };
}

const damages: { name: string; damage: (dir: string) => Promise<void> }[] = [
  { name: 'peers.txt truncated to 0 bytes', damage: (dir) => writeFile(path.join(dir, 'peers.txt'), '') },
  {
    name: 'nginx.conf edited',
    damage: (dir) => writeFile(path.join(dir, 'nginx.conf'), 'events {}\nhttp {}\n'),
  },
  { name: 'peers.txt missing', damage: (dir) => rm(path.join(dir, 'peers.txt')) },
  {
    name: 'applied.json garbage',
    damage: (dir) => writeFile(path.join(dir, '..', '..', 'applied.json'), '{"version":'),
  },
];

for (const { name, damage } of damages) {
  test(`a saved bundle with ${name}: the edge serves 503, reports nothing applied, and takes the next bundle`, async (t) => {
    const vol = await volume(t);
    const files = vol.bundle(['127.0.0.2']);
    await vol.save(files);
    await damage(path.join(vol.setup.stateDir, 'bundles', fingerprintBundle(files)));

    const channel = new FakeChannel();
    const edge = await vol.start(channel);
    assert.equal(edge.applied(), null);
    assert.equal((await get(vol.setup.listenPort, HOST)).status, 503);
    const degraded = await health(edge);
    assert.equal(degraded.status, 'degraded');
    assert.match(degraded.fallback ?? '', /damaged/);
    await waitUntil('two polls', () => channel.reports.length >= 2);
    assert.ok(
      channel.reports.every((report) => report.applied === null),
      'the damaged bundle is never reported',
    );

    channel.offer(vol.bundle(['127.0.0.2']), 2);
    await waitUntil('the new bundle to be applied', () => edge.applied()?.version === 2);
    assert.equal((await get(vol.setup.listenPort, HOST)).body, '127.0.0.2');
    assert.equal((await health(edge)).status, 'ok');
  });
}

test('a saved bundle nginx will not start on (its Lua is missing): the edge falls back instead of exiting', async (t) => {
  const vol = await volume(t);
  const emptyLua = path.join(vol.setup.stateDir, 'no-lua');
  await mkdir(emptyLua);
  // Intact (the fingerprint matches) and nginx -t passes, but init_by_lua fails at start.
  await vol.save(vol.bundle(['127.0.0.2'], emptyLua));
  const channel = new FakeChannel();
  const edge = await vol.start(channel);
  assert.equal(edge.applied(), null);
  assert.equal((await get(vol.setup.listenPort, HOST)).status, 503);
  assert.match((await health(edge)).fallback ?? '', /nginx did not start on the saved bundle/);
  await waitUntil('a poll', () => channel.reports.length >= 1);
  assert.equal(channel.reports[0]?.applied, null);
});

test('a bundle nginx refuses at reload (nginx -t passed) is reported rejected, not applied; current stays on what runs', async (t) => {
  const vol = await volume(t);
  const good = vol.bundle(['127.0.0.2']);
  await vol.save(good);
  const channel = new FakeChannel();
  const edge = await vol.start(channel, 2000);
  assert.equal(edge.applied()?.version, 1);

  const emptyLua = path.join(vol.setup.stateDir, 'no-lua');
  await mkdir(emptyLua);
  const bad = vol.bundle(['127.0.0.2'], emptyLua);
  channel.offer(bad, 2);
  await waitUntil(
    'the rejection to be reported',
    () => channel.reports.some((report) => report.rejected?.fingerprint === fingerprintBundle(bad)),
    { timeoutMs: 15_000 },
  );
  const report = channel.reports.at(-1);
  assert.match(report?.rejected?.error ?? '', /^ERR_NGINX_RELOAD/);
  assert.equal(report?.applied?.version, 1);
  assert.equal(edge.applied()?.version, 1);
  assert.equal((await get(vol.setup.listenPort, HOST)).body, '127.0.0.2');
  const saved = await new BundleCache(vol.setup.stateDir).loadSaved();
  assert.equal(saved.kind === 'intact' && saved.applied.fingerprint, fingerprintBundle(good));
});

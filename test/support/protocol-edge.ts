// A real edge nginx on loopback for one service with the labels a protocol test needs (VIRTUAL_PROTO, swarmgate.*),
// optionally with a certificate so that 443 speaks TLS and HTTP/2 (what gRPC clients need).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { test } from 'node:test';
import type { ProxySettings } from '../../src/config.ts';
import { BundleCache } from '../../src/edge/bundle-cache.ts';
import { createNginxProcess } from '../../src/edge/nginx-process.ts';
import type { NginxProcess } from '../../src/edge/nginx-process.ts';
import { buildRoutingModel, DEFAULT_TLS } from '../../src/model/routing-model.ts';
import { createTemplateRenderer } from '../../src/render/nunjucks-env.ts';
import { parsePeers } from '../../src/render/peers-text.ts';
import { fingerprintBundle, PEERS_FILE, renderConfig } from '../../src/render/render-config.ts';
import type { BundleFiles } from '../../src/render/render-config.ts';
import { loopbackConf, loopbackSetup, NGINX_BINARY, REPO_LUA_DIR, withConf } from './loopback-nginx.ts';
import type { LoopbackSetup } from './loopback-nginx.ts';
import { oneServiceSnapshot } from './one-service.ts';

const fixtures = new URL('../fixtures/', import.meta.url);
/** The golden tests' self-signed certificate: golden.test, example.com and *.example.com. */
export const TEST_CERTIFICATE = {
  certificatePem: readFileSync(new URL('test-only.crt', fixtures), 'utf8'),
  privateKeyPem: readFileSync(new URL('test-only.key', fixtures), 'utf8'),
};

export interface ProtocolEdge {
  readonly setup: LoopbackSetup;
  readonly nginx: NginxProcess;
  readonly files: BundleFiles;
  /** peers.txt for the running config with these members (all on the test's backend port). */
  peersFor(ips: readonly string[]): string;
}

export interface ProtocolEdgeOptions {
  /** Labels beside VIRTUAL_HOST and VIRTUAL_PORT. */
  readonly labels?: Readonly<Record<string, string>>;
  readonly proxy?: Partial<ProxySettings>;
  /** Serve the host on 443 with the test certificate (the host must be under example.com). */
  readonly tls?: boolean;
}

/** One worker, so what a test sees after a peers post is what every request sees. */
export async function startProtocolEdge(
  t: test.TestContext,
  host: string,
  ips: readonly string[],
  backendPort: number,
  options: ProtocolEdgeOptions = {},
): Promise<ProtocolEdge> {
  const stateDir = await mkdtemp(path.join(os.tmpdir(), 'swarmgate-protocols-'));
  const setup = await loopbackSetup(stateDir, { workerProcesses: '1', ...options.proxy });
  const snapshot = oneServiceSnapshot(host, ips, backendPort);
  const [service] = snapshot.services;
  assert.ok(service);
  const labeled = {
    ...snapshot,
    services: [{ ...service, labels: { ...service.labels, ...options.labels } }],
  };
  const model = buildRoutingModel(labeled, {
    networks: ['swarmgate'],
    certificates: options.tls
      ? [{ name: 'test-only', domains: ['example.com', '*.example.com'], source: 'user' }]
      : [],
    // Plain HTTP stays served (no redirect), so a test can use either port.
    tlsDefaults: { ...DEFAULT_TLS, httpsMethod: 'noredirect' },
  });
  assert.deepEqual(model.problems, [], 'the labels parse');
  const rendered = renderConfig(
    model,
    { proxy: setup.proxy, generator: 'test', luaDir: REPO_LUA_DIR },
    createTemplateRenderer(),
    (name) => (name === 'test-only' ? TEST_CERTIFICATE : undefined),
  );
  const files = withConf(rendered, loopbackConf(setup, rendered['nginx.conf'] ?? ''));
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
    files,
    peersFor: (members) =>
      `generation ${parsed.peers.generation}\nupstream ${upstream}${members.map((ip) => ` ${ip}:${backendPort}`).join('')}\n`,
  };
}

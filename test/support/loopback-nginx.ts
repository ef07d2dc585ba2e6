import { spawnSync } from 'node:child_process';
// A real nginx (the edge's config, Lua balancer and all) on loopback ports, for integration tests.
import { chmod, readFile, rm } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import type { TestContext } from 'node:test';
import {
  defaultProxySettings,
  IMAGE_PLACEHOLDER_CERT_FILE,
  IMAGE_PLACEHOLDER_KEY_FILE,
} from '../../src/config.ts';
import type { ProxySettings } from '../../src/config.ts';
import { BundleCache } from '../../src/edge/bundle-cache.ts';
import { createNginxProcess } from '../../src/edge/nginx-process.ts';
import type { NginxProcess } from '../../src/edge/nginx-process.ts';
import { buildRoutingModel } from '../../src/model/routing-model.ts';
import type { TemplateRenderer } from '../../src/render/nunjucks-env.ts';
import {
  fingerprintBundle,
  PEERS_FILE,
  renderConfig,
  shapeFingerprint,
  STREAM_PEERS_FILE,
} from '../../src/render/render-config.ts';
import type { BundleFiles } from '../../src/render/render-config.ts';
import { oneServiceSnapshot } from './one-service.ts';

export const NGINX_BINARY = process.env.SWARMGATE_NGINX ?? 'nginx';
/** The repository's lua/: what the image copies to /app/lua. */
// HTTP/3 needs nginx built with http_v3 (the edge image's is; Debian 12's is not). Where the nginx at hand lacks it,
// a config with QUIC is checked without its QUIC lines (everything else still goes through nginx -t), and
// `npm run test:all` checks every golden case, QUIC lines included, with the image's nginx:
//   flock /tmp/swarmgate-daemon.lock timeout 600 env SWARMGATE_NGINX=test/support/image-nginx.sh \
//     node --test test/golden/golden.test.ts
// nginx -V prints its configure arguments on stderr.
const versionOutput = spawnSync(NGINX_BINARY, ['-V'], { encoding: 'utf8', timeout: 60_000 });
export const NGINX_HAS_HTTP3 = `${versionOutput.stdout}${versionOutput.stderr}`.includes(
  '--with-http_v3_module',
);

/** The config as the nginx at hand can check it: without its QUIC lines where that nginx lacks http_v3. */
export function forNginxAtHand(conf: string): { readonly conf: string; readonly quicLinesRemoved: boolean } {
  const quic = /^\s*listen \S+ quic\b/m.test(conf);
  if (!quic || NGINX_HAS_HTTP3) return { conf, quicLinesRemoved: false };
  return {
    conf: conf.replace(/^\s*(listen \S+ quic\b[^;]*|http3 [^;]*|quic_\w+ [^;]*);\n/gm, ''),
    quicLinesRemoved: true,
  };
}

export const REPO_LUA_DIR = path.resolve(import.meta.dirname, '../../lua');
/** The stream balancer's njs (njs/swarmgate/stream.js), as the image has it in /app/njs. */
export const REPO_NJS_DIR = path.resolve(import.meta.dirname, '../../njs');
/**
 * A certificate file that exists on the test machine for the ACME location's proxy_ssl_trusted_certificate (nginx
 * loads it at start and at -t). Tests that forward a challenge pass their own channel certificate instead.
 */
export const TEST_CHANNEL_CERT_FILE = path.resolve(import.meta.dirname, '../fixtures/test-only.crt');
/** The key of the test certificate: the placeholder certificate of the default server of 443 in tests. */
export const TEST_PLACEHOLDER_KEY_FILE = path.resolve(import.meta.dirname, '../fixtures/test-only.key');

/** A backend on one loopback address that answers with that address; counts the requests it served. */
export interface Backend {
  readonly ip: string;
  readonly server: http.Server;
  requests: number;
  close(): Promise<void>;
}

export async function startBackend(ip: string, port: number): Promise<Backend> {
  const backend: Backend = {
    ip,
    requests: 0,
    server: http.createServer((_req, res) => {
      backend.requests++;
      res.end(ip);
    }),
    close: () =>
      new Promise((resolve) => {
        backend.server.close(() => resolve());
        backend.server.closeAllConnections();
      }),
  };
  await new Promise<void>((resolve, reject) => {
    backend.server.once('error', reject);
    backend.server.listen(port, ip, () => resolve());
  });
  return backend;
}

export function get(port: number, host: string): Promise<{ status: number; body: string }> {
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

/** Ports freePort has handed out in this process. */
const handedOut = new Set<number>();

/** The loopback addresses the integration tests' edges and backends listen on, each with a port from freePort. */
const TEST_ADDRESSES = [
  ...Array.from({ length: 9 }, (_, index) => `127.0.0.${index + 1}`),
  '127.0.0.20',
  '127.0.0.30',
];

/** Whether `port` can be bound on `address` now (closed again at once). */
function bindable(port: number, address: string): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = net.createServer();
    probe.once('error', () => resolve(false));
    probe.listen(port, address, () => probe.close(() => resolve(true)));
  });
}

/**
 * A loopback port nothing listens on now, on any of the tests' addresses, and one this process was not given before.
 * The kernel may hand the same port to two binds to port 0 in a row once the first is closed, so a set-up asking for
 * two ports (HTTP and HTTPS) once got one port twice, and nginx refused its config ("a duplicate default server").
 * A bind to port 0 on 127.0.0.1 also ignores ports another test file holds on 127.0.0.2, where backends listen.
 */
export async function freePort(): Promise<number> {
  for (;;) {
    const probe = net.createServer();
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', () => resolve()));
    const { port } = probe.address() as AddressInfo;
    await new Promise((resolve) => probe.close(resolve));
    if (handedOut.has(port)) continue;
    handedOut.add(port);
    const everywhere = await Promise.all(TEST_ADDRESSES.map((address) => bindable(port, address)));
    if (everywhere.every(Boolean)) return port;
  }
}

export interface LoopbackSetup {
  readonly stateDir: string;
  readonly listenPort: number;
  readonly tlsPort: number;
  readonly proxy: ProxySettings;
  readonly pidFile: string;
  readonly errorLog: string;
}

export async function loopbackSetup(
  stateDir: string,
  overrides: Partial<ProxySettings> = {},
): Promise<LoopbackSetup> {
  // nginx's workers run as nobody and connect to the unix listeners here (the ACME relay, the balancer's wait).
  await chmod(stateDir, 0o755);
  return {
    stateDir,
    listenPort: await freePort(),
    tlsPort: await freePort(),
    // No access log: the test runner's stdout is a pipe, which nginx cannot open as /dev/stdout.
    proxy: {
      ...defaultProxySettings(),
      accessLog: false,
      peersSocket: path.join(stateDir, 'peers.sock'),
      channelCertFile: TEST_CHANNEL_CERT_FILE,
      placeholderCertFile: TEST_CHANNEL_CERT_FILE,
      placeholderKeyFile: TEST_PLACEHOLDER_KEY_FILE,
      ...overrides,
    },
    pidFile: path.join(stateDir, 'nginx.pid'),
    errorLog: path.join(stateDir, 'error.log'),
  };
}

/** The edge's bundle for one service on loopback ports: only listen lines, pid and error log differ from production. */
export function loopbackBundle(
  setup: LoopbackSetup,
  templates: TemplateRenderer,
  host: string,
  ips: readonly string[],
  backendPort: number,
): BundleFiles {
  const model = buildRoutingModel(oneServiceSnapshot(host, ips, backendPort), { networks: ['swarmgate'] });
  const files = renderConfig(
    model,
    { proxy: setup.proxy, generator: 'test', luaDir: REPO_LUA_DIR },
    templates,
  );
  return withConf(files, loopbackConf(setup, files['nginx.conf'] ?? ''));
}

/** The bundle with another nginx.conf, and peers.txt naming the new shape as its generation (as renderConfig does). */
export function withConf(files: BundleFiles, conf: string): BundleFiles {
  const changed = { ...files, 'nginx.conf': conf };
  const generation = (text: string): string =>
    text.replace(/^generation [0-9a-f]{64}\n/, `generation ${shapeFingerprint(changed)}\n`);
  const streamPeers = files[STREAM_PEERS_FILE];
  return {
    ...changed,
    [PEERS_FILE]: generation(files[PEERS_FILE] ?? ''),
    ...(streamPeers === undefined ? {} : { [STREAM_PEERS_FILE]: generation(streamPeers) }),
  };
}

export function loopbackConf(setup: LoopbackSetup, conf: string): string {
  return (
    conf
      .replace(/listen 80( default_server)?;/g, `listen 127.0.0.1:${setup.listenPort}$1;`)
      .replace(/listen 443 ssl http2( default_server)?;/g, `listen 127.0.0.1:${setup.tlsPort} ssl http2$1;`)
      .replace(/listen \[::\]:80( default_server)?;/g, `listen [::1]:${setup.listenPort}$1;`)
      .replace(
        /listen \[::\]:443 ssl http2( default_server)?;/g,
        `listen [::1]:${setup.tlsPort} ssl http2$1;`,
      )
      .replace('pid /run/swarmgate-nginx.pid;', `pid ${setup.pidFile};`)
      .replace('error_log stderr warn;', `error_log ${setup.errorLog} warn;`)
      // A config the controller rendered for production names the image's placeholder certificate.
      .replaceAll(`"${IMAGE_PLACEHOLDER_CERT_FILE}"`, `"${setup.proxy.placeholderCertFile}"`)
      .replaceAll(`"${IMAGE_PLACEHOLDER_KEY_FILE}"`, `"${setup.proxy.placeholderKeyFile}"`)
  );
}

/** The pids of nginx's workers now: the children of the master named in the pid file. */
export async function workerPids(setup: LoopbackSetup): Promise<number[]> {
  const master = (await readFile(setup.pidFile, 'utf8')).trim();
  const children = await readFile(`/proc/${master}/task/${master}/children`, 'utf8');
  return children
    .trim()
    .split(/\s+/)
    .filter(Boolean)
    .map(Number)
    .sort((a, b) => a - b);
}

/**
 * The bundle applied as the edge agent applies it (staged, `current` pointing at it) and a real nginx started on it,
 * stopped and its state directory removed when the test ends. A start that fails says why, from nginx's error log
 * (a port another process took between freePort and the start, a config nginx refused).
 */
export async function startBundleNginx(
  t: TestContext,
  stateDir: string,
  setup: LoopbackSetup,
  files: BundleFiles,
  launcher: readonly string[] = [],
): Promise<{ nginx: NginxProcess; fingerprint: string }> {
  const cache = new BundleCache(stateDir);
  const fingerprint = fingerprintBundle(files);
  await cache.stage(fingerprint, files);
  await cache.activate(fingerprint, { version: 1, fingerprint });
  const nginx = createNginxProcess(NGINX_BINARY, setup.proxy.peersSocket, { launcher });
  t.after(async () => {
    await nginx.stop(5000);
    await rm(stateDir, { recursive: true, force: true });
  });
  try {
    await nginx.start(cache.currentConfPath);
  } catch (error) {
    const log = await readFile(setup.errorLog, 'utf8').catch(() => '(no error log)');
    throw new Error(`${(error as Error).message}\n${log}`, { cause: error });
  }
  return { nginx, fingerprint };
}

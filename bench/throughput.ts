// Throughput: the same backend served (a) directly, (b) through the swarmgate edge, (c) through Caddy and (d)
// through HAProxy, each configured as an equivalent keepalive reverse proxy. wrk runs in a container on the same
// overlay network, the four targets alternate in each round, and results are reported as ratios to direct, with
// the CPU time each proxy spent per request (read from its container's cgroup).
//
// What traffic counting costs (lua/swarmgate/metrics.lua, SWARMGATE_TRAFFIC_METRICS): two more edges, rendered here
// by the controller's own renderer from one model and differing only in that setting, run the image's nginx with
// that bundle (no agent: nothing else in their containers). They are measured in the same rounds as the others, in
// alternating order, and the cost is taken round by round from the pair. The lab's edge (its agent, every lab
// service in its bundle, counting on) stays in the table as the production path.
//
// Two set-ups, because on a small machine they answer different questions:
// - "app-bound": the backend gets a fixed CPU budget (BENCH_BACKEND_CPUS, default 0.5 of a core), as an app has
//   with `resources.limits.cpus` and as it is on a real node where the proxy does not take the app's cores. The
//   ratio then says how much throughput the proxy hop itself costs the app. The 0.85 target is for this one.
// - "shared CPU": no limit; the load generator, the proxy and the backend share this machine's cores, so every
//   proxy's CPU comes out of the backend's and the ratio mostly measures how the cores are split.
//
// `--tls`: HTTPS on the client side, HTTP/1.1 and HTTP/2 (h2load), through a bench edge, HAProxy and Caddy, each
// terminating TLS with the same ECDSA P-256 certificate made here, keep-alive to the same backend. The client offers
// one TLS 1.3 suite and one TLS 1.2 suite that all three allow, so the cipher is the same whatever each prefers;
// session resumption is each one's default (h2load keeps its connections, so handshakes are a few per run). Direct
// is the backend over plain HTTP/1.1 with the same load generator.
// `--variants`: one-off edits of the bench edge's rendered config (not product settings), each a service of its own
// in the same rounds as the edge and HAProxy, to measure which part of the edge's cost per request closes how much
// of the gap to HAProxy. With `--tls` they run over HTTPS.
// `--counting`: only direct and the counting pair, and the pair is loaded at the same time (two wrk, half the
// connections each). Measured one after the other, a round's two edges see different moments of this machine's
// shared CPU: in a 16-round run the rounds' differences had a standard deviation of 2.1–2.4 µs of CPU per request
// and 9–10 % of throughput, several times what counting costs. Loaded together, both see the same moments: 1.0–1.7
// µs and 3.5–5.4 % in the next two runs. Each edge has its own wrk and the same number of connections.
// `--rounds=N`, `--seconds=N`, `--only=app-bound|shared` and `--protocols=h1,h2` shorten a run.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { defaultProxySettings } from '../src/config.ts';
import { buildRoutingModel, DEFAULT_TLS } from '../src/model/routing-model.ts';
import { createTemplateRenderer } from '../src/render/nunjucks-env.ts';
import { renderConfig } from '../src/render/render-config.ts';
import type { BundleFiles, CertificateMaterial } from '../src/render/render-config.ts';
import {
  createService,
  deployStack,
  docker,
  EDGE_NETWORK,
  IMAGE as SWARMGATE_IMAGE,
  removeService,
  STACK,
  waitFor,
} from '../test/e2e/support/lab.ts';
import { makeChannelKeyPair } from '../test/support/channel-tls.ts';
import { oneServiceSnapshot } from '../test/support/one-service.ts';
import { printTable, SMOKE, sleep, summary, writeResult } from './support.ts';

// Many short rounds rather than a few long ones: this machine's CPU time is shared (steal time), and a ratio taken
// within one round (direct and each proxy measured back to back) is steadier than one across rounds.
function flag(name: string): string | undefined {
  return process.argv.find((arg) => arg.startsWith(`--${name}=`))?.slice(name.length + 3);
}
function numberFlag(name: string, fallback: number): number {
  const raw = flag(name);
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < 1)
    throw new Error(`--${name} must be a whole number above 0, not "${raw}"`);
  return value;
}
const TLS = process.argv.includes('--tls');
const VARIANTS = process.argv.includes('--variants');
const COUNTING_ONLY = process.argv.includes('--counting');
if (COUNTING_ONLY && (TLS || VARIANTS))
  throw new Error('--counting runs plain HTTP only, without --tls or --variants');
const ROUNDS = numberFlag('rounds', SMOKE ? 1 : 6);
const SECONDS = numberFlag('seconds', SMOKE ? 2 : 6);
const ONLY = flag('only');
if (ONLY !== undefined && ONLY !== 'app-bound' && ONLY !== 'shared')
  throw new Error(`--only must be app-bound or shared, not "${ONLY}"`);
const PROTOCOLS = (flag('protocols') ?? 'h1,h2').split(',');
if (PROTOCOLS.some((protocol) => protocol !== 'h1' && protocol !== 'h2'))
  throw new Error(`--protocols must list h1 and/or h2, not "${PROTOCOLS.join(',')}"`);
/** Requests in flight at once, for every path and load generator. */
const CONNECTIONS = 64;
/**
 * HTTP/2: 32 connections of 2 streams each. Fewer, busier connections would cross nginx's keepalive_requests (10,000,
 * which applies to HTTP/2 connections too) within one run and measure reconnecting instead.
 */
const H2_STREAMS = 2;
const BACKEND_CPUS = process.env.BENCH_BACKEND_CPUS ?? '0.5';
if (!(Number(BACKEND_CPUS) > 0))
  throw new Error(`BENCH_BACKEND_CPUS must be a number of CPUs above 0 (like 0.5), not "${BACKEND_CPUS}"`);
const BACKEND = 'sg-bench-tp';
const CADDY = 'sg-bench-caddy';
const HAPROXY = 'sg-bench-haproxy';
const EDGE_COUNTING = 'sg-bench-edge-counting';
const EDGE_NOT_COUNTING = 'sg-bench-edge-not-counting';
const COUNTING_ON = 'edge, counting on (bench bundle)';
const COUNTING_OFF = 'edge, counting off (bench bundle)';
/** Where a bench edge writes its bundle; nginx runs with it as its prefix, as the agent runs it with its own. */
const BUNDLE_DIR = '/tmp/swarmgate-bundle';
const HOST = 'tp.bench.test';
const IMAGE = 'swarmgate-bench:dev';

interface Mode {
  readonly name: string;
  /** `docker service create` flags for the backend. */
  readonly backendFlags: readonly string[];
}

const MODES: readonly Mode[] = [
  ...(ONLY === 'shared'
    ? []
    : [
        {
          name: `app-bound (backend limited to ${BACKEND_CPUS} CPU)`,
          backendFlags: ['--limit-cpu', BACKEND_CPUS],
        },
      ]),
  // The smoke run keeps to one set-up: the second runs the same code with other flags.
  ...(SMOKE || ONLY === 'app-bound' ? [] : [{ name: 'shared CPU (no limits)', backendFlags: [] }]),
];

async function runningTask(service: string): Promise<{ address: string; container: string }> {
  return waitFor(`${service}'s running task on the ${EDGE_NETWORK} network`, async () => {
    const ids = (
      await docker(['service', 'ps', '-q', '--no-trunc', '--filter', 'desired-state=running', service])
    )
      .split('\n')
      .filter(Boolean);
    for (const id of ids) {
      const tasks = JSON.parse(await docker(['inspect', id])) as {
        Status: { State: string; ContainerStatus?: { ContainerID?: string } };
        NetworksAttachments?: { Network: { Spec: { Name: string } }; Addresses: string[] }[];
      }[];
      const task = tasks[0];
      if (task?.Status.State !== 'running') continue;
      const address = task.NetworksAttachments?.find(
        (attachment) => attachment.Network.Spec.Name === EDGE_NETWORK,
      )?.Addresses[0];
      const container = task.Status.ContainerStatus?.ContainerID;
      if (address && container) return { address: address.split('/')[0] ?? address, container };
    }
    return undefined;
  });
}

/**
 * CPU time a container has used so far, in microseconds, from its own cgroup (v1 cpuacct in nanoseconds, or v2
 * cpu.stat in microseconds). Each `docker exec` adds ~30 ms of runc start to that cgroup: about 1 µs per request at these
 * rates, the same for every proxy.
 */
async function containerCpuMicroseconds(container: string): Promise<number> {
  const out = await docker([
    'exec',
    container,
    'sh',
    '-c',
    'if [ -r /sys/fs/cgroup/cpuacct/cpuacct.usage ]; then echo "ns $(cat /sys/fs/cgroup/cpuacct/cpuacct.usage)"; ' +
      'else echo "us $(sed -n "s/^usage_usec //p" /sys/fs/cgroup/cpu.stat)"; fi',
  ]);
  const [unit, value] = out.split(' ');
  const number = Number(value);
  if (!Number.isFinite(number) || value === '')
    throw new Error(`cannot read the CPU time of container ${container}: ${out}`);
  return unit === 'ns' ? number / 1000 : number;
}

interface LoadResult {
  readonly requestsPerSecond: number;
  readonly requests: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly non2xx: number;
  readonly errors: number;
  /** h2load only: what was negotiated (protocol, cipher, key exchange, application protocol). */
  readonly negotiated?: string;
}

interface RoundResult extends LoadResult {
  /** CPU microseconds per request of the proxy (NaN for direct) and of the backend. */
  readonly proxyCpuUsPerRequest: number;
  readonly backendCpuUsPerRequest: number;
}

/** Which load generator and protocol a path is measured with: wrk (plain HTTP/1.1), or h2load over h1 or h2. */
type Client = 'wrk' | 'h1' | 'h2';

interface Target {
  readonly path: string;
  /** The path by address (wrk, the header check). */
  readonly url: string;
  /** The task's address and port: h2load asks for https://HOST:port/ with HOST resolving to it (SNI, Host). */
  readonly address: string;
  readonly port: number;
  readonly tls: boolean;
  readonly client: Client;
  /** The proxy's container, whose CPU time is read around each run; none for direct. */
  readonly container?: string;
  /** Rows compared with each other ("ratio to the best"): same protocol. */
  readonly group: string;
}

function parseLatency(text: string, label: string): number {
  const match = new RegExp(`${label}\\s+([\\d.]+)(us|ms|s)`).exec(text);
  if (!match) return NaN;
  const value = Number(match[1]);
  return match[2] === 'us' ? value / 1000 : match[2] === 's' ? value * 1000 : value;
}

function wrkArguments(url: string, threads: number, connections: number, seconds: number): string[] {
  return [
    'run',
    '--rm',
    '--network',
    EDGE_NETWORK,
    '--label',
    'sg-e2e=1',
    IMAGE,
    'wrk',
    `-t${threads}`,
    `-c${connections}`,
    `-d${seconds}s`,
    '--latency',
    '-H',
    `Host: ${HOST}`,
    url,
  ];
}

async function wrk(
  url: string,
  seconds: number,
  threads = 2,
  connections = CONNECTIONS,
): Promise<LoadResult> {
  const out = await docker(wrkArguments(url, threads, connections, seconds), {
    timeoutMs: (seconds + 60) * 1000,
  });
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? NaN);
  const requests = Number(/(\d+) requests in/.exec(out)?.[1] ?? NaN);
  const non2xx = Number(/Non-2xx or 3xx responses:\s+(\d+)/.exec(out)?.[1] ?? 0);
  const errorMatch = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const errors = errorMatch ? errorMatch.slice(1).reduce((sum, value) => sum + Number(value), 0) : 0;
  return {
    requestsPerSecond: rps,
    requests,
    p50Ms: parseLatency(out, '50%'),
    p99Ms: parseLatency(out, '99%'),
    non2xx,
    errors,
  };
}

// h2load prints no percentiles; its per-request log (start µs, status, µs to the end of the response) gives them.
const LATENCY_PERCENTILES =
  `const d = require('fs').readFileSync('/tmp/requests.log', 'utf8').trim().split('\\n');` +
  `const v = Float64Array.from(d, (l) => Number(l.split('\\t')[2])).sort();` +
  `const p = (q) => (v[Math.min(v.length - 1, Math.ceil(q * v.length) - 1)] ?? NaN) / 1000;` +
  `console.log('percentiles p50=' + p(0.5) + ' p99=' + p(0.99) + ' n=' + v.length);`;

function h2loadArguments(target: Target, seconds: number, connections: number): string[] {
  const streams = target.client === 'h2' ? H2_STREAMS : 1;
  const command = [
    'h2load',
    ...(target.client === 'h1' ? ['--h1'] : []),
    `-c${Math.max(1, connections / streams)}`,
    `-m${streams}`,
    `-t${Math.min(2, connections)}`,
    `-D${seconds}`,
    // The same cipher and key exchange everywhere, whatever each server prefers: each allows exactly these.
    '--tls13-ciphers=TLS_AES_128_GCM_SHA256',
    '--ciphers=ECDHE-ECDSA-AES128-GCM-SHA256',
    '--groups=X25519',
    '--log-file=/tmp/requests.log',
    `${target.tls ? 'https' : 'http'}://${HOST}:${target.port}/`,
  ].join(' ');
  return [
    'run',
    '--rm',
    '--network',
    EDGE_NETWORK,
    '--label',
    'sg-e2e=1',
    '--add-host',
    `${HOST}:${target.address}`,
    IMAGE,
    'sh',
    '-c',
    `${command}; rc=$?; node -e "${LATENCY_PERCENTILES}"; exit $rc`,
  ];
}

function parseH2load(out: string): LoadResult {
  const count = (pattern: RegExp): number => Number(pattern.exec(out)?.[1] ?? NaN);
  const negotiated = ['TLS Protocol', 'Cipher', 'Server Temp Key', 'Application protocol']
    .map((label) => new RegExp(`${label}: (.+)`).exec(out)?.[1]?.trim())
    .filter(Boolean)
    .join(', ');
  return {
    requestsPerSecond: count(/finished in [\d.]+m?s, ([\d.]+) req\/s/),
    requests: count(/requests: \d+ total, \d+ started, (\d+) done/),
    p50Ms: count(/percentiles p50=([\d.]+)/),
    p99Ms: count(/p99=([\d.]+)/),
    non2xx: count(/status codes: \d+ 2xx, (\d+) 3xx/) + count(/(\d+) 4xx/) + count(/(\d+) 5xx/),
    errors: count(/(\d+) errored/) + count(/(\d+) timeout/),
    negotiated,
  };
}

async function load(target: Target, seconds = SECONDS): Promise<LoadResult> {
  if (target.client === 'wrk') return wrk(target.url, seconds);
  const out = await docker(h2loadArguments(target, seconds, CONNECTIONS), {
    timeoutMs: (seconds + 60) * 1000,
  });
  return parseH2load(out);
}

async function answers(target: Target): Promise<boolean> {
  if (target.client === 'wrk') {
    const out = await docker(wrkArguments(target.url, 1, 1, 1)).catch(() => '');
    return /Requests\/sec/.test(out) && !/Non-2xx/.test(out);
  }
  const out = await docker(h2loadArguments(target, 1, 1)).catch(() => '');
  const result = parseH2load(out);
  return result.requests > 0 && result.non2xx === 0 && result.errors === 0;
}

/** The request headers a path adds on its way to the backend (the test backend echoes them at /headers). */
async function headersAdded(target: Target): Promise<string> {
  const script =
    `const u = new URL(process.argv[1] + 'headers');` +
    `require(u.protocol.slice(0, -1)).get(u, { headers: { host: process.argv[2] }, servername: process.argv[2],` +
    ` rejectUnauthorized: false }, (res) => {` +
    `let body = ''; res.on('data', (chunk) => (body += chunk));` +
    `res.on('end', () => console.log(Object.keys(JSON.parse(body).headers).join(' ')));})`;
  const out = await docker([
    'run',
    '--rm',
    '--network',
    EDGE_NETWORK,
    IMAGE,
    'node',
    '-e',
    script,
    target.url,
    HOST,
  ]);
  const sentByClient = new Set(['host', 'connection']);
  return out
    .split(' ')
    .filter((name) => name && !sentByClient.has(name))
    .sort()
    .join(' ');
}

/**
 * --counting: both edges of the pair loaded at once, each by its own wrk with half the connections, and each one's
 * CPU per request from its own container. The backend serves both: its CPU is per request of the two together.
 */
async function measurePair(
  pair: readonly [Target, Target],
  backendContainer: string,
): Promise<[RoundResult, RoundResult]> {
  const containers = [...pair.map((target) => target.container ?? ''), backendContainer];
  const before = await Promise.all(containers.map(containerCpuMicroseconds));
  const results = await Promise.all(pair.map((target) => wrk(target.url, SECONDS, 1, CONNECTIONS / 2)));
  const after = await Promise.all(containers.map(containerCpuMicroseconds));
  const used = after.map((value, index) => value - (before[index] ?? NaN));
  const backendPerRequest = (used[2] ?? NaN) / results.reduce((sum, result) => sum + result.requests, 0);
  const [first, second] = results.map((result, index) => ({
    ...result,
    proxyCpuUsPerRequest: (used[index] ?? NaN) / result.requests,
    backendCpuUsPerRequest: backendPerRequest,
  }));
  if (!first || !second) throw new Error('the counting pair needs two results');
  return [first, second];
}

/** One load run against a target, with the CPU time the proxy and the backend used meanwhile. */
async function measure(target: Target, backendContainer: string): Promise<RoundResult> {
  const cpuNow = (container: string | undefined): Promise<number> =>
    container ? containerCpuMicroseconds(container) : Promise.resolve(NaN);
  const [proxyBefore, backendBefore] = await Promise.all([
    cpuNow(target.container),
    cpuNow(backendContainer),
  ]);
  const result = await load(target);
  const [proxyAfter, backendAfter] = await Promise.all([cpuNow(target.container), cpuNow(backendContainer)]);
  return {
    ...result,
    proxyCpuUsPerRequest: (proxyAfter - proxyBefore) / result.requests,
    backendCpuUsPerRequest: (backendAfter - backendBefore) / result.requests,
  };
}

/** The bench's certificate for HOST: ECDSA P-256, self-signed, made for this run (openssl on this machine). */
async function benchCertificate(): Promise<CertificateMaterial> {
  const pair = await makeChannelKeyPair(HOST);
  try {
    return { certificatePem: pair.cert, privateKeyPem: pair.key };
  } finally {
    await pair.remove();
  }
}

const CERTIFICATE_NAME = 'bench-tp';

/**
 * The edge's bundle for the backend alone, rendered as the controller renders it, with counting on or off. The
 * access log is off as on the lab's edge here; the channel certificate (the ACME location loads it at start) is the
 * test fixture, shipped in the bundle. With a certificate, the host is served on 443 too (and on 80, not
 * redirected) with the template's TLS settings; no HSTS header, which the other proxies do not send either.
 */
function benchEdgeBundle(
  backendAddress: string,
  { trafficMetrics, accessLog = false, certificate }: EdgeSettings,
): BundleFiles {
  const model = buildRoutingModel(oneServiceSnapshot(HOST, [backendAddress], 80), {
    networks: ['swarmgate'],
    ...(certificate
      ? {
          certificates: [{ name: CERTIFICATE_NAME, domains: [HOST], source: 'user' as const }],
          tlsDefaults: { ...DEFAULT_TLS, httpsMethod: 'noredirect' as const, hsts: null },
        }
      : {}),
  });
  const files = renderConfig(
    model,
    {
      proxy: {
        ...defaultProxySettings(),
        accessLog,
        trafficMetrics,
        channelCertFile: `${BUNDLE_DIR}/channel.crt`,
      },
      generator: 'bench',
    },
    createTemplateRenderer(),
    (name) => (name === CERTIFICATE_NAME ? certificate : undefined),
  );
  const conf = files['nginx.conf'] ?? '';
  // The pair must differ in the setting, or the bench measures nothing.
  if (conf.includes('log_by_lua') !== trafficMetrics)
    throw new Error(`the bench bundle with trafficMetrics=${trafficMetrics} does not look like it`);
  if (certificate && !conf.includes('listen 443 ssl'))
    throw new Error('the bench bundle with a certificate serves no HTTPS');
  return {
    ...files,
    'channel.crt': readFileSync(new URL('../test/fixtures/test-only.crt', import.meta.url), 'utf8'),
  };
}

interface EdgeSettings {
  readonly trafficMetrics: boolean;
  readonly accessLog?: boolean;
  readonly certificate?: CertificateMaterial;
}

/** A replacement in a rendered config that must change it: a variant that edits nothing measures nothing. */
function edit(conf: string, from: RegExp, to: string, what: string): string {
  const changed = conf.replace(from, to);
  if (changed === conf)
    throw new Error(`variant "${what}": nothing in the bench config matched ${String(from)}`);
  return changed;
}

const dropExtraHeaders = (conf: string): string =>
  edit(
    conf,
    /\n\s*proxy_set_header (X-Forwarded-Ssl|X-Original-URI) [^\n]*;/g,
    '',
    'without X-Forwarded-Ssl and X-Original-URI',
  );
const raiseUpstreamKeepalive = (conf: string): string =>
  edit(
    conf,
    /(\n(\s*)keepalive \d+;)/g,
    '$1\n$2keepalive_requests 1000000;\n$2keepalive_time 24h;',
    'keepalive_requests/keepalive_time raised',
  );
const staticUpstream =
  (backendAddress: string) =>
  (conf: string): string =>
    edit(
      conf,
      /server 0\.0\.0\.1;\s*balancer_by_lua_block \{[^}]*\}/g,
      `server ${backendAddress}:80;`,
      'static upstream',
    );
const oneWorker = (conf: string): string =>
  edit(conf, /\nworker_processes [^;]+;/, '\nworker_processes 1;', 'one worker');

/** One-off edits of the bench edge (--variants): where its cost per request goes. Not product settings. */
interface EdgeVariant {
  readonly name: string;
  readonly trafficMetrics: boolean;
  readonly accessLog?: boolean;
  readonly edits: readonly ((conf: string) => string)[];
}

// Accept settings (multi_accept, reuseport) are left out: both load generators keep their connections for the whole
// run, so there are 64 accepts per run to tune.
function edgeVariants(backendAddress: string): readonly EdgeVariant[] {
  return [
    { name: 'edge − X-Forwarded-Ssl, X-Original-URI', trafficMetrics: true, edits: [dropExtraHeaders] },
    { name: 'edge − counting', trafficMetrics: false, edits: [] },
    { name: 'edge + access log (the default)', trafficMetrics: true, accessLog: true, edits: [] },
    {
      name: 'edge, keepalive_requests/time to tasks raised',
      trafficMetrics: true,
      edits: [raiseUpstreamKeepalive],
    },
    {
      name: 'edge, static upstream (no Lua balancer)',
      trafficMetrics: true,
      edits: [staticUpstream(backendAddress)],
    },
    { name: 'edge, 1 worker', trafficMetrics: true, edits: [oneWorker] },
    {
      name: 'edge − headers − counting, keepalive raised, static upstream',
      trafficMetrics: false,
      edits: [dropExtraHeaders, raiseUpstreamKeepalive, staticUpstream(backendAddress)],
    },
  ];
}

/**
 * A service that writes `files` (absolute path → text, passed base64 in its environment) and then runs `command`
 * in the same shell; the swarmgate and bench images both have node for the writing.
 */
async function createServiceWithFiles(
  name: string,
  image: string,
  files: Record<string, string>,
  command: string,
): Promise<void> {
  const encoded = Buffer.from(JSON.stringify(files)).toString('base64');
  // One argument of a command line holds at most 128 KiB on Linux.
  if (encoded.length > 100_000)
    throw new Error(`the files of ${name} are too large to pass (${encoded.length} bytes)`);
  const write =
    `const fs = require('node:fs'); const path = require('node:path');` +
    `const files = JSON.parse(Buffer.from(process.env.SG_FILES, 'base64').toString());` +
    `for (const [file, text] of Object.entries(files)) {` +
    `fs.mkdirSync(path.dirname(file), { recursive: true }); fs.writeFileSync(file, text); }`;
  await createService({
    name,
    image,
    env: { SG_FILES: encoded },
    extra: ['--entrypoint', 'sh'],
    args: ['-c', `node -e "${write.replaceAll('"', '\\"')}" && exec ${command}`],
  });
}

/** A service running the swarmgate image's nginx with `files` as its bundle (no agent, no controller). */
async function createBenchEdge(name: string, files: BundleFiles): Promise<void> {
  await createServiceWithFiles(
    name,
    SWARMGATE_IMAGE,
    Object.fromEntries(
      Object.entries(files).map(([file, text]) => [path.posix.join(BUNDLE_DIR, file), text]),
    ),
    `nginx -p ${BUNDLE_DIR}/ -c ${BUNDLE_DIR}/nginx.conf -g 'daemon off;'`,
  );
}

/** TLS 1.2 suites the edge's template allows (Mozilla intermediate); the other proxies get the same list. */
const TLS12_CIPHERS =
  'ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:' +
  'ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305';

async function createHaproxy(
  backendAddress: string,
  certificate: CertificateMaterial | undefined,
): Promise<void> {
  const haproxyConfig = [
    'global',
    '  maxconn 4096',
    ...(certificate
      ? [
          '  ssl-default-bind-options ssl-min-ver TLSv1.2',
          `  ssl-default-bind-ciphers ${TLS12_CIPHERS}`,
          '  ssl-default-bind-ciphersuites TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256',
        ]
      : []),
    'defaults',
    '  mode http',
    '  timeout connect 2s',
    '  timeout client 60s',
    '  timeout server 60s',
    '  option http-keep-alive',
    'frontend web',
    '  bind :8081',
    ...(certificate ? ['  bind :8443 ssl crt /tmp/haproxy/tp.pem alpn h2,http/1.1'] : []),
    '  default_backend app',
    'backend app',
    '  http-reuse always',
    // The request headers the edge sets (Caddy sets X-Forwarded-For/-Proto/-Host by itself): each one is work
    // for the backend's parser too, so a proxy that sends fewer would look faster for the wrong reason.
    '  option forwardfor',
    '  http-request set-header X-Real-IP %[src]',
    `  http-request set-header X-Forwarded-Proto ${certificate ? '%[ssl_fc,iif(https,http)]' : 'http'}`,
    '  http-request set-header X-Forwarded-Host %[req.hdr(host)]',
    '  http-request set-header X-Forwarded-Port %[dst_port]',
    `  server app1 ${backendAddress}:80`,
  ].join('\n');
  await createServiceWithFiles(
    HAPROXY,
    IMAGE,
    {
      '/tmp/haproxy/haproxy.cfg': `${haproxyConfig}\n`,
      ...(certificate
        ? { '/tmp/haproxy/tp.pem': `${certificate.certificatePem}${certificate.privateKeyPem}` }
        : {}),
    },
    'haproxy -f /tmp/haproxy/haproxy.cfg',
  );
}

async function createCaddy(
  backendAddress: string,
  certificate: CertificateMaterial | undefined,
): Promise<void> {
  if (!certificate) {
    await createService({
      name: CADDY,
      image: IMAGE,
      extra: ['--entrypoint', 'caddy'],
      args: ['reverse-proxy', '--from', ':8080', '--to', `${backendAddress}:80`],
    });
    return;
  }
  // HTTPS on 8443 with the bench's certificate, HTTP/1.1 and HTTP/2 (no HTTP/3 listener), the same TLS 1.2 suites
  // (Go names); Go does not let TLS 1.3 suites be chosen. The headers the edge and HAProxy add that Caddy does not.
  const caddyfile = [
    '{',
    '  admin off',
    '  auto_https disable_redirects',
    '  servers {',
    '    protocols h1 h2',
    '  }',
    '}',
    `https://${HOST}:8443 {`,
    '  tls /tmp/caddy/tp.crt /tmp/caddy/tp.key {',
    '    protocols tls1.2 tls1.3',
    '    ciphers TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 ' +
      'TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 ' +
      'TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256',
    '  }',
    `  reverse_proxy ${backendAddress}:80 {`,
    '    header_up X-Real-IP {http.request.remote.host}',
    '    header_up X-Forwarded-Port {http.request.port}',
    '  }',
    '}',
  ].join('\n');
  await createServiceWithFiles(
    CADDY,
    IMAGE,
    {
      '/tmp/caddy/Caddyfile': `${caddyfile}\n`,
      '/tmp/caddy/tp.crt': certificate.certificatePem,
      '/tmp/caddy/tp.key': certificate.privateKeyPem,
    },
    'caddy run --adapter caddyfile --config /tmp/caddy/Caddyfile',
  );
}

interface ModeResult {
  readonly byPath: Map<string, RoundResult[]>;
  readonly headersAdded: Map<string, string>;
  readonly groups: Map<string, string>;
}

const variantService = (index: number): string => `sg-bench-edge-variant-${index}`;
const ALL_SERVICES = [
  BACKEND,
  CADDY,
  HAPROXY,
  EDGE_COUNTING,
  EDGE_NOT_COUNTING,
  ...edgeVariants('0.0.0.0').map((_, index) => variantService(index)),
];

/** Each round's order: direct first (the round's reference), then the others rotated by one place per round. */
function rotated(targets: readonly Target[], round: number): Target[] {
  const [first, ...rest] = targets;
  const shift = rest.length === 0 ? 0 : round % rest.length;
  return [...(first ? [first] : []), ...rest.slice(shift), ...rest.slice(0, shift)];
}

async function measureMode(mode: Mode): Promise<ModeResult> {
  const byPath = new Map<string, RoundResult[]>();
  const added = new Map<string, string>();
  const groups = new Map<string, string>();
  const certificate = TLS ? await benchCertificate() : undefined;
  try {
    await createService({
      name: BACKEND,
      labels: { VIRTUAL_HOST: HOST },
      replicas: 1,
      extra: [...mode.backendFlags],
    });
    const backend = await runningTask(BACKEND);
    const direct: Target = {
      path: 'direct',
      url: `http://${backend.address}:80/`,
      address: backend.address,
      port: 80,
      tls: false,
      client: TLS ? 'h1' : 'wrk',
      group: 'direct',
    };
    const variants = VARIANTS ? edgeVariants(backend.address) : [];
    const plainDefault = !TLS && !VARIANTS;
    if (!VARIANTS && !COUNTING_ONLY) await createCaddy(backend.address, certificate);
    if (!COUNTING_ONLY) await createHaproxy(backend.address, certificate);
    await createBenchEdge(
      EDGE_COUNTING,
      benchEdgeBundle(backend.address, { trafficMetrics: true, certificate }),
    );
    if (plainDefault)
      await createBenchEdge(EDGE_NOT_COUNTING, benchEdgeBundle(backend.address, { trafficMetrics: false }));
    for (const [index, variant] of variants.entries()) {
      const files = benchEdgeBundle(backend.address, { ...variant, certificate });
      const conf = variant.edits.reduce((text, change) => change(text), files['nginx.conf'] ?? '');
      await createBenchEdge(variantService(index), { ...files, 'nginx.conf': conf });
    }

    /** A proxy's targets: plain HTTP through wrk, or HTTPS over each protocol through h2load. */
    const targetsOf = async (
      path: string,
      service: string,
      ports: { http: number; https: number },
    ): Promise<Target[]> => {
      const task = await runningTask(service);
      if (!TLS)
        return [
          {
            path,
            url: `http://${task.address}:${ports.http}/`,
            address: task.address,
            port: ports.http,
            tls: false,
            client: 'wrk',
            container: task.container,
            group: 'http',
          },
        ];
      return PROTOCOLS.map((protocol) => ({
        path: `${path}, ${protocol === 'h1' ? 'HTTPS/1.1' : 'HTTP/2'}`,
        url: `https://${task.address}:${ports.https}/`,
        address: task.address,
        port: ports.https,
        tls: true,
        client: protocol as Client,
        container: task.container,
        group: protocol,
      }));
    };
    const edgePorts = { http: 80, https: 443 };
    const proxies: Target[] = [];
    if (plainDefault && !COUNTING_ONLY)
      proxies.push(...(await targetsOf('swarmgate edge', `${STACK}_edge`, edgePorts)));
    const countingTargets = await targetsOf(
      TLS ? 'edge (bench bundle)' : COUNTING_ON,
      EDGE_COUNTING,
      edgePorts,
    );
    proxies.push(...countingTargets);
    const notCountingTargets = plainDefault
      ? await targetsOf(COUNTING_OFF, EDGE_NOT_COUNTING, edgePorts)
      : [];
    proxies.push(...notCountingTargets);
    for (const [index, variant] of variants.entries())
      proxies.push(...(await targetsOf(variant.name, variantService(index), edgePorts)));
    if (!VARIANTS && !COUNTING_ONLY)
      proxies.push(...(await targetsOf('caddy', CADDY, { http: 8080, https: 8443 })));
    if (!COUNTING_ONLY) proxies.push(...(await targetsOf('haproxy', HAPROXY, { http: 8081, https: 8443 })));
    const targets = [direct, ...proxies];
    for (const target of targets) groups.set(target.path, target.group);
    for (const target of proxies)
      await waitFor(
        `${target.path} to route the backend`,
        async () => ((await answers(target)) ? true : undefined),
        { timeoutMs: 60_000, intervalMs: 1000 },
      );
    // Once per service: the headers do not depend on HTTPS/1.1 or HTTP/2.
    const byUrl = new Map<string, string>();
    for (const target of targets) {
      const headers = byUrl.get(target.url) ?? (await headersAdded(target));
      byUrl.set(target.url, headers);
      added.set(target.path, headers);
    }
    // The Node backend gets faster for a while as V8 optimises it (direct went 13k → 20k r/s over three rounds
    // in a trial): one unrecorded round first, so the rounds compare a warm backend.
    // The runs with many paths keep the warm-up short (it warms the backend; each path only opens connections).
    if (!SMOKE)
      for (const target of targets) await load(target, plainDefault ? SECONDS : Math.min(SECONDS, 2));
    const [countingTarget] = countingTargets;
    const [notCountingTarget] = notCountingTargets;
    for (let round = 0; round < ROUNDS; round++) {
      // The plain run keeps its order, but the counting pair swaps places every round: neither always runs right
      // after the lab's edge. The others rotate, so no path always follows the same one.
      const order = !plainDefault
        ? rotated(targets, round)
        : round % 2 === 0
          ? targets
          : targets.map((target) =>
              target === countingTarget
                ? (notCountingTarget ?? target)
                : target === notCountingTarget
                  ? (countingTarget ?? target)
                  : target,
            );
      if (COUNTING_ONLY && countingTarget && notCountingTarget) {
        // Which wrk starts first alternates too.
        const pair: [Target, Target] =
          round % 2 === 0 ? [countingTarget, notCountingTarget] : [notCountingTarget, countingTarget];
        const measured = [
          await measure(direct, backend.container),
          ...(await measurePair(pair, backend.container)),
        ];
        [direct, ...pair].forEach((target, index) => {
          const result = measured[index];
          if (result) byPath.set(target.path, [...(byPath.get(target.path) ?? []), result]);
        });
        await sleep(500);
        continue;
      }
      for (const target of order) {
        const result = await measure(target, backend.container);
        byPath.set(target.path, [...(byPath.get(target.path) ?? []), result]);
        await sleep(500);
      }
    }
  } finally {
    for (const name of ALL_SERVICES) await removeService(name);
  }
  return { byPath, headersAdded: added, groups };
}

interface CountingCost {
  /** Throughput lost to counting, % of the edge's without it: 100 × (1 − on/off), per round. */
  readonly throughputPercent: { median: number; min: number; max: number; rounds: number[] };
  /** Extra CPU of the edge's container per request: on − off, µs, per round. */
  readonly cpuUsPerRequest: { median: number; min: number; max: number; rounds: number[] };
  /**
   * Counting's share of the counting edge's CPU per request, 100 × (on − off) / on, per round: the throughput an
   * edge that is short of CPU loses (where the backend is the limit, as app-bound, throughput hides it).
   */
  readonly cpuPercent: { median: number; min: number; max: number; rounds: number[] };
}

function spread(values: number[]): { median: number; min: number; max: number; rounds: number[] } {
  return { median: summary(values).p50, min: Math.min(...values), max: Math.max(...values), rounds: values };
}

function countingCost(byPath: Map<string, RoundResult[]>): CountingCost | undefined {
  const on = byPath.get(COUNTING_ON) ?? [];
  const off = byPath.get(COUNTING_OFF) ?? [];
  if (on.length === 0 || off.length === 0) return undefined;
  const percent = on.map(
    (result, round) => 100 * (1 - result.requestsPerSecond / (off[round]?.requestsPerSecond ?? NaN)),
  );
  const cpu = on.map(
    (result, round) => result.proxyCpuUsPerRequest - (off[round]?.proxyCpuUsPerRequest ?? NaN),
  );
  const share = on.map((result, round) => (100 * (cpu[round] ?? NaN)) / result.proxyCpuUsPerRequest);
  return { throughputPercent: spread(percent), cpuUsPerRequest: spread(cpu), cpuPercent: spread(share) };
}

function rowsOf({ byPath, headersAdded, groups }: ModeResult): Record<string, unknown>[] {
  const direct = byPath.get('direct') ?? [];
  /** Per round, the most requests/s any proxy of the same group reached. */
  const best = (group: string, round: number): number =>
    Math.max(
      ...[...byPath.entries()]
        .filter(([path]) => path !== 'direct' && groups.get(path) === group)
        .map(([, results]) => results[round]?.requestsPerSecond ?? NaN),
    );
  return [...byPath.entries()].map(([path, results]) => {
    const ratios = results.map(
      (result, round) => result.requestsPerSecond / (direct[round]?.requestsPerSecond ?? NaN),
    );
    const group = groups.get(path) ?? '';
    const toBest = results.map((result, round) => result.requestsPerSecond / best(group, round));
    const negotiated = [...new Set(results.map((result) => result.negotiated ?? ''))].join(' | ');
    return {
      path,
      'requests/s (median)': Math.round(summary(results.map((result) => result.requestsPerSecond)).p50),
      'ratio to direct (median of rounds)': summary(ratios).p50,
      'ratio min': Math.min(...ratios),
      'ratio max': summary(ratios).max,
      'ratio to best proxy (median)': path === 'direct' ? '' : summary(toBest).p50,
      'proxy CPU µs/request': summary(results.map((result) => result.proxyCpuUsPerRequest)).p50,
      'backend CPU µs/request': summary(results.map((result) => result.backendCpuUsPerRequest)).p50,
      'p50 ms': summary(results.map((result) => result.p50Ms)).p50,
      'p99 ms': summary(results.map((result) => result.p99Ms)).p50,
      'non-2xx + errors': results.reduce((sum, result) => sum + result.non2xx + result.errors, 0),
      'headers added': headersAdded.get(path) ?? '',
      ...(negotiated ? { negotiated } : {}),
    };
  });
}

/**
 * --variants: per variant, the CPU per request it saves against the bench edge and the share of the edge's gap to
 * HAProxy that closes, taken round by round (each round measures the edge, the variant and HAProxy back to back).
 */
function gapRows({ byPath, groups }: ModeResult): Record<string, unknown>[] {
  const rows: Record<string, unknown>[] = [];
  for (const group of new Set(groups.values())) {
    const inGroup = [...byPath.entries()].filter(([path]) => groups.get(path) === group);
    const edge = inGroup.find(([path]) => path.startsWith(TLS ? 'edge (bench bundle)' : COUNTING_ON))?.[1];
    const haproxy = inGroup.find(([path]) => path.startsWith('haproxy'))?.[1];
    if (!edge || !haproxy) continue;
    const gap = edge.map(
      (result, round) => result.proxyCpuUsPerRequest - (haproxy[round]?.proxyCpuUsPerRequest ?? NaN),
    );
    for (const [path, results] of inGroup) {
      if (results === edge || results === haproxy) continue;
      const saved = results.map(
        (result, round) => (edge[round]?.proxyCpuUsPerRequest ?? NaN) - result.proxyCpuUsPerRequest,
      );
      const throughput = results.map(
        (result, round) => result.requestsPerSecond / (edge[round]?.requestsPerSecond ?? NaN),
      );
      const savedSpread = spread(saved);
      rows.push({
        variant: path,
        'edge CPU − HAProxy CPU, µs (median)': summary(gap).p50,
        'CPU saved vs edge, µs (median)': savedSpread.median,
        'saved min': savedSpread.min,
        'saved max': savedSpread.max,
        'share of the gap closed': savedSpread.median / summary(gap).p50,
        'requests/s vs edge (median)': summary(throughput).p50,
      });
    }
  }
  return rows;
}

const plainDefaultRun = !TLS && !VARIANTS;
// Like for like: the Caddy and HAProxy set-ups write no access log, so the lab's edge runs without one here too.
// The other runs use bench edges only and need the lab's stack for its network.
if (plainDefaultRun) process.env.SWARMGATE_ACCESS_LOG = 'false';
await deployStack();
const results: {
  mode: string;
  rows: Record<string, unknown>[];
  countingCost?: CountingCost;
  gap?: Record<string, unknown>[];
  raw: Record<string, RoundResult[]>;
}[] = [];
try {
  for (const name of ALL_SERVICES) await removeService(name);
  for (const mode of MODES) {
    const measured = await measureMode(mode);
    const cost = countingCost(measured.byPath);
    results.push({
      mode: mode.name,
      rows: rowsOf(measured),
      ...(cost ? { countingCost: cost } : {}),
      ...(VARIANTS ? { gap: gapRows(measured) } : {}),
      raw: Object.fromEntries(measured.byPath),
    });
  }
} finally {
  // Leave the stack as the other benchmarks and tests expect it: access log on.
  delete process.env.SWARMGATE_ACCESS_LOG;
  if (plainDefaultRun) await deployStack();
}

const generator = TLS
  ? `h2load, ${CONNECTIONS} requests in flight (HTTPS/1.1: ${CONNECTIONS} connections; HTTP/2: ` +
    `${CONNECTIONS / H2_STREAMS} × ${H2_STREAMS} streams)`
  : `wrk -t2 -c${CONNECTIONS}`;
for (const { mode, rows, countingCost: cost, gap } of results) {
  printTable(
    `Throughput${TLS ? ' over TLS' : ''}${VARIANTS ? ', edge variants' : ''}${COUNTING_ONLY ? ', the counting pair loaded together (half the connections each)' : ''}, ${mode}: ${generator}, ${SECONDS} s × ${ROUNDS} rounds, alternating`,
    rows,
  );
  if (gap)
    printTable(`Where the edge's CPU per request goes (${mode}): one-off variants against HAProxy`, gap);
  if (!cost) continue;
  const { throughputPercent: percent, cpuUsPerRequest: cpu, cpuPercent: share } = cost;
  const range = (values: { median: number; min: number; max: number }): string =>
    `${values.median.toFixed(1)} (rounds ${values.min.toFixed(1)} .. ${values.max.toFixed(1)})`;
  console.log(
    `counting costs ${range(percent)} % of edge throughput, ${range(cpu)} µs CPU per request = ` +
      `${range(share)} % of the edge's CPU; target ≤ 3 %`,
  );
}
writeResult(
  `throughput${TLS ? '-tls' : ''}${VARIANTS ? '-variants' : ''}${COUNTING_ONLY ? '-counting' : ''}`,
  {
    connections: CONNECTIONS,
    ...(TLS ? { http2StreamsPerConnection: H2_STREAMS, protocols: PROTOCOLS } : {}),
    seconds: SECONDS,
    rounds: ROUNDS,
    backendCpus: BACKEND_CPUS,
    modes: results,
  },
);

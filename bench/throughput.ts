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
import { readFileSync } from 'node:fs';
import { defaultProxySettings } from '../src/config.ts';
import { buildRoutingModel } from '../src/model/routing-model.ts';
import { createTemplateRenderer } from '../src/render/nunjucks-env.ts';
import { renderConfig } from '../src/render/render-config.ts';
import type { BundleFiles } from '../src/render/render-config.ts';
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
import { oneServiceSnapshot } from '../test/support/one-service.ts';
import { printTable, SMOKE, sleep, summary, writeResult } from './support.ts';

// Many short rounds rather than a few long ones: this machine's CPU time is shared (steal time), and a ratio taken
// within one round (direct and each proxy measured back to back) is steadier than one across rounds.
const ROUNDS = SMOKE ? 1 : 6;
const SECONDS = SMOKE ? 2 : 6;
const CONNECTIONS = 64;
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
  { name: `app-bound (backend limited to ${BACKEND_CPUS} CPU)`, backendFlags: ['--limit-cpu', BACKEND_CPUS] },
  // The smoke run keeps to one set-up: the second runs the same code with other flags.
  ...(SMOKE ? [] : [{ name: 'shared CPU (no limits)', backendFlags: [] }]),
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

interface WrkResult {
  readonly requestsPerSecond: number;
  readonly requests: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly non2xx: number;
  readonly errors: number;
}

interface RoundResult extends WrkResult {
  /** CPU microseconds per request of the proxy (NaN for direct) and of the backend. */
  readonly proxyCpuUsPerRequest: number;
  readonly backendCpuUsPerRequest: number;
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

async function wrk(url: string): Promise<WrkResult> {
  const out = await docker(wrkArguments(url, 2, CONNECTIONS, SECONDS), { timeoutMs: (SECONDS + 60) * 1000 });
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

async function wrkOnce(url: string): Promise<boolean> {
  const out = await docker(wrkArguments(url, 1, 1, 1)).catch(() => '');
  return /Requests\/sec/.test(out) && !/Non-2xx/.test(out);
}

/** The request headers a path adds on its way to the backend (the test backend echoes them at /headers). */
async function headersAdded(url: string): Promise<string> {
  const script =
    `require('http').get(process.argv[1] + 'headers', { headers: { host: process.argv[2] } }, (res) => {` +
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
    url,
    HOST,
  ]);
  const sentByClient = new Set(['host', 'connection']);
  return out
    .split(' ')
    .filter((name) => name && !sentByClient.has(name))
    .sort()
    .join(' ');
}

interface Target {
  readonly path: string;
  readonly url: string;
  /** The proxy's container, whose CPU time is read around each run; none for direct. */
  readonly container?: string;
}

/** One wrk run against a target, with the CPU time the proxy and the backend used meanwhile. */
async function measure(target: Target, backendContainer: string): Promise<RoundResult> {
  const cpuNow = (container: string | undefined): Promise<number> =>
    container ? containerCpuMicroseconds(container) : Promise.resolve(NaN);
  const [proxyBefore, backendBefore] = await Promise.all([
    cpuNow(target.container),
    cpuNow(backendContainer),
  ]);
  const result = await wrk(target.url);
  const [proxyAfter, backendAfter] = await Promise.all([cpuNow(target.container), cpuNow(backendContainer)]);
  return {
    ...result,
    proxyCpuUsPerRequest: (proxyAfter - proxyBefore) / result.requests,
    backendCpuUsPerRequest: (backendAfter - backendBefore) / result.requests,
  };
}

/**
 * The edge's bundle for the backend alone, rendered as the controller renders it, with counting on or off. The
 * access log is off as on the lab's edge here; the channel certificate (the ACME location loads it at start) is the
 * test fixture, shipped in the bundle.
 */
function benchEdgeBundle(backendAddress: string, trafficMetrics: boolean): BundleFiles {
  const model = buildRoutingModel(oneServiceSnapshot(HOST, [backendAddress], 80), {
    networks: ['swarmgate'],
  });
  const files = renderConfig(
    model,
    {
      proxy: {
        ...defaultProxySettings(),
        accessLog: false,
        trafficMetrics,
        channelCertFile: `${BUNDLE_DIR}/channel.crt`,
      },
      generator: 'bench',
    },
    createTemplateRenderer(),
  );
  const conf = files['nginx.conf'] ?? '';
  // The pair must differ in the setting, or the bench measures nothing.
  if (conf.includes('log_by_lua') !== trafficMetrics)
    throw new Error(`the bench bundle with trafficMetrics=${trafficMetrics} does not look like it`);
  return {
    ...files,
    'channel.crt': readFileSync(new URL('../test/fixtures/test-only.crt', import.meta.url), 'utf8'),
  };
}

/** A service running the swarmgate image's nginx with `files` as its bundle (no agent, no controller). */
async function createBenchEdge(name: string, files: BundleFiles): Promise<void> {
  const bundle = Buffer.from(JSON.stringify(files)).toString('base64');
  // One argument of a command line holds at most 128 KiB on Linux.
  if (bundle.length > 100_000)
    throw new Error(`the bench bundle is too large to pass (${bundle.length} bytes)`);
  const write =
    `const fs = require('node:fs'); const path = require('node:path');` +
    `const files = JSON.parse(Buffer.from(process.env.SG_BUNDLE, 'base64').toString());` +
    `for (const [name, text] of Object.entries(files)) {` +
    `const file = path.join('${BUNDLE_DIR}', name); fs.mkdirSync(path.dirname(file), { recursive: true });` +
    `fs.writeFileSync(file, text); }`;
  await createService({
    name,
    image: SWARMGATE_IMAGE,
    env: { SG_BUNDLE: bundle },
    extra: ['--entrypoint', 'sh'],
    args: [
      '-c',
      `node -e "${write.replaceAll('"', '\\"')}" && exec nginx -p ${BUNDLE_DIR}/ -c ${BUNDLE_DIR}/nginx.conf -g 'daemon off;'`,
    ],
  });
}

interface ModeResult {
  readonly byPath: Map<string, RoundResult[]>;
  readonly headersAdded: Map<string, string>;
}

async function measureMode(mode: Mode): Promise<ModeResult> {
  const byPath = new Map<string, RoundResult[]>();
  const added = new Map<string, string>();
  try {
    await createService({
      name: BACKEND,
      labels: { VIRTUAL_HOST: HOST },
      replicas: 1,
      extra: [...mode.backendFlags],
    });
    const backend = await runningTask(BACKEND);
    await createService({
      name: CADDY,
      image: IMAGE,
      extra: ['--entrypoint', 'caddy'],
      args: ['reverse-proxy', '--from', ':8080', '--to', `${backend.address}:80`],
    });
    const haproxyConfig = [
      'global',
      '  maxconn 4096',
      'defaults',
      '  mode http',
      '  timeout connect 2s',
      '  timeout client 60s',
      '  timeout server 60s',
      '  option http-keep-alive',
      'frontend web',
      '  bind :8081',
      '  default_backend app',
      'backend app',
      '  http-reuse always',
      // The request headers the edge sets (Caddy sets X-Forwarded-For/-Proto/-Host by itself): each one is work
      // for the backend's parser too, so a proxy that sends fewer would look faster for the wrong reason.
      '  option forwardfor',
      '  http-request set-header X-Real-IP %[src]',
      '  http-request set-header X-Forwarded-Proto http',
      '  http-request set-header X-Forwarded-Host %[req.hdr(host)]',
      '  http-request set-header X-Forwarded-Port %[dst_port]',
      `  server app1 ${backend.address}:80`,
    ].join('\n');
    await createService({
      name: HAPROXY,
      image: IMAGE,
      extra: ['--entrypoint', 'sh'],
      args: [
        '-c',
        `printf '%s\\n' '${haproxyConfig.split('\n').join("' '")}' > /tmp/haproxy.cfg && exec haproxy -f /tmp/haproxy.cfg`,
      ],
    });
    await createBenchEdge(EDGE_COUNTING, benchEdgeBundle(backend.address, true));
    await createBenchEdge(EDGE_NOT_COUNTING, benchEdgeBundle(backend.address, false));
    const edge = await runningTask(`${STACK}_edge`);
    const caddy = await runningTask(CADDY);
    const haproxy = await runningTask(HAPROXY);
    const counting = await runningTask(EDGE_COUNTING);
    const notCounting = await runningTask(EDGE_NOT_COUNTING);
    const countingTarget: Target = {
      path: COUNTING_ON,
      url: `http://${counting.address}:80/`,
      container: counting.container,
    };
    const notCountingTarget: Target = {
      path: COUNTING_OFF,
      url: `http://${notCounting.address}:80/`,
      container: notCounting.container,
    };
    const targets: Target[] = [
      { path: 'direct', url: `http://${backend.address}:80/` },
      { path: 'swarmgate edge', url: `http://${edge.address}:80/`, container: edge.container },
      countingTarget,
      notCountingTarget,
      { path: 'caddy', url: `http://${caddy.address}:8080/`, container: caddy.container },
      { path: 'haproxy', url: `http://${haproxy.address}:8081/`, container: haproxy.container },
    ];
    for (const target of targets.filter((one) => one.container))
      await waitFor(
        `${target.path} to route the backend`,
        async () => ((await wrkOnce(target.url)) ? true : undefined),
        { timeoutMs: 60_000, intervalMs: 1000 },
      );
    for (const target of targets) added.set(target.path, await headersAdded(target.url));
    // The Node backend gets faster for a while as V8 optimises it (direct went 13k → 20k r/s over three rounds
    // in a trial): one unrecorded round first, so the rounds compare a warm backend.
    if (!SMOKE) for (const target of targets) await wrk(target.url);
    for (let round = 0; round < ROUNDS; round++) {
      // The counting pair swaps places every round: neither always runs right after the lab's edge.
      const order =
        round % 2 === 0
          ? targets
          : targets.map((target) =>
              target === countingTarget
                ? notCountingTarget
                : target === notCountingTarget
                  ? countingTarget
                  : target,
            );
      for (const target of order) {
        const result = await measure(target, backend.container);
        byPath.set(target.path, [...(byPath.get(target.path) ?? []), result]);
        await sleep(500);
      }
    }
  } finally {
    for (const name of [BACKEND, CADDY, HAPROXY, EDGE_COUNTING, EDGE_NOT_COUNTING]) await removeService(name);
  }
  return { byPath, headersAdded: added };
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

function countingCost(byPath: Map<string, RoundResult[]>): CountingCost {
  const on = byPath.get(COUNTING_ON) ?? [];
  const off = byPath.get(COUNTING_OFF) ?? [];
  const percent = on.map(
    (result, round) => 100 * (1 - result.requestsPerSecond / (off[round]?.requestsPerSecond ?? NaN)),
  );
  const cpu = on.map(
    (result, round) => result.proxyCpuUsPerRequest - (off[round]?.proxyCpuUsPerRequest ?? NaN),
  );
  const spread = (values: number[]): { median: number; min: number; max: number; rounds: number[] } => ({
    median: summary(values).p50,
    min: Math.min(...values),
    max: Math.max(...values),
    rounds: values,
  });
  const share = on.map((result, round) => (100 * (cpu[round] ?? NaN)) / result.proxyCpuUsPerRequest);
  return { throughputPercent: spread(percent), cpuUsPerRequest: spread(cpu), cpuPercent: spread(share) };
}

function rowsOf({ byPath, headersAdded }: ModeResult): Record<string, unknown>[] {
  const direct = byPath.get('direct') ?? [];
  return [...byPath.entries()].map(([path, results]) => {
    const ratios = results.map(
      (result, round) => result.requestsPerSecond / (direct[round]?.requestsPerSecond ?? NaN),
    );
    return {
      path,
      'requests/s (median)': Math.round(summary(results.map((result) => result.requestsPerSecond)).p50),
      'ratio to direct (median of rounds)': summary(ratios).p50,
      'ratio min': Math.min(...ratios),
      'ratio max': summary(ratios).max,
      'proxy CPU µs/request': summary(results.map((result) => result.proxyCpuUsPerRequest)).p50,
      'backend CPU µs/request': summary(results.map((result) => result.backendCpuUsPerRequest)).p50,
      'p50 ms': summary(results.map((result) => result.p50Ms)).p50,
      'p99 ms': summary(results.map((result) => result.p99Ms)).p50,
      'non-2xx + errors': results.reduce((sum, result) => sum + result.non2xx + result.errors, 0),
      'headers added': headersAdded.get(path) ?? '',
    };
  });
}

// Like for like: the Caddy and HAProxy set-ups write no access log, so the edge runs without one here too.
process.env.SWARMGATE_ACCESS_LOG = 'false';
await deployStack();
const results: {
  mode: string;
  rows: Record<string, unknown>[];
  countingCost: CountingCost;
  raw: Record<string, RoundResult[]>;
}[] = [];
try {
  for (const name of [BACKEND, CADDY, HAPROXY, EDGE_COUNTING, EDGE_NOT_COUNTING]) await removeService(name);
  for (const mode of MODES) {
    const measured = await measureMode(mode);
    results.push({
      mode: mode.name,
      rows: rowsOf(measured),
      countingCost: countingCost(measured.byPath),
      raw: Object.fromEntries(measured.byPath),
    });
  }
} finally {
  // Leave the stack as the other benchmarks and tests expect it: access log on.
  delete process.env.SWARMGATE_ACCESS_LOG;
  await deployStack();
}

for (const { mode, rows, countingCost: cost } of results) {
  printTable(
    `Throughput, ${mode}: wrk -t2 -c${CONNECTIONS}, ${SECONDS} s × ${ROUNDS} rounds, alternating`,
    rows,
  );
  const { throughputPercent: percent, cpuUsPerRequest: cpu, cpuPercent: share } = cost;
  const range = (spread: { median: number; min: number; max: number }): string =>
    `${spread.median.toFixed(1)} (rounds ${spread.min.toFixed(1)} .. ${spread.max.toFixed(1)})`;
  console.log(
    `counting costs ${range(percent)} % of edge throughput, ${range(cpu)} µs CPU per request = ` +
      `${range(share)} % of the edge's CPU; target ≤ 3 %`,
  );
}
writeResult('throughput', {
  connections: CONNECTIONS,
  seconds: SECONDS,
  rounds: ROUNDS,
  backendCpus: BACKEND_CPUS,
  modes: results,
});

// What an `encrypted` overlay costs on the hop between two nodes (issue 11). On one node VXLAN traffic never leaves
// the host, so this runs on the nested multi-node lab (scripts/lab-nodes.sh): two attachable overlays of its own,
// one plain and one created with `--opt encrypted` (IPsec ESP between the nodes), one backend task on node2 attached
// to both, and a load generator in a container on node1 on each network in turn.
//
// First it checks that IPsec works between the nodes at all: a request node1 → node2 over each network, and the
// ESP security associations (`ip xfrm state`) inside both nodes. Docker creates an encrypted network even when the
// kernel cannot do ESP (it logs "Failed Adding ... SA" and installs the xfrm policies and the iptables rule that drops
// clear VXLAN for that network anyway), so without SAs the encrypted network carries nothing between nodes. That
// is then the finding: it is written to the result file and the run stops (exit 2) without measuring.
//
// Then interleaved rounds (plain, encrypted, plain, encrypted, ...) so the machine's noise hits both: requests/s,
// p50/p99, and CPU per request of the backend (its container's cgroup on node2), of the load generator (its own
// process CPU on node1), and of the whole machine from /proc/stat (where the kernel's VXLAN and ESP work lands,
// in softirq, charged to no container; noisy on a shared machine, but interleaved). `--control` makes the second
// network plain too (an A/A run): the spread it shows is the smallest difference this machine can tell apart.
//
//   flock /tmp/swarmgate-daemon.lock timeout 600 npm run bench:overlay-encryption [-- --rounds 3 --seconds 8]
//
// Needs at least two lab nodes up (it neither starts nor stops them) with swarmgate-test-backend:dev loaded (lab-nodes.sh
// loads it). It sends traffic only from its own container to its own backend task, on its own networks, and
// removes what it created (services and networks labelled sg-bench-enc=1) at the start and at the end, also on
// failure. The stack and everything else in the nested swarm are left alone.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import { gunzipSync } from 'node:zlib';
import {
  BACKEND_IMAGE,
  inNode,
  labNodes,
  manager,
  shInNode,
  waitFor,
} from '../test/e2e-multinode/support/nodes.ts';
import { printTable, sleep, SMOKE, summary, writeResult } from './support.ts';

function flag(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? (process.argv[i + 1] ?? fallback) : fallback;
}

const ROUNDS = SMOKE ? 1 : Number(flag('rounds', '3'));
const SECONDS = SMOKE ? 2 : Number(flag('seconds', '8'));
const CONNECTIONS = Number(flag('connections', '16'));
const CONTROL = process.argv.includes('--control');
if (!(ROUNDS >= 1 && SECONDS >= 1 && CONNECTIONS >= 1))
  throw new Error('--rounds, --seconds and --connections must be numbers of at least 1');
/**
 * No round starts after this, well below the 600 s of the `timeout` the lock is taken with, so the cleanup (up to
 * ~100 s) still runs. Every Docker call has its own timeout besides.
 */
const RUN_BUDGET_MS = 420_000;
const BENCH_LABEL = 'sg-bench-enc=1';
const LAB_LABEL = 'swarmgate.lab=1';
const PREFIX = 'sg-bench-enc-';
const CLIENT_NODE = 'node1';
const SERVER_NODE = 'node2';

const suffix = randomBytes(3).toString('hex');
interface Arm {
  readonly name: 'plain' | 'encrypted';
  readonly network: string;
  readonly encrypted: boolean;
}
const ARMS: readonly Arm[] = [
  { name: 'plain', network: `${PREFIX}plain-${suffix}`, encrypted: false },
  // In a control run the second arm is plain as well: same code, same order, no encryption.
  { name: 'encrypted', network: `${PREFIX}${CONTROL ? 'control' : 'ipsec'}-${suffix}`, encrypted: !CONTROL },
];
const BACKEND = `${PREFIX}backend-${suffix}`;

function step(what: string): void {
  console.log(`[overlay-encryption ${new Date().toISOString().slice(11, 19)}] ${what}`);
}

// --- the load generator: a closed-loop keep-alive client, run by `node -e` in the backend image on node1 --------
// Not wrk: its image (swarmgate-bench:dev) is not in the nodes, and loading it would put ~0.4 GB more on every
// node's tmpfs; the backend image is there already. It costs more CPU per request than wrk would, the same in both
// arms, and reports its own. It prints one JSON line: requests, failures, latency percentiles and its CPU time.
const LOAD_SCRIPT = `
const http = require('node:http');
const [url, connections, seconds] = [process.argv[1], Number(process.argv[2]), Number(process.argv[3])];
const agent = new http.Agent({ keepAlive: true, maxSockets: connections });
const latencies = [];
let non2xx = 0, errors = 0;
const cpuStart = process.cpuUsage();
const start = process.hrtime.bigint();
const end = start + BigInt(seconds) * 1000000000n;
function once() {
  return new Promise((resolve) => {
    const sent = process.hrtime.bigint();
    const req = http.get(url, { agent, timeout: 5000 }, (res) => {
      res.resume();
      res.on('end', () => {
        if (res.statusCode >= 200 && res.statusCode < 300) latencies.push(Number(process.hrtime.bigint() - sent) / 1e6);
        else non2xx++;
        resolve();
      });
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', () => { errors++; setTimeout(resolve, 100); });
  });
}
async function worker() { while (process.hrtime.bigint() < end) await once(); }
Promise.all(Array.from({ length: connections }, worker)).then(() => {
  const elapsed = Number(process.hrtime.bigint() - start) / 1e9;
  const cpu = process.cpuUsage(cpuStart);
  latencies.sort((a, b) => a - b);
  const at = (p) => latencies.length ? latencies[Math.min(latencies.length - 1, Math.ceil(p / 100 * latencies.length) - 1)] : null;
  console.log(JSON.stringify({ requests: latencies.length, non2xx, errors, seconds: elapsed,
    p50Ms: at(50), p99Ms: at(99), cpuUs: cpu.user + cpu.system }));
  agent.destroy();
});
`;

interface LoadResult {
  readonly requests: number;
  readonly non2xx: number;
  readonly errors: number;
  readonly seconds: number;
  readonly p50Ms: number | null;
  readonly p99Ms: number | null;
  readonly cpuUs: number;
}

async function runLoad(
  network: string,
  url: string,
  connections: number,
  seconds: number,
): Promise<LoadResult> {
  const out = await inNode(
    CLIENT_NODE,
    [
      'run',
      '--rm',
      '--network',
      network,
      '--label',
      BENCH_LABEL,
      BACKEND_IMAGE,
      'node',
      '-e',
      LOAD_SCRIPT,
      url,
      String(connections),
      String(seconds),
    ],
    { timeoutMs: (seconds + 60) * 1000 },
  );
  const line = out.split('\n').findLast((row) => row.startsWith('{'));
  if (!line) throw new Error(`the load generator on ${network} printed no result: ${out.slice(-300)}`);
  return JSON.parse(line) as LoadResult;
}

// --- CPU readings ------------------------------------------------------------------------------------------
/** CPU time of a container inside a node so far, in µs (cgroup v1 cpuacct in ns, or v2 cpu.stat in µs). */
async function containerCpuUs(node: string, container: string): Promise<number> {
  const out = await inNode(node, [
    'exec',
    container,
    'sh',
    '-c',
    'if [ -r /sys/fs/cgroup/cpuacct/cpuacct.usage ]; then echo "ns $(cat /sys/fs/cgroup/cpuacct/cpuacct.usage)"; ' +
      'else echo "us $(sed -n "s/^usage_usec //p" /sys/fs/cgroup/cpu.stat)"; fi',
  ]);
  const [unit, value = ''] = out.split(' ');
  const number = Number(value);
  if (value === '' || !Number.isFinite(number))
    throw new Error(`cannot read the CPU time of ${container}: ${out}`);
  return unit === 'ns' ? number / 1000 : number;
}

/** The whole machine's busy CPU time (all cores) and the softirq part of it, in µs, from /proc/stat. */
function machineCpuUs(): { busy: number; softirq: number } {
  const fields = (readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '')
    .trim()
    .split(/\s+/)
    .slice(1)
    .map(Number);
  // user nice system idle iowait irq softirq steal: busy = everything but idle and iowait (and steal: not ours).
  const [user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0] = fields;
  const tick = 1_000_000 / 100; // USER_HZ is 100 on Linux
  return { busy: (user + nice + system + irq + softirq) * tick, softirq: softirq * tick };
}

// --- IPsec between the nodes -------------------------------------------------------------------------------
interface XfrmState {
  /** ESP security associations in the node's network namespace (the one VXLAN leaves from). */
  readonly espStates: number;
  /** Outbound policies that require ESP for VXLAN (udp 4789) to a peer. */
  readonly espPolicies: number;
  /** Bytes the SAs have carried so far. */
  readonly bytes: number;
}

async function xfrm(node: string): Promise<XfrmState> {
  const states = await shInNode(node, 'ip -s xfrm state', 20_000);
  const policies = await shInNode(node, 'ip xfrm policy', 20_000);
  return {
    espStates: (states.match(/proto esp/g) ?? []).length,
    espPolicies: (policies.match(/proto esp/g) ?? []).length,
    bytes: [...states.matchAll(/(\d+)\(bytes\)/g)].reduce((sum, match) => sum + Number(match[1]), 0),
  };
}

/**
 * dockerd's failed SA installs since `since`, from the node container's log (dockerd's output; `docker logs` replays
 * it on stderr, which the shared `docker` helper drops, so both streams are read here). Keys are cut out.
 */
function saFailures(node: string, since: string): Promise<string[]> {
  return new Promise((resolve) => {
    execFile(
      'docker',
      ['logs', '--since', since, node],
      { timeout: 20_000, maxBuffer: 32 * 1024 * 1024 },
      (_error, stdout, stderr) =>
        resolve(
          `${stdout}\n${stderr}`
            .split('\n')
            .filter((line) => /Failed (Adding|adding).*SA/.test(line))
            .map((line) => {
              // Only what says why: which SA, between which addresses, which algorithm, and the kernel's answer.
              const match =
                /Failed [Aa]dding (\w+)\{Dst: ([^,]+), Src: ([^,]+),.*Aead: \{Name: ([^,]+),.*\}: ([^".]+)/.exec(
                  line,
                );
              return match
                ? `${node}: failed adding ${match[1]} ${match[3]} → ${match[2]} (${match[4]}): ${match[5]}`
                : `${node}: ${line.replace(/Key: 0x[0-9a-f]+/gi, 'Key: <redacted>').slice(0, 200)}`;
            }),
        ),
    );
  });
}

/**
 * The kernel options Docker's encrypted overlay needs (ESP, and AES-GCM for its rfc4106 AEAD), when the running
 * kernel publishes its config: the nested nodes share the host's kernel, so this is theirs too.
 */
function kernelIpsecConfig(): Record<string, string> {
  try {
    const config = gunzipSync(readFileSync('/proc/config.gz')).toString('utf8');
    const options = [
      'CONFIG_MODULES',
      'CONFIG_XFRM_USER',
      'CONFIG_INET_ESP',
      'CONFIG_CRYPTO_GCM',
      'CONFIG_CRYPTO_SEQIV',
    ];
    return Object.fromEntries(
      options.map((option) => [
        option,
        new RegExp(`^${option}=(.*)$`, 'm').exec(config)?.[1] ??
          (new RegExp(`^# ${option} is not set$`, 'm').test(config) ? 'not set' : 'absent'),
      ]),
    );
  } catch {
    return { config: '/proc/config.gz not readable' };
  }
}

/** One request from a fresh container on node1 to the backend's address on `network`: the status, or the error. */
async function probe(network: string, address: string): Promise<string> {
  const script =
    `const r = require('node:http').get('http://${address}/', { timeout: 5000 }, (res) => { res.resume(); ` +
    `res.on('end', () => console.log('status ' + res.statusCode)); });` +
    `r.on('timeout', () => { console.log('timeout after 5 s'); r.destroy(); });` +
    `r.on('error', (error) => { if (!r.destroyed || error.message !== 'socket hang up') console.log('error ' + error.message); });`;
  const out = await inNode(
    CLIENT_NODE,
    ['run', '--rm', '--network', network, '--label', BENCH_LABEL, BACKEND_IMAGE, 'node', '-e', script],
    { timeoutMs: 60_000 },
  );
  return out.split('\n').find(Boolean) ?? 'no answer';
}

// --- objects of this benchmark -----------------------------------------------------------------------------
async function removeOurs(node: string): Promise<void> {
  const services = (await inNode(node, ['service', 'ls', '-q', '--filter', `label=${BENCH_LABEL}`]))
    .split('\n')
    .filter(Boolean);
  if (services.length > 0) await inNode(node, ['service', 'rm', ...services]);
  const networks = async (on: string): Promise<string[]> =>
    (await inNode(on, ['network', 'ls', '-q', '--filter', `label=${BENCH_LABEL}`]))
      .split('\n')
      .filter(Boolean);
  // A network is removable once the tasks on it are gone on every node: retried until then. The backend's node
  // lists it a few seconds longer (until its task's container is gone): waited for too, so the run ends clean.
  await waitFor(
    `the ${BENCH_LABEL} networks inside the nodes to be removed`,
    async () => {
      const left = await networks(node);
      if (left.length > 0) await inNode(node, ['network', 'rm', ...left]).catch(() => '');
      return (await networks(node)).length === 0 && (await networks(SERVER_NODE)).length === 0
        ? true
        : undefined;
    },
    { timeoutMs: 90_000, intervalMs: 2000 },
  );
}

interface Task {
  readonly container: string;
  readonly addresses: Map<string, string>;
}

async function backendTask(node: string): Promise<Task> {
  return waitFor(
    `${BACKEND}'s task to run healthy on ${SERVER_NODE}`,
    async () => {
      const ids = (
        await inNode(node, [
          'service',
          'ps',
          '-q',
          '--no-trunc',
          '--filter',
          'desired-state=running',
          BACKEND,
        ])
      )
        .split('\n')
        .filter(Boolean);
      for (const id of ids) {
        const [task] = JSON.parse(await inNode(node, ['inspect', id])) as {
          Status: { State: string; ContainerStatus?: { ContainerID?: string } };
          NetworksAttachments?: { Network: { Spec: { Name: string } }; Addresses: string[] }[];
        }[];
        const container = task?.Status.ContainerStatus?.ContainerID;
        if (task?.Status.State !== 'running' || !container) continue;
        const addresses = new Map(
          (task.NetworksAttachments ?? []).map((attachment) => [
            attachment.Network.Spec.Name,
            (attachment.Addresses[0] ?? '').split('/')[0] ?? '',
          ]),
        );
        if (ARMS.every((arm) => addresses.get(arm.network))) return { container, addresses };
      }
      return undefined;
    },
    { timeoutMs: 120_000, intervalMs: 1000 },
  );
}

// --- the run -----------------------------------------------------------------------------------------------
interface RoundResult extends LoadResult {
  readonly arm: string;
  readonly round: number;
  readonly requestsPerSecond: number;
  readonly backendCpuUsPerRequest: number;
  readonly loadCpuUsPerRequest: number;
  readonly machineCpuUsPerRequest: number;
  readonly machineSoftirqUsPerRequest: number;
  readonly espBytes: number;
  readonly load1: number;
}

async function measure(arm: Arm, round: number, task: Task): Promise<RoundResult> {
  const address = task.addresses.get(arm.network) ?? '';
  const [xfrmBefore, backendBefore] = await Promise.all([
    xfrm(SERVER_NODE),
    containerCpuUs(SERVER_NODE, task.container),
  ]);
  const machineBefore = machineCpuUs();
  const result = await runLoad(arm.network, `http://${address}/`, CONNECTIONS, SECONDS);
  const machineAfter = machineCpuUs();
  const [xfrmAfter, backendAfter] = await Promise.all([
    xfrm(SERVER_NODE),
    containerCpuUs(SERVER_NODE, task.container),
  ]);
  const requests = Math.max(1, result.requests);
  return {
    ...result,
    arm: arm.name,
    round,
    requestsPerSecond: result.requests / result.seconds,
    backendCpuUsPerRequest: (backendAfter - backendBefore) / requests,
    loadCpuUsPerRequest: result.cpuUs / requests,
    // Includes the load generator's container start and the readings (the same for both arms).
    machineCpuUsPerRequest: (machineAfter.busy - machineBefore.busy) / requests,
    machineSoftirqUsPerRequest: (machineAfter.softirq - machineBefore.softirq) / requests,
    espBytes: xfrmAfter.bytes - xfrmBefore.bytes,
    load1: os.loadavg()[0] ?? NaN,
  };
}

function rowsOf(results: readonly RoundResult[]): Record<string, unknown>[] {
  const plain = results.filter((result) => result.arm === 'plain');
  return ARMS.map((arm) => {
    const mine = results.filter((result) => result.arm === arm.name);
    const median = (pick: (result: RoundResult) => number): number => summary(mine.map(pick)).p50;
    const ratios = mine.map(
      (result) =>
        result.requestsPerSecond /
        (plain.find((other) => other.round === result.round)?.requestsPerSecond ?? NaN),
    );
    return {
      network: `${arm.name}${arm.encrypted ? ' (IPsec)' : CONTROL && arm.name === 'encrypted' ? ' (control: plain)' : ''}`,
      'requests/s (median)': Math.round(median((result) => result.requestsPerSecond)),
      'ratio to plain (median of rounds)': summary(ratios).p50,
      'ratio min': Math.min(...ratios),
      'ratio max': summary(ratios).max,
      'p50 ms': median((result) => result.p50Ms ?? NaN),
      'p99 ms': median((result) => result.p99Ms ?? NaN),
      'backend CPU µs/req (node2)': median((result) => result.backendCpuUsPerRequest),
      'load gen CPU µs/req (node1)': median((result) => result.loadCpuUsPerRequest),
      'machine CPU µs/req': median((result) => result.machineCpuUsPerRequest),
      'softirq µs/req': median((result) => result.machineSoftirqUsPerRequest),
      'ESP bytes/req': median((result) => result.espBytes / Math.max(1, result.requests)),
      'non-2xx + errors': mine.reduce((sum, result) => sum + result.non2xx + result.errors, 0),
    };
  });
}

const started = Date.now();
const nodes = await labNodes();
for (const name of [CLIENT_NODE, SERVER_NODE])
  if (!nodes.some((node) => node.name === name))
    throw new Error(
      `lab node ${name} is not running: \`scripts/lab-nodes.sh up 3\` first (needs \`npm run lab -- up\`)`,
    );
const leader = await manager();
const since = new Date(Date.now() - 1000).toISOString();
let exitCode = 0;

try {
  step('removing leftovers of earlier runs (label sg-bench-enc=1 only)');
  await removeOurs(leader);
  for (const arm of ARMS) {
    step(`creating network ${arm.network}${arm.encrypted ? ' (--opt encrypted)' : ''}`);
    await inNode(leader, [
      'network',
      'create',
      '--driver',
      'overlay',
      '--attachable',
      ...(arm.encrypted ? ['--opt', 'encrypted'] : []),
      '--label',
      LAB_LABEL,
      '--label',
      BENCH_LABEL,
      arm.network,
    ]);
  }
  step(`creating ${BACKEND} on ${SERVER_NODE}, attached to both networks`);
  await inNode(leader, [
    'service',
    'create',
    '--detach',
    '--no-resolve-image',
    '--name',
    BACKEND,
    '--label',
    LAB_LABEL,
    '--label',
    BENCH_LABEL,
    '--constraint',
    `node.hostname==${SERVER_NODE}`,
    ...ARMS.flatMap((arm) => ['--network', arm.network]),
    // So Swarm's "running" means the app listens (a Node process needs a moment on busy cores).
    '--health-cmd',
    'bash -c "exec 3<>/dev/tcp/127.0.0.1/80"',
    '--health-interval',
    '2s',
    '--health-retries',
    '1',
    '--health-timeout',
    '2s',
    BACKEND_IMAGE,
  ]);
  const task = await backendTask(leader);

  step(`checking that each network carries a request ${CLIENT_NODE} → ${SERVER_NODE}, and the ESP SAs`);
  const reached: Record<string, string> = {};
  for (const arm of ARMS) reached[arm.name] = await probe(arm.network, task.addresses.get(arm.network) ?? '');
  const xfrmClient = await xfrm(CLIENT_NODE);
  const xfrmServer = await xfrm(SERVER_NODE);
  const failures = [...(await saFailures(CLIENT_NODE, since)), ...(await saFailures(SERVER_NODE, since))];
  const ipsec = {
    plainReached: reached.plain ?? '',
    encryptedReached: reached.encrypted ?? '',
    [CLIENT_NODE]: xfrmClient,
    [SERVER_NODE]: xfrmServer,
    dockerdSaFailures: failures.length,
    dockerdSaFailureSample: failures.slice(0, 2),
    kernel: readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim(),
    kernelConfig: kernelIpsecConfig(),
  };
  console.log(JSON.stringify(ipsec, null, 2));
  const espWorks =
    CONTROL ||
    (/^status 200/.test(ipsec.encryptedReached) && xfrmClient.espStates > 0 && xfrmServer.espStates > 0);
  if (!/^status 200/.test(ipsec.plainReached))
    throw new Error(
      `the plain overlay carries nothing ${CLIENT_NODE} → ${SERVER_NODE}: ${ipsec.plainReached}`,
    );

  if (!espWorks) {
    console.log(
      `\nIPsec does not work between the nested nodes: the encrypted network was created, but ` +
        `${ipsec.encryptedReached} over it, ${xfrmClient.espStates}/${xfrmServer.espStates} ESP SAs on ` +
        `${CLIENT_NODE}/${SERVER_NODE} (against ${xfrmClient.espPolicies}/${xfrmServer.espPolicies} xfrm policies ` +
        `that require them), dockerd logged ${failures.length} failed SA installs. Nothing to compare: not measured.`,
    );
    writeResult('overlay-encryption', { measured: false, control: CONTROL, ipsec });
    exitCode = 2;
  } else {
    const results: RoundResult[] = [];
    // One unrecorded run per arm: V8 warms the backend and the first connections set up the VXLAN/ESP paths.
    if (!SMOKE)
      for (const arm of ARMS)
        await runLoad(arm.network, `http://${task.addresses.get(arm.network) ?? ''}/`, CONNECTIONS, 3);
    for (let round = 1; round <= ROUNDS; round++) {
      if (Date.now() - started > RUN_BUDGET_MS)
        throw new Error(`over the run's ${RUN_BUDGET_MS / 1000} s budget before round ${round}: stopping`);
      // Alternating which arm goes first cancels a drift within a round as well.
      const order = round % 2 === 1 ? ARMS : [...ARMS].reverse();
      for (const arm of order) {
        step(`round ${round}/${ROUNDS}: ${arm.name} (${SECONDS} s, ${CONNECTIONS} connections)`);
        results.push(await measure(arm, round, task));
        await sleep(500);
      }
    }
    const rows = rowsOf(results);
    printTable(
      `Overlay ${CONTROL ? 'control (plain vs plain)' : 'plain vs encrypted'}, ${CLIENT_NODE} → ${SERVER_NODE}: ` +
        `${CONNECTIONS} keep-alive connections, ${SECONDS} s × ${ROUNDS} rounds each, interleaved`,
      rows,
    );
    writeResult('overlay-encryption', {
      measured: true,
      control: CONTROL,
      connections: CONNECTIONS,
      seconds: SECONDS,
      rounds: ROUNDS,
      ipsec,
      rows,
      raw: results,
    });
  }
} finally {
  step("removing this run's service and networks");
  await removeOurs(leader);
  step(`done in ${Math.round((Date.now() - started) / 1000)} s`);
}
process.exitCode = process.exitCode || exitCode;

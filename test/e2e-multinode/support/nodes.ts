// Helpers for the multi-node e2e suite: the nodes are containers scripts/lab-nodes.sh made, each running its own
// dockerd in one Swarm. Docker commands run inside a node (`docker exec nodeN docker ...`); HTTP goes only to the
// nodes' addresses on the lab's bridge network, where each node's edge publishes port 80 in host mode.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { docker, REPO_ROOT, sleep, waitFor } from '../../e2e/support/lab.ts';
import type { ControllerStatus } from '../../e2e/support/lab.ts';

export { docker, sleep, waitFor };
export type { ControllerStatus };

export const STACK = 'swarmgate';
export const NODE_LABEL = 'swarmgate.lab.role=node';
export const NODE_NETWORK = process.env.SWARMGATE_LAB_NODE_NETWORK ?? 'swarmgate-lab-nodes';
export const BACKEND_IMAGE = process.env.SWARMGATE_BACKEND_IMAGE ?? 'swarmgate-test-backend:dev';
/** The node the suite kills: the controller is kept off it (stack.multinode.yml), so losing it is a worker's loss. */
export const SPARE_NODE = process.env.SWARMGATE_LAB_SPARE_NODE ?? 'node3';
export const EDGE_PORT = Number(process.env.SWARMGATE_LAB_EDGE_PORT ?? 80);
/** Marks every service a test creates inside the nested swarm. */
export const E2E_LABEL = 'sg-e2e=1';
const STACK_DIR = '/srv/swarmgate';

export interface LabNode {
  readonly name: string;
  readonly ip: string;
}

/** The lab's node containers that are running, in order (node1, node2, ...), with their bridge addresses. */
export async function labNodes(): Promise<LabNode[]> {
  const names = (
    await docker([
      'ps',
      '--filter',
      'label=swarmgate.lab=1',
      '--filter',
      `label=${NODE_LABEL}`,
      '--format',
      '{{.Names}}',
    ])
  )
    .split('\n')
    .filter(Boolean)
    .sort((a, b) => a.localeCompare(b, 'en', { numeric: true }));
  const nodes: LabNode[] = [];
  for (const name of names) nodes.push({ name, ip: await nodeIp(name) });
  return nodes;
}

export async function nodeIp(node: string): Promise<string> {
  const ip = await docker([
    'inspect',
    '--format',
    `{{(index .NetworkSettings.Networks "${NODE_NETWORK}").IPAddress}}`,
    node,
  ]);
  if (!/^\d+\.\d+\.\d+\.\d+$/.test(ip))
    throw new Error(`${node} has no address on ${NODE_NETWORK} (got "${ip}")`);
  return ip;
}

/** `docker ...` inside a node, against that node's own dockerd. */
export function inNode(
  node: string,
  args: readonly string[],
  options: { input?: string; timeoutMs?: number; env?: Record<string, string> } = {},
): Promise<string> {
  const envArgs = Object.entries(options.env ?? {}).flatMap(([key, value]) => ['-e', `${key}=${value}`]);
  const interactive = options.input === undefined ? [] : ['-i'];
  return docker(['exec', ...interactive, ...envArgs, node, 'docker', ...args], options);
}

/**
 * The lines of a container's whole log in a node that match `pattern` (grep -E), '' when none. Whole, not a tail:
 * an edge's access log under load scrolls a start-up line out of a few hundred lines within seconds.
 */
export function logLinesInNode(node: string, container: string, pattern: string): Promise<string> {
  if (pattern.includes("'") || !/^[\w.-]+$/.test(container))
    throw new Error(`cannot quote ${container} / ${pattern}`);
  return shInNode(node, `docker logs ${container} 2>&1 | grep -E '${pattern}' || true`);
}

/** Any command inside a node (not docker). */
export function shInNode(node: string, script: string, timeoutMs = 60_000): Promise<string> {
  return docker(['exec', node, 'sh', '-c', script], { timeoutMs });
}

/** A node that manages the swarm now (node1 unless it was lost), for service and stack commands. */
export async function manager(): Promise<string> {
  for (const node of await labNodes()) {
    const state = await inNode(node.name, ['info', '--format', '{{.Swarm.ControlAvailable}}'], {
      timeoutMs: 10_000,
    }).catch(() => '');
    if (state === 'true') return node.name;
  }
  throw new Error('no lab node manages a swarm: run `npm run lab -- up --nodes 3` first');
}

/** The Swarm's view of its nodes: hostname → status (Ready, Down, Unknown). */
export async function swarmNodes(): Promise<
  Map<string, { id: string; status: string; availability: string }>
> {
  const rows = await inNode(await manager(), [
    'node',
    'ls',
    '--format',
    '{{.ID}} {{.Hostname}} {{.Status}} {{.Availability}}',
  ]);
  const result = new Map<string, { id: string; status: string; availability: string }>();
  for (const row of rows.split('\n').filter(Boolean)) {
    const [id = '', hostname = '', status = '', availability = ''] = row.split(' ');
    result.set(hostname, { id, status, availability });
  }
  return result;
}

// --- the stack ---------------------------------------------------------------------------------------------
/** Secrets docker-stack.yml declares `external: true` (read at run time: the list grows with the product). */
export function externalSecrets(stackFile = path.join(REPO_ROOT, 'docker-stack.yml')): string[] {
  const lines = readFileSync(stackFile, 'utf8').split('\n');
  const names: string[] = [];
  let inSecrets = false;
  let current: string | undefined;
  for (const line of lines) {
    if (/^\S/.test(line)) {
      inSecrets = /^secrets:\s*$/.test(line);
      current = undefined;
      continue;
    }
    if (!inSecrets) continue;
    const entry = /^ {2}([A-Za-z0-9_.-]+):\s*$/.exec(line);
    if (entry) current = entry[1];
    else if (current && /^\s+external:\s*true\s*$/.test(line)) names.push(current);
  }
  return names;
}

/**
 * Creates the stack's external secrets that the nested swarm lacks. Names sharing a prefix with `_key` and `_cert`
 * (or `_crt`) endings are a TLS pair for the controller's names, signed by a lab CA when a `<prefix>_ca` is declared
 * too (self-signed otherwise); every other secret is 32 random bytes in hex, as the stack file's header asks for the
 * token and the state key.
 */
export async function ensureSecrets(node: string, names: readonly string[]): Promise<string[]> {
  const existing = new Set(
    (await inNode(node, ['secret', 'ls', '--format', '{{.Name}}'])).split('\n').filter(Boolean),
  );
  const created: string[] = [];
  const pairs = new Map<string, { key?: string; cert?: string; ca?: string }>();
  for (const name of names) {
    const part = /^(.*)_(key|cert|crt|ca)$/.exec(name);
    const prefix = part?.[1];
    if (prefix && names.some((other) => /_(key)$/.test(other) && other.startsWith(`${prefix}_`))) {
      if (names.some((other) => /_(cert|crt)$/.test(other) && other.startsWith(`${prefix}_`))) {
        const entry = pairs.get(prefix) ?? {};
        if (part[2] === 'key') entry.key = name;
        else if (part[2] === 'ca') entry.ca = name;
        else entry.cert = name;
        pairs.set(prefix, entry);
        continue;
      }
    }
    if (existing.has(name)) continue;
    await inNode(node, ['secret', 'create', '--label', E2E_LABEL, name, '-'], {
      input: randomBytes(32).toString('hex'),
    });
    created.push(name);
  }
  for (const [prefix, pair] of pairs) {
    const members = [pair.key, pair.cert, pair.ca].filter((name): name is string => name !== undefined);
    if (members.every((name) => existing.has(name))) continue;
    const dir = `${STACK_DIR}/secrets/${prefix}`;
    const san =
      'subjectAltName=DNS:swarmgate-controller,DNS:controller,DNS:tasks.controller,DNS:localhost,IP:127.0.0.1';
    const ec = '-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30';
    await shInNode(
      node,
      `set -e; rm -rf ${dir}; mkdir -p ${dir}; cd ${dir}; ` +
        (pair.ca
          ? `openssl req -x509 ${ec} -subj /CN=swarmgate-lab-ca -keyout ca.key -out ca.pem 2>/dev/null; ` +
            `openssl req ${ec} -subj /CN=swarmgate-controller -keyout key.pem -out cert.csr 2>/dev/null; ` +
            `printf '%s\\n' '${san}' >san.ext; ` +
            'openssl x509 -req -in cert.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 -extfile san.ext -out cert.pem 2>/dev/null'
          : `openssl req -x509 ${ec} -subj /CN=swarmgate-controller -addext ${san} -keyout key.pem -out cert.pem 2>/dev/null`),
      30_000,
    );
    const files: [string | undefined, string][] = [
      [pair.key, 'key.pem'],
      [pair.cert, 'cert.pem'],
      [pair.ca, 'ca.pem'],
    ];
    for (const [name, file] of files) {
      if (!name) continue;
      await inNode(node, ['secret', 'rm', name]).catch(() => '');
      await inNode(node, ['secret', 'create', '--label', E2E_LABEL, name, `${dir}/${file}`]);
      created.push(name);
    }
  }
  return created;
}

/**
 * Deploys the repository's docker-stack.yml (with the suite's override merged over it) inside a manager node, and
 * waits until every node's edge answers 503 for an unknown host and the controller sees every edge in sync.
 */
export async function deployStack(): Promise<void> {
  const node = await manager();
  const nodes = await labNodes();
  await shInNode(node, `mkdir -p ${STACK_DIR}`);
  await docker(['cp', path.join(REPO_ROOT, 'docker-stack.yml'), `${node}:${STACK_DIR}/docker-stack.yml`]);
  await docker([
    'cp',
    path.join(REPO_ROOT, 'test', 'e2e-multinode', 'stack.multinode.yml'),
    `${node}:${STACK_DIR}/stack.multinode.yml`,
  ]);
  await ensureSecrets(node, externalSecrets());
  await inNode(
    node,
    [
      'stack',
      'deploy',
      '--resolve-image',
      'never',
      '-c',
      `${STACK_DIR}/docker-stack.yml`,
      '-c',
      `${STACK_DIR}/stack.multinode.yml`,
      STACK,
    ],
    { env: { SWARMGATE_LAB_SPARE_NODE: SPARE_NODE } },
  );
  await waitForRunning(`${STACK}_controller`, 1);
  await waitForRunning(`${STACK}_edge`, nodes.length);
  for (const { name, ip } of nodes) {
    await waitFor(
      `the edge on ${name} (${ip}:${EDGE_PORT}) to answer 503 for an unknown host`,
      async () => ((await request(ip, 'unknown.invalid')).status === 503 ? true : undefined),
      { timeoutMs: 120_000, intervalMs: 500 },
    );
  }
  await edgesInSync(nodes.length);
}

export async function removeStack(): Promise<void> {
  const node = await manager();
  const services = await inNode(node, ['service', 'ls', '-q', '--filter', `label=${E2E_LABEL}`]);
  if (services) await inNode(node, ['service', 'rm', ...services.split('\n')]);
  await inNode(node, ['stack', 'rm', STACK]).catch(() => '');
  await waitFor(
    'the stack services and network inside the nodes to be gone',
    async () => {
      const left = await inNode(node, [
        'network',
        'ls',
        '-q',
        '--filter',
        `label=com.docker.stack.namespace=${STACK}`,
      ]);
      const services = await inNode(node, [
        'service',
        'ls',
        '-q',
        '--filter',
        `label=com.docker.stack.namespace=${STACK}`,
      ]);
      return left === '' && services === '' ? true : undefined;
    },
    { timeoutMs: 90_000, intervalMs: 500 },
  );
}

/** The overlay network the stack made (its name may be parametrised in docker-stack.yml): apps join it. */
export async function stackNetwork(): Promise<string> {
  const names = await inNode(await manager(), [
    'network',
    'ls',
    '--filter',
    `label=com.docker.stack.namespace=${STACK}`,
    '--filter',
    'driver=overlay',
    '--format',
    '{{.Name}}',
  ]);
  const name = names.split('\n').find(Boolean);
  if (!name) throw new Error(`the ${STACK} stack has no overlay network inside the nodes`);
  return name;
}

// --- services and tasks ------------------------------------------------------------------------------------
export interface TaskRow {
  /** As the backend reports it: TASK_NAME={{.Task.Name}}, i.e. `<service>.<slot>.<task id>`. */
  readonly name: string;
  readonly node: string;
  readonly state: string;
}

/** Tasks Swarm wants running, with the node each is on and its current state ("Running 3 seconds ago"). */
export async function runningTasks(service: string): Promise<TaskRow[]> {
  const rows = await inNode(await manager(), [
    'service',
    'ps',
    '--no-trunc',
    '--filter',
    'desired-state=running',
    '--format',
    '{{.Name}} {{.ID}} {{.Node}} {{.CurrentState}}',
    service,
  ]);
  return rows
    .split('\n')
    .filter(Boolean)
    .map((row) => {
      const [name = '', id = '', node = '', ...state] = row.split(' ');
      return { name: `${name}.${id}`, node, state: state.join(' ') };
    });
}

export async function waitForRunning(
  service: string,
  replicas: number,
  timeoutMs = 180_000,
): Promise<TaskRow[]> {
  return waitFor(
    `${service} to have ${replicas} running task(s) inside the nodes`,
    async () => {
      const tasks = await runningTasks(service);
      const running = tasks.filter((task) => task.state.startsWith('Running'));
      return running.length === replicas && tasks.length === replicas ? running : undefined;
    },
    { timeoutMs, intervalMs: 500 },
  );
}

export interface ServiceOptions {
  readonly name: string;
  readonly host: string;
  readonly replicas: number;
  readonly extra?: readonly string[];
}

/** A test backend service routed by VIRTUAL_HOST, on the stack's network; waits for its tasks to run. */
export async function createService(options: ServiceOptions): Promise<TaskRow[]> {
  const network = await stackNetwork();
  await inNode(await manager(), [
    'service',
    'create',
    '--detach',
    '--no-resolve-image',
    '--quiet',
    '--name',
    options.name,
    '--label',
    E2E_LABEL,
    '--label',
    `VIRTUAL_HOST=${options.host}`,
    '--env',
    'TASK_NAME={{.Task.Name}}',
    '--stop-grace-period',
    '5s',
    '--network',
    network,
    '--replicas',
    String(options.replicas),
    ...(options.extra ?? []),
    BACKEND_IMAGE,
  ]);
  return waitForRunning(options.name, options.replicas);
}

export async function removeService(name: string): Promise<void> {
  await inNode(await manager(), ['service', 'rm', name]).catch(() => '');
}

export async function scale(name: string, replicas: number): Promise<TaskRow[]> {
  await inNode(await manager(), ['service', 'scale', '--detach', `${name}=${replicas}`]);
  return waitForRunning(name, replicas);
}

export function uniqueName(prefix: string): string {
  return `${prefix}-${randomBytes(3).toString('hex')}`;
}

// --- the controller ----------------------------------------------------------------------------------------
/** Which node runs the controller's task now. */
export async function controllerNode(): Promise<string> {
  const tasks = await runningTasks(`${STACK}_controller`);
  const running = tasks.find((task) => task.state.startsWith('Running'));
  if (!running) throw new Error('no running controller task');
  return running.node;
}

/** The node running the controller and its running container's id there. */
export async function controllerContainer(): Promise<{ node: string; container: string }> {
  const node = await controllerNode();
  const container = (
    await inNode(node, ['ps', '-q', '--filter', `name=${STACK}_controller`, '--filter', 'status=running'])
  ).split('\n')[0];
  if (!container) throw new Error(`no running controller container on ${node}`);
  return { node, container };
}

/** The controller's status, asked inside its own container as an operator would (it listens on the overlay). */
export async function controllerStatus(): Promise<ControllerStatus> {
  const { node, container } = await controllerContainer();
  return JSON.parse(
    await docker(['exec', node, 'docker', 'exec', container, 'swarmgate', 'status', '--json']),
  ) as ControllerStatus;
}

/**
 * The controller's Prometheus text from inside its container (curl is in the image for the health check; the admin
 * token is its own secret; -k: loopback inside the container, the name in its certificate is the service's).
 */
export async function controllerMetrics(): Promise<string> {
  const { node, container } = await controllerContainer();
  return docker([
    'exec',
    node,
    'docker',
    'exec',
    container,
    'sh',
    '-c',
    'curl -fsS -k -m 10 -H "authorization: Bearer $(cat /run/secrets/swarmgate_token)" https://127.0.0.1:8443/metrics',
  ]);
}

export interface TaskTimes extends TaskRow {
  readonly id: string;
  /** Swarm's time of the task's current state (for a running task: when Swarm called it running), ms. */
  readonly since: number;
}

/** Tasks Swarm wants running, from `docker inspect` of each task: name as the backend reports it, node, since. */
export async function taskTimes(service: string): Promise<TaskTimes[]> {
  const node = await manager();
  const ids = (
    await inNode(node, ['service', 'ps', '-q', '--no-trunc', '--filter', 'desired-state=running', service])
  )
    .split('\n')
    .filter(Boolean);
  if (ids.length === 0) return [];
  const hostnames = new Map(
    (await inNode(node, ['node', 'ls', '--format', '{{.ID}} {{.Hostname}}']))
      .split('\n')
      .map((row) => row.split(' ') as [string, string]),
  );
  const tasks = JSON.parse(await inNode(node, ['inspect', ...ids])) as {
    ID: string;
    Slot?: number;
    NodeID?: string;
    Status: { State: string; Timestamp: string };
  }[];
  return tasks.map((task) => ({
    id: task.ID,
    name: `${service}.${task.Slot ?? ''}.${task.ID}`,
    node: hostnames.get(task.NodeID ?? '') ?? '',
    state: task.Status.State,
    since: Date.parse(task.Status.Timestamp),
  }));
}

/** The swarmgate CLI inside the controller's container (it reads the token from its secret), with its run time. */
export async function controllerCli(
  args: readonly string[],
  timeoutMs = 120_000,
): Promise<{ out: string; ms: number }> {
  const node = await controllerNode();
  const container = (
    await inNode(node, ['ps', '-q', '--filter', `name=${STACK}_controller`, '--filter', 'status=running'])
  ).split('\n')[0];
  if (!container) throw new Error(`no running controller container on ${node}`);
  const start = Date.now();
  const out = await docker(['exec', node, 'docker', 'exec', container, 'swarmgate', ...args], { timeoutMs });
  return { out, ms: Date.now() - start };
}

/** Waits until `count` edges polled lately and all of them applied the current bundle. */
export function edgesInSync(count: number, timeoutMs = 120_000): Promise<ControllerStatus> {
  return waitFor(
    `${count} edge(s) to report the current bundle to the controller`,
    async () => {
      const status = await controllerStatus();
      const live = status.edges.filter((edge) => Date.now() - Date.parse(edge.lastContact) < 45_000);
      return live.length === count && live.every((edge) => edge.inSync) ? status : undefined;
    },
    { timeoutMs, intervalMs: 500 },
  );
}

// --- nodes coming and going --------------------------------------------------------------------------------
/** A clean, sudden node loss: the node's container (its dockerd and every task on it) is killed. */
/**
 * A machine that dies: its network goes first, then everything on it. Cut in that order, nothing on the node can
 * close its connections (a FIN or RST from a task dying), as with power lost or a cable pulled: the edges' kept-alive
 * connections to its tasks stay open to nobody. A bare `docker kill` let the dying tasks close them, or not,
 * depending on which went first.
 */
export async function killNode(node: string): Promise<void> {
  await docker(['network', 'disconnect', '--force', NODE_NETWORK, node]);
  await docker(['kill', node]);
}

/** Worker nodes of the lab (lab-nodes.sh `--workers`), running or stopped: their containers carry this label. */
export const WORKER_LABEL = 'swarmgate.lab.swarm-role=worker';

export async function labWorkers(): Promise<string[]> {
  return (
    await docker([
      'ps',
      '-a',
      '--filter',
      'label=swarmgate.lab=1',
      '--filter',
      `label=${WORKER_LABEL}`,
      '--format',
      '{{.Names}}',
    ])
  )
    .split('\n')
    .filter(Boolean);
}

/**
 * `scripts/lab-nodes.sh up <managers> --workers <workers>`: the lab made exactly that shape (a missing node joins,
 * a killed manager is replaced, a stopped worker boots again, nodes beyond it leave). Runs inside the caller's daemon
 * lock: it must not take the lock itself.
 */
export function labNodesUp(managers: number, workers: number, timeoutMs = 300_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const args = ['up', String(managers), '--workers', String(workers)];
    execFile(
      'bash',
      [path.join(REPO_ROOT, 'scripts', 'lab-nodes.sh'), ...args],
      { timeout: timeoutMs, maxBuffer: 4 * 1024 * 1024 },
      (error, stdout, stderr) => {
        if (error)
          reject(new Error(`lab-nodes.sh ${args.join(' ')} failed: ${stderr.trim() || error.message}`));
        else resolve(stderr + stdout);
      },
    );
  });
}

/** Brings the lab back to `count` nodes, its workers kept workers (a killed node is replaced and joins again). */
export async function restoreNodes(count: number, timeoutMs = 300_000): Promise<string> {
  const workers = (await labWorkers()).length;
  return labNodesUp(count - workers, workers, timeoutMs);
}

// --- HTTP to a node's edge ---------------------------------------------------------------------------------
export interface HttpResult {
  readonly status: number;
  readonly body: string;
}

/** One request to a node's edge (a lab node's bridge address only) with the given Host header. */
export function request(ip: string, host: string, urlPath = '/', timeoutMs = 5000): Promise<HttpResult> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: ip, port: EDGE_PORT, path: urlPath, headers: { host }, agent: false, timeout: timeoutMs },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (body += chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on('timeout', () => req.destroy(new Error(`request to ${ip} for ${host}${urlPath} timed out`)));
    req.on('error', reject);
    req.end();
  });
}

/** The task that answered through this node's edge, or undefined for anything but a backend's 200. */
export async function answeringTask(ip: string, host: string): Promise<string | undefined> {
  const result = await request(ip, host);
  if (result.status !== 200) return undefined;
  return (JSON.parse(result.body) as { task?: string }).task;
}

/** Polls one node's edge until it has seen every task named (round robin visits them all), or times out. */
export async function waitForTasksThrough(
  node: LabNode,
  host: string,
  tasks: readonly string[],
  timeoutMs = 60_000,
): Promise<Set<string>> {
  const seen = new Set<string>();
  // What else came back (status or error), so that a timeout says whether tasks were unreachable or never routed.
  const others = new Map<string, number>();
  try {
    await waitFor(
      `the edge on ${node.name} to route ${host} to all ${tasks.length} tasks`,
      async () => {
        const result = await request(node.ip, host).catch((error: unknown) => ({
          status: 0,
          body: String(error).slice(0, 60),
        }));
        const task = result.status === 200 ? (JSON.parse(result.body) as { task?: string }).task : undefined;
        if (task) seen.add(task);
        else {
          const key = result.status === 0 ? result.body : `HTTP ${result.status}`;
          others.set(key, (others.get(key) ?? 0) + 1);
        }
        return tasks.every((name) => seen.has(name)) ? true : undefined;
      },
      { timeoutMs, intervalMs: 20 },
    );
  } catch (error) {
    const missing = tasks.filter((name) => !seen.has(name));
    throw new Error(
      `${String(error)}; never answered: ${missing.join(', ')}; answered: ${[...seen].join(', ')}; other answers: ${JSON.stringify(Object.fromEntries(others))}`,
      { cause: error },
    );
  }
  return seen;
}

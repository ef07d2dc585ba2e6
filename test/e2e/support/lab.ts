// E2E helpers: drive the lab's real Swarm with the docker CLI and talk to the edge on 127.0.0.1 only.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type tls from 'node:tls';
import path from 'node:path';

export const REPO_ROOT = path.resolve(import.meta.dirname, '../../..');
export const IMAGE = process.env.SWARMGATE_IMAGE ?? 'swarmgate:dev';
export const BACKEND_IMAGE = process.env.SWARMGATE_BACKEND_IMAGE ?? 'swarmgate-test-backend:dev';
/**
 * The lab's swarmgate has names of its own (scripts/lab.sh and stack.e2e.yml use the same): stack, overlay network,
 * SWARMGATE_INSTANCE and secret prefix, and its edge on host ports other than 80/443. A real swarmgate (stack
 * `swarmgate` on 80/443, the demo's too) runs beside it, and the lab never touches it.
 */
export const LAB = 'sg-e2e';
export const STACK = LAB;
export const EDGE_NETWORK = LAB;
/** The lab edge's host ports; Pebble's httpPort (test/pebble/pebble-config.json) is the same. */
export const EDGE_HTTP_PORT = 20080;
export const EDGE_HTTPS_PORT = 20443;
/** The TCP port the lab controller declares (SWARMGATE_TCP_PORTS) and the edge publishes as is (stack.e2e.yml). */
export const EDGE_TCP_PORT = 20432;
/** Pebble's management port (its current root) on the host, from stack.e2e.yml. */
export const PEBBLE_MANAGEMENT_PORT = 20150;
/** Marks everything a test creates, so `lab clean` can find leftovers. */
export const E2E_LABEL = 'sg-e2e=1';
/** Marks the secrets the lab and its tests create; `lab down` removes secrets with this label and no others. */
export const LAB_SECRET_LABEL = 'swarmgate.lab=1';

export function docker(
  args: readonly string[],
  options: { input?: string; timeoutMs?: number; env?: Record<string, string> } = {},
): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      'docker',
      args,
      {
        timeout: options.timeoutMs ?? 120_000,
        maxBuffer: 16 * 1024 * 1024,
        ...(options.env ? { env: { ...process.env, ...options.env } } : {}),
      },
      (error, stdout, stderr) => {
        if (error) reject(new Error(`docker ${args.join(' ')} failed: ${stderr.trim() || error.message}`));
        else resolve(stdout.trim());
      },
    );
    if (options.input !== undefined) child.stdin?.end(options.input);
  });
}

export function uniqueName(prefix: string): string {
  return `${prefix}-${randomBytes(3).toString('hex')}`;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `probe` until it returns a value other than undefined, or throws after the deadline with `what`. */
export async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  { timeoutMs = 60_000, intervalMs = 100 }: { timeoutMs?: number; intervalMs?: number } = {},
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown = null;
  while (Date.now() < deadline) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (error) {
      lastError = error;
    }
    await sleep(intervalMs);
  }
  throw new Error(
    `timed out after ${timeoutMs} ms waiting for ${what}${lastError ? `: ${lastError instanceof Error ? lastError.message : JSON.stringify(lastError)}` : ''}`,
  );
}

export interface HttpResult {
  readonly status: number;
  readonly headers: http.IncomingHttpHeaders;
  readonly body: string;
}

/** One request to 127.0.0.1 (the lab edge's HTTP port unless told) with the given Host header, on a fresh connection. */
export function request(
  host: string,
  urlPath = '/',
  {
    port = EDGE_HTTP_PORT,
    method = 'GET',
    headers = {},
    timeoutMs = 5000,
  }: {
    port?: number;
    method?: string;
    headers?: Record<string, string>;
    timeoutMs?: number;
  } = {},
): Promise<HttpResult> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: '127.0.0.1',
        port,
        path: urlPath,
        method,
        headers: { host, ...headers },
        agent: false,
        timeout: timeoutMs,
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (body += chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      },
    );
    req.on('timeout', () => req.destroy(new Error(`request to ${host}${urlPath} timed out`)));
    req.on('error', reject);
    req.end();
  });
}

/** The backend's JSON answer (which task served it), or undefined for a non-200. */
export async function backendAnswer(
  host: string,
  urlPath = '/',
): Promise<{ task: string; version: string; path: string } | undefined> {
  const result = await request(host, urlPath);
  if (result.status !== 200) return undefined;
  return JSON.parse(result.body) as { task: string; version: string; path: string };
}

/** Where this node's edge listens as seen from a container: the docker_gwbridge gateway (host-mode ports). */
export async function edgeAddressForContainers(): Promise<string> {
  return docker(['network', 'inspect', 'docker_gwbridge', '--format', '{{(index .IPAM.Config 0).Gateway}}']);
}

/** `docker stack deploy` of the given compose files, with images used as tagged (the lab has no registry). */
export async function deployStackFiles(
  stack: string,
  files: readonly string[],
  env: Record<string, string> = {},
): Promise<void> {
  await docker(
    ['stack', 'deploy', '--resolve-image', 'never', ...files.flatMap((file) => ['-c', file]), stack],
    { env },
  );
}

/**
 * docker-stack.yml with the lab's TCP port added to the edge's ports, as the README tells operators to publish one
 * (host mode, the same number on both sides), written under .lab/. Not an entry in stack.e2e.yml: `docker stack
 * deploy` merges a service's ports by published port alone, so the edge's 443/tcp and 443/udp would become one.
 */
function stackFileWithTcpPort(): string {
  // Inserted as text after the edge's last port: a YAML round trip would rewrite the secrets' `mode: 0400` (octal
  // in Docker's YAML 1.1) as 400.
  const text = readFileSync(path.join(REPO_ROOT, 'docker-stack.yml'), 'utf8');
  const anchor =
    /^( +)- \{ target: 443, published: '\$\{SWARMGATE_HTTPS_PORT:-443\}', protocol: udp, mode: host \}\n/m;
  const match = anchor.exec(text);
  if (!match)
    throw new Error("docker-stack.yml: the edge's 443/udp port line, after which the lab adds its TCP port");
  const line = `${match[1]}- { target: ${EDGE_TCP_PORT}, published: ${EDGE_TCP_PORT}, protocol: tcp, mode: host }\n`;
  const file = path.join(REPO_ROOT, '.lab', 'docker-stack.e2e.yml');
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(
    file,
    text.slice(0, match.index + match[0].length) + line + text.slice(match.index + match[0].length),
  );
  return file;
}

/** The production stack file with the lab's names and ports, and the e2e override (Pebble as the ACME CA). */
export async function deployStack(): Promise<void> {
  await deployStackFiles(
    STACK,
    [stackFileWithTcpPort(), path.join(REPO_ROOT, 'test', 'e2e', 'stack.e2e.yml')],
    {
      SWARMGATE_NETWORK: EDGE_NETWORK,
      SWARMGATE_HTTP_PORT: String(EDGE_HTTP_PORT),
      SWARMGATE_HTTPS_PORT: String(EDGE_HTTPS_PORT),
      SWARMGATE_E2E_EDGE_IP: await edgeAddressForContainers(),
    },
  );
  await waitForServiceRunning(`${STACK}_controller`, 1);
  await waitForServiceRunning(`${STACK}_edge`, 1);
  // The edge answers 503 for unknown hosts once nginx runs and the controller has published a bundle.
  await waitFor(`the edge to answer on 127.0.0.1:${EDGE_HTTP_PORT}`, async () => {
    const result = await request('unknown.invalid', '/');
    return result.status === 503 ? true : undefined;
  });
  await waitFor('the controller to publish and the edge to apply', async () => {
    const status = await controllerStatus();
    return status.config && status.edges.some((edge) => edge.inSync) ? true : undefined;
  });
}

/**
 * Removes what the lab's tests leave on the daemon: the lab's stacks, services and networks with the test label,
 * the lab controller's sealed state (`lab clean`: one definition of "the lab's", shared with `lab down`).
 */
export function labClean(): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      'bash',
      [path.join(REPO_ROOT, 'scripts', 'lab.sh'), 'clean'],
      { timeout: 300_000, maxBuffer: 16 * 1024 * 1024 },
      (error, stdout, stderr) => {
        if (error) reject(new Error(`lab clean failed: ${stderr.trim() || error.message}`));
        else resolve(stderr.trim());
      },
    );
  });
}

export interface ServiceOptions {
  readonly name: string;
  readonly labels?: Record<string, string>;
  readonly env?: Record<string, string>;
  readonly replicas?: number;
  readonly networks?: readonly string[];
  readonly image?: string;
  readonly publish?: string;
  readonly extra?: readonly string[];
  /** Command arguments after the image. */
  readonly args?: readonly string[];
}

/** Creates a service of the test backend (or another image) and waits for its tasks to run. */
export async function createService(options: ServiceOptions): Promise<void> {
  const args = ['service', 'create', '--detach', '--no-resolve-image', '--quiet', '--name', options.name];
  args.push('--label', E2E_LABEL, '--env', 'TASK_NAME={{.Task.Name}}');
  args.push('--stop-grace-period', '5s');
  for (const [key, value] of Object.entries(options.labels ?? {})) args.push('--label', `${key}=${value}`);
  for (const [key, value] of Object.entries(options.env ?? {})) args.push('--env', `${key}=${value}`);
  for (const network of options.networks ?? [EDGE_NETWORK]) args.push('--network', network);
  if (options.publish) args.push('--publish', options.publish);
  args.push(
    '--replicas',
    String(options.replicas ?? 1),
    ...(options.extra ?? []),
    options.image ?? BACKEND_IMAGE,
    ...(options.args ?? []),
  );
  await docker(args);
  await waitForServiceRunning(options.name, options.replicas ?? 1);
}

export async function removeService(name: string): Promise<void> {
  await docker(['service', 'rm', name]).catch(() => '');
}

export interface TaskRow {
  readonly id: string;
  readonly name: string;
  readonly desiredState: string;
  readonly state: string;
  readonly since: number;
}

export async function serviceTasks(service: string): Promise<TaskRow[]> {
  const ids = (await docker(['service', 'ps', '-q', '--no-trunc', service])).split('\n').filter(Boolean);
  if (ids.length === 0) return [];
  type RawTaskJson = {
    ID: string;
    Slot?: number;
    NodeID?: string;
    DesiredState: string;
    Status: { State: string; Timestamp: string };
  };
  let raw: RawTaskJson[];
  try {
    raw = JSON.parse(await docker(['inspect', ...ids])) as RawTaskJson[];
  } catch {
    // Swarm reaps tasks while we look (scale down): inspect one by one and skip the ones already gone.
    raw = [];
    for (const id of ids) {
      const one = await docker(['inspect', id]).catch(() => '');
      if (one) raw.push(...(JSON.parse(one) as RawTaskJson[]));
    }
  }
  return raw.map((task) => ({
    id: task.ID,
    name: `${service}.${task.Slot ?? task.NodeID ?? ''}.${task.ID}`,
    desiredState: task.DesiredState,
    state: task.Status.State,
    since: Date.parse(task.Status.Timestamp),
  }));
}

export async function waitForServiceRunning(
  service: string,
  replicas: number,
  timeoutMs = 90_000,
): Promise<TaskRow[]> {
  return waitFor(
    `${service} to have ${replicas} running task(s)`,
    async () => {
      const running = (await serviceTasks(service)).filter(
        (task) => task.desiredState === 'running' && task.state === 'running',
      );
      return running.length === replicas ? running : undefined;
    },
    { timeoutMs, intervalMs: 250 },
  );
}

export function labToken(): string {
  return readFileSync(path.join(REPO_ROOT, '.lab', 'token'), 'utf8').trim();
}

export interface ControllerStatus {
  config: { version: number; fingerprint: string } | null;
  lastReconcile: { at: string; ok: boolean } | null;
  certificates: {
    name: string;
    state: string;
    attempts: number;
    lastError: string | null;
    notAfter: string | null;
    /** The ACME directory it is (to be) ordered from. */
    directory?: string;
  }[];
  edges: {
    edge: string;
    inSync: boolean;
    /** in-sync, behind, unreachable (silent too long) or gone (node down, drained or removed): src/admin/rollout-status.ts. */
    condition?: 'in-sync' | 'behind' | 'unreachable' | 'gone';
    applied: { version: number } | null;
    lastContact: string;
    reloads: number;
    peerUpdates: number;
    /** Tasks this edge's active health checks took out (service name and task id). */
    tasksDown?: { service: string | null; task: string | null; address: string }[];
  }[];
  problems: { service: string; label: string; code: string; reason: string }[];
  services: { name: string; hosts: string[]; routedTasks: number }[];
}

/** The controller listens on the overlay only: ask it from inside its own container, as an operator would. */
export async function controllerStatus(): Promise<ControllerStatus> {
  const container = await docker([
    'ps',
    '-q',
    '--filter',
    `name=${STACK}_controller`,
    '--filter',
    'status=running',
  ]);
  const id = container.split('\n')[0];
  if (!id) throw new Error('no running controller container');
  return JSON.parse(await docker(['exec', id, 'swarmgate', 'status', '--json'])) as ControllerStatus;
}

export interface HttpsResult {
  readonly status: number;
  readonly headers: http.IncomingHttpHeaders;
  readonly body: string;
  /** Serial number of the certificate the server presented. */
  readonly serial: string;
}

/** HTTPS GET to 127.0.0.1:port with the given SNI/Host, verified against `ca` only. */
export function httpsGet(
  port: number,
  urlPath: string,
  servername: string,
  ca: string,
): Promise<HttpsResult> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      {
        host: '127.0.0.1',
        port,
        path: urlPath,
        servername,
        headers: { host: servername },
        ca,
        agent: false,
        timeout: 5000,
      },
      (res) => {
        const serial = (res.socket as tls.TLSSocket).getPeerCertificate().serialNumber ?? '';
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (body += chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body, serial }));
      },
    );
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

/** Pebble makes a new root at every start: the current one, from its management port (TLS by the lab's CA). */
export async function pebbleRoot(): Promise<string> {
  const labCa = readFileSync(path.join(REPO_ROOT, '.lab', 'pebble', 'ca.pem'), 'utf8');
  return waitFor('Pebble root certificate', () =>
    httpsGet(PEBBLE_MANAGEMENT_PORT, '/roots/0', 'localhost', labCa).then((result) =>
      result.status === 200 ? result.body : undefined,
    ),
  );
}

/** The controller routes `replicas` tasks of `service`, and every edge has applied that bundle. */
export async function waitForRouted(service: string, replicas: number): Promise<void> {
  await waitFor(`${service} to have ${replicas} routed task(s)`, async () => {
    const status = await controllerStatus();
    return status.services.find((entry) => entry.name === service)?.routedTasks === replicas
      ? true
      : undefined;
  });
  await edgesInSync();
}

/** The controller's status once every edge has reported the current bundle (with its counters). */
export function edgesInSync(): Promise<ControllerStatus> {
  return waitFor('every edge to report the current bundle', async () => {
    const status = await controllerStatus();
    // Edges that polled lately (a live one polls at least every 30 s); restarted ones linger in the list.
    const live = status.edges.filter((edge) => Date.now() - Date.parse(edge.lastContact) < 45_000);
    return live.length > 0 && live.every((edge) => edge.inSync) ? { ...status, edges: live } : undefined;
  });
}

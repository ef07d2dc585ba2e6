// A stand-in Docker daemon for the controller benchmarks: an HTTP server on a Unix socket that answers the Engine
// API calls a reconcile makes (services, tasks, networks, nodes) with JSON shaped and sized like a real daemon's,
// so the controller's own I/O path (dockerode, the HTTP body, JSON parsing) is measured, not a shortcut around it.
// It runs in a process of its own, as dockerd does: its memory is not counted in the controller's RSS.
//   node fake-docker-daemon.js <socket> <services> <tasksPerService> <historyPerSlot>
// POST /bench/tasks?service=ID&ip=IP adds a running task (the storm); POST /bench/state?task=ID&state=S changes one.
import { createServer } from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { rmSync } from 'node:fs';

const [socketPath = '', servicesArg = '2000', perServiceArg = '10', historyArg = '1'] = process.argv.slice(2);
const SERVICES = Number(servicesArg);
const PER_SERVICE = Number(perServiceArg);
const HISTORY = Number(historyArg);

const NETWORK_ID = 'uo4iyvcceqc33j5froruxfpwo';
const NODE_ID = 'ee0la6fv1veal3yx8mm9gye2f';
const IMAGE =
  'registry.example.test/team/app:1.4.2@sha256:5f1b8c6f0c1a7d3e9b2a4c6d8e0f1a3b5c7d9e1f2a4b6c8d0e2f4a6b8c0d2e4f';
const networkJson = {
  ID: NETWORK_ID,
  Version: { Index: 3116 },
  CreatedAt: '2026-11-25T16:41:19.855568944Z',
  UpdatedAt: '2026-11-25T16:41:19.856563107Z',
  Spec: {
    Name: 'swarmgate',
    Labels: { 'com.docker.stack.namespace': 'swarmgate' },
    DriverConfiguration: { Name: 'overlay' },
    Attachable: true,
    Scope: 'swarm',
  },
  DriverState: { Name: 'overlay', Options: { 'com.docker.network.driver.overlay.vxlanid_list': '4116' } },
  IPAMOptions: { Driver: { Name: 'default' }, Configs: [{ Subnet: '10.0.0.0/8', Gateway: '10.0.0.1' }] },
};

export function serviceId(s: number): string {
  return `svc${String(s).padStart(5, '0')}`;
}

function serviceJson(s: number, replicas: number, versionIndex = 1000 + s): string {
  const id = serviceId(s);
  const labels: Record<string, string> = {
    'com.docker.stack.namespace': `stack${s % 50}`,
    'com.docker.stack.image': IMAGE,
    VIRTUAL_HOST:
      s % 10 === 0 ? `shared${Math.floor(s / 100)}.bench.example.com` : `app${s}.bench.example.com`,
  };
  if (s % 10 === 0) labels.VIRTUAL_PATH = '/api/';
  return JSON.stringify({
    ID: id,
    Version: { Index: versionIndex },
    CreatedAt: '2026-11-01T10:00:00.000000000Z',
    UpdatedAt: '2026-11-20T10:00:00.000000000Z',
    Spec: {
      Name: id,
      Labels: labels,
      TaskTemplate: {
        ContainerSpec: {
          Image: IMAGE,
          Labels: { 'com.docker.stack.namespace': `stack${s % 50}` },
          Env: ['NODE_ENV=production', 'PORT=80', `SERVICE_NAME=${id}`, 'LOG_LEVEL=info'],
          Privileges: { CredentialSpec: null, SELinuxContext: null },
          StopGracePeriod: 10000000000,
          DNSConfig: {},
          Isolation: 'default',
        },
        Resources: { Limits: { MemoryBytes: 268435456 }, Reservations: {} },
        RestartPolicy: { Condition: 'any', Delay: 5000000000, MaxAttempts: 0 },
        Placement: { Platforms: [{ Architecture: 'amd64', OS: 'linux' }] },
        Networks: [{ Target: NETWORK_ID, Aliases: [id] }],
        ForceUpdate: 0,
        Runtime: 'container',
      },
      Mode: { Replicated: { Replicas: replicas } },
      UpdateConfig: {
        Parallelism: 1,
        FailureAction: 'pause',
        Monitor: 5000000000,
        MaxFailureRatio: 0,
        Order: 'stop-first',
      },
      RollbackConfig: {
        Parallelism: 1,
        FailureAction: 'pause',
        Monitor: 5000000000,
        MaxFailureRatio: 0,
        Order: 'stop-first',
      },
      EndpointSpec: { Mode: 'vip' },
    },
    Endpoint: {
      Spec: { Mode: 'vip' },
      VirtualIPs: [{ NetworkID: NETWORK_ID, Addr: `10.250.${Math.floor(s / 256)}.${s % 256}/8` }],
    },
  });
}

/** Swarm's Raft index: every write of a service or task takes the next one. */
let version = 100_000;

interface TaskEntry {
  readonly id: string;
  readonly serviceId: string;
  readonly desired: string;
  json: Buffer;
}

function taskJson(
  id: string,
  service: string,
  slot: number,
  ip: string,
  desired: string,
  state: string,
): Buffer {
  return Buffer.from(
    JSON.stringify({
      ID: id,
      // Swarm's Raft index of the task's last write: every write of a task gives it a new one, as in swarmkit.
      Version: { Index: ++version },
      CreatedAt: '2026-11-25T16:41:20.093488233Z',
      UpdatedAt: '2026-11-25T16:41:21.636641408Z',
      Labels: {},
      Spec: {
        ContainerSpec: {
          Image: IMAGE,
          Labels: { 'com.docker.stack.namespace': 'stack' },
          Env: ['NODE_ENV=production', 'PORT=80', `SERVICE_NAME=${service}`, 'LOG_LEVEL=info'],
          Privileges: { CredentialSpec: null, SELinuxContext: null },
          Isolation: 'default',
        },
        Resources: { Limits: { MemoryBytes: 268435456 } },
        Placement: { Platforms: [{ Architecture: 'amd64', OS: 'linux' }] },
        Networks: [{ Target: NETWORK_ID, Aliases: [service] }],
        ForceUpdate: 0,
      },
      ServiceID: service,
      Slot: slot,
      NodeID: NODE_ID,
      Status: {
        Timestamp: new Date().toISOString(),
        State: state,
        Message: state === 'running' ? 'started' : 'shutdown',
        ContainerStatus: {
          ContainerID: '88fbc8ef93e487ac951e158960b9c449084061faca5e5a79d8a2ce43b11e146b',
          PID: 24784,
          ExitCode: 0,
        },
        PortStatus: {},
      },
      DesiredState: desired,
      NetworksAttachments: [{ Network: networkJson, Addresses: [`${ip}/8`] }],
    }),
  );
}

function address(n: number): string {
  return `10.${Math.floor(n / 65536) + 1}.${Math.floor(n / 256) % 256}.${n % 256}`;
}

const services: Buffer[] = [];
const replicas: number[] = [];
const tasks: TaskEntry[] = [];
const taskIndex = new Map<string, TaskEntry>();
function addTask(entry: TaskEntry): void {
  tasks.push(entry);
  taskIndex.set(entry.id, entry);
}
for (let s = 0; s < SERVICES; s++) {
  const id = serviceId(s);
  services.push(Buffer.from(serviceJson(s, PER_SERVICE)));
  for (let t = 0; t < PER_SERVICE; t++) {
    const n = s * PER_SERVICE + t;
    // Docker keeps the last few tasks of every slot (task history): a past rolling update leaves one each.
    for (let h = 0; h < HISTORY; h++) {
      const old = `${id}-t${t}-old${h}`;
      addTask({
        id: old,
        serviceId: id,
        desired: 'shutdown',
        json: taskJson(old, id, t + 1, address(n), 'shutdown', 'shutdown'),
      });
    }
    const task = `${id}-t${t}`;
    addTask({
      id: task,
      serviceId: id,
      desired: 'running',
      json: taskJson(task, id, t + 1, address(n), 'running', 'running'),
    });
  }
}

function sendArray(res: ServerResponse, items: readonly Buffer[]): void {
  res.writeHead(200, { 'content-type': 'application/json' });
  // Written in slices, as a daemon streams its encoder's output: never one buffer of the whole list.
  const SLICE = 512;
  res.write('[');
  for (let i = 0; i < items.length; i += SLICE) {
    const slice: Buffer[] = [];
    for (let j = i; j < Math.min(items.length, i + SLICE); j++) {
      if (j > 0) slice.push(COMMA);
      slice.push(items[j] as Buffer);
    }
    res.write(Buffer.concat(slice));
  }
  res.end(']');
}
const COMMA = Buffer.from(',');

function handle(req: IncomingMessage, res: ServerResponse): void {
  const url = new URL(req.url ?? '/', 'http://docker');
  const route = url.pathname.replace(/^\/v[0-9.]+/, '');
  stats.requests[route] = (stats.requests[route] ?? 0) + 1;
  if (req.method === 'POST' && route === '/bench/tasks') {
    // One more replica, as `docker service scale` does: a new spec version and one more running task.
    const service = url.searchParams.get('service') ?? '';
    const index = Number(service.replace(/^svc/, ''));
    replicas[index] = (replicas[index] ?? PER_SERVICE) + 1;
    services[index] = Buffer.from(serviceJson(index, replicas[index] ?? PER_SERVICE, ++version));
    const id = `${service}-storm${tasks.length}`;
    addTask({
      id,
      serviceId: service,
      desired: 'running',
      json: taskJson(id, service, 99, url.searchParams.get('ip') ?? '', 'running', 'running'),
    });
    return void res.end('{}');
  }
  if (req.method === 'POST' && route === '/bench/state') {
    const entry = taskIndex.get(url.searchParams.get('task') ?? '');
    if (!entry) return void res.writeHead(404).end();
    const state = url.searchParams.get('state') ?? 'running';
    const parsed = JSON.parse(entry.json.toString()) as {
      Version: { Index: number };
      Status: { State: string; Timestamp: string };
    };
    parsed.Status.State = state;
    parsed.Version.Index = ++version;
    parsed.Status.Timestamp = new Date().toISOString();
    entry.json = Buffer.from(JSON.stringify(parsed));
    return void res.end('{}');
  }
  if (route === '/bench/stats') return void res.end(JSON.stringify(stats));
  if (route === '/services') return sendArray(res, services);
  if (route === '/networks')
    return sendArray(res, [
      Buffer.from(JSON.stringify({ Name: 'swarmgate', Id: NETWORK_ID, Driver: 'overlay', Scope: 'swarm' })),
    ]);
  if (route === '/nodes')
    return sendArray(res, [
      Buffer.from(
        JSON.stringify({
          ID: NODE_ID,
          Description: { Hostname: 'node-1' },
          Spec: { Role: 'manager', Availability: 'active' },
          Status: { State: 'ready', Addr: '10.1.0.1' },
        }),
      ),
    ]);
  if (route === '/tasks') {
    // The filters a reconcile may send: desired-state and service (several values: any of them).
    const filters = JSON.parse(url.searchParams.get('filters') ?? '{}') as Record<
      string,
      string[] | Record<string, boolean>
    >;
    const values = (key: string): string[] | null => {
      const value = filters[key];
      if (!value) return null;
      return Array.isArray(value) ? value : Object.keys(value).filter((name) => value[name]);
    };
    const desired = values('desired-state');
    const wanted = values('service');
    const wantedSet = wanted ? new Set(wanted) : null;
    const selected = tasks.filter(
      (task) => (!desired || desired.includes(task.desired)) && (!wantedSet || wantedSet.has(task.serviceId)),
    );
    stats.tasksSent += selected.length;
    return sendArray(
      res,
      selected.map((task) => task.json),
    );
  }
  res.writeHead(404, { 'content-type': 'application/json' }).end('{"message":"not found"}');
}

const stats = { requests: {} as Record<string, number>, tasksSent: 0 };
rmSync(socketPath, { force: true });
const server = createServer(handle);
// dockerd keeps idle API connections open; Node's 5 s default would race a client reusing one after a long reconcile.
server.keepAliveTimeout = 0;
server.listen(socketPath, () => {
  const bytes = tasks.reduce((sum, task) => sum + task.json.length, 0);
  process.stdout.write(`${JSON.stringify({ ready: true, tasks: tasks.length, taskBytes: bytes })}\n`);
});
process.on('disconnect', () => process.exit(0));

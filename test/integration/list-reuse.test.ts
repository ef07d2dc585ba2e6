// The Docker adapter reuses the services and running tasks of its last list that Swarm did not write since (same ID,
// version and bytes: src/docker/json-array.ts). Whatever it reused, a reconcile must see exactly what a fresh read
// sees: the same snapshot, the same model, the same rendered bundle, after any sequence of changes.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { defaultProxySettings } from '../../src/config.ts';
import { fetchSnapshot } from '../../src/discovery/snapshot.ts';
import type { Snapshot } from '../../src/discovery/snapshot.ts';
import { createDockerodeAdapter } from '../../src/docker/dockerode-adapter.ts';
import type { DockerPort } from '../../src/docker/docker-port.ts';
import { idHash } from '../../src/docker/json-array.ts';
import { buildRoutingModel } from '../../src/model/routing-model.ts';
import { createTemplateRenderer } from '../../src/render/nunjucks-env.ts';
import { renderConfig } from '../../src/render/render-config.ts';

const NETWORK = { ID: 'net0000000000000000000001', Spec: { Name: 'swarmgate', Labels: {} } };
const IMAGE = 'registry.example.test/team/app:1.4.2';

/** Swarm's state as the Engine lists it; every write of an object gives it the next Raft index, as swarmkit does. */
class Swarm {
  raft = 1000;
  readonly services = new Map<string, Record<string, unknown>>();
  readonly tasks = new Map<string, Record<string, unknown>>();

  addService(id: string, host: string, replicas: number): void {
    this.services.set(id, {
      ID: id,
      Version: { Index: ++this.raft },
      CreatedAt: `2026-11-01T10:00:00.${id}Z`,
      Spec: {
        Name: id,
        Labels: { VIRTUAL_HOST: host, 'com.docker.stack.namespace': 'bench' },
        TaskTemplate: {
          ContainerSpec: { Image: IMAGE, Env: ['PORT=80', `SERVICE=${id}`] },
          Networks: [{ Target: NETWORK.ID }],
        },
        Mode: { Replicated: { Replicas: replicas } },
      },
    });
    for (let slot = 1; slot <= replicas; slot++) this.startTask(id, slot, 'node1');
  }

  startTask(service: string, slot: number, node: string): string {
    const id = `${service}t${slot}n${++this.raft}`;
    this.tasks.set(id, {
      ID: id,
      Version: { Index: this.raft },
      Spec: { ContainerSpec: { Image: IMAGE, Env: ['PORT=80'] } },
      ServiceID: service,
      Slot: slot,
      NodeID: node,
      Status: { Timestamp: '2026-11-25T16:41:21.636641408Z', State: 'running', Message: 'started' },
      DesiredState: 'running',
      NetworksAttachments: [{ Network: NETWORK, Addresses: [`10.0.${this.raft % 250}.${slot}/24`] }],
    });
    return id;
  }

  /** A write of a task: the change, then a new version. */
  writeTask(id: string, change: (task: Record<string, unknown>) => void): void {
    const task = this.tasks.get(id);
    assert.ok(task, id);
    change(task);
    task.Version = { Index: ++this.raft };
  }

  removeService(id: string): void {
    this.services.delete(id);
    for (const [taskId, task] of this.tasks) if (task.ServiceID === id) this.tasks.delete(taskId);
  }
}

/** The Engine's list answer, compact, written in small slices so elements and their IDs straddle chunks. */
function sendList(res: http.ServerResponse, items: readonly unknown[]): void {
  const body = Buffer.from(JSON.stringify(items));
  res.writeHead(200, { 'content-type': 'application/json' });
  for (let at = 0; at < body.length; at += 977) res.write(body.subarray(at, at + 977));
  res.end();
}

async function startEngine(swarm: Swarm): Promise<{ socketPath: string; close: () => Promise<void> }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'swarmgate-reuse-'));
  const socketPath = path.join(dir, 'docker.sock');
  const engine = http.createServer((req, res) => {
    req.resume();
    const url = new URL(req.url ?? '/', 'http://engine');
    const route = url.pathname.replace(/^\/v[0-9.]+/, '');
    if (route === '/services') return sendList(res, [...swarm.services.values()]);
    if (route === '/networks')
      return sendList(res, [{ Name: 'swarmgate', Id: NETWORK.ID, Driver: 'overlay', Scope: 'swarm' }]);
    if (route === '/nodes')
      return sendList(
        res,
        ['node1', 'node2'].map((id) => ({
          ID: id,
          Description: { Hostname: id },
          Spec: { Role: 'manager', Availability: 'active' },
          Status: { State: 'ready' },
        })),
      );
    if (route === '/tasks') {
      const filters = JSON.parse(url.searchParams.get('filters') ?? '{}') as Record<string, string[]>;
      const desired = filters['desired-state'];
      const services = filters.service;
      return sendList(
        res,
        [...swarm.tasks.values()].filter(
          (task) =>
            (!desired || desired.includes(task.DesiredState as string)) &&
            (!services || services.includes(task.ServiceID as string)),
        ),
      );
    }
    res.writeHead(404, { 'content-type': 'application/json' }).end('{"message":"not found"}');
  });
  await new Promise<void>((resolve) => engine.listen(socketPath, () => resolve()));
  return {
    socketPath,
    close: async () => {
      engine.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

const templates = createTemplateRenderer();

function rendered(snapshot: Snapshot): string {
  const model = buildRoutingModel(snapshot, { networks: ['swarmgate'] });
  const files = renderConfig(
    model,
    { proxy: { ...defaultProxySettings(), channelCertFile: '/run/secrets/channel.crt' }, generator: 'test' },
    templates,
  );
  return JSON.stringify({ model, files });
}

test('list reuse: after every change (scale, a removed service, a moved task, a new address) a reconcile reads what a fresh adapter reads', async (t) => {
  const swarm = new Swarm();
  for (let s = 0; s < 30; s++) swarm.addService(`svc${String(s).padStart(3, '0')}`, `app${s}.example.com`, 3);
  const engine = await startEngine(swarm);
  t.after(engine.close);
  const reusing = createDockerodeAdapter(engine.socketPath);
  const signal = AbortSignal.timeout(20_000);
  const read = (docker: DockerPort): Promise<Snapshot> => fetchSnapshot(docker, signal);
  /** The reusing adapter's read equals a read by an adapter that never read before. */
  const check = async (what: string): Promise<Snapshot> => {
    const reused = await read(reusing);
    const fresh = await read(createDockerodeAdapter(engine.socketPath));
    assert.deepEqual(reused, fresh, what);
    assert.equal(rendered(reused), rendered(fresh), what);
    return reused;
  };
  const taskOf = (snapshot: Snapshot, id: string) => snapshot.tasks.find((task) => task.id === id);

  const first = await check('the first read');
  const steady = await check('nothing changed');
  // Reuse did happen (else this test proves nothing): unchanged tasks are the very objects read before, all but the
  // share whose turn it was to be parsed again.
  const kept = steady.tasks.filter((task) => taskOf(first, task.id) === task).length;
  assert.ok(kept > steady.tasks.length / 2, `${kept} of ${steady.tasks.length} tasks reused`);

  // Scale: a new spec version and one more task.
  swarm.services.get('svc004')!.Version = { Index: ++swarm.raft };
  const added = swarm.startTask('svc004', 4, 'node2');
  const scaled = await check('svc004 scaled to 4');
  assert.ok(taskOf(scaled, added));

  // A removed service: its route and tasks are gone, the rest reused.
  swarm.removeService('svc007');
  const removed = await check('svc007 removed');
  assert.equal(
    removed.tasks.some((task) => task.serviceId === 'svc007'),
    false,
  );

  // A task that moved: the old one told to stop (no longer listed as running), its replacement on another node.
  const [moving] = [...swarm.tasks.values()].filter((task) => task.ServiceID === 'svc012');
  assert.ok(moving);
  swarm.writeTask(moving.ID as string, (task) => {
    task.DesiredState = 'shutdown';
    task.Status = { Timestamp: '2026-11-25T16:50:00.000000000Z', State: 'shutdown', Message: 'shutdown' };
  });
  const replacement = swarm.startTask('svc012', moving.Slot as number, 'node2');
  const moved = await check('a task of svc012 moved to node2');
  assert.equal(taskOf(moved, moving.ID as string), undefined);
  assert.equal(taskOf(moved, replacement)?.nodeId, 'node2');

  // A task written in place: a new address under a new version.
  const rewritten = [...swarm.tasks.keys()][5] as string;
  swarm.writeTask(rewritten, (task) => {
    task.Status = { Timestamp: '2026-11-25T16:55:00.000000000Z', State: 'running', Message: 'started' };
    task.NetworksAttachments = [{ Network: NETWORK, Addresses: ['10.9.9.9/24'] }];
  });
  const written = await check('a task rewritten in place');
  assert.deepEqual(
    taskOf(written, rewritten)?.addresses.map((address) => address.ip),
    ['10.9.9.9'],
  );
});

test('list reuse: a change Swarm did not version (a missed write) is read by the periodic full parse', async (t) => {
  const swarm = new Swarm();
  for (let s = 0; s < 5; s++) swarm.addService(`svc${s}`, `app${s}.example.com`, 2);
  const engine = await startEngine(swarm);
  t.after(engine.close);
  const reusing = createDockerodeAdapter(engine.socketPath);
  const signal = AbortSignal.timeout(20_000);
  const ips = (snapshot: Snapshot, id: string): string[] =>
    snapshot.tasks.find((task) => task.id === id)?.addresses.map((address) => address.ip) ?? [];
  await fetchSnapshot(reusing, signal);
  // The task whose turn to be parsed again comes last: the stale item is served for 11 reads first.
  const turn = (id: string): number => idHash(id) % 12 || 12;
  const [target] = [...swarm.tasks.keys()].sort((a, b) => turn(b) - turn(a));
  assert.ok(target);
  // The address changes, the version does not, the length stays: nothing in the first bytes tells.
  const task = swarm.tasks.get(target)!;
  const before = (task.NetworksAttachments as { Addresses: string[] }[])[0]!.Addresses[0]!;
  const after = before.replace(/\.(\d)\//, (_, digit: string) => `.${(Number(digit) + 1) % 10}/`);
  assert.equal(after.length, before.length);
  task.NetworksAttachments = [{ Network: NETWORK, Addresses: [after] }];
  let reads = 1;
  // The safety net: each element is parsed again on its turn, at least every 12th read (by a hash of its ID); until
  // then the old item may be served.
  while (!ips(await fetchSnapshot(reusing, signal), target).includes(after.split('/')[0]!)) {
    reads++;
    assert.ok(reads <= 12, `the change was not read within 12 reads (${reads})`);
  }
  assert.equal(reads, turn(target), 'reused until its turn, read on it');
  assert.ok(reads > 1, 'the stale item was served (else this proves nothing)');
});

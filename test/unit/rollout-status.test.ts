import assert from 'node:assert/strict';
import { test } from 'node:test';
import { describeEdges, rolloutStatus, unreachableAfterMs } from '../../src/admin/rollout-status.ts';
import type { NodeInfo, Snapshot, TaskInfo } from '../../src/discovery/snapshot.ts';
import type { RoutedService } from '../../src/model/routing-model.ts';
import type { EdgeState } from '../../src/publish/bundle-store.ts';

const NOW = Date.parse('2026-06-01T00:10:00Z');
const timing = { longPollMs: 25_000 };

function node(id: string, state = 'ready', availability = 'active'): NodeInfo {
  return { id, hostname: id, role: 'worker', state, availability };
}

function edge(name: string, nodeId: string | null, silentMs: number, inSync: boolean): EdgeState {
  return {
    edge: name,
    node: nodeId,
    applied: { version: 1, fingerprint: 'a'.repeat(64) },
    rejected: null,
    reloads: 0,
    peerUpdates: 0,
    lastContact: new Date(NOW - silentMs).toISOString(),
    inSync,
  };
}

function task(id: string, ip: string, image = 'app:2'): TaskInfo {
  return {
    id,
    serviceId: 'svc-web',
    nodeId: 'n1',
    slot: 1,
    desiredState: 'running',
    state: 'running',
    stateSince: '2026-06-01T00:00:00Z',
    error: null,
    image,
    addresses: [{ networkId: 'net', networkName: 'swarmgate', ip }],
  };
}

function snapshotWith(nodes: NodeInfo[], tasks: TaskInfo[] = []): Snapshot {
  return {
    services: [
      {
        id: 'svc-web',
        name: 'web',
        createdAt: '',
        labels: {},
        env: {},
        mode: 'replicated',
        replicas: tasks.length,
        networks: ['net'],
        image: 'app:2',
        updateState: null,
      },
    ],
    tasks,
    networks: [],
    nodes,
  };
}

function routedWeb(ips: string[]): { services: RoutedService[] } {
  return {
    services: [
      {
        id: 'svc-web',
        name: 'web',
        hosts: ['web.example.com'],
        path: '/',
        port: 80,
        proto: 'http',
        network: 'swarmgate',
        desiredReplicas: ips.length,
        servers: ips.map((ip, i) => ({ ip, port: 80, taskId: `t${i}`, nodeId: 'n1' })),
      },
    ],
  };
}

test('edge conditions: down, drained or removed nodes are gone; silence beyond the bound is unreachable', () => {
  const snapshot = snapshotWith([
    node('n1'),
    node('n-down', 'down'),
    node('n-drain', 'ready', 'drain'),
    node('n-unknown', 'unknown'),
  ]);
  const bound = unreachableAfterMs(timing);
  const views = describeEdges(
    [
      edge('live', 'n1', 1000, true),
      edge('late', 'n1', 1000, false),
      edge('dead', 'n-down', 1000, false),
      edge('drained', 'n-drain', 1000, false),
      // A leader change marks every live node unknown until it re-registers: its edge is still waited for.
      edge('leader-change', 'n-unknown', 1000, false),
      edge('removed', 'n-removed', timing.longPollMs + 1, false),
      edge('just-joined', 'n-new', 1000, false),
      edge('at-bound', 'n1', bound, false),
      edge('silent', 'n1', bound + 1, false),
      edge('no-node-id', null, 1000, false),
    ],
    snapshot,
    NOW,
    timing,
  );
  assert.deepEqual(Object.fromEntries(views.map((view) => [view.edge, view.condition])), {
    live: 'in-sync',
    late: 'behind',
    dead: 'gone',
    drained: 'gone',
    'leader-change': 'behind',
    removed: 'gone',
    'just-joined': 'behind',
    'at-bound': 'behind',
    silent: 'unreachable',
    'no-node-id': 'behind',
  });
  assert.equal(views.find((view) => view.edge === 'dead')?.nodeState, 'down');
  assert.equal(views.find((view) => view.edge === 'drained')?.nodeAvailability, 'drain');
  // Before the first snapshot no node is known: nothing is written off as gone.
  assert.equal(
    describeEdges([edge('removed', 'n-removed', 30_000, false)], null, NOW, timing)[0]?.condition,
    'behind',
  );
});

test('rollout: complete once tasks are routed and every edge still waited for is in sync', () => {
  const tasks = [task('t1', '10.0.1.1'), task('t2', '10.0.1.2')];
  const snapshot = snapshotWith([node('n1'), node('n-down', 'down')], tasks);
  const model = routedWeb(['10.0.1.1', '10.0.1.2']);
  const goal = { kind: 'replicas', service: 'web', replicas: 2 } as const;
  const silent = unreachableAfterMs(timing) + 1;

  const waiting = rolloutStatus(snapshot, model, [edge('e1', 'n1', 0, false)], NOW, goal, timing);
  assert.equal(waiting.complete, false);
  assert.deepEqual(waiting.missing, ['edges not yet on the new config: e1']);

  const done = rolloutStatus(
    snapshot,
    model,
    [edge('e1', 'n1', 0, true), edge('dead', 'n-down', 0, false), edge('quiet', 'n1', silent, false)],
    NOW,
    goal,
    timing,
  );
  assert.equal(done.complete, true);
  assert.equal(done.edgesInSync, true);
  assert.deepEqual(done.edgesGone, ['dead']);
  assert.deepEqual(done.edgesUnreachable, ['quiet']);

  // The same edge, one millisecond earlier than the bound, is still waited for: the clock decides.
  const earlier = rolloutStatus(snapshot, model, [edge('quiet', 'n1', silent - 1, false)], NOW, goal, timing);
  assert.equal(earlier.complete, false);
});

test('rollout: replicas and image goals say what is missing', () => {
  const snapshot = snapshotWith([node('n1')], [task('t1', '10.0.1.1', 'app:1'), task('t2', '10.0.1.2')]);
  const model = routedWeb(['10.0.1.1']);
  const scale = rolloutStatus(
    snapshot,
    model,
    [],
    NOW,
    { kind: 'replicas', service: 'web', replicas: 3 },
    timing,
  );
  assert.deepEqual(scale.missing, ['2 of 3 tasks running', '1 of 3 tasks routed']);
  const image = rolloutStatus(
    snapshot,
    model,
    [],
    NOW,
    { kind: 'image', service: 'web', image: 'app:2' },
    timing,
  );
  assert.equal(image.complete, false);
  assert.deepEqual(image.missing, ['1 of 2 running tasks on app:2']);
  const pinned = snapshotWith([node('n1')], [task('t1', '10.0.1.1', 'app:2@sha256:abc')]);
  assert.equal(
    rolloutStatus(
      pinned,
      routedWeb(['10.0.1.1']),
      [],
      NOW,
      { kind: 'image', service: 'web', image: 'app:2' },
      timing,
    ).complete,
    true,
  );
});

// Pure: where a rollout stands (tasks running, routed, edges on the config that routes them) and what each edge's
// condition is. Driven by the injected clock's `now`, so a wait is testable to the millisecond with a fake clock.
import type { NodeInfo, Snapshot, TaskInfo } from '../discovery/snapshot.ts';
import type { RoutedService, RoutingModel } from '../model/routing-model.ts';
import type { EdgeState } from '../publish/bundle-store.ts';

/**
 * in-sync: runs the published config. behind: heard from lately, on an older config. unreachable: silent for
 * longer than a live edge ever is (shown, not waited for). gone: its node is down, drained (Swarm stops its
 * edge), or no longer in the swarm (not waited for).
 */
export type EdgeCondition = 'in-sync' | 'behind' | 'unreachable' | 'gone';

export interface EdgeTiming {
  /** The controller's long-poll window: a live edge starts a poll at least this often. */
  readonly longPollMs: number;
}

export interface EdgeView extends EdgeState {
  readonly condition: EdgeCondition;
  /** The node's state and availability as Swarm reports them; null: the edge sent no node id or it is unknown. */
  readonly nodeState: string | null;
  readonly nodeAvailability: string | null;
}

/**
 * Two long-poll windows and some slack: a live edge's poll returns after one window at most and it polls again at
 * once (its retries after an error are 2 s apart at most), so one silent for this long has missed a poll.
 */
export function unreachableAfterMs(timing: EdgeTiming): number {
  return 2 * timing.longPollMs + 5_000;
}

/**
 * Each edge's condition. An edge is matched to a node by the node id it reports (SWARMGATE_NODE_ID). A node absent
 * from the snapshot counts as gone only once the edge has also been silent for a long-poll window: a node that
 * has just joined may not be in the last snapshot yet, and its edge is served (and waited for) at once.
 */
export function describeEdges(
  edges: readonly EdgeState[],
  snapshot: Pick<Snapshot, 'nodes'> | null,
  now: number,
  timing: EdgeTiming,
): EdgeView[] {
  const nodes = new Map<string, NodeInfo>((snapshot?.nodes ?? []).map((node) => [node.id, node]));
  return edges.map((edge) => {
    const silentMs = now - Date.parse(edge.lastContact);
    const node = edge.node === null ? undefined : nodes.get(edge.node);
    const nodeGone =
      node !== undefined
        ? node.state === 'down' || node.availability === 'drain'
        : edge.node !== null && snapshot !== null && nodes.size > 0 && silentMs > timing.longPollMs;
    const condition: EdgeCondition = nodeGone
      ? 'gone'
      : !(silentMs <= unreachableAfterMs(timing))
        ? 'unreachable'
        : edge.inSync
          ? 'in-sync'
          : 'behind';
    return {
      ...edge,
      condition,
      nodeState: node?.state ?? null,
      nodeAvailability: node?.availability ?? null,
    };
  });
}

/** What a change asked of a service: a replica count, or every task on an image. */
export type RolloutGoal =
  | { readonly kind: 'replicas'; readonly service: string; readonly replicas: number }
  | { readonly kind: 'image'; readonly service: string; readonly image: string };

export interface RolloutStatus {
  readonly complete: boolean;
  readonly routedTasks: number;
  readonly runningTasks: number;
  /** Every edge that is waited for (in-sync or behind) runs the published config. */
  readonly edgesInSync: boolean;
  readonly missing: string[];
  /** Edges not waited for, by name: shown so an operator sees them, never a reason to keep waiting. */
  readonly edgesUnreachable: string[];
  readonly edgesGone: string[];
}

/** A task runs `image` as given, or pinned to a digest (`image@sha256:…`). */
export function runsImage(task: TaskInfo, image: string): boolean {
  return task.image === image || task.image.startsWith(`${image}@`);
}

export function rolloutStatus(
  snapshot: Snapshot | null,
  model: Pick<RoutingModel, 'services'>,
  edges: readonly EdgeState[],
  now: number,
  goal: RolloutGoal,
  timing: EdgeTiming,
): RolloutStatus {
  const info = snapshot?.services.find((service) => service.name === goal.service);
  const running = info
    ? (snapshot?.tasks ?? []).filter(
        (task) => task.serviceId === info.id && task.desiredState === 'running' && task.state === 'running',
      )
    : [];
  const routed = model.services.find((service) => service.name === goal.service);
  const tasks =
    goal.kind === 'replicas'
      ? replicasReached(running, routed, goal.replicas)
      : imageRolledOut(running, routed, goal.image, info?.replicas ?? null);

  const views = describeEdges(edges, snapshot, now, timing);
  const behind = views.filter((edge) => edge.condition === 'behind').map((edge) => edge.edge);
  const edgesInSync = behind.length === 0;
  const complete = tasks.done && edgesInSync;
  const missing = complete ? [] : [...tasks.missing];
  if (!complete && !edgesInSync) missing.push(`edges not yet on the new config: ${behind.join(', ')}`);
  return {
    complete,
    routedTasks: routed?.servers.length ?? 0,
    runningTasks: running.length,
    edgesInSync,
    missing,
    edgesUnreachable: views.filter((edge) => edge.condition === 'unreachable').map((edge) => edge.edge),
    edgesGone: views.filter((edge) => edge.condition === 'gone').map((edge) => edge.edge),
  };
}

interface TaskProgress {
  readonly done: boolean;
  readonly missing: readonly string[];
}

function replicasReached(
  running: readonly TaskInfo[],
  routed: RoutedService | undefined,
  replicas: number,
): TaskProgress {
  const routedCount = routed?.servers.length ?? 0;
  const done = running.length === replicas && (routed === undefined || routedCount === replicas);
  return {
    done,
    missing: done
      ? []
      : [
          ...(running.length !== replicas ? [`${running.length} of ${replicas} tasks running`] : []),
          ...(routed && routedCount !== replicas ? [`${routedCount} of ${replicas} tasks routed`] : []),
        ],
  };
}

function imageRolledOut(
  running: readonly TaskInfo[],
  routed: RoutedService | undefined,
  image: string,
  replicas: number | null,
): TaskProgress {
  const onImage = running.filter((task) => runsImage(task, image));
  const routedIps = new Set(routed?.servers.map((server) => server.ip) ?? []);
  const allOnImage = onImage.length === running.length && running.length > 0;
  const enough = replicas === null || running.length === replicas;
  const allRouted =
    routed === undefined ||
    onImage.every((task) => task.addresses.some((address) => routedIps.has(address.ip)));
  const done = allOnImage && enough && allRouted;
  return {
    done,
    missing: done ? [] : [`${onImage.length} of ${running.length} running tasks on ${image}`],
  };
}

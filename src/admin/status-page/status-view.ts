// Pure: what the status page shows, from the controller's current state. The page renders this JSON as it
// arrives over server-sent events; nothing here touches Docker or the network.
import type { CertificateStatus } from '../../acme/certificate-manager.ts';
import type { Snapshot } from '../../discovery/snapshot.ts';
import { lookupLabel } from '../../model/routing-model.ts';
import type { RoutingModel } from '../../model/routing-model.ts';
import type { Problem } from '../../model/problems.ts';
import type { EdgeState, PublishedBundle } from '../../publish/bundle-store.ts';
import type { RouteTraffic } from './edge-traffic.ts';

export interface StatusRoute {
  readonly service: string;
  readonly hosts: readonly string[];
  readonly path: string;
  readonly routed: boolean;
  /** Why the route is not (fully) served; null when it is. */
  readonly reason: string | null;
  readonly desiredReplicas: number | null;
  readonly routedTasks: number;
  readonly tasksByNode: readonly { readonly node: string; readonly tasks: number }[];
}

export interface StatusEdge {
  readonly edge: string;
  readonly node: string | null;
  readonly appliedVersion: number | null;
  readonly inSync: boolean;
  readonly lastContact: string;
  readonly stale: boolean;
  readonly rejected: string | null;
}

export interface StatusView {
  readonly generatedAt: string;
  readonly version: string;
  readonly configVersion: number | null;
  readonly publishedAt: string | null;
  readonly routes: readonly StatusRoute[];
  readonly edges: readonly StatusEdge[];
  readonly certificates: readonly CertificateStatus[];
  readonly problems: readonly Problem[];
  /** null: no edge metrics targets are configured (SWARMGATE_EDGE_METRICS_TARGETS). */
  readonly traffic: readonly RouteTraffic[] | null;
}

export interface StatusInput {
  readonly now: number;
  readonly version: string;
  readonly snapshot: Snapshot | null;
  readonly model: RoutingModel;
  readonly current: PublishedBundle | null;
  readonly edges: readonly EdgeState[];
  readonly certificates: readonly CertificateStatus[];
  readonly traffic: readonly RouteTraffic[] | null;
  readonly edgeStaleMs: number;
}

export function buildStatusView(input: StatusInput): StatusView {
  const { snapshot, model } = input;
  const nodes = new Map(snapshot?.nodes.map((node) => [node.id, node.hostname]) ?? []);
  const routes: StatusRoute[] = [];
  for (const service of snapshot?.services ?? []) {
    if (lookupLabel(service, 'VIRTUAL_HOST') === undefined) continue;
    const routed = model.services.find((candidate) => candidate.name === service.name);
    const errors = model.problems.filter(
      (problem) => problem.service === service.name && problem.severity === 'error',
    );
    const perNode = new Map<string, number>();
    for (const server of routed?.servers ?? []) {
      const node = nodes.get(server.nodeId) ?? server.nodeId;
      perNode.set(node, (perNode.get(node) ?? 0) + 1);
    }
    const routedTasks = routed?.servers.length ?? 0;
    const reason = !routed
      ? errors.map((problem) => `${problem.label}: ${problem.reason}`).join('; ') || 'not routed'
      : routedTasks === 0
        ? 'no running task: the edges answer 503'
        : null;
    routes.push({
      service: service.name,
      hosts: routed?.hosts ?? [],
      path: routed?.path ?? lookupLabel(service, 'VIRTUAL_PATH') ?? '/',
      routed: routed !== undefined,
      reason,
      desiredReplicas: service.replicas,
      routedTasks,
      tasksByNode: [...perNode.entries()]
        .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
        .map(([node, tasks]) => ({ node, tasks })),
    });
  }
  routes.sort((a, b) => (a.service < b.service ? -1 : a.service > b.service ? 1 : 0));
  return {
    generatedAt: new Date(input.now).toISOString(),
    version: input.version,
    configVersion: input.current?.version ?? null,
    publishedAt: input.current?.publishedAt ?? null,
    routes,
    edges: input.edges.map((edge) => ({
      edge: edge.edge,
      // Edges report their node's ID (Swarm's {{.Node.ID}}); people know nodes by hostname, as the routes show them.
      node: edge.node === null ? null : (nodes.get(edge.node) ?? edge.node),
      appliedVersion: edge.applied?.version ?? null,
      inSync: edge.inSync,
      lastContact: edge.lastContact,
      stale: input.now - Date.parse(edge.lastContact) > input.edgeStaleMs,
      rejected: edge.rejected?.error ?? null,
    })),
    certificates: input.certificates,
    problems: model.problems,
    traffic: input.traffic,
  };
}

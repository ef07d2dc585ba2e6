// Pure: what each edge's active health checks think, named for people. An edge reports the addresses and upstreams
// it took out of its rotation; the status shows them with the service and task they belong to in the current model
// (null when the model no longer routes that address: the report is older than the last publish).
import type { RoutingModel } from '../model/routing-model.ts';
import type { TaskDown } from '../publish/bundle-store.ts';

export interface TaskDownView extends TaskDown {
  readonly service: string | null;
  readonly task: string | null;
}

export function nameTasksDown<
  E extends { readonly tasksDown?: readonly TaskDown[]; readonly tasksDownOmitted?: number },
>(
  edges: readonly E[],
  model: Pick<RoutingModel, 'upstreams'>,
): (Omit<E, 'tasksDown' | 'tasksDownOmitted'> & {
  readonly tasksDown: TaskDownView[];
  readonly tasksDownOmitted: number;
})[] {
  const services = new Map<string, string>();
  const tasks = new Map<string, string>();
  for (const upstream of model.upstreams) {
    services.set(upstream.name, upstream.service);
    for (const server of upstream.servers) tasks.set(`${server.ip}:${server.port}`, server.taskId);
  }
  return edges.map((edge) => ({
    ...edge,
    tasksDown: (edge.tasksDown ?? []).map((down) => ({
      ...down,
      service: services.get(down.upstream) ?? null,
      task: tasks.get(down.address) ?? null,
    })),
    tasksDownOmitted: edge.tasksDownOmitted ?? 0,
  }));
}

// Whether Swarm has finished moving a service's tasks: while it has not, the controller polls fast.
import type { ServiceInfo, Snapshot, TaskInfo } from '../discovery/snapshot.ts';

/** States a task passes through before running; a task in one of them is on its way up or down. */
const ACTIVE_STATES = new Set([
  'new',
  'allocated',
  'pending',
  'assigned',
  'accepted',
  'preparing',
  'ready',
  'starting',
  'running',
]);

export function isConverged(service: ServiceInfo, tasks: readonly TaskInfo[]): boolean {
  if (service.updateState === 'updating' || service.updateState === 'rollback_started') return false;
  let running = 0;
  for (const task of tasks) {
    if (task.desiredState === 'running') {
      if (task.state !== 'running') return false;
      running++;
    } else if (ACTIVE_STATES.has(task.state)) {
      // told to stop (shutdown, remove) but not stopped yet
      return false;
    }
  }
  return service.mode !== 'replicated' || running === service.replicas;
}

/** IDs of the services matching `include` that Swarm is still converging. */
export function unconvergedServices(
  snapshot: Snapshot,
  include: (service: ServiceInfo) => boolean,
): Set<string> {
  const tasksByService = new Map<string, TaskInfo[]>();
  for (const task of snapshot.tasks) {
    const list = tasksByService.get(task.serviceId);
    if (list) list.push(task);
    else tasksByService.set(task.serviceId, [task]);
  }
  const result = new Set<string>();
  for (const service of snapshot.services) {
    if (include(service) && !isConverged(service, tasksByService.get(service.id) ?? []))
      result.add(service.id);
  }
  return result;
}

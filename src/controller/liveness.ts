// Liveness that means something: the controller is alive when it still reaches Docker and its loop still turns.
// A controller without Docker (socket gone, daemon restarted under a file bind), with a reconcile stuck past its
// timeout, or whose loop stopped starting reconciles publishes nothing while it looks healthy; failing /healthz
// lets Swarm restart it.
import type { DockerEvent, DockerPort } from '../docker/docker-port.ts';
import type { Clock } from '../reconcile/clock.ts';

export type Liveness = { readonly ok: true } | { readonly ok: false; readonly reason: string };

export interface LivenessInputs {
  readonly now: number;
  /** When the controller started: a controller that never reached Docker is judged from here. */
  readonly startedAt: number;
  readonly lastDockerSuccessAt: number | null;
  /** Start of the reconcile that is running now, or null. */
  readonly reconcileRunningSince: number | null;
  /** Longest acceptable time without a successful Docker call. */
  readonly dockerBoundMs: number;
  /** The reconcile's own timeout: a run far past it is a stuck loop (the timeout did not take). */
  readonly reconcileTimeoutMs: number;
  /** When the last reconcile finished (whatever its outcome), or null. */
  readonly lastReconcileFinishedAt: number | null;
  /**
   * Longest acceptable time without a finished reconcile. The slow poll starts one every few seconds, so a loop
   * that stopped starting (its trigger or poll died) shows here, while the state lease's ticks keep Docker fresh.
   */
  readonly reconcileBoundMs: number;
}

/** max(Docker bound, 2 × reconcile timeout + 3 × slow poll): a slow but turning loop never trips it. */
export function reconcileBoundOf(
  dockerBoundMs: number,
  reconcileTimeoutMs: number,
  slowPollMs: number,
): number {
  return Math.max(dockerBoundMs, 2 * reconcileTimeoutMs + 3 * slowPollMs);
}

/**
 * Pure: the verdict for /healthz. Bounded on purpose: Swarm restarts a controller only after the bound plus its
 * health check's retries, so a Docker outage costs at most one restart every minute or two, never a storm.
 */
export function livenessOf(inputs: LivenessInputs): Liveness {
  const since = inputs.lastDockerSuccessAt ?? inputs.startedAt;
  const withoutDocker = inputs.now - since;
  if (withoutDocker > inputs.dockerBoundMs) {
    return {
      ok: false,
      reason: `no successful Docker call for ${Math.round(withoutDocker / 1000)} s (limit ${Math.round(inputs.dockerBoundMs / 1000)} s)`,
    };
  }
  if (inputs.reconcileRunningSince !== null) {
    const running = inputs.now - inputs.reconcileRunningSince;
    if (running > 2 * inputs.reconcileTimeoutMs) {
      return {
        ok: false,
        reason: `a reconcile has been running for ${Math.round(running / 1000)} s (its timeout is ${Math.round(inputs.reconcileTimeoutMs / 1000)} s): the loop is stuck`,
      };
    }
  }
  const sinceReconcile = inputs.now - (inputs.lastReconcileFinishedAt ?? inputs.startedAt);
  if (sinceReconcile > inputs.reconcileBoundMs) {
    return {
      ok: false,
      reason: `no reconcile has finished for ${Math.round(sinceReconcile / 1000)} s (limit ${Math.round(inputs.reconcileBoundMs / 1000)} s): the loop stopped`,
    };
  }
  return { ok: true };
}

export interface TrackedDocker {
  readonly docker: DockerPort;
  /** Clock time of the last Docker call that succeeded (or event received), or null. */
  lastSuccessAt(): number | null;
}

/** Wraps a Docker port so that every call that succeeds (and every event that arrives) is noted with its time. */
export function trackDockerCalls(inner: DockerPort, clock: Clock): TrackedDocker {
  let last: number | null = null;
  const noted = async <T>(call: Promise<T>): Promise<T> => {
    const value = await call;
    last = clock.now();
    return value;
  };
  async function* events(stream: AsyncIterable<DockerEvent>): AsyncIterable<DockerEvent> {
    for await (const event of stream) {
      last = clock.now();
      yield event;
    }
  }
  const docker: DockerPort = {
    listServices: (signal) => noted(inner.listServices(signal)),
    listTasks: (signal, filter, convert) => noted(inner.listTasks(signal, filter, convert)),
    listNetworks: (signal) => noted(inner.listNetworks(signal)),
    listNodes: (signal) => noted(inner.listNodes(signal)),
    openEventStream: async (signal) => events(await noted(inner.openEventStream(signal))),
    listConfigs: (label, signal) => noted(inner.listConfigs(label, signal)),
    createConfig: (name, labels, data, signal) => noted(inner.createConfig(name, labels, data, signal)),
    removeConfig: (id, signal) => noted(inner.removeConfig(id, signal)),
    inspectService: (idOrName, signal) => noted(inner.inspectService(idOrName, signal)),
    updateService: (id, version, spec, auth, signal) =>
      noted(inner.updateService(id, version, spec, auth, signal)),
  };
  return { docker, lastSuccessAt: () => last };
}

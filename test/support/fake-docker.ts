// A fake Docker port: tests set services and tasks as the Engine API would return them, emit events, and break
// the event stream to simulate a daemon restart.
import type {
  DockerEvent,
  DockerPort,
  RawConfig,
  RawNetwork,
  UpdateAuth,
  RawNode,
  RawService,
  RawTask,
  TaskFilter,
} from '../../src/docker/docker-port.ts';
import { SwarmgateError } from '../../src/errors.ts';

/** swarmkit's isValidConfigOrSecretName; the length limit (64) is checked beside it. */
export const CONFIG_NAME = /^[a-zA-Z0-9]+(?:[a-zA-Z0-9-_.]*[a-zA-Z0-9])?$/;

interface Subscriber {
  push(event: DockerEvent): void;
  fail(error: Error): void;
}

export class FakeDocker implements DockerPort {
  services: RawService[] = [];
  tasks: RawTask[] = [];
  networks: RawNetwork[] = [{ Id: 'net-sg', Name: 'swarmgate', Driver: 'overlay', Scope: 'swarm' }];
  nodes: RawNode[] = [
    {
      ID: 'node-1',
      Description: { Hostname: 'node-1' },
      Spec: { Role: 'manager' },
      Status: { State: 'ready' },
    },
  ];
  configs: RawConfig[] = [];
  /** The next N createConfig calls fail as if the daemon dropped them (after the name check). */
  createConfigFailures = 0;
  /** createConfig fails for every config this picks (by name and labels), until it is unset. */
  refuseConfig: ((name: string, labels: Record<string, string>) => boolean) | null = null;
  readonly calls = { listServices: 0, listTasks: 0, subscribe: 0, createConfig: 0 };
  private nextConfigId = 1;
  /**
   * Swarm's Raft index: every config write takes the next one, and a config's Version.Index is the index of its
   * write. It only grows, as in Swarm (version epochs rely on it); tests may start it anywhere.
   */
  raftIndex = 100;
  /** While true, every call fails as if the daemon were down. */
  down = false;
  private subscribers = new Set<Subscriber>();

  private check(): void {
    if (this.down) throw new SwarmgateError('ERR_DOCKER_UNAVAILABLE', 'fake daemon is down');
  }

  async listServices(): Promise<RawService[]> {
    this.check();
    this.calls.listServices++;
    return structuredClone(this.services);
  }

  /** The filters each listTasks call carried, in order. */
  readonly taskFilters: (TaskFilter | undefined)[] = [];

  async listTasks<T = RawTask>(
    _signal?: AbortSignal,
    filter?: TaskFilter,
    convert?: (task: RawTask) => T,
  ): Promise<T[]> {
    this.check();
    this.calls.listTasks++;
    this.taskFilters.push(filter);
    // As the Engine: a service filter naming a service that does not exist (any more) is a 404 for the whole list.
    const missing = filter?.services?.find((id) => !this.services.some((service) => service.ID === id));
    if (missing !== undefined) {
      throw new SwarmgateError('ERR_DOCKER_REQUEST', `list tasks failed: service ${missing} not found`, {
        statusCode: 404,
      });
    }
    // As the Engine API filters: desired state, and any of the services named.
    const listed = structuredClone(
      this.tasks.filter(
        (task) =>
          (!filter?.desiredState || task.DesiredState === filter.desiredState) &&
          (!filter?.services || filter.services.includes(task.ServiceID ?? '')),
      ),
    );
    return convert ? listed.map(convert) : (listed as T[]);
  }

  async listNetworks(): Promise<RawNetwork[]> {
    this.check();
    return structuredClone(this.networks);
  }

  async listNodes(): Promise<RawNode[]> {
    this.check();
    return structuredClone(this.nodes);
  }

  async openEventStream(signal: AbortSignal): Promise<AsyncIterable<DockerEvent>> {
    this.check();
    this.calls.subscribe++;
    const queue: DockerEvent[] = [];
    const state: { failure: Error | null } = { failure: null };
    let wake: (() => void) | null = null;
    const subscriber: Subscriber = {
      push: (event) => {
        queue.push(event);
        wake?.();
      },
      fail: (error) => {
        state.failure = error;
        wake?.();
      },
    };
    this.subscribers.add(subscriber);
    signal.addEventListener('abort', () => wake?.(), { once: true });
    const subscribers = this.subscribers;
    return (async function* () {
      try {
        while (!signal.aborted) {
          const next = queue.shift();
          if (next) {
            yield next;
            continue;
          }
          if (state.failure) throw state.failure;
          await new Promise<void>((resolve) => (wake = resolve));
          wake = null;
        }
      } finally {
        subscribers.delete(subscriber);
      }
    })();
  }

  async listConfigs(label: string): Promise<RawConfig[]> {
    this.check();
    return structuredClone(this.configs.filter((config) => config.Spec?.Labels?.[label] !== undefined));
  }

  async createConfig(name: string, labels: Record<string, string>, data: Buffer): Promise<string> {
    this.check();
    // swarmkit's validateConfigOrSecretAnnotations (manager/controlapi/common.go): a fake that accepted any name
    // hid that long host names could never be stored.
    if (name.length > 64 || !CONFIG_NAME.test(name)) {
      throw new SwarmgateError(
        'ERR_DOCKER_REQUEST',
        `create config failed: invalid name, only 64 [a-zA-Z0-9-_.] characters allowed, and the start and end character must be [a-zA-Z0-9] (${name})`,
        { statusCode: 400 },
      );
    }
    if (this.createConfigFailures > 0 || this.refuseConfig?.(name, labels)) {
      if (this.createConfigFailures > 0) this.createConfigFailures--;
      throw new SwarmgateError('ERR_DOCKER_UNAVAILABLE', 'fake daemon refused to create a config');
    }
    if (this.configs.some((config) => config.Spec?.Name === name)) {
      throw new SwarmgateError('ERR_DOCKER_REQUEST', `config ${name} already exists`, { statusCode: 409 });
    }
    this.calls.createConfig++;
    const id = `cfg-${this.nextConfigId++}`;
    this.configs.push({
      ID: id,
      Version: { Index: ++this.raftIndex },
      Spec: { Name: name, Labels: labels, Data: data.toString('base64') },
    });
    return id;
  }

  async removeConfig(id: string): Promise<void> {
    this.check();
    this.raftIndex++;
    this.configs = this.configs.filter((config) => config.ID !== id);
  }

  /** Every update the fake received, with the auth it carried. */
  readonly updates: {
    id: string;
    version: number;
    spec: NonNullable<RawService['Spec']>;
    auth: UpdateAuth;
  }[] = [];
  /** The next N updates fail as stale (another writer won), to exercise the retry. */
  staleUpdates = 0;
  /** Plays Swarm's part after an update (e.g. tasks appear); skipped while onUpdateHold is set. */
  onUpdate: ((service: RawService) => void) | null = null;
  onUpdateHold = false;

  async inspectService(idOrName: string): Promise<RawService | null> {
    this.check();
    const service = this.services.find(
      (candidate) => candidate.ID === idOrName || candidate.Spec?.Name === idOrName,
    );
    return service ? structuredClone(service) : null;
  }

  async updateService(
    id: string,
    version: number,
    spec: NonNullable<RawService['Spec']>,
    auth: UpdateAuth,
  ): Promise<{ warnings: string[] }> {
    this.check();
    const service = this.services.find((candidate) => candidate.ID === id);
    if (!service)
      throw new SwarmgateError('ERR_DOCKER_REQUEST', `no such service ${id}`, { statusCode: 404 });
    if (this.staleUpdates > 0 || version !== (service.Version?.Index ?? 0)) {
      if (this.staleUpdates > 0) {
        this.staleUpdates--;
        service.Version = { Index: (service.Version?.Index ?? 0) + 1 };
      }
      throw new SwarmgateError('ERR_DOCKER_CONFLICT', 'update out of sequence');
    }
    this.updates.push({ id, version, spec: structuredClone(spec), auth });
    service.Spec = structuredClone(spec);
    service.Version = { Index: version + 1 };
    if (this.onUpdate && !this.onUpdateHold) this.onUpdate(service);
    return { warnings: [] };
  }

  emit(event: DockerEvent): void {
    for (const subscriber of this.subscribers) subscriber.push(event);
  }

  /** Ends every open event stream with an error, as a daemon restart does. */
  breakStreams(): void {
    for (const subscriber of this.subscribers) subscriber.fail(new SwarmgateError('ERR_EVENT_STREAM_ENDED'));
  }

  get subscriberCount(): number {
    return this.subscribers.size;
  }
}

/** Raw service and task records as the Engine API returns them. */
export function rawService(
  id: string,
  labels: Record<string, string>,
  options: { replicas?: number; createdAt?: string; networks?: string[]; updateState?: string } = {},
): RawService {
  return {
    ID: id,
    CreatedAt: options.createdAt ?? '2026-01-01T00:00:00Z',
    Version: { Index: 10 },
    Spec: {
      Name: id,
      Labels: labels,
      Mode: { Replicated: { Replicas: options.replicas ?? 1 } },
      TaskTemplate: {
        ContainerSpec: { Image: 'example/app:1' },
        Networks: (options.networks ?? ['net-sg']).map((target) => ({ Target: target })),
      },
    },
    UpdateStatus: options.updateState ? { State: options.updateState } : null,
  };
}

export function rawTask(
  id: string,
  serviceId: string,
  ip: string,
  options: { state?: string; desiredState?: string; since?: string } = {},
): RawTask {
  return {
    ID: id,
    ServiceID: serviceId,
    NodeID: 'node-1',
    Slot: 1,
    DesiredState: options.desiredState ?? 'running',
    Status: { State: options.state ?? 'running', Timestamp: options.since ?? new Date().toISOString() },
    NetworksAttachments: [
      { Network: { ID: 'net-sg', Spec: { Name: 'swarmgate' } }, Addresses: [`${ip}/24`] },
    ],
  };
}

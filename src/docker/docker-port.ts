// The narrow port through which swarmgate talks to Docker. Only the adapter imports dockerode; tests use fakes.
// The Raw* types name just the Engine API fields swarmgate reads (the API returns more).

export interface RawService {
  ID?: string;
  CreatedAt?: string;
  Version?: { Index?: number };
  Spec?: {
    Name?: string;
    Labels?: Record<string, string> | null;
    Mode?: {
      Replicated?: { Replicas?: number };
      Global?: object;
      ReplicatedJob?: object;
      GlobalJob?: object;
    };
    TaskTemplate?: {
      ContainerSpec?: {
        Image?: string;
        Env?: string[] | null;
        Mounts?: RawMount[] | null;
        /** Capabilities added to the default set (API 1.41+): any of them can lead out of the container. */
        CapabilityAdd?: string[] | null;
        Privileges?: {
          Seccomp?: { Mode?: string } | null;
          AppArmor?: { Mode?: string } | null;
        } | null;
      };
      Networks?: { Target?: string; Aliases?: string[] }[] | null;
    };
  };
  UpdateStatus?: { State?: string } | null;
}

export interface RawMount {
  Type?: string;
  Source?: string;
  Target?: string;
  ReadOnly?: boolean;
  VolumeOptions?: { DriverConfig?: { Options?: Record<string, string> | null } | null } | null;
}

export interface RawTask {
  ID?: string;
  ServiceID?: string;
  NodeID?: string;
  Slot?: number;
  DesiredState?: string;
  Spec?: { ContainerSpec?: { Image?: string } };
  Status?: { State?: string; Timestamp?: string; Err?: string };
  NetworksAttachments?:
    { Network?: { ID?: string; Spec?: { Name?: string } }; Addresses?: string[] | null }[] | null;
}

export interface RawNetwork {
  Id?: string;
  Name?: string;
  Driver?: string;
  Scope?: string;
  Ingress?: boolean;
  Attachable?: boolean;
}

export interface RawNode {
  ID?: string;
  Description?: { Hostname?: string };
  Spec?: { Role?: string; Availability?: string };
  Status?: { State?: string; Addr?: string };
}

export interface RawConfig {
  ID?: string;
  CreatedAt?: string;
  /** Swarm's Raft index of the config's last write: it only grows, across the whole swarm's life. */
  Version?: { Index?: number };
  Spec?: { Name?: string; Labels?: Record<string, string> | null; Data?: string };
}

/** One line of the /events stream (only the fields swarmgate reads). */
export interface DockerEvent {
  Type?: string;
  Action?: string;
  Actor?: { ID?: string; Attributes?: Record<string, string> };
  scope?: string;
  time?: number;
}

/** Credentials sent as X-Registry-Auth so every node can pull the image. */
export interface RegistryAuth {
  readonly username: string;
  readonly password: string;
  readonly serveraddress: string;
}

/**
 * What a service update says about registry credentials:
 * - credentials: these replace the service's stored pull credentials;
 * - 'anonymous': an explicit empty auth (`{}`) replaces them, so nodes pull without credentials;
 * - 'keep': no X-Registry-Auth at all, so dockerd keeps the stored ones (right when the image does not change).
 * A new image must never use 'keep': dockerd would send the old image's credentials to the new image's registry
 * (moby daemon/cluster/services.go, Cluster.UpdateService: with no encoded auth it copies the current spec's
 * PullOptions and uses them to pin and pull the new image; review F7).
 */
export type UpdateAuth = RegistryAuth | 'anonymous' | 'keep';

/** Which tasks to list (the Engine API's filters); without one, every task Docker keeps, history included. */
export interface TaskFilter {
  /** Only tasks Swarm wants in this state: leaves out the task history (several old tasks per slot). */
  readonly desiredState?: 'running';
  /** Only these services' tasks (IDs). */
  readonly services?: readonly string[];
}

export interface DockerPort {
  /** Only the fields RawService names may be present (adapters drop the rest). */
  listServices(signal: AbortSignal): Promise<RawService[]>;
  /**
   * Tasks, each handed to `convert` as it is read (none: as read). `convert` must be pure: an adapter may give a task
   * whose ID and version are those of one it listed before the value it converted then, without reading it again.
   * A caller that keeps tasks between lists then keeps only its own form of them, not the raw one as well.
   */
  listTasks<T = RawTask>(
    signal: AbortSignal,
    filter?: TaskFilter,
    convert?: (task: RawTask) => T,
  ): Promise<T[]>;
  listNetworks(signal: AbortSignal): Promise<RawNetwork[]>;
  listNodes(signal: AbortSignal): Promise<RawNode[]>;
  /**
   * Subscribes to swarm-scoped service, node and network events. Resolves once subscribed; the iterable then
   * yields events until the stream ends (throws ERR_EVENT_STREAM_ENDED) or the signal aborts (returns).
   */
  openEventStream(signal: AbortSignal): Promise<AsyncIterable<DockerEvent>>;
  /** Docker configs carrying `label` (any value), with their data. */
  listConfigs(label: string, signal: AbortSignal): Promise<RawConfig[]>;
  createConfig(
    name: string,
    labels: Record<string, string>,
    data: Buffer,
    signal: AbortSignal,
  ): Promise<string>;
  removeConfig(id: string, signal: AbortSignal): Promise<void>;
  /** The service with its full spec and version, or null if there is none by that name or ID. */
  inspectService(idOrName: string, signal: AbortSignal): Promise<RawService | null>;
  /**
   * Replaces the service spec (the full spec: omitted fields are cleared). `version` is the one inspected;
   * a stale one fails with ERR_DOCKER_CONFLICT.
   */
  updateService(
    id: string,
    version: number,
    spec: NonNullable<RawService['Spec']>,
    auth: UpdateAuth,
    signal: AbortSignal,
  ): Promise<{ warnings: string[] }>;
}

// fetchSnapshot: all Docker I/O of a reconcile, turned into plain, sorted, JSON-serialisable data.
// Everything after this point (model, render) is pure and testable from a snapshot file.
import type {
  DockerPort,
  RawConfig,
  RawNetwork,
  RawNode,
  RawService,
  RawTask,
} from '../docker/docker-port.ts';

export interface ServiceInfo {
  readonly id: string;
  readonly name: string;
  readonly createdAt: string;
  readonly labels: Readonly<Record<string, string>>;
  /** Container-spec environment, the fallback nginx-proxy users come with. */
  readonly env: Readonly<Record<string, string>>;
  readonly mode: 'replicated' | 'global' | 'job';
  readonly replicas: number | null;
  /** IDs (or names, for specs written by hand) of the networks in the task template. */
  readonly networks: readonly string[];
  readonly image: string;
  readonly updateState: string | null;
}

export interface TaskAddress {
  readonly networkId: string;
  readonly networkName: string;
  readonly ip: string;
}

export interface TaskInfo {
  readonly id: string;
  readonly serviceId: string;
  readonly nodeId: string;
  readonly slot: number | null;
  readonly desiredState: string;
  readonly state: string;
  /** When the task reached its current state (Swarm's own clock). */
  readonly stateSince: string;
  readonly error: string | null;
  readonly image: string;
  readonly addresses: readonly TaskAddress[];
}

export interface NetworkInfo {
  readonly id: string;
  readonly name: string;
  readonly driver: string;
  readonly scope: string;
  readonly ingress: boolean;
}

export interface NodeInfo {
  readonly id: string;
  readonly hostname: string;
  readonly role: string;
  readonly state: string;
  readonly availability: string;
}

/** A Docker config the operator labelled swarmgate.file=<kind> (htpasswd, error-page) for services to name. */
export interface ConfigFile {
  readonly name: string;
  readonly kind: string;
  /** The config's data as text. */
  readonly data: string;
}

export interface Snapshot {
  readonly services: readonly ServiceInfo[];
  readonly tasks: readonly TaskInfo[];
  readonly networks: readonly NetworkInfo[];
  readonly nodes: readonly NodeInfo[];
  /** Configs labelled swarmgate.file, read only when a service names one (absent: none named). */
  readonly configs?: readonly ConfigFile[];
}

/** The label a Docker config must carry to be read: the operator's consent that its data may reach the edges. */
export const CONFIG_FILE_LABEL = 'swarmgate.file';
/** Labels whose value names a Docker config. */
const CONFIG_REFERENCE_LABELS = ['swarmgate.auth.basic', 'swarmgate.error-page'];

export async function fetchSnapshot(docker: DockerPort, signal: AbortSignal): Promise<Snapshot> {
  const [services, tasks, networks, nodes] = await Promise.all([
    docker.listServices(signal),
    docker.listTasks(signal),
    docker.listNetworks(signal),
    docker.listNodes(signal),
  ]);
  const snapshot = toSnapshot({ services, tasks, networks, nodes });
  // Configs are read (one inspect each) only while some service names one.
  const named = snapshot.services.some((service) =>
    CONFIG_REFERENCE_LABELS.some((label) => service.labels[label] !== undefined),
  );
  if (!named) return snapshot;
  const configs = await docker.listConfigs(CONFIG_FILE_LABEL, signal);
  return { ...snapshot, configs: sortedBy(configs.map(toConfigFile), (config) => config.name) };
}

function toConfigFile(raw: RawConfig): ConfigFile {
  return {
    name: raw.Spec?.Name ?? '',
    kind: raw.Spec?.Labels?.[CONFIG_FILE_LABEL] ?? '',
    data: Buffer.from(raw.Spec?.Data ?? '', 'base64').toString('utf8'),
  };
}

export function toSnapshot(raw: {
  services: readonly RawService[];
  tasks: readonly RawTask[];
  networks: readonly RawNetwork[];
  nodes: readonly RawNode[];
}): Snapshot {
  return {
    services: sortedBy(raw.services.map(toServiceInfo), (service) => service.name),
    tasks: sortedBy(raw.tasks.map(toTaskInfo), (task) => `${task.serviceId}/${task.id}`),
    networks: sortedBy(raw.networks.map(toNetworkInfo), (network) => `${network.name}/${network.id}`),
    nodes: sortedBy(raw.nodes.map(toNodeInfo), (node) => node.id),
  };
}

function toServiceInfo(raw: RawService): ServiceInfo {
  const spec = raw.Spec ?? {};
  const mode = spec.Mode ?? {};
  const env: Record<string, string> = {};
  for (const entry of spec.TaskTemplate?.ContainerSpec?.Env ?? []) {
    const equals = entry.indexOf('=');
    if (equals > 0) env[entry.slice(0, equals)] = entry.slice(equals + 1);
  }
  return {
    id: raw.ID ?? '',
    name: spec.Name ?? raw.ID ?? '',
    createdAt: raw.CreatedAt ?? '',
    labels: { ...(spec.Labels ?? {}) },
    env,
    mode: mode.Global ? 'global' : mode.ReplicatedJob || mode.GlobalJob ? 'job' : 'replicated',
    replicas: mode.Replicated ? (mode.Replicated.Replicas ?? 1) : null,
    networks: (spec.TaskTemplate?.Networks ?? []).map((network) => network.Target ?? '').filter(Boolean),
    image: spec.TaskTemplate?.ContainerSpec?.Image ?? '',
    updateState: raw.UpdateStatus?.State ?? null,
  };
}

function toTaskInfo(raw: RawTask): TaskInfo {
  const addresses: TaskAddress[] = [];
  for (const attachment of raw.NetworksAttachments ?? []) {
    for (const cidr of attachment.Addresses ?? []) {
      addresses.push({
        networkId: attachment.Network?.ID ?? '',
        networkName: attachment.Network?.Spec?.Name ?? '',
        ip: cidr.split('/')[0] ?? '',
      });
    }
  }
  return {
    id: raw.ID ?? '',
    serviceId: raw.ServiceID ?? '',
    nodeId: raw.NodeID ?? '',
    slot: raw.Slot ?? null,
    desiredState: raw.DesiredState ?? '',
    state: raw.Status?.State ?? '',
    stateSince: raw.Status?.Timestamp ?? '',
    error: raw.Status?.Err ?? null,
    image: raw.Spec?.ContainerSpec?.Image ?? '',
    addresses,
  };
}

function toNetworkInfo(raw: RawNetwork): NetworkInfo {
  return {
    id: raw.Id ?? '',
    name: raw.Name ?? '',
    driver: raw.Driver ?? '',
    scope: raw.Scope ?? '',
    ingress: raw.Ingress === true || raw.Name === 'ingress',
  };
}

function toNodeInfo(raw: RawNode): NodeInfo {
  return {
    id: raw.ID ?? '',
    hostname: raw.Description?.Hostname ?? '',
    role: raw.Spec?.Role ?? '',
    state: raw.Status?.State ?? '',
    availability: raw.Spec?.Availability ?? '',
  };
}

/** Sorts by a string key computed once per item (20,000 tasks: the key is not rebuilt in every comparison). */
function sortedBy<T>(items: T[], key: (item: T) => string): T[] {
  return items
    .map((item) => ({ item, sortKey: key(item) }))
    .sort((a, b) => (a.sortKey < b.sortKey ? -1 : a.sortKey > b.sortKey ? 1 : 0))
    .map((entry) => entry.item);
}

// fetchSnapshot: all Docker I/O of a reconcile, turned into plain, sorted, JSON-serialisable data.
// Everything after this point (model, render) is pure and testable from a snapshot file.
import { isSwarmgateError } from '../errors.ts';
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

/** Services named in one task filter; more are listed in batches (a URL of 100 IDs is about 2.6 KB). */
const SERVICES_PER_FILTER = 100;
/** Task lists read at once when many services change together (a node lost, a stack deployed). */
const BATCHES_AT_ONCE = 4;

/**
 * Every service, network and node, and the tasks Swarm wants running. Docker also keeps the last few tasks of
 * every slot (history: about as many again as the running ones, more after updates), which only matter for a
 * service that is changing: the tasks of the services `watch` picks from the listed services (those converging,
 * those whose spec just changed) are listed in full, told-to-stop and failed ones too.
 */
export async function fetchSnapshot(
  docker: DockerPort,
  signal: AbortSignal,
  watch: (services: readonly RawService[]) => Iterable<string> = () => [],
): Promise<Snapshot> {
  const listed = docker.listServices(signal);
  const watched = listed.then((services) => listServiceTasks(docker, signal, [...new Set(watch(services))]));
  const [services, running, changing, networks, nodes] = await Promise.all([
    listed,
    docker.listTasks(signal, { desiredState: 'running' }, toTaskInfo),
    watched,
    docker.listNetworks(signal),
    docker.listNodes(signal),
  ]);
  const snapshot = toSnapshot({ services, tasks: mergeTasks(running, changing), networks, nodes });
  // Configs are read (one inspect each) only while some service names one.
  const named = snapshot.services.some((service) =>
    CONFIG_REFERENCE_LABELS.some((label) => service.labels[label] !== undefined),
  );
  if (!named) return snapshot;
  const configs = await docker.listConfigs(CONFIG_FILE_LABEL, signal);
  return { ...snapshot, configs: sortedBy(configs.map(toConfigFile), (config) => config.name) };
}

/** The tasks of some services, all of them (history included), for a fast poll of services that are converging. */
export async function fetchServiceTasks(
  docker: DockerPort,
  signal: AbortSignal,
  services: readonly string[],
): Promise<TaskInfo[]> {
  return sortTasks(await listServiceTasks(docker, signal, services));
}

async function listServiceTasks(
  docker: DockerPort,
  signal: AbortSignal,
  services: readonly string[],
): Promise<TaskInfo[]> {
  const batches: string[][] = [];
  for (let i = 0; i < services.length; i += SERVICES_PER_FILTER)
    batches.push(services.slice(i, i + SERVICES_PER_FILTER));
  const tasks: TaskInfo[] = [];
  let next = 0;
  const worker = async (): Promise<void> => {
    for (let batch = batches[next++]; batch; batch = batches[next++])
      tasks.push(...(await listTasksOf(docker, signal, batch)));
  };
  await Promise.all(Array.from({ length: Math.min(BATCHES_AT_ONCE, batches.length) }, worker));
  return tasks;
}

/**
 * The tasks of some services. The Engine answers 404 for the whole list when one of them is gone (removed since it
 * was listed): then each is asked alone, and a service that is gone has no tasks. Without this, one removed service
 * that was converging failed every later reconcile (found by the e2e suite on Docker 20.10).
 */
async function listTasksOf(
  docker: DockerPort,
  signal: AbortSignal,
  services: readonly string[],
): Promise<TaskInfo[]> {
  try {
    return await docker.listTasks(signal, { services }, toTaskInfo);
  } catch (error) {
    if (!isServiceGone(error)) throw error;
    if (services.length === 1) return [];
    const each = await Promise.all(services.map((service) => listTasksOf(docker, signal, [service])));
    return each.flat();
  }
}

function isServiceGone(error: unknown): boolean {
  return isSwarmgateError(error, 'ERR_DOCKER_REQUEST') && error.details.statusCode === 404;
}

/** The snapshot with the tasks of `services` replaced by `tasks` (a fast poll's answer for them). */
export function withServiceTasks(
  snapshot: Snapshot,
  services: ReadonlySet<string>,
  tasks: readonly TaskInfo[],
): Snapshot {
  return {
    ...snapshot,
    tasks: sortTasks([...snapshot.tasks.filter((task) => !services.has(task.serviceId)), ...tasks]),
  };
}

/** A task listed twice (running, and again among a watched service's) is the same task: the later read wins. */
function mergeTasks(running: TaskInfo[], watched: readonly TaskInfo[]): TaskInfo[] {
  // The running list is this reconcile's own array (sorted in place below): no copy of 100,000 tasks.
  if (watched.length === 0) return running;
  const byId = new Map<string, TaskInfo>();
  for (const task of running) byId.set(task.id, task);
  for (const task of watched) byId.set(task.id, task);
  return [...byId.values()];
}

/**
 * By `<service ID>/<task ID>`, compared without building that key: 100,000 keys and their wrappers were a good part
 * of the garbage each reconcile left.
 */
function sortTasks(tasks: TaskInfo[]): TaskInfo[] {
  return tasks.sort(compareTasks);
}

function compareTasks(a: TaskInfo, b: TaskInfo): number {
  if (a.serviceId !== b.serviceId) {
    const [x, y] = [a.serviceId, b.serviceId];
    // Neither service ID starts with the other: they decide as the keys would. Otherwise (never with Swarm's IDs of
    // one length) the keys themselves are compared.
    if (!x.startsWith(y) && !y.startsWith(x)) return x < y ? -1 : 1;
    const keyA = `${x}/${a.id}`;
    const keyB = `${y}/${b.id}`;
    return keyA < keyB ? -1 : keyA > keyB ? 1 : 0;
  }
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

function toConfigFile(raw: RawConfig): ConfigFile {
  return {
    name: raw.Spec?.Name ?? '',
    kind: raw.Spec?.Labels?.[CONFIG_FILE_LABEL] ?? '',
    data: Buffer.from(raw.Spec?.Data ?? '', 'base64').toString('utf8'),
  };
}

/** The snapshot of what was listed; tasks come converted (toTaskInfo) and are sorted in place. */
export function toSnapshot(raw: {
  services: readonly RawService[];
  tasks: TaskInfo[];
  networks: readonly RawNetwork[];
  nodes: readonly RawNode[];
}): Snapshot {
  return {
    services: sortedBy(raw.services.map(toServiceInfo), (service) => service.name),
    tasks: sortTasks(raw.tasks),
    networks: sortedBy(raw.networks.map(toNetworkInfo), (network) => `${network.name}/${network.id}`),
    nodes: sortedBy(raw.nodes.map(toNodeInfo), (node) => node.id),
  };
}

const serviceInfos = new WeakMap<RawService, ServiceInfo>();

/** As for tasks: an unchanged service listed again is the same raw object, and gets the same plain one. */
function toServiceInfo(raw: RawService): ServiceInfo {
  let info = serviceInfos.get(raw);
  if (!info) serviceInfos.set(raw, (info = convertService(raw)));
  return info;
}

function convertService(raw: RawService): ServiceInfo {
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

/**
 * The plain task of a raw one, as the Docker port converts each task it reads (pure: for a task that did not change
 * since the last list, the adapter hands out the plain task it made then, dockerode-adapter.ts). 100,000 tasks
 * converted anew on every reconcile were most of the garbage a reconcile left (and of the peak memory); kept in
 * this form only, they are one copy instead of a raw one and a plain one.
 */
export function toTaskInfo(raw: RawTask): TaskInfo {
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
    // A copy of exactly its length: an array grown by push keeps room for 17 (100,000 tasks: 13 MB of empty room).
    addresses: addresses.slice(),
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

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
 * The task of a raw one, as the Docker port converts each task it reads (pure: for a task that did not change since
 * the last list, the adapter hands out the task it made then, dockerode-adapter.ts). 100,000 tasks converted anew on
 * every reconcile were most of the garbage a reconcile left (and of the peak memory); kept in this form only, they
 * are one copy instead of a raw one and a plain one.
 */
export function toTaskInfo(raw: RawTask): TaskInfo {
  let only: AddressNetwork | null = null;
  let ip = '';
  let addresses: TaskAddress[] | null = null;
  for (const attachment of raw.NetworksAttachments ?? []) {
    for (const cidr of attachment.Addresses ?? []) {
      const network = addressNetwork(attachment.Network?.ID ?? '', attachment.Network?.Spec?.Name ?? '');
      const address = cidr.split('/')[0] ?? '';
      if (addresses) addresses.push({ ...network, ip: address });
      else if (only)
        addresses = [
          { ...only, ip },
          { ...network, ip: address },
        ];
      else {
        only = network;
        ip = address;
      }
    }
  }
  return new ListedTask(raw, addresses ?? only, ip);
}

/** The network of a task address: one frozen object per network, shared by every task on it. */
interface AddressNetwork {
  readonly networkId: string;
  readonly networkName: string;
}

const addressNetworks = new Map<string, AddressNetwork>();
/** Bounded: a swarm with more networks than this starts the table again. */
const MAX_ADDRESS_NETWORKS = 10_000;

function addressNetwork(networkId: string, networkName: string): AddressNetwork {
  const key = `${networkId}\u0000${networkName}`;
  let network = addressNetworks.get(key);
  if (!network) {
    if (addressNetworks.size >= MAX_ADDRESS_NETWORKS) addressNetworks.clear();
    network = Object.freeze({ networkId, networkName });
    addressNetworks.set(key, network);
  }
  return network;
}

/**
 * A listed task as kept between reconciles (100,000 of them at 10,000 services): its one address (what a task on
 * one overlay has) held as its network's shared object and its IP, not as an array and an object of its own. That
 * was 2 of a task's 8 heap objects and about 10 MB at 100,000 tasks, which the GC sizes the heap by (about 4x what
 * it finds alive) and marks on every full collection. It reads and serialises (toJSON) as the plain TaskInfo.
 */
class ListedTask implements TaskInfo {
  readonly id: string;
  readonly serviceId: string;
  readonly nodeId: string;
  readonly slot: number | null;
  readonly desiredState: string;
  readonly state: string;
  readonly stateSince: string;
  readonly error: string | null;
  readonly image: string;
  /** The network of its only address; or its addresses when it has several; null when it has none. */
  // Own fields (not #private ones), so a deep comparison of two tasks compares their addresses too.
  private readonly network: AddressNetwork | readonly TaskAddress[] | null;
  /** Its only address's IP ('' otherwise). */
  private readonly ip: string;

  constructor(raw: RawTask, network: AddressNetwork | readonly TaskAddress[] | null, ip: string) {
    this.id = raw.ID ?? '';
    this.serviceId = raw.ServiceID ?? '';
    this.nodeId = raw.NodeID ?? '';
    this.slot = raw.Slot ?? null;
    this.desiredState = raw.DesiredState ?? '';
    this.state = raw.Status?.State ?? '';
    this.stateSince = raw.Status?.Timestamp ?? '';
    this.error = raw.Status?.Err ?? null;
    this.image = raw.Spec?.ContainerSpec?.Image ?? '';
    this.network = network;
    this.ip = ip;
  }

  /** A new array on every read: the model reads a task's address with addressOn, which makes none. */
  get addresses(): readonly TaskAddress[] {
    const network = this.network;
    if (network === null) return [];
    if (isAddressList(network)) return network;
    return [{ ...network, ip: this.ip }];
  }

  /** The address on the named network (the first, as addresses.find would), without an array or object. */
  ipOn(networkName: string): string | undefined {
    const network = this.network;
    if (network === null) return undefined;
    if (isAddressList(network)) return network.find((address) => address.networkName === networkName)?.ip;
    return network.networkName === networkName ? this.ip : undefined;
  }

  toJSON(): TaskInfo {
    return {
      id: this.id,
      serviceId: this.serviceId,
      nodeId: this.nodeId,
      slot: this.slot,
      desiredState: this.desiredState,
      state: this.state,
      stateSince: this.stateSince,
      error: this.error,
      image: this.image,
      addresses: this.addresses,
    };
  }
}

function isAddressList(network: AddressNetwork | readonly TaskAddress[]): network is readonly TaskAddress[] {
  return Array.isArray(network);
}

/**
 * The IP of a task's (first) address on the named network, or undefined: the model's way to read it, which makes no
 * array or object for a listed task (100,000 of them per reconcile). Snapshots from files have plain tasks.
 */
export function addressOn(task: TaskInfo, networkName: string): string | undefined {
  if (task instanceof ListedTask) return task.ipOn(networkName);
  return task.addresses.find((address) => address.networkName === networkName)?.ip;
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

// The only file importing dockerode: it turns the DockerPort calls into Engine API requests.
import Docker from 'dockerode';
import type { Readable } from 'node:stream';
import { SwarmgateError } from '../errors.ts';
import type {
  DockerEvent,
  DockerPort,
  RawConfig,
  RawNetwork,
  RawNode,
  RawService,
  RawTask,
  UpdateAuth,
} from './docker-port.ts';
import { ElementCache, readJsonArray } from './json-array.ts';
import { splitJsonLines } from './json-lines.ts';
import type { TaskFilter } from './docker-port.ts';

// API 1.41 is what Docker 20.10 serves; every newer daemon still accepts it. No client timeout: docker-modem
// applies it to the event stream too and would cut it while Swarm is quiet.
const API_VERSION = 'v1.41';

export function createDockerodeAdapter(socketPath: string): DockerPort {
  const docker = new Docker({ socketPath, version: API_VERSION });

  async function call<T>(what: string, run: () => Promise<T>): Promise<T> {
    try {
      return await run();
    } catch (error) {
      const statusCode = (error as { statusCode?: number }).statusCode;
      const code = statusCode === undefined ? 'ERR_DOCKER_UNAVAILABLE' : 'ERR_DOCKER_REQUEST';
      throw new SwarmgateError(code, `${what} failed: ${(error as Error).message}`, { statusCode }, error);
    }
  }

  /**
   * A list read element by element, each cut down to what swarmgate reads as it arrives (see json-array.ts):
   * dockerode would join the whole body and parse it at once, 150 MB and over a gigabyte at 100,000 tasks.
   */
  function streamList<T>(
    path: string,
    filters: Record<string, string[]> | null,
    signal: AbortSignal,
    keep: (item: unknown) => T,
    cache?: ElementCache<T>,
  ): Promise<T[]> {
    return new Promise<Readable>((resolve, reject) => {
      docker.modem.dial(
        {
          path: `${path}?`,
          method: 'GET',
          options: filters ? { filters: JSON.stringify(filters) } : {},
          abortSignal: signal,
          isStream: true,
          statusCodes: { 200: true, 500: 'server error', 503: 'node is not part of a swarm' },
        },
        (error: Error | null, stream: unknown) => (error ? reject(error) : resolve(stream as Readable)),
      );
    }).then(async (stream) => {
      try {
        return await readJsonArray(stream as AsyncIterable<Buffer>, keep, cache);
      } finally {
        stream.destroy();
      }
    });
  }

  // Every reconcile lists every service and running task, of which only a few changed since the last list: the
  // unchanged ones are taken from the last list by ID and version instead of parsed again (json-array.ts). The
  // lists by service (fast polls) are small and parsed in full. Running tasks are remembered in the caller's form
  // (one cache per conversion): the raw ones would be a second copy of 100,000 tasks (about 35 MB).
  const serviceCache = new ElementCache<RawService>();
  const runningTaskCaches = new WeakMap<object, ElementCache<unknown>>();
  const runningTaskCache = (convert: object): ElementCache<unknown> => {
    let cache = runningTaskCaches.get(convert);
    if (!cache) runningTaskCaches.set(convert, (cache = new ElementCache<unknown>()));
    return cache;
  };
  const asIs = (task: RawTask): RawTask => task;

  return {
    listServices: (signal) =>
      call('list services', () => streamList('/services', null, signal, slimService, serviceCache)),
    async listTasks<T = RawTask>(
      signal: AbortSignal,
      filter?: TaskFilter,
      convert?: (task: RawTask) => T,
    ): Promise<T[]> {
      // An empty service filter is no filter to the Engine API: it would list every task.
      if (filter?.services?.length === 0) return [];
      const as = convert ?? (asIs as (task: RawTask) => T);
      const cache =
        filter?.desiredState === 'running' && filter.services === undefined
          ? (runningTaskCache(as) as ElementCache<T>)
          : undefined;
      return call('list tasks', () =>
        streamList('/tasks', taskFilters(filter), signal, (item) => as(slimTask(item)), cache),
      );
    },
    listNetworks: (signal) =>
      call(
        'list networks',
        () => docker.listNetworks({ abortSignal: signal } as object) as Promise<RawNetwork[]>,
      ),
    listNodes: (signal) =>
      call('list nodes', () => docker.listNodes({ abortSignal: signal } as object) as Promise<RawNode[]>),
    listConfigs: (label, signal) =>
      call('list configs', async () => {
        const listed = (await docker.listConfigs({
          filters: JSON.stringify({ label: [label] }),
          abortSignal: signal,
        } as object)) as RawConfig[];
        // The list may leave out Data on some engines: inspect each one.
        return Promise.all(
          listed.map(
            (config) =>
              docker
                .getConfig(config.ID ?? '')
                .inspect({ abortSignal: signal } as object) as Promise<RawConfig>,
          ),
        );
      }),
    createConfig: (name, labels, data, signal) =>
      call('create config', async () => {
        // _query/_body keep the config data out of the URL (docker-modem sends plain options as both).
        const created = (await docker.createConfig({
          _query: {},
          _body: { Name: name, Labels: labels, Data: data.toString('base64') },
          abortSignal: signal,
        })) as { id?: string };
        return created.id ?? '';
      }),
    removeConfig: (id, signal) =>
      call('remove config', async () => {
        await docker.getConfig(id).remove({ abortSignal: signal } as object);
      }),
    async inspectService(idOrName, signal) {
      try {
        return (await docker.getService(idOrName).inspect({ abortSignal: signal } as object)) as RawService;
      } catch (error) {
        if ((error as { statusCode?: number }).statusCode === 404) return null;
        return call('inspect service', () => Promise.reject(error as Error));
      }
    },
    async updateService(id, version, spec, auth, signal) {
      try {
        const result = (await docker.getService(id).update({
          _query: { version },
          _body: spec,
          abortSignal: signal,
          ...authOption(auth),
        })) as { Warnings?: string[] | null } | null;
        return { warnings: result?.Warnings ?? [] };
      } catch (error) {
        // Swarm's optimistic concurrency: someone updated the service since it was inspected.
        if (
          /update out of sequence|version/i.test((error as Error).message) &&
          (error as { statusCode?: number }).statusCode !== 404
        ) {
          throw new SwarmgateError(
            'ERR_DOCKER_CONFLICT',
            `service ${id} changed meanwhile: ${(error as Error).message}`,
          );
        }
        return call('update service', () => Promise.reject(error as Error));
      }
    },
    async openEventStream(signal: AbortSignal): Promise<AsyncIterable<DockerEvent>> {
      const stream = (await call('subscribe to events', () =>
        docker.getEvents({
          filters: { scope: ['swarm'], type: ['service', 'node', 'network'] },
          abortSignal: signal,
        } as object),
      )) as unknown as Readable;
      return readEvents(stream, signal);
    },
  };
}

/** The Engine API's task filters: each key's values are alternatives (any service of the list). */
function taskFilters(filter: TaskFilter | undefined): Record<string, string[]> | null {
  const filters: Record<string, string[]> = {};
  if (filter?.desiredState) filters['desired-state'] = [filter.desiredState];
  if (filter?.services) filters.service = [...filter.services];
  return Object.keys(filters).length > 0 ? filters : null;
}

/** The fields of a listed service swarmgate reads (RawService); the rest of the spec is dropped as it arrives. */
export function slimService(item: unknown): RawService {
  const raw = (item ?? {}) as RawService;
  const spec = raw.Spec;
  const template = spec?.TaskTemplate;
  const container = template?.ContainerSpec;
  // The image is the same for many services, and Docker's stack label com.docker.stack.image repeats it: kept once.
  const image = shared(container?.Image);
  const labels = spec?.Labels;
  if (labels && image !== undefined) {
    for (const [name, value] of Object.entries(labels)) if (value === image) labels[name] = image;
  }
  return {
    ID: raw.ID,
    CreatedAt: raw.CreatedAt,
    Version: raw.Version ? { Index: raw.Version.Index } : undefined,
    Spec: spec && {
      Name: spec.Name,
      Labels: labels,
      Mode: spec.Mode,
      TaskTemplate: template && {
        ContainerSpec: container && { Image: image, Env: container.Env, Mounts: container.Mounts },
        Networks: template.Networks?.map((network) => ({ Target: network.Target })),
      },
    },
    UpdateStatus: raw.UpdateStatus ? { State: raw.UpdateStatus.State } : raw.UpdateStatus,
  };
}

/** The fields of a listed task swarmgate reads (RawTask): no spec, no full network objects. */
export function slimTask(item: unknown): RawTask {
  const raw = (item ?? {}) as RawTask;
  return {
    ID: raw.ID,
    ServiceID: shared(raw.ServiceID),
    NodeID: shared(raw.NodeID),
    Slot: raw.Slot,
    DesiredState: shared(raw.DesiredState),
    Spec: sharedSpec(raw.Spec?.ContainerSpec?.Image),
    Status: raw.Status && {
      State: shared(raw.Status.State),
      Timestamp: raw.Status.Timestamp,
      Err: raw.Status.Err,
    },
    NetworksAttachments: raw.NetworksAttachments?.map((attachment) => ({
      Network: attachment.Network && sharedNetwork(attachment.Network.ID, attachment.Network.Spec?.Name),
      Addresses: attachment.Addresses,
    })),
  };
}

/**
 * Values many tasks repeat (their service, node, image, network, state) kept once: JSON.parse gives every task its
 * own copy, and the tasks of the last list are kept between reconciles (about 25 MB of copies at 100,000 tasks).
 */
const sharedValues = new Map<string, string>();
const MAX_SHARED_VALUES = 100_000;

/** The same frozen object for every task of one image, and of one network: 4 of a slim task's 9 objects. */
const sharedObjects = new Map<string, object>();

function sharedObject<T extends object>(key: string, make: () => T): T {
  const known = sharedObjects.get(key);
  if (known !== undefined) return known as T;
  if (sharedObjects.size >= MAX_SHARED_VALUES) sharedObjects.clear();
  const made = Object.freeze(make());
  sharedObjects.set(key, made);
  return made;
}

function sharedSpec(image: string | undefined): NonNullable<RawTask['Spec']> {
  return sharedObject(`spec\u0000${image ?? '\u0001'}`, () => ({
    ContainerSpec: Object.freeze({ Image: shared(image) }),
  }));
}

function sharedNetwork(
  id: string | undefined,
  name: string | undefined,
): { ID?: string; Spec?: { Name?: string } } {
  return sharedObject(`network\u0000${id ?? '\u0001'}\u0000${name ?? '\u0001'}`, () => ({
    ID: shared(id),
    Spec: Object.freeze({ Name: shared(name) }),
  }));
}

function shared(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  const known = sharedValues.get(value);
  if (known !== undefined) return known;
  // Bounded: a swarm with more distinct values than this starts the table again.
  if (sharedValues.size >= MAX_SHARED_VALUES) sharedValues.clear();
  sharedValues.set(value, value);
  return value;
}

/** `{}` in padded base64url, the encoding moby decodes X-Registry-Auth with (base64.URLEncoding). */
export const EMPTY_REGISTRY_AUTH = 'e30=';

function authOption(auth: UpdateAuth): { authconfig?: object } {
  if (auth === 'keep') return {};
  // docker-modem sends `base64` as is. moby's Cluster.UpdateService (daemon/cluster/services.go) stores any non-empty X-Registry-Auth as the new
  // PullOptions.RegistryAuth; "e30=" decodes to an empty AuthConfig, so nodes then pull anonymously. An absent
  // header would instead keep the previous PullOptions (review F7).
  if (auth === 'anonymous') return { authconfig: { base64: EMPTY_REGISTRY_AUTH } };
  return { authconfig: auth };
}

async function* readEvents(stream: Readable, signal: AbortSignal): AsyncIterable<DockerEvent> {
  try {
    for await (const event of splitJsonLines(stream as AsyncIterable<Buffer>)) yield event as DockerEvent;
  } catch (error) {
    if (signal.aborted) return;
    throw new SwarmgateError(
      'ERR_EVENT_STREAM_ENDED',
      `the Docker event stream failed: ${(error as Error).message}`,
      {},
      error,
    );
  } finally {
    stream.destroy();
  }
  if (!signal.aborted) throw new SwarmgateError('ERR_EVENT_STREAM_ENDED');
}

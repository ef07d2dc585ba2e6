// Changes to Swarm services the admin API makes, done the way `docker service scale` and `docker service update`
// do them: inspect, change the full spec, update with the inspected version, and retry when another writer won.
import type { DockerPort, RawMount, RawService, RegistryAuth, UpdateAuth } from '../docker/docker-port.ts';
import { posix } from 'node:path';
import { isSwarmgateError, SwarmgateError } from '../errors.ts';

const MAX_ATTEMPTS = 5;

/** The label docker-stack.yml puts on swarmgate's own services (controller, edge). */
export const COMPONENT_LABEL = 'swarmgate.component';

/**
 * Host paths a service may not bind, nor anything under them: the Docker and containerd sockets (/run, /var/run),
 * Docker's own data, the host's processes (/proc/1/root is the host's root), devices, kernel settings and the
 * host's configuration. Rolling such a service to an image of the caller's choice would hand out the host.
 */
const HOST_PATHS = [
  '/proc',
  '/run',
  '/var/run',
  '/var/lib/docker',
  '/var/lib/containerd',
  '/etc',
  '/dev',
  '/sys',
];
/** Files under those paths that services commonly bind read-only and that give nothing away. */
const READ_ONLY_ALLOWED = new Set(['/etc/localtime', '/etc/timezone']);

function isUnder(path: string, directory: string): boolean {
  return directory === '/' || path === directory || path.startsWith(`${directory}/`);
}

/** The host path a mount binds (a bind, or a local volume that binds a device path), normalised; null if none. */
function hostPathOf(mount: RawMount): string | null {
  const source = mount.Type === 'volume' ? mount.VolumeOptions?.DriverConfig?.Options?.device : mount.Source;
  if (!source) return null;
  // `/var/lib/../run` and `/run/.` are /run: judge the path the daemon will bind, not its spelling.
  const normalised = posix.normalize(`/${source}`).replace(/\/+$/, '');
  return normalised === '' ? '/' : normalised;
}

/** Why this mount reaches the host beyond the service's own data, or null. */
function hostReach(mount: RawMount): string | null {
  if (mount.Type === 'npipe') {
    return /docker_engine|containerd/i.test(mount.Source ?? '')
      ? `the named pipe ${mount.Source ?? ''}`
      : null;
  }
  const path = hostPathOf(mount);
  if (path === null) return null;
  if (READ_ONLY_ALLOWED.has(path) && mount.ReadOnly === true) return null;
  // A directory above a refused path (/, /var, /var/lib) reaches it too.
  const refused = HOST_PATHS.find((directory) => isUnder(path, directory) || isUnder(directory, path));
  if (refused !== undefined) return `the host path ${path} (${refused})`;
  if (/(?:^|\/)(?:docker|containerd)[^/]*\.sock$/.test(path)) return `the socket ${path}`;
  return null;
}

/** Why the service's container can leave its confinement, or null. */
function privileged(service: RawService): string | null {
  const container = service.Spec?.TaskTemplate?.ContainerSpec;
  const added = container?.CapabilityAdd ?? [];
  if (added.length > 0) return `it adds capabilities (${added.join(', ')})`;
  if (container?.Privileges?.Seccomp?.Mode === 'unconfined') return 'it runs without seccomp';
  if (container?.Privileges?.AppArmor?.Mode === 'disabled') return 'it runs without AppArmor';
  return null;
}

/**
 * Why the admin API must not change this service, or null when it may. The API scales and rolls only services the
 * routing model routes (VIRTUAL_HOST as a label or env, as the model reads it), never swarmgate's own services and
 * never a service that reaches the host (Docker or containerd socket, /proc, /etc, devices, added capabilities):
 * rolling one of those to an image of the caller's choice would hand out the Docker daemon or the host (review F2).
 */
export function whyNotManaged(service: RawService): string | null {
  const spec = service.Spec;
  const name = spec?.Name ?? service.ID ?? '';
  const component = spec?.Labels?.[COMPONENT_LABEL];
  if (component !== undefined) {
    return `service "${name}" is swarmgate's own ${component} (label ${COMPONENT_LABEL}); change it with docker service update`;
  }
  const container = spec?.TaskTemplate?.ContainerSpec;
  for (const mount of container?.Mounts ?? []) {
    const reach = hostReach(mount);
    if (reach !== null) return `service "${name}" mounts ${reach}; the API never changes such a service`;
  }
  const escape = privileged(service);
  if (escape !== null)
    return `service "${name}" is privileged: ${escape}; the API never changes such a service`;
  const env = container?.Env ?? [];
  const routed =
    spec?.Labels?.VIRTUAL_HOST !== undefined || env.some((entry) => entry.startsWith('VIRTUAL_HOST='));
  if (!routed) return `service "${name}" has no VIRTUAL_HOST: the API changes only services swarmgate routes`;
  return null;
}

type ServiceSpec = NonNullable<RawService['Spec']>;

async function updateWithRetry(
  docker: DockerPort,
  name: string,
  change: (spec: ServiceSpec, service: RawService) => ServiceSpec,
  auth: UpdateAuth,
  signal: AbortSignal,
): Promise<{ service: RawService; warnings: string[] }> {
  for (let attempt = 1; ; attempt++) {
    const service = await docker.inspectService(name, signal);
    if (!service?.ID || !service.Spec)
      throw new SwarmgateError('ERR_NOT_FOUND', `no service named "${name}"`);
    // Checked on every attempt: the spec that is updated is the one that was checked.
    const refusal = whyNotManaged(service);
    if (refusal) throw new SwarmgateError('ERR_SERVICE_NOT_MANAGED', refusal, { service: name });
    const spec = change(structuredClone(service.Spec), service);
    try {
      const { warnings } = await docker.updateService(
        service.ID,
        service.Version?.Index ?? 0,
        spec,
        auth,
        signal,
      );
      return { service, warnings };
    } catch (error) {
      if (!isSwarmgateError(error, 'ERR_DOCKER_CONFLICT') || attempt >= MAX_ATTEMPTS) throw error;
    }
  }
}

export interface ScaleResult {
  readonly service: string;
  readonly previousReplicas: number;
  readonly replicas: number;
  readonly warnings: string[];
}

export async function scaleService(
  docker: DockerPort,
  name: string,
  replicas: number,
  signal: AbortSignal,
): Promise<ScaleResult> {
  let previous = 0;
  const { service, warnings } = await updateWithRetry(
    docker,
    name,
    (spec) => {
      const replicated = spec.Mode?.Replicated;
      if (!replicated) {
        throw new SwarmgateError(
          'ERR_CONFLICT',
          `service "${name}" is not in replicated mode (global services run one task per node)`,
        );
      }
      previous = replicated.Replicas ?? 1;
      replicated.Replicas = replicas;
      return spec;
    },
    // Same image: the pull credentials stored with the service stay right for it.
    'keep',
    signal,
  );
  const stackWarning = stackNamespace(service)
    ? [
        `service "${name}" belongs to stack "${stackNamespace(service)}": the next docker stack deploy resets its replicas to the stack file's value`,
      ]
    : [];
  return {
    service: service.Spec?.Name ?? name,
    previousReplicas: previous,
    replicas,
    warnings: [...stackWarning, ...warnings],
  };
}

export interface ImageRollResult {
  readonly service: string;
  readonly previousImage: string;
  readonly image: string;
  readonly usedCredentialsFor: string | null;
  readonly warnings: string[];
}

/**
 * A rolling update to a new image; the matching credentials go along as X-Registry-Auth so every node can pull.
 * With none, an explicit empty auth: dockerd would otherwise reuse the service's previous credentials, for
 * another registry perhaps, against the new image's registry (see UpdateAuth).
 */
export async function rollServiceImage(
  docker: DockerPort,
  name: string,
  image: string,
  auth: RegistryAuth | null,
  signal: AbortSignal,
): Promise<ImageRollResult> {
  let previous = '';
  const { service, warnings } = await updateWithRetry(
    docker,
    name,
    (spec) => {
      const containerSpec = spec.TaskTemplate?.ContainerSpec;
      if (!spec.TaskTemplate || !containerSpec)
        throw new SwarmgateError('ERR_CONFLICT', `service "${name}" has no container spec`);
      previous = containerSpec.Image ?? '';
      containerSpec.Image = image;
      // A new image with the same tag must still redeploy: ForceUpdate is the counter `docker service update --force` bumps.
      const template = spec.TaskTemplate as { ForceUpdate?: number };
      template.ForceUpdate = (template.ForceUpdate ?? 0) + 1;
      return spec;
    },
    auth ?? 'anonymous',
    signal,
  );
  return {
    service: service.Spec?.Name ?? name,
    previousImage: previous,
    image,
    usedCredentialsFor: auth?.serveraddress ?? null,
    warnings: stackNamespace(service)
      ? [
          `service "${name}" belongs to a stack: the next docker stack deploy sets the stack file's image again`,
          ...warnings,
        ]
      : warnings,
  };
}

function stackNamespace(service: RawService): string | undefined {
  return service.Spec?.Labels?.['com.docker.stack.namespace'];
}

// Changes to Swarm services the admin API makes, done the way `docker service scale` and `docker service update`
// do them: inspect, change the full spec, update with the inspected version, and retry when another writer won.
import type { DockerPort, RawMount, RawService, RegistryAuth, UpdateAuth } from '../docker/docker-port.ts';
import { isSwarmgateError, SwarmgateError } from '../errors.ts';

const MAX_ATTEMPTS = 5;

/** The label docker-stack.yml puts on swarmgate's own services (controller, edge). */
export const COMPONENT_LABEL = 'swarmgate.component';

/** Host paths through which a bind mount reaches the Docker socket: the socket itself or a directory above it. */
const SOCKET_PATHS = new Set(['/', '/var', '/var/run', '/run', '/var/run/docker.sock', '/run/docker.sock']);

function reachesDockerSocket(mount: RawMount): boolean {
  const source = mount.Type === 'volume' ? mount.VolumeOptions?.DriverConfig?.Options?.device : mount.Source;
  if (!source) return false;
  if (mount.Type === 'npipe') return /docker_engine/i.test(source);
  const path = `/${source.split('/').filter(Boolean).join('/')}`;
  return SOCKET_PATHS.has(path) || path.endsWith('/docker.sock');
}

/**
 * Why the admin API must not change this service, or null when it may. The API scales and rolls only services the
 * routing model routes (VIRTUAL_HOST as a label or env, as the model reads it), never swarmgate's own services and
 * never a service that can reach the Docker socket: rolling one of those to an image of the caller's choice
 * would hand out the Docker daemon (review F2).
 */
export function whyNotManaged(service: RawService): string | null {
  const spec = service.Spec;
  const name = spec?.Name ?? service.ID ?? '';
  const component = spec?.Labels?.[COMPONENT_LABEL];
  if (component !== undefined) {
    return `service "${name}" is swarmgate's own ${component} (label ${COMPONENT_LABEL}); change it with docker service update`;
  }
  const container = spec?.TaskTemplate?.ContainerSpec;
  if ((container?.Mounts ?? []).some(reachesDockerSocket)) {
    return `service "${name}" mounts the Docker socket; the API never changes such a service`;
  }
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

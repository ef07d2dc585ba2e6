// One catalogue of coded errors. A code is never reused for another meaning; callers branch on `code`.

export const ERROR_CODES = {
  ERR_CONFIG_INVALID: 'configuration is invalid',
  ERR_DOCKER_UNAVAILABLE: 'the Docker API did not answer',
  ERR_DOCKER_REQUEST: 'the Docker API refused a request',
  ERR_EVENT_STREAM_ENDED: 'the Docker event stream ended',
  ERR_NGINX_INVALID: 'nginx rejected the configuration',
  ERR_NGINX_UNAVAILABLE: 'nginx could not be run',
  ERR_TEMPLATE: 'a template failed to render',
  ERR_BUNDLE_INVALID: 'a config bundle is malformed',
  ERR_CONTROLLER_UNREACHABLE: 'the controller did not answer',
  ERR_UNAUTHORIZED: 'missing or wrong bearer token',
  ERR_FORBIDDEN: 'the credential is valid but not for this route',
  ERR_NOT_FOUND: 'no such resource',
  ERR_BAD_REQUEST: 'the request is malformed',
  ERR_PAYLOAD_TOO_LARGE: 'the request body is too large',
  ERR_ABORTED: 'the operation was aborted',
  ERR_STATE_UNREADABLE: 'stored state cannot be opened',
  ERR_ACME: 'the ACME CA refused or failed an order',
  ERR_DOCKER_CONFLICT: 'the Swarm object changed since it was read',
  ERR_CONFLICT: 'the request conflicts with the current state',
  ERR_REGISTRY: 'the registry refused or failed a request',
  ERR_REQUEST_TARGET: 'the request target is not a plain path (backslash, dot segment or encoded separator)',
  ERR_REGISTRY_REALM: 'the registry sent a token realm that is not allowed for its credentials',
  ERR_SERVICE_NOT_MANAGED: 'the admin API does not change this service',
  ERR_STATE_LEASE: 'another controller holds the state lease',
  ERR_PUBLISH_HELD: 'publishing is held: the bundle would drop certificates the edges serve',
  ERR_EDGE_APPLY: 'the edge could not write or activate a bundle (its volume or nginx failed)',
  ERR_NGINX_RELOAD: 'nginx did not take a new configuration after a reload',
  ERR_VERSION_EPOCH: 'no version epoch from Swarm yet, or it is used up or not above the current one',
  ERR_ACME_DIRECTORY:
    "an ACME directory that is neither the controller's, its staging one nor one in SWARMGATE_ACME_DIRECTORIES",
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

export class SwarmgateError extends Error {
  readonly code: ErrorCode;
  readonly details: Readonly<Record<string, unknown>>;

  constructor(code: ErrorCode, message?: string, details: Record<string, unknown> = {}, cause?: unknown) {
    super(message ?? ERROR_CODES[code], cause === undefined ? undefined : { cause });
    this.name = 'SwarmgateError';
    this.code = code;
    this.details = details;
  }
}

export function isSwarmgateError(error: unknown, code?: ErrorCode): error is SwarmgateError {
  return error instanceof SwarmgateError && (code === undefined || error.code === code);
}

/** A message safe to log for any thrown value. */
export function describeError(error: unknown): string {
  if (error instanceof Error) return error.message;
  return String(error);
}

// Bad labels and conflicts are data, not exceptions: they are logged, kept for the status API, and only the
// offending service is left out.

export type ProblemCode =
  | 'INVALID_LABEL'
  | 'UNKNOWN_LABEL'
  | 'CONFLICT'
  | 'NO_SHARED_NETWORK'
  | 'AMBIGUOUS_NETWORK'
  | 'NGINX_REJECTED'
  | 'IGNORED_SETTING'
  | 'UNSUPPORTED_ADDRESS'
  | 'CERTIFICATE'
  /** An nginx-proxy or acme-companion setting swarmgate does not honour; the reason names what to use. */
  | 'UNSUPPORTED_SETTING';

export interface Problem {
  readonly service: string;
  readonly label: string;
  readonly code: ProblemCode;
  readonly reason: string;
  /** error: the service is left out; warning: it is routed anyway. */
  readonly severity: 'error' | 'warning';
}

export function compareProblems(a: Problem, b: Problem): number {
  const ka = `${a.service}\u0000${a.label}\u0000${a.code}\u0000${a.reason}`;
  const kb = `${b.service}\u0000${b.label}\u0000${b.code}\u0000${b.reason}`;
  return ka < kb ? -1 : ka > kb ? 1 : 0;
}

// swarmgate.access_log: a service's own access log, or none. Its own file, so the label grammar in labels.ts
// (edited for other labels too) gains one import instead of another block.
import type { Parsed } from './labels.ts';

/** off: no access log for the service; json: swarmgate's JSON lines; nginx-proxy: nginx-proxy's "vhost" format. */
export type AccessLog = 'off' | 'json' | 'nginx-proxy';
export const ACCESS_LOGS: readonly AccessLog[] = ['off', 'json', 'nginx-proxy'];

export function parseAccessLog(raw: string): Parsed<AccessLog> {
  const value = raw.trim().toLowerCase();
  return (ACCESS_LOGS as readonly string[]).includes(value)
    ? { ok: true, value: value as AccessLog }
    : { ok: false, reason: `"${raw}" is not one of ${ACCESS_LOGS.join(', ')}` };
}

// The grammar of the stream labels (issue 15, item 8): a TCP port on the edge, and TLS passthrough by SNI on 443.
// Like labels.ts: every value becomes a typed field or a reason; nothing from a label reaches nginx unparsed.
import type { HostPattern, Parsed } from './labels.ts';
import { parseHost, parsePort } from './labels.ts';

const ok = <T>(value: T): Parsed<T> => ({ ok: true, value });
const fail = <T>(reason: string): Parsed<T> => ({ ok: false, reason });

/** swarmgate.tcp.port: the edge port (one SWARMGATE_TCP_PORTS declares) whose connections go to the service. */
export const TCP_PORT_LABEL = 'swarmgate.tcp.port';
/** swarmgate.tcp.target_port: the tasks' port; default: the same as the edge port. */
export const TCP_TARGET_PORT_LABEL = 'swarmgate.tcp.target_port';
/** swarmgate.tls.passthrough: host names whose TLS connections on 443 go to the service undecrypted (by SNI). */
export const TLS_PASSTHROUGH_LABEL = 'swarmgate.tls.passthrough';
/** swarmgate.tls.passthrough.port: the tasks' TLS port; default 443. */
export const TLS_PASSTHROUGH_PORT_LABEL = 'swarmgate.tls.passthrough.port';

export const STREAM_LABELS = [
  TCP_PORT_LABEL,
  TCP_TARGET_PORT_LABEL,
  TLS_PASSTHROUGH_LABEL,
  TLS_PASSTHROUGH_PORT_LABEL,
] as const;

/** Ports the edge's HTTP and HTTPS listeners own: no TCP service may take them. */
export const RESERVED_EDGE_PORTS: readonly number[] = [80, 443];

export function parseStreamPort(raw: string): Parsed<number> {
  return parsePort(raw);
}

/**
 * swarmgate.tls.passthrough: exact names and leading wildcards (*.example.com) only, which is what a TLS client
 * sends as SNI and what nginx's hostnames map matches; regex and trailing-wildcard hosts are refused.
 */
export function parsePassthroughHosts(raw: string): Parsed<HostPattern[]> {
  const entries = raw
    .split(',')
    .map((entry) => entry.trim())
    .filter((entry) => entry !== '');
  if (entries.length === 0) return fail('no host name given');
  const hosts = new Map<string, HostPattern>();
  for (const entry of entries) {
    const parsed = parseHost(entry);
    if (!parsed.ok) return fail(parsed.reason);
    if (parsed.value.kind === 'regex' || parsed.value.value.endsWith('.*')) {
      return fail(`host "${entry}": passthrough takes exact names and *.name only (matched against SNI)`);
    }
    hosts.set(parsed.value.value, parsed.value);
  }
  return ok([...hosts.values()].sort((a, b) => (a.value < b.value ? -1 : a.value > b.value ? 1 : 0)));
}

/**
 * SWARMGATE_TCP_PORTS: the edge ports services may ask for, e.g. "5432,6379" (the stack must publish each). Empty:
 * none. 80 and 443 belong to HTTP and HTTPS (TLS passthrough shares 443 by SNI instead).
 */
export function parseTcpPorts(raw: string): Parsed<number[]> {
  const entries = raw
    .split(',')
    .map((entry) => entry.trim())
    .filter((entry) => entry !== '');
  const ports = new Set<number>();
  for (const entry of entries) {
    const parsed = parsePort(entry);
    if (!parsed.ok) return fail(parsed.reason);
    if (RESERVED_EDGE_PORTS.includes(parsed.value)) {
      return fail(`${parsed.value} is the edge's HTTP or HTTPS port`);
    }
    ports.add(parsed.value);
  }
  if (ports.size > 64) return fail(`${ports.size} ports; at most 64`);
  return ok([...ports].sort((a, b) => a - b));
}

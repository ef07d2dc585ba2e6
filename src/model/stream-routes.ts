// buildStreamRoutes: pure. The services that ask for a TCP port on the edge or for TLS passthrough by SNI on 443
// (swarmgate.tcp.*, swarmgate.tls.passthrough*), with their tasks, for nginx's stream module. Their task addresses
// go into stream-peers.txt, in peers.txt's grammar (the edge's njs balancer reads them there), so scaling never
// reloads.
import { addressOn } from '../discovery/snapshot.ts';
import type { ServiceInfo, TaskInfo } from '../discovery/snapshot.ts';
import type { HostPattern, Parsed } from './labels.ts';
import { parseNetworkName } from './labels.ts';
import type { Problem } from './problems.ts';
import {
  parsePassthroughHosts,
  parseStreamPort,
  TCP_PORT_LABEL,
  TCP_TARGET_PORT_LABEL,
  TLS_PASSTHROUGH_LABEL,
  TLS_PASSTHROUGH_PORT_LABEL,
} from './stream-labels.ts';

export interface StreamMember {
  readonly ip: string;
  readonly port: number;
  readonly taskId: string;
  readonly nodeId: string;
}

/** A stream upstream: its name is a peers.txt upstream; it stays (possibly empty) while the service asks for it. */
export interface StreamUpstream {
  readonly name: string;
  readonly service: string;
  readonly servers: readonly StreamMember[];
}

export interface TcpRoute {
  /** The edge port, one of SWARMGATE_TCP_PORTS. */
  readonly port: number;
  readonly service: string;
  readonly upstream: string;
}

export interface PassthroughRoute {
  readonly host: HostPattern;
  readonly service: string;
  readonly upstream: string;
}

export interface StreamModel {
  readonly tcp: readonly TcpRoute[];
  readonly passthrough: readonly PassthroughRoute[];
  readonly upstreams: readonly StreamUpstream[];
}

export interface StreamInput {
  readonly services: readonly ServiceInfo[];
  /** Routable tasks by service id (the model's own grouping: down nodes already left out). */
  readonly tasksByService: ReadonlyMap<string, readonly TaskInfo[]>;
  readonly networkNames: ReadonlyMap<string, string>;
  /** Overlay networks the edges are attached to. */
  readonly networks: readonly string[];
  /** SWARMGATE_TCP_PORTS. */
  readonly tcpPorts: readonly number[];
  /**
   * SWARMGATE_TRUSTED_PROXIES is set. Every passthrough claim is then refused (INVALID_LABEL): with a passthrough
   * service the HTTPS servers sit behind the stream hop and take the client address from its PROXY header (nginx's
   * realip takes one source per server, and theirs replaces the X-Forwarded-For one), which behind a load balancer is
   * the balancer's own address. Address rules and rate limits would see the balancer for every HTTPS client: fail
   * open.
   */
  readonly trustsProxies: boolean;
  /** Hosts the HTTP routes and the admin host own: a passthrough claim on one is a CONFLICT. */
  readonly httpHosts: ReadonlySet<string>;
  readonly isRoutable: (task: TaskInfo) => boolean;
  readonly lookupLabel: (service: ServiceInfo, key: string) => string | undefined;
}

interface Claim {
  readonly service: ServiceInfo;
  readonly network: string;
  readonly tcp: { readonly port: number; readonly target: number } | null;
  readonly passthrough: { readonly hosts: readonly HostPattern[]; readonly target: number } | null;
}

/** null: no service asks for a stream route (the config then has no stream block at all). */
export function buildStreamRoutes(input: StreamInput, problems: Problem[]): StreamModel | null {
  const claims = input.services
    .filter((service) =>
      [TCP_PORT_LABEL, TLS_PASSTHROUGH_LABEL].some(
        (label) => input.lookupLabel(service, label) !== undefined,
      ),
    )
    .sort((a, b) => compare(a.createdAt, b.createdAt) || compare(a.name, b.name))
    .flatMap((service) => decodeClaim(service, input, problems) ?? []);
  if (claims.length === 0) return null;

  const tcp: TcpRoute[] = [];
  const passthrough: PassthroughRoute[] = [];
  const upstreams: StreamUpstream[] = [];
  const portOwners = new Map<number, string>();
  const hostOwners = new Map<string, string>();
  const conflict = (service: string, label: string, reason: string): void => {
    problems.push({ service, label, code: 'CONFLICT', reason, severity: 'error' });
  };
  // Oldest first: deploying a conflicting service never takes a working port or host away.
  for (const claim of claims) {
    const name = claim.service.name;
    if (claim.tcp) {
      const owner = portOwners.get(claim.tcp.port);
      if (owner !== undefined) {
        conflict(name, TCP_PORT_LABEL, `edge port ${claim.tcp.port} is already routed to service "${owner}"`);
      } else {
        portOwners.set(claim.tcp.port, name);
        const upstream = `tcp_${claim.tcp.port}`;
        upstreams.push({ name: upstream, service: name, servers: members(claim, claim.tcp.target, input) });
        tcp.push({ port: claim.tcp.port, service: name, upstream });
      }
    }
    if (claim.passthrough && input.trustsProxies) {
      // The label itself cannot be honoured under this setting (INVALID_LABEL), whatever other services ask.
      problems.push({
        service: name,
        label: TLS_PASSTHROUGH_LABEL,
        code: 'INVALID_LABEL',
        severity: 'error',
        reason:
          'TLS passthrough cannot be used while SWARMGATE_TRUSTED_PROXIES is set: behind the passthrough hop every ' +
          "HTTPS request would carry the load balancer's address instead of its X-Forwarded-For client, so address " +
          'rules and rate limits would fail open; pass the name through at the load balancer, or clear ' +
          'SWARMGATE_TRUSTED_PROXIES',
      });
    } else if (claim.passthrough) {
      const taken = claim.passthrough.hosts.flatMap((host) => {
        if (input.httpHosts.has(host.value))
          return [`"${host.value}" is routed over HTTPS by another service`];
        const owner = hostOwners.get(host.value);
        return owner === undefined ? [] : [`"${host.value}" is already passed through to service "${owner}"`];
      });
      if (taken.length > 0) {
        conflict(name, TLS_PASSTHROUGH_LABEL, taken.join('; '));
      } else {
        const upstream = `tls_${safeName(name)}`;
        upstreams.push({
          name: upstream,
          service: name,
          servers: members(claim, claim.passthrough.target, input),
        });
        for (const host of claim.passthrough.hosts) {
          hostOwners.set(host.value, name);
          passthrough.push({ host, service: name, upstream });
        }
      }
    }
  }
  if (tcp.length === 0 && passthrough.length === 0) return null;
  return {
    tcp: tcp.sort((a, b) => a.port - b.port),
    passthrough: passthrough.sort((a, b) => compare(a.host.value, b.host.value)),
    upstreams: upstreams.sort((a, b) => compare(a.name, b.name)),
  };
}

function decodeClaim(service: ServiceInfo, input: StreamInput, problems: Problem[]): Claim | null {
  let valid = true;
  const report = (label: string, reason: string, code: Problem['code'] = 'INVALID_LABEL'): void => {
    valid = false;
    problems.push({ service: service.name, label, code, reason, severity: 'error' });
  };
  function field<T>(label: string, parse: (raw: string) => Parsed<T>): T | null {
    const raw = input.lookupLabel(service, label);
    if (raw === undefined) return null;
    const parsed = parse(raw);
    if (parsed.ok) return parsed.value;
    report(label, parsed.reason);
    return null;
  }
  const port = field(TCP_PORT_LABEL, parseStreamPort);
  const target = field(TCP_TARGET_PORT_LABEL, parseStreamPort);
  const hosts = field(TLS_PASSTHROUGH_LABEL, parsePassthroughHosts);
  const passthroughPort = field(TLS_PASSTHROUGH_PORT_LABEL, parseStreamPort);
  if (port !== null && !input.tcpPorts.includes(port)) {
    report(
      TCP_PORT_LABEL,
      input.tcpPorts.length === 0
        ? `edge port ${port} is not declared: SWARMGATE_TCP_PORTS is empty (the operator declares and publishes the ports)`
        : `edge port ${port} is not declared in SWARMGATE_TCP_PORTS (${input.tcpPorts.join(', ')})`,
    );
  }
  const network = chooseStreamNetwork(service, input, report);
  if (!valid || network === null) return null;
  return {
    service,
    network,
    tcp: port === null ? null : { port, target: target ?? port },
    passthrough: hosts === null ? null : { hosts, target: passthroughPort ?? 443 },
  };
}

/** The edge network the tasks are reached on: swarmgate.network, else the only one the service shares. */
function chooseStreamNetwork(
  service: ServiceInfo,
  input: StreamInput,
  report: (label: string, reason: string, code?: Problem['code']) => void,
): string | null {
  const attached = new Set(service.networks.map((idOrName) => input.networkNames.get(idOrName) ?? idOrName));
  const raw = input.lookupLabel(service, 'swarmgate.network');
  if (raw !== undefined) {
    const requested = parseNetworkName(raw);
    // An unparsable or foreign swarmgate.network is reported by the HTTP routes when the service has them too.
    if (requested.ok && input.networks.includes(requested.value) && attached.has(requested.value)) {
      return requested.value;
    }
    report('swarmgate.network', `"${raw}" is not an edge network this service is attached to`);
    return null;
  }
  const shared = input.networks.filter((name) => attached.has(name));
  if (shared.length === 1) return shared[0] ?? null;
  const label =
    input.lookupLabel(service, TCP_PORT_LABEL) !== undefined ? TCP_PORT_LABEL : TLS_PASSTHROUGH_LABEL;
  if (shared.length === 0) {
    report(
      label,
      `the service is not attached to an edge network (${input.networks.join(', ')}); add it to one`,
      'NO_SHARED_NETWORK',
    );
  } else {
    report(
      label,
      `the service shares several edge networks (${shared.join(', ')}); choose one with the swarmgate.network label`,
      'AMBIGUOUS_NETWORK',
    );
  }
  return null;
}

const IPV4 = /^(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/;

/** The service's routable tasks on its network, sorted by address (IPv4 only, as peers.txt takes). */
function members(claim: Claim, port: number, input: StreamInput): StreamMember[] {
  const seen = new Set<string>();
  const servers: StreamMember[] = [];
  for (const task of input.tasksByService.get(claim.service.id) ?? []) {
    if (!input.isRoutable(task)) continue;
    const ip = addressOn(task, claim.network);
    if (ip === undefined || !IPV4.test(ip) || seen.has(ip)) continue;
    seen.add(ip);
    servers.push({ ip, port, taskId: task.id, nodeId: task.nodeId });
  }
  return servers.sort((a, b) => ipNumber(a.ip) - ipNumber(b.ip));
}

function ipNumber(ip: string): number {
  return ip.split('.').reduce((value, octet) => value * 256 + Number(octet), 0);
}

/** [A-Za-z0-9_] and a hash, so two service names that sanitise alike get distinct upstream names (≤ 64). */
function safeName(text: string): string {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return `${text.replace(/[^A-Za-z0-9_]/g, '_').slice(0, 48)}_${hash.toString(16).padStart(8, '0').slice(0, 6)}`;
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

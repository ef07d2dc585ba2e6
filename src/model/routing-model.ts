// buildRoutingModel: pure. Snapshot (plain data) in, typed routes and Problems out, sorted so the same input
// always gives the same model and so the same nginx bytes.
import type { NodeInfo, ServiceInfo, Snapshot, TaskInfo } from '../discovery/snapshot.ts';
import type { HostPattern, HttpsMethod, Parsed, PathPattern, Proto, SslPolicy } from './labels.ts';
import { parseAccessLog } from './access-log-label.ts';
import type { AccessLog } from './access-log-label.ts';
import {
  parseCertificateHosts,
  parseCertName,
  parseDest,
  parseEmail,
  parseHostList,
  parseHsts,
  parseHttpsMethod,
  parseNetworkName,
  parsePath,
  parsePort,
  parseProto,
  parseRoot,
  parseSslPolicy,
  parseBodySize,
  parseSwitch,
  parseTimeoutSeconds,
} from './labels.ts';
import { compareProblems } from './problems.ts';
import type { Problem } from './problems.ts';

export interface ModelSettings {
  /** Overlay networks the edges are attached to; upstream addresses come from these only. */
  readonly networks: readonly string[];
  /** Certificates the edges can serve now (issued over ACME or given by the operator). */
  readonly certificates?: readonly AvailableCertificate[];
  readonly tlsDefaults?: TlsDefaults;
}

export interface AvailableCertificate {
  readonly name: string;
  readonly domains: readonly string[];
  readonly source: 'acme' | 'user';
}

export interface TlsDefaults {
  readonly httpsMethod: HttpsMethod;
  /** null: no HSTS header. */
  readonly hsts: string | null;
  readonly sslPolicy: SslPolicy;
  readonly acmeEmail: string | null;
}

export const DEFAULT_TLS: TlsDefaults = {
  httpsMethod: 'redirect',
  hsts: 'max-age=31536000',
  sslPolicy: 'Mozilla-Intermediate',
  acmeEmail: null,
};

/** What a host does on each port, decided from its services' labels and the certificates that exist. */
export interface HostTls {
  /** The certificate the HTTPS server uses, or null: no usable certificate (yet), HTTP only. */
  readonly certificate: string | null;
  /** Port 80: serve the routes, redirect to HTTPS, or answer 503 (ACME challenges always pass). */
  readonly http: 'serve' | 'redirect' | 'refuse';
  readonly https: boolean;
  readonly hsts: string | null;
  readonly sslPolicy: SslPolicy;
}

/** A certificate the controller should obtain over ACME. */
export interface CertificateRequest {
  readonly name: string;
  readonly domains: readonly string[];
  readonly email: string | null;
  readonly service: string;
}

export interface UpstreamServer {
  readonly ip: string;
  readonly port: number;
  readonly taskId: string;
  readonly nodeId: string;
}

export interface Upstream {
  readonly name: string;
  readonly service: string;
  readonly servers: readonly UpstreamServer[];
}

export interface RouteLocation {
  readonly path: PathPattern;
  readonly service: string;
  readonly proto: Proto;
  readonly dest: string | null;
  readonly root: string | null;
  /** null: the service has no routable task, and the location answers 503 at once. */
  readonly upstream: string | null;
  readonly tuning: LocationTuning;
}

/** Per-service proxy settings from swarmgate.* labels; null keeps the edge's default. */
export interface LocationTuning {
  readonly maxBodySize: string | null;
  readonly timeoutSeconds: number | null;
  readonly requestBuffering: boolean | null;
  /** swarmgate.buffering; false: the edge passes the response on without reading ahead of the client. */
  readonly buffering: boolean | null;
  /** swarmgate.access_log; null: the edge's default (SWARMGATE_ACCESS_LOG, SWARMGATE_ACCESS_LOG_FORMAT). */
  readonly accessLog: AccessLog | null;
}

export interface VirtualServer {
  readonly host: HostPattern;
  readonly locations: readonly RouteLocation[];
  readonly tls: HostTls;
}

export interface RoutedService {
  readonly id: string;
  readonly name: string;
  readonly hosts: readonly string[];
  readonly path: string;
  readonly port: number;
  readonly proto: Proto;
  readonly network: string;
  readonly desiredReplicas: number | null;
  readonly servers: readonly UpstreamServer[];
}

export interface RoutingModel {
  readonly servers: readonly VirtualServer[];
  readonly upstreams: readonly Upstream[];
  readonly services: readonly RoutedService[];
  readonly problems: readonly Problem[];
  readonly certificateRequests: readonly CertificateRequest[];
  /** Certificates the rendered config uses (their files go into the bundle). */
  readonly certificatesInUse: readonly string[];
}

/** The settings a service asks for through its labels, once every label has parsed. */
interface ServiceRoute {
  readonly service: ServiceInfo;
  readonly hosts: readonly HostPattern[];
  readonly port: number;
  readonly path: PathPattern;
  readonly dest: string | null;
  readonly proto: Proto;
  readonly root: string | null;
  readonly network: string;
  readonly tls: ServiceTlsLabels;
  readonly tuning: LocationTuning;
}

/** TLS labels as written on one service; null: not set there. */
interface ServiceTlsLabels {
  readonly certificateHosts: readonly string[] | null;
  readonly email: string | null;
  readonly httpsMethod: HttpsMethod | null;
  /** undefined: not set; null: "off". */
  readonly hsts: string | null | undefined;
  readonly certName: string | null;
  readonly sslPolicy: SslPolicy | null;
}

const KNOWN_SWARMGATE_LABELS = new Set([
  'swarmgate.network',
  'swarmgate.max-body-size',
  'swarmgate.proxy-timeout',
  'swarmgate.request-buffering',
  'swarmgate.buffering',
  'swarmgate.access_log',
]);

export const EMPTY_MODEL: RoutingModel = {
  servers: [],
  upstreams: [],
  services: [],
  problems: [],
  certificateRequests: [],
  certificatesInUse: [],
};

export function buildRoutingModel(snapshot: Snapshot, settings: ModelSettings): RoutingModel {
  const problems: Problem[] = [];
  const networkNames = new Map<string, string>();
  for (const network of snapshot.networks) {
    networkNames.set(network.id, network.name);
    networkNames.set(network.name, network.name);
  }

  const candidates: ServiceRoute[] = [];
  for (const service of snapshot.services) {
    if (lookupLabel(service, 'VIRTUAL_HOST') === undefined) continue;
    const route = decodeServiceRoute(service, settings, networkNames, problems);
    if (route) candidates.push(route);
  }

  const accepted = claimRoutes(candidates, problems);
  // Tasks on a node Swarm reports down are unreachable: leave them out at once, before Swarm reschedules them.
  const downNodes = new Set(snapshot.nodes.filter(isNodeDown).map((node) => node.id));
  const tasksByService = groupTasks(snapshot.tasks.filter((task) => !downNodes.has(task.nodeId)));

  const upstreams: Upstream[] = [];
  const services: RoutedService[] = [];
  const locationsByHost = new Map<
    string,
    { host: HostPattern; locations: RouteLocation[]; routes: ServiceRoute[] }
  >();
  for (const route of accepted) {
    const servers = routableServers(tasksByService.get(route.service.id) ?? [], route, problems);
    const upstreamName = servers.length > 0 ? upstreamNameFor(route.service.name) : null;
    if (upstreamName) upstreams.push({ name: upstreamName, service: route.service.name, servers });
    services.push({
      id: route.service.id,
      name: route.service.name,
      hosts: route.hosts.map((host) => host.value),
      path: route.path.value,
      port: route.port,
      proto: route.proto,
      network: route.network,
      desiredReplicas: route.service.replicas,
      servers,
    });
    for (const host of route.hosts) {
      let entry = locationsByHost.get(host.value);
      if (!entry) locationsByHost.set(host.value, (entry = { host, locations: [], routes: [] }));
      entry.routes.push(route);
      entry.locations.push({
        path: route.path,
        service: route.service.name,
        proto: route.proto,
        dest: route.dest,
        root: route.root,
        upstream: upstreamName,
        tuning: route.tuning,
      });
    }
  }

  const certificateRequests = collectCertificateRequests(accepted, settings, problems);
  const available = [...(settings.certificates ?? [])].sort((a, b) => compareStrings(a.name, b.name));
  const certificatesInUse = new Set<string>();
  const servers: VirtualServer[] = [...locationsByHost.values()]
    .map(({ host, locations, routes }) => {
      const tls = decideHostTls(
        host,
        routes,
        available,
        certificateRequests,
        settings.tlsDefaults ?? DEFAULT_TLS,
        problems,
      );
      if (tls.certificate) certificatesInUse.add(tls.certificate);
      return {
        host,
        locations: locations.sort((a, b) => compareStrings(a.path.value, b.path.value)),
        tls,
      };
    })
    .sort((a, b) => compareHosts(a.host, b.host));

  return {
    servers,
    upstreams: upstreams.sort((a, b) => compareStrings(a.name, b.name)),
    services: services.sort((a, b) => compareStrings(a.name, b.name)),
    problems: problems.sort(compareProblems),
    certificateRequests,
    certificatesInUse: [...certificatesInUse].sort(compareStrings),
  };
}

/** One ACME certificate per LETSENCRYPT_HOST list, named by its first host; the oldest service wins a name. */
function collectCertificateRequests(
  routes: readonly ServiceRoute[],
  settings: ModelSettings,
  problems: Problem[],
): CertificateRequest[] {
  const requests = new Map<string, CertificateRequest>();
  for (const route of routes) {
    const wanted = route.tls.certificateHosts;
    if (!wanted) continue;
    if (route.tls.httpsMethod === 'nohttps') {
      problems.push(
        warning(route.service.name, 'LETSENCRYPT_HOST', 'HTTPS_METHOD=nohttps: no certificate is ordered'),
      );
      continue;
    }
    const routed = new Set(route.hosts.map((host) => host.value));
    const domains = wanted.filter((host) => routed.has(host));
    const unrouted = wanted.filter((host) => !routed.has(host));
    if (unrouted.length > 0) {
      problems.push(
        warning(
          route.service.name,
          'LETSENCRYPT_HOST',
          `not in VIRTUAL_HOST, left out of the certificate: ${unrouted.join(', ')}`,
        ),
      );
    }
    const name = domains[0];
    if (!name) continue;
    if (requests.has(name)) {
      problems.push(
        warning(
          route.service.name,
          'LETSENCRYPT_HOST',
          `certificate "${name}" is already requested by service "${requests.get(name)?.service ?? ''}"`,
        ),
      );
      continue;
    }
    requests.set(name, {
      name,
      domains,
      email: route.tls.email ?? settings.tlsDefaults?.acmeEmail ?? null,
      service: route.service.name,
    });
  }
  return [...requests.values()].sort((a, b) => compareStrings(a.name, b.name));
}

/**
 * A host's TLS settings come from its services in claim order: the first service that sets a label decides;
 * a later one that disagrees gets a warning. Then the certificate: CERT_NAME, else the host's ACME certificate,
 * else an operator certificate whose names cover the host.
 */
function decideHostTls(
  host: HostPattern,
  routes: readonly ServiceRoute[],
  available: readonly AvailableCertificate[],
  requests: readonly CertificateRequest[],
  defaults: TlsDefaults,
  problems: Problem[],
): HostTls {
  function pick<K extends keyof ServiceTlsLabels>(key: K, label: string): ServiceTlsLabels[K] | undefined {
    let chosen: { value: ServiceTlsLabels[K]; service: string } | undefined;
    for (const route of routes) {
      const value = route.tls[key];
      if (value === undefined || (value === null && key !== 'hsts')) continue;
      if (!chosen) chosen = { value, service: route.service.name };
      else if (JSON.stringify(value) !== JSON.stringify(chosen.value)) {
        problems.push(
          warning(
            route.service.name,
            label,
            `host "${host.value}" follows service "${chosen.service}" here; this value is ignored`,
          ),
        );
      }
    }
    return chosen?.value;
  }

  const method = pick('httpsMethod', 'HTTPS_METHOD') ?? defaults.httpsMethod;
  const hstsLabel = pick('hsts', 'HSTS');
  const certName = pick('certName', 'CERT_NAME') ?? null;
  const sslPolicy = pick('sslPolicy', 'SSL_POLICY') ?? defaults.sslPolicy;

  let certificate: string | null = null;
  if (method !== 'nohttps' && host.kind !== 'regex') {
    if (certName) {
      certificate = available.some((cert) => cert.name === certName) ? certName : null;
      if (!certificate) {
        problems.push(
          warning(
            routes[0]?.service.name ?? '',
            'CERT_NAME',
            `no certificate "${certName}" is available; ${host.value} is served over HTTP`,
          ),
        );
      }
    } else {
      const requested = requests.find((request) => request.domains.includes(host.value));
      const acme =
        requested && available.find((cert) => cert.source === 'acme' && cert.name === requested.name);
      const covering = available.find(
        (cert) => cert.source === 'user' && coversHost(cert.domains, host.value),
      );
      certificate = acme?.name ?? covering?.name ?? null;
    }
  }
  const https = certificate !== null;
  // Without a usable certificate a host stays reachable over HTTP whatever HTTPS_METHOD says (as nginx-proxy does).
  const http: HostTls['http'] = !https
    ? 'serve'
    : method === 'redirect'
      ? 'redirect'
      : method === 'nohttp'
        ? 'refuse'
        : 'serve';
  // HSTS would force browsers onto HTTPS, which noredirect promises not to do.
  const hsts = !https || method === 'noredirect' ? null : hstsLabel === undefined ? defaults.hsts : hstsLabel;
  return { certificate, http, https, hsts, sslPolicy };
}

/** Exact name, or a wildcard one label deep ("*.example.com" covers "a.example.com", not "a.b.example.com"). */
export function coversHost(domains: readonly string[], host: string): boolean {
  const lower = host.toLowerCase();
  return domains.some((domain) => {
    const name = domain.toLowerCase();
    if (name === lower) return true;
    if (!name.startsWith('*.')) return false;
    const dot = lower.indexOf('.');
    return dot > 0 && lower.slice(dot + 1) === name.slice(2);
  });
}

function warning(service: string, label: string, reason: string): Problem {
  return { service, label, code: 'IGNORED_SETTING', reason, severity: 'warning' };
}

/** Service labels first (`deploy.labels` in a stack file), then the container env nginx-proxy users bring. */
export function lookupLabel(service: ServiceInfo, key: string): string | undefined {
  return service.labels[key] ?? service.env[key];
}

function decodeServiceRoute(
  service: ServiceInfo,
  settings: ModelSettings,
  networkNames: ReadonlyMap<string, string>,
  problems: Problem[],
): ServiceRoute | null {
  let valid = true;
  function field<T>(label: string, fallback: T, parse: (raw: string) => Parsed<T>): T {
    const raw = lookupLabel(service, label);
    if (raw === undefined || (raw.trim() === '' && label !== 'VIRTUAL_HOST')) return fallback;
    const parsed = parse(raw);
    if (parsed.ok) return parsed.value;
    valid = false;
    problems.push({
      service: service.name,
      label,
      code: 'INVALID_LABEL',
      reason: parsed.reason,
      severity: 'error',
    });
    return fallback;
  }

  const hosts = field<HostPattern[]>('VIRTUAL_HOST', [], parseHostList);
  const port = field('VIRTUAL_PORT', 80, parsePort);
  const path = field<PathPattern>('VIRTUAL_PATH', { kind: 'prefix', value: '/' }, parsePath);
  const dest = field<string | null>('VIRTUAL_DEST', null, parseDest);
  const proto = field<Proto>('VIRTUAL_PROTO', 'http', parseProto);
  const root = field<string | null>('VIRTUAL_ROOT', null, parseRoot);
  const requestedNetwork = field<string | null>('swarmgate.network', null, parseNetworkName);
  const certificateHosts =
    field<string[] | null>('LETSENCRYPT_HOST', null, parseCertificateHosts) ??
    field<string[] | null>('ACME_HOST', null, parseCertificateHosts);
  const email =
    field<string | null>('LETSENCRYPT_EMAIL', null, parseEmail) ??
    field<string | null>('ACME_EMAIL', null, parseEmail);
  const tls: ServiceTlsLabels = {
    certificateHosts,
    email,
    httpsMethod: field<HttpsMethod | null>('HTTPS_METHOD', null, parseHttpsMethod),
    hsts: field<string | null | undefined>('HSTS', undefined, parseHsts),
    certName: field<string | null>('CERT_NAME', null, parseCertName),
    sslPolicy: field<SslPolicy | null>('SSL_POLICY', null, parseSslPolicy),
  };

  if (valid && dest !== null && path.kind === 'regex') {
    valid = false;
    problems.push({
      service: service.name,
      label: 'VIRTUAL_DEST',
      code: 'INVALID_LABEL',
      reason: 'VIRTUAL_DEST cannot rewrite a regular-expression VIRTUAL_PATH',
      severity: 'error',
    });
  }
  for (const key of Object.keys(service.labels).sort()) {
    if (key.startsWith('swarmgate.') && !KNOWN_SWARMGATE_LABELS.has(key)) {
      problems.push({
        service: service.name,
        label: key,
        code: 'UNKNOWN_LABEL',
        reason: `swarmgate does not know the label "${key}"; it is ignored`,
        severity: 'warning',
      });
    }
  }

  const tuning: LocationTuning = {
    maxBodySize: field<string | null>('swarmgate.max-body-size', null, parseBodySize),
    timeoutSeconds: field<number | null>('swarmgate.proxy-timeout', null, parseTimeoutSeconds),
    requestBuffering: field<boolean | null>('swarmgate.request-buffering', null, parseSwitch),
    buffering: field<boolean | null>('swarmgate.buffering', null, parseSwitch),
    accessLog: field<AccessLog | null>('swarmgate.access_log', null, parseAccessLog),
  };
  if (tuning.buffering !== null && (proto === 'grpc' || proto === 'grpcs')) {
    problems.push({
      service: service.name,
      label: 'swarmgate.buffering',
      code: 'IGNORED_SETTING',
      reason:
        'the edge never buffers gRPC responses; swarmgate.buffering applies to http, https, uwsgi and fastcgi',
      severity: 'warning',
    });
  }
  const network = valid ? chooseNetwork(service, settings, networkNames, requestedNetwork, problems) : null;
  if (!valid || network === null) return null;
  return { service, hosts, port, path, dest, proto, root, network, tls, tuning };
}

function chooseNetwork(
  service: ServiceInfo,
  settings: ModelSettings,
  networkNames: ReadonlyMap<string, string>,
  requested: string | null,
  problems: Problem[],
): string | null {
  const attached = new Set(service.networks.map((idOrName) => networkNames.get(idOrName) ?? idOrName));
  const shared = settings.networks.filter((name) => attached.has(name));
  const report = (label: string, code: Problem['code'], reason: string): null => {
    problems.push({ service: service.name, label, code, reason, severity: 'error' });
    return null;
  };
  if (requested !== null) {
    if (!settings.networks.includes(requested)) {
      return report(
        'swarmgate.network',
        'INVALID_LABEL',
        `network "${requested}" is not one the edges are attached to (${settings.networks.join(', ')})`,
      );
    }
    if (!attached.has(requested)) {
      return report(
        'swarmgate.network',
        'INVALID_LABEL',
        `the service is not attached to network "${requested}"`,
      );
    }
    return requested;
  }
  if (shared.length === 1) return shared[0] ?? null;
  if (shared.length === 0) {
    return report(
      'VIRTUAL_HOST',
      'NO_SHARED_NETWORK',
      `the service is not attached to an edge network (${settings.networks.join(', ')}); add it to one`,
    );
  }
  return report(
    'swarmgate.network',
    'AMBIGUOUS_NETWORK',
    `the service shares several edge networks (${shared.join(', ')}); choose one with the swarmgate.network label`,
  );
}

/**
 * Two services may not claim the same host and path. The service created first keeps the route, so deploying a
 * conflicting service never takes a working route away; the newcomer is left out with a Problem. Nor may a newcomer
 * take over a host an older service routes by other means: a regex VIRTUAL_PATH (nginx tries regex locations before
 * prefixes, so `~^/` would take every request), or TLS labels the host's oldest service did not set (HSTS or a
 * redirect to HTTPS change how browsers reach that service too).
 */
function claimRoutes(candidates: readonly ServiceRoute[], problems: Problem[]): ServiceRoute[] {
  const ordered = [...candidates].sort(
    (a, b) =>
      compareStrings(a.service.createdAt, b.service.createdAt) ||
      compareStrings(a.service.name, b.service.name),
  );
  const owners = new Map<string, string>();
  const oldestByHost = new Map<string, ServiceRoute>();
  const accepted: ServiceRoute[] = [];
  for (const route of ordered) {
    const keys = route.hosts.map((host) => `${host.value} ${route.path.value}`);
    const taken = route.hosts.find((host) => owners.has(`${host.value} ${route.path.value}`));
    if (taken) {
      const owner = owners.get(`${taken.value} ${route.path.value}`) ?? '';
      problems.push({
        service: route.service.name,
        label: 'VIRTUAL_HOST',
        code: 'CONFLICT',
        reason: `host "${taken.value}" path "${route.path.value}" is already routed to service "${owner}"`,
        severity: 'error',
      });
      continue;
    }
    const takeover = findTakeover(route, oldestByHost);
    if (takeover) {
      problems.push({
        service: route.service.name,
        label: takeover.label,
        code: 'CONFLICT',
        reason: takeover.reason,
        severity: 'error',
      });
      continue;
    }
    for (const key of keys) owners.set(key, route.service.name);
    for (const host of route.hosts) if (!oldestByHost.has(host.value)) oldestByHost.set(host.value, route);
    accepted.push(route);
  }
  return accepted;
}

/** Host-wide TLS labels: only a host's oldest service may set them (a later one may repeat or differ, see pick). */
const HOST_TLS_LABELS: readonly (readonly [keyof ServiceTlsLabels, string])[] = [
  ['httpsMethod', 'HTTPS_METHOD'],
  ['hsts', 'HSTS'],
  ['certName', 'CERT_NAME'],
  ['sslPolicy', 'SSL_POLICY'],
];

function isSet(labels: ServiceTlsLabels, key: keyof ServiceTlsLabels): boolean {
  // hsts: undefined is "not set", null is "off" (set).
  return key === 'hsts' ? labels.hsts !== undefined : labels[key] !== null;
}

/** The label and reason if `route` would take over a host an older accepted service routes; null otherwise. */
function findTakeover(
  route: ServiceRoute,
  oldestByHost: ReadonlyMap<string, ServiceRoute>,
): { label: string; reason: string } | null {
  for (const host of route.hosts) {
    const oldest = oldestByHost.get(host.value);
    if (!oldest) continue;
    const owner = oldest.service.name;
    if (route.path.kind === 'regex') {
      return {
        label: 'VIRTUAL_PATH',
        reason: `host "${host.value}" is already routed to service "${owner}"; a regex path "${route.path.value}" would take requests meant for it (nginx tries regex locations first)`,
      };
    }
    for (const [key, label] of HOST_TLS_LABELS) {
      if (isSet(route.tls, key) && !isSet(oldest.tls, key)) {
        return {
          label,
          reason: `host "${host.value}" belongs to service "${owner}", which does not set ${label}; only a host's oldest service sets its TLS labels`,
        };
      }
    }
    const wantsCertificate = route.tls.certificateHosts?.includes(host.value) ?? false;
    if (wantsCertificate && !(oldest.tls.certificateHosts?.includes(host.value) ?? false)) {
      return {
        label:
          lookupLabel(route.service, 'LETSENCRYPT_HOST') !== undefined ? 'LETSENCRYPT_HOST' : 'ACME_HOST',
        reason: `host "${host.value}" belongs to service "${owner}", which does not ask for its certificate; only a host's oldest service sets its TLS labels`,
      };
    }
  }
  return null;
}

function groupTasks(tasks: readonly TaskInfo[]): Map<string, TaskInfo[]> {
  const byService = new Map<string, TaskInfo[]>();
  for (const task of tasks) {
    const list = byService.get(task.serviceId);
    if (list) list.push(task);
    else byService.set(task.serviceId, [task]);
  }
  return byService;
}

/**
 * Down: the node missed its heartbeats (swarmkit's dispatcher sets "down" on heartbeat expiry). "unknown" and
 * "disconnected" are not down: a new leader marks every live node unknown until it re-registers, and a manager
 * that lets a node go marks it disconnected while it finds another manager; their tasks still run, and dropping
 * them would empty every upstream on each leader change (just when a lost manager moves the controller).
 * Availability (drain, pause) is not checked: Swarm gives a drained node's tasks desired state shutdown itself.
 */
export function isNodeDown(node: NodeInfo): boolean {
  return node.state === 'down';
}

/** Routable: Swarm wants it running and it is running. A task told to stop leaves before it dies. */
export function isRoutable(task: TaskInfo): boolean {
  return task.desiredState === 'running' && task.state === 'running';
}

const IPV4 = /^\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}$/;

function routableServers(
  tasks: readonly TaskInfo[],
  route: ServiceRoute,
  problems: Problem[],
): UpstreamServer[] {
  const servers: UpstreamServer[] = [];
  const seen = new Set<string>();
  for (const task of tasks) {
    if (!isRoutable(task)) continue;
    const address = task.addresses.find((candidate) => candidate.networkName === route.network);
    if (!address || address.ip === '' || seen.has(address.ip)) continue;
    // The edges' balancer takes dotted IPv4 (what Swarm overlays give tasks); any other task is left out alone.
    if (!IPV4.test(address.ip)) {
      problems.push({
        service: route.service.name,
        label: 'VIRTUAL_HOST',
        code: 'UNSUPPORTED_ADDRESS',
        reason: `task ${task.id} has address ${address.ip} on ${route.network}; only IPv4 task addresses are routed`,
        severity: 'warning',
      });
      continue;
    }
    seen.add(address.ip);
    servers.push({ ip: address.ip, port: route.port, taskId: task.id, nodeId: task.nodeId });
  }
  return servers
    .map((server) => ({ server, sortKey: ipSortKey(server.ip) }))
    .sort((a, b) => a.sortKey - b.sortKey || compareStrings(a.server.ip, b.server.ip))
    .map((entry) => entry.server);
}

/** "10.0.1.9" → its 32-bit number, so addresses sort numerically (computed once per address, no strings). */
function ipSortKey(ip: string): number {
  let value = 0;
  let octet = 0;
  let dots = 0;
  for (let i = 0; i < ip.length; i++) {
    const code = ip.charCodeAt(i);
    if (code === 46) {
      value = value * 256 + octet;
      octet = 0;
      dots++;
    } else if (code >= 48 && code <= 57) octet = octet * 10 + (code - 48);
    else return Number.MAX_VALUE;
  }
  return dots === 3 ? value * 256 + octet : Number.MAX_VALUE;
}

function upstreamNameFor(serviceName: string): string {
  return `svc_${serviceName.replace(/[^A-Za-z0-9_]/g, '_')}_${shortHash(serviceName)}`;
}

/** FNV-1a, so two service names that sanitise alike still get distinct upstream names. */
function shortHash(text: string): string {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash.toString(16).padStart(8, '0').slice(0, 6);
}

const HOST_KIND_ORDER = { exact: 0, wildcard: 1, regex: 2 } as const;

function compareHosts(a: HostPattern, b: HostPattern): number {
  return HOST_KIND_ORDER[a.kind] - HOST_KIND_ORDER[b.kind] || compareStrings(a.value, b.value);
}

export function compareStrings(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

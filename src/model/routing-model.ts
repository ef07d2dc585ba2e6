// buildRoutingModel: pure. Snapshot (plain data) in, typed routes and Problems out, sorted so the same input
// always gives the same model and so the same nginx bytes.
import type { ConfigFile, NodeInfo, ServiceInfo, Snapshot, TaskInfo } from '../discovery/snapshot.ts';
import { addressOn, CONFIG_FILE_LABEL } from '../discovery/snapshot.ts';
import type { HostPattern, HttpsMethod, Parsed, PathPattern, Proto, SslPolicy } from './labels.ts';
import { parseAccessLog } from './access-log-label.ts';
import type { AccessLog } from './access-log-label.ts';
import {
  parseCertificateHosts,
  parseCertName,
  parseDest,
  parseEmail,
  parseHost,
  parseHostList,
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
  isMappedSslPolicy,
} from './labels.ts';
import type {
  Cors,
  ForwardAuthTarget,
  NetworkAccess,
  Rate,
  ResponseHeader,
  WwwRedirect,
} from './feature-labels.ts';
import {
  headerVariable,
  INTERNAL_RANGES,
  originsRegex,
  parseBoolean,
  parseConfigName,
  parseCorsOrigins,
  parseCount,
  parseCidrList,
  parseDirectoryUrl,
  parseErrorPage,
  parseForwardAuthUrl,
  parseHeaderNames,
  parseHstsLenient,
  parseHtpasswd,
  parseMethods,
  parseNetworkAccess,
  parseRate,
  parseRedirectTarget,
  parseResponseHeader,
  parseWwwRedirect,
  SECURITY_HEADERS,
} from './feature-labels.ts';
import { parseLabelDocument } from './label-document.ts';
import type { BalanceMethod, HashKey, HealthCheck } from './balance-labels.ts';
import {
  HEALTH_INTERVAL_MS,
  HEALTH_LABELS,
  HEALTH_STATUS_DEFAULT,
  HEALTH_TIMEOUT_MS,
  parseBalanceMethod,
  parseHealthCount,
  parseHealthInterval,
  parseHealthPath,
  parseHealthStatus,
  parseHealthTimeout,
  parseCookieMaxAge,
  parseCookieName,
  parseHashKey,
  parseRetryTimeout,
  parseRetryTries,
  parseSticky,
  parseWeight,
} from './balance-labels.ts';
import { NGINX_PROXY_HTTP3_LABEL, UNSUPPORTED_SETTINGS, unsupportedPrefixSetting } from './unsupported.ts';
import { compareProblems } from './problems.ts';
import { STREAM_LABELS, TCP_PORT_LABEL, TLS_PASSTHROUGH_LABEL } from './stream-labels.ts';
import { buildStreamRoutes } from './stream-routes.ts';
import type { StreamModel } from './stream-routes.ts';
import type { Problem } from './problems.ts';

export interface ModelSettings {
  /** Overlay networks the edges are attached to; upstream addresses come from these only. */
  readonly networks: readonly string[];
  /** Certificates the edges can serve now (issued over ACME or given by the operator). */
  readonly certificates?: readonly AvailableCertificate[];
  readonly tlsDefaults?: TlsDefaults;
  /** SWARMGATE_DEFAULT_HOST: the exact host whose server answers names no service routes (null: 503). */
  readonly defaultHost?: string | null;
  /** SWARMGATE_ADMIN_HOST: the exact host whose server shows the status page; no service may route it. */
  readonly adminHost?: string | null;
  /** SWARMGATE_TCP_PORTS: edge ports services may take with swarmgate.tcp.port (absent: none). */
  readonly tcpPorts?: readonly number[];
  /** SWARMGATE_TRUSTED_PROXIES: while any is set, TLS passthrough is refused (stream-routes.ts says why). */
  readonly trustedProxies?: readonly string[];
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
  /** The controller's ACME directory URL (SWARMGATE_ACME_DIRECTORY); default: Let's Encrypt production. */
  readonly acmeDirectory?: string;
  /** Where LETSENCRYPT_TEST=true orders (SWARMGATE_ACME_STAGING_DIRECTORY); default: Let's Encrypt staging. */
  readonly acmeStagingDirectory?: string;
  /** Further directories an ACME_CA_URI label may name (SWARMGATE_ACME_DIRECTORIES); no other is ever used. */
  readonly acmeDirectories?: readonly string[];
  /** SWARMGATE_ENABLE_HTTP3: HTTP/3 for hosts whose services do not say (absent: off). */
  readonly http3?: boolean;
}

/** Let's Encrypt's staging directory: what LETSENCRYPT_TEST=true asks for. */
export const LETSENCRYPT_STAGING = 'https://acme-staging-v02.api.letsencrypt.org/directory';
const LETSENCRYPT_PRODUCTION = 'https://acme-v02.api.letsencrypt.org/directory';

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
  /** EXTERNAL_HTTPS_PORT: the port the HTTP→HTTPS redirect names (null: 443, none in the URL). */
  readonly httpsPort: number | null;
  /**
   * HTTP/3 over QUIC on the HTTPS port (udp), advertised with Alt-Svc: swarmgate.http3 or nginx-proxy's http3.enable
   * label, else SWARMGATE_ENABLE_HTTP3. Only with a certificate (false whenever https is).
   */
  readonly http3: boolean;
}

/** A certificate the controller should obtain over ACME. */
export interface CertificateRequest {
  readonly name: string;
  readonly domains: readonly string[];
  readonly email: string | null;
  readonly service: string;
  /**
   * The ACME directory URL this certificate is ordered from: null for the controller's (SWARMGATE_ACME_DIRECTORY);
   * else the staging one (LETSENCRYPT_TEST=true) or one the operator allowed (ACME_CA_URI), never any other.
   */
  readonly directory?: string | null;
}

export interface UpstreamServer {
  readonly ip: string;
  readonly port: number;
  readonly taskId: string;
  readonly nodeId: string;
  /** A canary group's share of this task (peers.txt "@weight"); absent: 1, like every other member. */
  readonly weight?: number;
}

/** How the edge's Lua balancer picks a task of an upstream (swarmgate.balance, swarmgate.sticky). */
export interface UpstreamBalance {
  readonly method: BalanceMethod;
  /** What the hash method hashes; null for the other methods. */
  readonly key: HashKey | null;
  /** Cookie stickiness, or null. */
  readonly sticky: StickyCookie | null;
}

export interface StickyCookie {
  readonly cookie: string;
  /** Max-Age in seconds; null: a session cookie. */
  readonly maxAge: number | null;
}

export const ROUND_ROBIN: UpstreamBalance = { method: 'round_robin', key: null, sticky: null };

export interface Upstream {
  readonly name: string;
  /** The service it belongs to; for a canary group, the group's oldest service (whose location it serves). */
  readonly service: string;
  readonly servers: readonly UpstreamServer[];
  readonly balance: UpstreamBalance;
  /** swarmgate.healthcheck.*: each edge probes the tasks; absent: passive checks only (the default). */
  readonly health?: HealthCheck;
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
  readonly policy: LocationPolicy;
  /** Set when the location answers with a redirect instead of proxying (www ↔ apex, swarmgate.redirect). */
  readonly redirect: LocationRedirect | null;
}

export interface LocationRedirect {
  /** An origin (https://new.example.com) or, with keepScheme, a host name the request's scheme is put before. */
  readonly target: string;
  readonly keepScheme: boolean;
}

/** A file a location needs on the edge (htpasswd, error page), carried in the bundle. */
export interface BundleFile {
  /** Bundle-relative path, e.g. auth/admin-users.htpasswd. */
  readonly path: string;
  readonly content: string;
}

/** Access, limit and header settings of a service's routes, from its labels (issue 14). */
export interface LocationPolicy {
  /** Ranges denied first, then ranges allowed; when allow is not empty everyone else gets 403. */
  readonly deny: readonly string[];
  readonly allow: readonly string[];
  readonly basicAuth: { readonly realm: string; readonly file: BundleFile } | null;
  readonly forwardAuth: {
    readonly authority: string;
    readonly path: string;
    /** Response headers of the auth service copied onto the proxied request. */
    readonly copyHeaders: readonly { readonly name: string; readonly variable: string }[];
  } | null;
  readonly rateLimit: { readonly zone: string; readonly rate: string; readonly burst: number } | null;
  readonly maxConnections: number | null;
  /** null: the edge's default (SWARMGATE_GZIP). */
  readonly gzip: boolean | null;
  readonly headers: readonly ResponseHeader[];
  readonly cors: {
    /** null: any origin ("*"); else a regex of the allowed origins. */
    readonly originsRegex: string | null;
    readonly methods: string;
    readonly headers: string;
    readonly credentials: boolean;
  } | null;
  readonly errorPage: BundleFile | null;
  /** A key for per-service limits (the upstream-style safe name). */
  readonly key: string;
}

export const OPEN_POLICY: LocationPolicy = {
  deny: [],
  allow: [],
  basicAuth: null,
  forwardAuth: null,
  rateLimit: null,
  maxConnections: null,
  gzip: null,
  headers: [],
  cors: null,
  errorPage: null,
  key: '',
};

/** Per-service proxy settings from swarmgate.* labels; null keeps the edge's default. */
export interface LocationTuning {
  readonly maxBodySize: string | null;
  readonly timeoutSeconds: number | null;
  readonly requestBuffering: boolean | null;
  /** swarmgate.buffering; false: the edge passes the response on without reading ahead of the client. */
  readonly buffering: boolean | null;
  /** swarmgate.access_log; null: the edge's default (SWARMGATE_ACCESS_LOG, SWARMGATE_ACCESS_LOG_FORMAT). */
  readonly accessLog: AccessLog | null;
  /** swarmgate.retry.tries: tries per request in all (1: none); null: the edge's (every task, 24 at most). */
  readonly retryTries: number | null;
  /** swarmgate.retry.timeout in milliseconds; null: the edge's 10 s. */
  readonly retryTimeoutMs: number | null;
}

export interface VirtualServer {
  readonly host: HostPattern;
  readonly locations: readonly RouteLocation[];
  readonly tls: HostTls;
  /** SWARMGATE_DEFAULT_HOST names this host: its server also answers unknown names. */
  readonly isDefault: boolean;
}

/**
 * The status page's server (SWARMGATE_ADMIN_HOST). Its certificate is ordered like a LETSENCRYPT_HOST's (or an
 * operator certificate covers it); without one its port 80 answers 503: the login form never travels in clear.
 */
export interface AdminServer {
  readonly host: string;
  readonly certificate: string | null;
  readonly hsts: string | null;
  readonly sslPolicy: SslPolicy;
}

/** The certificate request and problems of the admin host carry this in place of a service name. */
export const ADMIN_HOST_SETTING = 'SWARMGATE_ADMIN_HOST';

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
  /** null: no SWARMGATE_ADMIN_HOST. */
  readonly adminServer: AdminServer | null;
  /** TCP ports and TLS passthrough (src/model/stream-routes.ts); absent: no service asks, no stream block. */
  readonly stream?: StreamModel;
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
  readonly policy: LocationPolicy;
  readonly redirect: LocationRedirect | null;
  readonly www: WwwRedirect | null;
  /** Index of this route among its service's (VIRTUAL_HOST_MULTIPORTS gives several); 0 otherwise. */
  readonly index: number;
  /** The port of the service's first route: its upstream keeps the plain name. */
  readonly primaryPort: number;
  readonly balance: UpstreamBalance;
  /** swarmgate.healthcheck.*; null: off. */
  readonly health: HealthCheck | null;
  /** swarmgate.weight: the service may share a host and path with other weighted services; null: it may not. */
  readonly weight: number | null;
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
  readonly httpsPort: number | null;
  /** swarmgate.http3 (or nginx-proxy's http3.enable label); null: not set there. */
  readonly http3: boolean | null;
  /** LETSENCRYPT_TEST=true ('staging'), or the URL ACME_CA_URI names; null: neither label is set. */
  readonly directory: string | null;
}

/** HTTP/3 per service (a host's oldest service decides, like the other TLS labels). */
export const HTTP3_LABEL = 'swarmgate.http3';

/** Every swarmgate.* label the model reads (any other is an UNKNOWN_LABEL warning). */
export const KNOWN_SWARMGATE_LABELS: ReadonlySet<string> = new Set([
  'swarmgate.network',
  'swarmgate.max-body-size',
  'swarmgate.proxy-timeout',
  'swarmgate.request-buffering',
  'swarmgate.buffering',
  'swarmgate.access_log',
  'swarmgate.allow',
  'swarmgate.deny',
  'swarmgate.auth.basic',
  'swarmgate.auth.forward',
  'swarmgate.auth.forward.headers',
  'swarmgate.rate-limit',
  'swarmgate.rate-limit.burst',
  'swarmgate.max-connections',
  'swarmgate.gzip',
  'swarmgate.security-headers',
  'swarmgate.cors.origins',
  'swarmgate.cors.methods',
  'swarmgate.cors.headers',
  'swarmgate.cors.credentials',
  'swarmgate.redirect',
  'swarmgate.www-redirect',
  'swarmgate.error-page',
  'swarmgate.balance',
  'swarmgate.balance.key',
  'swarmgate.sticky',
  'swarmgate.sticky.cookie',
  'swarmgate.sticky.max_age',
  'swarmgate.weight',
  'swarmgate.retry.tries',
  'swarmgate.retry.timeout',
  HTTP3_LABEL,
  ...HEALTH_LABELS,
  ...STREAM_LABELS,
]);
/** swarmgate.header.<Name>=<value>: one response header per label. */
const HEADER_LABEL_PREFIX = 'swarmgate.header.';

export const EMPTY_MODEL: RoutingModel = {
  servers: [],
  upstreams: [],
  services: [],
  problems: [],
  certificateRequests: [],
  certificatesInUse: [],
  adminServer: null,
};

/**
 * A service with a refused label is left out whole (a Problem of severity error says so). The stream labels
 * (swarmgate.tcp.*, swarmgate.tls.passthrough*) are judged after the HTTP routes, since a passthrough name must not
 * be one an HTTP route serves; a service refused there is then built again without any route (HTTP, TCP port or
 * passthrough), keeping the Problems it got. Services refused for their own labels go first, losers of a CONFLICT
 * only once none is left, since the winner may be one of the first. Each round leaves out at least one more service,
 * so this ends; with no such refusal (nearly always) the model is built once.
 */
export function buildRoutingModel(snapshot: Snapshot, settings: ModelSettings): RoutingModel {
  const leftOut = new Map<string, readonly Problem[]>();
  for (;;) {
    const model =
      leftOut.size === 0
        ? buildModelOnce(snapshot, settings)
        : withProblems(
            buildModelOnce(
              { ...snapshot, services: snapshot.services.filter((service) => !leftOut.has(service.name)) },
              settings,
            ),
            [...leftOut.values()].flat(),
          );
    const routed = new Set([
      ...model.services.map((service) => service.name),
      ...(model.stream
        ? [...model.stream.tcp, ...model.stream.passthrough].map((route) => route.service)
        : []),
    ]);
    const refusedYetRouted = new Set(
      model.problems
        .filter((problem) => problem.severity === 'error' && routed.has(problem.service))
        .map((problem) => problem.service),
    );
    if (refusedYetRouted.size === 0) return model;
    // A service that lost a CONFLICT may have lost it to a service refused for its own labels in this round: leave
    // those out first and build again, so the conflict goes with them; losers of conflicts that remain go after.
    const ownRefusals = new Set(
      model.problems
        .filter((problem) => problem.severity === 'error' && problem.code !== 'CONFLICT')
        .map((problem) => problem.service)
        .filter((name) => refusedYetRouted.has(name)),
    );
    for (const name of ownRefusals.size > 0 ? ownRefusals : refusedYetRouted) {
      leftOut.set(
        name,
        model.problems.filter((problem) => problem.service === name),
      );
    }
  }
}

function withProblems(model: RoutingModel, more: readonly Problem[]): RoutingModel {
  return { ...model, problems: [...model.problems, ...more].sort(compareProblems) };
}

function buildModelOnce(snapshot: Snapshot, settings: ModelSettings): RoutingModel {
  const problems: Problem[] = [];
  const networkNames = new Map<string, string>();
  for (const network of snapshot.networks) {
    networkNames.set(network.id, network.name);
    networkNames.set(network.name, network.name);
  }

  const candidates: ServiceRoute[] = [];
  for (const service of snapshot.services) {
    if (!isRouted(service)) continue;
    const routes = decodeServiceRoutes(service, settings, networkNames, snapshot.configs ?? [], problems);
    if (routes) candidates.push(...routes);
  }

  const adminHost = settings.adminHost ?? null;
  const { accepted, shared } = claimRoutes(candidates, problems, adminHost);
  // Tasks on a node Swarm reports down are unreachable: leave them out at once, before Swarm reschedules them.
  const downNodes = new Set(snapshot.nodes.filter(isNodeDown).map((node) => node.id));
  const tasksByService = groupTasks(snapshot.tasks.filter((task) => !downNodes.has(task.nodeId)));

  const upstreams: Upstream[] = [];
  const services: RoutedService[] = [];
  const locationsByHost = new Map<
    string,
    { host: HostPattern; locations: RouteLocation[]; routes: ServiceRoute[] }
  >();
  // One upstream per service and port (VIRTUAL_HOST_MULTIPORTS may route several ports of one service).
  const upstreamByPort = new Map<string, { name: string | null; servers: UpstreamServer[] }>();
  const ownUpstream = (route: ServiceRoute): { name: string | null; servers: UpstreamServer[] } => {
    const portKey = `${route.service.name}\u0000${route.port}`;
    let own = upstreamByPort.get(portKey);
    if (!own) {
      const servers = routableServers(tasksByService.get(route.service.id) ?? [], route, problems);
      const name =
        servers.length > 0
          ? upstreamNameFor(
              route.port === route.primaryPort ? route.service.name : `${route.service.name}:${route.port}`,
            )
          : null;
      own = { name, servers };
      upstreamByPort.set(portKey, own);
      if (name) {
        upstreams.push({
          name,
          service: route.service.name,
          servers,
          balance: route.balance,
          ...(route.health ? { health: route.health } : {}),
        });
      }
    }
    return own;
  };
  // A canary group (weighted services sharing a host and path) gets one upstream of all their tasks.
  const groupUpstreams = new Map<string, string | null>();
  const groupUpstream = (group: readonly ServiceRoute[]): string | null => {
    const groupKey = group.map((route) => `${route.service.name}:${route.port}`).join(' ');
    let name = groupUpstreams.get(groupKey);
    if (name === undefined) {
      const servers = weightedServers(
        group,
        group.map((route) => ownUpstream(route).servers),
        problems,
      );
      const owner = group[0] as ServiceRoute;
      name = servers.length > 0 ? `svc_split_${shortHash(groupKey)}${shortHash(`${groupKey}#`)}` : null;
      groupUpstreams.set(groupKey, name);
      if (name) {
        upstreams.push({
          name,
          service: owner.service.name,
          servers,
          balance: owner.balance,
          ...(owner.health ? { health: owner.health } : {}),
        });
      }
    }
    return name;
  };
  // Each service's hosts over all its routes, in route order: one pass (a filter per service was quadratic, 0.6 s
  // of every reconcile at 10,000 services).
  const hostsByService = new Map<string, Set<string>>();
  for (const route of accepted) {
    let hosts = hostsByService.get(route.service.id);
    if (!hosts) hostsByService.set(route.service.id, (hosts = new Set()));
    for (const host of route.hosts) hosts.add(host.value);
  }
  for (const route of accepted) {
    const own = ownUpstream(route);
    if (route.index === 0) {
      services.push({
        id: route.service.id,
        name: route.service.name,
        hosts: [...(hostsByService.get(route.service.id) ?? [])],
        path: route.path.value,
        port: route.port,
        proto: route.proto,
        network: route.network,
        desiredReplicas: route.service.replicas,
        servers: own.servers,
      });
    }
    const names = new Set(route.hosts.map((host) => host.value));
    for (const host of route.hosts) {
      const group = shared.get(`${host.value} ${route.path.value}`);
      // A canary's share of a host and path is served by the location of the group's oldest service.
      if (group && group[0] !== route) continue;
      let entry = locationsByHost.get(host.value);
      if (!entry) locationsByHost.set(host.value, (entry = { host, locations: [], routes: [] }));
      entry.routes.push(route);
      entry.locations.push({
        path: route.path,
        service: route.service.name,
        proto: route.proto,
        dest: route.dest,
        root: route.root,
        upstream: group ? groupUpstream(group) : own.name,
        tuning: route.tuning,
        policy: route.policy,
        redirect: wwwRedirect(route, host, names, problems) ?? route.redirect,
      });
    }
  }

  const certificateRequests = collectCertificateRequests(accepted, settings, problems);
  if (adminHost) certificateRequests.push(adminCertificateRequest(adminHost, settings));
  certificateRequests.sort((a, b) => compareStrings(a.name, b.name));
  const available = [...(settings.certificates ?? [])].sort((a, b) => compareStrings(a.name, b.name));
  const certificateIndex = indexCertificates(available, certificateRequests);
  const certificatesInUse = new Set<string>();
  const servers: VirtualServer[] = [...locationsByHost.values()]
    .map(({ host, locations, routes }) => {
      const tls = decideHostTls(
        host,
        routes,
        certificateIndex,
        settings.tlsDefaults ?? DEFAULT_TLS,
        problems,
      );
      if (tls.certificate) certificatesInUse.add(tls.certificate);
      return {
        host,
        locations: locations.sort((a, b) => compareStrings(a.path.value, b.path.value)),
        tls,
        isDefault: host.kind === 'exact' && host.value === settings.defaultHost,
      };
    })
    .sort((a, b) => compareHosts(a.host, b.host));
  const adminServer = adminHost ? decideAdminServer(adminHost, available, settings, problems) : null;
  if (adminServer?.certificate) certificatesInUse.add(adminServer.certificate);
  if (settings.defaultHost && !servers.some((server) => server.isDefault)) {
    problems.push({
      service: '',
      label: 'SWARMGATE_DEFAULT_HOST',
      code: 'IGNORED_SETTING',
      reason: `no service routes "${settings.defaultHost}"; unknown names get 503`,
      severity: 'warning',
    });
  }

  reportSharedStickyCookies(servers, upstreams, problems);
  const stream = buildStreamRoutes(
    {
      services: snapshot.services,
      tasksByService,
      networkNames,
      networks: settings.networks,
      tcpPorts: settings.tcpPorts ?? [],
      trustsProxies: (settings.trustedProxies ?? []).length > 0,
      httpHosts: new Set([...servers.map((server) => server.host.value), ...(adminHost ? [adminHost] : [])]),
      isRoutable,
      lookupLabel,
    },
    problems,
  );
  // A service routed only as a canary (or a group's oldest, on its shared routes) has no location of its own.
  const used = new Set(servers.flatMap((server) => server.locations.map((location) => location.upstream)));
  return {
    servers,
    upstreams: upstreams
      .filter((upstream) => used.has(upstream.name))
      .sort((a, b) => compareStrings(a.name, b.name)),
    services: services.sort((a, b) => compareStrings(a.name, b.name)),
    problems: problems.sort(compareProblems),
    certificateRequests,
    certificatesInUse: [...certificatesInUse].sort(compareStrings),
    adminServer,
    ...(stream ? { stream } : {}),
  };
}

/**
 * Two sticky upstreams on one host with the same cookie name (Path=/) overwrite each other's cookie: a client
 * moving between their paths is re-balanced on every switch. Both stay routed; the later path is warned.
 */
function reportSharedStickyCookies(
  servers: readonly VirtualServer[],
  upstreams: readonly Upstream[],
  problems: Problem[],
): void {
  const byName = new Map(upstreams.map((upstream) => [upstream.name, upstream]));
  const reported = new Set<string>();
  for (const server of servers) {
    const owners = new Map<string, Upstream>();
    for (const location of server.locations) {
      const upstream = location.upstream === null ? undefined : byName.get(location.upstream);
      const cookie = upstream?.balance.sticky?.cookie;
      if (!upstream || !cookie) continue;
      const owner = owners.get(cookie);
      if (!owner) owners.set(cookie, upstream);
      else if (owner.name !== upstream.name && !reported.has(`${upstream.service} ${cookie}`)) {
        reported.add(`${upstream.service} ${cookie}`);
        problems.push({
          service: upstream.service,
          label: 'swarmgate.sticky.cookie',
          code: 'CONFLICT',
          reason: `service "${owner.service}" uses the sticky cookie "${cookie}" on host "${server.host.value}" too; each overwrites the other's, so choose another name`,
          severity: 'warning',
        });
      }
    }
  }
}

/** The admin host's certificate, from the controller's own ACME directory and default e-mail. */
function adminCertificateRequest(host: string, settings: ModelSettings): CertificateRequest {
  return {
    name: host,
    domains: [host],
    email: settings.tlsDefaults?.acmeEmail ?? null,
    service: ADMIN_HOST_SETTING,
    directory: null,
  };
}

/** The ACME certificate once issued, else an operator certificate that covers the name; none: no HTTPS yet. */
function decideAdminServer(
  host: string,
  available: readonly AvailableCertificate[],
  settings: ModelSettings,
  problems: Problem[],
): AdminServer {
  const acme = available.find((cert) => cert.source === 'acme' && cert.name === host);
  const covering = available.find((cert) => cert.source === 'user' && coversHost(cert.domains, host));
  const certificate = acme?.name ?? covering?.name ?? null;
  if (!certificate) {
    problems.push({
      service: '',
      label: ADMIN_HOST_SETTING,
      code: 'CERTIFICATE',
      reason: `no certificate for "${host}" yet; the status page is not served there until one is issued (never over plain HTTP)`,
      severity: 'warning',
    });
  }
  const defaults = settings.tlsDefaults ?? DEFAULT_TLS;
  return { host, certificate, hsts: certificate ? defaults.hsts : null, sslPolicy: defaults.sslPolicy };
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
    if (!wanted || route.index !== 0) continue;
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
    const directory = chooseDirectory(route, settings.tlsDefaults ?? DEFAULT_TLS);
    if (!directory.ok) {
      problems.push({
        service: route.service.name,
        label: directory.label,
        code: 'INVALID_LABEL',
        reason: directory.reason,
        severity: 'warning',
      });
      continue;
    }
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
      directory: directory.value,
    });
  }
  return [...requests.values()].sort((a, b) => compareStrings(a.name, b.name));
}

/**
 * The ACME directory a service's certificate is ordered from. A label only picks among the directories the operator
 * configured: the controller's, the staging one, and SWARMGATE_ACME_DIRECTORIES. The controller holds the Docker
 * socket, so a label that could name any URL would let every service owner make it send requests anywhere (SSRF).
 */
function chooseDirectory(
  route: ServiceRoute,
  defaults: TlsDefaults,
): { ok: true; value: string | null } | { ok: false; label: string; reason: string } {
  const wanted = route.tls.directory;
  if (wanted === null) return { ok: true, value: null };
  const controller = defaults.acmeDirectory ?? LETSENCRYPT_PRODUCTION;
  const staging = defaults.acmeStagingDirectory ?? LETSENCRYPT_STAGING;
  const url = wanted === 'staging' ? staging : wanted;
  if (url === controller) return { ok: true, value: null };
  if (url === staging || (defaults.acmeDirectories ?? []).includes(url)) return { ok: true, value: url };
  const allowed = [controller, staging, ...(defaults.acmeDirectories ?? [])].join(', ');
  return {
    ok: false,
    label: 'ACME_CA_URI',
    reason: `"${url}" is not a directory this controller orders from (${allowed}); no certificate is ordered for this service (the operator may add it to SWARMGATE_ACME_DIRECTORIES)`,
  };
}

/**
 * A host's TLS settings come from its services in claim order: the first service that sets a label decides;
 * a later one that disagrees gets a warning. Then the certificate: CERT_NAME, else the host's ACME certificate,
 * else an operator certificate whose names cover the host.
 */
/**
 * The available certificates and the requests, looked up by name and domain: every host asks, and a scan of every
 * certificate per host was 40 % of a reconcile at 2,000 HTTPS hosts with 2,000 certificates (bench/new-host-e2e.ts).
 * Each lookup answers what the first match in the sorted lists answered.
 */
interface CertificateIndex {
  readonly names: ReadonlySet<string>;
  /** The ACME certificate of each name. */
  readonly acme: ReadonlyMap<string, AvailableCertificate>;
  /** Each domain's first request. */
  readonly requestOf: ReadonlyMap<string, CertificateRequest>;
  /** Operator certificates by exact domain and by "*.domain" (lower case): the position of the first in the list. */
  readonly userDomains: ReadonlyMap<
    string,
    { readonly index: number; readonly certificate: AvailableCertificate }
  >;
}

export function indexCertificates(
  available: readonly AvailableCertificate[],
  requests: readonly CertificateRequest[],
): CertificateIndex {
  const acme = new Map<string, AvailableCertificate>();
  const userDomains = new Map<string, { index: number; certificate: AvailableCertificate }>();
  available.forEach((certificate, index) => {
    if (certificate.source === 'acme') {
      if (!acme.has(certificate.name)) acme.set(certificate.name, certificate);
      return;
    }
    for (const domain of certificate.domains) {
      const key = domain.toLowerCase();
      if (!userDomains.has(key)) userDomains.set(key, { index, certificate });
    }
  });
  const requestOf = new Map<string, CertificateRequest>();
  for (const request of requests)
    for (const domain of request.domains) if (!requestOf.has(domain)) requestOf.set(domain, request);
  return { names: new Set(available.map((certificate) => certificate.name)), acme, requestOf, userDomains };
}

/** The first operator certificate (in list order) whose names cover the host: exact, or a one-level wildcard. */
export function coveringCertificate(index: CertificateIndex, host: string): AvailableCertificate | undefined {
  const lower = host.toLowerCase();
  const exact = index.userDomains.get(lower);
  const dot = lower.indexOf('.');
  const wildcard = dot > 0 ? index.userDomains.get(`*.${lower.slice(dot + 1)}`) : undefined;
  if (exact && wildcard) return exact.index <= wildcard.index ? exact.certificate : wildcard.certificate;
  return (exact ?? wildcard)?.certificate;
}

function decideHostTls(
  host: HostPattern,
  routes: readonly ServiceRoute[],
  certificates: CertificateIndex,
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
  const httpsPort = pick('httpsPort', 'EXTERNAL_HTTPS_PORT') ?? null;
  const http3Label = pick('http3', HTTP3_LABEL) ?? defaults.http3 ?? false;

  let certificate: string | null = null;
  // A regex host gets HTTPS only from CERT_NAME (as in nginx-proxy): no certificate can be matched to a pattern.
  if (method !== 'nohttps' && (host.kind !== 'regex' || certName)) {
    if (certName) {
      certificate = certificates.names.has(certName) ? certName : null;
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
      const requested = certificates.requestOf.get(host.value);
      const acme = requested && certificates.acme.get(requested.name);
      certificate = acme?.name ?? coveringCertificate(certificates, host.value)?.name ?? null;
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
  return {
    certificate,
    http,
    https,
    hsts,
    sslPolicy,
    httpsPort: httpsPort === 443 ? null : httpsPort,
    // QUIC is TLS 1.3 only: there is nothing to offer on a host served over HTTP.
    http3: https && http3Label,
  };
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

/** A service asks to be routed with VIRTUAL_HOST or nginx-proxy's VIRTUAL_HOST_MULTIPORTS. */
export function isRouted(service: ServiceInfo): boolean {
  return (
    lookupLabel(service, 'VIRTUAL_HOST') !== undefined ||
    lookupLabel(service, 'VIRTUAL_HOST_MULTIPORTS') !== undefined
  );
}

/** Routed over HTTP, or given a TCP port or TLS passthrough (src/model/stream-routes.ts): its tasks are polled. */
export function isProxied(service: ServiceInfo): boolean {
  return (
    isRouted(service) ||
    lookupLabel(service, TCP_PORT_LABEL) !== undefined ||
    lookupLabel(service, TLS_PASSTHROUGH_LABEL) !== undefined
  );
}

/** www ↔ apex: the counterpart host of a route answers with a redirect to the canonical one. */
function wwwRedirect(
  route: ServiceRoute,
  host: HostPattern,
  names: ReadonlySet<string>,
  problems: Problem[],
): LocationRedirect | null {
  if (!route.www || host.kind !== 'exact') return null;
  const isWww = host.value.startsWith('www.');
  const counterpart = isWww ? host.value.slice(4) : `www.${host.value}`;
  const redirects = route.www === 'to-apex' ? isWww : !isWww;
  if (!redirects) {
    if (!names.has(counterpart)) {
      problems.push(
        warning(
          route.service.name,
          'swarmgate.www-redirect',
          `add "${counterpart}" to VIRTUAL_HOST so the edge answers it with a redirect to "${host.value}"`,
        ),
      );
    }
    return null;
  }
  return names.has(counterpart) ? { target: counterpart, keepScheme: true } : null;
}

/** One route as VIRTUAL_HOST_MULTIPORTS or the single-route labels give it. */
interface RouteSpec {
  readonly hosts: HostPattern[];
  readonly port: number;
  readonly path: PathPattern;
  readonly dest: string | null;
  readonly proto: Proto;
}

function decodeServiceRoutes(
  service: ServiceInfo,
  settings: ModelSettings,
  networkNames: ReadonlyMap<string, string>,
  configs: readonly ConfigFile[],
  problems: Problem[],
): ServiceRoute[] | null {
  let valid = true;
  const report = (label: string, reason: string, code: Problem['code'] = 'INVALID_LABEL'): void => {
    valid = false;
    problems.push({ service: service.name, label, code, reason, severity: 'error' });
  };
  function field<T>(label: string, fallback: T, parse: (raw: string) => Parsed<T>): T {
    const raw = lookupLabel(service, label);
    if (raw === undefined || (raw.trim() === '' && label !== 'VIRTUAL_HOST')) return fallback;
    const parsed = parse(raw);
    if (parsed.ok) return parsed.value;
    report(label, parsed.reason);
    return fallback;
  }

  const multiports = lookupLabel(service, 'VIRTUAL_HOST_MULTIPORTS');
  const single = multiports === undefined || multiports.trim() === '';
  const hosts = single ? field<HostPattern[]>('VIRTUAL_HOST', [], parseHostList) : [];
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
  const staging = field<boolean>('LETSENCRYPT_TEST', false, parseBoolean);
  const caUri = field<string | null>('ACME_CA_URI', null, parseDirectoryUrl);
  if (staging && caUri) {
    problems.push(
      warning(service.name, 'ACME_CA_URI', 'LETSENCRYPT_TEST=true wins: the staging directory is used'),
    );
  }
  const sslPolicyRaw = lookupLabel(service, 'SSL_POLICY');
  const sslPolicy = field<SslPolicy | null>('SSL_POLICY', null, parseSslPolicy);
  if (sslPolicy && sslPolicyRaw && isMappedSslPolicy(sslPolicyRaw)) {
    problems.push({
      service: service.name,
      label: 'SSL_POLICY',
      code: 'UNSUPPORTED_SETTING',
      reason: `"${sslPolicyRaw.trim()}" is served as ${sslPolicy} (same TLS versions, forward-secret AEAD ciphers only); write ${sslPolicy}`,
      severity: 'warning',
    });
  }
  const httpsPort = field<number | null>('EXTERNAL_HTTPS_PORT', null, parsePort);
  // HTTP/3: swarmgate's label, or nginx-proxy's (a container label there); ours wins when both are set.
  const http3Own = field<boolean | null>(HTTP3_LABEL, null, parseSwitch);
  const http3NginxProxy = field<boolean | null>(NGINX_PROXY_HTTP3_LABEL, null, parseBoolean);
  if (http3Own !== null && http3NginxProxy !== null && http3Own !== http3NginxProxy) {
    problems.push(
      warning(
        service.name,
        NGINX_PROXY_HTTP3_LABEL,
        `${HTTP3_LABEL} is set too and wins; this value is ignored`,
      ),
    );
  }
  const http3 = http3Own ?? http3NginxProxy;
  const tls: ServiceTlsLabels = {
    certificateHosts,
    email,
    httpsMethod: field<HttpsMethod | null>('HTTPS_METHOD', null, parseHttpsMethod),
    hsts: field<string | null | undefined>('HSTS', undefined, parseHstsLenient),
    certName: field<string | null>('CERT_NAME', null, parseCertName),
    sslPolicy,
    httpsPort,
    http3,
    directory: staging ? 'staging' : caUri,
  };

  let specs: RouteSpec[] = [{ hosts, port, path, dest, proto }];
  if (!single) {
    if (lookupLabel(service, 'VIRTUAL_HOST') !== undefined) {
      problems.push(
        warning(
          service.name,
          'VIRTUAL_HOST',
          'VIRTUAL_HOST_MULTIPORTS is set: it decides the routes (as in nginx-proxy)',
        ),
      );
    }
    const parsed = parseMultiports(multiports, { port, proto, dest });
    if (parsed.ok) specs = parsed.value;
    else {
      report('VIRTUAL_HOST_MULTIPORTS', parsed.reason);
      specs = [];
    }
  }
  for (const spec of specs) {
    if (valid && spec.dest !== null && spec.path.kind === 'regex') {
      report('VIRTUAL_DEST', 'VIRTUAL_DEST cannot rewrite a regular-expression VIRTUAL_PATH');
    }
  }

  const allLabels = { ...service.env, ...service.labels };
  for (const key of Object.keys(allLabels).sort()) {
    const unsupported = UNSUPPORTED_SETTINGS[key] ?? unsupportedPrefixSetting(key);
    if (unsupported) {
      const value = (allLabels[key] ?? '').trim().toLowerCase();
      if (unsupported.harmless?.includes(value)) continue;
      if (unsupported.failClosed) {
        report(
          key,
          `not supported: ${unsupported.instead}; the service is left out rather than served without it`,
          'UNSUPPORTED_SETTING',
        );
      } else {
        problems.push({
          service: service.name,
          label: key,
          code: 'UNSUPPORTED_SETTING',
          reason: `not supported, ignored: ${unsupported.instead}`,
          severity: 'warning',
        });
      }
      continue;
    }
    if (!key.startsWith('swarmgate.') || !(key in service.labels)) continue;
    if (KNOWN_SWARMGATE_LABELS.has(key) || key.startsWith(HEADER_LABEL_PREFIX)) continue;
    problems.push({
      service: service.name,
      label: key,
      code: 'UNKNOWN_LABEL',
      reason: `swarmgate does not know the label "${key}"; it is ignored`,
      severity: 'warning',
    });
  }

  const tuning: LocationTuning = {
    maxBodySize: field<string | null>('swarmgate.max-body-size', null, parseBodySize),
    timeoutSeconds: field<number | null>('swarmgate.proxy-timeout', null, parseTimeoutSeconds),
    requestBuffering: field<boolean | null>('swarmgate.request-buffering', null, parseSwitch),
    buffering: field<boolean | null>('swarmgate.buffering', null, parseSwitch),
    accessLog: field<AccessLog | null>('swarmgate.access_log', null, parseAccessLog),
    retryTries: field<number | null>('swarmgate.retry.tries', null, parseRetryTries),
    retryTimeoutMs: field<number | null>('swarmgate.retry.timeout', null, parseRetryTimeout),
  };
  const balance = decodeBalance(service, field, problems);
  const health = decodeHealthCheck(service, proto, field, problems);
  const weight = field<number | null>('swarmgate.weight', null, parseWeight);
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
  const policy = decodePolicy(service, configs, field, report, problems);
  const redirect = field<string | null>('swarmgate.redirect', null, parseRedirectTarget);
  const www = field<WwwRedirect | null>('swarmgate.www-redirect', null, parseWwwRedirect);
  const network = valid ? chooseNetwork(service, settings, networkNames, requestedNetwork, problems) : null;
  if (!valid || network === null) return null;
  const primaryPort = specs[0]?.port ?? port;
  return specs.map((spec, index) => ({
    service,
    ...spec,
    root,
    network,
    tls,
    tuning,
    policy,
    redirect: redirect === null ? null : { target: redirect, keepScheme: false },
    www,
    index,
    primaryPort,
    balance,
    health,
    weight,
  }));
}

/** swarmgate.balance, swarmgate.balance.key and the sticky labels; settings that do nothing are warned about. */
function decodeBalance(service: ServiceInfo, field: FieldReader, problems: Problem[]): UpstreamBalance {
  const method = field<BalanceMethod>('swarmgate.balance', 'round_robin', parseBalanceMethod);
  const key = field<HashKey | null>('swarmgate.balance.key', null, parseHashKey);
  if (key && method !== 'hash') {
    problems.push(warning(service.name, 'swarmgate.balance.key', 'ignored without swarmgate.balance=hash'));
  }
  const sticky = field<boolean>('swarmgate.sticky', false, parseSticky);
  const cookie = field<string | null>('swarmgate.sticky.cookie', null, parseCookieName);
  const maxAge = field<number | null | undefined>('swarmgate.sticky.max_age', undefined, parseCookieMaxAge);
  if (!sticky) {
    for (const [label, value] of [
      ['swarmgate.sticky.cookie', cookie],
      ['swarmgate.sticky.max_age', maxAge],
    ] as const) {
      if (value !== null && value !== undefined) {
        problems.push(warning(service.name, label, 'ignored without swarmgate.sticky=cookie'));
      }
    }
  }
  return {
    method,
    key: method === 'hash' ? (key ?? { kind: 'client_ip' }) : null,
    // The default name is the service's own, so two sticky services on one host never overwrite each other's.
    sticky: sticky
      ? { cookie: cookie ?? `swarmgate_${shortHash(service.name)}`, maxAge: maxAge ?? null }
      : null,
  };
}

/**
 * swarmgate.healthcheck.*: on with a path; the other labels alone do nothing (warned). A timeout that is not below
 * the interval is warned and halved to it: probes of one task must never overlap.
 */
function decodeHealthCheck(
  service: ServiceInfo,
  proto: Proto,
  field: FieldReader,
  problems: Problem[],
): HealthCheck | null {
  const path = field<string | null>('swarmgate.healthcheck.path', null, parseHealthPath);
  const interval = field<number | null>('swarmgate.healthcheck.interval', null, parseHealthInterval);
  const timeout = field<number | null>('swarmgate.healthcheck.timeout', null, parseHealthTimeout);
  const status = field<HealthCheck['status'] | null>('swarmgate.healthcheck.status', null, parseHealthStatus);
  const fails = field<number | null>('swarmgate.healthcheck.fails', null, parseHealthCount);
  const passes = field<number | null>('swarmgate.healthcheck.passes', null, parseHealthCount);
  const others: readonly (readonly [string, unknown])[] = [
    ['swarmgate.healthcheck.interval', interval],
    ['swarmgate.healthcheck.timeout', timeout],
    ['swarmgate.healthcheck.status', status],
    ['swarmgate.healthcheck.fails', fails],
    ['swarmgate.healthcheck.passes', passes],
  ];
  const ignore = (reason: string): null => {
    for (const [label, value] of others) {
      if (value !== null) problems.push(warning(service.name, label, reason));
    }
    return null;
  };
  if (path === null) return ignore('ignored without swarmgate.healthcheck.path');
  if (proto !== 'http' && proto !== 'https') {
    problems.push(
      warning(
        service.name,
        'swarmgate.healthcheck.path',
        `ignored: health checks are HTTP GETs, and this service speaks ${proto}`,
      ),
    );
    return ignore(`ignored: health checks are HTTP GETs, and this service speaks ${proto}`);
  }
  const intervalMs = interval ?? HEALTH_INTERVAL_MS.default;
  let timeoutMs = timeout ?? Math.min(HEALTH_TIMEOUT_MS.default, Math.floor(intervalMs / 2));
  if (timeoutMs >= intervalMs) {
    problems.push({
      service: service.name,
      label: 'swarmgate.healthcheck.timeout',
      code: 'INVALID_LABEL',
      reason: `${timeoutMs} ms is not below the interval (${intervalMs} ms); half the interval is used`,
      severity: 'warning',
    });
    timeoutMs = Math.floor(intervalMs / 2);
  }
  return {
    path,
    intervalMs,
    timeoutMs,
    status: status ?? HEALTH_STATUS_DEFAULT,
    fails: fails ?? 1,
    passes: passes ?? 1,
  };
}

type FieldReader = <T>(label: string, fallback: T, parse: (raw: string) => Parsed<T>) => T;

/** The access, limit and header labels. A bad or missing reference is an error: the service is left out. */
function decodePolicy(
  service: ServiceInfo,
  configs: readonly ConfigFile[],
  field: FieldReader,
  report: (label: string, reason: string) => void,
  problems: Problem[],
): LocationPolicy {
  const key = safeName(service.name);
  const access = field<NetworkAccess>('NETWORK_ACCESS', 'external', parseNetworkAccess);
  const allowed = field<string[]>('swarmgate.allow', [], parseCidrList);
  const deny = field<string[]>('swarmgate.deny', [], parseCidrList);
  const allow = access === 'internal' ? [...new Set([...INTERNAL_RANGES, ...allowed])] : allowed;

  function configFile(label: string, kind: string, folder: string, extension: string): ConfigFile | null {
    const name = field<string | null>(label, null, parseConfigName);
    if (name === null) return null;
    const config = configs.find((candidate) => candidate.name === name);
    if (!config) {
      report(
        label,
        `no Docker config "${name}" labelled ${CONFIG_FILE_LABEL}=${kind} (create it with: docker config create --label ${CONFIG_FILE_LABEL}=${kind} ${name} <file>)`,
      );
      return null;
    }
    if (config.kind !== kind) {
      report(label, `Docker config "${name}" is labelled ${CONFIG_FILE_LABEL}=${config.kind}, not ${kind}`);
      return null;
    }
    return { ...config, name: `${folder}/${name}.${extension}` };
  }

  let basicAuth: LocationPolicy['basicAuth'] = null;
  const htpasswd = configFile('swarmgate.auth.basic', 'htpasswd', 'auth', 'htpasswd');
  if (htpasswd) {
    const parsed = parseHtpasswd(htpasswd.data);
    if (!parsed.ok) report('swarmgate.auth.basic', parsed.reason);
    else {
      basicAuth = { realm: 'Restricted', file: { path: htpasswd.name, content: parsed.value.content } };
      if (parsed.value.weak.length > 0) {
        problems.push(
          warning(
            service.name,
            'swarmgate.auth.basic',
            `unsalted {SHA} hashes for ${parsed.value.weak.join(', ')}: replace them with bcrypt (htpasswd -B)`,
          ),
        );
      }
    }
  }
  let errorPage: BundleFile | null = null;
  const page = configFile('swarmgate.error-page', 'error-page', 'errors', 'html');
  if (page) {
    const parsed = parseErrorPage(page.data);
    if (parsed.ok) errorPage = { path: page.name, content: parsed.value };
    else report('swarmgate.error-page', parsed.reason);
  }

  const forward = field<ForwardAuthTarget | null>('swarmgate.auth.forward', null, parseForwardAuthUrl);
  const copy = field<string[]>('swarmgate.auth.forward.headers', [], parseHeaderNames);
  if (!forward && copy.length > 0) {
    problems.push(
      warning(service.name, 'swarmgate.auth.forward.headers', 'ignored without swarmgate.auth.forward'),
    );
  }
  const rate = field<Rate | null>('swarmgate.rate-limit', null, parseRate);
  const burst = field<number | null>('swarmgate.rate-limit.burst', null, parseCount(0, 100_000));
  if (!rate && burst !== null) {
    problems.push(
      warning(service.name, 'swarmgate.rate-limit.burst', 'ignored without swarmgate.rate-limit'),
    );
  }

  const headers: ResponseHeader[] = field('swarmgate.security-headers', false, parseSwitch)
    ? [...SECURITY_HEADERS]
    : [];
  for (const label of Object.keys(service.labels).sort()) {
    if (!label.startsWith(HEADER_LABEL_PREFIX)) continue;
    const header = field<ResponseHeader | null>(label, null, (raw) =>
      parseResponseHeader(label.slice(HEADER_LABEL_PREFIX.length), raw),
    );
    if (!header) continue;
    const at = headers.findIndex((existing) => existing.name.toLowerCase() === header.name.toLowerCase());
    if (at >= 0) headers.splice(at, 1, header);
    else headers.push(header);
  }
  if (headers.length > 64) report('swarmgate.header.*', 'at most 64 response headers');

  let cors: LocationPolicy['cors'] = null;
  const origins = field<Cors['origins'] | null>('swarmgate.cors.origins', null, parseCorsOrigins);
  const methods = field<string[]>(
    'swarmgate.cors.methods',
    ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'],
    parseMethods,
  );
  const allowHeaders = field<string[]>(
    'swarmgate.cors.headers',
    ['Authorization', 'Content-Type'],
    parseHeaderNames,
  );
  const credentials = field<boolean>('swarmgate.cors.credentials', false, parseSwitch);
  if (origins) {
    if (origins === '*' && credentials) {
      report(
        'swarmgate.cors.credentials',
        'browsers refuse credentials with any origin ("*"); list the origins in swarmgate.cors.origins',
      );
    }
    cors = {
      originsRegex: origins === '*' ? null : originsRegex(origins),
      methods: methods.join(', '),
      headers: allowHeaders.join(', '),
      credentials,
    };
  }

  return {
    deny,
    allow,
    basicAuth,
    forwardAuth: forward
      ? { ...forward, copyHeaders: copy.map((name) => ({ name, variable: headerVariable(name) })) }
      : null,
    rateLimit: rate
      ? {
          zone: `swarmgate_rate_${rate.count}r${rate.per}`,
          rate: `${rate.count}r/${rate.per}`,
          burst: burst ?? (rate.per === 's' ? rate.count : Math.max(1, Math.ceil(rate.count / 60))),
        }
      : null,
    maxConnections: field<number | null>('swarmgate.max-connections', null, parseCount(1, 1_000_000)),
    gzip: field<boolean | null>('swarmgate.gzip', null, parseSwitch),
    headers,
    cors,
    errorPage,
    key,
  };
}

/**
 * nginx-proxy's VIRTUAL_HOST_MULTIPORTS, in YAML or JSON: host → path → {port, proto, dest}. A host with no paths
 * (empty, null or {}) gets "/"; a path with no settings (empty, null or {}) gets the service's
 * VIRTUAL_PORT/PROTO/DEST; dest "" means no rewrite. Routes with the same path, port, proto and dest share one
 * entry with several hosts.
 */
function parseMultiports(
  raw: string,
  defaults: { port: number; proto: Proto; dest: string | null },
): Parsed<RouteSpec[]> {
  const fail = (reason: string): Parsed<RouteSpec[]> => ({ ok: false, reason });
  const parsed = parseLabelDocument(raw);
  if (!parsed.ok)
    return fail(`${parsed.reason} (write a YAML or JSON map host → path → {port, proto, dest})`);
  const document = parsed.value;
  if (!isPlainObject(document) || Object.keys(document).length === 0) {
    return fail('must be a map of host names (YAML or JSON)');
  }
  if (Object.keys(document).length > 100) return fail('at most 100 hosts');
  const grouped = new Map<string, RouteSpec>();
  for (const [hostRaw, paths] of Object.entries(document)) {
    const host = parseHost(hostRaw);
    if (!host.ok) return fail(host.reason);
    const entries: [string, unknown][] =
      paths === null || paths === undefined || (isPlainObject(paths) && Object.keys(paths).length === 0)
        ? [['/', null]]
        : isPlainObject(paths)
          ? Object.entries(paths)
          : [];
    if (entries.length === 0) return fail(`host "${hostRaw}": give nothing or a map of paths`);
    if (entries.length > 50) return fail(`host "${hostRaw}": at most 50 paths`);
    for (const [pathRaw, options] of entries) {
      const path = parsePath(pathRaw);
      if (!path.ok) return fail(path.reason);
      if (options !== null && !isPlainObject(options))
        return fail(`host "${hostRaw}" path "${pathRaw}": give nothing or a map of port, proto, dest`);
      const given: Record<string, unknown> = options ?? {};
      const unknown = Object.keys(given).filter((name) => !['port', 'proto', 'dest'].includes(name));
      if (unknown.length > 0)
        return fail(
          `host "${hostRaw}" path "${pathRaw}": unknown keys ${unknown.join(', ')} (port, proto, dest)`,
        );
      const port =
        given.port === undefined
          ? { ok: true as const, value: defaults.port }
          : parsePort(scalar(given.port));
      if (!port.ok) return fail(`host "${hostRaw}" path "${pathRaw}": ${port.reason}`);
      const proto =
        given.proto === undefined
          ? { ok: true as const, value: defaults.proto }
          : parseProto(scalar(given.proto));
      if (!proto.ok) return fail(`host "${hostRaw}" path "${pathRaw}": ${proto.reason}`);
      const dest =
        given.dest === undefined
          ? { ok: true as const, value: defaults.dest }
          : given.dest === ''
            ? { ok: true as const, value: null }
            : parseDest(scalar(given.dest));
      if (!dest.ok) return fail(`host "${hostRaw}" path "${pathRaw}": ${dest.reason}`);
      const key = JSON.stringify([path.value.value, port.value, proto.value, dest.value]);
      const spec = grouped.get(key);
      if (spec) spec.hosts.push(host.value);
      else
        grouped.set(key, {
          hosts: [host.value],
          port: port.value,
          path: path.value,
          dest: dest.value,
          proto: proto.value,
        });
    }
  }
  return { ok: true, value: [...grouped.values()] };
}

/** A JSON string or number as text; anything else becomes a value no parser accepts. */
function scalar(value: unknown): string {
  return typeof value === 'string' || typeof value === 'number' ? String(value) : '(not a string or number)';
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
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
 * Two services may not claim the same host and path, unless both opt in with swarmgate.weight: then the newcomer
 * joins the older one's location as a canary, and the requests are split by weight. Otherwise the service created
 * first keeps the route, so deploying a conflicting service never takes a working route away; the newcomer is left
 * out with a Problem. Nor may a newcomer take over a host an older service routes by other means: a regex
 * VIRTUAL_PATH (nginx tries regex locations before prefixes, so `~^/` would take every request), or TLS labels the
 * host's oldest service did not set (HSTS or a redirect to HTTPS change how browsers reach that service too).
 */
function claimRoutes(
  candidates: readonly ServiceRoute[],
  problems: Problem[],
  adminHost: string | null,
): { accepted: ServiceRoute[]; shared: Map<string, ServiceRoute[]> } {
  const ordered = [...candidates].sort(
    (a, b) =>
      compareStrings(a.service.createdAt, b.service.createdAt) ||
      compareStrings(a.service.name, b.service.name),
  );
  const owners = new Map<string, ServiceRoute>();
  const oldestByHost = new Map<string, ServiceRoute>();
  const accepted: ServiceRoute[] = [];
  /** "host path" → the routes sharing it as a canary group, oldest first. */
  const shared = new Map<string, ServiceRoute[]>();
  // A service's routes (several with VIRTUAL_HOST_MULTIPORTS) are accepted or refused together.
  const byService = new Map<string, ServiceRoute[]>();
  for (const route of ordered) {
    const list = byService.get(route.service.id);
    if (list) list.push(route);
    else byService.set(route.service.id, [route]);
  }
  for (const routes of byService.values()) {
    const label = (route: ServiceRoute): string =>
      route.index === 0 && lookupLabel(route.service, 'VIRTUAL_HOST_MULTIPORTS') === undefined
        ? 'VIRTUAL_HOST'
        : 'VIRTUAL_HOST_MULTIPORTS';
    let refusal: Problem | null = null;
    const joins = new Map<ServiceRoute, string[]>();
    for (const route of routes) {
      // The status page's host belongs to the controller: a service that could claim it could show its own login
      // form there and collect the admin token.
      if (adminHost && route.hosts.some((host) => host.value === adminHost)) {
        refusal = {
          service: route.service.name,
          label: label(route),
          code: 'CONFLICT',
          reason: `host "${adminHost}" is the admin host (SWARMGATE_ADMIN_HOST): only the status page is served there`,
          severity: 'error',
        };
        break;
      }
      const joined: string[] = [];
      for (const host of route.hosts) {
        const owner = owners.get(`${host.value} ${route.path.value}`);
        if (!owner) continue;
        const where = `host "${host.value}" path "${route.path.value}"`;
        if (owner.weight !== null && route.weight !== null && owner.proto === route.proto) {
          joined.push(host.value);
          continue;
        }
        const reason =
          owner.weight !== null && route.weight !== null
            ? `${where} is routed to service "${owner.service.name}" over ${owner.proto}; a canary must use the same VIRTUAL_PROTO (${route.proto} here)`
            : `${where} is already routed to service "${owner.service.name}"${owner.weight !== null || route.weight !== null ? '; both services must set swarmgate.weight to share it' : ''}`;
        refusal = {
          service: route.service.name,
          label: label(route),
          code: 'CONFLICT',
          reason,
          severity: 'error',
        };
        break;
      }
      if (refusal) break;
      joins.set(route, joined);
      const takeover = findTakeover(route, oldestByHost, new Set(joined));
      if (takeover) {
        refusal = {
          service: route.service.name,
          label: takeover.label,
          code: 'CONFLICT',
          reason: takeover.reason,
          severity: 'error',
        };
        break;
      }
    }
    if (refusal) {
      problems.push(refusal);
      continue;
    }
    for (const route of routes) {
      const joined = new Set(joins.get(route) ?? []);
      for (const host of route.hosts) {
        const key = `${host.value} ${route.path.value}`;
        if (joined.has(host.value)) {
          const owner = owners.get(key) as ServiceRoute;
          const group = shared.get(key) ?? [owner];
          group.push(route);
          shared.set(key, group);
          const ignored = canaryDifferences(owner, route);
          if (ignored.length > 0) {
            problems.push(
              warning(
                route.service.name,
                'swarmgate.weight',
                `host "${host.value}" path "${route.path.value}" is served with service "${owner.service.name}"'s settings; this service's ${ignored.join(', ')} do not apply there`,
              ),
            );
          }
        } else owners.set(key, route);
        if (!oldestByHost.has(host.value)) oldestByHost.set(host.value, route);
      }
      accepted.push(route);
    }
  }
  return { accepted, shared };
}

/** The settings of a canary that the group's location (its oldest service's) does not follow. */
function canaryDifferences(owner: ServiceRoute, canary: ServiceRoute): string[] {
  const differs = (a: unknown, b: unknown): boolean => JSON.stringify(a) !== JSON.stringify(b);
  const out: string[] = [];
  if (differs(owner.dest, canary.dest) || differs(owner.root, canary.root))
    out.push('VIRTUAL_DEST/VIRTUAL_ROOT');
  if (differs(owner.tuning, canary.tuning)) out.push('proxy and retry settings');
  if (differs({ ...owner.policy, key: '' }, { ...canary.policy, key: '' }))
    out.push('access, limit and header settings');
  if (differs(owner.redirect, canary.redirect) || differs(owner.www, canary.www)) out.push('redirects');
  if (differs(owner.balance, canary.balance)) out.push('balancing settings');
  if (differs(owner.health, canary.health)) out.push('health checks');
  return out;
}

/**
 * The members of a canary group's upstream: each service's tasks share its weight equally. A service of weight 0
 * gets no requests; if every service with tasks has weight 0, they share evenly (a group is never left empty by
 * its weights alone, so changing weights never changes the config's shape).
 */
function weightedServers(
  group: readonly ServiceRoute[],
  serversOf: readonly (readonly UpstreamServer[])[],
  problems: Problem[],
): UpstreamServer[] {
  const withTasks = group.filter((_, index) => (serversOf[index]?.length ?? 0) > 0);
  const allZero = withTasks.every((route) => (route.weight ?? 0) === 0);
  if (allZero && withTasks.length > 1) {
    problems.push(
      warning(
        group[0]?.service.name ?? '',
        'swarmgate.weight',
        `every service sharing this route has weight 0 (${withTasks.map((route) => route.service.name).join(', ')}); the services share requests evenly`,
      ),
    );
  }
  const out: UpstreamServer[] = [];
  group.forEach((route, index) => {
    const servers = serversOf[index] ?? [];
    const weight = allZero ? 1 : (route.weight ?? 0);
    if (weight === 0 || servers.length === 0) return;
    // Per task: weight × 1000 / tasks, so 90/10 stays 90/10 whatever the replica counts (1000 × 1000 at most).
    const each = Math.max(1, Math.round((weight * 1000) / servers.length));
    for (const server of servers) out.push({ ...server, weight: each });
  });
  return out;
}

/** Host-wide TLS labels: only a host's oldest service may set them (a later one may repeat or differ, see pick). */
const HOST_TLS_LABELS: readonly (readonly [keyof ServiceTlsLabels, string])[] = [
  ['httpsMethod', 'HTTPS_METHOD'],
  ['hsts', 'HSTS'],
  ['certName', 'CERT_NAME'],
  ['sslPolicy', 'SSL_POLICY'],
  ['httpsPort', 'EXTERNAL_HTTPS_PORT'],
  ['http3', HTTP3_LABEL],
];

function isSet(labels: ServiceTlsLabels, key: keyof ServiceTlsLabels): boolean {
  // hsts: undefined is "not set", null is "off" (set).
  return key === 'hsts' ? labels.hsts !== undefined : labels[key] !== null;
}

/** The label and reason if `route` would take over a host an older accepted service routes; null otherwise. */
function findTakeover(
  route: ServiceRoute,
  oldestByHost: ReadonlyMap<string, ServiceRoute>,
  joined: ReadonlySet<string>,
): { label: string; reason: string } | null {
  for (const host of route.hosts) {
    const oldest = oldestByHost.get(host.value);
    if (!oldest || oldest.service.id === route.service.id) continue;
    const owner = oldest.service.name;
    // A canary's regex path is the group's own location: it takes nothing meant for another.
    if (route.path.kind === 'regex' && !joined.has(host.value)) {
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
  // A set only for services with many tasks: for the usual few a scan of what is kept allocates nothing (10,000
  // services made a set each per reconcile).
  const seen = tasks.length > SCAN_UP_TO ? new Set<string>() : null;
  for (const task of tasks) {
    if (!isRoutable(task)) continue;
    const ip = addressOn(task, route.network);
    if (ip === undefined || ip === '') continue;
    if (seen ? seen.has(ip) : servers.some((server) => server.ip === ip)) continue;
    // The edges' balancer takes dotted IPv4 (what Swarm overlays give tasks); any other task is left out alone.
    if (!IPV4.test(ip)) {
      problems.push({
        service: route.service.name,
        label: 'VIRTUAL_HOST',
        code: 'UNSUPPORTED_ADDRESS',
        reason: `task ${task.id} has address ${ip} on ${route.network}; only IPv4 task addresses are routed`,
        severity: 'warning',
      });
      continue;
    }
    seen?.add(ip);
    servers.push({ ip, port: route.port, taskId: task.id, nodeId: task.nodeId });
  }
  if (servers.length <= SCAN_UP_TO) {
    // Few: sorted in place, keys computed in each comparison (no wrapper per server, no new arrays).
    return servers.sort((a, b) => ipSortKey(a.ip) - ipSortKey(b.ip) || compareStrings(a.ip, b.ip));
  }
  return servers
    .map((server) => ({ server, sortKey: ipSortKey(server.ip) }))
    .sort((a, b) => a.sortKey - b.sortKey || compareStrings(a.server.ip, b.server.ip))
    .map((entry) => entry.server);
}

/** Up to this many tasks, a service's addresses are deduplicated and sorted without helper objects. */
const SCAN_UP_TO = 32;

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
  return `svc_${safeName(serviceName)}`;
}

/** A name of [A-Za-z0-9_] only, distinct per input: upstream names and per-service limit keys. */
function safeName(text: string): string {
  return `${text.replace(/[^A-Za-z0-9_]/g, '_')}_${shortHash(text)}`;
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

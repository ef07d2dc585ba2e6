// renderConfig: pure. Routing model in, the files of an edge bundle out (same model, same bytes).
import { createHash } from 'node:crypto';
import type { ProxySettings } from '../config.ts';
import type { RoutingModel } from '../model/routing-model.ts';
import type { TemplateRenderer } from './nunjucks-env.ts';
import { inputKey } from './block-cache.ts';
import type { RenderCache } from './block-cache.ts';
import { SwarmgateError } from '../errors.ts';
import { balancerOptions } from './balancer-options.ts';
import type { ProbeTarget } from './balancer-options.ts';
import { formatPeers, isPeerAddress, isPeerPort, isUpstreamName } from './peers-text.ts';
import type { StreamModel } from '../model/stream-routes.ts';
import type { VirtualServer } from '../model/routing-model.ts';
import {
  CERTIFICATE_PEMS_FILE,
  CERTIFICATES_FILE,
  fitsCertificatePems,
  formatCertificatePems,
  formatCertificates,
  isCertificateHost,
} from './certificates-text.ts';
import type { CertificateEntry } from './certificates-text.ts';
import { EARLY_HOSTS_FILE, earlyHostProblem, formatEarlyHosts } from './early-hosts-text.ts';
import type { EarlyHost } from './early-hosts-text.ts';

/** Bundle-relative path → file content. nginx.conf is the entry point; everything else is relative to it. */
export type BundleFiles = Readonly<Record<string, string>>;

export interface RenderSettings {
  readonly proxy: ProxySettings;
  /** Written into the header comment; tests pin it so goldens do not change with every release. */
  readonly generator: string;
  /** Redirect status for methods other than GET and HEAD under HTTPS_METHOD=redirect. */
  readonly nonGetRedirect?: 301 | 307 | 308;
  /** Certificate for unknown names on 443; without one their TLS handshake is rejected. */
  readonly defaultCertificate?: string | null;
  /** Where nginx finds the balancer's Lua (lua/ in the repository); tests running a host nginx point it there. */
  readonly luaDir?: string;
  /** Where nginx finds the stream balancer's njs (njs/ in the repository); only read when a service asks for TCP. */
  readonly njsDir?: string;
}

/** The image's copy of lua/ (see the Dockerfile). */
export const IMAGE_LUA_DIR = '/app/lua';
const LUA_DIR = /^\/[A-Za-z0-9_./-]+$/;
/** The image's copy of njs/ (see the Dockerfile). */
export const IMAGE_NJS_DIR = '/app/njs';

/** PEM material of a certificate the config uses; the chain goes to certs/NAME.crt, the key to certs/NAME.key. */
export interface CertificateMaterial {
  readonly certificatePem: string;
  readonly privateKeyPem: string;
}

export type CertificateLookup = (name: string) => CertificateMaterial | undefined;

const NO_CERTIFICATES: CertificateLookup = () => undefined;

export function renderConfig(
  model: RoutingModel,
  settings: RenderSettings,
  templates: TemplateRenderer,
  certificates: CertificateLookup = NO_CERTIFICATES,
  /** Blocks of the last render, reused where unchanged (the reconciler's); none: every block rendered. */
  cache: RenderCache | null = null,
): BundleFiles {
  const { defaultCertificate, certificateEntries, defaultHttp, defaultHttps, http3, early } = configSwitches(
    model,
    settings,
    certificates,
  );
  const byName = new Set(certificateEntries.map((entry) => entry.name));
  // What each upstream's locations need besides proxy_pass: a cookie for sticky ones, a release for least_conn.
  const balanceOf = new Map(model.upstreams.map((upstream) => [upstream.name, upstream.balance]));
  const serverView = (server: VirtualServer) => ({
    host: server.host,
    tls: server.tls,
    isDefault: server.isDefault,
    certificateByName: byName.has(server.host.value),
    redirectGrouped: redirectsTogether(server),
    forwardAuths: uniqueBy(
      server.locations.flatMap((location) =>
        location.policy.forwardAuth
          ? [{ key: location.policy.key, service: location.service, ...location.policy.forwardAuth }]
          : [],
      ),
      (auth) => auth.key,
    ),
    hasErrorPages: server.locations.some((location) => location.policy.errorPage !== null),
    // A least_conn request that ends on an error page is released there (error_page drops the Lua context).
    releasesOnErrorPage: server.locations.some(
      (location) =>
        location.policy.errorPage !== null &&
        location.upstream !== null &&
        balanceOf.get(location.upstream)?.method === 'least_conn',
    ),
    hasRoot: server.locations.some(
      (location) => location.path.kind === 'prefix' && location.path.value === '/',
    ),
    locations: server.locations.map((location) => ({
      ...location,
      sticky: location.upstream !== null && !location.redirect && !!balanceOf.get(location.upstream)?.sticky,
      leastConn:
        location.upstream !== null &&
        !location.redirect &&
        balanceOf.get(location.upstream)?.method === 'least_conn',
      path: {
        ...location.path,
        // "~*^/img/" → modifier "~*", body "^/img/"
        modifier: location.path.value.startsWith('~*') ? '~*' : '~',
        body: location.path.value.replace(/^~\*?/, ''),
      },
    })),
  });
  const luaDir = settings.luaDir ?? IMAGE_LUA_DIR;
  const njsDir = settings.njsDir ?? IMAGE_NJS_DIR;
  for (const dir of [luaDir, njsDir]) {
    if (!LUA_DIR.test(dir)) throw new SwarmgateError('ERR_TEMPLATE', `directory ${dir} is not a plain path`);
  }
  const locations = model.servers.flatMap((server) => server.locations);
  const rateZones = uniqueBy(
    locations.flatMap((location) =>
      location.policy.rateLimit
        ? [{ name: location.policy.rateLimit.zone, rate: location.policy.rateLimit.rate }]
        : [],
    ),
    (zone) => zone.name,
  );
  // Upstreams that locations send requests to, with the Host their health probes send (the first exact host).
  const probeTargets = new Map<string, ProbeTarget>();
  for (const server of [...model.servers].sort((a, b) => (a.host.value < b.host.value ? -1 : 1))) {
    for (const location of server.locations) {
      if (location.upstream === null || location.redirect) continue;
      const known = probeTargets.get(location.upstream);
      const host = server.host.kind === 'exact' ? server.host.value : null;
      if (!known || (known.host === null && host !== null)) {
        probeTargets.set(location.upstream, { host, tls: location.proto === 'https' });
      }
    }
  }
  const options = model.upstreams.flatMap((upstream) => {
    const lua = balancerOptions(upstream, probeTargets.get(upstream.name) ?? null);
    return lua ? [{ name: upstream.name, options: lua }] : [];
  });
  const earlyHosts = earlyEntries(model, byName, early);
  const context = {
    luaDir,
    rateZones,
    usesConnectionLimit: locations.some((location) => location.policy.maxConnections !== null),
    defaultHttp,
    defaultHttps,
    // HTTP/3 anywhere: the catch-all server then opens the QUIC socket (reuseport may be set once per port).
    http3,
    early,
    generator: settings.generator,
    proxy: settings.proxy,
    nonGetRedirect: settings.nonGetRedirect ?? 308,
    defaultCertificate,
    redirectGroups: redirectGroups(model.servers),
    // certificates.txt: the Lua picks these hosts' certificates during the handshake (see certificatesByName).
    certificatesByName: certificateEntries.length > 0,
    balancerOptions: options,
    healthChecks: model.upstreams.some((upstream) => upstream.health && probeTargets.has(upstream.name)),
    adminServer: model.adminServer,
    njsDir,
    stream: model.stream ? streamContext(model) : null,
  };
  // The server blocks and upstreams, each by its macro in the template, which sees the context without the long lists
  // (it reads none of them): so a block's text depends only on its own item and that context, and can be reused.
  const macroContext = {
    ...context,
    balancerOptions: [],
    redirectGroups: [],
    serverTexts: [],
    upstreamTexts: [],
  };
  const { serverBlocks, upstreamBlock } = templates.macros('nginx.conf.njk', macroContext);
  if (serverBlocks === undefined || upstreamBlock === undefined)
    throw new SwarmgateError('ERR_TEMPLATE', 'nginx.conf.njk lacks the serverBlocks or upstreamBlock macro');
  const setting = cache ? JSON.stringify(macroContext) : '';
  const renderServer = (server: VirtualServer): string => serverBlocks(serverView(server));
  const serverTexts = cache
    ? cache.servers.texts(
        setting,
        model.servers,
        // All a server's view is made of: the view is built only for a server not in the cache.
        (server) =>
          inputKey({
            server,
            certificateByName: byName.has(server.host.value),
            balances: server.locations.map((location) =>
              location.upstream === null ? null : (balanceOf.get(location.upstream) ?? null),
            ),
          }),
        renderServer,
      )
    : model.servers.map(renderServer);
  // An upstream block shows its name and service only (its tasks are in peers.txt): that pair is its whole input.
  const renderUpstream = (upstream: { service: string; name: string }): string =>
    upstreamBlock({ service: upstream.service, name: upstream.name });
  const upstreamTexts = cache
    ? cache.upstreams.texts(
        setting,
        model.upstreams,
        (upstream) => JSON.stringify([upstream.service, upstream.name]),
        renderUpstream,
      )
    : model.upstreams.map(renderUpstream);
  const nginxConf = templates.render('nginx.conf.njk', { ...context, serverTexts, upstreamTexts });
  cache?.settle(nginxConf);
  const files: Record<string, string> = { 'nginx.conf': nginxConf };
  // htpasswd files and error pages named by services' labels (read from Docker configs by the controller).
  for (const location of locations) {
    for (const file of [location.policy.basicAuth?.file, location.policy.errorPage]) {
      if (file) files[file.path] = file.content;
    }
  }
  // Files only for the certificates nginx.conf names (ssl_certificate); the ones picked by name go in one file.
  const named = new Set([
    ...model.servers.flatMap((server) =>
      server.tls.https && server.tls.certificate !== null && !byName.has(server.host.value)
        ? [server.tls.certificate]
        : [],
    ),
    ...(model.adminServer?.certificate ? [model.adminServer.certificate] : []),
    ...(defaultCertificate ? [defaultCertificate] : []),
  ]);
  for (const name of [...named].sort()) {
    const material = certificates(name);
    if (!material) continue;
    files[`certs/${name}.crt`] = material.certificatePem;
    files[`certs/${name}.key`] = material.privateKeyPem;
  }
  if (certificateEntries.length > 0) {
    files[CERTIFICATES_FILE] = formatCertificates([...certificateEntries, ...ownContexts(model, byName)]);
    files[CERTIFICATE_PEMS_FILE] = formatCertificatePems(
      [...new Set(certificateEntries.map((entry) => entry.certificate))].flatMap((name) => {
        const material = certificates(name);
        return material ? [{ name, ...material }] : [];
      }),
    );
  }
  if (early.http || early.https) files[EARLY_HOSTS_FILE] = formatEarlyHosts(earlyHosts);
  // Last, because they name the shape of everything else: an edge running that shape takes them without a reload.
  const shape = shapeFingerprint(files);
  files[PEERS_FILE] = renderPeers(model, shape);
  if (model.stream) files[STREAM_PEERS_FILE] = renderStreamPeers(model.stream, shape);
  return files;
}

/** What the whole model decides about the config outside any one host's server block. */
function configSwitches(model: RoutingModel, settings: RenderSettings, certificates: CertificateLookup) {
  const defaultCertificate =
    settings.defaultCertificate && certificates(settings.defaultCertificate)
      ? settings.defaultCertificate
      : null;
  const certificateEntries = certificatesByName(model, certificates);
  const defaultHttp = model.servers.some((server) => server.isDefault);
  const defaultHttps = model.servers.some((server) => server.isDefault && server.tls.https);
  const http3 = model.servers.some((server) => server.tls.http3);
  // Early routing (early-hosts.txt): the catch-all servers look new hosts up in shared memory until the reload. Port
  // 80's needs it to be the default server; 443's needs the handshake Lua and no other default certificate or QUIC,
  // and certificates.txt to name every server of 443: the client hello Lua then refuses every other name but the
  // early hosts (lua/swarmgate/certificates.lua's select), which only it can do for a resumed session.
  const early = {
    http: !defaultHttp,
    https:
      certificateEntries.length > 0 &&
      !defaultHttps &&
      !http3 &&
      defaultCertificate === null &&
      httpsNamesListed(model),
  };
  return { defaultCertificate, certificateEntries, defaultHttp, defaultHttps, http3, early };
}

/**
 * The switches of a config that hosts flip for every other host: a default host, HTTP/3 anywhere, any certificate
 * picked by name, early routing. A candidate tested by what changed renders only the changed hosts, so it may not
 * show what such a flip does to the catch-all servers and the hosts nginx accepted before; the reconciler tests
 * the whole config when these differ from the last accepted one.
 */
export function configForm(
  model: RoutingModel,
  settings: RenderSettings,
  certificates: CertificateLookup = NO_CERTIFICATES,
): string {
  const switches = configSwitches(model, settings, certificates);
  return JSON.stringify({
    defaultCertificate: switches.defaultCertificate,
    byName: switches.certificateEntries.length > 0,
    defaultHttp: switches.defaultHttp,
    defaultHttps: switches.defaultHttps,
    http3: switches.http3,
    early: switches.early,
    // The stream block and its move of 443 to a local socket: a partial render holds no stream routes.
    stream: model.stream
      ? {
          tcp: model.stream.tcp.map((route) => [route.port, route.upstream]),
          passthrough: model.stream.passthrough.map((route) => [route.host.value, route.upstream]),
        }
      : null,
  });
}

/**
 * Port 80 of an exact HTTPS host that redirects (HTTPS_METHOD=redirect, the default) differs from the next such host
 * only by its name and the port it redirects to. Those hosts share one server block per port: a block per host was
 * half of what `nginx -t` and a reload cost at 2,000 hosts (bench/new-host.ts), for no difference a client sees. The
 * default host keeps its own (it is the default server), and so do wildcard and regex hosts (the traffic metrics
 * count a shared block's requests under $host, which only exact names bound).
 */
function redirectsTogether(server: VirtualServer): boolean {
  return (
    server.tls.https && server.tls.http === 'redirect' && server.host.kind === 'exact' && !server.isDefault
  );
}

function redirectGroups(servers: readonly VirtualServer[]): { httpsPort: number | null; names: string[] }[] {
  const groups = new Map<string, { httpsPort: number | null; names: string[] }>();
  for (const server of servers) {
    if (!redirectsTogether(server)) continue;
    const key = String(server.tls.httpsPort ?? '');
    const group = groups.get(key) ?? { httpsPort: server.tls.httpsPort, names: [] };
    group.names.push(server.host.value);
    groups.set(key, group);
  }
  return [...groups.entries()]
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([, group]) => ({ ...group, names: [...new Set(group.names)].sort() }));
}

/**
 * Whether certificates.txt can name every server of port 443 (by name or as "-"): no regular expression and no name
 * the Lua cannot match as nginx does (see ownContexts), for a routed host or the admin host.
 */
function httpsNamesListed(model: RoutingModel): boolean {
  return (
    model.servers.every(
      (server) => !server.tls.https || (server.host.kind !== 'regex' && isCertificateHost(server.host.value)),
    ) &&
    (!model.adminServer?.certificate || isCertificateHost(model.adminServer.host))
  );
}

/**
 * The HTTPS names whose server block keeps a TLS context of its own, listed so the Lua stops at them as nginx does
 * (certificate "-"): without them a leading wildcard picked by name would put its certificate, or its TLS 1.3 limit,
 * on a handshake nginx then moves to this name's own context (the certificate is replaced then, the limit is not).
 */
function ownContexts(model: RoutingModel, byName: ReadonlySet<string>): CertificateEntry[] {
  const names = [
    ...model.servers
      .filter((server) => server.tls.https && server.tls.certificate !== null && server.host.kind !== 'regex')
      .map((server) => server.host.value),
    ...(model.adminServer?.certificate ? [model.adminServer.host] : []),
  ];
  return [...new Set(names)]
    .filter((name) => !byName.has(name) && isCertificateHost(name))
    .map((name) => ({ name, certificate: '-', tls13Only: false }));
}

/**
 * The HTTPS hosts whose certificate nginx picks by name during the handshake (lua/swarmgate/certificates.lua)
 * instead of loading it at every reload. Their server blocks have no TLS context of their own, so a handshake for
 * them runs in the default server's context and its client hello callback, which also limits a Mozilla-Modern
 * host to TLS 1.3. Hosts that need a context of their own keep ssl_certificate: HTTP/3 (its QUIC handshake stays in
 * nginx's hands), names the Lua cannot match as nginx does (regular expressions, "name.*"), and the default host,
 * which must hold a certificate because it is the default server. A default host with Mozilla-Modern imposes TLS 1.3
 * on every handshake of the port (OpenSSL picks the version with the default server's protocols), and one with
 * HTTP/3 would run the Lua in QUIC handshakes, so then no host is picked by name and nothing changes.
 */
function certificatesByName(model: RoutingModel, certificates: CertificateLookup): CertificateEntry[] {
  const defaultServer = model.servers.find((server) => server.isDefault && server.tls.https);
  if (defaultServer && (defaultServer.tls.sslPolicy === 'Mozilla-Modern' || defaultServer.tls.http3))
    return [];
  const fitsOneFile = (name: string): boolean => {
    const material = certificates(name);
    return material !== undefined && fitsCertificatePems(material);
  };
  const byName = (server: VirtualServer): boolean =>
    server.tls.https &&
    server.tls.certificate !== null &&
    !server.isDefault &&
    !server.tls.http3 &&
    server.host.kind !== 'regex' &&
    isCertificateHost(server.host.value) &&
    fitsOneFile(server.tls.certificate);
  // nginx serves a name that two server blocks share with the first one (and warns): so does the Lua.
  const seen = new Set<string>();
  return model.servers.flatMap((server) =>
    byName(server) &&
    server.tls.certificate !== null &&
    !seen.has(server.host.value) &&
    seen.add(server.host.value)
      ? [
          {
            name: server.host.value,
            certificate: server.tls.certificate,
            tls13Only: server.tls.sslPolicy === 'Mozilla-Modern',
          },
        ]
      : [],
  );
}

/**
 * The hosts the catch-all servers can serve exactly as their own server blocks do (see src/render/early-hosts-text.ts):
 * an exact name that no other block shares, one location "/" proxied over HTTP to an upstream with the default
 * balancing and no health check, nothing else set. An HTTPS host needs its certificate picked by name and 443's
 * early routing; a host that answers on port 80 needs port 80's.
 */
function earlyEntries(
  model: RoutingModel,
  byName: ReadonlySet<string>,
  early: { readonly http: boolean; readonly https: boolean },
): EarlyHost[] {
  const upstreams = new Map(model.upstreams.map((upstream) => [upstream.name, upstream]));
  const count = new Map<string, number>();
  for (const server of model.servers) count.set(server.host.value, (count.get(server.host.value) ?? 0) + 1);
  return model.servers.flatMap((server): EarlyHost[] => {
    const [location, ...others] = server.locations;
    const { tls } = server;
    if (
      location === undefined ||
      others.length > 0 ||
      server.host.kind !== 'exact' ||
      server.isDefault ||
      count.get(server.host.value) !== 1 ||
      !isPlainLocation(location)
    )
      return [];
    const upstream = upstreams.get(location.upstream ?? '');
    if (
      !upstream ||
      upstream.balance.method !== 'round_robin' ||
      upstream.balance.key !== null ||
      upstream.balance.sticky !== null ||
      upstream.health !== undefined
    )
      return [];
    if (tls.http3 || tls.sslPolicy === 'Mozilla-Modern') return [];
    if (tls.https && !(early.https && tls.certificate !== null && byName.has(server.host.value))) return [];
    if (tls.http !== 'refuse' && !early.http) return [];
    if (!tls.https && tls.http !== 'serve') return [];
    const entry: EarlyHost = {
      host: server.host.value,
      service: location.service,
      upstream: upstream.name,
      http: tls.http,
      certificate: tls.https ? tls.certificate : null,
      httpsPort: tls.https ? tls.httpsPort : null,
      hsts: tls.https ? tls.hsts : null,
    };
    // A name or value the table's grammar cannot carry (an underscore in a host, say) waits for the reload.
    return earlyHostProblem(entry) === null ? [entry] : [];
  });
}

/** A location the catch-all servers' generic one matches exactly: "/", HTTP to an upstream, no setting of its own. */
function isPlainLocation(location: VirtualServer['locations'][number]): boolean {
  const { policy } = location;
  return (
    location.path.kind === 'prefix' &&
    location.path.value === '/' &&
    location.proto === 'http' &&
    location.dest === null &&
    location.upstream !== null &&
    location.redirect === null &&
    Object.values(location.tuning).every((value) => value === null) &&
    policy.deny.length === 0 &&
    policy.allow.length === 0 &&
    policy.basicAuth === null &&
    policy.forwardAuth === null &&
    policy.rateLimit === null &&
    policy.maxConnections === null &&
    policy.gzip === null &&
    policy.headers.length === 0 &&
    policy.cors === null &&
    policy.errorPage === null
  );
}

/** Items with distinct keys, the first of each kept, sorted by key (same model, same bytes). */
function uniqueBy<T>(items: readonly T[], key: (item: T) => string): T[] {
  const seen = new Map<string, T>();
  for (const item of items) if (!seen.has(key(item))) seen.set(key(item), item);
  return [...seen.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, item]) => item);
}

/** The bundle file with the task addresses; the only one that may change without a reload (see lua/swarmgate/balancer.lua). */
export const PEERS_FILE = 'peers.txt';

/** "generation <shape>", then "upstream <name> <ip:port> ..." per upstream, in the model's (sorted) order. */
function renderPeers(model: RoutingModel, shape: string): string {
  const upstreams = model.upstreams.map((upstream) => {
    // The name is also the one value the template hands the Lua (balance("<name>")): the peers grammar bounds it.
    if (!isUpstreamName(upstream.name)) {
      throw new SwarmgateError('ERR_TEMPLATE', `upstream name ${upstream.name} is not a peers.txt name`, {
        service: upstream.service,
      });
    }
    for (const server of upstream.servers) {
      // The model routes IPv4 task addresses only (the edge's Lua reads nothing else); this guards that promise.
      if (!isPeerAddress(server.ip) || !isPeerPort(server.port)) {
        throw new SwarmgateError(
          'ERR_TEMPLATE',
          `task address ${server.ip}:${server.port} of service ${upstream.service} is not IPv4`,
          { service: upstream.service },
        );
      }
    }
    // The servers are members as they are (ip, port, weight): no copy of 100,000 of them per reconcile.
    return { name: upstream.name, members: upstream.servers };
  });
  // formatPeers parses what it wrote: the controller never publishes a peers.txt the edge's Lua would refuse.
  return formatPeers({ generation: shape, upstreams });
}

/**
 * The task addresses of the stream routes, in peers.txt's grammar, in a file of their own: the njs balancer reads it
 * on every new connection, so it holds the stream upstreams only (at 2,000 HTTP services peers.txt is ~0.5 MiB).
 */
export const STREAM_PEERS_FILE = 'stream-peers.txt';

function renderStreamPeers(stream: StreamModel, shape: string): string {
  return formatPeers({
    generation: shape,
    upstreams: stream.upstreams.map((upstream) => ({
      name: upstream.name,
      members: upstream.servers.map((server) => ({ ip: server.ip, port: server.port })),
    })),
  });
}

/**
 * What the stream block needs: the TCP servers, and the SNI map of passthrough names. An exact HTTPS host that a
 * passthrough wildcard would also match gets its own entry to the HTTPS servers (exact names win in the map), so a
 * wildcard never takes a host another service routes.
 */
function streamContext(model: RoutingModel): {
  tcp: StreamModel['tcp'];
  passthrough: StreamModel['passthrough'];
  sni: { host: string; upstream: string | null }[];
} {
  const stream = model.stream as StreamModel;
  const wildcards = stream.passthrough.filter((route) => route.host.kind === 'wildcard');
  const kept = model.servers.flatMap((server) =>
    server.host.kind === 'exact' &&
    wildcards.some((route) => server.host.value.endsWith(route.host.value.slice(1)))
      ? [{ host: server.host.value, upstream: null }]
      : [],
  );
  const sni = [
    ...stream.passthrough.map((route) => ({ host: route.host.value, upstream: route.upstream })),
    ...kept,
  ].sort((a, b) => (a.host < b.host ? -1 : a.host > b.host ? 1 : 0));
  return { tcp: stream.tcp, passthrough: stream.passthrough, sni };
}

/** Content address of a bundle: the same files always give the same fingerprint. */
export function fingerprintBundle(files: BundleFiles): string {
  const hash = createHash('sha256');
  for (const name of Object.keys(files).sort()) {
    const content = files[name] ?? '';
    hash.update(`${name}\u0000${Buffer.byteLength(content)}\u0000`);
    hash.update(content);
  }
  return hash.digest('hex');
}

/**
 * The fingerprint of a bundle without its task addresses. Two bundles with the same shape differ only in peers.txt:
 * if nginx accepted one it accepts the other (no new `nginx -t`), and an edge running one takes the other without
 * a reload.
 */
export function shapeFingerprint(files: BundleFiles): string {
  const shape: Record<string, string> = {};
  for (const [name, content] of Object.entries(files)) {
    if (name !== PEERS_FILE && name !== STREAM_PEERS_FILE) shape[name] = content;
  }
  return fingerprintBundle(shape);
}

/** The shape renderConfig wrote into peers.txt, so the controller does not hash a large config twice. */
export function renderedShape(files: BundleFiles): string {
  return /^generation ([0-9a-f]{64})\n/.exec(files[PEERS_FILE] ?? '')?.[1] ?? shapeFingerprint(files);
}

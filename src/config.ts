// Configuration is read once, from the environment, into a frozen object. Every bad key is listed at once.
import { parseTcpPorts } from './model/stream-labels.ts';
import { SwarmgateError } from './errors.ts';
import { parseCidrList, parseDirectoryUrl, parseHstsLenient } from './model/feature-labels.ts';
import { parseHost } from './model/labels.ts';

export interface DebounceWindow {
  /** Quiet time after the last trigger of a burst. */
  readonly minMs: number;
  /** Longest a burst may delay a reconcile, counted from its first trigger. */
  readonly maxMs: number;
}

/** What the rendered nginx config does, independent of any one service. */
export interface ProxySettings {
  /** Forward client-sent X-Forwarded-* headers (only behind a trusted load balancer). */
  readonly trustDownstreamProxy: boolean;
  readonly accessLog: boolean;
  readonly connectTimeoutMs: number;
  readonly readTimeoutSeconds: number;
  /** Where edges send /.well-known/acme-challenge/: the controller's challenge listener (HTTPS) on the overlay. */
  readonly controllerAddress: string;
  /**
   * The controller's channel certificate, at the same path on the controller (its `nginx -t` loads it) and on every
   * edge: the only certificate nginx trusts when it forwards an ACME challenge, so an overlay container that takes
   * the alias swarmgate-controller fails the handshake and is never asked (review of the security work, item 1).
   */
  readonly channelCertFile: string;
  /** Docker's embedded DNS, so nginx can re-resolve the controller when it moves. */
  readonly resolver: string;
  readonly workerConnections: number;
  /** nginx worker processes on each edge: "auto" (one per CPU) or a number. */
  readonly workerProcesses: string;
  /** Idle keep-alive connections each edge worker keeps per service. */
  readonly upstreamKeepalive: number;
  /** The edge nginx's local socket where the agent posts new task addresses (peers.txt) without a reload. */
  readonly peersSocket: string;
  /**
   * The certificate the default server of 443 holds while hosts' certificates are picked by name: nginx wants one
   * there, and it is never sent. Self-signed for swarmgate-placeholder.invalid, made when the image is built (the
   * Dockerfile), at the same path in the controller (its nginx -t) and every edge; tests point it at a fixture.
   */
  readonly placeholderCertFile: string;
  readonly placeholderKeyFile: string;
  /** Shared memory for the posted peers, and the most a post may carry. */
  readonly peersMemory: string;
  /** Shared memory for the traffic counters (lua/swarmgate/metrics.lua); full, it drops the least recently used. */
  readonly metricsMemory: string;
  /**
   * SWARMGATE_TRAFFIC_METRICS: count traffic inside nginx (lua/swarmgate/metrics.lua). Off, the edge config has no
   * log phase, counter dictionary or per-location service variable, and the edges' metrics port says counting is
   * off instead of serving traffic series: for operators who do not scrape the edges.
   */
  readonly trafficMetrics: boolean;
  /**
   * SWARMGATE_TRAFFIC_TASK_SAMPLE: one response in this many (drawn at random) has its task's status and response
   * time read and counted for it, weighted by this number; 1 reads every response. Reading the three $upstream_*
   * lists is most of what counting costs per request (bench/metrics-cost.ts); failed attempts are counted exactly.
   */
  readonly trafficTaskSample: number;
  /** The access log's format where a service does not choose one (swarmgate.access_log). */
  readonly accessLogFormat: 'json' | 'nginx-proxy';
  /** gzip for text types, on unless turned off (per service: swarmgate.gzip). */
  readonly gzip: boolean;
  /**
   * SWARMGATE_TRUSTED_PROXIES: load balancers whose X-Forwarded-For gives the client address (nginx real_ip), so
   * access rules and rate limits see the client, not the balancer. Needs SWARMGATE_TRUST_DOWNSTREAM_PROXY=true.
   */
  readonly trustedProxies: readonly string[];
  /** SWARMGATE_DEFAULT_HOST: unknown names are answered by this host's service (null: 503). */
  readonly defaultHost: string | null;
  /**
   * SWARMGATE_ENABLE_IPV6: every edge listens on [::] as well. A setting, not detected: the controller renders one
   * config for all edges. An edge whose container has IPv6 off binds [::] all the same; one on a kernel without IPv6
   * cannot, and refuses the config (test/e2e/ipv6.test.ts).
   */
  readonly ipv6: boolean;
  /**
   * SWARMGATE_ADMIN_HOST: the host name whose edge server shows the status page (and nothing else of the controller),
   * with a certificate from the controller's ACME; null (the default): the page is reachable only on the overlay.
   */
  readonly adminHost: string | null;
  /**
   * Where edges send the admin host's requests: the controller's status listener (HTTPS with the channel key pair,
   * serves the status page and nothing else), verified against the pinned channel certificate like the challenge.
   */
  readonly statusAddress: string;
  /**
   * SWARMGATE_TCP_PORTS: the edge ports services may take with swarmgate.tcp.port (each must also be published by
   * the stack); empty: none, and the config has no TCP listener.
   */
  readonly tcpPorts: readonly number[];
}

/** Rendered into every edge config by the controller and used by every edge agent, so it is fixed, not set. */
export const EDGE_PEERS_SOCKET = '/run/swarmgate-nginx-peers.sock';
/** Made by the Dockerfile; see ProxySettings.placeholderCertFile. */
export const IMAGE_PLACEHOLDER_CERT_FILE = '/app/tls/placeholder.crt';
export const IMAGE_PLACEHOLDER_KEY_FILE = '/app/tls/placeholder.key';

export interface TlsConfig {
  readonly acme: {
    readonly enabled: boolean;
    readonly directoryUrl: string;
    /** SWARMGATE_ACME_STAGING_DIRECTORY: where LETSENCRYPT_TEST=true orders (default: Let's Encrypt staging). */
    readonly stagingDirectoryUrl: string;
    /**
     * SWARMGATE_ACME_DIRECTORIES: further directories ACME_CA_URI may name. A label picks only among the
     * controller's, the staging and these: it never makes the controller contact a URL the operator did not list.
     */
    readonly allowedDirectoryUrls: readonly string[];
    readonly email: string | null;
    readonly caFile: string | null;
    readonly renewFraction: number;
    readonly concurrency: number;
    readonly retryMinMs: number;
    readonly retryMaxMs: number;
  };
  readonly stateKeyFile: string;
  readonly certsDir: string;
  readonly httpsMethod: 'redirect' | 'noredirect' | 'nohttp' | 'nohttps';
  readonly hsts: string | null;
  readonly sslPolicy: 'Mozilla-Modern' | 'Mozilla-Intermediate';
  readonly nonGetRedirect: 301 | 307 | 308;
  readonly defaultCertificate: string | null;
  /**
   * SWARMGATE_ENABLE_HTTP3: HTTP/3 (QUIC on 443/udp, advertised with Alt-Svc) for every host with a certificate,
   * unless its service says swarmgate.http3=off. Off by default: it needs 443/udp published and open to clients.
   */
  readonly http3: boolean;
}

export interface ControllerConfig {
  readonly role: 'controller';
  readonly logLevel: string;
  /** The HTTPS API: the edge channel and the admin routes. */
  readonly listenPort: number;
  /** Plain HTTP, only GET /.well-known/acme-challenge/<token>: what the edges proxy HTTP-01 challenges to. */
  readonly challengePort: number;
  /** Plain HTTP on 127.0.0.1 only: /healthz and /readyz for the container health check. */
  readonly healthPort: number;
  /**
   * HTTPS, the status page only (login, page, assets, events): what the edges proxy SWARMGATE_ADMIN_HOST to. Opened
   * only when an admin host is set.
   */
  readonly statusPort: number;
  /** The admin token (operators); never mounted in edges. */
  readonly tokenFile: string;
  /** The edges' token: it can only poll for the bundle. */
  readonly edgeTokenFile: string;
  /** The API's TLS key and certificate; edges pin the certificate. */
  readonly channelKeyFile: string;
  readonly channelCertFile: string;
  /** /healthz fails when no Docker call has succeeded for this long (Swarm then restarts the controller). */
  readonly livenessDockerMs: number;
  readonly dockerSocket: string;
  /** Overlay networks the edges are attached to, in order of preference. */
  readonly networks: readonly string[];
  readonly debounce: DebounceWindow;
  readonly fastPollMs: number;
  readonly fastPollWindowMs: number;
  readonly slowPollMs: number;
  readonly nginxBinary: string;
  readonly edgeLongPollMs: number;
  readonly proxy: ProxySettings;
  readonly tls: TlsConfig;
  /** The most replicas the admin API will scale a service to. */
  readonly maxReplicas: number;
  /** Which deployment's sealed state this controller owns: two deployments on one Swarm never share state. */
  readonly instance: string;
  /** Edge metrics ports the status page scrapes for live traffic ("tasks.swarmgate_edge:9145"); empty: none. */
  readonly edgeMetricsTargets: readonly string[];
  readonly edgeMetricsIntervalMs: number;
}

export interface EdgeConfig {
  readonly role: 'edge';
  readonly logLevel: string;
  readonly edgeId: string;
  /** https://host:port of the controller's API; the host name is checked against the pinned certificate. */
  readonly controllerUrl: string;
  /** The controller's certificate (a Docker secret): the only one the edge trusts for the channel. */
  readonly controllerCertFile: string;
  /** The edge token (poll only). */
  readonly tokenFile: string;
  readonly stateDir: string;
  readonly nginxBinary: string;
  readonly healthPort: number;
  readonly pollTimeoutMs: number;
  readonly retryMaxMs: number;
  /** Prometheus text of this edge's traffic (all interfaces, never published; 0 = off). */
  readonly metricsPort: number;
}

export type Env = Readonly<Record<string, string | undefined>>;

class EnvReader {
  readonly problems: string[] = [];
  private readonly env: Env;
  constructor(env: Env) {
    this.env = env;
  }

  string(key: string, fallback: string): string {
    const value = this.env[key];
    return value === undefined || value.trim() === '' ? fallback : value.trim();
  }

  integer(key: string, fallback: number, min: number, max: number): number {
    const raw = this.env[key];
    if (raw === undefined || raw.trim() === '') return fallback;
    if (!/^\d+$/.test(raw.trim())) {
      this.problems.push(`${key}: "${raw}" is not a whole number`);
      return fallback;
    }
    const value = Number(raw.trim());
    if (value < min || value > max) this.problems.push(`${key}: ${value} is outside ${min}..${max}`);
    return value;
  }

  boolean(key: string, fallback: boolean): boolean {
    const raw = this.env[key];
    if (raw === undefined || raw.trim() === '') return fallback;
    const value = raw.trim().toLowerCase();
    if (['1', 'true', 'yes', 'on'].includes(value)) return true;
    if (['0', 'false', 'no', 'off'].includes(value)) return false;
    this.problems.push(`${key}: "${raw}" is not a boolean (true/false)`);
    return fallback;
  }

  duration(key: string, fallbackMs: number, minMs: number, maxMs: number): number {
    const raw = this.env[key];
    if (raw === undefined || raw.trim() === '') return fallbackMs;
    const ms = parseDuration(raw);
    if (ms === null) {
      this.problems.push(`${key}: "${raw}" is not a duration (e.g. 200ms, 5s, 2m)`);
      return fallbackMs;
    }
    if (ms < minMs || ms > maxMs) this.problems.push(`${key}: ${raw} is outside ${minMs}ms..${maxMs}ms`);
    return ms;
  }

  list(key: string, fallback: readonly string[], itemPattern: RegExp): string[] {
    const raw = this.env[key];
    if (raw === undefined || raw.trim() === '') return [...fallback];
    const items = raw
      .split(',')
      .map((item) => item.trim())
      .filter((item) => item !== '');
    for (const item of items) {
      if (!itemPattern.test(item)) this.problems.push(`${key}: "${item}" is not allowed`);
    }
    if (items.length === 0) this.problems.push(`${key}: empty list`);
    return items;
  }

  logLevel(): string {
    const level = this.string('SWARMGATE_LOG_LEVEL', 'info');
    if (!['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].includes(level)) {
      this.problems.push(`SWARMGATE_LOG_LEVEL: "${level}" is not a pino level`);
      return 'info';
    }
    return level;
  }

  finish<T extends object>(config: T): Readonly<T> {
    if (this.problems.length > 0) {
      throw new SwarmgateError(
        'ERR_CONFIG_INVALID',
        `configuration is invalid: ${this.problems.join('; ')}`,
        { problems: this.problems },
      );
    }
    return deepFreeze(config);
  }
}

/** "250ms", "5s", "2m", "1h" or a bare number of milliseconds. */
export function parseDuration(raw: string): number | null {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(raw.trim());
  if (!match) return null;
  const value = Number(match[1]);
  const unit = match[2] ?? 'ms';
  const factor = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[unit] ?? 1;
  return Math.round(value * factor);
}

/** "min:max" in docker-gen's style, e.g. "50ms:500ms". */
function debounceWindow(reader: EnvReader, key: string, fallback: DebounceWindow): DebounceWindow {
  const raw = reader.string(key, '');
  if (raw === '') return fallback;
  const [minRaw, maxRaw] = raw.split(':');
  const minMs = minRaw === undefined ? null : parseDuration(minRaw);
  const maxMs = maxRaw === undefined ? null : parseDuration(maxRaw);
  if (minMs === null || maxMs === null || minMs > maxMs || maxMs > 60_000) {
    reader.problems.push(`${key}: "${raw}" is not min:max with min <= max <= 60s (e.g. 50ms:500ms)`);
    return fallback;
  }
  return { minMs, maxMs };
}

const NETWORK_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

export function readControllerConfig(env: Env): Readonly<ControllerConfig> {
  const reader = new EnvReader(env);
  const config: ControllerConfig = {
    role: 'controller',
    logLevel: reader.logLevel(),
    listenPort: reader.integer('SWARMGATE_LISTEN_PORT', 8443, 0, 65535),
    challengePort: reader.integer('SWARMGATE_CHALLENGE_PORT', 8402, 0, 65535),
    healthPort: reader.integer('SWARMGATE_HEALTH_PORT', 8081, 0, 65535),
    statusPort: reader.integer('SWARMGATE_STATUS_PORT', 8403, 0, 65535),
    tokenFile: reader.string('SWARMGATE_TOKEN_FILE', '/run/secrets/swarmgate_token'),
    edgeTokenFile: reader.string('SWARMGATE_EDGE_TOKEN_FILE', '/run/secrets/swarmgate_edge_token'),
    channelKeyFile: reader.string('SWARMGATE_CHANNEL_KEY_FILE', '/run/secrets/swarmgate_channel_key'),
    channelCertFile: reader.string('SWARMGATE_CHANNEL_CERT_FILE', '/run/secrets/swarmgate_channel_cert'),
    // A minute without Docker, then three failed probes 10 s apart: at most one restart every ~1.5 min during a
    // Docker outage, never a storm.
    livenessDockerMs: reader.duration('SWARMGATE_LIVENESS_DOCKER', 60_000, 10_000, 3_600_000),
    dockerSocket: reader.string('SWARMGATE_DOCKER_SOCKET', '/var/run/docker.sock'),
    networks: reader.list('SWARMGATE_NETWORKS', ['swarmgate'], NETWORK_NAME),
    debounce: debounceWindow(reader, 'SWARMGATE_DEBOUNCE', { minMs: 100, maxMs: 500 }),
    fastPollMs: reader.duration('SWARMGATE_FAST_POLL', 100, 50, 10_000),
    fastPollWindowMs: reader.duration('SWARMGATE_FAST_POLL_WINDOW', 120_000, 1000, 3_600_000),
    slowPollMs: reader.duration('SWARMGATE_SLOW_POLL', 5000, 500, 3_600_000),
    nginxBinary: reader.string('SWARMGATE_NGINX', 'nginx'),
    edgeLongPollMs: reader.duration('SWARMGATE_EDGE_LONG_POLL', 25_000, 1000, 120_000),
    proxy: readProxySettings(reader),
    tls: readTlsConfig(reader),
    maxReplicas: reader.integer('SWARMGATE_MAX_REPLICAS', 100, 1, 10_000),
    instance: reader.string('SWARMGATE_INSTANCE', 'swarmgate'),
    edgeMetricsTargets:
      reader.string('SWARMGATE_EDGE_METRICS_TARGETS', '') === ''
        ? []
        : reader.list('SWARMGATE_EDGE_METRICS_TARGETS', [], /^[A-Za-z0-9][A-Za-z0-9_.-]{0,252}:\d{1,5}$/),
    edgeMetricsIntervalMs: reader.duration('SWARMGATE_EDGE_METRICS_INTERVAL', 5000, 100, 600_000),
  };
  // Labels and (hashed) config names carry it; the same rule as the state store's INSTANCE_NAME.
  if (!/^[a-z0-9][a-z0-9_.-]{0,62}$/.test(config.instance)) {
    reader.problems.push(
      `SWARMGATE_INSTANCE: "${config.instance}" must be 1-63 of a-z 0-9 _ . - starting with a letter or digit`,
    );
  }
  const ports = [config.listenPort, config.challengePort, config.healthPort, config.statusPort].filter(
    (port) => port !== 0,
  );
  if (new Set(ports).size !== ports.length) {
    reader.problems.push(
      'SWARMGATE_LISTEN_PORT, SWARMGATE_CHALLENGE_PORT, SWARMGATE_HEALTH_PORT and SWARMGATE_STATUS_PORT must be different ports',
    );
  }
  if (config.proxy.adminHost !== null && config.proxy.adminHost === config.proxy.defaultHost) {
    reader.problems.push(
      `SWARMGATE_ADMIN_HOST: "${config.proxy.adminHost}" is also SWARMGATE_DEFAULT_HOST; the admin host answers only its own name`,
    );
  }
  return reader.finish(config);
}

/**
 * nginx-proxy and acme-companion options read from the proxy's own environment, and what to set here instead. A
 * migrated stack that keeps one on the controller gets a warning at start (nothing is ignored without a word).
 */
export const NGINX_PROXY_GLOBALS: Readonly<Record<string, string>> = {
  DEFAULT_HOST: 'SWARMGATE_DEFAULT_HOST',
  DEFAULT_ROOT: 'nothing: an unmatched path answers 404',
  HTTP_PORT: "the stack file's published ports (the edge listens on 80)",
  HTTPS_PORT: "the stack file's published ports and EXTERNAL_HTTPS_PORT on the service",
  HTTPS_METHOD: 'SWARMGATE_HTTPS_METHOD',
  HSTS: 'SWARMGATE_HSTS',
  SSL_POLICY: 'SWARMGATE_SSL_POLICY',
  NON_GET_REDIRECT: 'SWARMGATE_NON_GET_REDIRECT',
  TRUST_DEFAULT_CERT: 'SWARMGATE_DEFAULT_CERT (unknown names only)',
  ENABLE_HTTP_ON_MISSING_CERT: 'nothing: a host without a certificate is served over HTTP',
  ENABLE_HTTP2: 'nothing: HTTP/2 is always on',
  ENABLE_HTTP3: 'SWARMGATE_ENABLE_HTTP3 (and publish 443/udp)',
  ENABLE_IPV6: 'SWARMGATE_ENABLE_IPV6 (the edges listen on [::] too)',
  PREFER_IPV6_NETWORK: 'nothing yet: IPv4 task addresses are routed',
  ENABLE_PROXY_PROTOCOL: 'nothing yet: PROXY protocol is not read',
  TRUST_DOWNSTREAM_PROXY: 'SWARMGATE_TRUST_DOWNSTREAM_PROXY and SWARMGATE_TRUSTED_PROXIES',
  ACME_HTTP_CHALLENGE_LOCATION: 'nothing: the controller answers every challenge',
  ACME_HTTP_CHALLENGE_ACCEPT_UNKNOWN_HOST: 'nothing: challenges for unknown hosts are answered',
  SHA1_UPSTREAM_NAME: 'nothing: upstreams are named per service',
  DEBUG_ENDPOINT: 'GET /v1/status on the admin API',
  LOG_FORMAT: 'SWARMGATE_ACCESS_LOG_FORMAT (json or nginx-proxy) and swarmgate.access_log per service',
  LOG_FORMAT_ESCAPE: 'nothing yet: the access log is JSON',
  LOG_JSON: 'nothing: the access log is always JSON (other keys)',
  DISABLE_ACCESS_LOGS: 'SWARMGATE_ACCESS_LOG=false',
  RESOLVERS: 'SWARMGATE_RESOLVER',
  DHPARAM_BITS: 'nothing: only ECDHE ciphers are offered',
  DHPARAM_SKIP: 'nothing: only ECDHE ciphers are offered',
  DOCKER_HOST: 'SWARMGATE_DOCKER_SOCKET (a unix socket)',
  DOCKER_CONTAINER_FILTERS: 'SWARMGATE_NETWORKS',
  DEFAULT_EMAIL: 'SWARMGATE_ACME_EMAIL',
  ACME_CA_URI: 'SWARMGATE_ACME_DIRECTORY',
  CA_BUNDLE: 'SWARMGATE_ACME_CA_FILE',
  DEFAULT_RENEW: 'SWARMGATE_ACME_RENEW_PERCENT',
  CERTS_UPDATE_INTERVAL: 'nothing: renewals are timed per certificate',
  CREATE_DEFAULT_CERTIFICATE: 'SWARMGATE_DEFAULT_CERT (an operator certificate)',
  // acme-companion's defaults for every certificate, set on its own container.
  ACME_CHALLENGE: 'nothing: only HTTP-01 is supported (no DNS-01)',
  ACMESH_DNS_API_CONFIG: 'nothing: only HTTP-01 is supported (no DNS-01)',
  ACME_EAB_KID: 'nothing yet: External Account Binding is not supported; use a CA without it',
  ACME_EAB_HMAC_KEY: 'nothing yet: External Account Binding is not supported; use a CA without it',
  ZEROSSL_API_KEY: 'nothing yet: External Account Binding (ZeroSSL) is not supported; use a CA without it',
  ACME_CERT_PROFILE: "nothing: the CA's default profile is ordered",
  ACME_PRE_HOOK: 'nothing: hooks are not run',
  ACME_POST_HOOK: 'nothing: hooks are not run',
  ACME_RENEW_AFTER: 'SWARMGATE_ACME_RENEW_PERCENT',
  DEFAULT_KEY_SIZE: 'nothing: certificates always use ECDSA P-256 keys',
  RENEW_PRIVATE_KEYS: 'nothing: a new key is made at every renewal',
};

/** The nginx-proxy names set in `env`, each with what to use instead (logged as warnings by the controller). */
export function unsupportedProxyEnv(env: Env): { name: string; instead: string }[] {
  return Object.keys(NGINX_PROXY_GLOBALS)
    .filter((name) => (env[name] ?? '').trim() !== '')
    .map((name) => ({ name, instead: NGINX_PROXY_GLOBALS[name] ?? '' }));
}

/** Short names for well-known ACME directories; anything else must be an https URL. */
export const ACME_DIRECTORY_ALIASES: Readonly<Record<string, string>> = {
  letsencrypt: 'https://acme-v02.api.letsencrypt.org/directory',
  'letsencrypt-staging': 'https://acme-staging-v02.api.letsencrypt.org/directory',
};

/** An ACME directory setting: an alias or an https URL (the grammar ACME_CA_URI labels use). */
function readDirectory(reader: EnvReader, key: string, raw: string): string {
  const url = ACME_DIRECTORY_ALIASES[raw.trim()] ?? raw.trim();
  if (!parseDirectoryUrl(url).ok) {
    reader.problems.push(
      `${key}: "${raw}" is neither letsencrypt, letsencrypt-staging nor an https:// directory URL`,
    );
  }
  return url;
}

function readTlsConfig(reader: EnvReader): TlsConfig {
  const directoryUrl = readDirectory(
    reader,
    'SWARMGATE_ACME_DIRECTORY',
    reader.string('SWARMGATE_ACME_DIRECTORY', 'letsencrypt'),
  );
  const stagingDirectoryUrl = readDirectory(
    reader,
    'SWARMGATE_ACME_STAGING_DIRECTORY',
    reader.string('SWARMGATE_ACME_STAGING_DIRECTORY', 'letsencrypt-staging'),
  );
  const allowedDirectoryUrls = [
    ...new Set(
      reader
        .string('SWARMGATE_ACME_DIRECTORIES', '')
        .split(',')
        .map((item) => item.trim())
        .filter((item) => item !== '')
        .map((item) => readDirectory(reader, 'SWARMGATE_ACME_DIRECTORIES', item)),
    ),
  ].sort();
  if (allowedDirectoryUrls.length > 16) {
    reader.problems.push('SWARMGATE_ACME_DIRECTORIES: at most 16 directories');
  }
  const email = reader.string('SWARMGATE_ACME_EMAIL', '');
  if (email !== '' && !/^[^\s@]+@[^\s@]+\.[^\s@]+$/.test(email)) {
    reader.problems.push(`SWARMGATE_ACME_EMAIL: "${email}" is not an e-mail address`);
  }
  const renewPercent = reader.integer('SWARMGATE_ACME_RENEW_PERCENT', 33, 1, 90);
  const httpsMethod = reader.string('SWARMGATE_HTTPS_METHOD', 'redirect');
  if (!['redirect', 'noredirect', 'nohttp', 'nohttps'].includes(httpsMethod)) {
    reader.problems.push(
      `SWARMGATE_HTTPS_METHOD: "${httpsMethod}" is not redirect, noredirect, nohttp or nohttps`,
    );
  }
  const hstsRaw = reader.string('SWARMGATE_HSTS', 'max-age=31536000');
  const hstsParsed = parseHstsLenient(hstsRaw);
  if (!hstsParsed.ok) {
    reader.problems.push(
      `SWARMGATE_HSTS: "${hstsRaw}" must be off or max-age=<seconds>[; includeSubDomains][; preload]`,
    );
  }
  const hsts = hstsParsed.ok ? (hstsParsed.value ?? 'off') : hstsRaw;
  const sslPolicy = reader.string('SWARMGATE_SSL_POLICY', 'Mozilla-Intermediate');
  if (!['Mozilla-Modern', 'Mozilla-Intermediate'].includes(sslPolicy)) {
    reader.problems.push(
      `SWARMGATE_SSL_POLICY: "${sslPolicy}" is not Mozilla-Modern or Mozilla-Intermediate`,
    );
  }
  const nonGetRedirect = reader.integer('SWARMGATE_NON_GET_REDIRECT', 308, 301, 308);
  if (![301, 307, 308].includes(nonGetRedirect)) {
    reader.problems.push(`SWARMGATE_NON_GET_REDIRECT: ${nonGetRedirect} is not 301, 307 or 308`);
  }
  const caFile = reader.string('SWARMGATE_ACME_CA_FILE', '');
  const defaultCertificate = reader.string('SWARMGATE_DEFAULT_CERT', '');
  return {
    acme: {
      enabled: reader.boolean('SWARMGATE_ACME_ENABLED', true),
      directoryUrl,
      stagingDirectoryUrl,
      allowedDirectoryUrls,
      email: email === '' ? null : email,
      caFile: caFile === '' ? null : caFile,
      renewFraction: renewPercent / 100,
      concurrency: reader.integer('SWARMGATE_ACME_CONCURRENCY', 2, 1, 16),
      retryMinMs: reader.duration('SWARMGATE_ACME_RETRY_MIN', 30_000, 100, 86_400_000),
      retryMaxMs: reader.duration('SWARMGATE_ACME_RETRY_MAX', 3_600_000, 100, 86_400_000),
    },
    stateKeyFile: reader.string('SWARMGATE_STATE_KEY_FILE', '/run/secrets/swarmgate_state_key'),
    certsDir: reader.string('SWARMGATE_CERTS_DIR', '/run/secrets'),
    httpsMethod: httpsMethod as TlsConfig['httpsMethod'],
    hsts: hsts === 'off' ? null : hsts,
    sslPolicy: sslPolicy as TlsConfig['sslPolicy'],
    nonGetRedirect: nonGetRedirect as TlsConfig['nonGetRedirect'],
    defaultCertificate: defaultCertificate === '' ? null : defaultCertificate,
    http3: reader.boolean('SWARMGATE_ENABLE_HTTP3', false),
  };
}

function readProxySettings(reader: EnvReader): ProxySettings {
  return {
    trustDownstreamProxy: reader.boolean('SWARMGATE_TRUST_DOWNSTREAM_PROXY', false),
    accessLog: reader.boolean('SWARMGATE_ACCESS_LOG', true),
    // A healthy connect takes under a millisecond at p99 on the lab's overlay, 185 ms at worst while eight tasks
    // start on two busy cores (docs/design-notes.md); a task on a dead node costs the one request that tries it
    // per backoff this long.
    connectTimeoutMs: reader.duration('SWARMGATE_PROXY_CONNECT_TIMEOUT', 500, 100, 60_000),
    readTimeoutSeconds: Math.round(
      reader.duration('SWARMGATE_PROXY_READ_TIMEOUT', 60_000, 1000, 3_600_000) / 1000,
    ),
    // The controller's challenge listener (HTTPS with the channel key pair, serves nothing but HTTP-01 tokens).
    controllerAddress: reader.string('SWARMGATE_CONTROLLER_ADDRESS', 'swarmgate-controller:8402'),
    // The controller's own SWARMGATE_CHANNEL_CERT_FILE: edges mount the certificate at the same path.
    channelCertFile: reader.string('SWARMGATE_CHANNEL_CERT_FILE', '/run/secrets/swarmgate_channel_cert'),
    resolver: reader.string('SWARMGATE_RESOLVER', '127.0.0.11'),
    workerConnections: reader.integer('SWARMGATE_WORKER_CONNECTIONS', 10240, 64, 1_000_000),
    workerProcesses: readWorkerProcesses(reader),
    upstreamKeepalive: reader.integer('SWARMGATE_UPSTREAM_KEEPALIVE', 64, 1, 4096),
    peersSocket: EDGE_PEERS_SOCKET,
    placeholderCertFile: IMAGE_PLACEHOLDER_CERT_FILE,
    placeholderKeyFile: IMAGE_PLACEHOLDER_KEY_FILE,
    // 2,000 services with 10 tasks each make a peers.txt of about 0.5 MiB.
    peersMemory: '16m',
    // About 150 bytes an entry: 16 MiB hold ~100,000 series (2,000 services with 10 tasks each need ~60,000).
    metricsMemory: '16m',
    trafficMetrics: reader.boolean('SWARMGATE_TRAFFIC_METRICS', true),
    trafficTaskSample: reader.integer('SWARMGATE_TRAFFIC_TASK_SAMPLE', 8, 1, 1000),
    accessLogFormat: readAccessLogFormat(reader),
    gzip: reader.boolean('SWARMGATE_GZIP', true),
    trustedProxies: readTrustedProxies(reader),
    defaultHost: readDefaultHost(reader),
    ipv6: reader.boolean('SWARMGATE_ENABLE_IPV6', false),
    adminHost: readAdminHost(reader),
    // The controller's status listener (SWARMGATE_STATUS_PORT), found by the same alias as the challenge listener.
    statusAddress: reader.string('SWARMGATE_STATUS_ADDRESS', 'swarmgate-controller:8403'),
    tcpPorts: readTcpPorts(reader),
  };
}

/** One grammar owner: the label parser's, so the setting and the labels cannot disagree on what a port is. */
function readTcpPorts(reader: EnvReader): number[] {
  const parsed = parseTcpPorts(reader.string('SWARMGATE_TCP_PORTS', ''));
  if (parsed.ok) return parsed.value;
  reader.problems.push(`SWARMGATE_TCP_PORTS: ${parsed.reason}`);
  return [];
}

/** One exact name: it gets its own ACME certificate, and nginx must match it before any service's pattern. */
function readAdminHost(reader: EnvReader): string | null {
  const raw = reader.string('SWARMGATE_ADMIN_HOST', '');
  if (raw === '') return null;
  const parsed = parseHost(raw);
  if (!parsed.ok || parsed.value.kind !== 'exact') {
    reader.problems.push(
      `SWARMGATE_ADMIN_HOST: "${raw}" is not an exact host name (no wildcard, pattern, port or path)`,
    );
    return null;
  }
  return parsed.value.value;
}

function readAccessLogFormat(reader: EnvReader): 'json' | 'nginx-proxy' {
  const value = reader.string('SWARMGATE_ACCESS_LOG_FORMAT', 'json');
  if (value === 'json' || value === 'nginx-proxy') return value;
  reader.problems.push(`SWARMGATE_ACCESS_LOG_FORMAT must be json or nginx-proxy, not "${value}"`);
  return 'json';
}

function readTrustedProxies(reader: EnvReader): string[] {
  const raw = reader.string('SWARMGATE_TRUSTED_PROXIES', '');
  if (raw === '') return [];
  const parsed = parseCidrList(raw);
  if (!parsed.ok) {
    reader.problems.push(`SWARMGATE_TRUSTED_PROXIES: ${parsed.reason}`);
    return [];
  }
  if (!reader.boolean('SWARMGATE_TRUST_DOWNSTREAM_PROXY', false)) {
    reader.problems.push('SWARMGATE_TRUSTED_PROXIES needs SWARMGATE_TRUST_DOWNSTREAM_PROXY=true');
  }
  return parsed.value;
}

function readDefaultHost(reader: EnvReader): string | null {
  const raw = reader.string('SWARMGATE_DEFAULT_HOST', '');
  if (raw === '') return null;
  const parsed = parseHost(raw);
  if (!parsed.ok || parsed.value.kind !== 'exact') {
    reader.problems.push(`SWARMGATE_DEFAULT_HOST: "${raw}" is not an exact host name`);
    return null;
  }
  return parsed.value.value;
}

function readWorkerProcesses(reader: EnvReader): string {
  const value = reader.string('SWARMGATE_WORKER_PROCESSES', 'auto');
  if (value === 'auto' || /^[1-9][0-9]{0,2}$/.test(value)) return value;
  reader.problems.push(`SWARMGATE_WORKER_PROCESSES must be "auto" or a number from 1 to 999, not "${value}"`);
  return 'auto';
}

export function defaultProxySettings(): ProxySettings {
  return readProxySettings(new EnvReader({}));
}

export function readEdgeConfig(env: Env, hostname: string): Readonly<EdgeConfig> {
  const reader = new EnvReader(env);
  const config: EdgeConfig = {
    role: 'edge',
    logLevel: reader.logLevel(),
    edgeId: reader.string('SWARMGATE_EDGE_ID', hostname),
    controllerUrl: reader.string('SWARMGATE_CONTROLLER_URL', 'https://swarmgate-controller:8443'),
    controllerCertFile: reader.string(
      'SWARMGATE_CONTROLLER_CERT_FILE',
      '/run/secrets/swarmgate_channel_cert',
    ),
    tokenFile: reader.string('SWARMGATE_EDGE_TOKEN_FILE', '/run/secrets/swarmgate_edge_token'),
    stateDir: reader.string('SWARMGATE_STATE_DIR', '/var/lib/swarmgate'),
    nginxBinary: reader.string('SWARMGATE_NGINX', 'nginx'),
    healthPort: reader.integer('SWARMGATE_EDGE_HEALTH_PORT', 8081, 0, 65535),
    pollTimeoutMs: reader.duration('SWARMGATE_EDGE_POLL_TIMEOUT', 40_000, 2000, 300_000),
    // A moved controller is back within seconds; a short cap finds it soon, and a poll costs an edge next to nothing.
    retryMaxMs: reader.duration('SWARMGATE_EDGE_RETRY_MAX', 2000, 100, 300_000),
    metricsPort: reader.integer('SWARMGATE_EDGE_METRICS_PORT', 9145, 0, 65535),
  };
  // https only: the edge sends its token only to a controller that proved it holds the pinned certificate's key.
  if (!/^https:\/\/[^\s/:]+(:\d+)?\/?$/.test(config.controllerUrl)) {
    reader.problems.push(
      `SWARMGATE_CONTROLLER_URL: "${config.controllerUrl}" is not https://host[:port] (plain http is refused: the edge's token and the bundle's private keys would cross the network in clear)`,
    );
  }
  return reader.finish(config);
}

function deepFreeze<T>(value: T): Readonly<T> {
  if (value && typeof value === 'object') {
    for (const inner of Object.values(value)) deepFreeze(inner);
    Object.freeze(value);
  }
  return value;
}

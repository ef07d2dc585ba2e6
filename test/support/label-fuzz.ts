// Property-based label fuzzing, shared by test/unit/label-fuzz.test.ts (1,000 cases) and bench/label-fuzz.ts
// (100,000). A case is a handful of services with random and adversarial labels. Each case goes through
// buildRoutingModel and renderConfig on its own (nothing may throw; every service left out has a Problem naming
// it and a label); then many cases' models are merged into one config so one real `nginx -t` checks them all.
import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { defaultProxySettings } from '../../src/config.ts';
import {
  forNginxAtHand,
  REPO_NJS_DIR,
  TEST_CHANNEL_CERT_FILE,
  TEST_PLACEHOLDER_KEY_FILE,
} from './loopback-nginx.ts';
import type { ServiceInfo, Snapshot, TaskInfo } from '../../src/discovery/snapshot.ts';
import { PROTOS } from '../../src/model/labels.ts';
import {
  buildRoutingModel,
  DEFAULT_TLS,
  EMPTY_MODEL,
  KNOWN_SWARMGATE_LABELS,
} from '../../src/model/routing-model.ts';
import type { AvailableCertificate, RoutingModel } from '../../src/model/routing-model.ts';
import type { NginxValidator } from '../../src/nginx/nginx-validator.ts';
import { createTemplateRenderer } from '../../src/render/nunjucks-env.ts';
import { renderConfig } from '../../src/render/render-config.ts';
import type { BundleFiles } from '../../src/render/render-config.ts';

export interface FuzzService {
  readonly labels: Record<string, string>;
  /** Labels given as container env instead (nginx-proxy style). */
  readonly inEnv: boolean;
  readonly createdAt: string;
  readonly networks: readonly string[];
  readonly taskIps: readonly string[];
}
export type FuzzCase = readonly FuzzService[];

/** Every label the model reads; a Problem must name one of these or a swarmgate.* label the service set. */
export const LABEL_NAMES: ReadonlySet<string> = new Set([
  'VIRTUAL_HOST',
  'VIRTUAL_PORT',
  'VIRTUAL_PATH',
  'VIRTUAL_DEST',
  'VIRTUAL_PROTO',
  'VIRTUAL_ROOT',
  'LETSENCRYPT_HOST',
  'ACME_HOST',
  'LETSENCRYPT_EMAIL',
  'ACME_EMAIL',
  'HTTPS_METHOD',
  'HSTS',
  'CERT_NAME',
  'SSL_POLICY',
  'VIRTUAL_HOST_MULTIPORTS',
  'NETWORK_ACCESS',
  'LETSENCRYPT_TEST',
  'ACME_CA_URI',
  'EXTERNAL_HTTPS_PORT',
  // The swarmgate.* labels from the model's own list, so the two cannot drift apart.
  ...KNOWN_SWARMGATE_LABELS,
]);

// Characters that end or start nginx syntax, control characters, Unicode: what a label must never smuggle in.
// prettier-ignore
const NASTY = [
  ';',
  '{',
  '}',
  '"',
  "'",
  '\\',
  '#',
  '$',
  '$host',
  ' ',
  '\t',
  '\n',
  '\r',
  '\u0000',
  '\u007f',
  '\u00a0',
  '\u2028',
  'é',
  '漢',
  '😀',
  '%00',
  '%',
  '~',
  '*',
  ',',
  ':',
  '@',
  '|',
  '`',
  '<',
  '>',
  '/../',
  'return 200;',
  '}server{',
];

// Regex pieces: ordinary ones (most of the time), and each feature PCRE and JavaScript disagree on or that nginx
// cannot take.
// prettier-ignore
const SAFE_TOKENS = [
  'a', 'b', 'z', 'A', '0', '9', '-', '_', '/', ',', ':', '@', '!', '%', '&', '=', '#', '~', '<', '>', '.', ';', '$1',
  '\\.', '\\d', '\\w', '\\s', '\\D', '\\W', '\\S', '\\b', '\\/', '\\-', '\\\\', '\\$', '\\{', '\\}',
  '\\[', '\\]', '\\(', '\\)', '\\*', '\\+', '\\?', '\\|', '\\^', '\\_', '\\#', '\\~', '\\%',
  '[a-z]', '[^/]', '[0-9]+', '[a-z-0]', '[-a]', '[a-]', '[\\w.-]', '[\\]]', '[\\\\]', '[^\\d]', '[[]', '[{}$;#]',
  'a*', 'b+', 'z?', '\\d{2}', '\\w{2,}', '[a-z]{1,3}', '.*?', '.+', 'a{2,5}?', 'x??', '(a|b)', '(?:x)?', '(\\d+)',
  '(?=a)', '(?!b)', '(|a)', '()', '{', '}', ']', '{}', '{a}', 'a|', '^', '$', '(', ')', '*', '+', '?', '{2}',
];
// prettier-ignore
const EDGE_TOKENS = [
  '[:alpha:]', '[.a.]', '[=a=]', '[.]', '[:a]', '[\\d-z]',
  '[a-\\d]',
  '[]a]',
  '[^]',
  '[[:alpha:]]',
  '[[.a.]]',
  '[[=a=]]',
  '[\\b]',
  '[z-a]',
  '[\\x41]',
  '[\\B]',
  '(?<=a)',
  '(?<!a)',
  '(?<=a+)',
  '(?<host>',
  '(?<uri>',
  '(?<x1>',
  '(?P<n>',
  "(?'n'",
  '(?P=n)',
  '(?P>n)',
  '(?i)',
  '(?-i)',
  '(?#c)',
  '(?|',
  '(?>',
  '(?R)',
  '(?1)',
  '(?(1)a|b)',
  '(*UTF)',
  '(*ACCEPT)',
  '(*)',
  '\\1',
  '\\2',
  '\\8',
  '\\9',
  '\\0',
  '\\01',
  '\\k<n>',
  '\\k',
  '\\g1',
  '\\g{1}',
  '\\x41',
  '\\x{41}',
  '\\x',
  '\\u0041',
  '\\u{41}',
  '\\p{L}',
  '\\P{L}',
  '\\Q',
  '\\E',
  '\\c',
  '\\cA',
  '\\N',
  '\\L',
  '\\l',
  '\\U',
  '\\R',
  '\\X',
  '\\K',
  '\\z',
  '\\Z',
  '\\A',
  '\\G',
  '\\h',
  '\\H',
  '\\v',
  '\\V',
  '\\t',
  '\\n',
  '\\r',
  '\\f',
  '\\e',
  '\\a',
  '\\o{1}',
  '\\B',
  '++',
  '*+',
  '?+',
  '{,3}',
  '{5,2}',
  '{1000}',
  '{1001}',
  '{65536}',
  '{2',
  '(a{999}){999}',
  '((a{30}){30}){30}',
  '(a{200}){99}',
  '"',
  "'",
  'é',
  '\u0000',
  '\n',
  ' ',
  '\\',
];

const regexBody = fc
  .tuple(
    fc.boolean(),
    fc.array(
      fc.oneof(
        { weight: 8, arbitrary: fc.constantFrom(...SAFE_TOKENS) },
        { weight: 1, arbitrary: fc.constantFrom(...EDGE_TOKENS) },
      ),
      { minLength: 1, maxLength: 6 },
    ),
    fc.boolean(),
  )
  .map(([anchor, tokens, end]) => `${anchor ? '^' : ''}${tokens.join('')}${end ? '$' : ''}`);

const nasty = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 24 }),
  fc.array(fc.constantFrom(...NASTY), { minLength: 1, maxLength: 4 }).map((parts) => parts.join('')),
  fc.string({ maxLength: 600, minLength: 500 }),
);

/** An arbitrary with a nasty value (or a nasty piece spliced in) a fifth of the time. */
function spiced(base: fc.Arbitrary<string>): fc.Arbitrary<string> {
  return fc.oneof(
    { weight: 40, arbitrary: base },
    { weight: 1, arbitrary: nasty },
    {
      weight: 1,
      arbitrary: fc
        .tuple(base, fc.constantFrom(...NASTY), fc.nat())
        .map(
          ([value, piece, at]) =>
            value.slice(0, at % (value.length + 1)) + piece + value.slice(at % (value.length + 1)),
        ),
    },
  );
}

const dnsLabel = fc.stringMatching(/^[a-z0-9](?:[a-z0-9_-]{0,8}[a-z0-9])?$/);
const shortHost = fc.constantFrom('a.fuzz.test', 'b.fuzz.test', 'fuzz.test', 'x.other.test', 'A.Fuzz.Test');
const exactHost = fc.oneof(
  { weight: 3, arbitrary: shortHost },
  { weight: 2, arbitrary: fc.tuple(dnsLabel, dnsLabel).map(([a, b]) => `${a}.${b}.fuzz.test`) },
  { weight: 1, arbitrary: fc.domain() },
  // Around the longest name nginx's server name table holds (110).
  {
    weight: 1,
    arbitrary: fc
      .integer({ min: 100, max: 130 })
      .map((length) => `${'h'.repeat(60)}.${'n'.repeat(length - 61)}`),
  },
);
const hostEntry = fc.oneof(
  { weight: 4, arbitrary: exactHost },
  { weight: 1, arbitrary: exactHost.map((host) => `*.${host}`) },
  { weight: 1, arbitrary: dnsLabel.map((label) => `${label}.*`) },
  { weight: 3, arbitrary: regexBody.map((body) => `~${body}`) },
);
const hostList = spiced(fc.array(hostEntry, { minLength: 1, maxLength: 3 }).map((hosts) => hosts.join(',')));

const pathChars = fc.constantFrom(...'abz09._~!*+,=:@%/-'.split(''));
const prefixPath = fc.array(pathChars, { maxLength: 12 }).map((chars) => `/${chars.join('')}`);
const path = spiced(
  fc.oneof(
    { weight: 3, arbitrary: prefixPath },
    { weight: 2, arbitrary: regexBody.map((body) => `~${body}`) },
    { weight: 1, arbitrary: regexBody.map((body) => `~*${body}`) },
    { weight: 1, arbitrary: regexBody.map((body) => `~^/${body}`) },
  ),
);

/** Mostly a good value, sometimes a wrong one. */
function mostly(good: readonly string[], wrong: readonly string[]): fc.Arbitrary<string> {
  return fc.oneof(
    { weight: 8, arbitrary: fc.constantFrom(...good) },
    { weight: 1, arbitrary: fc.constantFrom(...wrong) },
  );
}

/** Set on a quarter of the services. */
function sometimes(value: fc.Arbitrary<string>): fc.Arbitrary<string | undefined> {
  return fc.oneof({ weight: 3, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: value });
}

// The stream labels: rarer, since a batch can hold only one case per edge port or passthrough name (checkBatch).
function rarely(value: fc.Arbitrary<string>): fc.Arbitrary<string | undefined> {
  return fc.oneof({ weight: 12, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: value });
}

const labelsArbitrary = fc
  .record(
    {
      VIRTUAL_HOST: hostList,
      VIRTUAL_PORT: sometimes(
        spiced(
          fc.oneof(
            { weight: 4, arbitrary: fc.integer({ min: 1, max: 65_535 }).map(String) },
            { weight: 1, arbitrary: fc.constantFrom('0', '65536', '-1', '80a', '1e3', '080') },
          ),
        ),
      ),
      VIRTUAL_PATH: sometimes(path),
      VIRTUAL_DEST: sometimes(spiced(prefixPath)),
      VIRTUAL_PROTO: sometimes(spiced(mostly([...PROTOS, 'HTTP', ' grpc '], ['ftp', 'http2']))),
      VIRTUAL_ROOT: sometimes(spiced(prefixPath)),
      LETSENCRYPT_HOST: sometimes(
        spiced(fc.array(exactHost, { minLength: 1, maxLength: 3 }).map((hosts) => hosts.join(','))),
      ),
      LETSENCRYPT_EMAIL: sometimes(spiced(mostly(['ops@fuzz.test', 'a.b+c@x.example'], ['not-an-email']))),
      HTTPS_METHOD: sometimes(
        spiced(mostly(['redirect', 'noredirect', 'nohttp', 'nohttps', 'NoRedirect'], ['both'])),
      ),
      HSTS: sometimes(
        spiced(
          mostly(
            ['off', 'max-age=0', 'max-age=31536000; includeSubDomains; preload', 'max-age=1;preload'],
            ['max-age=x', 'max-age=1; preload; preload'],
          ),
        ),
      ),
      CERT_NAME: sometimes(spiced(mostly(['fuzzcert', 'a.fuzz.test', 'missing'], ['../etc/passwd', 'a..b']))),
      SSL_POLICY: sometimes(
        spiced(mostly(['Mozilla-Modern', 'Mozilla-Intermediate', 'mozilla-modern'], ['Mozilla-Old'])),
      ),
      'swarmgate.network': sometimes(spiced(mostly(['swarmgate'], ['other', 'unattached']))),
      'swarmgate.max-body-size': sometimes(spiced(mostly(['0', '10m', '2g', '999999k', '1'], ['1t', '-1']))),
      'swarmgate.proxy-timeout': sometimes(spiced(mostly(['300s', '15m', '1h', '86400', '1'], ['25h', '0']))),
      'swarmgate.request-buffering': sometimes(spiced(mostly(['on', 'off', 'true', 'no'], ['maybe']))),
      'swarmgate.buffering': sometimes(spiced(mostly(['on', 'off', 'false', 'yes'], ['sometimes']))),
      'swarmgate.unknown': sometimes(fc.constant('1')),
      VIRTUAL_HOST_MULTIPORTS: sometimes(
        spiced(
          fc
            .tuple(exactHost, prefixPath, fc.integer({ min: 1, max: 65_535 }), fc.option(prefixPath))
            .chain(([host, route, port, dest]) =>
              fc.constantFrom(
                JSON.stringify({
                  [host]: { [route]: dest === null ? { port } : { port, dest } },
                  'm.fuzz.test': null,
                }),
                // nginx-proxy's YAML form of the same map.
                `${host}:\n  ${JSON.stringify(route)}:\n    port: ${port}\n` +
                  (dest === null ? '' : `    dest: ${JSON.stringify(dest)}\n`) +
                  'm.fuzz.test:\n',
              ),
            ),
        ),
      ),
      NETWORK_ACCESS: sometimes(spiced(mostly(['internal', 'external', 'Internal'], ['private']))),
      LETSENCRYPT_TEST: sometimes(spiced(mostly(['true', 'false'], ['maybe']))),
      EXTERNAL_HTTPS_PORT: sometimes(spiced(mostly(['8443', '443'], ['0']))),
      'swarmgate.allow': sometimes(
        spiced(mostly(['10.0.0.0/8', '203.0.113.0/24, 2001:db8::/32', '::1'], ['10.0.0.1/8', 'all'])),
      ),
      'swarmgate.deny': sometimes(spiced(mostly(['203.0.113.7', 'fd00::/8'], ['x']))),
      'swarmgate.auth.basic': sometimes(
        spiced(mostly(['fuzz-users', 'fuzz-weak'], ['fuzz-plain', 'missing'])),
      ),
      'swarmgate.auth.forward': sometimes(
        spiced(mostly(['http://auth:9091/api/verify', 'http://oauth2-proxy'], ['https://auth/'])),
      ),
      'swarmgate.auth.forward.headers': sometimes(spiced(mostly(['Remote-User,Remote-Email'], ['A B']))),
      'swarmgate.rate-limit': sometimes(spiced(mostly(['10r/s', '600r/m', '1r/s'], ['fast']))),
      'swarmgate.rate-limit.burst': sometimes(spiced(mostly(['0', '20'], ['-1']))),
      'swarmgate.max-connections': sometimes(spiced(mostly(['1', '100'], ['0']))),
      'swarmgate.gzip': sometimes(spiced(mostly(['on', 'off'], ['maybe']))),
      'swarmgate.security-headers': sometimes(spiced(mostly(['on', 'off'], ['all']))),
      'swarmgate.header.X-Fuzz': sometimes(spiced(mostly(["default-src 'self'", 'a=b; c'], ['$host']))),
      'swarmgate.cors.origins': sometimes(
        spiced(mostly(['*', 'https://a.fuzz.test, http://localhost:3000'], ['ftp://x'])),
      ),
      'swarmgate.cors.credentials': sometimes(spiced(mostly(['on', 'off'], ['x']))),
      'swarmgate.redirect': sometimes(spiced(mostly(['https://new.fuzz.test'], ['https://x/$uri']))),
      'swarmgate.www-redirect': sometimes(spiced(mostly(['to-www', 'to-apex', 'off'], ['apex']))),
      'swarmgate.error-page': sometimes(spiced(mostly(['fuzz-page'], ['fuzz-users', 'missing']))),
      'swarmgate.balance': sometimes(
        spiced(mostly(['round_robin', 'least_conn', 'hash', 'Least-Conn'], ['random', 'ip_hash'])),
      ),
      'swarmgate.balance.key': sometimes(
        spiced(mostly(['client_ip', 'header:X-User', 'cookie:session'], ['header:', 'cookie:a b', 'uri'])),
      ),
      'swarmgate.sticky': sometimes(spiced(mostly(['cookie', 'off'], ['on', 'ip']))),
      'swarmgate.sticky.cookie': sometimes(spiced(mostly(['route', 'SERVERID', 'a_b-c'], ['a.b', '-x']))),
      'swarmgate.sticky.max_age': sometimes(spiced(mostly(['3600', '30m', '7d', 'session'], ['366d', '-1']))),
      // Often set, so services on the same host and path become canary groups.
      'swarmgate.weight': fc.oneof(
        { weight: 1, arbitrary: fc.constant(undefined) },
        { weight: 1, arbitrary: spiced(mostly(['0', '1', '10', '90', '1000'], ['1001', '-1', '0.5'])) },
      ),
      'swarmgate.retry.tries': sometimes(spiced(mostly(['1', '2', '24'], ['0', '25']))),
      'swarmgate.retry.timeout': sometimes(spiced(mostly(['500ms', '5s', '1m'], ['50ms', '6m']))),
      'swarmgate.cors.methods': sometimes(
        spiced(mostly(['GET,POST', 'GET, PUT, DELETE'], ['GET POST', 'FETCH'])),
      ),
      'swarmgate.cors.headers': sometimes(spiced(mostly(['Authorization,X-Fuzz', 'Content-Type'], ['A B']))),
      'swarmgate.access_log': sometimes(spiced(mostly(['off', 'json', 'nginx-proxy'], ['combined']))),
      'swarmgate.http3': sometimes(spiced(mostly(['true', 'false', 'on'], ['quic']))),
      'http3.enable': sometimes(spiced(mostly(['true', 'false'], ['yes please']))),
      'swarmgate.healthcheck.path': sometimes(
        spiced(mostly(['/healthz', '/status?full=0'], ['healthz', '/a b'])),
      ),
      'swarmgate.healthcheck.interval': sometimes(spiced(mostly(['1s', '5s', '60s'], ['0s', '61s']))),
      'swarmgate.healthcheck.timeout': sometimes(spiced(mostly(['500ms', '2s'], ['0', '90s']))),
      'swarmgate.healthcheck.status': sometimes(spiced(mostly(['200', '2xx', '200,204,3xx'], ['6xx', 'ok']))),
      'swarmgate.healthcheck.fails': sometimes(spiced(mostly(['1', '3', '10'], ['0', '11']))),
      'swarmgate.healthcheck.passes': sometimes(spiced(mostly(['1', '2'], ['-1']))),
      // FUZZ_TCP_PORTS are the declared ports; 9999 is not declared.
      'swarmgate.tcp.port': rarely(spiced(mostly(['5432', '6379'], ['9999', '80', '443']))),
      'swarmgate.tcp.target_port': rarely(spiced(mostly(['5432', '15432'], ['0', '65536']))),
      'swarmgate.tls.passthrough': rarely(spiced(mostly(['pt.fuzz.test', '*.pt.fuzz.test'], ['*', 'a..b']))),
      'swarmgate.tls.passthrough.port': rarely(spiced(mostly(['443', '5432'], ['80', '9999']))),
    },
    { requiredKeys: ['VIRTUAL_HOST'] },
  )
  .map((labels) => {
    const set: Record<string, string> = {};
    for (const [key, value] of Object.entries(labels)) if (value !== undefined) set[key] = value;
    return set;
  });

const ipv4 = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255)).map(([a, b, c]) => `10.${a}.${b}.${c}`);
const serviceArbitrary: fc.Arbitrary<FuzzService> = fc.record({
  labels: labelsArbitrary,
  inEnv: fc.boolean(),
  createdAt: fc.constantFrom('2026-01-01T00:00:00Z', '2026-01-02T00:00:00Z', '2026-01-03T00:00:00Z'),
  networks: fc.oneof(
    { weight: 12, arbitrary: fc.constant(['net-sg']) },
    { weight: 1, arbitrary: fc.constantFrom(['net-sg', 'net-other'], ['net-other'], []) },
  ),
  taskIps: fc.array(
    fc.oneof({ weight: 6, arbitrary: ipv4 }, { weight: 1, arbitrary: fc.constantFrom('fd00::1', '') }),
    {
      maxLength: 2,
    },
  ),
});

/**
 * A third of the cases: the second service routes the first one's hosts and path (a conflict); another third: the
 * same as a weighted canary of it, keeping only its balancing labels (with all its labels it is nearly always left
 * out for one of them, and canary groups would go unfuzzed).
 */
export const caseArbitrary: fc.Arbitrary<FuzzCase> = fc
  .tuple(
    fc.array(serviceArbitrary, { minLength: 1, maxLength: 5 }),
    fc.constantFrom('none', 'conflict', 'canary'),
    fc.constantFrom('0', '1', '10', '90', '1000'),
    fc.constantFrom('0', '1', '10', '90'),
  )
  .map(([services, share, firstWeight, secondWeight]) => {
    const [first, second, ...rest] = services;
    if (share === 'none' || !first || !second) return services;
    const labels: Record<string, string> =
      share === 'conflict'
        ? { ...second.labels }
        : Object.fromEntries(
            Object.entries(second.labels).filter(
              ([key]) => key.startsWith('swarmgate.balance') || key.startsWith('swarmgate.sticky'),
            ),
          );
    labels.VIRTUAL_HOST = first.labels.VIRTUAL_HOST ?? '';
    delete labels.VIRTUAL_PATH;
    if (first.labels.VIRTUAL_PATH !== undefined) labels.VIRTUAL_PATH = first.labels.VIRTUAL_PATH;
    if (share === 'conflict') return [first, { ...second, labels }, ...rest];
    labels['swarmgate.weight'] = secondWeight;
    return [
      { ...first, labels: { ...first.labels, 'swarmgate.weight': firstWeight } },
      { ...second, labels, networks: ['net-sg'] },
      ...rest,
    ];
  });

export const CERTIFICATES: AvailableCertificate[] = [
  { name: 'a.fuzz.test', domains: ['a.fuzz.test'], source: 'acme' },
  { name: 'fuzzcert', domains: ['*.fuzz.test', 'fuzz.test'], source: 'user' },
];
const fixtures = new URL('../fixtures/', import.meta.url);
const testCertificate = {
  certificatePem: readFileSync(new URL('test-only.crt', fixtures), 'utf8'),
  privateKeyPem: readFileSync(new URL('test-only.key', fixtures), 'utf8'),
};
const templates = createTemplateRenderer();
// nginx -t loads the pinned channel certificate the ACME location verifies the controller with.
const proxy = {
  ...defaultProxySettings(),
  channelCertFile: TEST_CHANNEL_CERT_FILE,
  // And the placeholder certificate of the default server of 443 (made with the image in production).
  placeholderCertFile: TEST_CHANNEL_CERT_FILE,
  placeholderKeyFile: TEST_PLACEHOLDER_KEY_FILE,
};

export function caseSnapshot(fuzzCase: FuzzCase, prefix: string): Snapshot {
  const services: ServiceInfo[] = [];
  const tasks: TaskInfo[] = [];
  fuzzCase.forEach((service, index) => {
    const name = `${prefix}s${index}`;
    services.push({
      id: name,
      name,
      createdAt: service.createdAt,
      labels: service.inEnv ? {} : service.labels,
      env: service.inEnv ? service.labels : {},
      mode: 'replicated',
      replicas: service.taskIps.length,
      networks: service.networks,
      image: 'example/app:1',
      updateState: null,
    });
    service.taskIps.forEach((ip, slot) => {
      tasks.push({
        id: `${name}-t${slot}`,
        serviceId: name,
        nodeId: 'n1',
        slot: slot + 1,
        desiredState: 'running',
        state: 'running',
        stateSince: '2026-01-01T00:00:00Z',
        error: null,
        image: 'example/app:1',
        addresses: [{ networkId: 'net-sg', networkName: 'swarmgate', ip }],
      });
    });
  });
  return {
    services,
    tasks,
    networks: [
      { id: 'net-sg', name: 'swarmgate', driver: 'overlay', scope: 'swarm', ingress: false },
      { id: 'net-other', name: 'other', driver: 'overlay', scope: 'swarm', ingress: false },
    ],
    nodes: [],
    configs: CONFIGS,
  };
}

/** The Docker configs a fuzz case's labels may name (a good, a weak and a plain-text htpasswd, and a page). */
const CONFIGS = [
  { name: 'fuzz-users', kind: 'htpasswd', data: 'u:$apr1$abcdefgh$h9FWgUz3n9YxylKLlR5SQ/\n' },
  { name: 'fuzz-weak', kind: 'htpasswd', data: 'w:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=\n' },
  { name: 'fuzz-plain', kind: 'htpasswd', data: 'p:secret\n' },
  { name: 'fuzz-page', kind: 'error-page', data: '<h1>down</h1>\n' },
];

/** The edge ports the fuzzed controller declares (SWARMGATE_TCP_PORTS). */
const FUZZ_TCP_PORTS = [5432, 6379];

export function renderModel(model: RoutingModel): BundleFiles {
  // nginx -t compiles the stream balancer's njs (js_import) when a case asks for TCP: the repository's copy.
  return renderConfig(model, { proxy, generator: 'fuzz', njsDir: REPO_NJS_DIR }, templates, (name) =>
    CERTIFICATES.some((certificate) => certificate.name === name) ? testCertificate : undefined,
  );
}

export interface CaseResult {
  readonly model: RoutingModel;
  /** Broken invariants (empty: the case is fine before nginx -t). */
  readonly issues: readonly string[];
}

/** Model and render of one case alone, and every invariant that does not need nginx. */
export function checkCase(fuzzCase: FuzzCase, prefix: string): CaseResult {
  const snapshot = caseSnapshot(fuzzCase, prefix);
  let model: RoutingModel;
  try {
    model = buildRoutingModel(snapshot, {
      networks: ['swarmgate', 'other'],
      certificates: CERTIFICATES,
      tlsDefaults: DEFAULT_TLS,
      tcpPorts: FUZZ_TCP_PORTS,
    });
  } catch (error) {
    return { model: EMPTY_MODEL, issues: [`buildRoutingModel threw: ${(error as Error).message}`] };
  }
  const issues: string[] = [];
  try {
    renderModel(model);
  } catch (error) {
    issues.push(`renderConfig threw: ${(error as Error).message}`);
  }
  const byName = new Map(snapshot.services.map((service) => [service.name, service]));
  const routed = new Set([
    ...model.services.map((service) => service.name),
    ...(model.stream ? [...model.stream.tcp, ...model.stream.passthrough].map((route) => route.service) : []),
  ]);
  for (const problem of model.problems) {
    const service = byName.get(problem.service);
    if (!service) {
      issues.push(`problem names no service: ${JSON.stringify(problem)}`);
      continue;
    }
    const set = { ...service.env, ...service.labels };
    if (!LABEL_NAMES.has(problem.label) && !(problem.label in set)) {
      issues.push(`problem names no label the model reads: ${JSON.stringify(problem)}`);
    }
    if (problem.reason.trim() === '') issues.push(`problem without a reason: ${JSON.stringify(problem)}`);
    if (problem.severity === 'error' && routed.has(problem.service)) {
      issues.push(`service with an error problem is routed anyway: ${JSON.stringify(problem)}`);
    }
  }
  for (const service of snapshot.services) {
    if (routed.has(service.name)) continue;
    const hasError = model.problems.some(
      (problem) => problem.service === service.name && problem.severity === 'error',
    );
    if (!hasError) issues.push(`service ${service.name} is left out without an error problem`);
  }
  return { model, issues };
}

/** Several cases' models as one (their service names are already distinct), so one nginx -t checks them all. */
export function mergeModels(models: readonly RoutingModel[]): RoutingModel {
  const streams = models.flatMap((model) => (model.stream ? [model.stream] : []));
  return {
    servers: models.flatMap((model) => model.servers),
    upstreams: models.flatMap((model) => model.upstreams),
    services: models.flatMap((model) => model.services),
    problems: models.flatMap((model) => model.problems),
    certificateRequests: models.flatMap((model) => model.certificateRequests),
    certificatesInUse: [...new Set(models.flatMap((model) => model.certificatesInUse))].sort(),
    adminServer: null,
    ...(streams.length === 0
      ? {}
      : {
          stream: {
            tcp: streams.flatMap((stream) => stream.tcp),
            passthrough: streams.flatMap((stream) => stream.passthrough),
            upstreams: streams.flatMap((stream) => stream.upstreams),
          },
        }),
  };
}

/** What a case's stream routes take on the edge: two cases taking the same cannot share one config. */
function streamClaims(model: RoutingModel): string[] {
  if (!model.stream) return [];
  return [
    ...model.stream.tcp.map((route) => `tcp ${route.port}`),
    ...model.stream.passthrough.map((route) => `sni ${route.host.value}`),
  ];
}

/**
 * Cases packed into groups whose merged config is valid when each case's is: a case with stream routes joins the
 * first group where none of its edge ports and passthrough names is taken yet.
 */
function packGroups<T extends { readonly model: RoutingModel }>(items: readonly T[]): T[][] {
  const groups: { items: T[]; claimed: Set<string> }[] = [{ items: [], claimed: new Set() }];
  for (const item of items) {
    const claims = streamClaims(item.model);
    let group = groups.find((candidate) => claims.every((claim) => !candidate.claimed.has(claim)));
    if (!group) {
      group = { items: [], claimed: new Set() };
      groups.push(group);
    }
    group.items.push(item);
    for (const claim of claims) group.claimed.add(claim);
  }
  return groups.map((group) => group.items);
}

export interface BatchResult {
  readonly cases: number;
  readonly routedServices: number;
  readonly refusedServices: number;
  /** Per-case invariant failures, and cases whose accepted config nginx -t refused (with its output). */
  readonly failures: readonly { readonly fuzzCase: FuzzCase; readonly issue: string }[];
  readonly nginxRuns: number;
}

/**
 * Every case alone, then their merged config through nginx -t. If nginx refuses the batch, halves are tested
 * until each refused case is found alone (so a failure names the case, not the batch).
 */
export async function checkBatch(
  cases: readonly FuzzCase[],
  validator: NginxValidator,
  signal: AbortSignal,
): Promise<BatchResult> {
  const failures: { fuzzCase: FuzzCase; issue: string }[] = [];
  const good: { fuzzCase: FuzzCase; model: RoutingModel }[] = [];
  let routedServices = 0;
  let refusedServices = 0;
  cases.forEach((fuzzCase, index) => {
    const { model, issues } = checkCase(fuzzCase, `c${index}-`);
    routedServices += model.services.length;
    refusedServices += fuzzCase.length - model.services.length;
    for (const issue of issues) failures.push({ fuzzCase, issue });
    if (issues.length === 0) good.push({ fuzzCase, model });
  });
  let nginxRuns = 0;
  async function search(group: typeof good): Promise<void> {
    if (group.length === 0) return;
    nginxRuns++;
    const files = renderModel(mergeModels(group.map((item) => item.model)));
    const result = await validator.validate(
      { ...files, 'nginx.conf': forNginxAtHand(files['nginx.conf'] ?? '').conf },
      signal,
    );
    if (result.ok) return;
    const [only] = group;
    if (group.length === 1 && only) {
      failures.push({
        fuzzCase: only.fuzzCase,
        issue: `nginx -t refused an accepted config: ${result.output}`,
      });
      return;
    }
    const half = Math.ceil(group.length / 2);
    await search(group.slice(0, half));
    await search(group.slice(half));
  }
  for (const group of packGroups(good)) await search(group);
  return { cases: cases.length, routedServices, refusedServices, failures, nginxRuns };
}

// Label tables for the access, limit, header, redirect and migration labels (issue 14): value in, typed field or
// reason out. Then what the model makes of them: fail closed, UNSUPPORTED_SETTING, several routes, default host.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { ServiceInfo, Snapshot } from '../../src/discovery/snapshot.ts';
import {
  parseCidrList,
  parseConfigName,
  parseCorsOrigins,
  parseCount,
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
} from '../../src/model/feature-labels.ts';
import { parseSslPolicy } from '../../src/model/labels.ts';
import { buildRoutingModel } from '../../src/model/routing-model.ts';
import { labelTable as table } from '../support/label-tables.ts';

table('NETWORK_ACCESS', parseNetworkAccess, [
  ['internal', 'internal'],
  [' External ', 'external'],
  ['private', /not internal or external/],
  ['internal;', /not internal or external/],
]);

table('swarmgate.allow / swarmgate.deny', parseCidrList, [
  ['10.0.0.0/8', ['10.0.0.0/8']],
  ['203.0.113.7', ['203.0.113.7']],
  ['192.168.1.0/24, 192.168.1.0/24 ,,', ['192.168.1.0/24']],
  ['2001:DB8::/32', ['2001:db8::/32']],
  ['::1', ['::1']],
  ['::ffff:10.0.0.0/104', ['::ffff:10.0.0.0/104']],
  ['10.0.0.1/8', /bits set after the \/8 prefix/],
  ['2001:db8::1/32', /bits set after/],
  ['10.0.0.0/33', /at most 32/],
  ['all', /not an IPv4 or IPv6/],
  ['10.0.0.0/8;deny', /not an IPv4 or IPv6/],
  ['unix:', /not an IPv4 or IPv6/],
  ['', /no address/],
  ['300.1.1.1', /not an IPv4 or IPv6/],
]);

table('swarmgate.auth.basic (config name)', parseConfigName, [
  ['admin-users', 'admin-users'],
  ['a.b_c', 'a.b_c'],
  ['../etc/passwd', /not a Docker config name/],
  ['a b', /not a Docker config name/],
  ['x'.repeat(65), /not a Docker config name/],
]);

test('htpasswd: bcrypt, apr1, sha and sha-crypt pass; plain text, DES crypt and junk are refused', () => {
  const good = [
    'alice:$2y$05$LmMEpuUcmHIzjs1wbP3UOOmdiDoy5aGY7axzvrEkaXdm7sUsryBJm',
    'bob:$apr1$abcdefgh$h9FWgUz3n9YxylKLlR5SQ/',
    'carol:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=',
    `dave:$6$saltsalt$${'a'.repeat(86)}`,
  ];
  const parsed = parseHtpasswd(`# comment\n${good.join('\r\n')}\n\n`);
  assert.ok(parsed.ok, parsed.ok ? '' : parsed.reason);
  assert.equal(parsed.value.users, 4);
  assert.deepEqual(parsed.value.weak, ['carol']);
  assert.equal(parsed.value.content, `${good.join('\n')}\n`);
  for (const [text, reason] of [
    ['eve:secret', /not hashed/],
    ['eve:{PLAIN}secret', /not hashed/],
    ['eve:abJnggxhB/yJU', /not hashed/], // DES crypt
    ['eve', /not user:hash/],
    [':$apr1$abcdefgh$h9FWgUz3n9YxylKLlR5SQ/', /not user:hash/],
    ['# nobody\n', /names no user/],
    ['a:$apr1$abcdefgh$h9FWgUz3n9YxylKLlR5SQ/\na:$apr1$abcdefgh$h9FWgUz3n9YxylKLlR5SQ/', /appears twice/],
  ] as const) {
    const refused = parseHtpasswd(text);
    assert.ok(!refused.ok, `${JSON.stringify(text)} should be refused`);
    assert.match(refused.reason, reason);
  }
});

table('swarmgate.auth.forward', parseForwardAuthUrl, [
  ['http://authelia:9091/api/verify', { authority: 'authelia:9091', path: '/api/verify' }],
  ['http://oauth2-proxy', { authority: 'oauth2-proxy:80', path: '/' }],
  ['http://Auth.Internal:4180/oauth2/auth', { authority: 'auth.internal:4180', path: '/oauth2/auth' }],
  ['https://auth.example.com/verify', /not http:\/\/<service>/],
  ['http://auth/verify?x=1', /not http:\/\/<service>/],
  ['http://auth:99999/', /outside 1\.\.65535/],
  ['http://auth/a;b', /must use only/],
  ['http://$host/', /not http:\/\/<service>/],
]);

table('swarmgate.auth.forward.headers', parseHeaderNames, [
  ['Remote-User, Remote-Email', ['Remote-User', 'Remote-Email']],
  ['X-Auth-Request-User', ['X-Auth-Request-User']],
  ['Remote User', /not header names/],
  ['Remote-User;', /not header names/],
]);

table('swarmgate.rate-limit', parseRate, [
  ['10r/s', { count: 10, per: 's' }],
  ['600r/m', { count: 600, per: 'm' }],
  ['5/s', { count: 5, per: 's' }],
  ['0r/s', /outside 1\.\.100000/],
  ['fast', /not a rate/],
  ['10r/h', /not a rate/],
]);

// The ranges routing-model.ts gives parseCount for these two labels.
table('swarmgate.rate-limit.burst', parseCount(0, 100_000), [
  ['0', 0],
  [' 20 ', 20],
  ['100000', 100_000],
  ['100001', /outside 0\.\.100000/],
  ['-1', /not a whole number/],
  ['1.5', /not a whole number/],
  ['20 nodelay', /not a whole number/],
]);

table('swarmgate.max-connections', parseCount(1, 1_000_000), [
  ['1', 1],
  ['100', 100],
  ['0', /outside 1\.\.1000000/],
  ['1e3', /not a whole number/],
  ['', /not a whole number/],
]);

test('swarmgate.header.<Name>: printable values, no "$", no headers swarmgate or the service owns', () => {
  assert.deepEqual(parseResponseHeader('X-Frame-Options', ' DENY '), {
    ok: true,
    value: { name: 'X-Frame-Options', value: 'DENY' },
  });
  for (const [name, value, reason] of [
    ['Set-Cookie', 'a=b', /set by swarmgate/],
    ['Strict-Transport-Security', 'max-age=1', /set by swarmgate/],
    ['Access-Control-Allow-Origin', '*', /set by swarmgate/],
    ['X-A', '$host', /without "\$"/],
    ['X-A', 'a\nb', /printable ASCII/],
    ['X A', 'b', /not a header name/],
    ['X-A', '', /1 to 1024/],
  ] as const) {
    const parsed = parseResponseHeader(name, value);
    assert.ok(!parsed.ok, `${name}: ${value}`);
    assert.match(parsed.reason, reason);
  }
});

table('swarmgate.cors.origins', parseCorsOrigins, [
  ['*', '*'],
  ['https://App.example.com/, http://localhost:3000', ['https://app.example.com', 'http://localhost:3000']],
  ['https://app.example.com/path', /not an origin/],
  ['ftp://x', /not an origin/],
]);

table('swarmgate.cors.methods', parseMethods, [
  ['get, post,DELETE, get', ['GET', 'POST', 'DELETE']],
  ['OPTIONS', ['OPTIONS']],
  ['GET, TRACE', /not one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS: TRACE/],
  ['GET;POST', /not one of/],
  ['', /no method given/],
]);

table('swarmgate.redirect', parseRedirectTarget, [
  ['https://new.example.com', 'https://new.example.com'],
  ['https://new.example.com:8443/', 'https://new.example.com:8443'],
  ['https://new.example.com/$request_uri', /not an origin/],
  ['//evil.example.com', /not an origin/],
]);

table('swarmgate.www-redirect', parseWwwRedirect, [
  ['to-apex', 'to-apex'],
  ['TO-WWW', 'to-www'],
  ['off', null],
  ['apex', /not to-www, to-apex or off/],
]);

table('ACME_CA_URI', parseDirectoryUrl, [
  [' https://acme.example.com/directory ', 'https://acme.example.com/directory'],
  ['https://pebble:14000/dir', 'https://pebble:14000/dir'],
  ['http://acme.example.com/directory', /not an https:\/\/ ACME directory URL/],
  ['https://acme.example.com/dir?x=1', /not an https/],
  ['https://user@acme.example.com/dir', /not an https/],
  [`https://acme.example.com/${'d'.repeat(500)}`, /not an https/],
]);

table('swarmgate.error-page (the config)', parseErrorPage, [
  ['<h1>back soon</h1>\n', '<h1>back soon</h1>\n'],
  ['x'.repeat(65_536), 'x'.repeat(65_536)],
  ['x'.repeat(65_537), /larger than 64 KiB/],
  ['', /the error page is empty/],
]);

table('HSTS as nginx-proxy users write it', parseHstsLenient, [
  ['off', null],
  ['max-age=31536000', 'max-age=31536000'],
  ['includeSubDomains; max-age=63072000; Preload;', 'max-age=63072000; includeSubDomains; preload'],
  ['max-age="300"', 'max-age=300'],
  ['max-age=1; max-age=2', /one max-age/],
  ['max-age=1; always', /not an HSTS directive/],
]);

table('SSL_POLICY', parseSslPolicy, [
  ['Mozilla-Modern', 'Mozilla-Modern'],
  ['AWS-TLS13-1-3-2021-06', 'Mozilla-Modern'],
  ['AWS-TLS-1-2-2017-01', 'Mozilla-Intermediate'],
  ['aws-fs-1-2-res-2020-10', 'Mozilla-Intermediate'],
  ['Mozilla-Old', /use Mozilla-Intermediate/],
  ['AWS-TLS-1-1-2017-01', /use Mozilla-Intermediate/],
  ['AWS-2016-08', /use Mozilla-Intermediate/],
  ['Fancy', /not one of/],
]);

// ---- the model ------------------------------------------------------------------------------------------------

function service(
  name: string,
  labels: Record<string, string>,
  env: Record<string, string> = {},
): ServiceInfo {
  return {
    id: `id-${name}`,
    name,
    createdAt: '2026-01-01T00:00:00Z',
    labels,
    env,
    mode: 'replicated',
    replicas: 1,
    networks: ['net'],
    image: 'x:1',
    updateState: null,
  };
}

function snapshot(services: ServiceInfo[], configs: Snapshot['configs'] = []): Snapshot {
  return {
    services,
    tasks: services.map((one, index) => ({
      id: `t${index}`,
      serviceId: one.id,
      nodeId: 'n',
      slot: 1,
      desiredState: 'running',
      state: 'running',
      stateSince: '',
      error: null,
      image: 'x:1',
      addresses: [{ networkId: 'net', networkName: 'swarmgate', ip: `10.0.0.${index + 2}` }],
    })),
    networks: [{ id: 'net', name: 'swarmgate', driver: 'overlay', scope: 'swarm', ingress: false }],
    nodes: [],
    configs,
  };
}

const settings = { networks: ['swarmgate'] };

test('fail closed: a protected service whose protection cannot be built is left out with an error', () => {
  const model = buildRoutingModel(
    snapshot(
      [
        service('missing', { VIRTUAL_HOST: 'a.test', 'swarmgate.auth.basic': 'nope' }),
        service('plain', { VIRTUAL_HOST: 'b.test', 'swarmgate.auth.basic': 'plain' }),
        service('vpn', { VIRTUAL_HOST: 'c.test' }, { NETWORK_ACCESS: 'vpn' }),
        service('mtls', {
          VIRTUAL_HOST: 'd.test',
          'com.github.nginx-proxy.nginx-proxy.ssl_verify_client': 'on',
        }),
        service('ok', { VIRTUAL_HOST: 'e.test', 'swarmgate.auth.basic': 'users' }),
      ],
      [
        { name: 'plain', kind: 'htpasswd', data: 'u:p\n' },
        { name: 'users', kind: 'htpasswd', data: 'u:$apr1$abcdefgh$h9FWgUz3n9YxylKLlR5SQ/\n' },
      ],
    ),
    settings,
  );
  assert.deepEqual(
    model.services.map((one) => one.name),
    ['ok'],
  );
  assert.deepEqual(
    model.problems
      .filter((problem) => problem.severity === 'error')
      .map((problem) => [problem.service, problem.label, problem.code]),
    [
      ['missing', 'swarmgate.auth.basic', 'INVALID_LABEL'],
      ['mtls', 'com.github.nginx-proxy.nginx-proxy.ssl_verify_client', 'UNSUPPORTED_SETTING'],
      ['plain', 'swarmgate.auth.basic', 'INVALID_LABEL'],
      ['vpn', 'NETWORK_ACCESS', 'INVALID_LABEL'],
    ],
  );
  assert.equal(model.servers[0]?.locations[0]?.policy.basicAuth?.file.path, 'auth/users.htpasswd');
});

test('nothing silent: nginx-proxy and acme-companion settings swarmgate ignores are UNSUPPORTED_SETTING warnings', () => {
  const model = buildRoutingModel(
    snapshot([
      service(
        'np',
        {
          VIRTUAL_HOST: 'a.test',
          'com.github.nginx-proxy.nginx-proxy.keepalive': '32',
          'com.github.nginx-proxy.nginx-proxy.http2.enable': 'true',
        },
        {
          ACME_EAB_KID: 'kid',
          SERVER_TOKENS: 'off',
          ACME_OCSP: 'true',
          // acme-companion's legacy names of ACME_KEYSIZE, ACME_SINGLE_DOMAIN_CERTS, ACME_RESTART_CONTAINER
          LETSENCRYPT_KEYSIZE: '4096',
          LETSENCRYPT_SINGLE_DOMAIN_CERTS: 'true',
          LETSENCRYPT_RESTART_CONTAINER: 'true',
        },
      ),
    ]),
    settings,
  );
  assert.deepEqual(
    model.services.map((one) => one.name),
    ['np'],
  );
  assert.deepEqual(
    model.problems.map((problem) => [problem.label, problem.code, problem.severity]),
    [
      ['ACME_EAB_KID', 'UNSUPPORTED_SETTING', 'warning'],
      ['ACME_OCSP', 'UNSUPPORTED_SETTING', 'warning'],
      ['LETSENCRYPT_KEYSIZE', 'UNSUPPORTED_SETTING', 'warning'],
      ['LETSENCRYPT_RESTART_CONTAINER', 'UNSUPPORTED_SETTING', 'warning'],
      ['LETSENCRYPT_SINGLE_DOMAIN_CERTS', 'UNSUPPORTED_SETTING', 'warning'],
      ['com.github.nginx-proxy.nginx-proxy.keepalive', 'UNSUPPORTED_SETTING', 'warning'],
    ],
    'the default values (SERVER_TOKENS=off, http2.enable=true) need no word',
  );
  assert.match(
    model.problems.find((problem) => problem.label === 'LETSENCRYPT_KEYSIZE')?.reason ?? '',
    /ECDSA P-256/,
    'a legacy name says what to use as its ACME_* form does',
  );
  const legacyDefaults = buildRoutingModel(
    snapshot([
      service(
        'legacy',
        { VIRTUAL_HOST: 'b.test' },
        {
          LETSENCRYPT_KEYSIZE: 'ec-256',
          LETSENCRYPT_SINGLE_DOMAIN_CERTS: 'false',
          LETSENCRYPT_RESTART_CONTAINER: 'false',
        },
      ),
    ]),
    settings,
  );
  assert.deepEqual(legacyDefaults.problems, [], 'values that are what swarmgate does need no word');
});

test('VIRTUAL_HOST_MULTIPORTS: one service, several hosts, paths and ports; its upstreams are per port', () => {
  const multiports = JSON.stringify({
    'api.test': { '/': { port: 8080 }, '/admin/': { port: 9000, dest: '/' } },
    'admin.test': { '/': { port: 9000 } },
    'www.test': null,
  });
  const model = buildRoutingModel(
    snapshot([service('multi', {}, { VIRTUAL_HOST_MULTIPORTS: multiports, VIRTUAL_PORT: '3000' })]),
    settings,
  );
  assert.deepEqual(model.problems, []);
  const routes = model.servers.flatMap((server) =>
    server.locations.map(
      (location) =>
        `${server.host.value}${location.path.value} -> ${location.upstream ?? ''}${location.dest ?? ''}`,
    ),
  );
  const ports = new Map(model.upstreams.map((upstream) => [upstream.name, upstream.servers[0]?.port]));
  assert.deepEqual(
    routes.map((route) => route.replace(/svc_\S+?(?=\/|$)/, (name) => `:${ports.get(name) ?? '?'}`)),
    ['admin.test/ -> :9000', 'api.test/ -> :8080', 'api.test/admin/ -> :9000/', 'www.test/ -> :3000'],
  );
  assert.deepEqual(
    model.services.map((one) => one.hosts),
    [['api.test', 'admin.test', 'www.test']],
  );

  // The same map in YAML, as nginx-proxy documents it for compose files, gives the same routes.
  const yaml = [
    'api.test:',
    '  "/":',
    '    port: 8080',
    '  /admin/:',
    '    port: "9000"',
    '    dest: /',
    'admin.test:',
    '  "/":',
    '    port: 9000',
    'www.test:',
    '',
  ].join('\n');
  const fromYaml = buildRoutingModel(
    snapshot([service('multi', {}, { VIRTUAL_HOST_MULTIPORTS: yaml, VIRTUAL_PORT: '3000' })]),
    settings,
  );
  assert.deepEqual(fromYaml.problems, []);
  assert.deepEqual(fromYaml.servers, model.servers);
  assert.deepEqual(fromYaml.upstreams, model.upstreams);
});

test('VIRTUAL_HOST_MULTIPORTS: nginx-proxy defaults: a host or path given nothing, {} or null gets "/" and the service port; dest "" is no rewrite', () => {
  const routesOf = (value: string): string[] => {
    const model = buildRoutingModel(
      snapshot([
        service('multi', {}, { VIRTUAL_HOST_MULTIPORTS: value, VIRTUAL_PORT: '80', VIRTUAL_DEST: '/app/' }),
      ]),
      settings,
    );
    assert.deepEqual(model.problems, [], value);
    const ports = new Map(model.upstreams.map((upstream) => [upstream.name, upstream.servers[0]?.port]));
    return model.servers.flatMap((server) =>
      server.locations.map(
        (location) =>
          `${server.host.value}${location.path.value} :${ports.get(location.upstream ?? '') ?? '?'} ${location.dest ?? '-'}`,
      ),
    );
  };
  const expected = ['a.test/ :80 /app/', 'b.test/ :8000 -', 'b.test/c :80 /app/', 'd.test/ :80 /app/'];
  assert.deepEqual(
    routesOf('a.test:\nb.test:\n  "/":\n    port: 8000\n    dest: ""\n  /c:\nd.test: {}\n'),
    expected,
  );
  assert.deepEqual(
    routesOf('{"a.test": {}, "b.test": {"/": {"port": 8000, "dest": ""}, "/c": {}}, "d.test": null}'),
    expected,
  );
});

/** VIRTUAL_HOST_MULTIPORTS values that are refused, each with what the reason must say. */
const MULTIPORTS_REFUSED: readonly (readonly [name: string, value: string, reason: RegExp])[] = [
  [
    'alias bomb',
    'a: &a ["x","x","x","x","x","x","x","x","x"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n',
    /anchors \(&a\) are not accepted/,
  ],
  ['alias', 'a.test:\n  "/": *opts\n', /not YAML or JSON|aliases/],
  ['anchor', 'a.test: &h\n  "/":\n    port: 80\n', /anchors \(&h\)/],
  ['duplicate host (YAML)', 'a.test:\na.test:\n  "/":\n    port: 81\n', /a key appears twice/],
  ['duplicate host (JSON)', '{"a.test": null, "a.test": {"/": {"port": 81}}}', /a key appears twice/],
  ['duplicate option', 'a.test:\n  "/":\n    port: 80\n    port: 81\n', /a key appears twice/],
  ['number host', '80:\n  "/":\n    port: 80\n', /keys must be strings, not number 80/],
  ['boolean host', 'true:\n', /keys must be strings, not boolean true/],
  ['null host', '~: \n', /keys must be strings, not null/],
  ['list as key', '? [a.test, b.test]\n: null\n', /keys must be strings, not a list/],
  ['tag', 'a.test:\n  "/":\n    port: !!str 80\n', /tags \(tag:yaml.org,2002:str\) are not accepted/],
  ['unknown tag', 'a.test: !include /etc/passwd\n', /not YAML or JSON|tags/],
  ['several documents', 'a.test:\n---\nb.test:\n', /several YAML documents/],
  ['a list', '- a.test\n- b.test\n', /must be a map of host names/],
  ['a scalar', 'a.test', /must be a map of host names/],
  ['too deep', 'a.test:\n  "/":\n    port:\n      nested: 1\n', /nested deeper than 3 levels/],
  [
    'deep flow nesting (the parser would run out of memory)',
    '{"a":'.repeat(3_000),
    /nested deeper than 8 brackets/,
  ],
  [
    'deep block nesting',
    Array.from({ length: 40 }, (_, i) => `${' '.repeat(i)}a:`).join('\n'),
    /indented more than 32/,
  ],
  [
    'too long',
    `{${Array.from({ length: 1000 }, (_, i) => `"h${i}.test": null`).join(', ')}}`,
    /longer than 16384/,
  ],
  ['not YAML', 'a.test: [\n', /not YAML or JSON/],
  ['bad port', 'a.test:\n  "/":\n    port: http\n', /host "a.test" path "\/"/],
  ['unknown option', 'a.test:\n  "/":\n    pot: 80\n', /unknown keys pot/],
];

test('VIRTUAL_HOST_MULTIPORTS: refused values are a Problem naming the service, label and reason; the others are routed', () => {
  for (const [name, value, reason] of MULTIPORTS_REFUSED) {
    const model = buildRoutingModel(
      snapshot([
        service('bad', {}, { VIRTUAL_HOST_MULTIPORTS: value }),
        service('good', { VIRTUAL_HOST: 'good.test' }),
      ]),
      settings,
    );
    assert.deepEqual(
      model.problems.map((problem) => [problem.service, problem.label, problem.code, problem.severity]),
      [['bad', 'VIRTUAL_HOST_MULTIPORTS', 'INVALID_LABEL', 'error']],
      name,
    );
    assert.match(model.problems[0]?.reason ?? '', reason, name);
    assert.deepEqual(
      model.services.map((one) => one.name),
      ['good'],
      `${name}: only the bad service is left out`,
    );
  }
  // A "__proto__" key is a plain key (here a host name the host grammar accepts), never the map's prototype.
  const proto = buildRoutingModel(
    snapshot([service('proto', {}, { VIRTUAL_HOST_MULTIPORTS: '__proto__:\n  "/":\n    port: 81\n' })]),
    settings,
  );
  assert.deepEqual(
    proto.servers.map((server) => server.host.value),
    ['__proto__'],
  );
  assert.equal(proto.upstreams[0]?.servers[0]?.port, 81);
});

test('VIRTUAL_HOST_MULTIPORTS: one conflicting route refuses the whole service', () => {
  const older = service('older', { VIRTUAL_HOST: 'api.test' });
  const newer = {
    ...service(
      'newer',
      {},
      { VIRTUAL_HOST_MULTIPORTS: JSON.stringify({ 'free.test': null, 'api.test': null }) },
    ),
    createdAt: '2026-02-01T00:00:00Z',
  };
  const model = buildRoutingModel(snapshot([older, newer]), settings);
  assert.deepEqual(
    model.services.map((one) => one.name),
    ['older'],
  );
  assert.deepEqual(
    model.servers.map((server) => server.host.value),
    ['api.test'],
  );
  assert.equal(model.problems[0]?.code, 'CONFLICT');
});

test('DEFAULT_HOST marks that host default; an unknown one is reported', () => {
  const services = [service('a', { VIRTUAL_HOST: 'a.test' }), service('b', { VIRTUAL_HOST: 'b.test' })];
  const model = buildRoutingModel(snapshot(services), { ...settings, defaultHost: 'b.test' });
  assert.deepEqual(
    model.servers.map((server) => [server.host.value, server.isDefault]),
    [
      ['a.test', false],
      ['b.test', true],
    ],
  );
  const missing = buildRoutingModel(snapshot(services), { ...settings, defaultHost: 'c.test' });
  assert.match(missing.problems[0]?.reason ?? '', /no service routes "c.test"/);
});

test('LETSENCRYPT_TEST and ACME_CA_URI: each certificate names its directory; only configured ones are chosen', () => {
  const staging = 'https://acme-staging-v02.api.letsencrypt.org/directory';
  const tlsDefaults = {
    httpsMethod: 'redirect' as const,
    hsts: null,
    sslPolicy: 'Mozilla-Intermediate' as const,
    acmeEmail: null,
    acmeDirectory: 'https://acme-v02.api.letsencrypt.org/directory',
    acmeDirectories: ['https://acme.zerossl.com/v2/DV90'],
  };
  const services = [
    service('test', { VIRTUAL_HOST: 'a.test', LETSENCRYPT_HOST: 'a.test', LETSENCRYPT_TEST: 'true' }),
    service('prod', { VIRTUAL_HOST: 'b.test', LETSENCRYPT_HOST: 'b.test' }),
    service('zero', {
      VIRTUAL_HOST: 'c.test',
      LETSENCRYPT_HOST: 'c.test',
      ACME_CA_URI: 'https://acme.zerossl.com/v2/DV90',
    }),
    // The controller's own directory named in a label is the same as no label.
    service('own', {
      VIRTUAL_HOST: 'd.test',
      LETSENCRYPT_HOST: 'd.test',
      ACME_CA_URI: 'https://acme-v02.api.letsencrypt.org/directory',
    }),
    // Any other URL: a Problem, no certificate, and the route itself is still served.
    service('ssrf', {
      VIRTUAL_HOST: 'e.test',
      LETSENCRYPT_HOST: 'e.test',
      ACME_CA_URI: 'https://169.254.169.254/latest/meta-data',
    }),
  ];
  const model = buildRoutingModel(snapshot(services), { ...settings, tlsDefaults });
  assert.deepEqual(
    model.certificateRequests.map((request) => [request.name, request.directory]),
    [
      ['a.test', staging],
      ['b.test', null],
      ['c.test', 'https://acme.zerossl.com/v2/DV90'],
      ['d.test', null],
    ],
  );
  assert.deepEqual(
    model.problems.map((problem) => [problem.service, problem.label, problem.code, problem.severity]),
    [['ssrf', 'ACME_CA_URI', 'INVALID_LABEL', 'warning']],
  );
  assert.match(
    model.problems[0]?.reason ?? '',
    /"https:\/\/169\.254\.169\.254\/latest\/meta-data" is not a directory/,
  );
  assert.match(model.problems[0]?.reason ?? '', /SWARMGATE_ACME_DIRECTORIES/);
  assert.ok(
    model.servers.some((server) => server.host.value === 'e.test'),
    'the service is routed; only its certificate is not ordered',
  );

  // The operator's staging directory (here the lab's Pebble) is what LETSENCRYPT_TEST picks; when it is the
  // controller's own directory, the request names none.
  const pebble = buildRoutingModel(snapshot(services.slice(0, 1)), {
    ...settings,
    tlsDefaults: { ...tlsDefaults, acmeStagingDirectory: 'https://pebble:14000/dir' },
  });
  assert.deepEqual(pebble.certificateRequests[0]?.directory, 'https://pebble:14000/dir');
  const stagingController = buildRoutingModel(snapshot(services.slice(0, 1)), {
    ...settings,
    tlsDefaults: { ...tlsDefaults, acmeDirectory: staging },
  });
  assert.deepEqual(stagingController.certificateRequests[0]?.directory, null);
  // Without an allow-list, ACME_CA_URI may only name the controller's or the staging directory.
  const closed = buildRoutingModel(snapshot(services.slice(2, 3)), {
    ...settings,
    tlsDefaults: { ...tlsDefaults, acmeDirectories: [] },
  });
  assert.deepEqual(closed.certificateRequests, []);
  assert.equal(closed.problems[0]?.label, 'ACME_CA_URI');
});

test('nginx-proxy options left on the controller are named with what to use instead', async () => {
  const { unsupportedProxyEnv } = await import('../../src/config.ts');
  assert.deepEqual(
    unsupportedProxyEnv({ DEFAULT_HOST: 'a.test', ENABLE_IPV6: 'true', SWARMGATE_GZIP: 'off', HSTS: '' }),
    [
      { name: 'DEFAULT_HOST', instead: 'SWARMGATE_DEFAULT_HOST' },
      { name: 'ENABLE_IPV6', instead: 'SWARMGATE_ENABLE_IPV6 (the edges listen on [::] too)' },
    ],
  );
  // acme-companion's container-wide settings, where its users set them (its Environment-variables-reference).
  const acme = {
    ACME_CHALLENGE: 'DNS-01',
    ACMESH_DNS_API_CONFIG: '{"DNS_API": "dns_cf"}',
    ACME_EAB_KID: 'kid',
    ACME_EAB_HMAC_KEY: 'hmac',
    ZEROSSL_API_KEY: 'key',
    ACME_CERT_PROFILE: 'shortlived',
    ACME_PRE_HOOK: 'echo pre',
    ACME_POST_HOOK: 'echo post',
    ACME_RENEW_AFTER: '30',
    DEFAULT_KEY_SIZE: '2048',
    RENEW_PRIVATE_KEYS: 'false',
  };
  const named = unsupportedProxyEnv(acme);
  assert.deepEqual(
    named.map((one) => one.name),
    Object.keys(acme),
  );
  assert.deepEqual(
    named
      .filter((one) => ['ACME_CHALLENGE', 'ACME_RENEW_AFTER', 'DEFAULT_KEY_SIZE'].includes(one.name))
      .map((one) => one.instead),
    [
      'nothing: only HTTP-01 is supported (no DNS-01)',
      'SWARMGATE_ACME_RENEW_PERCENT',
      'nothing: certificates always use ECDSA P-256 keys',
    ],
  );
});

test('settings: SWARMGATE_TRUSTED_PROXIES needs SWARMGATE_TRUST_DOWNSTREAM_PROXY; SWARMGATE_DEFAULT_HOST is an exact name', async () => {
  const { readControllerConfig } = await import('../../src/config.ts');
  const config = readControllerConfig({
    SWARMGATE_TRUST_DOWNSTREAM_PROXY: 'true',
    SWARMGATE_TRUSTED_PROXIES: '10.0.0.0/8, 192.168.1.0/24',
    SWARMGATE_DEFAULT_HOST: 'Home.Example.com',
    SWARMGATE_GZIP: 'off',
    SWARMGATE_HSTS: 'includeSubDomains; max-age=60',
  });
  assert.deepEqual(config.proxy.trustedProxies, ['10.0.0.0/8', '192.168.1.0/24']);
  assert.equal(config.proxy.defaultHost, 'home.example.com');
  assert.equal(config.proxy.gzip, false);
  assert.equal(config.tls.hsts, 'max-age=60; includeSubDomains');
  assert.throws(
    () => readControllerConfig({ SWARMGATE_TRUSTED_PROXIES: '10.0.0.0/8' }),
    /needs SWARMGATE_TRUST_DOWNSTREAM_PROXY/,
  );
  assert.throws(
    () =>
      readControllerConfig({
        SWARMGATE_TRUST_DOWNSTREAM_PROXY: 'true',
        SWARMGATE_TRUSTED_PROXIES: '10.0.0.1/8',
      }),
    /bits set/,
  );
  assert.throws(
    () => readControllerConfig({ SWARMGATE_DEFAULT_HOST: '*.example.com' }),
    /not an exact host name/,
  );
});

// Label tables for the stream labels (issue 15, item 8): value in, typed field or reason out. Then what the model
// makes of them: Problems naming service and label, a port or passthrough name claimed twice (CONFLICT, the older
// service keeps it), a name an HTTPS service routes, passthrough refused while SWARMGATE_TRUSTED_PROXIES is set,
// and a config unchanged while no service asks for a stream.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { defaultProxySettings, readControllerConfig } from '../../src/config.ts';
import type { ServiceInfo, Snapshot } from '../../src/discovery/snapshot.ts';
import { buildRoutingModel } from '../../src/model/routing-model.ts';
import { parsePassthroughHosts, parseStreamPort, parseTcpPorts } from '../../src/model/stream-labels.ts';
import { createTemplateRenderer } from '../../src/render/nunjucks-env.ts';
import { renderConfig, shapeFingerprint, STREAM_PEERS_FILE } from '../../src/render/render-config.ts';
import { labelTable as table } from '../support/label-tables.ts';

table('swarmgate.tcp.port', parseStreamPort, [
  ['5432', 5432],
  [' 6379 ', 6379],
  ['0', /outside 1..65535/],
  ['70000', /outside 1..65535/],
  ['5432; include /etc/passwd', /not a port number/],
  ['', /not a port number/],
]);

table('swarmgate.tls.passthrough', parsePassthroughHosts, [
  ['vault.example.com', [{ kind: 'exact', value: 'vault.example.com' }]],
  [
    'B.example.com, *.a.example.com',
    [
      { kind: 'wildcard', value: '*.a.example.com' },
      { kind: 'exact', value: 'b.example.com' },
    ],
  ],
  ['~^v\\d+\\.example\\.com$', /exact names and \*\.name only/],
  ['www.example.*', /exact names and \*\.name only/],
  ['a b.example.com', /./],
  ['', /no host name given/],
]);

table('SWARMGATE_TCP_PORTS', parseTcpPorts, [
  ['', []],
  ['6379, 5432,5432', [5432, 6379]],
  ['443', /HTTP or HTTPS port/],
  ['80,5432', /HTTP or HTTPS port/],
  ['5432-5440', /not a port number/],
]);

test('SWARMGATE_TCP_PORTS: the controller config reads it with the label grammar and lists a bad value', () => {
  assert.deepEqual(defaultProxySettings().tcpPorts, []);
  assert.throws(
    () => readControllerConfig({ SWARMGATE_TCP_PORTS: '5432,443' }),
    /SWARMGATE_TCP_PORTS: 443 is the edge's HTTP or HTTPS port/,
  );
});

function service(
  name: string,
  labels: Record<string, string>,
  createdAt = '2026-01-01T00:00:00Z',
): ServiceInfo {
  return {
    id: `id-${name}`,
    name,
    createdAt,
    labels,
    env: {},
    mode: 'replicated',
    replicas: 1,
    networks: ['swarmgate'],
    image: 'example/app:1',
    updateState: null,
  };
}

function snapshot(services: ServiceInfo[], ips: Record<string, string[]> = {}): Snapshot {
  return {
    services,
    tasks: Object.entries(ips).flatMap(([name, list]) =>
      list.map((ip, index) => ({
        id: `t-${name}-${index}`,
        serviceId: `id-${name}`,
        nodeId: 'n1',
        slot: index + 1,
        desiredState: 'running',
        state: 'running',
        stateSince: '2026-01-01T00:00:00Z',
        error: null,
        image: 'example/app:1',
        addresses: [{ networkId: 'net', networkName: 'swarmgate', ip }],
      })),
    ),
    networks: [],
    nodes: [],
  };
}

test('a TCP port that is not declared is a Problem naming service, label and reason', () => {
  const model = buildRoutingModel(snapshot([service('db', { 'swarmgate.tcp.port': '5432' })]), {
    networks: ['swarmgate'],
  });
  assert.equal(model.stream, undefined);
  assert.deepEqual(model.problems, [
    {
      service: 'db',
      label: 'swarmgate.tcp.port',
      code: 'INVALID_LABEL',
      reason:
        'edge port 5432 is not declared: SWARMGATE_TCP_PORTS is empty (the operator declares and publishes the ports)',
      severity: 'error',
    },
  ]);
});

test('a service whose stream label is refused is left out whole, its HTTP routes too; others are not touched', () => {
  // Found by the label fuzzer: the service kept its HTTP host beside an error Problem, which means "left out".
  const model = buildRoutingModel(
    snapshot(
      [
        service('db-admin', { VIRTUAL_HOST: 'db.example.com', 'swarmgate.tcp.port': '6379' }),
        service('web', { VIRTUAL_HOST: 'web.example.com' }),
      ],
      { 'db-admin': ['10.0.0.2'], web: ['10.0.0.3'] },
    ),
    { networks: ['swarmgate'], tcpPorts: [5432] },
  );
  assert.deepEqual(
    model.servers.map((server) => server.host.value),
    ['web.example.com'],
  );
  assert.deepEqual(
    model.services.map((routed) => routed.name),
    ['web'],
  );
  assert.equal(model.stream, undefined);
  assert.deepEqual(
    model.problems.map((problem) => [problem.service, problem.label, problem.code, problem.severity]),
    [['db-admin', 'swarmgate.tcp.port', 'INVALID_LABEL', 'error']],
  );
});

test('two services on one TCP port: the older keeps it, the newer is a CONFLICT', () => {
  const model = buildRoutingModel(
    snapshot(
      [
        service('new', { 'swarmgate.tcp.port': '5432' }, '2026-02-01T00:00:00Z'),
        service('old', { 'swarmgate.tcp.port': '5432', 'swarmgate.tcp.target_port': '15432' }),
      ],
      { old: ['10.0.0.3', '10.0.0.2'], new: ['10.0.0.9'] },
    ),
    { networks: ['swarmgate'], tcpPorts: [5432] },
  );
  assert.deepEqual(model.stream?.tcp, [{ port: 5432, service: 'old', upstream: 'tcp_5432' }]);
  assert.deepEqual(
    model.stream?.upstreams.map((upstream) => [
      upstream.name,
      upstream.servers.map((s) => `${s.ip}:${s.port}`),
    ]),
    [['tcp_5432', ['10.0.0.2:15432', '10.0.0.3:15432']]],
  );
  assert.deepEqual(
    model.problems.map((problem) => [problem.service, problem.label, problem.code]),
    [['new', 'swarmgate.tcp.port', 'CONFLICT']],
  );
});

test('a passthrough name an HTTP service routes is a CONFLICT; the HTTP route stays', () => {
  const model = buildRoutingModel(
    snapshot(
      [
        service('web', { VIRTUAL_HOST: 'app.example.com' }),
        service('pass', { 'swarmgate.tls.passthrough': 'app.example.com' }),
      ],
      { web: ['10.0.0.2'], pass: ['10.0.0.3'] },
    ),
    { networks: ['swarmgate'] },
  );
  assert.equal(model.stream, undefined);
  assert.deepEqual(
    model.servers.map((server) => server.host.value),
    ['app.example.com'],
  );
  assert.deepEqual(
    model.problems.map((problem) => [problem.service, problem.label, problem.code]),
    [['pass', 'swarmgate.tls.passthrough', 'CONFLICT']],
  );
});

test('with SWARMGATE_TRUSTED_PROXIES a passthrough claim is refused naming it; the service is left out whole', () => {
  const model = buildRoutingModel(
    snapshot(
      [service('both', { 'swarmgate.tls.passthrough': 'vault.example.com', 'swarmgate.tcp.port': '5432' })],
      { both: ['10.0.0.3'] },
    ),
    { networks: ['swarmgate'], tcpPorts: [5432], trustedProxies: ['10.0.0.0/8'] },
  );
  // Its TCP port too: an error Problem means the service is left out (as for any other refused label).
  assert.equal(model.stream, undefined);
  assert.deepEqual(
    model.problems.map((problem) => [problem.service, problem.label, problem.code, problem.severity]),
    [['both', 'swarmgate.tls.passthrough', 'INVALID_LABEL', 'error']],
  );
  assert.match(model.problems[0]?.reason ?? '', /SWARMGATE_TRUSTED_PROXIES is set: .* fail open/);
});

test('a service that lost a TCP port to a service refused for its own labels gets the port, whatever else it routes', () => {
  // Found in review: both were left out in one round, so the port closed and the loser's CONFLICT named a service
  // that was not routed; with the newer service stream-only, it got the port. Now the same either way.
  for (const newer of [{}, { VIRTUAL_HOST: 'db.example.com' }] as Record<string, string>[]) {
    const model = buildRoutingModel(
      snapshot(
        [
          service('old', { 'swarmgate.tcp.port': '5432', 'swarmgate.tls.passthrough': 'vault.example.com' }),
          service('new', { 'swarmgate.tcp.port': '5432', ...newer }, '2026-02-01T00:00:00Z'),
        ],
        { old: ['10.0.0.2'], new: ['10.0.0.3'] },
      ),
      { networks: ['swarmgate'], tcpPorts: [5432], trustedProxies: ['10.0.0.0/8'] },
    );
    assert.deepEqual(model.stream?.tcp, [{ port: 5432, service: 'new', upstream: 'tcp_5432' }]);
    assert.deepEqual(
      model.problems.map((problem) => [problem.service, problem.code]),
      [['old', 'INVALID_LABEL']],
    );
    assert.deepEqual(
      model.servers.map((server) => server.host.value),
      'VIRTUAL_HOST' in newer ? ['db.example.com'] : [],
    );
  }
});

test('task changes touch stream-peers.txt only: the shape (and so the edge config) stays, no reload', () => {
  const render = (ips: string[]) =>
    renderConfig(
      buildRoutingModel(snapshot([service('db', { 'swarmgate.tcp.port': '5432' })], { db: ips }), {
        networks: ['swarmgate'],
        tcpPorts: [5432],
      }),
      { proxy: defaultProxySettings(), generator: 'test' },
      createTemplateRenderer(),
    );
  const none = render([]);
  const two = render(['10.0.0.2', '10.0.0.3']);
  assert.equal(shapeFingerprint(none), shapeFingerprint(two));
  assert.equal(none['nginx.conf'], two['nginx.conf']);
  assert.match(none[STREAM_PEERS_FILE] ?? '', /\nupstream tcp_5432\n$/);
  assert.match(two[STREAM_PEERS_FILE] ?? '', /\nupstream tcp_5432 10\.0\.0\.2:5432 10\.0\.0\.3:5432\n$/);
});

test('no service asks for a stream: no stream block, no stream modules, no stream-peers.txt', () => {
  const files = renderConfig(
    buildRoutingModel(
      snapshot([service('web', { VIRTUAL_HOST: 'app.example.com' })], { web: ['10.0.0.2'] }),
      {
        networks: ['swarmgate'],
        tcpPorts: [5432],
      },
    ),
    { proxy: defaultProxySettings(), generator: 'test' },
    createTemplateRenderer(),
  );
  assert.doesNotMatch(files['nginx.conf'] ?? '', /^stream \{|ngx_stream_|proxy_protocol|ssl_preread/m);
  assert.equal(files[STREAM_PEERS_FILE], undefined);
});

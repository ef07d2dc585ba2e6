// HTTP/3 (issue 15, item 7): the setting and the labels (SWARMGATE_ENABLE_HTTP3, swarmgate.http3, nginx-proxy's
// http3.enable), what the model decides per host, and the rules of nginx's QUIC listeners in the rendered config
// (reuseport once per address and port, Alt-Svc with the port clients reach). The host's nginx cannot read "quic"
// (Debian 12's has no http_v3): the goldens http3 and http3-global are checked with the edge image's nginx
// (test/support/image-nginx.sh), and test/e2e/http3.test.ts speaks HTTP/3 to a real edge.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { defaultProxySettings, readControllerConfig, unsupportedProxyEnv } from '../../src/config.ts';
import type { ServiceInfo, Snapshot } from '../../src/discovery/snapshot.ts';
import { isSwarmgateError } from '../../src/errors.ts';
import { buildRoutingModel, DEFAULT_TLS } from '../../src/model/routing-model.ts';
import type { AvailableCertificate, ModelSettings, RoutingModel } from '../../src/model/routing-model.ts';
import { createTemplateRenderer } from '../../src/render/nunjucks-env.ts';
import { renderConfig } from '../../src/render/render-config.ts';

const NP_HTTP3 = 'com.github.nginx-proxy.nginx-proxy.http3.enable';
const wildcard: AvailableCertificate = { name: 'wildcard', domains: ['*.example.com'], source: 'user' };

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
    networks: ['net'],
    image: 'x:1',
    updateState: null,
  };
}

function snapshot(services: ServiceInfo[]): Snapshot {
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
  };
}

function model(
  services: ServiceInfo[],
  options: { global?: boolean; defaultHost?: string } = {},
): RoutingModel {
  const settings: ModelSettings = {
    networks: ['swarmgate'],
    certificates: [wildcard],
    tlsDefaults: { ...DEFAULT_TLS, http3: options.global ?? false },
    defaultHost: options.defaultHost ?? null,
  };
  return buildRoutingModel(snapshot(services), settings);
}

function http3Of(routing: RoutingModel): Record<string, boolean> {
  return Object.fromEntries(routing.servers.map((server) => [server.host.value, server.tls.http3]));
}

function render(routing: RoutingModel, ipv6 = false): string {
  const files = renderConfig(
    routing,
    { proxy: { ...defaultProxySettings(), ipv6 }, generator: 'test' },
    createTemplateRenderer(),
    (name) => (name === wildcard.name ? { certificatePem: 'x', privateKeyPem: 'y' } : undefined),
  );
  return files['nginx.conf'] ?? '';
}

/** The server block that names `host` (server_name "host"), up to the next server. */
/** The host's port-80 server block (its own, or the one it shares with other hosts that redirect), then its HTTPS one. */
function serverBlocks(conf: string, host: string): string[] {
  const blocks = conf.split(/\n {4}server \{\n/);
  const own = (block: string): boolean => block.includes(`server_name "${host}";`);
  const shared = (block: string): boolean =>
    /^ {8}listen 80;$/m.test(block) && new RegExp(`^ {12}"${host.replace(/\./g, '\\.')}"$`, 'm').test(block);
  return blocks.filter((block) => own(block) || shared(block));
}

test('SWARMGATE_ENABLE_HTTP3: off by default, a boolean, and what nginx-proxy users set instead of ENABLE_HTTP3', () => {
  assert.equal(readControllerConfig({}).tls.http3, false);
  assert.equal(readControllerConfig({ SWARMGATE_ENABLE_HTTP3: 'true' }).tls.http3, true);
  assert.throws(
    () => readControllerConfig({ SWARMGATE_ENABLE_HTTP3: 'quic' }),
    (error: unknown) =>
      isSwarmgateError(error, 'ERR_CONFIG_INVALID') && /SWARMGATE_ENABLE_HTTP3/.test(error.message),
  );
  assert.deepEqual(unsupportedProxyEnv({ ENABLE_HTTP3: 'true' }), [
    { name: 'ENABLE_HTTP3', instead: 'SWARMGATE_ENABLE_HTTP3 (and publish 443/udp)' },
  ]);
});

test('per host: swarmgate.http3 or nginx-proxy http3.enable turn it on, only where the host has a certificate', () => {
  const routing = model([
    service('on', { VIRTUAL_HOST: 'on.example.com', 'swarmgate.http3': 'on' }),
    service('np', { VIRTUAL_HOST: 'np.example.com', [NP_HTTP3]: 'true' }),
    service('unset', { VIRTUAL_HOST: 'unset.example.com' }),
    service('plain', { VIRTUAL_HOST: 'plain.test', 'swarmgate.http3': 'on' }),
  ]);
  assert.deepEqual(http3Of(routing), {
    'np.example.com': true,
    'on.example.com': true,
    'plain.test': false,
    'unset.example.com': false,
  });
  assert.deepEqual(routing.problems, [], 'http3.enable is honoured now: no UNSUPPORTED_SETTING');
});

test('global: SWARMGATE_ENABLE_HTTP3 turns it on for every host with a certificate; a service may say off', () => {
  const routing = model(
    [
      service('web', { VIRTUAL_HOST: 'web.example.com' }),
      service('legacy', { VIRTUAL_HOST: 'legacy.example.com', 'swarmgate.http3': 'off' }),
      service('np-off', { VIRTUAL_HOST: 'np-off.example.com', [NP_HTTP3]: 'false' }),
      service('plain', { VIRTUAL_HOST: 'plain.test' }),
    ],
    { global: true },
  );
  assert.deepEqual(http3Of(routing), {
    'legacy.example.com': false,
    'np-off.example.com': false,
    'plain.test': false,
    'web.example.com': true,
  });
});

test('grammar: a bad value leaves the service out with INVALID_LABEL; both labels set and differing: ours wins', () => {
  const routing = model([
    service('bad', { VIRTUAL_HOST: 'bad.example.com', 'swarmgate.http3': 'h3' }),
    service('badnp', { VIRTUAL_HOST: 'badnp.example.com', [NP_HTTP3]: 'maybe' }),
    service('both', { VIRTUAL_HOST: 'both.example.com', 'swarmgate.http3': 'off', [NP_HTTP3]: 'true' }),
  ]);
  assert.deepEqual(
    routing.services.map((one) => one.name),
    ['both'],
  );
  assert.deepEqual(http3Of(routing), { 'both.example.com': false });
  assert.deepEqual(
    routing.problems.map((problem) => [problem.service, problem.label, problem.code]),
    [
      ['bad', 'swarmgate.http3', 'INVALID_LABEL'],
      ['badnp', NP_HTTP3, 'INVALID_LABEL'],
      ['both', NP_HTTP3, 'IGNORED_SETTING'],
    ],
  );
});

test('a host-wide setting: a later service on the host cannot turn HTTP/3 on where the oldest did not say', () => {
  const routing = model([
    service('owner', { VIRTUAL_HOST: 'shared.example.com' }, '2026-01-01T00:00:00Z'),
    service(
      'later',
      { VIRTUAL_HOST: 'shared.example.com', VIRTUAL_PATH: '/api/', 'swarmgate.http3': 'on' },
      '2026-01-02T00:00:00Z',
    ),
  ]);
  assert.deepEqual(http3Of(routing), { 'shared.example.com': false });
  assert.deepEqual(
    routing.problems.map((problem) => [problem.service, problem.label]),
    [['later', 'swarmgate.http3']],
  );
});

test('render: no HTTP/3 host, no QUIC listener and no Alt-Svc anywhere', () => {
  const conf = render(model([service('web', { VIRTUAL_HOST: 'web.example.com' })]), true);
  assert.doesNotMatch(conf, /quic/);
  assert.doesNotMatch(conf, /Alt-Svc/);
});

test('render: reuseport once per address and port, whatever the number of HTTP/3 hosts; each HTTP/3 server listens on quic', () => {
  const hosts = ['a', 'b', 'c', 'd'].map((letter) => `${letter}.example.com`);
  const routing = model(
    [
      ...hosts.map((host) =>
        service(host.split('.')[0] ?? '', { VIRTUAL_HOST: host, 'swarmgate.http3': 'on' }),
      ),
      service('tcp', { VIRTUAL_HOST: 'tcp.example.com' }),
    ],
    { defaultHost: 'b.example.com' },
  );
  for (const ipv6 of [false, true]) {
    const conf = render(routing, ipv6);
    assert.equal(conf.match(/^ {8}listen 443 quic reuseport( default_server)?;$/gm)?.length, 1);
    assert.equal(
      conf.match(/^ {8}listen \[::\]:443 quic reuseport( default_server)?;$/gm)?.length ?? 0,
      ipv6 ? 1 : 0,
    );
    // The catch-all is QUIC's one default server, even beside SWARMGATE_DEFAULT_HOST: a QUIC handshake for a name
    // without HTTP/3 is refused there, never answered by the default host's service.
    assert.equal(conf.match(/^ {8}listen 443 quic( reuseport)? default_server;$/gm)?.length, 1);
    assert.match(conf, /^ {8}listen 443 quic reuseport default_server;\n(?:.*\n)*? {8}server_name _;$/m);
    for (const host of hosts) {
      const [, https] = serverBlocks(conf, host);
      assert.ok(https, `${host} has an HTTPS server`);
      assert.match(https, /^ {8}listen 443 quic;$/m);
      assert.equal(/^ {8}listen \[::\]:443 quic;$/m.test(https), ipv6);
    }
    const [, tcpHttps] = serverBlocks(conf, 'tcp.example.com');
    assert.doesNotMatch(tcpHttps ?? '', /quic|Alt-Svc/);
  }
});

test('render: Alt-Svc names the port clients reach (EXTERNAL_HTTPS_PORT) and is repeated where a location adds headers', () => {
  const conf = render(
    model([
      service('moved', {
        VIRTUAL_HOST: 'moved.example.com',
        'swarmgate.http3': 'on',
        EXTERNAL_HTTPS_PORT: '8443',
      }),
      service('headers', {
        VIRTUAL_HOST: 'headers.example.com',
        'swarmgate.http3': 'on',
        'swarmgate.header.X-Frame-Options': 'DENY',
      }),
    ]),
  );
  const [movedHttp, movedHttps] = serverBlocks(conf, 'moved.example.com');
  assert.match(movedHttps ?? '', /^ {8}add_header Alt-Svc 'h3=":8443"; ma=86400' always;$/m);
  assert.doesNotMatch(movedHttp ?? '', /Alt-Svc/, 'never over plain HTTP');
  const [, headersHttps] = serverBlocks(conf, 'headers.example.com');
  // nginx inherits add_header only into locations that set none: the location with X-Frame-Options repeats it.
  assert.match(headersHttps ?? '', /^ {8}add_header Alt-Svc 'h3=":443"; ma=86400' always;$/m);
  assert.match(headersHttps ?? '', /^ {12}add_header Alt-Svc 'h3=":443"; ma=86400' always;$/m);
});

// SWARMGATE_ADMIN_HOST: the setting (off by default, one exact name or a clear config error), what the routing model
// makes of it (the controller's certificate request, the server with the certificate once issued, no service may
// claim the name, no page over plain HTTP), and the login throttle that faces the internet once it is set.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { defaultProxySettings, readControllerConfig } from '../../src/config.ts';
import { isSwarmgateError } from '../../src/errors.ts';
import { LoginThrottle } from '../../src/admin/status-page/login-throttle.ts';
import { ADMIN_HOST_SETTING, buildRoutingModel } from '../../src/model/routing-model.ts';
import type { AvailableCertificate } from '../../src/model/routing-model.ts';
import { restrictModel } from '../../src/reconcile/reconciler.ts';
import { createTemplateRenderer } from '../../src/render/nunjucks-env.ts';
import { renderConfig } from '../../src/render/render-config.ts';
import { FakeClock } from '../support/fake-clock.ts';
import { oneServiceSnapshot } from '../support/one-service.ts';

const configError = (env: Record<string, string>): string => {
  try {
    readControllerConfig(env);
  } catch (error) {
    assert.ok(isSwarmgateError(error, 'ERR_CONFIG_INVALID'), String(error));
    return error.message;
  }
  return assert.fail(`no config error for ${JSON.stringify(env)}`);
};

test('admin host: off by default; one exact name turns it on, with the status listener on 8403', () => {
  const off = readControllerConfig({});
  assert.equal(off.proxy.adminHost, null);
  assert.equal(off.statusPort, 8403);
  assert.equal(off.proxy.statusAddress, 'swarmgate-controller:8403');
  const on = readControllerConfig({ SWARMGATE_ADMIN_HOST: ' Status.Example.COM ' });
  assert.equal(on.proxy.adminHost, 'status.example.com');
});

test('admin host: a name that is not one exact host is a config error that names the key', () => {
  for (const bad of [
    '*.example.com',
    'example.*',
    '~^status',
    'status.example.com:8443',
    'a b',
    'status/x',
  ]) {
    assert.match(
      configError({ SWARMGATE_ADMIN_HOST: bad }),
      /SWARMGATE_ADMIN_HOST: .* is not an exact host name/,
    );
  }
  assert.match(
    configError({ SWARMGATE_ADMIN_HOST: 'a.example.com', SWARMGATE_DEFAULT_HOST: 'a.example.com' }),
    /SWARMGATE_ADMIN_HOST: "a.example.com" is also SWARMGATE_DEFAULT_HOST/,
  );
  assert.match(
    configError({ SWARMGATE_STATUS_PORT: '8402' }),
    /SWARMGATE_STATUS_PORT must be different ports/,
  );
});

const acme = (name: string): AvailableCertificate => ({ name, domains: [name], source: 'acme' });

test('admin host: the model orders its certificate and serves HTTPS with it once it exists', () => {
  const snapshot = oneServiceSnapshot('app.example.com', ['10.0.0.5'], 80);
  const before = buildRoutingModel(snapshot, { networks: ['swarmgate'], adminHost: 'status.example.com' });
  assert.deepEqual(
    before.certificateRequests.map((request) => [request.name, request.service, request.directory]),
    [['status.example.com', ADMIN_HOST_SETTING, null]],
  );
  assert.deepEqual(before.adminServer, {
    host: 'status.example.com',
    certificate: null,
    hsts: null,
    sslPolicy: 'Mozilla-Intermediate',
  });
  assert.ok(
    before.problems.some((problem) => problem.label === ADMIN_HOST_SETTING && problem.code === 'CERTIFICATE'),
    'a missing certificate is shown as a problem',
  );
  assert.deepEqual(before.certificatesInUse, []);

  const after = buildRoutingModel(snapshot, {
    networks: ['swarmgate'],
    adminHost: 'status.example.com',
    certificates: [acme('status.example.com')],
  });
  assert.equal(after.adminServer?.certificate, 'status.example.com');
  assert.equal(after.adminServer?.hsts, 'max-age=31536000');
  assert.deepEqual(after.certificatesInUse, ['status.example.com']);
  assert.deepEqual(after.problems, []);

  // An operator certificate that covers the name serves too (a wildcard from a Docker secret).
  const covered = buildRoutingModel(snapshot, {
    networks: ['swarmgate'],
    adminHost: 'status.example.com',
    certificates: [{ name: 'wild', domains: ['*.example.com'], source: 'user' }],
  });
  assert.equal(covered.adminServer?.certificate, 'wild');

  // A quarantine of every service keeps the admin server and its certificate.
  const restricted = restrictModel(after, new Set());
  assert.deepEqual(restricted.adminServer, after.adminServer);
  assert.deepEqual(restricted.certificatesInUse, ['status.example.com']);
  assert.deepEqual(
    restricted.certificateRequests.map((request) => request.name),
    ['status.example.com'],
  );

  const none = buildRoutingModel(snapshot, { networks: ['swarmgate'] });
  assert.equal(none.adminServer, null);
  assert.deepEqual(none.certificateRequests, []);
});

test('admin host: a service that claims the name is refused with a conflict', () => {
  const snapshot = oneServiceSnapshot('status.example.com', ['10.0.0.5'], 80);
  const model = buildRoutingModel(snapshot, { networks: ['swarmgate'], adminHost: 'status.example.com' });
  assert.deepEqual(model.services, []);
  const conflict = model.problems.find((problem) => problem.code === 'CONFLICT');
  assert.equal(conflict?.severity, 'error');
  assert.match(conflict?.reason ?? '', /is the admin host \(SWARMGATE_ADMIN_HOST\)/);
});

test('admin host: without a certificate its port 80 answers 503 and no HTTPS server is rendered', () => {
  const model = buildRoutingModel(oneServiceSnapshot('app.example.com', ['10.0.0.5'], 80), {
    networks: ['swarmgate'],
    adminHost: 'status.example.com',
  });
  const proxy = { ...defaultProxySettings(), adminHost: 'status.example.com' };
  const conf =
    renderConfig(model, { proxy, generator: 'test' }, createTemplateRenderer())['nginx.conf'] ?? '';
  const servers = conf
    .split('\n    server {')
    .filter((block) => block.includes('server_name "status.example.com"'));
  assert.equal(servers.length, 1, 'only the port 80 server');
  assert.match(servers[0] ?? '', /listen 80;[\s\S]*acme-challenge[\s\S]*location \/ \{\s+return 503;/);
  assert.doesNotMatch(conf, /swarmgate-controller:8403/, 'nothing is proxied to the status listener');
});

test('login throttle: 10 failures per address per minute, then 429 until the window ends; a total cap', () => {
  const clock = new FakeClock();
  const throttle = new LoginThrottle(clock, { perAddress: 10, total: 25, windowMs: 60_000, maxAddresses: 3 });
  for (let i = 0; i < 9; i++) throttle.failed('203.0.113.1');
  assert.equal(throttle.retryAfterMs('203.0.113.1'), 0, 'nine failures: still allowed');
  throttle.failed('203.0.113.1');
  assert.equal(throttle.retryAfterMs('203.0.113.1'), 60_000);
  assert.equal(throttle.retryAfterMs('203.0.113.2'), 0, 'another address is not held');
  clock.advance(59_999);
  assert.equal(throttle.retryAfterMs('203.0.113.1'), 1);
  clock.advance(1);
  assert.equal(throttle.retryAfterMs('203.0.113.1'), 0, 'a new window');

  // Rotating addresses: the table holds 3, and all failures together stop at 25 per window.
  for (let i = 0; i < 24; i++) throttle.failed(`198.51.100.${i}`);
  assert.ok(throttle.size <= 3, `at most 3 addresses are kept, not ${throttle.size}`);
  assert.equal(throttle.retryAfterMs('192.0.2.7'), 0);
  throttle.failed('198.51.100.200');
  assert.equal(throttle.retryAfterMs('192.0.2.7'), 60_000, 'the total cap holds every address');
});

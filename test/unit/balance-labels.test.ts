// Label tables for the balancing labels (issue 15): value in, typed field or reason out. Then what the model makes
// of them: Problems naming service and label, canary groups (both weighted, or a CONFLICT), weights that change
// peers.txt only, and the Lua options the render writes.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { defaultProxySettings } from '../../src/config.ts';
import type { ServiceInfo, Snapshot } from '../../src/discovery/snapshot.ts';
import {
  parseBalanceMethod,
  parseCookieMaxAge,
  parseCookieName,
  parseHashKey,
  parseRetryTimeout,
  parseRetryTries,
  parseSticky,
  parseWeight,
} from '../../src/model/balance-labels.ts';
import { buildRoutingModel } from '../../src/model/routing-model.ts';
import type { RoutingModel, Upstream } from '../../src/model/routing-model.ts';
import { balancerOptions } from '../../src/render/balancer-options.ts';
import { createTemplateRenderer } from '../../src/render/nunjucks-env.ts';
import { PEERS_FILE, renderConfig, shapeFingerprint } from '../../src/render/render-config.ts';
import { labelTable as table } from '../support/label-tables.ts';

table('swarmgate.balance', parseBalanceMethod, [
  ['round_robin', 'round_robin'],
  ['least_conn', 'least_conn'],
  [' Least-Conn ', 'least_conn'],
  ['HASH', 'hash'],
  ['random', /not one of round_robin, least_conn, hash/],
  ['ip_hash', /not one of/],
  ['', /not one of/],
]);

table('swarmgate.balance.key', parseHashKey, [
  ['client_ip', { kind: 'client_ip' }],
  ['CLIENT_IP', { kind: 'client_ip' }],
  ['header:X-User', { kind: 'header', name: 'X-User' }],
  ['Header: X-Tenant-Id', { kind: 'header', name: 'X-Tenant-Id' }],
  ['cookie:session_id', { kind: 'cookie', name: 'session_id' }],
  ['header:', /not a header name/],
  ['header:X_User', /not a header name/],
  ['header:X-User;', /not a header name/],
  [`header:${'a'.repeat(65)}`, /not a header name/],
  ['cookie:a b', /not a cookie name/],
  ['cookie:a.b', /not a cookie name/],
  ['cookie:"x"', /not a cookie name/],
  ['uri', /not client_ip, header:<Name> or cookie:<name>/],
  [':x', /not client_ip/],
]);

table('swarmgate.sticky', parseSticky, [
  ['cookie', true],
  ['Cookie', true],
  ['off', false],
  ['on', /not cookie or off/],
  ['ip', /not cookie or off/],
]);

table('swarmgate.sticky.cookie', parseCookieName, [
  ['route', 'route'],
  ['SERVERID', 'SERVERID'],
  ['a_b-c', 'a_b-c'],
  ['-x', /not a cookie name/],
  ['a.b', /not a cookie name/],
  ['a;b', /not a cookie name/],
  ['a=b', /not a cookie name/],
  ['', /not a cookie name/],
]);

table('swarmgate.sticky.max_age', parseCookieMaxAge, [
  ['3600', 3600],
  ['30m', 1800],
  ['12h', 43_200],
  ['7d', 604_800],
  ['365d', 31_536_000],
  ['session', null],
  ['0', null],
  ['366d', /outside 1s..365d/],
  ['-1', /not a duration/],
  ['1w', /not a duration/],
]);

table('swarmgate.weight', parseWeight, [
  ['0', 0],
  ['10', 10],
  [' 90 ', 90],
  ['1000', 1000],
  ['1001', /outside 0..1000/],
  ['-1', /not a whole number/],
  ['0.5', /not a whole number/],
  ['ten', /not a whole number/],
]);

table('swarmgate.retry.tries', parseRetryTries, [
  ['1', 1],
  ['2', 2],
  ['24', 24],
  ['0', /outside 1..24/],
  ['25', /outside 1..24/],
  ['two', /not a whole number/],
]);

table('swarmgate.retry.timeout', parseRetryTimeout, [
  ['500ms', 500],
  ['5s', 5000],
  ['5', 5000],
  ['1m', 60_000],
  ['5m', 300_000],
  ['50ms', /outside 100ms..5m/],
  ['6m', /outside 100ms..5m/],
  ['1h', /not a duration/],
  ['fast', /not a duration/],
]);

function service(
  name: string,
  labels: Record<string, string>,
  createdAt = '2026-01-01T00:00:00Z',
): ServiceInfo {
  return {
    id: name,
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

function snapshot(services: readonly ServiceInfo[], tasks: Record<string, readonly string[]>): Snapshot {
  return {
    services: [...services],
    tasks: Object.entries(tasks).flatMap(([serviceId, ips]) =>
      ips.map((ip, index) => ({
        id: `${serviceId}-${index}`,
        serviceId,
        nodeId: 'n1',
        slot: index + 1,
        desiredState: 'running',
        state: 'running',
        stateSince: '2026-01-01T00:00:00Z',
        error: null,
        image: 'example/app:1',
        addresses: [{ networkId: 'swarmgate', networkName: 'swarmgate', ip }],
      })),
    ),
    networks: [],
    nodes: [],
  };
}

function model(services: readonly ServiceInfo[], tasks: Record<string, readonly string[]>): RoutingModel {
  return buildRoutingModel(snapshot(services, tasks), { networks: ['swarmgate'] });
}

function upstreamFor(routing: RoutingModel, host: string): Upstream | undefined {
  const name = routing.servers.find((server) => server.host.value === host)?.locations[0]?.upstream;
  return routing.upstreams.find((upstream) => upstream.name === name);
}

test('bad balancing labels: a Problem naming service, label and reason; the service is left out, others stay', () => {
  const routing = model(
    [
      service('bad', { VIRTUAL_HOST: 'bad.test', 'swarmgate.balance': 'random', 'swarmgate.weight': '1001' }),
      service('good', { VIRTUAL_HOST: 'good.test', 'swarmgate.balance': 'least_conn' }),
    ],
    { bad: ['10.0.0.1'], good: ['10.0.0.2'] },
  );
  assert.deepEqual(
    routing.problems.map((problem) => [problem.service, problem.label, problem.code, problem.severity]),
    [
      ['bad', 'swarmgate.balance', 'INVALID_LABEL', 'error'],
      ['bad', 'swarmgate.weight', 'INVALID_LABEL', 'error'],
    ],
  );
  assert.match(routing.problems[0]?.reason ?? '', /"random" is not one of/);
  assert.deepEqual(
    routing.services.map((routed) => routed.name),
    ['good'],
  );
  assert.equal(upstreamFor(routing, 'good.test')?.balance.method, 'least_conn');
});

test('settings that do nothing are warnings: a key without hash, cookie settings without sticky', () => {
  const routing = model(
    [
      service('web', {
        VIRTUAL_HOST: 'web.test',
        'swarmgate.balance.key': 'header:X-User',
        'swarmgate.sticky.cookie': 'route',
        'swarmgate.sticky.max_age': '1h',
      }),
    ],
    { web: ['10.0.0.1'] },
  );
  assert.deepEqual(
    routing.problems.map((problem) => [problem.label, problem.code, problem.severity]),
    [
      ['swarmgate.balance.key', 'IGNORED_SETTING', 'warning'],
      ['swarmgate.sticky.cookie', 'IGNORED_SETTING', 'warning'],
      ['swarmgate.sticky.max_age', 'IGNORED_SETTING', 'warning'],
    ],
  );
  assert.deepEqual(upstreamFor(routing, 'web.test')?.balance, {
    method: 'round_robin',
    key: null,
    sticky: null,
  });
});

test('hash defaults to the client address; sticky defaults to a cookie named after the service', () => {
  const routing = model(
    [
      service('a', { VIRTUAL_HOST: 'a.test', 'swarmgate.balance': 'hash' }),
      service('b', { VIRTUAL_HOST: 'b.test', 'swarmgate.sticky': 'cookie' }),
      service('c', { VIRTUAL_HOST: 'c.test', 'swarmgate.sticky': 'cookie' }),
    ],
    { a: ['10.0.0.1'], b: ['10.0.0.2'], c: ['10.0.0.3'] },
  );
  assert.deepEqual(upstreamFor(routing, 'a.test')?.balance.key, { kind: 'client_ip' });
  const b = upstreamFor(routing, 'b.test')?.balance.sticky;
  const c = upstreamFor(routing, 'c.test')?.balance.sticky;
  assert.match(b?.cookie ?? '', /^swarmgate_[0-9a-f]{6}$/);
  assert.notEqual(b?.cookie, c?.cookie, 'two sticky services on one host never overwrite each other');
  assert.equal(b?.maxAge, null);
});

test('two sticky services on one host with one cookie name: a warning, both stay routed', () => {
  const routing = model(
    [
      service('app', {
        VIRTUAL_HOST: 'one.test',
        'swarmgate.sticky': 'cookie',
        'swarmgate.sticky.cookie': 'route',
      }),
      service(
        'api',
        {
          VIRTUAL_HOST: 'one.test',
          VIRTUAL_PATH: '/api/',
          'swarmgate.sticky': 'cookie',
          'swarmgate.sticky.cookie': 'route',
        },
        '2026-01-02T00:00:00Z',
      ),
      service('other', {
        VIRTUAL_HOST: 'two.test',
        'swarmgate.sticky': 'cookie',
        'swarmgate.sticky.cookie': 'route',
      }),
    ],
    { app: ['10.0.0.1'], api: ['10.0.0.2'], other: ['10.0.0.3'] },
  );
  assert.deepEqual(
    routing.problems.map((problem) => [problem.service, problem.label, problem.code, problem.severity]),
    [['api', 'swarmgate.sticky.cookie', 'CONFLICT', 'warning']],
  );
  assert.equal(routing.services.length, 3);
});

const stable = (weight: string, extra: Record<string, string> = {}): ServiceInfo =>
  service('web', { VIRTUAL_HOST: 'app.test', 'swarmgate.weight': weight, ...extra });
const canary = (weight: string | null, extra: Record<string, string> = {}): ServiceInfo =>
  service(
    'web-canary',
    { VIRTUAL_HOST: 'app.test', ...(weight === null ? {} : { 'swarmgate.weight': weight }), ...extra },
    '2026-01-02T00:00:00Z',
  );
const TASKS = { web: ['10.0.0.1', '10.0.0.2', '10.0.0.3'], 'web-canary': ['10.0.1.1'] };

test('canary: both weighted share one location; each service splits its weight over its tasks', () => {
  const routing = model([stable('90'), canary('10')], TASKS);
  assert.deepEqual(routing.problems, []);
  const server = routing.servers.find((candidate) => candidate.host.value === 'app.test');
  assert.equal(server?.locations.length, 1, 'one location for the host and path');
  assert.equal(server?.locations[0]?.service, 'web', 'the oldest service owns it');
  const upstream = upstreamFor(routing, 'app.test');
  assert.match(upstream?.name ?? '', /^svc_split_[0-9a-f]{12}$/);
  assert.deepEqual(
    upstream?.servers.map((member) => [member.ip, member.weight]),
    [
      ['10.0.0.1', 30_000],
      ['10.0.0.2', 30_000],
      ['10.0.0.3', 30_000],
      ['10.0.1.1', 10_000],
    ],
  );
  assert.deepEqual(
    routing.services.map((routed) => routed.name),
    ['web', 'web-canary'],
  );
});

test('canary: without the opt-in on both services it stays a CONFLICT', () => {
  for (const [older, newer, hint] of [
    [stable('90'), canary(null), true],
    [service('web', { VIRTUAL_HOST: 'app.test' }), canary('10'), true],
    [service('web', { VIRTUAL_HOST: 'app.test' }), canary(null), false],
  ] as const) {
    const routing = model([older, newer], TASKS);
    assert.equal(routing.problems.length, 1, JSON.stringify(routing.problems));
    const [problem] = routing.problems;
    assert.equal(problem?.service, 'web-canary');
    assert.equal(problem?.code, 'CONFLICT');
    assert.equal(problem?.severity, 'error');
    assert.equal(
      /both services must set swarmgate.weight/.test(problem?.reason ?? ''),
      hint,
      problem?.reason,
    );
    assert.equal(upstreamFor(routing, 'app.test')?.name.startsWith('svc_web_'), true);
  }
});

test('canary: another VIRTUAL_PROTO is a CONFLICT; other settings follow the oldest service, with a warning', () => {
  const proto = model([stable('90'), canary('10', { VIRTUAL_PROTO: 'grpc' })], TASKS);
  assert.equal(proto.problems[0]?.code, 'CONFLICT');
  assert.match(proto.problems[0]?.reason ?? '', /same VIRTUAL_PROTO/);

  const differing = model(
    [stable('90'), canary('10', { 'swarmgate.max-body-size': '0', 'swarmgate.balance': 'least_conn' })],
    TASKS,
  );
  assert.deepEqual(
    differing.problems.map((problem) => [problem.service, problem.label, problem.severity]),
    [['web-canary', 'swarmgate.weight', 'warning']],
  );
  assert.match(differing.problems[0]?.reason ?? '', /proxy and retry settings, balancing settings/);
  assert.equal(upstreamFor(differing, 'app.test')?.balance.method, 'round_robin');
});

test('canary: a regex path may be shared by weighted services (it takes nothing from another)', () => {
  const regex = { VIRTUAL_PATH: '~^/api/' };
  const routing = model([stable('50', regex), canary('50', regex)], TASKS);
  assert.deepEqual(routing.problems, []);
});

test('canary: weight 0 takes a service out of the split; all 0 splits evenly between the services, with a warning', () => {
  const dark = upstreamFor(model([stable('100'), canary('0')], TASKS), 'app.test');
  assert.deepEqual(
    dark?.servers.map((member) => member.ip),
    ['10.0.0.1', '10.0.0.2', '10.0.0.3'],
  );
  const zero = model([stable('0'), canary('0')], TASKS);
  assert.deepEqual(
    upstreamFor(zero, 'app.test')?.servers.map((member) => member.weight),
    [333, 333, 333, 1000],
  );
  assert.equal(zero.problems[0]?.severity, 'warning');
  assert.match(zero.problems[0]?.reason ?? '', /weight 0/);
});

test('new weights change peers.txt only: the same shape, so the edges take them without a reload', () => {
  const render = (routing: RoutingModel): Record<string, string> => ({
    ...renderConfig(routing, { proxy: defaultProxySettings(), generator: 'test' }, createTemplateRenderer()),
  });
  const ninety = render(model([stable('90'), canary('10')], TASKS));
  const half = render(model([stable('50'), canary('50')], TASKS));
  const dark = render(model([stable('100'), canary('0')], TASKS));
  assert.equal(shapeFingerprint(half), shapeFingerprint(ninety));
  assert.equal(shapeFingerprint(dark), shapeFingerprint(ninety));
  assert.notEqual(half[PEERS_FILE], ninety[PEERS_FILE]);
  assert.match(ninety[PEERS_FILE] ?? '', / 10\.0\.0\.1:80@30000 .* 10\.0\.1\.1:80@10000\n/);
  // A method is part of the shape: nginx.conf tells the Lua.
  const hashed = render(
    model(
      [stable('90', { 'swarmgate.balance': 'hash' }), canary('10', { 'swarmgate.balance': 'hash' })],
      TASKS,
    ),
  );
  assert.notEqual(shapeFingerprint(hashed), shapeFingerprint(ninety));
});

test('balancerOptions: nothing for round robin; a Lua table of validated names otherwise', () => {
  const base = { name: 'svc_a', service: 'a', servers: [] };
  assert.equal(
    balancerOptions({ ...base, balance: { method: 'round_robin', key: null, sticky: null } }),
    null,
  );
  assert.equal(
    balancerOptions({
      ...base,
      balance: {
        method: 'hash',
        key: { kind: 'header', name: 'X-User-Id' },
        sticky: { cookie: 'route', maxAge: 3600 },
      },
    }),
    '{ method = "hash", key_var = "http_x_user_id", sticky_var = "cookie_route", cookie = "route", max_age = 3600 }',
  );
  assert.equal(
    balancerOptions({ ...base, balance: { method: 'hash', key: { kind: 'client_ip' }, sticky: null } }),
    '{ method = "hash", key_var = "remote_addr" }',
  );
  // A name that bypassed the grammar is refused, never written into Lua.
  assert.throws(
    () =>
      balancerOptions({
        ...base,
        balance: { method: 'round_robin', key: null, sticky: { cookie: 'x"..os.exit().."', maxAge: null } },
      }),
    (error: unknown) => (error as { code?: string }).code === 'ERR_TEMPLATE',
  );
});

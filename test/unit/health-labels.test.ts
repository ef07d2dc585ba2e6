// Label tables for the active health check labels (issue 15, swarmgate.healthcheck.*): value in, typed field or
// reason out. Then what the model and the render make of them: defaults, warnings for settings that do nothing,
// the Lua table the checker reads, and nothing at all for services without the label. Then the grammar of nginx's
// GET /health answer and the bound on what a report carries.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { defaultProxySettings } from '../../src/config.ts';
import { downForReport, parseTaskHealth } from '../../src/edge/task-health.ts';
import { nameTasksDown } from '../../src/admin/edge-health.ts';
import {
  parseHealthCount,
  parseHealthInterval,
  parseHealthPath,
  parseHealthStatus,
  parseHealthTimeout,
} from '../../src/model/balance-labels.ts';
import { buildRoutingModel } from '../../src/model/routing-model.ts';
import type { RoutingModel } from '../../src/model/routing-model.ts';
import { balancerOptions } from '../../src/render/balancer-options.ts';
import { createTemplateRenderer } from '../../src/render/nunjucks-env.ts';
import { renderConfig } from '../../src/render/render-config.ts';
import { labelledSnapshot } from '../support/labelled-services.ts';
import type { ServiceSpec } from '../support/labelled-services.ts';
import { labelTable as table } from '../support/label-tables.ts';

table('swarmgate.healthcheck.path', parseHealthPath, [
  ['/healthz', '/healthz'],
  [' /status?full=0 ', '/status?full=0'],
  ['/', '/'],
  ['/api/v1/health%20check', '/api/v1/health%20check'],
  ['healthz', /not a path/],
  ['/health z', /not a path/],
  ['/a"..os.exit().."', /not a path/],
  ['/a\\b', /not a path/],
  ["/it's", /not a path/],
  ['/a\r\nHost: evil', /not a path/],
  [`/${'a'.repeat(256)}`, /not a path/],
  ['', /not a path/],
]);

table('swarmgate.healthcheck.interval', parseHealthInterval, [
  ['5s', 5000],
  ['5', 5000],
  ['1500ms', 1500],
  ['1m', 60_000],
  ['1s', 1000],
  ['999ms', /outside 1s\.\.60s/],
  ['61s', /outside/],
  ['0', /outside/],
  ['fast', /not a duration/],
  ['-1s', /not a duration/],
]);

table('swarmgate.healthcheck.timeout', parseHealthTimeout, [
  ['2s', 2000],
  ['300ms', 300],
  ['99ms', /outside 100ms\.\.59s/],
  ['60s', /outside/],
  ['soon', /not a duration/],
]);

table('swarmgate.healthcheck.status', parseHealthStatus, [
  ['200', [[200, 200]]],
  ['2xx', [[200, 299]]],
  [
    '3xx, 200,204',
    [
      [200, 200],
      [204, 204],
      [300, 399],
    ],
  ],
  ['2XX', [[200, 299]]],
  ['600', /not a status/],
  ['099', /not a status/],
  ['6xx', /not a status/],
  ['ok', /not a status/],
  ['', /1 to 8 statuses/],
  ['200,201,202,203,204,205,206,207,208', /1 to 8 statuses/],
]);

table('swarmgate.healthcheck.fails / .passes', parseHealthCount, [
  ['1', 1],
  ['3', 3],
  ['10', 10],
  ['0', /outside 1\.\.10/],
  ['11', /outside/],
  ['two', /not a whole number/],
]);

function model(specs: readonly ServiceSpec[]): RoutingModel {
  return buildRoutingModel(labelledSnapshot(specs, 8080), { networks: ['swarmgate'] });
}

function upstreamOf(routing: RoutingModel, service: string): RoutingModel['upstreams'][number] {
  const upstream = routing.upstreams.find((one) => one.service === service);
  assert.ok(upstream, `an upstream for ${service}`);
  return upstream;
}

test('defaults: on with a path alone (5 s, 2 s, 2xx/3xx, 1 fail, 1 pass); off without it', () => {
  const routing = model([
    {
      name: 'web',
      host: 'web.test',
      ips: ['10.0.0.1'],
      labels: { 'swarmgate.healthcheck.path': '/healthz' },
    },
    { name: 'plain', host: 'plain.test', ips: ['10.0.0.2'] },
  ]);
  assert.deepEqual(routing.problems, []);
  assert.deepEqual(upstreamOf(routing, 'web').health, {
    path: '/healthz',
    intervalMs: 5000,
    timeoutMs: 2000,
    status: [[200, 399]],
    fails: 1,
    passes: 1,
  });
  assert.equal(upstreamOf(routing, 'plain').health, undefined);
});

test('every setting; a short interval halves the default timeout; a timeout not below the interval is warned', () => {
  const routing = model([
    {
      name: 'full',
      host: 'full.test',
      ips: ['10.0.0.1'],
      labels: {
        'swarmgate.healthcheck.path': '/status?deep=1',
        'swarmgate.healthcheck.interval': '10s',
        'swarmgate.healthcheck.timeout': '3s',
        'swarmgate.healthcheck.status': '200,204',
        'swarmgate.healthcheck.fails': '3',
        'swarmgate.healthcheck.passes': '2',
      },
    },
    {
      name: 'quick',
      host: 'quick.test',
      ips: ['10.0.0.2'],
      labels: { 'swarmgate.healthcheck.path': '/h', 'swarmgate.healthcheck.interval': '1s' },
    },
    {
      name: 'slow',
      host: 'slow.test',
      ips: ['10.0.0.3'],
      labels: {
        'swarmgate.healthcheck.path': '/h',
        'swarmgate.healthcheck.interval': '2s',
        'swarmgate.healthcheck.timeout': '5s',
      },
    },
  ]);
  assert.deepEqual(upstreamOf(routing, 'full').health, {
    path: '/status?deep=1',
    intervalMs: 10_000,
    timeoutMs: 3000,
    status: [
      [200, 200],
      [204, 204],
    ],
    fails: 3,
    passes: 2,
  });
  assert.equal(upstreamOf(routing, 'quick').health?.timeoutMs, 500);
  assert.equal(upstreamOf(routing, 'slow').health?.timeoutMs, 1000);
  assert.deepEqual(
    routing.problems.map((problem) => [problem.service, problem.label, problem.severity]),
    [['slow', 'swarmgate.healthcheck.timeout', 'warning']],
  );
  assert.match(routing.problems[0]?.reason ?? '', /not below the interval/);
});

test('settings without a path, and checks of a gRPC service, are warnings; a bad value leaves the service out', () => {
  const routing = model([
    { name: 'nopath', host: 'a.test', ips: ['10.0.0.1'], labels: { 'swarmgate.healthcheck.interval': '2s' } },
    {
      name: 'grpc',
      host: 'b.test',
      ips: ['10.0.0.2'],
      labels: { VIRTUAL_PROTO: 'grpc', 'swarmgate.healthcheck.path': '/healthz' },
    },
    { name: 'bad', host: 'c.test', ips: ['10.0.0.3'], labels: { 'swarmgate.healthcheck.path': 'healthz' } },
  ]);
  assert.deepEqual(
    routing.problems.map((problem) => [problem.service, problem.label, problem.code, problem.severity]),
    [
      ['bad', 'swarmgate.healthcheck.path', 'INVALID_LABEL', 'error'],
      ['grpc', 'swarmgate.healthcheck.path', 'IGNORED_SETTING', 'warning'],
      ['nopath', 'swarmgate.healthcheck.interval', 'IGNORED_SETTING', 'warning'],
    ],
  );
  assert.equal(upstreamOf(routing, 'nopath').health, undefined);
  assert.equal(upstreamOf(routing, 'grpc').health, undefined);
  assert.deepEqual(routing.services.map((service) => service.name).sort(), ['grpc', 'nopath']);
});

const templates = createTemplateRenderer();

test('render: the checker runs only in configs with checks; only routed upstreams get them, with the Host to send', () => {
  const render = (routing: RoutingModel): string =>
    renderConfig(routing, { proxy: defaultProxySettings(), generator: 'test' }, templates)['nginx.conf'] ??
    '';
  const plain = render(model([{ name: 'plain', host: 'plain.test', ips: ['10.0.0.2'] }]));
  for (const absent of ['swarmgate_health', 'init_worker_by_lua', 'location = /health']) {
    assert.ok(!plain.includes(absent), `a config without checks has no ${absent}`);
  }
  const routing = model([
    {
      name: 'web',
      host: 'web.test',
      ips: ['10.0.0.1'],
      labels: { 'swarmgate.healthcheck.path': '/healthz' },
    },
    { name: 'plain', host: 'plain.test', ips: ['10.0.0.2'] },
  ]);
  const conf = render(routing);
  for (const present of [
    'lua_shared_dict swarmgate_health 1m;',
    'require("swarmgate.health").start()',
    'location = /health',
  ]) {
    assert.ok(conf.includes(present), `a config with checks has ${present}`);
  }
  const web = upstreamOf(routing, 'web');
  assert.ok(
    conf.includes(
      `swarmgate.configure("${web.name}", { health = { path = "/healthz", host = "web.test", tls = false, interval_ms = 5000, timeout_ms = 2000, status = { 200, 399 }, fails = 1, passes = 1 } })`,
    ),
    conf
      .split('\n')
      .filter((line) => line.includes('configure'))
      .join('\n'),
  );
  assert.ok(!conf.includes(`swarmgate.configure("${upstreamOf(routing, 'plain').name}"`));
  // No location routes to it (no probe target): no checks, and round robin needs no options at all.
  assert.equal(balancerOptions(web, null), null);
  // A value that bypassed the grammar is refused, never written into Lua.
  assert.throws(
    () =>
      balancerOptions(
        { ...web, health: { ...web.health!, path: '/"..os.exit().."' } },
        { host: null, tls: false },
      ),
    (error: unknown) => (error as { code?: string }).code === 'ERR_TEMPLATE',
  );
});

test('render: a host with an underscore (a DNS label the model accepts) gets its checks, not a failed render', () => {
  // Found by the label fuzzer: the Lua table's host grammar refused "_", so renderConfig threw for every service.
  const routing = model([
    {
      name: 'web',
      host: 'my_app.example.test',
      ips: ['10.0.0.1'],
      labels: { 'swarmgate.healthcheck.path': '/healthz' },
    },
  ]);
  const conf =
    renderConfig(routing, { proxy: defaultProxySettings(), generator: 'test' }, templates)['nginx.conf'] ??
    '';
  assert.ok(conf.includes('host = "my_app.example.test"'));
});

test("GET /health's grammar: lines that do not fit are skipped; a report carries at most 128 down tasks", () => {
  const text =
    '10.0.0.1:80\tsvc_web\tup\t1790000000.000\tstatus 200\n' +
    '10.0.0.2:80\tsvc_web\tdown\t1790000001.250\tstatus line: timeout\n' +
    '10.0.0.3:80\tsvc_web\tnew\t1790000002.000\t\n' +
    'junk\n10.0.0.4:80\tsvc web\tdown\t1\tx\n10.0.0.5:80\tsvc_web\tmaybe\t1\tx\n10.0.0.6:80\tsvc_web\tdown\tsoon\tx\n';
  assert.deepEqual(parseTaskHealth(text), [
    {
      address: '10.0.0.1:80',
      upstream: 'svc_web',
      state: 'up',
      since: new Date(1_790_000_000_000).toISOString(),
      reason: 'status 200',
    },
    {
      address: '10.0.0.2:80',
      upstream: 'svc_web',
      state: 'down',
      since: new Date(1_790_000_001_250).toISOString(),
      reason: 'status line: timeout',
    },
    {
      address: '10.0.0.3:80',
      upstream: 'svc_web',
      state: 'new',
      since: new Date(1_790_000_002_000).toISOString(),
      reason: '',
    },
  ]);
  const many = Array.from(
    { length: 200 },
    (_, index) => `10.0.${Math.floor(index / 100)}.${index % 100}:80\tsvc_web\tdown\t1\tstatus 503\n`,
  ).join('');
  const report = downForReport(parseTaskHealth(many));
  assert.equal(report.down.length, 128);
  assert.equal(report.omitted, 72);
  assert.deepEqual(Object.keys(report.down[0] ?? {}), ['address', 'upstream', 'since', 'reason']);
});

test('the status names down tasks by the current model; an address it no longer routes is named null', () => {
  const routing = model([{ name: 'web', host: 'web.test', ips: ['10.0.0.1', '10.0.0.2'] }]);
  const web = upstreamOf(routing, 'web');
  const [edge] = nameTasksDown(
    [
      {
        edge: 'edge-1',
        tasksDown: [
          {
            address: '10.0.0.2:8080',
            upstream: web.name,
            since: '2026-11-25T00:00:00.000Z',
            reason: 'status 500',
          },
          {
            address: '10.9.9.9:8080',
            upstream: 'svc_gone',
            since: '2026-11-25T00:00:00.000Z',
            reason: 'status 500',
          },
        ],
      },
    ],
    routing,
  );
  assert.deepEqual(
    edge?.tasksDown.map((down) => [down.service, down.task]),
    [
      ['web', 'web-t1'],
      [null, null],
    ],
  );
  assert.equal(edge?.tasksDownOmitted, 0);
});

// The status page's pure parts: rates and p95 from two scrapes of every edge, the edge's parsing of nginx's
// counters, the exposition's bounded task labels, sessions and cookies, and the routed-or-not view.
import assert from 'node:assert/strict';
import type { IncomingMessage } from 'node:http';
import { test } from 'node:test';
import { parseEdgeCounters, quantile, trafficBetween } from '../../src/admin/status-page/edge-traffic.ts';
import { StatusSessions, tokenMatches } from '../../src/admin/status-page/sessions.ts';
import { buildStatusView } from '../../src/admin/status-page/status-view.ts';
import { edgeMetricsText, membersOf, parseNginxTraffic } from '../../src/edge/edge-metrics.ts';
import { buildRoutingModel } from '../../src/model/routing-model.ts';
import { FakeClock } from '../support/fake-clock.ts';
import { oneServiceSnapshot } from '../support/one-service.ts';

const edgeText = (requests: number, errors: number, buckets: readonly number[]): string =>
  [
    `swarmgate_edge_requests_total{code="2xx",host="a.test",service="web"} ${requests - errors}`,
    `swarmgate_edge_requests_total{code="5xx",host="a.test",service="web"} ${errors}`,
    ...['0.1', '0.25', '+Inf'].map(
      (le, index) =>
        `swarmgate_edge_request_duration_seconds_bucket{host="a.test",service="web",le="${le}"} ${buckets[index]}`,
    ),
  ].join('\n');

test('quantile interpolates inside the bucket as histogram_quantile does', () => {
  assert.equal(quantile([0.1, 0.25, Infinity], [90, 100, 100], 0.95), 0.175);
  assert.equal(quantile([0.1, 0.25, Infinity], [50, 100, 100], 0.5), 0.1);
  assert.equal(quantile([0.1, Infinity], [0, 10], 0.95), 0.1, '+Inf answers the highest finite bound');
  assert.equal(quantile([0.1, Infinity], [0, 0], 0.95), null);
});

test('rates sum over edges, count a counter reset as a restart, and give the error share and p95', () => {
  const before = new Map([
    ['10.0.0.1:9145', parseEdgeCounters(edgeText(100, 1, [90, 100, 100]))],
    ['10.0.0.2:9145', parseEdgeCounters(edgeText(500, 0, [500, 500, 500]))],
  ]);
  const after = new Map([
    // +100 requests, 5 of them 5xx; 90 under 0.1 s, 10 between 0.1 and 0.25 s.
    ['10.0.0.1:9145', parseEdgeCounters(edgeText(200, 6, [180, 200, 200]))],
    // Restarted: 100 since, all fast, none failed.
    ['10.0.0.2:9145', parseEdgeCounters(edgeText(100, 0, [100, 100, 100]))],
    // New edge: no previous scrape, not counted yet.
    ['10.0.0.3:9145', parseEdgeCounters(edgeText(1000, 1000, [0, 0, 1000]))],
  ]);
  const point = trafficBetween(before, after, 10, 5000).get('a.test\tweb');
  assert.ok(point);
  assert.equal(point.rps, 20);
  assert.equal(point.errorRate, 5 / 200);
  // 200 observations: 190 under 0.1 s, so rank 190 falls at the top of the first bucket.
  assert.equal(point.p95Seconds, 0.1);
});

test('the edge parses only well-formed lines of nginx counters and keeps per-task series of current members', () => {
  const traffic = parseNginxTraffic(
    [
      'req\ta.test\tweb\t2xx\t3',
      'req\ta.test\tweb\t5xx',
      'ups\tweb\t10.0.0.5:80\t2xx\t3',
      'ups\tweb\t10.0.0.9:80\t2xx\t7',
      'udur\tweb\t10.0.0.5:80\t1\t3',
      'udur\tweb\t10.0.0.5:80\tsum\t0.003',
      'bogus\tline\t1',
      'buckets\t0.1,1',
    ].join('\n'),
  );
  assert.deepEqual(traffic.buckets, [0.1, 1]);
  assert.equal(traffic.entries.length, 5, 'the short req line and the unknown kind are skipped');
  const members = membersOf(`generation ${'a'.repeat(64)}\nupstream svc_web 10.0.0.5:80\n`);
  const text = edgeMetricsText(
    traffic,
    members,
    {
      edge: 'e1',
      node: null,
      applied: null,
      lastContact: null,
      reloads: 0,
      peerUpdates: 0,
      applyFailing: false,
      stuckConnectionsCut: 2,
    },
    0,
  );
  assert.match(
    text,
    /swarmgate_edge_upstream_responses_total\{code="2xx",service="web",task="10\.0\.0\.5:80"\} 3/,
  );
  assert.doesNotMatch(text, /10\.0\.0\.9/, 'a task no longer routed leaves the exposition');
  assert.match(text, /\nswarmgate_edge_stuck_connections_cut_total 2\n/);
  assert.match(
    text,
    /swarmgate_edge_upstream_response_duration_seconds_bucket\{service="web",task="10\.0\.0\.5:80",le="0\.1"\} 3/,
  );
  assert.match(
    text,
    /swarmgate_edge_upstream_response_duration_seconds_count\{service="web",task="10\.0\.0\.5:80"\} 3/,
  );
});

const request = (cookie?: string): IncomingMessage =>
  ({ headers: cookie ? { cookie } : {} }) as IncomingMessage;

test('sessions: HttpOnly, Secure, SameSite=Strict cookies that expire, end, and never match a guess', () => {
  const clock = new FakeClock(0);
  const sessions = new StatusSessions(clock, 60_000);
  const header = sessions.create();
  assert.match(
    header,
    /^swarmgate_session=[A-Za-z0-9_-]{43}; Path=\/status; Max-Age=60; HttpOnly; Secure; SameSite=Strict$/,
  );
  const cookie = header.split(';')[0] ?? '';
  assert.equal(sessions.valid(request(`other=1; ${cookie}`)), true);
  assert.equal(sessions.valid(request(`swarmgate_session=${'A'.repeat(43)}`)), false);
  assert.equal(sessions.valid(request()), false);
  clock.advance(60_001);
  assert.equal(sessions.valid(request(cookie)), false, 'expired');
  const second = sessions.create().split(';')[0] ?? '';
  assert.match(sessions.end(request(second)), /Max-Age=0/);
  assert.equal(sessions.valid(request(second)), false, 'ended');
  assert.equal(tokenMatches('secret', 'secret'), true);
  assert.equal(tokenMatches('', ''), false, 'an empty form field is never the token');
  assert.equal(tokenMatches('secreT', 'secret'), false);
});

test('the view says why a route is not served: a bad label, or no running task', () => {
  const snapshot = oneServiceSnapshot('a.test', ['10.0.0.5']);
  const broken = {
    ...snapshot.services[0]!,
    id: 'bad',
    name: 'bad',
    labels: { VIRTUAL_HOST: 'no spaces allowed' },
  };
  const idle = { ...snapshot.services[0]!, id: 'idle', name: 'idle', labels: { VIRTUAL_HOST: 'idle.test' } };
  const full = { ...snapshot, services: [...snapshot.services, broken, idle], nodes: [] };
  const model = buildRoutingModel(full, { networks: ['swarmgate'] });
  const view = buildStatusView({
    now: 0,
    version: 'test',
    snapshot: full,
    model,
    current: null,
    edges: [],
    certificates: [],
    traffic: null,
    edgeStaleMs: 90_000,
  });
  const byName = new Map(view.routes.map((route) => [route.service, route]));
  assert.equal(byName.get('web')?.reason, null);
  assert.deepEqual(byName.get('web')?.tasksByNode, [{ node: 'n1', tasks: 1 }]);
  assert.match(byName.get('bad')?.reason ?? '', /^VIRTUAL_HOST: /);
  assert.equal(byName.get('bad')?.routed, false);
  assert.match(byName.get('idle')?.reason ?? '', /no running task/);
});

test('the view names an edge’s node by hostname, as the routes do, and keeps an ID it does not know', () => {
  const snapshot = oneServiceSnapshot('a.test', ['10.0.0.5']);
  const withNodes = {
    ...snapshot,
    nodes: [{ id: 'n1', hostname: 'worker-1', role: 'worker', state: 'ready', availability: 'active' }],
  };
  const edge = (name: string, node: string | null) => ({
    edge: name,
    node,
    applied: null,
    rejected: null,
    reloads: 0,
    peerUpdates: 0,
    lastContact: new Date(0).toISOString(),
    inSync: false,
  });
  const view = buildStatusView({
    now: 0,
    version: 'test',
    snapshot: withNodes,
    model: buildRoutingModel(withNodes, { networks: ['swarmgate'] }),
    current: null,
    edges: [edge('e1', 'n1'), edge('e2', 'gone-node-id'), edge('e3', null)],
    certificates: [],
    traffic: null,
    edgeStaleMs: 90_000,
  });
  assert.deepEqual(
    view.edges.map((entry) => entry.node),
    ['worker-1', 'gone-node-id', null],
  );
  assert.deepEqual(view.routes[0]?.tasksByNode, [{ node: 'worker-1', tasks: 1 }]);
});

// Traffic metrics counted by lua/swarmgate/metrics.lua in a real nginx, read by the agent's metrics endpoint
// (src/edge/edge-metrics.ts): after a known sequence of requests (successes, 4xx and 5xx from the task, a slow
// answer, an unknown host, and retries off a member that refuses connections) the counters and histogram buckets
// are exactly what the sequence implies; a task that leaves the peers leaves the exposition.
import assert from 'node:assert/strict';
import { mkdtemp, readFile } from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import type { TestContext } from 'node:test';
import { startEdgeMetricsServer } from '../../src/edge/edge-metrics.ts';
import type { createNginxProcess } from '../../src/edge/nginx-process.ts';
import { createLogger } from '../../src/logger.ts';
import { createTemplateRenderer } from '../../src/render/nunjucks-env.ts';
import { parsePeers } from '../../src/render/peers-text.ts';
import { PEERS_FILE } from '../../src/render/render-config.ts';
import type { BundleFiles } from '../../src/render/render-config.ts';
import { freePort, loopbackBundle, loopbackSetup, startBundleNginx } from '../support/loopback-nginx.ts';
import type { LoopbackSetup } from '../support/loopback-nginx.ts';
import { waitUntil } from '../support/wait.ts';

const HOST = 'app.test';

/** A task: 200 on /, 500 on /fail, 404 on /missing, 200 after 400 ms on /slow. */
async function startTask(t: test.TestContext, ip: string, port: number): Promise<void> {
  const server = http.createServer((req, res) => {
    if (req.url === '/fail') res.writeHead(500).end('failed');
    else if (req.url === '/missing') res.writeHead(404).end('missing');
    else if (req.url === '/slow') setTimeout(() => res.end('slow'), 400);
    else res.end(ip);
  });
  await new Promise<void>((resolve) => server.listen(port, ip, () => resolve()));
  t.after(
    () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  );
}

function request(port: number, host: string, target: string): Promise<number> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path: target, headers: { host }, agent: false }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      })
      .on('error', reject);
  });
}

function scrape(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path: '/metrics', agent: false }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (text += chunk));
        res.on('end', () => resolve(text));
      })
      .on('error', reject);
  });
}

/** The value of one sample, by its exact name and label text; undefined when absent. */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((candidate) => candidate.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

function total(text: string, name: string): number {
  return text
    .split('\n')
    .filter((line) => line.startsWith(`${name}{`) || line.startsWith(`${name} `))
    .reduce((sum, line) => sum + Number(line.slice(line.lastIndexOf(' ') + 1)), 0);
}

/** The bundle applied as the agent does, nginx started on it, and the agent's metrics server in front of it. */
async function startMeteredEdge(
  t: TestContext,
  stateDir: string,
  setup: LoopbackSetup,
  files: BundleFiles,
): Promise<{
  metrics: Awaited<ReturnType<typeof startEdgeMetricsServer>>;
  nginx: ReturnType<typeof createNginxProcess>;
  fingerprint: string;
}> {
  const { nginx, fingerprint } = await startBundleNginx(t, stateDir, setup, files);
  const metrics = await startEdgeMetricsServer({
    port: 0,
    host: '127.0.0.1',
    socketPath: setup.proxy.peersSocket,
    now: () => Date.now(),
    logger: createLogger('silent'),
    agent: () => ({
      edge: 'edge-1',
      node: 'node-1',
      applied: { version: 1, fingerprint },
      lastContact: null,
      reloads: 0,
      peerUpdates: 0,
      applyFailing: false,
      stuckConnectionsCut: 0,
    }),
  });
  t.after(() => metrics.close());
  return { metrics, nginx, fingerprint };
}

test('counts, buckets, upstream failures and retries after a known sequence of requests', async (t) => {
  const backendPort = await freePort();
  await startTask(t, '127.0.0.2', backendPort);
  const stateDir = await mkdtemp(path.join(os.tmpdir(), 'swarmgate-metrics-'));
  // One worker: the round robin and the counts are one worker's. Every response's task is read (no sampling).
  const setup = await loopbackSetup(stateDir, { workerProcesses: '1', trafficTaskSample: 1 });
  const files = loopbackBundle(setup, createTemplateRenderer(), HOST, ['127.0.0.2'], backendPort);
  const { metrics, nginx } = await startMeteredEdge(t, stateDir, setup, files);
  const parsed = parsePeers(files[PEERS_FILE] ?? '');
  assert.ok(parsed.ok);
  const upstream = parsed.peers.upstreams[0]?.name ?? '';
  const peersFor = (ips: readonly string[]): string =>
    `generation ${parsed.peers.generation}\nupstream ${upstream}${ips.map((ip) => ` ${ip}:${backendPort}`).join('')}\n`;
  const task2 = `127.0.0.2:${backendPort}`;
  const task4 = `127.0.0.4:${backendPort}`;
  const web = `host="${HOST}",service="web"`;

  // Phase 1: one healthy task. 5 fast 200s, one slow 200, two 500s, one 404, and one unknown host (503 from nginx).
  const statuses: number[] = [];
  for (const target of ['/', '/', '/', '/', '/', '/slow', '/fail', '/fail', '/missing']) {
    statuses.push(await request(setup.listenPort, HOST, target));
  }
  statuses.push(await request(setup.listenPort, 'unknown.test', '/'));
  assert.deepEqual(statuses, [200, 200, 200, 200, 200, 200, 500, 500, 404, 503]);

  let text = '';
  await waitUntil('all 10 requests counted', async () => {
    text = await scrape(metrics.port);
    return total(text, 'swarmgate_edge_requests_total') === 10;
  });
  assert.equal(sample(text, `swarmgate_edge_requests_total{code="2xx",${web}}`), 6);
  assert.equal(sample(text, `swarmgate_edge_requests_total{code="5xx",${web}}`), 2);
  assert.equal(sample(text, `swarmgate_edge_requests_total{code="4xx",${web}}`), 1);
  // The unknown host is counted under the default server's name, never under the Host the client sent.
  assert.equal(sample(text, `swarmgate_edge_requests_total{code="5xx",host="_",service=""}`), 1);
  assert.ok(!text.includes('unknown.test'), 'a client-sent host never becomes a label');
  // Histogram: 8 fast answers under 0.25 s, the slow one (400 ms) only from the 0.5 s bucket on. (Wide margins: a
  // stall of a busy machine must not move a fast answer out of its bucket.)
  assert.equal(sample(text, `swarmgate_edge_request_duration_seconds_bucket{${web},le="0.25"}`), 8);
  assert.equal(sample(text, `swarmgate_edge_request_duration_seconds_bucket{${web},le="0.5"}`), 9);
  assert.equal(sample(text, `swarmgate_edge_request_duration_seconds_bucket{${web},le="+Inf"}`), 9);
  assert.equal(sample(text, `swarmgate_edge_request_duration_seconds_count{${web}}`), 9);
  const sum = sample(text, `swarmgate_edge_request_duration_seconds_sum{${web}}`) ?? 0;
  assert.ok(sum >= 0.4 && sum < 1.5, `sum ${sum}`);
  // Per task: the task's own answers by class, and its response time.
  assert.equal(
    sample(text, `swarmgate_edge_upstream_responses_total{code="2xx",service="web",task="${task2}"}`),
    6,
  );
  assert.equal(
    sample(text, `swarmgate_edge_upstream_responses_total{code="5xx",service="web",task="${task2}"}`),
    2,
  );
  assert.equal(
    sample(text, `swarmgate_edge_upstream_responses_total{code="4xx",service="web",task="${task2}"}`),
    1,
  );
  assert.equal(
    sample(
      text,
      `swarmgate_edge_upstream_response_duration_seconds_bucket{service="web",task="${task2}",le="0.25"}`,
    ),
    8,
  );
  assert.equal(
    sample(text, `swarmgate_edge_upstream_response_duration_seconds_count{service="web",task="${task2}"}`),
    9,
  );
  assert.equal(sample(text, 'swarmgate_edge_requests_by_protocol_total{protocol="HTTP/1.1"}'), 10);
  assert.ok((sample(text, `swarmgate_edge_received_bytes_total{${web}}`) ?? 0) > 9 * 30);
  assert.ok((sample(text, `swarmgate_edge_sent_bytes_total{${web}}`) ?? 0) > 9 * 100);
  assert.ok((sample(text, 'swarmgate_edge_connections{state="active"}') ?? 0) >= 1);
  assert.equal(total(text, 'swarmgate_edge_upstream_retries_total'), 0);
  assert.equal(sample(text, 'swarmgate_edge_nginx_metrics_up'), 1);

  // Phase 2: a member that refuses connections joins. Every request is still answered by 127.0.0.2; each refusal
  // is one failure of 127.0.0.4 and one retry, as many as nginx's error log shows.
  assert.equal(
    await nginx.updatePeers(peersFor(['127.0.0.4', '127.0.0.2']), AbortSignal.timeout(5000)),
    true,
  );
  const phase2: number[] = [];
  for (let i = 0; i < 20; i++) {
    phase2.push(await request(setup.listenPort, HOST, '/'));
    // Spaced past the balancer's first skip (0.1 s), so the refused member is tried more than once.
    if (i % 5 === 4) await new Promise((resolve) => setTimeout(resolve, 120));
  }
  assert.ok(
    phase2.every((status) => status === 200),
    phase2.join(','),
  );
  await waitUntil('all 30 requests counted', async () => {
    text = await scrape(metrics.port);
    return total(text, 'swarmgate_edge_requests_total') === 30;
  });
  const log = await readFile(setup.errorLog, 'utf8');
  const refusals = log
    .split('\n')
    .filter((line) => line.includes('Connection refused') && line.includes(task4)).length;
  assert.ok(refusals >= 1, 'the refused member was tried');
  assert.equal(
    sample(text, `swarmgate_edge_upstream_failures_total{kind="error",service="web",task="${task4}"}`),
    refusals,
  );
  assert.equal(sample(text, 'swarmgate_edge_upstream_retries_total{service="web"}'), refusals);
  assert.equal(
    sample(text, `swarmgate_edge_upstream_responses_total{code="2xx",service="web",task="${task2}"}`),
    26,
  );
  assert.equal(sample(text, `swarmgate_edge_requests_total{code="2xx",${web}}`), 26);

  // Phase 3: the refused member leaves the peers; its series leave the exposition (bounded per-task labels).
  assert.equal(await nginx.updatePeers(peersFor(['127.0.0.2']), AbortSignal.timeout(5000)), true);
  text = await scrape(metrics.port);
  assert.ok(!text.includes(task4), 'no series for a task the edge no longer routes to');
  assert.equal(
    sample(text, `swarmgate_edge_upstream_responses_total{code="2xx",service="web",task="${task2}"}`),
    26,
  );
});

test('sampled task counts: every request counted per route, tasks read at random and weighted', async (t) => {
  const backendPort = await freePort();
  await startTask(t, '127.0.0.2', backendPort);
  await startTask(t, '127.0.0.3', backendPort);
  const stateDir = await mkdtemp(path.join(os.tmpdir(), 'swarmgate-metrics-sampled-'));
  // One in six responses is read. One worker alternates the two tasks, so a sample of every sixth request would
  // see only one of them: the draw must be random.
  const setup = await loopbackSetup(stateDir, { workerProcesses: '1', trafficTaskSample: 6 });
  const files = loopbackBundle(
    setup,
    createTemplateRenderer(),
    HOST,
    ['127.0.0.2', '127.0.0.3'],
    backendPort,
  );
  const { metrics } = await startMeteredEdge(t, stateDir, setup, files);
  const requests = 600;
  for (let i = 0; i < requests; i++) assert.equal(await request(setup.listenPort, HOST, '/'), 200);

  let text = '';
  await waitUntil(`all ${requests} requests counted`, async () => {
    text = await scrape(metrics.port);
    return total(text, 'swarmgate_edge_requests_total') === requests;
  });
  assert.equal(
    sample(text, `swarmgate_edge_requests_total{code="2xx",host="${HOST}",service="web"}`),
    requests,
  );
  for (const ip of ['127.0.0.2', '127.0.0.3']) {
    const task = `${ip}:${backendPort}`;
    const responses =
      sample(text, `swarmgate_edge_upstream_responses_total{code="2xx",service="web",task="${task}"}`) ?? 0;
    // Each task answered 300; its estimate is 6 x Binomial(300, 1/6): 300 +- 39. 4.6 deviations either way.
    assert.ok(responses >= 120 && responses <= 480, `${task}: ${responses}`);
    assert.equal(responses % 6, 0, 'each read response stands for six');
    assert.equal(
      sample(text, `swarmgate_edge_upstream_response_duration_seconds_count{service="web",task="${task}"}`),
      responses,
    );
  }
});

test('with SWARMGATE_TRAFFIC_METRICS=false nginx serves, counts nothing and the metrics port says so', async (t) => {
  const backendPort = await freePort();
  await startTask(t, '127.0.0.2', backendPort);
  const stateDir = await mkdtemp(path.join(os.tmpdir(), 'swarmgate-metrics-off-'));
  const setup = await loopbackSetup(stateDir, { workerProcesses: '1', trafficMetrics: false });
  const files = loopbackBundle(setup, createTemplateRenderer(), HOST, ['127.0.0.2'], backendPort);
  const conf = files['nginx.conf'] ?? '';
  // Off means off: no Lua runs per request and no counter memory is set aside.
  assert.doesNotMatch(conf, /log_by_lua|swarmgate_metrics|swarmgate_service/);
  const { metrics } = await startMeteredEdge(t, stateDir, setup, files);

  const statuses: number[] = [];
  for (const target of ['/', '/fail', '/missing'])
    statuses.push(await request(setup.listenPort, HOST, target));
  statuses.push(await request(setup.listenPort, 'unknown.test', '/'));
  assert.deepEqual(statuses, [200, 500, 404, 503]);

  const text = await scrape(metrics.port);
  assert.equal(
    sample(text, 'swarmgate_edge_nginx_metrics_up'),
    1,
    'nginx answered: counting is off, not broken',
  );
  assert.equal(sample(text, 'swarmgate_edge_traffic_counting'), 0);
  assert.equal(sample(text, 'swarmgate_edge_config_version'), 1);
  // nginx's connection gauges stay (they cost nothing per request): at least the agent's own read is active.
  assert.ok((sample(text, 'swarmgate_edge_connections{state="active"}') ?? 0) >= 1);
  for (const name of [
    'swarmgate_edge_requests_total',
    'swarmgate_edge_request_duration_seconds_count',
    'swarmgate_edge_upstream_responses_total',
    'swarmgate_edge_requests_by_protocol_total',
  ]) {
    assert.ok(!text.includes(`${name}{`) && !text.includes(`${name} `), `${name} is not exposed`);
  }
});

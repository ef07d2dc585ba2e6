// Active health checks (issue 15, swarmgate.healthcheck.*) in a real nginx with the Lua balancer and checker
// (lua/swarmgate/health.lua) on loopback, configured from labels through the model and the template as in
// production. Each backend's port keeps accepting connections while its app answers 500 or hangs: only the health
// checks can tell, so without them the failing task keeps getting its share of the requests.
import assert from 'node:assert/strict';
import { chmod, mkdtemp } from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { localSocketGet } from '../../src/edge/edge-metrics.ts';
import { parseTaskHealth } from '../../src/edge/task-health.ts';
import type { TaskHealth } from '../../src/edge/task-health.ts';
import type { NginxProcess } from '../../src/edge/nginx-process.ts';
import { buildRoutingModel } from '../../src/model/routing-model.ts';
import type { RoutingModel } from '../../src/model/routing-model.ts';
import { createTemplateRenderer } from '../../src/render/nunjucks-env.ts';
import { parsePeers } from '../../src/render/peers-text.ts';
import { PEERS_FILE, renderConfig } from '../../src/render/render-config.ts';
import { labelledSnapshot } from '../support/labelled-services.ts';
import type { ServiceSpec } from '../support/labelled-services.ts';
import {
  freePort,
  loopbackConf,
  loopbackSetup,
  REPO_LUA_DIR,
  withConf,
  workerPids,
  startBundleNginx,
} from '../support/loopback-nginx.ts';
import type { LoopbackSetup } from '../support/loopback-nginx.ts';
import { waitUntil } from '../support/wait.ts';

const templates = createTemplateRenderer();
const INTERVAL_MS = 1000;

interface Edge {
  readonly setup: LoopbackSetup;
  readonly nginx: NginxProcess;
  readonly model: RoutingModel;
  readonly generation: string;
  get(host: string): Promise<{ status: number; body: string }>;
  /** GET /health on the local socket, parsed. */
  health(): Promise<TaskHealth[]>;
}

/** Two workers: the checker is one of them, and the other must see what it found. */
async function startEdge(t: test.TestContext, specs: readonly ServiceSpec[], port: number): Promise<Edge> {
  const stateDir = await mkdtemp(path.join(os.tmpdir(), 'swarmgate-health-'));
  await chmod(stateDir, 0o755);
  const setup = await loopbackSetup(stateDir, { workerProcesses: '2' });
  const model = buildRoutingModel(labelledSnapshot(specs, port), { networks: ['swarmgate'] });
  assert.deepEqual(
    model.problems.filter((problem) => problem.severity === 'error'),
    [],
  );
  const rendered = renderConfig(
    model,
    { proxy: setup.proxy, generator: 'test', luaDir: REPO_LUA_DIR },
    templates,
  );
  const files = withConf(rendered, loopbackConf(setup, rendered['nginx.conf'] ?? ''));
  const { nginx } = await startBundleNginx(t, stateDir, setup, files);
  const parsed = parsePeers(files[PEERS_FILE] ?? '');
  assert.ok(parsed.ok);
  return {
    setup,
    nginx,
    model,
    generation: parsed.peers.generation,
    get: (host) =>
      new Promise((resolve, reject) => {
        http
          .get(
            { host: '127.0.0.1', port: setup.listenPort, path: '/', headers: { host }, agent: false },
            (res) => {
              let body = '';
              res.setEncoding('utf8');
              res.on('data', (chunk: string) => (body += chunk));
              res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
            },
          )
          .on('error', reject);
      }),
    async health() {
      const text = await localSocketGet(setup.proxy.peersSocket, '/health', AbortSignal.timeout(5000));
      assert.notEqual(text, null, 'nginx answers GET /health');
      return parseTaskHealth(text ?? '');
    },
  };
}

type Mode = 'ok' | 'fail' | 'hang';

/** A task whose port always accepts: its app answers /healthz by `mode`, and every other path with its address. */
interface Task {
  readonly ip: string;
  mode: Mode;
  probes: number;
  requests: number;
}

async function startTasks(t: test.TestContext, ips: readonly string[], port: number): Promise<Task[]> {
  return Promise.all(
    ips.map(async (ip) => {
      const task: Task = { ip, mode: 'ok', probes: 0, requests: 0 };
      const server = http.createServer((req, res) => {
        if (req.url === '/healthz') {
          task.probes++;
          if (task.mode === 'hang') return; // never answers; the probe's timeout ends it
          res.writeHead(task.mode === 'ok' ? 200 : 500).end();
          return;
        }
        task.requests++;
        res.end(ip);
      });
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, ip, () => resolve());
      });
      t.after(
        () =>
          new Promise<void>((resolve) => {
            server.close(() => resolve());
            server.closeAllConnections();
          }),
      );
      return task;
    }),
  );
}

const LABELS = {
  'swarmgate.healthcheck.path': '/healthz',
  'swarmgate.healthcheck.interval': '1s',
  'swarmgate.healthcheck.timeout': '300ms',
};

async function spread(edge: Edge, host: string, requests: number): Promise<Record<string, number>> {
  const counts: Record<string, number> = {};
  for (let index = 0; index < requests; index++) {
    const answer = await edge.get(host);
    assert.equal(answer.status, 200, `request ${index}: ${answer.status} ${answer.body}`);
    counts[answer.body] = (counts[answer.body] ?? 0) + 1;
  }
  return counts;
}

function stateOf(health: readonly TaskHealth[], ip: string, port: number): string | undefined {
  return health.find((task) => task.address === `${ip}:${port}`)?.state;
}

for (const failure of ['fail', 'hang'] as const) {
  test(`a task whose app ${failure === 'fail' ? 'answers 500' : 'hangs'} while its port accepts is out within two intervals, back when it recovers`, async (t) => {
    const port = await freePort();
    const ips = ['127.0.0.2', '127.0.0.3', '127.0.0.4'];
    const tasks = await startTasks(t, ips, port);
    const host = 'health.test';
    const edge = await startEdge(t, [{ name: 'web', host, ips, labels: LABELS }], port);
    await waitUntil('every task probed and up', async () => {
      const health = await edge.health();
      return ips.every((ip) => stateOf(health, ip, port) === 'up');
    });
    assert.deepEqual(Object.keys(await spread(edge, host, 9)).sort(), ips);

    const sick = tasks[1] as Task;
    sick.mode = failure;
    const failedAt = Date.now();
    await waitUntil(
      'the failing task marked down',
      async () => stateOf(await edge.health(), sick.ip, port) === 'down',
      { timeoutMs: 4 * INTERVAL_MS },
    );
    const outAfterMs = Date.now() - failedAt;
    t.diagnostic(`out of the rotation ${outAfterMs} ms after its app started to ${failure}`);
    assert.ok(outAfterMs <= 2 * INTERVAL_MS, `down after ${outAfterMs} ms, more than two intervals`);
    const reason = (await edge.health()).find((task) => task.address === `${sick.ip}:${port}`)?.reason;
    assert.match(reason ?? '', failure === 'fail' ? /status 500/ : /timeout/);
    // Both workers route around it: 20 requests, none to the failing task.
    const before = sick.requests;
    const counts = await spread(edge, host, 20);
    assert.equal(sick.requests, before, `the down task got requests: ${JSON.stringify(counts)}`);
    assert.deepEqual(Object.keys(counts).sort(), [ips[0], ips[2]]);

    sick.mode = 'ok';
    const recoveredAt = Date.now();
    await waitUntil('the task back up', async () => stateOf(await edge.health(), sick.ip, port) === 'up', {
      timeoutMs: 4 * INTERVAL_MS,
    });
    t.diagnostic(`back in the rotation ${Date.now() - recoveredAt} ms after it recovered`);
    const back = await spread(edge, host, 12);
    assert.ok((back[sick.ip] ?? 0) >= 2, `the recovered task gets requests again: ${JSON.stringify(back)}`);
  });
}

test('every task down (a broken health path): requests still reach them, no blanket 502', async (t) => {
  const port = await freePort();
  const ips = ['127.0.0.2', '127.0.0.3'];
  const tasks = await startTasks(t, ips, port);
  for (const task of tasks) task.mode = 'fail';
  const host = 'broken.test';
  const edge = await startEdge(t, [{ name: 'web', host, ips, labels: LABELS }], port);
  await waitUntil('every task down', async () => {
    const health = await edge.health();
    return ips.every((ip) => stateOf(health, ip, port) === 'down');
  });
  // Tried anyway, and still spread over them.
  const counts = await spread(edge, host, 10);
  assert.deepEqual(Object.keys(counts).sort(), ips, JSON.stringify(counts));
});

test('a service without the label is never probed; a task that leaves the peers is probed no more', async (t) => {
  const port = await freePort();
  const checked = ['127.0.0.2', '127.0.0.3'];
  const unchecked = ['127.0.0.5', '127.0.0.6'];
  const tasks = await startTasks(t, [...checked, ...unchecked], port);
  const edge = await startEdge(
    t,
    [
      { name: 'web', host: 'checked.test', ips: checked, labels: LABELS },
      { name: 'other', host: 'unchecked.test', ips: unchecked },
    ],
    port,
  );
  await waitUntil('the checked tasks probed twice', () =>
    tasks.slice(0, 2).every((task) => task.probes >= 2),
  );
  assert.deepEqual(
    tasks.slice(2).map((task) => task.probes),
    [0, 0],
  );
  assert.deepEqual(
    (await edge.health()).map((task) => task.address),
    checked.map((ip) => `${ip}:${port}`),
  );
  // At most one probe per task per interval, with two workers: over ~3 intervals, 3 or 4 probes each.
  const [first] = tasks;
  const start = first?.probes ?? 0;
  const startedAt = Date.now();
  await new Promise((resolve) => setTimeout(resolve, 3 * INTERVAL_MS + 200));
  const probed = (first?.probes ?? 0) - start;
  t.diagnostic(`${probed} probes of one task in ${Date.now() - startedAt} ms`);
  assert.ok(probed >= 2 && probed <= 4, `${probed} probes in three intervals`);

  // Scaled down to one task: the other leaves the state and is probed no more.
  const web = edge.model.upstreams.find((upstream) => upstream.service === 'web');
  const other = edge.model.upstreams.find((upstream) => upstream.service === 'other');
  assert.ok(web && other);
  const peers =
    `generation ${edge.generation}\n` +
    `upstream ${web.name} ${checked[0]}:${port}\n` +
    `upstream ${other.name} ${unchecked.map((ip) => `${ip}:${port}`).join(' ')}\n`;
  assert.equal(await edge.nginx.updatePeers(peers, AbortSignal.timeout(5000)), true);
  await waitUntil(
    'the removed task gone from the health state',
    async () => (await edge.health()).length === 1,
  );
  const gone = tasks[1] as Task;
  const probesThen = gone.probes;
  await new Promise((resolve) => setTimeout(resolve, 2 * INTERVAL_MS + 200));
  assert.equal(gone.probes, probesThen, 'a task no longer in peers is not probed');
  assert.deepEqual(
    tasks.slice(2).map((task) => task.probes),
    [0, 0],
  );
});

test('a reload hands the checks to a new worker: a down task stays out, and each task is still probed once per interval', async (t) => {
  const port = await freePort();
  const ips = ['127.0.0.2', '127.0.0.3'];
  const tasks = await startTasks(t, ips, port);
  const sick = tasks[1] as Task;
  // Hanging: a new checker that forgot the state would route it for a whole probe timeout before finding out.
  sick.mode = 'hang';
  const host = 'reload.test';
  const edge = await startEdge(t, [{ name: 'web', host, ips, labels: LABELS }], port);
  await waitUntil(
    'the failing task down',
    async () => stateOf(await edge.health(), sick.ip, port) === 'down',
  );
  const oldWorkers = await workerPids(edge.setup);
  edge.nginx.reload();
  await waitUntil('only new workers', async () => {
    const now = await workerPids(edge.setup);
    return now.length === 2 && now.every((pid) => !oldWorkers.includes(pid));
  });
  // The new workers route around it from their first request: the state outlives the old workers.
  for (let index = 0; index < 20; index++) {
    const before = sick.requests;
    const answer = await edge.get(host);
    assert.equal(answer.status, 200);
    assert.equal(sick.requests, before, `request ${index} after the reload went to the down task`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  // The old checker let go of the lock when it exited; one new worker took over: about one probe per interval.
  const healthy = tasks[0] as Task;
  await new Promise((resolve) => setTimeout(resolve, INTERVAL_MS));
  const start = healthy.probes;
  await new Promise((resolve) => setTimeout(resolve, 3 * INTERVAL_MS + 200));
  const probed = healthy.probes - start;
  t.diagnostic(`${probed} probes of one task in the three intervals after a reload`);
  assert.ok(probed >= 2 && probed <= 4, `${probed} probes in three intervals`);
  assert.equal(stateOf(await edge.health(), sick.ip, port), 'down');
  sick.mode = 'ok';
  await waitUntil(
    'the task back up after the reload',
    async () => stateOf(await edge.health(), sick.ip, port) === 'up',
  );
});

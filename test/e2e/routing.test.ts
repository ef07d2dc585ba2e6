// The routing core on a real Swarm: labelled services are served by the edge at 127.0.0.1 with Host headers.
import assert from 'node:assert/strict';
import { writeFileSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import {
  backendAnswer,
  controllerStatus,
  edgesInSync,
  createService,
  docker,
  removeService,
  REPO_ROOT,
  request,
  serviceTasks,
  sleep,
  STACK,
  uniqueName,
  waitFor,
  waitForServiceRunning,
} from './support/lab.ts';
import type { ControllerStatus } from './support/lab.ts';

/** Waits until `host` answers 200 from the named service. */
async function waitForRoute(
  host: string,
  service: string,
  urlPath = '/',
): Promise<{ task: string; path: string }> {
  return waitFor(`${host}${urlPath} to be served by ${service}`, async () => {
    const answer = await backendAnswer(host, urlPath);
    return answer?.task.startsWith(`${service}.`) ? answer : undefined;
  });
}

async function waitForStatus(host: string, status: number): Promise<void> {
  await waitFor(`${host} to answer ${status}`, async () =>
    (await request(host)).status === status ? true : undefined,
  );
}

const convergence: Record<string, number[]> = { scaleUpLagSeconds: [] };

test('a labelled service answers through the edge, with the headers users expect', async (t) => {
  const name = uniqueName('sg-e2e-web');
  const host = `${name}.e2e.test`;
  t.after(() => removeService(name));
  await createService({ name, labels: { VIRTUAL_HOST: host } });
  await waitForRoute(host, name);

  const echoed = await request(host, '/headers', {
    headers: { 'x-forwarded-for': '203.0.113.9', 'x-forwarded-proto': 'https' },
  });
  assert.equal(echoed.status, 200);
  const headers = (JSON.parse(echoed.body) as { headers: Record<string, string> }).headers;
  assert.equal(headers.host, host, 'the Host header is passed through');
  assert.equal(headers['x-forwarded-host'], host);
  assert.equal(headers['x-forwarded-proto'], 'http', 'a client-sent X-Forwarded-Proto is not trusted');
  assert.ok(
    !headers['x-forwarded-for']?.includes('203.0.113.9'),
    'a client-sent X-Forwarded-For is not trusted',
  );
  assert.ok(headers['x-real-ip'], 'X-Real-IP is set');
  assert.equal(headers['x-forwarded-port'], '80');
});

test('scaling 1→3 routes every new task; scaling to 0 answers 503; removal answers 503', async (t) => {
  const name = uniqueName('sg-e2e-scale');
  const host = `${name}.e2e.test`;
  t.after(() => removeService(name));
  await createService({ name, labels: { VIRTUAL_HOST: host } });
  await waitForRoute(host, name);
  const reloadsBefore = edgeCounters(await edgesInSync());

  await docker(['service', 'scale', '--detach', `${name}=3`]);
  const firstSeen = new Map<string, number>();
  await waitFor(
    'all three tasks to answer through the edge',
    async () => {
      const answer = await backendAnswer(host);
      if (answer && !firstSeen.has(answer.task)) firstSeen.set(answer.task, Date.now());
      return firstSeen.size === 3 ? true : undefined;
    },
    { timeoutMs: 60_000, intervalMs: 20 },
  );
  const tasks = await waitForServiceRunning(name, 3);
  for (const task of tasks) {
    const seen = [...firstSeen.entries()].find(([taskName]) => taskName.endsWith(task.id));
    assert.ok(seen, `task ${task.id} answered through the edge`);
    convergence.scaleUpLagSeconds?.push(Math.max(0, (seen[1] - task.since) / 1000));
  }
  t.diagnostic(
    `task running → first answer through the edge: ${convergence.scaleUpLagSeconds?.map((lag) => lag.toFixed(2)).join(', ')} s`,
  );
  // New tasks of a routed service change only peers.txt: the edges take it without reloading nginx.
  const reloadsAfter = edgeCounters(await edgesInSync());
  assert.equal(reloadsAfter.reloads, reloadsBefore.reloads, 'no nginx reload for scaling');
  assert.ok(reloadsAfter.peerUpdates > reloadsBefore.peerUpdates, 'the new tasks were posted to nginx');

  await docker(['service', 'scale', '--detach', `${name}=0`]);
  await waitForStatus(host, 503);
  const status = await controllerStatus();
  assert.equal(status.services.find((service) => service.name === name)?.routedTasks, 0);

  await docker(['service', 'scale', '--detach', `${name}=1`]);
  await waitForRoute(host, name);
  await docker(['service', 'rm', name]);
  await waitForStatus(host, 503);
});

function edgeCounters(status: ControllerStatus): { reloads: number; peerUpdates: number } {
  return status.edges.reduce(
    (sum, edge) => ({ reloads: sum.reloads + edge.reloads, peerUpdates: sum.peerUpdates + edge.peerUpdates }),
    { reloads: 0, peerUpdates: 0 },
  );
}

test('one service on two hosts', async (t) => {
  const name = uniqueName('sg-e2e-twohosts');
  const hosts = [`a-${name}.e2e.test`, `b-${name}.e2e.test`];
  t.after(() => removeService(name));
  await createService({ name, labels: { VIRTUAL_HOST: hosts.join(',') } });
  for (const host of hosts) await waitForRoute(host, name);
});

test('two services share one host by path, with VIRTUAL_DEST rewriting the prefix', async (t) => {
  const front = uniqueName('sg-e2e-front');
  const api = uniqueName('sg-e2e-api');
  const host = `${front}.e2e.test`;
  t.after(() => Promise.all([removeService(front), removeService(api)]));
  await createService({ name: front, labels: { VIRTUAL_HOST: host } });
  await createService({
    name: api,
    labels: { VIRTUAL_HOST: host, VIRTUAL_PATH: '/api/', VIRTUAL_DEST: '/' },
  });

  const apiAnswer = await waitForRoute(host, api, '/api/items');
  assert.equal(apiAnswer.path, '/items', 'VIRTUAL_DEST=/ strips the /api/ prefix');
  const frontAnswer = await waitForRoute(host, front, '/about');
  assert.equal(frontAnswer.path, '/about');
});

test('a service with an invalid label is reported and every other route keeps working', async (t) => {
  const good = uniqueName('sg-e2e-good');
  const bad = uniqueName('sg-e2e-bad');
  const host = `${good}.e2e.test`;
  t.after(() => Promise.all([removeService(good), removeService(bad)]));
  await createService({ name: good, labels: { VIRTUAL_HOST: host } });
  await waitForRoute(host, good);
  await createService({ name: bad, labels: { VIRTUAL_HOST: `${bad}.e2e.test`, VIRTUAL_PORT: 'eighty' } });

  const problem = await waitFor('the bad label to be reported', async () => {
    const status = await controllerStatus();
    return status.problems.find((candidate) => candidate.service === bad);
  });
  assert.equal(problem.label, 'VIRTUAL_PORT');
  assert.equal(problem.code, 'INVALID_LABEL');
  assert.match(problem.reason, /eighty/);
  assert.equal((await request(`${bad}.e2e.test`)).status, 503);
  await waitForRoute(host, good);
});

test('edges keep serving while the controller is away, also after an edge restart', async (t) => {
  const name = uniqueName('sg-e2e-lkg');
  const host = `${name}.e2e.test`;
  const controller = `${STACK}_controller`;
  t.after(async () => {
    await docker(['service', 'scale', '--detach', `${controller}=1`]);
    await waitForServiceRunning(controller, 1);
    await removeService(name);
  });
  await createService({ name, labels: { VIRTUAL_HOST: host } });
  await waitForRoute(host, name);
  await waitFor('the edge to be in sync', async () =>
    (await controllerStatus()).edges.every((edge) => edge.inSync) ? true : undefined,
  );

  await docker(['service', 'scale', '--detach', `${controller}=0`]);
  await waitFor('the controller to stop', async () =>
    (await serviceTasks(controller)).every((task) => task.state !== 'running') ? true : undefined,
  );
  await sleep(1000);
  await waitForRoute(host, name);

  const edgeContainer = (
    await docker(['ps', '-q', '--filter', `name=${STACK}_edge`, '--filter', 'status=running'])
  ).split('\n')[0];
  assert.ok(edgeContainer, 'an edge container runs');
  await docker(['kill', edgeContainer]);
  // Swarm starts a new edge task; with no controller it must come up on the bundle saved on its volume.
  await waitFor(
    'a new edge container',
    async () => {
      const current = (
        await docker(['ps', '-q', '--filter', `name=${STACK}_edge`, '--filter', 'status=running'])
      ).split('\n')[0];
      return current && current !== edgeContainer ? current : undefined;
    },
    { timeoutMs: 90_000, intervalMs: 250 },
  );
  await waitForRoute(host, name);
  assert.equal((await request('still-unknown.invalid')).status, 503);
});

test.after(() => {
  const dir = path.join(REPO_ROOT, '.lab');
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, 'e2e-convergence.json'), JSON.stringify(convergence, null, 2));
});

// Balancing on a real Swarm (issue 15): sticky sessions, hashing on a header, weighted canaries, the retry policy
// and least connections, each through the lab edge on 127.0.0.1 with the backend telling which task answered.
//
// The edge runs several nginx workers (SWARMGATE_WORKER_PROCESSES=auto), and round robin, least_conn's counts and
// the canary split are kept per worker, while sticky cookies and hashes are the same in every worker. Each test
// below is built so that its assertions hold whichever worker takes which connection; where a sample decides, the
// comment gives the odds of a false failure.
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import { test } from 'node:test';
import type { ControllerStatus, HttpsResult } from './support/lab.ts';
import {
  controllerStatus,
  createService,
  docker,
  EDGE_HTTPS_PORT,
  edgesInSync,
  httpsGet,
  pebbleRoot,
  removeService,
  request,
  serviceTasks,
  uniqueName,
  waitFor,
  waitForRouted,
  waitForServiceRunning,
} from './support/lab.ts';

interface Answer {
  readonly status: number;
  /** The task that answered (the backend's JSON), or '' for an answer not from a task. */
  readonly task: string;
  /** The value the edge set for `cookie`, if it set one. */
  readonly setCookie: string | undefined;
}

async function ask(
  host: string,
  {
    path = '/',
    headers = {},
    cookie,
  }: { path?: string; headers?: Record<string, string>; cookie?: string } = {},
): Promise<Answer> {
  const result = await request(host, path, { headers });
  let task = '';
  if (result.status === 200) task = (JSON.parse(result.body) as { task: string }).task;
  const setCookie = (result.headers['set-cookie'] ?? [])
    .map((line) => line.split(';')[0] ?? '')
    .find((pair) => cookie !== undefined && pair.startsWith(`${cookie}=`))
    ?.slice((cookie ?? '').length + 1);
  return { status: result.status, task, setCookie };
}

/** After a change: a bundle other than `before` is published and every live edge has applied it. */
async function waitForNewBundle(before: ControllerStatus): Promise<ControllerStatus> {
  await waitFor('the controller to publish a new bundle', async () => {
    const status = await controllerStatus();
    return status.config && status.config.fingerprint !== before.config?.fingerprint ? true : undefined;
  });
  return edgesInSync();
}

function edgeCounters(status: ControllerStatus): { reloads: number; peerUpdates: number } {
  return status.edges.reduce(
    (sum, edge) => ({ reloads: sum.reloads + edge.reloads, peerUpdates: sum.peerUpdates + edge.peerUpdates }),
    { reloads: 0, peerUpdates: 0 },
  );
}

/** A task's addresses (sticky cookies name a task by its address). */
async function taskAddresses(taskId: string): Promise<string[]> {
  const raw = await docker([
    'inspect',
    '--format',
    '{{range .NetworksAttachments}}{{range .Addresses}}{{.}} {{end}}{{end}}',
    taskId,
  ]);
  return raw.split(/\s+/).filter(Boolean);
}

test('sticky: a client keeps its task for 20 requests, and moves without an error when a rolling update removes it', async (t) => {
  const name = uniqueName('sg-e2e-sticky');
  const host = `${name}.e2e.test`;
  const cookie = 'sg_e2e_sticky';
  t.after(() => removeService(name));
  await createService({
    name,
    replicas: 3,
    labels: { VIRTUAL_HOST: host, 'swarmgate.sticky': 'cookie', 'swarmgate.sticky.cookie': cookie },
  });
  await waitForRouted(name, 3);

  // Without the cookie, round robin spreads: 20 requests over at most a handful of workers put at least two requests
  // on one worker, and a worker's round robin never sends two requests in a row to one task of three.
  const spread = new Set<string>();
  for (let i = 0; i < 20; i += 1) {
    const answer = await ask(host, { cookie });
    assert.equal(answer.status, 200);
    assert.ok(answer.setCookie, 'a client without the cookie gets one');
    spread.add(answer.task);
  }
  assert.ok(spread.size >= 2, `without the cookie requests spread: ${[...spread].join(', ')}`);

  const first = await ask(host, { cookie });
  assert.equal(first.status, 200);
  const firstCookie = first.setCookie;
  assert.ok(firstCookie, 'the first answer sets the cookie');
  for (let i = 0; i < 20; i += 1) {
    const answer = await ask(host, { cookie, headers: { cookie: `${cookie}=${firstCookie}` } });
    assert.equal(answer.status, 200);
    assert.equal(answer.task, first.task, `request ${i + 1} with the cookie stays on ${first.task}`);
    assert.equal(answer.setCookie, undefined, 'a cookie naming the task that answered is not set again');
  }

  const firstTaskId = first.task.slice(first.task.lastIndexOf('.') + 1);
  const oldAddresses = await taskAddresses(firstTaskId);
  // Every task is replaced, one at a time; a client that keeps its cookie (and takes a new one when given) sends
  // requests all the while, and none fails.
  await docker(['service', 'update', '--detach', '--force', name]);
  let current = firstCookie;
  const seen: string[] = [];
  let sent = 0;
  const rolled = async (): Promise<boolean> => {
    const tasks = await serviceTasks(name);
    const running = tasks.filter((task) => task.desiredState === 'running' && task.state === 'running');
    const oldGone = !tasks.some((task) => task.id === firstTaskId && task.state === 'running');
    const state = await docker(['service', 'inspect', '--format', '{{.UpdateStatus.State}}', name]);
    return oldGone && running.length === 3 && state === 'completed';
  };
  const deadline = Date.now() + 180_000;
  while (!(await rolled())) {
    assert.ok(Date.now() < deadline, 'the rolling update completes within 3 minutes');
    for (let i = 0; i < 10; i += 1) {
      const answer = await ask(host, { cookie, headers: { cookie: `${cookie}=${current}` } });
      sent += 1;
      assert.equal(answer.status, 200, `request ${sent} during the rolling update`);
      if (answer.setCookie) current = answer.setCookie;
      if (seen.at(-1) !== answer.task) seen.push(answer.task);
    }
  }
  t.diagnostic(
    `rolling update: ${sent} requests with the cookie, 0 failed; tasks in turn: ${seen.join(' → ')}`,
  );
  await waitForRouted(name, 3);

  // The old cookie names a task that is gone: another task answers, and the client gets a cookie naming it.
  const moved = await ask(host, { cookie, headers: { cookie: `${cookie}=${firstCookie}` } });
  assert.equal(moved.status, 200);
  assert.notEqual(moved.task, first.task);
  assert.ok(moved.task.startsWith(`${name}.`));
  const newAddresses = (
    await Promise.all((await waitForServiceRunning(name, 3)).map((task) => taskAddresses(task.id)))
  ).flat();
  const reused = oldAddresses.filter((address) => newAddresses.includes(address));
  if (reused.length > 0) {
    // Swarm gave the old task's address to a new task: the cookie (upstream and address) names that one now.
    t.diagnostic(
      `address ${reused.join(', ')} was reused by a new task; its cookie still names a routed task`,
    );
  } else {
    assert.ok(moved.setCookie, 'the client whose task left gets a new cookie');
    assert.notEqual(moved.setCookie, firstCookie);
    for (let i = 0; i < 10; i += 1) {
      const again = await ask(host, { cookie, headers: { cookie: `${cookie}=${moved.setCookie}` } });
      assert.equal(again.task, moved.task, 'and stays on its new task');
    }
  }
});

/** Which task each key reaches, asking once per key. */
async function tasksByKey(host: string, keys: readonly string[]): Promise<Map<string, string>> {
  const byKey = new Map<string, string>();
  for (const key of keys) {
    const answer = await ask(host, { headers: { 'x-tenant-id': key } });
    assert.equal(answer.status, 200, `key ${key}`);
    byKey.set(key, answer.task);
  }
  return byKey;
}

test('hash on a header: a key always reaches one task, and scaling 3→4 moves only the keys the new task wins', async (t) => {
  const name = uniqueName('sg-e2e-hash');
  const host = `${name}.e2e.test`;
  t.after(() => removeService(name));
  await createService({
    name,
    replicas: 3,
    labels: {
      VIRTUAL_HOST: host,
      'swarmgate.balance': 'hash',
      'swarmgate.balance.key': 'header:X-Tenant-Id',
    },
  });
  await waitForRouted(name, 3);
  // 200 keys. Rendezvous hashing gives each key to each task with odds 1/n, so a pass that misses one of 3 tasks
  // has odds 3 × (2/3)^200 ≈ 1e-35; after scaling, the new task wins none with odds (3/4)^200 ≈ 1e-25, and more than
  // half of the keys (Binomial(200, 1/4) > 100; mean 50) with odds below 1e-14.
  const keys = Array.from({ length: 200 }, (_, index) => `tenant-${index}`);
  const before = await tasksByKey(host, keys);
  assert.equal(new Set(before.values()).size, 3, 'the keys spread over the three tasks');
  // Every worker computes the same hash: asked again (on new connections, whichever worker takes them), each key
  // reaches the same task.
  for (let pass = 0; pass < 2; pass += 1) assert.deepEqual(await tasksByKey(host, keys), before);

  const oldTasks = new Set(before.values());
  await docker(['service', 'scale', '--detach', `${name}=4`]);
  await waitForServiceRunning(name, 4);
  await waitForRouted(name, 4);
  const after = await waitFor('a pass of every key that reaches the fourth task', async () => {
    const byKey = await tasksByKey(host, keys);
    return new Set(byKey.values()).size === 4 ? byKey : undefined;
  });
  const [newTask] = [...new Set(after.values())].filter((task) => !oldTasks.has(task));
  assert.ok(newTask);
  assert.deepEqual(await tasksByKey(host, keys), after, 'the new spread is stable');

  const moved = keys.filter((key) => after.get(key) !== before.get(key));
  t.diagnostic(
    `scaling 3→4 moved ${moved.length} of ${keys.length} keys (expected about ${keys.length / 4})`,
  );
  for (const key of moved) assert.equal(after.get(key), newTask, `${key} moved only to the new task`);
  assert.ok(moved.length < keys.length / 2, `only part of the keys moved: ${moved.length}`);
});

/** How many of `count` requests to `host` the service `canary` answers; every request must succeed. */
async function canaryShare(host: string, canary: string, count: number): Promise<number> {
  let hits = 0;
  for (let i = 0; i < count; i += 1) {
    const answer = await ask(host);
    assert.equal(answer.status, 200);
    if (answer.task.startsWith(`${canary}.`)) hits += 1;
  }
  return hits;
}

test('canary: two services share a host 80/20, and a new weight takes effect without an nginx reload', async (t) => {
  const stable = uniqueName('sg-e2e-stable');
  const canary = uniqueName('sg-e2e-canary');
  const host = `${stable}.e2e.test`;
  t.after(() => Promise.all([removeService(stable), removeService(canary)]));
  await createService({ name: stable, labels: { VIRTUAL_HOST: host, 'swarmgate.weight': '80' } });
  await createService({ name: canary, labels: { VIRTUAL_HOST: host, 'swarmgate.weight': '20' } });
  await waitForRouted(canary, 1);
  await waitFor(`${canary} to answer on ${host}`, async () =>
    (await ask(host)).task.startsWith(`${canary}.`) ? true : undefined,
  );
  const before = await edgesInSync();
  const countersBefore = edgeCounters(before);

  // Each worker splits by smooth weighted round robin: any run of its requests is within 2 of the exact share. The
  // bounds are wider, ±6 standard deviations of a random split (Binomial(400, 0.2): sd 8), so they would hold even
  // for a random choice (odds of a false failure about 2e-9), and the two ranges still cannot overlap.
  const requests = 400;
  const share20 = await canaryShare(host, canary, requests);
  t.diagnostic(`weights 80/20: the canary answered ${share20} of ${requests} (exact share 80)`);
  assert.ok(share20 >= 32 && share20 <= 128, `80/20: ${share20} of ${requests} to the canary`);

  await docker(['service', 'update', '--detach', '--label-add', 'swarmgate.weight=80', canary]);
  const afterChange = await waitForNewBundle(before);
  const countersAfter = edgeCounters(afterChange);
  assert.equal(countersAfter.reloads, countersBefore.reloads, 'no nginx reload for a weight change');
  assert.ok(countersAfter.peerUpdates > countersBefore.peerUpdates, 'the new weights were posted to nginx');

  // 80/80: Binomial(400, 0.5) has sd 10; ±6 sd is 140..260.
  const share50 = await canaryShare(host, canary, requests);
  t.diagnostic(`weights 80/80: the canary answered ${share50} of ${requests} (exact share 200)`);
  assert.ok(share50 >= 140 && share50 <= 260, `80/80: ${share50} of ${requests} to the canary`);
  assert.equal(edgeCounters(await edgesInSync()).reloads, countersBefore.reloads, 'still no reload');
});

// Slot 1 of these services listens on the routed port 80; slot 2 runs but listens on 81, so the edge's connections
// to it are refused for as long as the test runs: a task that is routed and refuses, without a race with the
// controller taking it out.
const SLOT_2_REFUSES = { PORT: '{{if eq .Task.Slot "1"}}80{{else}}81{{end}}' };

test('retry policy: with swarmgate.retry.tries=1 a refusing task costs a 502; by default the request moves on', async (t) => {
  const strict = uniqueName('sg-e2e-tries1');
  const lenient = uniqueName('sg-e2e-retry');
  t.after(() => Promise.all([removeService(strict), removeService(lenient)]));
  await createService({
    name: strict,
    replicas: 2,
    env: SLOT_2_REFUSES,
    labels: { VIRTUAL_HOST: `${strict}.e2e.test`, 'swarmgate.retry.tries': '1' },
  });
  await createService({
    name: lenient,
    replicas: 2,
    env: SLOT_2_REFUSES,
    labels: { VIRTUAL_HOST: `${lenient}.e2e.test` },
  });
  await waitForRouted(strict, 2);
  await waitForRouted(lenient, 2);

  // 40 requests each. Some worker takes at least two of them, and its round robin offers slot 2 within its first two
  // unless slot 2 is in backoff, which only a failure (here: the 502 looked for) puts it in. (With tries=1 the
  // balancer never sees the failure, as the README says: about every other request is a 502, 19 of 40 when written.)
  const statuses = async (service: string): Promise<Map<number, number>> => {
    const counts = new Map<number, number>();
    for (let i = 0; i < 40; i += 1) {
      const answer = await ask(`${service}.e2e.test`);
      counts.set(answer.status, (counts.get(answer.status) ?? 0) + 1);
      if (answer.status === 200) assert.ok(answer.task.startsWith(`${service}.1.`), answer.task);
    }
    return counts;
  };
  const strictCounts = await statuses(strict);
  const lenientCounts = await statuses(lenient);
  t.diagnostic(
    `one task refusing: tries=1 ${JSON.stringify([...strictCounts])}, default ${JSON.stringify([...lenientCounts])}`,
  );
  assert.deepEqual(
    [...lenientCounts],
    [[200, 40]],
    'by default every request moves on to the task that listens',
  );
  assert.ok((strictCounts.get(502) ?? 0) >= 1, 'with tries=1 a request sent to the refusing task is a 502');
  assert.equal(
    (strictCounts.get(200) ?? 0) + (strictCounts.get(502) ?? 0),
    40,
    'and the others are answered',
  );
});

/** HTTPS to the lab edge on 127.0.0.1, verified against Pebble's root. */
async function waitForHttps(host: string, service: string, root: string): Promise<HttpsResult> {
  return waitFor(
    `a verified HTTPS answer for ${host}`,
    async () => {
      const result = await httpsGet(EDGE_HTTPS_PORT, '/', host, root);
      return result.status === 200 && result.body.includes(`"task":"${service}.`) ? result : undefined;
    },
    { timeoutMs: 90_000, intervalMs: 250 },
  );
}

function h2Get(session: http2.ClientHttp2Session, host: string, path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const stream = session.request({ ':path': path, ':authority': host });
    let body = '';
    let status = 0;
    stream.setEncoding('utf8');
    stream.on('response', (headers) => (status = Number(headers[':status'])));
    stream.on('data', (chunk: string) => (body += chunk));
    stream.on('end', () => {
      if (status === 200) resolve((JSON.parse(body) as { task: string }).task);
      else reject(new Error(`${path}: ${status} ${body.slice(0, 200)}`));
    });
    stream.on('error', reject);
  });
}

test('least_conn: while one task holds a slow request, every new request goes to the other', async (t) => {
  const name = uniqueName('sg-e2e-leastconn');
  const host = `${name}.e2e.test`;
  t.after(() => removeService(name));
  await createService({
    name,
    replicas: 2,
    labels: { VIRTUAL_HOST: host, LETSENCRYPT_HOST: host, 'swarmgate.balance': 'least_conn' },
  });
  await waitForRouted(name, 2);
  const root = await pebbleRoot();
  await waitForHttps(host, name, root);

  // least_conn counts requests per nginx worker, and a connection stays with one worker: so the slow request and the
  // new ones share one HTTP/2 connection. Its streams are taken in order, so the slow one is counted on its task
  // before the next is balanced.
  const session = http2.connect(`https://127.0.0.1:${EDGE_HTTPS_PORT}`, { servername: host, ca: root });
  t.after(() => session.close());
  const slow = h2Get(session, host, '/slow?ms=8000');
  const fast: string[] = [];
  for (let i = 0; i < 10; i += 1) fast.push(await h2Get(session, host, `/?i=${i}`));
  const slowTask = await slow;
  t.diagnostic(`slow request on ${slowTask}; the 10 others on ${[...new Set(fast)].join(', ')}`);
  assert.equal(new Set(fast).size, 1, 'the new requests all go to one task');
  assert.notEqual(fast[0], slowTask, 'the task without the slow request');

  // Once the slow request is done, the tasks are even again and round robin (the tie-break) reaches both.
  const later = new Set<string>();
  for (let i = 0; i < 4; i += 1) later.add(await h2Get(session, host, `/?after=${i}`));
  assert.equal(later.size, 2, `both tasks again: ${[...later].join(', ')}`);
});

test('active health checks: a task whose health path fails gets no requests, is listed down, and returns when it recovers', async (t) => {
  const name = uniqueName('sg-e2e-health');
  const host = `${name}.e2e.test`;
  t.after(() => removeService(name));
  await createService({
    name,
    replicas: 2,
    labels: {
      VIRTUAL_HOST: host,
      'swarmgate.healthcheck.path': '/health',
      'swarmgate.healthcheck.interval': '1s',
    },
  });
  await waitForRouted(name, 2);
  const seen = new Set<string>();
  await waitFor('both tasks to answer', async () => {
    const answer = await ask(host);
    if (answer.task) seen.add(answer.task);
    return seen.size === 2 ? true : undefined;
  });

  // The app of one task breaks: its health path answers 503 while it still accepts connections and answers `/`.
  const flip = await request(host, '/health/fail', { method: 'POST' });
  const failing = (JSON.parse(flip.body) as { task: string }).task;
  const healthy = [...seen].find((task) => task !== failing) ?? '';
  const failed: number[] = [];
  // Out of the rotation: 30 requests in a row reach the other task (round robin would give the failing one 15).
  await waitFor(
    `${failing} to be out of the rotation`,
    async () => {
      for (let i = 0; i < 30; i++) {
        const answer = await ask(host);
        if (answer.status !== 200) failed.push(answer.status);
        if (answer.task === failing) return undefined;
      }
      return true;
    },
    { timeoutMs: 20_000, intervalMs: 100 },
  );
  const down = await waitFor(
    `the edge to report ${failing} down`,
    async () => {
      const status = await controllerStatus();
      const entries = status.edges.flatMap((edge) => edge.tasksDown ?? []);
      return entries.find((entry) => entry.task !== null && failing.endsWith(`.${entry.task}`));
    },
    { timeoutMs: 20_000, intervalMs: 250 },
  );
  assert.equal(down.service, name);

  // Healthy again, from inside its container (the edge sends it nothing now): it returns to the rotation.
  const container = (
    await docker(['ps', '-q', '--filter', `label=com.docker.swarm.task.name=${failing}`])
  ).split('\n')[0];
  assert.ok(container, `the container of ${failing}`);
  await docker([
    'exec',
    container,
    'node',
    '-e',
    "fetch('http://127.0.0.1/health/ok', { method: 'POST' }).then((r) => process.exit(r.ok ? 0 : 1))",
  ]);
  await waitFor(
    `${failing} to be back in the rotation`,
    async () => {
      const answer = await ask(host);
      if (answer.status !== 200) failed.push(answer.status);
      return answer.task === failing ? true : undefined;
    },
    { timeoutMs: 20_000, intervalMs: 50 },
  );
  assert.ok(healthy, 'the other task answered');
  assert.deepEqual(failed, [], 'no request failed while the task was out and back');
});

// What an nginx-proxy or Traefik user checks with curl after moving (issue 14): credentials, address rules, forward
// auth, rate limits, headers, gzip, redirects, several routes of one service, error pages and the default host.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  backendAnswer,
  controllerStatus,
  createService,
  docker,
  edgesInSync,
  E2E_LABEL,
  removeService,
  request,
  STACK,
  uniqueName,
  waitFor,
} from './support/lab.ts';
import type { HttpResult } from './support/lab.ts';

// htpasswd -nbB -C 5 alice secret
const HTPASSWD = 'alice:$2y$05$LmMEpuUcmHIzjs1wbP3UOOmdiDoy5aGY7axzvrEkaXdm7sUsryBJm\n';
const basic = (user: string, password: string): string =>
  `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;

/** A Docker config labelled for swarmgate (and for the lab's cleanup); removed after the test. */
async function createConfig(
  t: { after: (fn: () => Promise<unknown>) => void },
  kind: string,
  data: string,
): Promise<string> {
  const name = uniqueName(`sg-e2e-${kind}`);
  await docker(['config', 'create', '--label', `swarmgate.file=${kind}`, '--label', E2E_LABEL, name, '-'], {
    input: data,
  });
  t.after(() => docker(['config', 'rm', name]).catch(() => ''));
  return name;
}

/** Waits until `probe` gives a result `accept` takes, and returns it. */
async function waitForAnswer(
  what: string,
  probe: () => Promise<HttpResult>,
  accept: (result: HttpResult) => boolean,
): Promise<HttpResult> {
  return waitFor(what, async () => {
    const result = await probe();
    return accept(result) ? result : undefined;
  });
}

test('basic auth from a Docker config: 401 without credentials, 401 with wrong ones, 200 with right ones', async (t) => {
  const config = await createConfig(t, 'htpasswd', HTPASSWD);
  const name = uniqueName('sg-e2e-basic');
  const host = `${name}.e2e.test`;
  t.after(() => removeService(name));
  await createService({ name, labels: { VIRTUAL_HOST: host, 'swarmgate.auth.basic': config } });

  const denied = await waitForAnswer(
    `${host} to ask for credentials`,
    () => request(host),
    (r) => r.status === 401,
  );
  assert.match(String(denied.headers['www-authenticate']), /^Basic realm="Restricted"/);
  assert.equal(
    (await request(host, '/', { headers: { authorization: basic('alice', 'wrong') } })).status,
    401,
  );
  const allowed = await request(host, '/', { headers: { authorization: basic('alice', 'secret') } });
  assert.equal(allowed.status, 200);
  assert.match(allowed.body, new RegExp(`"task":"${name}\\.`));
});

test('a missing htpasswd config fails closed: the host is not served at all', async (t) => {
  const name = uniqueName('sg-e2e-noauth');
  const host = `${name}.e2e.test`;
  t.after(() => removeService(name));
  await createService({
    name,
    labels: { VIRTUAL_HOST: host, 'swarmgate.auth.basic': 'sg-e2e-no-such-config' },
  });
  // The controller has seen the service (its problem is listed): the host still gets the unknown-host 503.
  const problem = await waitFor('the controller to report the missing config', async () =>
    (await controllerStatus()).problems.find((one) => one.service === name),
  );
  assert.equal(problem.label, 'swarmgate.auth.basic');
  assert.match(problem.reason, /no Docker config "sg-e2e-no-such-config"/);
  assert.equal((await request(host)).status, 503);
});

test('address rules: NETWORK_ACCESS=internal lets the lab (a private address) in; an allow list without it is 403', async (t) => {
  const internal = uniqueName('sg-e2e-internal');
  const listed = uniqueName('sg-e2e-allow');
  t.after(() => removeService(internal));
  t.after(() => removeService(listed));
  await createService({
    name: internal,
    env: { VIRTUAL_HOST: `${internal}.e2e.test`, NETWORK_ACCESS: 'internal' },
  });
  await createService({
    name: listed,
    labels: { VIRTUAL_HOST: `${listed}.e2e.test`, 'swarmgate.allow': '203.0.113.0/24' },
  });
  await waitFor(
    `${internal} to be served`,
    async () => (await backendAnswer(`${internal}.e2e.test`)) ?? undefined,
  );
  const refused = await waitForAnswer(
    `${listed} to refuse this address`,
    () => request(`${listed}.e2e.test`),
    (r) => r.status === 403,
  );
  assert.equal(refused.status, 403);
});

test('forward auth: 2xx passes with the chosen header copied, 401 and 403 are returned to the client', async (t) => {
  const auth = uniqueName('sg-e2e-auth');
  const pass = uniqueName('sg-e2e-fwd-pass');
  const deny = uniqueName('sg-e2e-fwd-deny');
  const forbid = uniqueName('sg-e2e-fwd-forbid');
  for (const name of [pass, deny, forbid, auth]) t.after(() => removeService(name));
  // The test backend answers /status/NNN with that status and names its task in X-Backend-Task.
  // Reached by its name: Docker's DNS gives a VIP by default, and this lab's kernel has no IPVS (LAB.md), so the
  // auth service resolves to its task address instead; on a real cluster the VIP works the same way.
  await createService({ name: auth, extra: ['--endpoint-mode', 'dnsrr'] });
  await createService({
    name: pass,
    labels: {
      VIRTUAL_HOST: `${pass}.e2e.test`,
      'swarmgate.auth.forward': `http://${auth}/status/200`,
      'swarmgate.auth.forward.headers': 'X-Backend-Task',
    },
  });
  await createService({
    name: deny,
    labels: { VIRTUAL_HOST: `${deny}.e2e.test`, 'swarmgate.auth.forward': `http://${auth}:80/status/401` },
  });
  await createService({
    name: forbid,
    labels: { VIRTUAL_HOST: `${forbid}.e2e.test`, 'swarmgate.auth.forward': `http://${auth}/status/403` },
  });
  const passed = await waitForAnswer(
    `${pass} to pass`,
    () => request(`${pass}.e2e.test`, '/headers', { headers: { 'x-backend-task': 'forged-by-client' } }),
    (r) => r.status === 200,
  );
  const seen = JSON.parse(passed.body) as { task: string; headers: Record<string, string> };
  assert.ok(seen.task.startsWith(`${pass}.`), 'the protected service answered');
  assert.ok(
    seen.headers['x-backend-task']?.startsWith(`${auth}.`),
    "the auth service's header replaced the client's",
  );
  await waitForAnswer(
    `${deny} to answer 401`,
    () => request(`${deny}.e2e.test`),
    (r) => r.status === 401,
  );
  await waitForAnswer(
    `${forbid} to answer 403`,
    () => request(`${forbid}.e2e.test`),
    (r) => r.status === 403,
  );
});

test('rate limit: past the burst the edge answers 429; a connection cap is accepted', async (t) => {
  const name = uniqueName('sg-e2e-rate');
  const host = `${name}.e2e.test`;
  t.after(() => removeService(name));
  await createService({
    name,
    labels: {
      VIRTUAL_HOST: host,
      'swarmgate.rate-limit': '1r/s',
      'swarmgate.rate-limit.burst': '2',
      'swarmgate.max-connections': '50',
    },
  });
  await waitForAnswer(
    `${host} to be served`,
    () => request(host),
    (r) => r.status === 200,
  );
  await new Promise((resolve) => setTimeout(resolve, 3000)); // the bucket refills
  const statuses: number[] = [];
  for (let i = 0; i < 8; i++) statuses.push((await request(host)).status);
  assert.ok(
    statuses.slice(0, 3).every((status) => status === 200),
    `first three pass: ${statuses.join(',')}`,
  );
  assert.ok(statuses.includes(429), `past the burst: ${statuses.join(',')}`);
});

test('headers, CORS and gzip: the preset and a custom header are sent, text is gzipped unless turned off', async (t) => {
  const name = uniqueName('sg-e2e-headers');
  const plain = uniqueName('sg-e2e-nogzip');
  t.after(() => removeService(name));
  t.after(() => removeService(plain));
  await createService({
    name,
    labels: {
      VIRTUAL_HOST: `${name}.e2e.test`,
      'swarmgate.security-headers': 'on',
      'swarmgate.header.Content-Security-Policy': "default-src 'self'",
      'swarmgate.cors.origins': 'https://app.e2e.test',
    },
  });
  await createService({
    name: plain,
    labels: { VIRTUAL_HOST: `${plain}.e2e.test`, 'swarmgate.gzip': 'off' },
  });
  const gzipped = { 'accept-encoding': 'gzip', origin: 'https://app.e2e.test' };
  const answer = await waitForAnswer(
    `${name} to be served`,
    () => request(`${name}.e2e.test`, '/headers', { headers: gzipped }),
    (r) => r.status === 200,
  );
  assert.equal(answer.headers['x-content-type-options'], 'nosniff');
  assert.equal(answer.headers['x-frame-options'], 'SAMEORIGIN');
  assert.equal(answer.headers['content-security-policy'], "default-src 'self'");
  assert.equal(answer.headers['access-control-allow-origin'], 'https://app.e2e.test');
  assert.equal(answer.headers['content-encoding'], 'gzip', 'JSON over 256 bytes is gzipped');
  const other = await request(`${name}.e2e.test`, '/headers', { headers: { origin: 'https://evil.test' } });
  assert.equal(other.headers['access-control-allow-origin'], undefined, 'another origin is not allowed');
  const preflight = await request(`${name}.e2e.test`, '/', { method: 'OPTIONS', headers: gzipped });
  assert.equal(preflight.status, 204);
  const off = await waitForAnswer(
    `${plain} to be served`,
    () => request(`${plain}.e2e.test`, '/headers', { headers: gzipped }),
    (r) => r.status === 200,
  );
  assert.equal(off.headers['content-encoding'], undefined, 'swarmgate.gzip=off');
});

test('redirects: a whole host to another, and www to the apex', async (t) => {
  const moved = uniqueName('sg-e2e-moved');
  const site = uniqueName('sg-e2e-site');
  t.after(() => removeService(moved));
  t.after(() => removeService(site));
  await createService({
    name: moved,
    labels: { VIRTUAL_HOST: `${moved}.e2e.test`, 'swarmgate.redirect': 'https://new.e2e.test' },
  });
  await createService({
    name: site,
    labels: { VIRTUAL_HOST: `${site}.e2e.test,www.${site}.e2e.test`, 'swarmgate.www-redirect': 'to-apex' },
  });
  const redirect = await waitForAnswer(
    `${moved} to redirect`,
    () => request(`${moved}.e2e.test`, '/a/b?c=d'),
    (r) => r.status === 301,
  );
  assert.equal(redirect.headers.location, 'https://new.e2e.test/a/b?c=d');
  const www = await waitForAnswer(
    `www.${site} to redirect`,
    () => request(`www.${site}.e2e.test`, '/x'),
    (r) => r.status === 301,
  );
  assert.equal(www.headers.location, `http://${site}.e2e.test/x`);
  // The redirect needs no task; the apex is served once its task runs and is routed.
  const apex = await waitForAnswer(
    `${site} to be served`,
    () => request(`${site}.e2e.test`, '/x'),
    (r) => r.status === 200,
  );
  assert.equal(apex.status, 200);
});

test('VIRTUAL_HOST_MULTIPORTS in YAML: one service on two hosts, one with a rewritten path; an error page while it has no task', async (t) => {
  const page = await createConfig(t, 'error-page', '<h1>sg-e2e maintenance</h1>\n');
  const name = uniqueName('sg-e2e-multi');
  t.after(() => removeService(name));
  // nginx-proxy's YAML form (JSON is read the same way): a host with nothing under it gets the defaults.
  const multiports = [`${name}.e2e.test:`, `api.${name}.e2e.test:`, `  "/api/":`, `    dest: "/"`].join('\n');
  await createService({
    name,
    env: { VIRTUAL_HOST_MULTIPORTS: multiports },
    labels: { 'swarmgate.error-page': page },
  });
  await waitFor(`${name} to be served`, async () => (await backendAnswer(`${name}.e2e.test`)) ?? undefined);
  const api = await waitFor('the second route', async () =>
    backendAnswer(`api.${name}.e2e.test`, '/api/items'),
  );
  assert.equal(api.path, '/items', 'VIRTUAL_DEST of the second route rewrote the prefix');
  await docker(['service', 'scale', '--detach', `${name}=0`]);
  const down = await waitForAnswer(
    `${name} to show its error page`,
    () => request(`${name}.e2e.test`),
    (r) => r.status === 503,
  );
  assert.match(down.body, /sg-e2e maintenance/);
});

test("SWARMGATE_DEFAULT_HOST: unknown names reach that host's service; without it they get 503", async (t) => {
  const name = uniqueName('sg-e2e-default');
  const host = `${name}.e2e.test`;
  const controller = `${STACK}_controller`;
  t.after(() => removeService(name));
  // Restored before the next test: the update waits until the new controller task runs (no --detach), and the
  // edges are then in sync with it, so no later test meets a controller that is still starting.
  t.after(async () => {
    await docker(['service', 'update', '--env-rm', 'SWARMGATE_DEFAULT_HOST', controller], {
      timeoutMs: 180_000,
    });
    await edgesInSync();
    await waitForAnswer(
      'unknown names to get 503 again',
      () => request('unknown.invalid'),
      (r) => r.status === 503,
    );
  });
  await createService({ name, labels: { VIRTUAL_HOST: host } });
  await docker(['service', 'update', '--detach', '--env-add', `SWARMGATE_DEFAULT_HOST=${host}`, controller]);
  const answer = await waitFor(
    'an unknown name to reach the default host',
    async () => {
      const result = await request('unknown.invalid');
      return result.status === 200 ? result : undefined;
    },
    { timeoutMs: 120_000, intervalMs: 500 },
  );
  assert.match(answer.body, new RegExp(`"task":"${name}\\.`));
});

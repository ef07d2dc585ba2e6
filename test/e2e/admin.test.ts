// The admin API on a real Swarm: scaling with wait, and a private registry behind the edge that a service is
// rolled to with stored credentials.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import {
  backendAnswer,
  createService,
  deployStackFiles,
  docker,
  EDGE_HTTPS_PORT,
  httpsGet,
  LAB_SECRET_LABEL,
  pebbleRoot,
  removeService,
  REPO_ROOT,
  STACK,
  uniqueName,
  waitFor,
} from './support/lab.ts';

const REGISTRY_HOST = 'registry.e2e.test';
/** The registry as docker and the controller address it: through the lab edge's HTTPS port. */
const REGISTRY = `${REGISTRY_HOST}:${EDGE_HTTPS_PORT}`;
const REGISTRY_STACK = 'sg-e2e-registry';
const HTPASSWD_SECRET = 'sg-e2e_registry_htpasswd';
const HOSTS_MARKER = '# swarmgate-e2e';

/** Runs the swarmgate CLI inside the controller container, the way an operator does; JSON out. */
async function cli(args: string[], stdin?: string): Promise<Record<string, unknown>> {
  const container = (
    await docker(['ps', '-q', '--filter', `name=${STACK}_controller.`, '--filter', 'status=running'])
  ).split('\n')[0];
  if (!container) throw new Error('no running controller');
  const out = await docker(
    ['exec', ...(stdin === undefined ? [] : ['-i']), container, 'swarmgate', ...args],
    {
      ...(stdin === undefined ? {} : { input: stdin }),
      timeoutMs: 300_000,
    },
  );
  return JSON.parse(out) as Record<string, unknown>;
}

function run(command: string, args: string[], input?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      command,
      args,
      { timeout: 300_000, maxBuffer: 8 * 1024 * 1024 },
      (error, stdout, stderr) =>
        error
          ? reject(new Error(`${command} ${args.join(' ')}: ${stderr || error.message}`))
          : resolve(stdout.trim()),
    );
    if (input !== undefined) child.stdin?.end(input);
  });
}

test('scale through the API with wait: every replica answers through the edge when it returns', async (t) => {
  const name = uniqueName('sg-e2e-apiscale');
  const host = `${name}.e2e.test`;
  t.after(() => removeService(name));
  await createService({ name, labels: { VIRTUAL_HOST: host } });
  await waitFor(`${host} to answer`, async () => ((await backendAnswer(host)) ? true : undefined));

  const result = await cli(['scale', name, '4', '--wait=120']);
  const wait = result.wait as { complete: boolean; routedTasks: number; edgesInSync: boolean };
  assert.equal(wait.complete, true, JSON.stringify(result));
  assert.equal(wait.routedTasks, 4);
  // Routed is not the same as listening: a task that refused its first connection sits out nginx's fail_timeout.
  const seen = new Set<string>();
  await waitFor(
    'all four replicas to answer',
    async () => {
      const answer = await backendAnswer(host);
      if (answer) seen.add(answer.task);
      return seen.size === 4 ? true : undefined;
    },
    { timeoutMs: 15_000, intervalMs: 20 },
  ).catch(() => undefined);
  assert.equal(seen.size, 4, `answers came from ${[...seen].join(', ')}`);

  const bad = await docker([
    'exec',
    (await docker(['ps', '-q', '--filter', `name=${STACK}_controller.`])).split('\n')[0] ?? '',
    'swarmgate',
    'scale',
    name,
    'many',
  ]).catch((error: unknown) => String(error));
  assert.match(bad, /not a number of replicas/);
});

test('a private registry behind the edge: push through it, roll a service to its image with stored credentials, browse it', async (t) => {
  const user = 'robot';
  const password = `pw-${uniqueName('x')}-${Date.now()}`;
  const app = uniqueName('sg-e2e-app');
  const appHost = `${app}.e2e.test`;
  const image = `${REGISTRY}/apps/backend:v2`;
  const dockerConfig = mkdtempSync(path.join(os.tmpdir(), 'sg-e2e-docker-'));
  const certsDir = `/etc/docker/certs.d/${REGISTRY}`;

  t.after(async () => {
    await removeService(app);
    await docker(['stack', 'rm', REGISTRY_STACK]).catch(() => '');
    await waitFor('the registry stack to go', async () =>
      (await docker([
        'service',
        'ls',
        '-q',
        '--filter',
        `label=com.docker.stack.namespace=${REGISTRY_STACK}`,
      ])) === ''
        ? true
        : undefined,
    );
    await docker(['secret', 'rm', HTPASSWD_SECRET]).catch(() => '');
    await cli(['api', 'DELETE', `/v1/registries/${REGISTRY}`]).catch(() => undefined);
    rmSync(dockerConfig, { recursive: true, force: true });
    rmSync(certsDir, { recursive: true, force: true });
    const hosts = readFileSync('/etc/hosts', 'utf8');
    writeFileSync(
      '/etc/hosts',
      hosts
        .split('\n')
        .filter((line) => !line.includes(HOSTS_MARKER))
        .join('\n'),
    );
    await docker(['image', 'rm', '-f', image]).catch(() => '');
  });

  // This node's engine reaches the registry by name through the edge. Written first: dockerd's Go resolver reads
  // /etc/hosts again only every few seconds.
  writeFileSync(
    '/etc/hosts',
    `${readFileSync('/etc/hosts', 'utf8').trimEnd()}\n127.0.0.1 ${REGISTRY_HOST} ${HOSTS_MARKER}\n`,
  );

  // The registry stack, with htpasswd from a Docker secret, TLS from swarmgate's ACME (Pebble here).
  const htpasswd = await run('htpasswd', ['-Bbn', user, password]);
  await docker(['secret', 'create', '--label', LAB_SECRET_LABEL, HTPASSWD_SECRET, '-'], {
    input: `${htpasswd}\n`,
  });
  await deployStackFiles(
    REGISTRY_STACK,
    [
      path.join(REPO_ROOT, 'examples', 'registry-stack.yml'),
      path.join(REPO_ROOT, 'test', 'e2e', 'registry.e2e.yml'),
    ],
    {
      REGISTRY_HOST,
      REGISTRY_IMAGE: 'swarmgate-registry:dev',
      REGISTRY_PLACEMENT: 'node.role == manager',
    },
  );

  const root = await pebbleRoot();
  await waitFor(
    'the registry over HTTPS through the edge (401 before login)',
    async () =>
      (await httpsGet(EDGE_HTTPS_PORT, '/v2/', REGISTRY_HOST, root)).status === 401 ? true : undefined,
    { timeoutMs: 120_000, intervalMs: 500 },
  );

  // This node's engine trusts the CA that issued the registry's certificate.
  mkdirSync(certsDir, { recursive: true });
  writeFileSync(path.join(certsDir, 'ca.crt'), root);

  // A v2 of the test backend, pushed through the edge with docker login.
  const dockerfile = 'FROM swarmgate-test-backend:dev\nENV BACKEND_VERSION=v2\n';
  await run('docker', ['build', '-q', '-t', image, '-'], dockerfile);
  // dockerd may not have read the new /etc/hosts line yet ("no such host"): waitFor asks again until it has.
  await waitFor(
    'dockerd to resolve the registry and log in',
    () =>
      run(
        'docker',
        ['--config', dockerConfig, 'login', REGISTRY, '-u', user, '--password-stdin'],
        password,
      ).then(() => true),
    { timeoutMs: 60_000, intervalMs: 1000 },
  );
  await run('docker', ['--config', dockerConfig, 'push', image]);
  // Drop the local copy: the node must pull it, which only works with the credentials swarmgate sends.
  await docker(['image', 'rm', '-f', image]);

  const stored = await cli(
    ['api', 'PUT', `/v1/registries/${REGISTRY}`],
    JSON.stringify({ username: user, password, imagePrefix: 'apps/', ca: root }),
  );
  assert.equal(stored.username, user);
  assert.ok(!JSON.stringify(stored).includes(password), 'the password is not returned');

  await createService({ name: app, labels: { VIRTUAL_HOST: appHost } });
  const before = await waitFor(`${appHost} on v1`, () => backendAnswer(appHost));
  assert.equal(before.version, 'v1');

  const rolled = await cli(
    ['api', 'POST', `/v1/services/${app}/image`],
    JSON.stringify({ image, wait: 240 }),
  );
  assert.equal(rolled.usedCredentialsFor, REGISTRY);
  assert.equal((rolled.wait as { complete: boolean }).complete, true, JSON.stringify(rolled));
  const after = await waitFor(`${appHost} on v2`, async () => {
    const answer = await backendAnswer(appHost);
    return answer?.version === 'v2' ? answer : undefined;
  });
  assert.equal(after.version, 'v2');

  const repositories = await cli(['api', 'GET', `/v1/registries/${REGISTRY}/repositories`]);
  assert.deepEqual(repositories.repositories, ['apps/backend']);
  const tags = await cli(['api', 'GET', `/v1/registries/${REGISTRY}/tags/apps/backend`]);
  assert.deepEqual(tags.tags, ['v2']);

  const controllerLogs = await docker(['service', 'logs', '--raw', `${STACK}_controller`]);
  assert.ok(!controllerLogs.includes(password), 'the password never reaches the log');
});

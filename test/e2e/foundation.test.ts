// The foundation: the stack deploys on a real Swarm, both roles are healthy, and a test backend answers through
// its own host-mode published port.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  createService,
  docker,
  IMAGE,
  removeService,
  request,
  STACK,
  uniqueName,
  waitFor,
} from './support/lab.ts';

async function containerHealth(service: string): Promise<string> {
  const ids = (await docker(['ps', '-q', '--filter', `name=${service}`, '--filter', 'status=running'])).split(
    '\n',
  );
  const id = ids[0];
  if (!id) return 'none';
  return docker([
    'inspect',
    '--format',
    '{{if .State.Health}}{{.State.Health.Status}}{{else}}no-healthcheck{{end}}',
    id,
  ]);
}

test('the controller and the edge run and pass their health checks', async () => {
  for (const service of [`${STACK}_controller`, `${STACK}_edge`]) {
    const health = await waitFor(
      `${service} to be healthy`,
      async () => {
        const status = await containerHealth(service);
        return status === 'healthy' ? status : undefined;
      },
      { timeoutMs: 90_000, intervalMs: 1000 },
    );
    assert.equal(health, 'healthy');
  }
  const version = await docker(['run', '--rm', '--entrypoint', 'swarmgate', IMAGE, 'version']);
  assert.match(version, /^\d+\.\d+\.\d+$/);
});

test('the edge answers 503 for a host nobody claims', async () => {
  const result = await request('nobody-claims-this.invalid', '/');
  assert.equal(result.status, 503);
});

test('a test backend answers through its own host-mode published port', async (t) => {
  const name = uniqueName('sg-e2e-direct');
  t.after(() => removeService(name));
  await createService({ name, publish: 'mode=host,target=80,published=18080' });
  const answer = await waitFor('the backend on 127.0.0.1:18080', async () => {
    const result = await request('direct.test', '/', { port: 18080 });
    return result.status === 200 ? (JSON.parse(result.body) as { task: string; path: string }) : undefined;
  });
  assert.ok(answer.task.startsWith(`${name}.1.`), `answer came from ${answer.task}`);
  const notFound = await request('direct.test', '/status/418', { port: 18080 });
  assert.equal(notFound.status, 418);
});

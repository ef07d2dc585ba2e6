import assert from 'node:assert/strict';
import { test } from 'node:test';
import { splitJsonLines } from '../../src/docker/json-lines.ts';
import type { TaskInfo } from '../../src/discovery/snapshot.ts';
import { isConverged } from '../../src/reconcile/convergence.ts';
import { nginxQuote } from '../../src/render/nunjucks-env.ts';
import { fingerprintBundle, shapeFingerprint } from '../../src/render/render-config.ts';
import { loadSnapshot } from '../support/golden.ts';
import { fileURLToPath } from 'node:url';

test('json lines: events split across chunks and several in one chunk', async () => {
  async function* chunks(): AsyncIterable<string> {
    yield '{"Type":"service","Act';
    yield 'ion":"update"}\n{"Type":"node"}\n\n{"Type"';
    yield ':"network"}';
  }
  const events: unknown[] = [];
  for await (const event of splitJsonLines(chunks())) events.push(event);
  assert.deepEqual(events, [{ Type: 'service', Action: 'update' }, { Type: 'node' }, { Type: 'network' }]);
});

test('nginx quoting escapes backslash and quote and refuses line breaks', () => {
  assert.equal(nginxQuote('~^a\\.b$'), '"~^a\\\\.b$"');
  assert.equal(nginxQuote('say "hi"'), '"say \\"hi\\""');
  assert.throws(() => nginxQuote('a\nb'), /control character/);
  assert.throws(() => nginxQuote('a\rb'), /control character/);
});

test('convergence: running = replicas and nothing in transition', () => {
  const snapshot = loadSnapshot(
    fileURLToPath(new URL('../golden/cases/basic/snapshot.json', import.meta.url)),
  );
  const service = snapshot.services.find((candidate) => candidate.id === 'svc-web');
  assert.ok(service);
  const task = (id: string, desiredState: string, state: string): TaskInfo => ({
    id,
    serviceId: service.id,
    nodeId: 'n',
    slot: 1,
    desiredState,
    state,
    stateSince: '',
    error: null,
    image: 'example/app:1',
    addresses: [],
  });
  const three = [
    task('a', 'running', 'running'),
    task('b', 'running', 'running'),
    task('c', 'running', 'running'),
  ];
  assert.equal(isConverged(service, three), true);
  assert.equal(isConverged(service, three.slice(0, 2)), false, 'fewer running than replicas');
  assert.equal(isConverged(service, [...three.slice(0, 2), task('c', 'running', 'preparing')]), false);
  assert.equal(
    isConverged(service, [...three, task('d', 'shutdown', 'running')]),
    false,
    'a task still stopping',
  );
  assert.equal(
    isConverged(service, [...three, task('d', 'shutdown', 'shutdown'), task('e', 'shutdown', 'failed')]),
    true,
  );
  assert.equal(isConverged({ ...service, updateState: 'updating' }, three), false);
});

test('bundle shape: the same except for upstream task addresses', () => {
  const config = (ip: string, host: string): Record<string, string> => ({
    'nginx.conf': `upstream u {\n        server ${ip}:80 max_fails=1 fail_timeout=2s;\n}\nserver_name "${host}";\n`,
  });
  assert.equal(
    shapeFingerprint(config('10.0.0.1', 'a.test')),
    shapeFingerprint(config('10.0.9.77', 'a.test')),
  );
  assert.notEqual(
    shapeFingerprint(config('10.0.0.1', 'a.test')),
    shapeFingerprint(config('10.0.0.1', 'b.test')),
  );
  assert.notEqual(
    fingerprintBundle(config('10.0.0.1', 'a.test')),
    fingerprintBundle(config('10.0.9.77', 'a.test')),
  );
});

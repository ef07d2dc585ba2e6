import assert from 'node:assert/strict';
import { test } from 'node:test';
import { splitJsonLines } from '../../src/docker/json-lines.ts';
import type { TaskInfo } from '../../src/discovery/snapshot.ts';
import { isConverged } from '../../src/reconcile/convergence.ts';
import { defaultProxySettings } from '../../src/config.ts';
import { buildRoutingModel } from '../../src/model/routing-model.ts';
import { createTemplateRenderer, nginxQuote } from '../../src/render/nunjucks-env.ts';
import {
  fingerprintBundle,
  PEERS_FILE,
  renderConfig,
  renderedShape,
  shapeFingerprint,
} from '../../src/render/render-config.ts';
import type { BundleFiles } from '../../src/render/render-config.ts';
import { loadSnapshot } from '../support/golden.ts';
import { oneServiceSnapshot } from '../support/one-service.ts';
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

test('bundle shape: everything but peers.txt, and peers.txt names the shape it belongs to', () => {
  const templates = createTemplateRenderer();
  const render = (ip: string, host: string): BundleFiles =>
    renderConfig(
      buildRoutingModel(oneServiceSnapshot(host, [ip]), { networks: ['swarmgate'] }),
      { proxy: defaultProxySettings(), generator: 'test' },
      templates,
    );
  const a = render('10.0.0.1', 'a.test');
  const moved = render('10.0.9.77', 'a.test');
  const otherHost = render('10.0.0.1', 'b.test');
  assert.equal(shapeFingerprint(a), shapeFingerprint(moved));
  assert.equal(renderedShape(moved), shapeFingerprint(moved), 'the shape peers.txt names is the real one');
  assert.notEqual(shapeFingerprint(a), shapeFingerprint(otherHost));
  assert.notEqual(fingerprintBundle(a), fingerprintBundle(moved));
  assert.equal(a['nginx.conf'], moved['nginx.conf'], 'addresses are never in nginx.conf');
  assert.match(
    moved[PEERS_FILE] ?? '',
    new RegExp(`^generation ${shapeFingerprint(a)}\\nupstream svc_web_\\w+ 10\\.0\\.9\\.77:80\\n$`),
  );
});

test('a task address that is not IPv4 is left out with a Problem; the service keeps its other tasks', () => {
  const model = buildRoutingModel(oneServiceSnapshot('a.test', ['10.0.0.1', 'fd00::5']), {
    networks: ['swarmgate'],
  });
  assert.deepEqual(
    model.upstreams[0]?.servers.map((server) => server.ip),
    ['10.0.0.1'],
  );
  const problem = model.problems.find((candidate) => candidate.code === 'UNSUPPORTED_ADDRESS');
  assert.equal(problem?.service, 'web');
  assert.match(problem?.reason ?? '', /fd00::5/);
  assert.doesNotThrow(() =>
    renderConfig(model, { proxy: defaultProxySettings(), generator: 'test' }, createTemplateRenderer()),
  );
});

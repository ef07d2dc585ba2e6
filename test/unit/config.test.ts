import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseDuration, readControllerConfig, readEdgeConfig } from '../../src/config.ts';
import { isSwarmgateError } from '../../src/errors.ts';

test('config: defaults are complete and frozen', () => {
  const config = readControllerConfig({});
  assert.equal(config.listenPort, 8080);
  assert.deepEqual(config.networks, ['swarmgate']);
  assert.deepEqual(config.debounce, { minMs: 100, maxMs: 500 });
  assert.equal(config.fastPollMs, 200);
  assert.equal(config.proxy.trustDownstreamProxy, false);
  assert.ok(Object.isFrozen(config) && Object.isFrozen(config.proxy) && Object.isFrozen(config.networks));
});

test('config: values are read from the environment', () => {
  const config = readControllerConfig({
    SWARMGATE_NETWORKS: 'public, swarmgate',
    SWARMGATE_DEBOUNCE: '100ms:2s',
    SWARMGATE_SLOW_POLL: '10s',
    SWARMGATE_TRUST_DOWNSTREAM_PROXY: 'yes',
    SWARMGATE_LOG_LEVEL: 'debug',
    SWARMGATE_WORKER_PROCESSES: '1',
    SWARMGATE_UPSTREAM_KEEPALIVE: '128',
  });
  assert.deepEqual(config.networks, ['public', 'swarmgate']);
  assert.equal(config.proxy.workerProcesses, '1');
  assert.equal(config.proxy.upstreamKeepalive, 128);
  assert.deepEqual(config.debounce, { minMs: 100, maxMs: 2000 });
  assert.equal(config.slowPollMs, 10_000);
  assert.equal(config.proxy.trustDownstreamProxy, true);
  assert.equal(config.logLevel, 'debug');
});

test('config: every bad key is listed at once', () => {
  assert.throws(
    () =>
      readControllerConfig({
        SWARMGATE_LISTEN_PORT: 'http',
        SWARMGATE_DEBOUNCE: '2s:1s',
        SWARMGATE_TRUST_DOWNSTREAM_PROXY: 'maybe',
        SWARMGATE_NETWORKS: 'ok,bad name',
        SWARMGATE_LOG_LEVEL: 'loud',
        SWARMGATE_WORKER_PROCESSES: 'many',
      }),
    (error: unknown) => {
      assert.ok(isSwarmgateError(error, 'ERR_CONFIG_INVALID'));
      const problems = error.details.problems as string[];
      assert.equal(problems.length, 6, problems.join('\n'));
      for (const key of [
        'LISTEN_PORT',
        'DEBOUNCE',
        'TRUST_DOWNSTREAM_PROXY',
        'NETWORKS',
        'LOG_LEVEL',
        'WORKER_PROCESSES',
      ]) {
        assert.ok(
          problems.some((problem) => problem.includes(key)),
          key,
        );
      }
      return true;
    },
  );
});

test('config: edge settings and the controller URL check', () => {
  const config = readEdgeConfig({}, 'node-7');
  assert.equal(config.edgeId, 'node-7');
  assert.equal(config.controllerUrl, 'http://swarmgate-controller:8080');
  assert.throws(() => readEdgeConfig({ SWARMGATE_CONTROLLER_URL: 'ftp://x' }, 'n'), /CONTROLLER_URL/);
});

test('parseDuration', () => {
  assert.equal(parseDuration('250ms'), 250);
  assert.equal(parseDuration('1.5s'), 1500);
  assert.equal(parseDuration('2m'), 120_000);
  assert.equal(parseDuration('40'), 40);
  assert.equal(parseDuration('soon'), null);
  assert.equal(parseDuration('-1s'), null);
});

test('config: SWARMGATE_INSTANCE scopes the sealed state; default "swarmgate", a bad name is refused', () => {
  assert.equal(readControllerConfig({}).instance, 'swarmgate');
  assert.equal(readControllerConfig({ SWARMGATE_INSTANCE: 'sg-e2e' }).instance, 'sg-e2e');
  for (const bad of ['Upper', '-dash', 'a b', 'x'.repeat(64)])
    assert.throws(
      () => readControllerConfig({ SWARMGATE_INSTANCE: bad }),
      (error: unknown) =>
        isSwarmgateError(error, 'ERR_CONFIG_INVALID') && /SWARMGATE_INSTANCE/.test(error.message),
      bad,
    );
});

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseDuration, readControllerConfig, readEdgeConfig } from '../../src/config.ts';
import { isSwarmgateError } from '../../src/errors.ts';

test('config: defaults are complete and frozen', () => {
  const config = readControllerConfig({});
  assert.equal(config.listenPort, 8443);
  assert.equal(config.challengePort, 8402);
  assert.equal(config.healthPort, 8081);
  assert.equal(config.proxy.controllerAddress, 'swarmgate-controller:8402', 'edges proxy challenges only');
  assert.equal(config.edgeTokenFile, '/run/secrets/swarmgate_edge_token');
  assert.equal(config.channelKeyFile, '/run/secrets/swarmgate_channel_key');
  assert.equal(config.channelCertFile, '/run/secrets/swarmgate_channel_cert');
  assert.equal(config.livenessDockerMs, 60_000);
  assert.deepEqual(config.networks, ['swarmgate']);
  assert.deepEqual(config.debounce, { minMs: 100, maxMs: 500 });
  assert.equal(config.fastPollMs, 100);
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
  assert.equal(config.controllerUrl, 'https://swarmgate-controller:8443');
  assert.equal(config.controllerCertFile, '/run/secrets/swarmgate_channel_cert');
  assert.equal(config.tokenFile, '/run/secrets/swarmgate_edge_token', 'the edge never reads the admin token');
  assert.throws(() => readEdgeConfig({ SWARMGATE_CONTROLLER_URL: 'ftp://x' }, 'n'), /CONTROLLER_URL/);
  // Plain http would send the edge token to whoever answers to the name, in clear.
  assert.throws(
    () => readEdgeConfig({ SWARMGATE_CONTROLLER_URL: 'http://swarmgate-controller:8443' }, 'n'),
    (error: unknown) =>
      isSwarmgateError(error, 'ERR_CONFIG_INVALID') &&
      /CONTROLLER_URL.*plain http is refused/.test(error.message),
  );
});

test('config: the controller listeners need different ports', () => {
  assert.throws(
    () => readControllerConfig({ SWARMGATE_LISTEN_PORT: '9000', SWARMGATE_CHALLENGE_PORT: '9000' }),
    /must be different ports/,
  );
  assert.equal(
    readControllerConfig({ SWARMGATE_LISTEN_PORT: '0', SWARMGATE_CHALLENGE_PORT: '0' }).listenPort,
    0,
  );
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

test('config: SWARMGATE_ENABLE_IPV6 is off unless set, and must be a boolean', () => {
  assert.equal(readControllerConfig({}).proxy.ipv6, false);
  assert.equal(readControllerConfig({ SWARMGATE_ENABLE_IPV6: 'true' }).proxy.ipv6, true);
  assert.throws(
    () => readControllerConfig({ SWARMGATE_ENABLE_IPV6: 'auto' }),
    (error: unknown) =>
      isSwarmgateError(error, 'ERR_CONFIG_INVALID') && /SWARMGATE_ENABLE_IPV6/.test(error.message),
  );
});

test('config: SWARMGATE_TRAFFIC_METRICS is on unless turned off, and must be a boolean', () => {
  assert.equal(readControllerConfig({}).proxy.trafficMetrics, true);
  assert.equal(readControllerConfig({ SWARMGATE_TRAFFIC_METRICS: 'false' }).proxy.trafficMetrics, false);
  assert.equal(readControllerConfig({ SWARMGATE_TRAFFIC_METRICS: ' Off ' }).proxy.trafficMetrics, false);
  assert.throws(
    () => readControllerConfig({ SWARMGATE_TRAFFIC_METRICS: 'disabled' }),
    (error: unknown) =>
      isSwarmgateError(error, 'ERR_CONFIG_INVALID') &&
      error.message.includes('SWARMGATE_TRAFFIC_METRICS: "disabled" is not a boolean'),
  );
});

test('config: SWARMGATE_TRAFFIC_TASK_SAMPLE reads one task response in 8 unless set, from 1 to 1000', () => {
  assert.equal(readControllerConfig({}).proxy.trafficTaskSample, 8);
  assert.equal(readControllerConfig({ SWARMGATE_TRAFFIC_TASK_SAMPLE: '1' }).proxy.trafficTaskSample, 1);
  for (const value of ['0', '1001', 'some', '2.5']) {
    assert.throws(
      () => readControllerConfig({ SWARMGATE_TRAFFIC_TASK_SAMPLE: value }),
      (error: unknown) =>
        isSwarmgateError(error, 'ERR_CONFIG_INVALID') &&
        error.message.includes('SWARMGATE_TRAFFIC_TASK_SAMPLE'),
      value,
    );
  }
});

test('config: ACME directories: the staging one (default Let’s Encrypt staging) and an https allow-list', () => {
  const defaults = readControllerConfig({}).tls.acme;
  assert.equal(defaults.directoryUrl, 'https://acme-v02.api.letsencrypt.org/directory');
  assert.equal(defaults.stagingDirectoryUrl, 'https://acme-staging-v02.api.letsencrypt.org/directory');
  assert.deepEqual(defaults.allowedDirectoryUrls, []);
  const set = readControllerConfig({
    SWARMGATE_ACME_STAGING_DIRECTORY: 'https://pebble:14000/dir',
    SWARMGATE_ACME_DIRECTORIES:
      ' https://acme.zerossl.com/v2/DV90 ,letsencrypt-staging,,https://acme.zerossl.com/v2/DV90',
  }).tls.acme;
  assert.equal(set.stagingDirectoryUrl, 'https://pebble:14000/dir');
  assert.deepEqual(set.allowedDirectoryUrls, [
    'https://acme-staging-v02.api.letsencrypt.org/directory',
    'https://acme.zerossl.com/v2/DV90',
  ]);
  for (const [key, bad] of [
    ['SWARMGATE_ACME_STAGING_DIRECTORY', 'http://pebble:14000/dir'],
    ['SWARMGATE_ACME_DIRECTORIES', 'https://ok.test/dir,file:///etc/passwd'],
    ['SWARMGATE_ACME_DIRECTORIES', 'https://a b/dir'],
  ] as const)
    assert.throws(
      () => readControllerConfig({ [key]: bad }),
      (error: unknown) => isSwarmgateError(error, 'ERR_CONFIG_INVALID') && error.message.includes(key),
      bad,
    );
});

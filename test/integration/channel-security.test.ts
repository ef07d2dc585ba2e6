// The edge⇄controller channel under attack, with the real edge agent and the real HTTPS channel: impostor
// controllers (another certificate, plain HTTP) get no token and push no bundle, a replayed older bundle is
// refused, a restarted controller moves the version forward, the challenge listener serves tokens and nothing
// else, and /healthz fails when Docker has been gone past the bound.
import { FakeNginx } from '../support/fake-nginx.ts';
import assert from 'node:assert/strict';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import tls from 'node:tls';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import type { AcmePort } from '../../src/acme/acme-adapter.ts';
import { deriveStateKey } from '../../src/acme/state-store.ts';
import { readControllerConfig, readEdgeConfig } from '../../src/config.ts';
import { createChallengeServer } from '../../src/controller/controller-api.ts';
import { startController } from '../../src/controller/controller.ts';
import type { RunningController } from '../../src/controller/controller.ts';
import { createHttpsControllerChannel } from '../../src/edge/controller-channel.ts';
import type { ControllerChannel } from '../../src/edge/controller-channel.ts';
import { startEdgeAgent } from '../../src/edge/edge-agent.ts';
import type { RunningEdge } from '../../src/edge/edge-agent.ts';
import { isSwarmgateError } from '../../src/errors.ts';
import { createCapturingLogger } from '../../src/logger.ts';
import type { PublishedBundle } from '../../src/publish/bundle-store.ts';
import type { Clock } from '../../src/reconcile/clock.ts';
import { systemClock } from '../../src/reconcile/clock.ts';
import { createTemplateRenderer } from '../../src/render/nunjucks-env.ts';
import { fingerprintBundle } from '../../src/render/render-config.ts';
import { loopbackResolver, makeChannelKeyPair } from '../support/channel-tls.ts';
import type { ChannelKeyPair } from '../support/channel-tls.ts';
import { FakeClock } from '../support/fake-clock.ts';
import { FakeDocker, rawService, rawTask } from '../support/fake-docker.ts';
import { publishCount } from '../support/versions.ts';
import { waitUntil } from '../support/wait.ts';

const ADMIN_TOKEN = 'channel-admin-token-0123456789';
const EDGE_TOKEN = 'channel-edge-token-0123456789';
const noAcme: AcmePort = {
  createAccountKey: () => Promise.reject(new Error('unused')),
  order: () => Promise.reject(new Error('unused')),
};

type KeyPair = ChannelKeyPair & { remove: () => Promise<void> };
let real: KeyPair;
let other: KeyPair;
before(async () => {
  // The impostor's certificate carries the same name: only the pinned key tells them apart.
  [real, other] = await Promise.all([makeChannelKeyPair(), makeChannelKeyPair()]);
});
after(async () => {
  await real.remove();
  await other.remove();
});

function dockerWithWeb(host = 'web.example.com'): FakeDocker {
  const docker = new FakeDocker();
  docker.services = [rawService('web', { VIRTUAL_HOST: host })];
  docker.tasks = [rawTask('t1', 'web', '10.0.0.11')];
  return docker;
}

async function startTestController(
  docker: FakeDocker,
  options: { clock?: Clock; env?: Record<string, string> } = {},
): Promise<RunningController> {
  return startController({
    config: readControllerConfig({
      SWARMGATE_LISTEN_PORT: '0',
      SWARMGATE_CHALLENGE_PORT: '0',
      SWARMGATE_HEALTH_PORT: '0',
      SWARMGATE_DEBOUNCE: '5ms:20ms',
      SWARMGATE_SLOW_POLL: '1h',
      SWARMGATE_EDGE_LONG_POLL: '2s',
      ...options.env,
    }),
    adminToken: ADMIN_TOKEN,
    edgeToken: EDGE_TOKEN,
    channelTls: real,
    docker,
    validator: { validate: async () => ({ ok: true }) },
    templates: createTemplateRenderer(),
    logger: createCapturingLogger('debug').logger,
    clock: options.clock ?? systemClock,
    version: 'test',
    acme: noAcme,
    stateKey: deriveStateKey('channel-state-key-0123456789'),
    userCertificates: [],
  });
}

function channelTo(port: number, timeoutMs = 8000): ControllerChannel {
  return createHttpsControllerChannel({
    url: `https://swarmgate-controller:${port}`,
    token: EDGE_TOKEN,
    ca: real.cert,
    timeoutMs,
    resolve: loopbackResolver(),
  });
}

async function startTestEdge(
  channel: ControllerChannel,
  t: { after: (fn: () => Promise<void>) => void },
): Promise<{ edge: RunningEdge; nginx: FakeNginx; logs: Record<string, unknown>[] }> {
  const stateDir = await mkdtemp(path.join(os.tmpdir(), 'swarmgate-edge-'));
  // nginx's workers (nobody) connect to the ACME relay's unix socket in it.
  await chmod(stateDir, 0o755);
  const { logger, lines } = createCapturingLogger('debug');
  const nginx = new FakeNginx();
  const edge = await startEdgeAgent({
    config: readEdgeConfig(
      { SWARMGATE_STATE_DIR: stateDir, SWARMGATE_EDGE_HEALTH_PORT: '0', SWARMGATE_EDGE_RETRY_MAX: '100ms' },
      'edge-1',
    ),
    nodeId: 'node-1',
    channel,
    nginx,
    testConfig: async () => ({ ok: true }),
    templates: createTemplateRenderer(),
    logger,
    clock: systemClock,
    version: 'test',
  });
  t.after(async () => {
    await edge.stop();
    await rm(stateDir, { recursive: true, force: true });
  });
  return { edge, nginx, logs: lines };
}

/** What an impostor would push: a well-formed bundle, with a high version so that no version check stops it. */
function impostorBundle(): PublishedBundle {
  const files = { 'nginx.conf': 'events {}\nhttp { server { listen 80; return 200 "owned"; } }\n' };
  return {
    version: 999_999,
    fingerprint: fingerprintBundle(files),
    files,
    publishedAt: new Date().toISOString(),
  };
}

function listen(server: net.Server, host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, host, () => resolve((server.address() as AddressInfo).port));
  });
}

function closeServer(server: net.Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    if (server instanceof http.Server) server.closeAllConnections();
  });
}

test('an impostor HTTPS controller with another certificate gets no Authorization header and pushes no bundle', async (t) => {
  let connections = 0;
  const requests: http.IncomingHttpHeaders[] = [];
  const impostor = https.createServer({ key: other.key, cert: other.cert }, (req, res) => {
    requests.push(req.headers);
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(impostorBundle()));
  });
  impostor.on('connection', () => connections++);
  const port = await listen(impostor);
  t.after(() => closeServer(impostor));

  const { edge, nginx, logs } = await startTestEdge(channelTo(port), t);
  await waitUntil('the edge to try the impostor three times', () => connections >= 3);
  await waitUntil('the refused handshakes to be logged', () =>
    logs.some((line) => line.msg === 'controller poll failed; serving the last applied bundle'),
  );
  assert.equal(requests.length, 0, 'no request (so no token) ever reached the impostor');
  assert.equal(edge.applied(), null, 'nothing applied');
  assert.equal(nginx.reloads, 0);
  const failure = logs.find((line) => line.msg === 'controller poll failed; serving the last applied bundle');
  assert.match(String(failure?.err), /certificate|self[- ]signed|verify/i);
});

test('an impostor plain-HTTP controller: the edge refuses http:// and sends nothing readable to an http listener', async (t) => {
  assert.throws(
    () => readEdgeConfig({ SWARMGATE_CONTROLLER_URL: 'http://swarmgate-controller:8080' }, 'edge-1'),
    (error: unknown) => isSwarmgateError(error, 'ERR_CONFIG_INVALID'),
  );
  assert.throws(
    () =>
      createHttpsControllerChannel({
        url: 'http://swarmgate-controller:8080',
        token: EDGE_TOKEN,
        ca: real.cert,
        timeoutMs: 5000,
      }),
    (error: unknown) => isSwarmgateError(error, 'ERR_CONFIG_INVALID'),
  );

  // A plain-HTTP impostor behind the https URL: it sees a TLS hello, never the token, and its answer is no bundle.
  const received: Buffer[] = [];
  const impostor = net.createServer((socket) => {
    socket.on('data', (chunk: Buffer) => {
      received.push(chunk);
      const body = JSON.stringify(impostorBundle());
      socket.end(
        `HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
      );
    });
    socket.on('error', () => undefined);
  });
  const port = await listen(impostor);
  t.after(() => closeServer(impostor));
  const { edge, nginx } = await startTestEdge(channelTo(port), t);
  await waitUntil('the edge to try the impostor three times', () => received.length >= 3);
  const bytes = Buffer.concat(received).toString('latin1');
  assert.ok(!bytes.includes(EDGE_TOKEN), 'the token never crossed');
  assert.ok(!/authorization|bearer|edge\/poll/i.test(bytes), 'no HTTP request was sent in clear');
  assert.equal(edge.applied(), null);
  assert.equal(nginx.reloads, 0);
});

test('a replayed older bundle from the real controller is refused and reported as rejected', async (t) => {
  const docker = dockerWithWeb();
  const controller = await startTestController(docker);
  t.after(() => controller.stop());
  const realChannel = channelTo(controller.port);
  const seen: PublishedBundle[] = [];
  let replay: PublishedBundle | null = null;
  // A channel that, once told to, answers one poll with a bundle the controller sent earlier.
  const channel: ControllerChannel = {
    async poll(report, signal) {
      if (replay) {
        const bundle = replay;
        replay = null;
        return bundle;
      }
      const bundle = await realChannel.poll(report, signal);
      if (bundle) seen.push(bundle);
      return bundle;
    },
  };
  const { edge, nginx, logs } = await startTestEdge(channel, t);
  await waitUntil('the edge to apply version 1', () => publishCount(edge.applied()?.version) === 1);
  docker.tasks.push(rawTask('t2', 'web', '10.0.0.12'));
  docker.emit({ Type: 'service', Action: 'update', Actor: { ID: 'web' } });
  await waitUntil('the edge to apply version 2', () => publishCount(edge.applied()?.version) === 2);
  const reloads = nginx.reloads;

  replay = seen[0] ?? null;
  const [older, newer] = [replay?.version, edge.applied()?.version];
  assert.equal(publishCount(older), 1);
  await waitUntil('the refusal to be logged', () =>
    logs.some((line) => line.msg === 'refused a bundle that does not move the version forward'),
  );
  assert.equal(edge.applied()?.version, newer, 'the edge still runs version 2');
  assert.equal(nginx.reloads, reloads, 'no reload for the replay');
  await waitUntil('the controller to hear of the rejection', () =>
    controller.store.edges().some((state) => state.rejected !== null),
  );
  assert.match(
    controller.store.edges()[0]?.rejected?.error ?? '',
    new RegExp(`version ${older} is not above the applied version ${newer}`),
  );
});

test('a restarted controller with another config moves the version forward past what the edge runs', async (t) => {
  const docker = dockerWithWeb();
  const first = await startTestController(docker);
  let current = channelTo(first.port);
  const channel: ControllerChannel = { poll: (report, signal) => current.poll(report, signal) };
  const { edge } = await startTestEdge(channel, t);
  await waitUntil('the edge to apply version 1', () => publishCount(edge.applied()?.version) === 1);
  docker.tasks.push(rawTask('t2', 'web', '10.0.0.12'));
  docker.emit({ Type: 'service', Action: 'update', Actor: { ID: 'web' } });
  await waitUntil('the edge to apply version 2', () => publishCount(edge.applied()?.version) === 2);
  const ran = edge.applied()?.version ?? 0;
  await first.stop();

  // The new controller (same swarm, a change made while it was away) numbers from a new epoch of Swarm's Raft index,
  // never from what edges report.
  docker.services = [rawService('web', { VIRTUAL_HOST: 'other.example.com' })];
  const second = await startTestController(docker);
  t.after(() => second.stop());
  await waitUntil('the new controller to publish', () => second.store.current !== null);
  current = channelTo(second.port);
  await waitUntil(
    'the edge to take the new controller bundle',
    () => edge.applied()?.fingerprint === second.store.current?.fingerprint,
  );
  assert.ok((edge.applied()?.version ?? 0) > ran, 'forward past the version the edge ran, never back');
  assert.equal(publishCount(second.store.current?.version), 1, 'the new controller counts in its own epoch');
});

test('the challenge listener serves a known token and 404s everything else, traversal forms included', async (t) => {
  const known = 'Tok3n_with-all-chars';
  const server = createChallengeServer(real, {
    challengeResponse: (token) => (token === known ? `${known}.thumbprint` : undefined),
  });
  const port = await listen(server);
  t.after(() => closeServer(server));
  const controller = await startTestController(dockerWithWeb());
  t.after(() => controller.stop());

  const raw = (
    targetPort: number,
    target: string,
    method = 'GET',
  ): Promise<{ status: number; body: string }> =>
    new Promise((resolve, reject) => {
      // A raw TLS socket, not https.request: the target must reach the server byte for byte (backslashes, dot
      // segments). The listener is HTTPS with the channel key pair, verified as an edge's nginx does.
      const socket = tls.connect(
        { port: targetPort, host: '127.0.0.1', servername: 'swarmgate-controller', ca: real.cert },
        () => socket.write(`${method} ${target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`),
      );
      let text = '';
      socket.setEncoding('latin1');
      socket.on('data', (chunk: string) => (text += chunk));
      socket.on('end', () =>
        resolve({
          status: Number(/^HTTP\/1\.1 (\d+)/.exec(text)?.[1] ?? 0),
          body: text.split('\r\n\r\n')[1] ?? '',
        }),
      );
      socket.on('error', reject);
    });

  const answer = await raw(port, `/.well-known/acme-challenge/${known}`);
  assert.equal(answer.status, 200);
  assert.ok(answer.body.includes(`${known}.thumbprint`), answer.body);
  for (const target of [
    '/v1/status',
    '/healthz',
    '/readyz',
    '/metrics',
    '/.well-known/acme-challenge/',
    '/.well-known/acme-challenge/..\\..\\..\\v1/status',
    '/.well-known/acme-challenge/..%5c..%5c..%5cv1/status',
    '/.well-known/acme-challenge/%2e%2e/%2e%2e/%2e%2e/v1/status',
    '/.well-known/acme-challenge/..%2f..%2f..%2fv1%2fstatus',
    '/.well-known/acme-challenge/../../../v1/status',
    '//.well-known/acme-challenge/' + known,
    '/.well-known/acme-challenge//' + known,
    `/.well-known/acme-challenge/${known}/../../../v1/status`,
    `/.well-known/acme-challenge/${known}?x=1`,
    `/.well-known/acme-challenge/%${known}`,
  ]) {
    assert.equal((await raw(port, target)).status, 404, target);
    assert.equal((await raw(controller.challengePort, target)).status, 404, `controller: ${target}`);
  }
  assert.equal((await raw(port, `/.well-known/acme-challenge/${known}`, 'HEAD')).status, 200, 'HEAD as GET');
  assert.equal(
    (await raw(port, `/.well-known/acme-challenge/${known}`, 'POST')).status,
    404,
    'GET/HEAD only',
  );
  assert.equal(
    (await raw(controller.challengePort, '/v1/edge/poll', 'POST')).status,
    404,
    'the edge poll is not on the challenge listener',
  );
});

test('/healthz fails when no Docker call has succeeded past the bound, and recovers with Docker', async (t) => {
  const clock = new FakeClock(Date.now());
  const docker = dockerWithWeb();
  const controller = await startTestController(docker, {
    clock,
    env: { SWARMGATE_SLOW_POLL: '5s', SWARMGATE_LIVENESS_DOCKER: '60s' },
  });
  t.after(() => controller.stop());
  const health = async (): Promise<{ status: number; body: Record<string, unknown> }> => {
    const response = await fetch(`http://127.0.0.1:${controller.healthPort}/healthz`);
    return { status: response.status, body: (await response.json()) as Record<string, unknown> };
  };
  await waitUntil('the first publish', () => controller.store.current !== null);
  assert.equal((await health()).status, 200);

  docker.down = true;
  clock.advance(59_000);
  assert.equal((await health()).status, 200, 'within the bound: a short Docker outage restarts nothing');
  clock.advance(2_000);
  const failing = await health();
  assert.equal(failing.status, 503);
  assert.match(String(failing.body.reason), /no successful Docker call for 6\d s/);
  const ready = await fetch(`http://127.0.0.1:${controller.healthPort}/readyz`);
  assert.equal(ready.status, 503, 'not ready either');

  docker.down = false;
  await controller.reconciler.reconcileNow();
  assert.equal((await health()).status, 200, 'Docker back: healthy again');
});

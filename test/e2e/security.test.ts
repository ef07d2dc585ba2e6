// The control plane under attack on a real Swarm: an impostor service takes the alias swarmgate-controller on the
// shared overlay while the controller is away, and the edges give it nothing; the secrets are where they belong.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import {
  backendAnswer,
  createService,
  docker,
  EDGE_NETWORK,
  edgesInSync,
  REPO_ROOT,
  removeService,
  serviceTasks,
  STACK,
  uniqueName,
  waitFor,
  waitForServiceRunning,
} from './support/lab.ts';

/** A fake controller: HTTPS on the API port with its own certificate for the right name, plain TCP on the old one. */
const IMPOSTOR = `
const https = require('node:https');
const net = require('node:net');
const log = (line) => console.log(JSON.stringify(line));
const pem = (name) => Buffer.from(process.env[name], 'base64').toString();
const bundle = JSON.stringify({ version: 999999, fingerprint: '0'.repeat(64), files: { 'nginx.conf': 'events {}' },
  publishedAt: new Date().toISOString() });
const server = https.createServer({ key: pem('IMPOSTOR_KEY'), cert: pem('IMPOSTOR_CERT') }, (req, res) => {
  let body = '';
  req.on('data', (chunk) => (body += chunk));
  req.on('end', () => {
    log({ msg: 'captured request', method: req.method, url: req.url, headers: req.headers, body: body.slice(0, 300) });
    res.writeHead(200, { 'content-type': 'application/json' }).end(bundle);
  });
});
server.on('connection', (socket) => log({ msg: 'tls connection', from: socket.remoteAddress }));
server.on('tlsClientError', (error) => log({ msg: 'handshake refused', err: error.message }));
server.listen(8443, () => log({ msg: 'listening' }));
net.createServer((socket) => {
  log({ msg: 'plain connection', from: socket.remoteAddress });
  socket.once('data', (data) => log({ msg: 'captured plain bytes', text: data.toString('latin1').slice(0, 300) }));
  socket.on('error', () => undefined);
}).listen(8080);
`;

interface ImpostorLine {
  msg: string;
  headers?: Record<string, string>;
  text?: string;
}

async function impostorLog(service: string): Promise<{ lines: ImpostorLine[]; raw: string }> {
  const raw = await docker(['service', 'logs', '--raw', '--tail', '2000', service]);
  const lines = raw
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line) as ImpostorLine);
  return { lines, raw };
}

/** A self-signed certificate for swarmgate-controller with a key the edges do not pin. */
function impostorKeyPair(): { key: string; cert: string } {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sg-impostor-'));
  try {
    execFileSync('openssl', [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-days',
      '2',
      '-subj',
      '/CN=swarmgate-controller',
      '-addext',
      'subjectAltName=DNS:swarmgate-controller',
      '-keyout',
      path.join(dir, 'key.pem'),
      '-out',
      path.join(dir, 'cert.pem'),
    ]);
    return {
      key: readFileSync(path.join(dir, 'key.pem'), 'utf8'),
      cert: readFileSync(path.join(dir, 'cert.pem'), 'utf8'),
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

test('secrets: the edge holds only the edge token and the channel certificate, each mode 0400', async () => {
  const secretsOf = async (service: string): Promise<{ name: string; mode: number }[]> =>
    (
      JSON.parse(
        await docker([
          'service',
          'inspect',
          `${STACK}_${service}`,
          '--format',
          '{{json .Spec.TaskTemplate.ContainerSpec.Secrets}}',
        ]),
      ) as { SecretName: string; File: { Name: string; Mode: number } }[]
    )
      // The file's name in the container: the lab's stack maps its own secrets (sg-e2e_*) onto the usual names.
      .map((secret) => ({ name: secret.File.Name, mode: secret.File.Mode }));
  const edge = await secretsOf('edge');
  assert.deepEqual(edge.map((secret) => secret.name).sort(), [
    'swarmgate_channel_cert',
    'swarmgate_edge_token',
  ]);
  const controller = await secretsOf('controller');
  assert.ok(controller.some((secret) => secret.name === 'swarmgate_token'));
  assert.ok(controller.some((secret) => secret.name === 'swarmgate_channel_key'));
  for (const secret of [...edge, ...controller.filter((one) => one.name.startsWith('swarmgate_'))]) {
    if (secret.name.startsWith('swarmgate_e2e_')) continue;
    assert.equal(secret.mode, 0o400, `${secret.name} mode`);
  }
});

test('an impostor with the alias swarmgate-controller, while the controller is scaled to 0, captures nothing and routing keeps working', async (t) => {
  const app = uniqueName('sg-e2e-sec');
  const later = uniqueName('sg-e2e-sec2');
  const impostor = uniqueName('sg-e2e-impostor');
  const controller = `${STACK}_controller`;
  const adminToken = readFileSync(path.join(REPO_ROOT, '.lab', 'token'), 'utf8').trim();
  const edgeToken = readFileSync(path.join(REPO_ROOT, '.lab', 'edge-token'), 'utf8').trim();
  t.after(async () => {
    await removeService(impostor);
    await docker(['service', 'scale', '--detach', `${controller}=1`]);
    await waitForServiceRunning(controller, 1);
    await removeService(app);
    await removeService(later);
  });
  await createService({ name: app, labels: { VIRTUAL_HOST: `${app}.e2e.test` } });
  await waitFor(`${app} to be routed`, async () =>
    (await backendAnswer(`${app}.e2e.test`))?.task.startsWith(`${app}.`) ? true : undefined,
  );
  await edgesInSync();

  await docker(['service', 'scale', '--detach', `${controller}=0`]);
  await waitFor('the controller to stop', async () =>
    (await serviceTasks(controller)).every((task) => task.state !== 'running') ? true : undefined,
  );

  const pair = impostorKeyPair();
  await createService({
    name: impostor,
    networks: [`name=${EDGE_NETWORK},alias=swarmgate-controller`],
    env: {
      IMPOSTOR_KEY: Buffer.from(pair.key).toString('base64'),
      IMPOSTOR_CERT: Buffer.from(pair.cert).toString('base64'),
    },
    // Task addresses in DNS (no VIP), as the real controller has.
    extra: ['--endpoint-mode', 'dnsrr', '--entrypoint', 'node'],
    args: ['-e', IMPOSTOR],
  });
  // The edges poll whatever the name resolves to; each try reaches the impostor and ends at the handshake.
  await waitFor(
    'the edge to reach the impostor three times',
    async () => {
      const { lines } = await impostorLog(impostor);
      return lines.filter((line) => line.msg === 'tls connection').length >= 3 ? true : undefined;
    },
    { timeoutMs: 90_000, intervalMs: 1000 },
  );
  assert.equal(
    (await backendAnswer(`${app}.e2e.test`))?.task.startsWith(`${app}.`),
    true,
    'the edge serves its last bundle while the impostor answers',
  );

  // The controller comes back beside the impostor: Docker's DNS now returns both.
  await docker(['service', 'scale', '--detach', `${controller}=1`]);
  await waitForServiceRunning(controller, 1);
  await createService({ name: later, labels: { VIRTUAL_HOST: `${later}.e2e.test` } });
  await waitFor(
    `${later} to be routed (a bundle from the real controller)`,
    async () => ((await backendAnswer(`${later}.e2e.test`))?.task.startsWith(`${later}.`) ? true : undefined),
    { timeoutMs: 90_000 },
  );
  assert.equal((await backendAnswer(`${app}.e2e.test`))?.task.startsWith(`${app}.`), true);

  const { lines, raw } = await impostorLog(impostor);
  assert.ok(
    lines.some((line) => line.msg === 'handshake refused'),
    'the edge refused the impostor certificate',
  );
  assert.deepEqual(
    lines.filter((line) => line.msg.startsWith('captured')),
    [],
    'no request and no plain bytes reached the impostor',
  );
  assert.ok(!raw.includes(edgeToken), 'the edge token never reached the impostor');
  assert.ok(!raw.includes(adminToken), 'the admin token never reached the impostor');
});

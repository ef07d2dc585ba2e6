// The CLI against a fake admin API (HTTPS with a channel key pair, as the controller): registry passwords come from
// stdin or a file, never from argv or the env, and the admin token never goes to a plain-HTTP URL.
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { runCli } from '../../src/cli/cli.ts';
import { isSwarmgateError } from '../../src/errors.ts';
import { makeChannelKeyPair } from '../support/channel-tls.ts';
import type { ChannelKeyPair } from '../support/channel-tls.ts';

const PASSWORD = 'a long registry password';
let dir: string;
let server: https.Server;
let channel: ChannelKeyPair & { remove: () => Promise<void> };
let env: Record<string, string>;
const puts: { url: string; body: Record<string, unknown> }[] = [];

before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'swarmgate-cli-'));
  await writeFile(path.join(dir, 'token'), 'cli-test-token\n');
  await writeFile(path.join(dir, 'password'), `${PASSWORD}\n`, { mode: 0o600 });
  await writeFile(path.join(dir, 'two-lines'), 'first\nsecond\n');
  channel = await makeChannelKeyPair();
  server = https.createServer({ key: channel.key, cert: channel.cert }, (req, res) => {
    let text = '';
    req.setEncoding('utf8');
    req.on('data', (chunk: string) => (text += chunk));
    req.on('end', () => {
      puts.push({
        url: `${req.method ?? ''} ${req.url ?? ''}`,
        body: JSON.parse(text || '{}') as Record<string, unknown>,
      });
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"host":"registry.test"}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  env = {
    SWARMGATE_API_URL: `https://127.0.0.1:${(server.address() as AddressInfo).port}`,
    SWARMGATE_TOKEN_FILE: path.join(dir, 'token'),
    SWARMGATE_CHANNEL_CERT_FILE: channel.certFile,
  };
});

after(async () => {
  server.close();
  server.closeAllConnections();
  await channel.remove();
  await rm(dir, { recursive: true, force: true });
});

async function run(
  args: string[],
  options: { stdin?: string; env?: Record<string, string> } = {},
): Promise<void> {
  const stdin = options.stdin;
  await runCli(args, {
    env: { ...env, ...options.env },
    out: () => undefined,
    ...(stdin === undefined ? {} : { readStdin: () => Promise.resolve(stdin) }),
  });
}

test('registry set reads the password from stdin or from a file, one trailing line break dropped', async () => {
  puts.length = 0;
  await run(['registry', 'set', 'registry.test', 'robot', '--password-stdin', '--prefix=apps/'], {
    stdin: `${PASSWORD}\n`,
  });
  await run([
    'registry',
    'set',
    'registry.test',
    'robot',
    `--password-file=${path.join(dir, 'password')}`,
    '--realm-host=auth.test',
    '--realm-host=auth2.test:8443',
  ]);
  assert.deepEqual(puts, [
    {
      url: 'PUT /v1/registries/registry.test',
      body: { username: 'robot', password: PASSWORD, imagePrefix: 'apps/' },
    },
    {
      url: 'PUT /v1/registries/registry.test',
      body: { username: 'robot', password: PASSWORD, realmHosts: ['auth.test', 'auth2.test:8443'] },
    },
  ]);
});

test('registry set refuses a password on the command line or in the environment, and sends nothing', async () => {
  puts.length = 0;
  const refused: [string[], Record<string, string>, RegExp][] = [
    [['robot', `--password=${PASSWORD}`], {}, /never taken from the command line/],
    [['robot', '--password', PASSWORD], {}, /never taken from the command line/],
    [['robot', '-p', PASSWORD], {}, /never taken from the command line/],
    [['robot'], { SWARMGATE_REGISTRY_PASSWORD: PASSWORD }, /not read/],
    [['robot', '--password-stdin'], { SWARMGATE_REGISTRY_PASSWORD: PASSWORD }, /not read/],
    [['robot'], {}, /exactly one/],
    [['robot', '--password-stdin', `--password-file=${path.join(dir, 'password')}`], {}, /exactly one/],
    [['robot', `--password-file=${path.join(dir, 'missing')}`], {}, /cannot read the password file/],
    [['robot', `--password-file=${path.join(dir, 'two-lines')}`], {}, /one non-empty line/],
  ];
  for (const [args, extraEnv, message] of refused) {
    await assert.rejects(
      run(['registry', 'set', 'registry.test', ...args], { env: extraEnv, stdin: `${PASSWORD}\n` }),
      (error: unknown) => isSwarmgateError(error, 'ERR_BAD_REQUEST') && message.test(error.message),
      args.join(' '),
    );
  }
  await assert.rejects(
    run(['registry', 'set', 'registry.test', 'robot', '--password-stdin'], { stdin: '\n' }),
    /one non-empty line/,
  );
  assert.deepEqual(puts, [], 'nothing reached the API');
});

// Review of the security work, item 6: SWARMGATE_API_URL=http://... sent the admin token in clear.
test('the CLI refuses a plain-HTTP API URL and sends nothing to it', async (t) => {
  const received: string[] = [];
  const plain = http.createServer((req, res) => {
    received.push(req.headers.authorization ?? '');
    res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
  });
  await new Promise<void>((resolve) => plain.listen(0, '127.0.0.1', () => resolve()));
  t.after(() => new Promise((resolve) => plain.close(resolve)));
  await assert.rejects(
    run(['status'], {
      env: { SWARMGATE_API_URL: `http://127.0.0.1:${(plain.address() as AddressInfo).port}` },
    }),
    (error: unknown) => isSwarmgateError(error, 'ERR_CONFIG_INVALID') && /https:\/\//.test(error.message),
  );
  assert.deepEqual(received, [], 'the admin token never went out');
});

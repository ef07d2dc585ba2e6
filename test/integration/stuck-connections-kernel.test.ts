// The real socket table (ss, SOCK_DESTROY) on loopback: the watch's list finds a connection by its peer, and its
// destroy aborts exactly that one; and a connection whose peer stopped acknowledging, made in a network namespace of
// the test's own, is found stuck and cut. (Root, as the edge's agent runs; CI runs as root.)
import assert from 'node:assert/strict';
import net from 'node:net';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { test } from 'node:test';
import { kernelSocketTable } from '../../src/edge/stuck-connections.ts';

test('ss lists the connections to a member and destroys the one named, leaving the other', async (t) => {
  const accepted: net.Socket[] = [];
  const server = net.createServer((socket) => accepted.push(socket.on('error', () => {})));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => {
    for (const socket of accepted) socket.destroy();
    server.close();
  });
  const port = (server.address() as net.AddressInfo).port;
  const connect = (): Promise<net.Socket> =>
    new Promise((resolve, reject) => {
      const socket = net.connect(port, '127.0.0.1', () => resolve(socket)).once('error', reject);
      t.after(() => socket.destroy());
    });
  const [doomed, kept] = [await connect(), await connect()];
  const member = `127.0.0.1:${port}`;

  const listed = await kernelSocketTable.list([member]);
  const locals = listed
    .filter((connection) => connection.peer === member)
    .map((c) => c.local)
    .sort();
  assert.deepEqual(locals, [`127.0.0.1:${doomed.localPort}`, `127.0.0.1:${kept.localPort}`].sort());

  const aborted = new Promise<string>((resolve) =>
    doomed.once('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? error.message)),
  );
  const target = listed.filter((connection) => connection.local === `127.0.0.1:${doomed.localPort}`);
  assert.deepEqual(await kernelSocketTable.destroy(target), { destroyed: 1, stderr: '' });
  doomed.write('x');
  assert.equal(await aborted, 'ECONNABORTED');

  const after = await kernelSocketTable.list([member]);
  assert.deepEqual(
    after.filter((connection) => connection.peer === member).map((c) => c.local),
    [`127.0.0.1:${kept.localPort}`],
  );
  assert.equal(kept.destroyed, false);
});

test('a connection whose peer stops acknowledging is found stuck and cut (in a network namespace of its own)', async () => {
  const script = path.resolve('test/support/stuck-connection-netns.ts');
  const out = await new Promise<string>((resolve, reject) =>
    execFile('unshare', ['-n', process.execPath, script], { timeout: 30_000 }, (error, stdout, stderr) =>
      error ? reject(new Error(`${error.message}\n${stderr}`)) : resolve(stdout),
    ),
  );
  const seen = JSON.parse(out) as {
    idle: { unacked: number; backoff: number }[];
    stuck: { local: string; unacked: number; backoff: number }[];
    cut: { destroyed: number; stderr: string };
    clientLocal: string;
    error: string;
  };
  assert.deepEqual(
    seen.idle.map(({ unacked, backoff }) => ({ unacked, backoff })),
    [{ unacked: 0, backoff: 0 }],
    'connected and idle: not stuck',
  );
  assert.equal(seen.stuck.length, 1, 'the request went unacknowledged');
  assert.equal(seen.stuck[0]!.local, seen.clientLocal);
  assert.ok(seen.stuck[0]!.unacked >= 1 && seen.stuck[0]!.backoff >= 2, JSON.stringify(seen.stuck[0]));
  assert.deepEqual(seen.cut, { destroyed: 1, stderr: '' });
  assert.equal(seen.error, 'ECONNABORTED', 'the client sees its connection aborted');
});

// The real socket table (ss, SOCK_DESTROY) on loopback: the watch's list finds a connection by its peer, and its
// destroy aborts exactly that one. (Root, as the edge's agent runs; CI runs as root.)
import assert from 'node:assert/strict';
import net from 'node:net';
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
  assert.equal(await kernelSocketTable.destroy(target), '');
  doomed.write('x');
  assert.equal(await aborted, 'ECONNABORTED');

  const after = await kernelSocketTable.list([member]);
  assert.deepEqual(
    after.filter((connection) => connection.peer === member).map((c) => c.local),
    [`127.0.0.1:${kept.localPort}`],
  );
  assert.equal(kept.destroyed, false);
});

// Run by test/integration/stuck-connections-kernel.test.ts inside a network namespace of its own (`unshare -n`):
// nothing here touches the machine's network. A connection on loopback whose peer then drops every packet (an
// iptables rule in this namespace only) is what a connection to a task on a dead node looks like: the request is
// retransmitted and never acknowledged. Prints what the socket table saw and what the cut did, as JSON.
import { execFileSync } from 'node:child_process';
import net from 'node:net';
import { kernelSocketTable, stuckConnections } from '../../src/edge/stuck-connections.ts';

execFileSync('ip', ['link', 'set', 'lo', 'up']);
const server = net.createServer((socket) => socket.on('error', () => {}));
await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
const port = (server.address() as net.AddressInfo).port;
const member = `127.0.0.1:${port}`;
const client = net.connect(port, '127.0.0.1');
await new Promise<void>((resolve, reject) => client.once('connect', resolve).once('error', reject));
const clientLocal = `127.0.0.1:${client.localPort}`;
const aborted = new Promise<string>((resolve) =>
  client.once('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? error.message)),
);

const idle = (await kernelSocketTable.list([member])).filter((c) => c.local === clientLocal);
execFileSync('iptables', ['-A', 'INPUT', '-p', 'tcp', '--dport', String(port), '-j', 'DROP']);
client.write('GET / HTTP/1.1\r\nHost: app.test\r\n\r\n');

const deadline = Date.now() + 8000;
let stuck = stuckConnections(await kernelSocketTable.list([member]), new Set([member]));
while (stuck.length === 0 && Date.now() < deadline) {
  await new Promise((resolve) => setTimeout(resolve, 100));
  stuck = stuckConnections(await kernelSocketTable.list([member]), new Set([member]));
}
const cut = await kernelSocketTable.destroy(stuck);
const error = await Promise.race([
  aborted,
  new Promise((resolve) => setTimeout(() => resolve('none'), 3000)),
]);
console.log(JSON.stringify({ idle, stuck, cut, clientLocal, error }));
client.destroy();
server.close();
process.exit(0);

// Run by isolated-chromium.sh inside the browser's network namespace: listens on the namespace's 127.0.0.1 at each
// given port and joins every connection to the unix socket the test process serves for that port (which connects to
// the same port on the machine's loopback). Creates the ready file once every port listens, and exits once the
// browser, its parent, has.
// Arguments: <ready file> <port>=<unix socket>...
import { writeFileSync } from 'node:fs';
import net from 'node:net';

const [readyFile, ...forwards] = process.argv.slice(2);
if (!readyFile || forwards.length === 0)
  throw new Error('usage: netns-forwarder.ts <ready file> <port>=<socket>...');

const join = (one: net.Socket, other: net.Socket): void => {
  one.on('error', () => other.destroy());
  other.on('error', () => one.destroy());
  one.pipe(other).pipe(one);
};

await Promise.all(
  forwards.map((forward) => {
    const [port, socket] = forward.split('=');
    if (!port || !socket) throw new Error(`not <port>=<socket>: ${forward}`);
    const server = net.createServer((client) => join(client, net.connect(socket)));
    return new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(Number(port), '127.0.0.1', resolve);
    });
  }),
);
writeFileSync(readyFile, '');

// The shell that started this process became the browser (exec): when the browser exits, this one is re-parented.
const browser = process.ppid;
setInterval(() => {
  if (process.ppid !== browser) process.exit(0);
}, 500);

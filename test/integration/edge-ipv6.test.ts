// SWARMGATE_ENABLE_IPV6 in a real nginx on loopback: the edge answers over IPv6 (::1) on its HTTP and HTTPS
// listeners as well as over IPv4, and the task sees the client's IPv6 address. Skipped where loopback has no ::1.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import http from 'node:http';
import https from 'node:https';
import os from 'node:os';
import { test } from 'node:test';
import { freePort, get } from '../support/loopback-nginx.ts';
import { startProtocolEdge, TEST_CERTIFICATE } from '../support/protocol-edge.ts';

const HOST = 'app.example.com';
const hasLoopbackIpv6 = Object.values(os.networkInterfaces())
  .flat()
  .some((address) => address?.internal && address.address === '::1');

/** A task that answers with the X-Real-IP the edge sent it. */
async function startTask(t: test.TestContext, port: number): Promise<void> {
  const server = http.createServer((req, res) => res.end(String(req.headers['x-real-ip'])));
  server.listen(port, '127.0.0.2');
  await once(server, 'listening');
  t.after(() => {
    server.closeAllConnections();
    server.close();
  });
}

function getOver(
  scheme: 'http' | 'https',
  address: string,
  port: number,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const client = scheme === 'https' ? https : http;
    client
      .get(
        {
          host: address,
          port,
          path: '/',
          headers: { host: HOST },
          agent: false,
          ca: TEST_CERTIFICATE.certificatePem,
          servername: HOST,
        },
        (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (chunk: string) => (body += chunk));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        },
      )
      .on('error', reject);
  });
}

test(
  'SWARMGATE_ENABLE_IPV6: the edge serves HTTP and HTTPS on ::1 as well as on IPv4',
  { skip: !hasLoopbackIpv6 && 'no ::1 on loopback' },
  async (t) => {
    const port = await freePort();
    await startTask(t, port);
    const edge = await startProtocolEdge(t, HOST, ['127.0.0.2'], port, { tls: true, proxy: { ipv6: true } });
    assert.deepEqual(await getOver('http', '::1', edge.setup.listenPort), { status: 200, body: '::1' });
    assert.deepEqual(await getOver('https', '::1', edge.setup.tlsPort), { status: 200, body: '::1' });
    assert.deepEqual(await get(edge.setup.listenPort, HOST), { status: 200, body: '127.0.0.1' });
    assert.deepEqual(await getOver('https', '127.0.0.1', edge.setup.tlsPort), {
      status: 200,
      body: '127.0.0.1',
    });
    // Unknown hosts get the same answer over IPv6 as over IPv4: the default servers listen there too.
    const unknown = await new Promise<number>((resolve, reject) =>
      http
        .get(
          { host: '::1', port: edge.setup.listenPort, headers: { host: 'unknown.test' }, agent: false },
          (res) => {
            res.resume();
            resolve(res.statusCode ?? 0);
          },
        )
        .on('error', reject),
    );
    assert.equal(unknown, 503);
  },
);

test(
  'without SWARMGATE_ENABLE_IPV6 (the default) nothing listens on ::1',
  { skip: !hasLoopbackIpv6 && 'no ::1 on loopback' },
  async (t) => {
    const port = await freePort();
    await startTask(t, port);
    const edge = await startProtocolEdge(t, HOST, ['127.0.0.2'], port);
    await assert.rejects(getOver('http', '::1', edge.setup.listenPort), { code: 'ECONNREFUSED' });
    assert.deepEqual(await get(edge.setup.listenPort, HOST), { status: 200, body: '127.0.0.1' });
  },
);

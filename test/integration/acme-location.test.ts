// The ACME challenge location of the edge's real nginx on loopback, with a fake controller (HTTPS with the channel
// key pair, as the real challenge listener) that records every request it gets: only a GET or HEAD of one
// well-formed token reaches it, at exactly the URI the template builds.
// Traversal forms (backslash, %5c, %2e%2e, %2f, double slashes, dot-dot) once reached every admin route.
import assert from 'node:assert/strict';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { defaultProxySettings } from '../../src/config.ts';
import { BundleCache } from '../../src/edge/bundle-cache.ts';
import { createNginxProcess } from '../../src/edge/nginx-process.ts';
import { buildRoutingModel } from '../../src/model/routing-model.ts';
import { createTemplateRenderer } from '../../src/render/nunjucks-env.ts';
import { fingerprintBundle, renderConfig } from '../../src/render/render-config.ts';
import { makeChannelKeyPair } from '../support/channel-tls.ts';
import { REPO_LUA_DIR } from '../support/loopback-nginx.ts';
import { oneServiceSnapshot } from '../support/one-service.ts';
import { waitUntil } from '../support/wait.ts';

/** One raw HTTP/1.1 request, byte for byte as written (no client-side normalisation of the target). */
function rawRequest(
  port: number,
  method: string,
  target: string,
  host: string,
  localAddress = '127.0.0.1',
  extraHeaders = '',
): Promise<number> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: '127.0.0.1', localAddress });
    let answer = '';
    socket.setEncoding('latin1');
    socket.setTimeout(5000, () => socket.destroy(new Error(`no answer to ${method} ${target}`)));
    socket.on('data', (chunk: string) => (answer += chunk));
    socket.on('error', reject);
    socket.on('close', () => {
      const status = /^HTTP\/1\.[01] (\d{3})/.exec(answer)?.[1];
      if (status) resolve(Number(status));
      else
        reject(new Error(`no status line for ${method} ${target}: ${JSON.stringify(answer.slice(0, 80))}`));
    });
    // write, not end: nginx takes a half-closed connection for a client that went away (499) while it proxies.
    socket.write(
      `${method} ${target} HTTP/1.1\r\nHost: ${host}\r\n${extraHeaders}Content-Length: 0\r\nConnection: close\r\n\r\n`,
    );
  });
}

async function freePort(): Promise<number> {
  const probe = http.createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', () => resolve()));
  const { port } = probe.address() as AddressInfo;
  await new Promise((resolve) => probe.close(resolve));
  return port;
}

test('the ACME location forwards only GET/HEAD of one token, to a fixed URI; every other form is 404 from nginx', async (t) => {
  const stateDir = await mkdtemp(path.join(os.tmpdir(), 'swarmgate-acme-location-'));
  // nginx's workers (nobody) connect to the ACME relay's unix socket in it.
  await chmod(stateDir, 0o755);
  const seen: string[] = [];
  const channel = await makeChannelKeyPair();
  const controller = https.createServer({ key: channel.key, cert: channel.cert }, (req, res) => {
    seen.push(`${req.method ?? ''} ${req.url ?? ''}`);
    res.writeHead(200, { 'content-type': 'text/plain' }).end('key-authorization');
  });
  await new Promise<void>((resolve) => controller.listen(0, '127.0.0.1', () => resolve()));
  const controllerPort = (controller.address() as AddressInfo).port;
  const listenPort = await freePort();
  const tlsPort = await freePort();
  const proxy = {
    ...defaultProxySettings(),
    accessLog: false,
    peersSocket: path.join(stateDir, 'peers.sock'),
    controllerAddress: `127.0.0.1:${controllerPort}`,
    channelCertFile: channel.certFile,
  };
  const model = buildRoutingModel(oneServiceSnapshot('a.test', ['127.0.0.2'], 9), {
    networks: ['swarmgate'],
  });
  const rendered = renderConfig(
    model,
    { proxy, generator: 'test', luaDir: REPO_LUA_DIR },
    createTemplateRenderer(),
  );
  const files = {
    ...rendered,
    'nginx.conf': (rendered['nginx.conf'] ?? '')
      .replace(/listen 80( default_server)?;/g, `listen 127.0.0.1:${listenPort}$1;`)
      .replace(/listen 443 ssl http2( default_server)?;/g, `listen 127.0.0.1:${tlsPort} ssl http2$1;`)
      .replace('pid /run/swarmgate-nginx.pid;', `pid ${path.join(stateDir, 'nginx.pid')};`),
  };
  const cache = new BundleCache(stateDir);
  const fingerprint = fingerprintBundle(files);
  await cache.stage(fingerprint, files);
  await cache.activate(fingerprint, { version: 1, fingerprint });
  const nginx = createNginxProcess(process.env.SWARMGATE_NGINX ?? 'nginx', proxy.peersSocket);
  t.after(async () => {
    await nginx.stop(5000);
    controller.close();
    controller.closeAllConnections();
    await channel.remove();
    await rm(stateDir, { recursive: true, force: true });
  });
  await nginx.start(cache.currentConfPath);
  const token = 'Ab-c_09xYz';
  await waitUntil(
    'nginx to forward a challenge',
    async () =>
      (await rawRequest(listenPort, 'GET', `/.well-known/acme-challenge/${token}`, 'x.test')) === 200,
    // Slower than the location's rate limit, which this wait would otherwise exhaust.
    { intervalMs: 200 },
  );

  const prefix = '/.well-known/acme-challenge/';
  // Forms that stay under the prefix once nginx has normalised them: nginx itself answers 404 (400 for %00).
  const underPrefix: [string, number][] = [
    [`${prefix}..\\..\\..\\v1/status`, 404],
    [`${prefix}..\\..\\..\\healthz`, 404],
    [`${prefix}..%5c..%5c..%5cv1/status`, 404],
    [`${prefix}..%5C..%5C..%5Chealthz`, 404],
    [`${prefix}/v1/status`, 404],
    [`${prefix}${token}//v1/status`, 404],
    [`${prefix}${token}/`, 404],
    [prefix, 404],
    [`${prefix}${token}.txt`, 404],
    [`${prefix}${token}%00`, 400],
  ];
  // Forms nginx normalises out of the prefix (it decodes %2f and %2e and resolves dot segments): they are
  // requests for another path of that host (the default server's 503, or the host's own service), never the
  // controller's.
  const outOfPrefix = [
    `${prefix}${token}%2f..%2f..%2fv1%2fstatus`,
    `${prefix}${token}%2F..%2F..%2Fhealthz`,
    `${prefix}${token}/..%2f..%2fv1/status`,
    `${prefix}%2e%2e`,
    `${prefix}../../v1/status`,
    `${prefix}%2e%2e/%2e%2e/v1/status`,
    `${prefix}%2E%2E/%2E%2E/healthz`,
    `${prefix}..//..//v1/status`,
    `//.well-known/acme-challenge/..//..//v1/status`,
  ];
  for (const host of ['x.test', 'a.test']) {
    seen.length = 0;
    for (const [target, expected] of underPrefix) {
      assert.equal(await rawRequest(listenPort, 'GET', target, host), expected, `${target} (Host ${host})`);
    }
    for (const target of outOfPrefix) await rawRequest(listenPort, 'GET', target, host);
    for (const method of ['POST', 'PUT', 'DELETE', 'OPTIONS']) {
      const status = await rawRequest(listenPort, method, `${prefix}${token}`, host);
      assert.equal(status, 403, `${method} of a token (Host ${host})`);
    }
    assert.deepEqual(seen, [], `requests that reached the controller through Host ${host}`);

    // A well-formed token reaches it, at exactly the fixed URI: no query, no extra path, for GET and HEAD.
    assert.equal(await rawRequest(listenPort, 'GET', `${prefix}${token}`, host), 200);
    assert.equal(await rawRequest(listenPort, 'HEAD', `${prefix}${token}`, host), 200);
    assert.equal(await rawRequest(listenPort, 'GET', `${prefix}${token}?x=..%5c..%5cv1/status`, host), 200);
    assert.equal(await rawRequest(listenPort, 'GET', `//.well-known//acme-challenge//${token}`, host), 200);
    assert.deepEqual(seen, [
      `GET ${prefix}${token}`,
      `HEAD ${prefix}${token}`,
      `GET ${prefix}${token}`,
      `GET ${prefix}${token}`,
    ]);
  }

  // The rate limit is per visitor, also behind the edge's one ACME relay: a flood from one address is refused
  // (429) while another address still gets its challenge through.
  let refused = 0;
  for (let sent = 0; sent < 60 && refused === 0; sent += 1) {
    if ((await rawRequest(listenPort, 'GET', `${prefix}${token}`, 'x.test', '127.0.0.3')) === 429)
      refused += 1;
  }
  assert.equal(refused, 1, 'a flood from 127.0.0.3 is refused within 60 requests');
  assert.equal(await rawRequest(listenPort, 'GET', `${prefix}${token}`, 'x.test', '127.0.0.1'), 200);

  // A visitor cannot pick its address for the relay: a flood naming another X-Real-IP on every request is still
  // one visitor's.
  let refusedForged = 0;
  for (let sent = 0; sent < 60 && refusedForged === 0; sent += 1) {
    const forged = `X-Real-IP: 198.51.100.${sent + 1}\r\n`;
    if ((await rawRequest(listenPort, 'GET', `${prefix}${token}`, 'x.test', '127.0.0.4', forged)) === 429)
      refusedForged += 1;
  }
  assert.equal(refusedForged, 1, 'a flood from 127.0.0.4 with forged X-Real-IP headers is refused within 60');
});

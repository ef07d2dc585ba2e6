// HTTP/3 (issue 15, item 7) on the lab: a service with swarmgate.http3=on and a Pebble certificate answers over
// QUIC on the edge's HTTPS port (published over UDP by docker-stack.yml), and its HTTPS answers over TCP advertise
// it with Alt-Svc; a service without it advertises nothing and gets no QUIC handshake. The client is the edge
// image's own curl (Debian trixie's, built with HTTP/3: nghttp3 and OpenSSL 3.5), run on the host's network and
// verifying the edge's certificate against Pebble's root.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { HttpsResult } from './support/lab.ts';
import { http3Get } from './support/http3.ts';
import {
  createService,
  EDGE_HTTPS_PORT,
  httpsGet,
  pebbleRoot,
  removeService,
  uniqueName,
  waitFor,
} from './support/lab.ts';

async function waitForHttps(host: string, service: string, root: string): Promise<HttpsResult> {
  return waitFor(
    `a verified HTTPS answer for ${host}`,
    async () => {
      const result = await httpsGet(EDGE_HTTPS_PORT, '/', host, root);
      return result.status === 200 && result.body.includes(`"task":"${service}.`) ? result : undefined;
    },
    { timeoutMs: 90_000, intervalMs: 250 },
  );
}

test('HTTP/3: a service with swarmgate.http3=on answers over QUIC and advertises it; one without it does neither', async (t) => {
  const on = uniqueName('sg-e2e-h3');
  const onHost = `${on}.e2e.test`;
  const off = uniqueName('sg-e2e-tcp');
  const offHost = `${off}.e2e.test`;
  t.after(() => Promise.all([removeService(on), removeService(off)]));
  await createService({
    name: on,
    labels: {
      VIRTUAL_HOST: onHost,
      LETSENCRYPT_HOST: onHost,
      'swarmgate.http3': 'on',
      // The lab publishes the edge's 443 on another host port: Alt-Svc must name the one clients reach.
      EXTERNAL_HTTPS_PORT: String(EDGE_HTTPS_PORT),
    },
  });
  await createService({ name: off, labels: { VIRTUAL_HOST: offHost, LETSENCRYPT_HOST: offHost } });
  const root = await pebbleRoot();

  const onTcp = await waitForHttps(onHost, on, root);
  assert.equal(
    onTcp.headers['alt-svc'],
    `h3=":${EDGE_HTTPS_PORT}"; ma=86400`,
    'HTTPS over TCP advertises h3',
  );
  const offTcp = await waitForHttps(offHost, off, root);
  assert.equal(offTcp.headers['alt-svc'], undefined, 'no Alt-Svc without HTTP/3');

  // The bundle with the certificate is applied (TCP answered with it): QUIC is up in the same nginx reload.
  const started = Date.now();
  const answer = await waitFor(
    `an HTTP/3 answer for ${onHost}`,
    async () => {
      const result = await http3Get(onHost, root);
      return result.ok && result.status === 200 ? result : undefined;
    },
    { timeoutMs: 30_000, intervalMs: 500 },
  );
  t.diagnostic(`first HTTP/3 answer after ${Date.now() - started} ms`);
  assert.equal(answer.version, '3', 'curl spoke HTTP/3');
  assert.match(answer.body, new RegExp(`"task":"${on}\\.`), 'the service answered, through the edge');

  // QUIC with the other name: the catch-all QUIC server refuses the handshake (no certificate for it there).
  const refused = await http3Get(offHost, root);
  assert.equal(refused.ok, false, `no HTTP/3 for ${offHost}: ${refused.version} ${refused.status}`);
  // curl itself failed ("(7) QUIC connection has been shut down" on the lab), not docker.
  assert.match(refused.error, /curl: \((7|35|95)\)/);
});

// Certificates picked by name during the handshake (lua/swarmgate/certificates.lua), in a real nginx on loopback with
// bundles rendered from a model: each host gets its own certificate although its server block names none; a leading
// wildcard host gets its wildcard certificate; a Mozilla-Modern host takes TLS 1.3 only (before, nginx's per-server
// ssl_protocols let TLS 1.2 through) while the others still take TLS 1.2; an unknown name and a client without SNI
// are refused (the default server's placeholder certificate is never sent); a certificate whose key does not belong
// to it fails only its own host's handshakes and the error log names it; with SWARMGATE_DEFAULT_CERT unknown names
// get that one; with SWARMGATE_DEFAULT_HOST the default host keeps its certificate while the others get theirs. And
// port 80 of the hosts that redirect, one shared server block: each host redirects to itself, counted under its name.
import assert from 'node:assert/strict';
import http from 'node:http';
import https from 'node:https';
import { mkdtemp, readFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import type { TestContext } from 'node:test';
import tls from 'node:tls';
import { X509Certificate } from 'node:crypto';
import { buildRoutingModel } from '../../src/model/routing-model.ts';
import type { AvailableCertificate } from '../../src/model/routing-model.ts';
import { bundleCertificatesProblem } from '../../src/render/certificate-pairs.ts';
import { CERTIFICATES_FILE } from '../../src/render/certificates-text.ts';
import { createTemplateRenderer } from '../../src/render/nunjucks-env.ts';
import { renderConfig } from '../../src/render/render-config.ts';
import type { BundleFiles, CertificateMaterial } from '../../src/render/render-config.ts';
import { makeChannelKeyPair } from '../support/channel-tls.ts';
import { servicesSnapshot } from '../support/one-service.ts';
import type { RoutedService } from '../support/one-service.ts';
import {
  freePort,
  loopbackConf,
  loopbackSetup,
  REPO_LUA_DIR,
  startBackend,
  startBundleNginx,
  withConf,
} from '../support/loopback-nginx.ts';
import type { Backend, LoopbackSetup } from '../support/loopback-nginx.ts';

const templates = createTemplateRenderer();

interface Pair extends CertificateMaterial {
  readonly domain: string;
  readonly fingerprint: string;
  readonly remove: () => Promise<void>;
}

/** Certificate name → its pair (each host its own; the wildcard one under a file name of its own). */
const pairs = new Map<string, Pair>();
const backends: Backend[] = [];
let backendPort: number;

const CERTIFICATES: Record<string, string> = {
  'a.example.test': 'a.example.test',
  'b.example.test': 'b.example.test',
  'c.example.test': 'c.example.test',
  'modern.example.test': 'modern.example.test',
  'wild-test': '*.wild.test',
  fallback: 'fallback.invalid',
};

before(async () => {
  for (const [name, domain] of Object.entries(CERTIFICATES)) {
    const made = await makeChannelKeyPair(domain);
    pairs.set(name, {
      domain,
      certificatePem: made.cert,
      privateKeyPem: made.key,
      fingerprint: new X509Certificate(made.cert).fingerprint256,
      remove: made.remove,
    });
  }
  backendPort = await freePort();
  for (let index = 1; index <= 5; index++) backends.push(await startBackend(`127.0.0.${index}`, backendPort));
});

after(async () => {
  await Promise.all(backends.map((backend) => backend.close()));
  await Promise.all([...pairs.values()].map((pair) => pair.remove()));
});

/** A service for the test's hosts; its one task is the loopback backend at 127.0.0.<index + 1>. */
function service(name: string, labels: Record<string, string>, index: number): RoutedService {
  return { name, labels: { ...labels, VIRTUAL_PORT: String(backendPort) }, ips: [`127.0.0.${index + 1}`] };
}

const services = (): RoutedService[] => [
  service('a', { VIRTUAL_HOST: 'a.example.test' }, 0),
  service('b', { VIRTUAL_HOST: 'b.example.test' }, 1),
  service('wild', { VIRTUAL_HOST: '*.wild.test' }, 2),
  service('modern', { VIRTUAL_HOST: 'modern.example.test', SSL_POLICY: 'Mozilla-Modern' }, 3),
  service('c', { VIRTUAL_HOST: 'c.example.test' }, 4),
];

/** The bundle for the five hosts on loopback; `material` may hand nginx a broken pair on purpose. */
function bundle(
  setup: LoopbackSetup,
  defaultHost: string | null = null,
  material: (name: string) => CertificateMaterial | undefined = (name) => pairs.get(name),
  defaultCertificate: string | null = null,
  entries: RoutedService[] = services(),
): BundleFiles {
  const snapshot = servicesSnapshot(entries);
  const certificates: AvailableCertificate[] = [...pairs.entries()].map(([name, pair]) => ({
    name,
    domains: [pair.domain],
    source: 'user',
  }));
  const model = buildRoutingModel(snapshot, { networks: ['swarmgate'], certificates, defaultHost });
  const files = renderConfig(
    model,
    { proxy: setup.proxy, generator: 'test', luaDir: REPO_LUA_DIR, defaultCertificate },
    templates,
    material,
  );
  return withConf(files, loopbackConf(setup, files['nginx.conf'] ?? ''));
}

/** The certificate fingerprint nginx sends for servername (undefined: no SNI), or the handshake's error. */
function handshake(
  setup: LoopbackSetup,
  servername: string | undefined,
  options: tls.ConnectionOptions = {},
): Promise<{ fingerprint: string } | { error: string }> {
  return new Promise((resolve) => {
    const socket = tls.connect(
      {
        host: '127.0.0.1',
        port: setup.tlsPort,
        ...(servername === undefined ? {} : { servername }),
        rejectUnauthorized: false,
        ...options,
      },
      () => {
        resolve({ fingerprint: socket.getPeerX509Certificate()?.fingerprint256 ?? '' });
        socket.end();
      },
    );
    socket.once('error', (error: Error) => resolve({ error: error.message }));
  });
}

/** GET / over HTTPS: the body, or the status when it is not 200. `servername` may differ from the Host sent. */
function httpsGet(
  setup: LoopbackSetup,
  host: string,
  { servername = host, ...options }: { servername?: string } & https.RequestOptions = {},
): Promise<string> {
  return new Promise((resolve, reject) => {
    https
      .get(
        {
          host: '127.0.0.1',
          port: setup.tlsPort,
          servername,
          headers: { host },
          rejectUnauthorized: false,
          agent: false,
          ...options,
        },
        (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (chunk: string) => (body += chunk));
          res.on('end', () => resolve(res.statusCode === 200 ? body : String(res.statusCode)));
        },
      )
      .on('error', reject);
  });
}

async function started(
  t: TestContext,
  build: (setup: LoopbackSetup) => BundleFiles,
): Promise<{ setup: LoopbackSetup; files: BundleFiles }> {
  const stateDir = await mkdtemp(path.join(os.tmpdir(), 'swarmgate-certs-by-name-'));
  const setup = await loopbackSetup(stateDir);
  const files = build(setup);
  await startBundleNginx(t, stateDir, setup, files);
  return { setup, files };
}

const fingerprintOf = (name: string): string => pairs.get(name)?.fingerprint ?? 'unknown';

test('every host gets its own certificate from the Lua; unknown names and no SNI are refused', async (t) => {
  const { setup, files } = await started(t, (setup) => bundle(setup));
  // The hosts picked by name carry no certificate of their own: nginx loads none of them at a reload.
  assert.equal(
    files[CERTIFICATES_FILE],
    '*.wild.test wild-test\na.example.test a.example.test\nb.example.test b.example.test\nc.example.test c.example.test\n' +
      'modern.example.test modern.example.test tls1.3\n',
  );
  assert.deepEqual(
    Object.keys(files).filter((name) => name.startsWith('certs/')),
    [],
    'no certificate files: the hosts picked by name are sections of certificates.pem, the placeholder comes with the image',
  );
  // The default server's placeholder is never sent: an unknown name is refused first.
  assert.match(files['nginx.conf'] ?? '', /ssl_certificate "[^"]*test-only\.crt";/);
  const conf = files['nginx.conf'] ?? '';
  assert.match(
    conf,
    /server_name "a\.example\.test";\n\s+# Certificate "a\.example\.test": picked during the handshake/,
  );

  assert.deepEqual(await handshake(setup, 'a.example.test'), {
    fingerprint: fingerprintOf('a.example.test'),
  });
  assert.deepEqual(await handshake(setup, 'b.example.test'), {
    fingerprint: fingerprintOf('b.example.test'),
  });
  assert.deepEqual(await handshake(setup, 'C.Example.Test'), {
    fingerprint: fingerprintOf('c.example.test'),
  });
  assert.deepEqual(await handshake(setup, 'x.wild.test'), { fingerprint: fingerprintOf('wild-test') });
  assert.deepEqual(await handshake(setup, 'modern.example.test'), {
    fingerprint: fingerprintOf('modern.example.test'),
  });
  // The request goes to the host's own server block.
  assert.equal(await httpsGet(setup, 'b.example.test'), '127.0.0.2');
  assert.equal(await httpsGet(setup, 'x.wild.test'), '127.0.0.3');

  const unknown = await handshake(setup, 'unknown.example.test');
  assert.ok('error' in unknown, `an unknown name got a certificate: ${JSON.stringify(unknown)}`);
  assert.match(unknown.error, /unrecognized name|alert/i);
  const noSni = await handshake(setup, undefined);
  assert.ok('error' in noSni, `a client without SNI got a certificate: ${JSON.stringify(noSni)}`);

  // Protocols: the Modern host takes TLS 1.3 only (set while the client hello is read: nginx's own per-server
  // ssl_protocols came too late and let TLS 1.2 through), the others still take TLS 1.2.
  const tls12 = { maxVersion: 'TLSv1.2', minVersion: 'TLSv1.2' } as const;
  assert.deepEqual(await handshake(setup, 'a.example.test', tls12), {
    fingerprint: fingerprintOf('a.example.test'),
  });
  assert.ok('error' in (await handshake(setup, 'modern.example.test', tls12)));
});

test('a certificate whose key does not belong to it fails only its own host, and the error log names it', async (t) => {
  const other = pairs.get('a.example.test');
  assert.ok(other);
  const broken = (name: string): CertificateMaterial | undefined =>
    name === 'b.example.test' ? { ...pairs.get(name)!, privateKeyPem: other.privateKeyPem } : pairs.get(name);
  // The edge agent refuses such a bundle before nginx sees it.
  const { setup, files } = await started(t, (setup) => bundle(setup, null, broken));
  assert.match(
    bundleCertificatesProblem(files, new Set()) ?? '',
    /certificate b\.example\.test: the key does not belong to the certificate/,
  );
  // Had it reached nginx anyway: that host's handshake fails, the others are untouched.
  const failed = await handshake(setup, 'b.example.test');
  assert.ok('error' in failed, `the broken pair was served: ${JSON.stringify(failed)}`);
  assert.deepEqual(await handshake(setup, 'a.example.test'), {
    fingerprint: fingerprintOf('a.example.test'),
  });
  assert.deepEqual(await handshake(setup, 'c.example.test'), {
    fingerprint: fingerprintOf('c.example.test'),
  });
  const log = await readFile(setup.errorLog, 'utf8');
  assert.match(log, /swarmgate: cannot set certificate b\.example\.test for b\.example\.test/);
});

test('with a default host, it keeps its certificate and answers unknown names; the others get theirs', async (t) => {
  const { setup, files } = await started(t, (setup) => bundle(setup, 'c.example.test'));
  // The default host keeps its certificate in its own server block: listed so the Lua leaves its name to nginx.
  assert.match(files[CERTIFICATES_FILE] ?? '', /^c\.example\.test -$/m);
  assert.deepEqual(await handshake(setup, 'c.example.test'), {
    fingerprint: fingerprintOf('c.example.test'),
  });
  assert.deepEqual(await handshake(setup, 'unknown.example.test'), {
    fingerprint: fingerprintOf('c.example.test'),
  });
  assert.deepEqual(await handshake(setup, 'a.example.test'), {
    fingerprint: fingerprintOf('a.example.test'),
  });
  assert.deepEqual(await handshake(setup, 'x.wild.test'), { fingerprint: fingerprintOf('wild-test') });
  assert.equal(await httpsGet(setup, 'a.example.test'), '127.0.0.1');
});

test('with SWARMGATE_DEFAULT_CERT, unknown names and clients without SNI get it; every host still gets its own', async (t) => {
  const { setup, files } = await started(t, (setup) => bundle(setup, null, undefined, 'fallback'));
  assert.match(files['nginx.conf'] ?? '', /ssl_certificate "certs\/fallback\.crt";/);
  assert.deepEqual(await handshake(setup, 'unknown.example.test'), {
    fingerprint: fingerprintOf('fallback'),
  });
  assert.deepEqual(await handshake(setup, undefined), { fingerprint: fingerprintOf('fallback') });
  assert.deepEqual(await handshake(setup, 'a.example.test'), {
    fingerprint: fingerprintOf('a.example.test'),
  });
  assert.deepEqual(await handshake(setup, 'x.wild.test'), { fingerprint: fingerprintOf('wild-test') });
});

test("a name as nginx reads it (port suffix, case, trailing dot) gets its host's certificate, never the placeholder", async (t) => {
  const { setup } = await started(t, (setup) => bundle(setup));
  // nginx cuts the client's server name at ":" and drops a trailing dot before it picks a server; the Lua did not,
  // and the handshake went on with the default server's placeholder (then another host's certificate).
  for (const [servername, certificate] of [
    ['b.example.test:443', 'b.example.test'],
    ['B.EXAMPLE.TEST.:1', 'b.example.test'],
    ['x.wild.test:9', 'wild-test'],
  ] as const) {
    assert.deepEqual(
      await handshake(setup, servername),
      { fingerprint: fingerprintOf(certificate) },
      servername,
    );
  }
  assert.ok('error' in (await handshake(setup, 'unknown.example.test:1')));
  const tls12 = { maxVersion: 'TLSv1.2', minVersion: 'TLSv1.2' } as const;
  assert.ok('error' in (await handshake(setup, 'modern.example.test:1', tls12)), 'Modern by any spelling');
});

test('Mozilla-Modern: a request that reaches the host over a TLS 1.2 connection made for another name gets 421', async (t) => {
  const { setup } = await started(t, (setup) => bundle(setup));
  const tls12 = { maxVersion: 'TLSv1.2', minVersion: 'TLSv1.2' } as const;
  // Before, the handshake for a.example.test chose TLS 1.2, and the request for modern.example.test went through.
  assert.equal(
    await httpsGet(setup, 'modern.example.test', { servername: 'a.example.test', ...tls12 }),
    '421',
  );
  assert.equal(await httpsGet(setup, 'a.example.test', tls12), '127.0.0.1');
  assert.equal(await httpsGet(setup, 'modern.example.test'), '127.0.0.4');
});

test('a Modern wildcard picked by name leaves TLS 1.2 to a name under it whose server block has its own context', async (t) => {
  const entries = [
    service('wild', { VIRTUAL_HOST: '*.wild.test', SSL_POLICY: 'Mozilla-Modern' }, 2),
    service('www', { VIRTUAL_HOST: 'www.wild.test' }, 0),
  ];
  const { setup, files } = await started(t, (setup) =>
    bundle(setup, 'www.wild.test', undefined, null, entries),
  );
  assert.equal(files[CERTIFICATES_FILE], '*.wild.test wild-test tls1.3\nwww.wild.test -\n');
  const tls12 = { maxVersion: 'TLSv1.2', minVersion: 'TLSv1.2' } as const;
  // The default host (its own context, Intermediate) takes TLS 1.2; before, the wildcard's limit reached it.
  assert.deepEqual(await handshake(setup, 'www.wild.test', tls12), {
    fingerprint: fingerprintOf('wild-test'),
  });
  assert.ok('error' in (await handshake(setup, 'x.wild.test', tls12)));
  assert.deepEqual(await handshake(setup, 'x.wild.test'), { fingerprint: fingerprintOf('wild-test') });
});

/** GET on nginx's port 80 for host: the status and Location. */
function plainGet(
  setup: LoopbackSetup,
  host: string,
  method = 'GET',
): Promise<{ status: number; location: string }> {
  return new Promise((resolve, reject) => {
    http
      .request(
        {
          host: '127.0.0.1',
          port: setup.listenPort,
          method,
          path: '/a?b=1',
          headers: { host },
          agent: false,
        },
        (res) => {
          res.resume();
          res.on('end', () =>
            resolve({ status: res.statusCode ?? 0, location: String(res.headers.location ?? '') }),
          );
        },
      )
      .on('error', reject)
      .end();
  });
}

/** nginx's own counters (GET /metrics on the agent's local socket): "key<TAB>value" lines. */
function rawMetrics(setup: LoopbackSetup): Promise<string> {
  return new Promise((resolve, reject) => {
    http
      .get({ socketPath: setup.proxy.peersSocket, path: '/metrics', agent: false }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (text += chunk));
        res.on('end', () => resolve(text));
      })
      .on('error', reject);
  });
}

test('port 80 of the hosts that redirect is one server block; each host redirects to itself and is counted under its name', async (t) => {
  const { setup, files } = await started(t, (setup) => bundle(setup));
  const conf = files['nginx.conf'] ?? '';
  assert.match(
    conf,
    /server_name\n {12}"a\.example\.test"\n {12}"b\.example\.test"\n {12}"c\.example\.test"\n {12}"modern\.example\.test"\n {12};/,
  );
  assert.deepEqual(await plainGet(setup, 'b.example.test'), {
    status: 301,
    location: 'https://b.example.test/a?b=1',
  });
  assert.deepEqual(await plainGet(setup, 'C.example.test', 'POST'), {
    status: 308,
    location: 'https://c.example.test/a?b=1',
  });
  // The wildcard host keeps a block of its own (only exact names bound a count by $host).
  assert.deepEqual(await plainGet(setup, 'x.wild.test'), {
    status: 301,
    location: 'https://x.wild.test/a?b=1',
  });
  assert.equal((await plainGet(setup, 'unknown.example.test')).status, 503);
  const counted = (text: string, host: string): number =>
    Number(
      /^req\t([^\t]+)\t\t3xx\t(\d+)$/m.exec(
        text
          .split('\n')
          .filter((line) => line.startsWith(`req\t${host}\t`))
          .join('\n'),
      )?.[2] ?? 0,
    );
  let text = '';
  for (let attempt = 0; attempt < 50; attempt++) {
    text = await rawMetrics(setup);
    const all = ['b.example.test', 'c.example.test', '*.wild.test'].every(
      (host) => counted(text, host) === 1,
    );
    if (all) break;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  assert.equal(counted(text, 'b.example.test'), 1, text);
  assert.equal(counted(text, 'c.example.test'), 1, text);
  assert.equal(counted(text, 'a.example.test'), 0, "never under the block's first name");
  assert.equal(counted(text, '*.wild.test'), 1);
});

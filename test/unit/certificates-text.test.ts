// certificates.txt (the hosts whose certificate nginx picks during the handshake) and the checks that replace what
// `nginx -t` checked when every server block loaded its own certificate: grammar, both files present, the key
// belonging to the certificate; a pair found sound before is not checked again.
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { selfSigned } from '../support/fake-acme.ts';
import { bundleCertificatesProblem, certificatePairProblem } from '../../src/render/certificate-pairs.ts';
import {
  fitsCertificatePems,
  formatCertificatePems,
  formatCertificates,
  parseCertificatePems,
  parseCertificates,
} from '../../src/render/certificates-text.ts';

const fixtures = new URL('../fixtures/', import.meta.url);
const chain = readFileSync(new URL('test-only.crt', fixtures), 'utf8');
const key = readFileSync(new URL('test-only.key', fixtures), 'utf8');
const otherKey = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  .privateKey.export({ type: 'pkcs8', format: 'pem' })
  .toString();

test('certificates.txt: sorted, one line per host, the TLS 1.3 mark kept; parse gives back what was formatted', () => {
  const entries = [
    { name: 'shop.example.com', certificate: 'shop', tls13Only: false },
    { name: '*.example.com', certificate: 'wildcard_example', tls13Only: false },
    { name: 'api.example.com', certificate: 'api.example.com', tls13Only: true },
  ];
  const text = formatCertificates(entries);
  assert.equal(
    text,
    '*.example.com wildcard_example\napi.example.com api.example.com tls1.3\nshop.example.com shop\n',
  );
  assert.deepEqual(parseCertificates(text), {
    ok: true,
    entries: [...entries].sort((a, b) => (a.name < b.name ? -1 : 1)),
  });
  assert.deepEqual(parseCertificates(''), { ok: true, entries: [] });
  // "-": the name's server block has a TLS context of its own; the Lua leaves it to nginx.
  const own = 'a.example.com -\nb.example.com site\n';
  assert.equal(
    formatCertificates([
      { name: 'b.example.com', certificate: 'site', tls13Only: false },
      { name: 'a.example.com', certificate: '-', tls13Only: false },
    ]),
    own,
  );
  assert.deepEqual(parseCertificates(own), {
    ok: true,
    entries: [
      { name: 'a.example.com', certificate: '-', tls13Only: false },
      { name: 'b.example.com', certificate: 'site', tls13Only: false },
    ],
  });
  assert.equal(parseCertificates('a.example.com - tls1.3\n').ok, false, 'nginx sets its own protocols there');
});

test('certificates.txt: what the Lua must never see is refused, with the line', () => {
  const cases: [string, RegExp][] = [
    ['a.example.com a', /newline/],
    ['a.example.com\n', /line 1 is not "name certificate \[tls1\.3\]"/],
    ['a.example.com a tls1.2\n', /line 1 is not/],
    ['a.example.com a tls1.3 x\n', /line 1 is not/],
    ['~^a$ a\n', /line 1: ~\^a\$ is not a host name/],
    ['www.* a\n', /is not a host name/],
    ['A.example.com a\n', /is not a host name/],
    ['a.example.com ../key\n', /line 1: \.\.\/key is not a certificate name/],
    ['b.example.com b\na.example.com a\n', /line 2: a\.example\.com is out of order or repeated/],
    ['a.example.com a\na.example.com b\n', /line 2: a\.example\.com is out of order or repeated/],
  ];
  for (const [text, reason] of cases) {
    const parsed = parseCertificates(text);
    assert.equal(parsed.ok, false, JSON.stringify(text));
    if (!parsed.ok) assert.match(parsed.reason, reason, JSON.stringify(text));
  }
  assert.throws(
    () =>
      formatCertificates([
        { name: 'a.example.com', certificate: 'a', tls13Only: false },
        { name: 'a.example.com', certificate: 'b', tls13Only: false },
      ]),
    { code: 'ERR_TEMPLATE' },
  );
});

test('a pair is sound when OpenSSL loads it as nginx would: the key belongs, the whole chain parses, security level 2', () => {
  assert.equal(certificatePairProblem(chain, key), null);
  // nginx -t refused both of these ("ee key too small", a damaged intermediate); a lighter check took them.
  const weak = selfSigned(['weak.example.com'], 2, 'rsa:1024');
  assert.match(
    certificatePairProblem(weak.certificatePem, weak.privateKeyPem) ?? '',
    /^OpenSSL refuses the pair: .*key too small/,
  );
  const damagedIntermediate = `${chain}-----BEGIN CERTIFICATE-----\nMIIBpDCCAUugAwIBAgIU\n-----END CERTIFICATE-----\n`;
  assert.match(certificatePairProblem(damagedIntermediate, key) ?? '', /^OpenSSL refuses the pair: /);
  assert.equal(certificatePairProblem(chain, otherKey), 'the key does not belong to the certificate');
  assert.match(certificatePairProblem('not a certificate', key) ?? '', /^the certificate does not parse/);
  assert.match(certificatePairProblem(chain, 'not a key') ?? '', /^the key does not parse/);
});

test('certificates.pem: one section per certificate, sorted; parse gives back the PEM text', () => {
  const text = formatCertificatePems([
    { name: 'site', certificatePem: chain, privateKeyPem: key },
    { name: 'api', certificatePem: chain.trimEnd(), privateKeyPem: key },
  ]);
  assert.match(text, /^certificate api\n-----BEGIN CERTIFICATE-----\n/);
  assert.match(text, /\nkey\n-----BEGIN PRIVATE KEY-----\n/);
  assert.match(text, /\n-----END PRIVATE KEY-----\nend\ncertificate site\n/);
  const parsed = parseCertificatePems(text);
  assert.ok(parsed.ok);
  assert.deepEqual([...parsed.pems.keys()], ['api', 'site']);
  assert.deepEqual(parsed.pems.get('api'), { name: 'api', certificatePem: chain, privateKeyPem: key });
  for (const [broken, reason] of [
    ['certificate a\nx\nkey\ny\n', /certificate a has no "key" and "end" lines/],
    ['certificate b\nx\nkey\ny\nend\ncertificate a\nx\nkey\ny\nend\n', /certificate a is out of order/],
    ['junk\n', /line 1 is not "certificate <name>"/],
    ['certificate ../a\nx\nkey\ny\nend\n', /line 1 is not/],
  ] as const) {
    const result = parseCertificatePems(broken);
    assert.equal(result.ok, false);
    if (!result.ok) assert.match(result.reason, reason);
  }
  assert.throws(
    () => formatCertificatePems([{ name: 'a', certificatePem: 'x\nend\n', privateKeyPem: key }]),
    { code: 'ERR_TEMPLATE' },
  );
});

test('a pair with a line "key" or "end" between its PEM blocks stays a file of its own, never a section', () => {
  assert.equal(fitsCertificatePems({ certificatePem: chain, privateKeyPem: key }), true);
  assert.equal(fitsCertificatePems({ certificatePem: `${chain}end\n`, privateKeyPem: key }), false);
  assert.equal(fitsCertificatePems({ certificatePem: chain, privateKeyPem: `key\r\n${key}` }), false);
});

test('a bundle: its certificates.txt, the certificates.pem sections it names and their pairs; a pair found sound is remembered, an unsound one never', () => {
  const files = {
    'certificates.txt': 'a.example.com site\nb.example.com site\nc.example.com -\n',
    'certificates.pem': formatCertificatePems([{ name: 'site', certificatePem: chain, privateKeyPem: key }]),
  };
  const sound = new Set<string>();
  assert.equal(bundleCertificatesProblem(files, sound), null);
  assert.equal(sound.size, 1, 'one pair, named twice, checked once');
  assert.equal(
    bundleCertificatesProblem({ 'nginx.conf': '' }, sound),
    null,
    'no certificates.txt: nothing to check',
  );
  assert.equal(
    bundleCertificatesProblem(
      {
        ...files,
        'certificates.pem': formatCertificatePems([
          { name: 'site', certificatePem: chain, privateKeyPem: otherKey },
        ]),
      },
      sound,
    ),
    'certificate site: the key does not belong to the certificate',
  );
  assert.equal(sound.size, 1, 'a pair found unsound is never remembered as sound');
  assert.equal(
    bundleCertificatesProblem({ 'certificates.txt': files['certificates.txt'] }, sound),
    'certificates.txt names certificate site, which certificates.pem lacks',
  );
  assert.match(
    bundleCertificatesProblem({ ...files, 'certificates.txt': 'x' }, sound) ?? '',
    /^certificates\.txt: /,
  );
  assert.match(
    bundleCertificatesProblem({ ...files, 'certificates.pem': 'x\n' }, sound) ?? '',
    /^certificates\.pem: /,
  );
});

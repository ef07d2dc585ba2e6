// The model's certificate lookups by name and domain (indexCertificates) answer what the first match of a scan of
// the sorted list answered: a property over random certificates and hosts, with wildcards, case and repeats.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { coversHost, coveringCertificate, indexCertificates } from '../../src/model/routing-model.ts';
import type { AvailableCertificate } from '../../src/model/routing-model.ts';

const label = fc.constantFrom('a', 'b', 'shop', 'api', 'x');
const domain = fc
  .tuple(fc.boolean(), fc.array(label, { minLength: 1, maxLength: 3 }), fc.boolean())
  .map(([wildcard, labels, upper]) => {
    const name = `${wildcard ? '*.' : ''}${labels.join('.')}.test`;
    return upper ? name.toUpperCase() : name;
  });
const certificate = fc.record({
  name: fc.constantFrom('c1', 'c2', 'c3', 'c4', 'c5'),
  domains: fc.array(domain, { minLength: 1, maxLength: 3 }),
  source: fc.constantFrom('user' as const, 'acme' as const),
});

test('the covering certificate is the first operator certificate a scan of the list finds', () => {
  fc.assert(
    fc.property(
      fc.array(certificate, { maxLength: 12 }),
      fc.array(domain, { maxLength: 8 }),
      (list, hosts) => {
        const available: AvailableCertificate[] = list;
        const index = indexCertificates(available, []);
        for (const host of hosts.filter((name) => !name.startsWith('*'))) {
          const scanned = available.find((cert) => cert.source === 'user' && coversHost(cert.domains, host));
          assert.equal(coveringCertificate(index, host), scanned, host);
        }
      },
    ),
    { numRuns: 500, seed: 20261126 },
  );
});

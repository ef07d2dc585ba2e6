// The check `nginx -t` no longer makes for the certificates in certificates.txt (nginx reads them only during a
// handshake, lua/swarmgate/certificates.lua): each certificate parses, its key parses, and the key belongs to it.
// The controller checks a certificate before it is used, the edge agent checks every bundle before applying it.
import { createHash, createPrivateKey, X509Certificate } from 'node:crypto';
import type { BundleFiles } from './render-config.ts';
import {
  CERTIFICATE_PEMS_FILE,
  CERTIFICATES_FILE,
  parseCertificatePems,
  parseCertificates,
} from './certificates-text.ts';

/** Why this chain and key cannot serve a handshake, or null when they can. */
export function certificatePairProblem(certificatePem: string, privateKeyPem: string): string | null {
  let certificate: X509Certificate;
  try {
    certificate = new X509Certificate(certificatePem);
  } catch (error) {
    return `the certificate does not parse: ${(error as Error).message}`;
  }
  try {
    if (!certificate.checkPrivateKey(createPrivateKey(privateKeyPem))) {
      return 'the key does not belong to the certificate';
    }
  } catch (error) {
    return `the key does not parse: ${(error as Error).message}`;
  }
  return null;
}

/**
 * Checks the certificates a bundle's certificates.txt names: both files' grammar, every named certificate present in
 * certificates.pem, every pair sound. `checked` holds digests of pairs found sound before (a bundle usually changes
 * few certificates, and a check costs ~0.05 ms per pair); sound pairs are added to it. Returns what is wrong, or null.
 */
export function bundleCertificatesProblem(files: BundleFiles, checked: Set<string>): string | null {
  const text = files[CERTIFICATES_FILE];
  const pemText = files[CERTIFICATE_PEMS_FILE];
  if (text === undefined && pemText === undefined) return null;
  const parsed = parseCertificates(text ?? '');
  if (!parsed.ok) return `${CERTIFICATES_FILE}: ${parsed.reason}`;
  const pems = parseCertificatePems(pemText ?? '');
  if (!pems.ok) return `${CERTIFICATE_PEMS_FILE}: ${pems.reason}`;
  for (const name of new Set(parsed.entries.map((entry) => entry.certificate))) {
    const pem = pems.pems.get(name);
    if (pem === undefined)
      return `${CERTIFICATES_FILE} names certificate ${name}, which ${CERTIFICATE_PEMS_FILE} lacks`;
    const digest = createHash('sha256')
      .update(pem.certificatePem)
      .update('\0')
      .update(pem.privateKeyPem)
      .digest('hex');
    if (checked.has(digest)) continue;
    const problem = certificatePairProblem(pem.certificatePem, pem.privateKeyPem);
    if (problem) return `certificate ${name}: ${problem}`;
    checked.add(digest);
  }
  return null;
}

// The check `nginx -t` no longer makes for the certificates in certificates.txt (nginx reads them only during a
// handshake, lua/swarmgate/certificates.lua): each certificate parses, its key parses, and the key belongs to it.
// The controller checks a certificate before it is used, the edge agent checks every bundle before applying it.
import { createHash, createPrivateKey, X509Certificate } from 'node:crypto';
import type { BundleFiles } from './render-config.ts';
import { CERTIFICATES_FILE, parseCertificates } from './certificates-text.ts';

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
 * Checks the certificates a bundle's certificates.txt names: the file's grammar, both files present, every pair
 * sound. `checked` holds digests of pairs found sound before (a bundle usually changes few certificates, and a
 * check costs ~0.1 ms per pair); sound pairs are added to it. Returns what is wrong, or null.
 */
export function bundleCertificatesProblem(files: BundleFiles, checked: Set<string>): string | null {
  const text = files[CERTIFICATES_FILE];
  if (text === undefined) return null;
  const parsed = parseCertificates(text);
  if (!parsed.ok) return `${CERTIFICATES_FILE}: ${parsed.reason}`;
  for (const name of new Set(parsed.entries.map((entry) => entry.certificate))) {
    const chain = files[`certs/${name}.crt`];
    const key = files[`certs/${name}.key`];
    if (chain === undefined || key === undefined) {
      return `${CERTIFICATES_FILE} names certificate ${name}, but the bundle lacks certs/${name}.crt or .key`;
    }
    const digest = createHash('sha256').update(chain).update('\0').update(key).digest('hex');
    if (checked.has(digest)) continue;
    const problem = certificatePairProblem(chain, key);
    if (problem) return `certificate ${name}: ${problem}`;
    checked.add(digest);
  }
  return null;
}

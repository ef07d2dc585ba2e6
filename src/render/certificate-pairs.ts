// The check `nginx -t` no longer makes for the certificates in certificates.txt (nginx reads them only during a
// handshake, lua/swarmgate/certificates.lua): each certificate parses, its key parses, and the key belongs to it.
// The controller checks a certificate before it is used, the edge agent checks every bundle before applying it.
import { createHash, createPrivateKey, X509Certificate } from 'node:crypto';
import { createSecureContext } from 'node:tls';
import type { BundleFiles } from './render-config.ts';
import {
  CERTIFICATE_PEMS_FILE,
  CERTIFICATES_FILE,
  OWN_CONTEXT,
  parseCertificatePems,
  parseCertificates,
} from './certificates-text.ts';

/**
 * Why this chain and key cannot serve a handshake, or null when they can. OpenSSL loads them as nginx would: every
 * certificate of the chain, the key against the first, and Debian's security level 2 (an RSA key under 2,048 bits,
 * a SHA-1 signature: nginx -t refused those, so this must too).
 */
export function certificatePairProblem(certificatePem: string, privateKeyPem: string): string | null {
  try {
    new X509Certificate(certificatePem);
  } catch (error) {
    return `the certificate does not parse: ${(error as Error).message}`;
  }
  try {
    createPrivateKey(privateKeyPem);
  } catch (error) {
    return `the key does not parse: ${(error as Error).message}`;
  }
  try {
    createSecureContext({ cert: certificatePem, key: privateKeyPem, ciphers: 'DEFAULT:@SECLEVEL=2' });
  } catch (error) {
    const message = (error as Error).message;
    return /key values mismatch/i.test(message)
      ? 'the key does not belong to the certificate'
      : `OpenSSL refuses the pair: ${message}`;
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
  const named = parsed.entries.map((entry) => entry.certificate).filter((name) => name !== OWN_CONTEXT);
  for (const name of new Set(named)) {
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

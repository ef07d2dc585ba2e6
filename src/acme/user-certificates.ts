// Operator certificates: Docker secrets mounted into the controller as NAME.crt (chain) and NAME.key, e.g.
//   secrets: [{ source: shop_crt, target: shop.example.com.crt }, { source: shop_key, target: shop.example.com.key }]
import { X509Certificate } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { certificatePairProblem } from '../render/certificate-pairs.ts';

export interface LoadedCertificate {
  readonly name: string;
  readonly domains: readonly string[];
  readonly certificatePem: string;
  readonly privateKeyPem: string;
  readonly notBefore: string;
  readonly notAfter: string;
}

/** Names (DNS SANs, else the CN) and validity of the first certificate in a PEM chain. */
export function describeCertificate(pem: string): { domains: string[]; notBefore: string; notAfter: string } {
  const certificate = new X509Certificate(pem);
  const sans = (certificate.subjectAltName ?? '')
    .split(',')
    .map((entry) => entry.trim())
    .filter((entry) => entry.startsWith('DNS:'))
    .map((entry) => entry.slice(4).toLowerCase());
  const commonName = /CN=([^\n,]+)/.exec(certificate.subject)?.[1]?.toLowerCase();
  return {
    domains: sans.length > 0 ? sans : commonName ? [commonName] : [],
    notBefore: new Date(certificate.validFrom).toISOString(),
    notAfter: new Date(certificate.validTo).toISOString(),
  };
}

export async function readUserCertificates(
  dir: string,
): Promise<{ certificates: LoadedCertificate[]; problems: { name: string; reason: string }[] }> {
  let entries: string[];
  try {
    entries = await readdir(dir);
  } catch {
    return { certificates: [], problems: [] };
  }
  const certificates: LoadedCertificate[] = [];
  const problems: { name: string; reason: string }[] = [];
  for (const entry of entries.filter((file) => file.endsWith('.crt')).sort()) {
    const name = entry.slice(0, -4);
    if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/.test(name)) continue;
    try {
      const certificatePem = await readFile(path.join(dir, entry), 'utf8');
      const privateKeyPem = await readFile(path.join(dir, `${name}.key`), 'utf8');
      const { domains, notBefore, notAfter } = describeCertificate(certificatePem);
      // As OpenSSL in nginx loads it (the whole chain, security level 2): nginx -t no longer reads most certificates.
      const unusable = certificatePairProblem(certificatePem, privateKeyPem);
      if (unusable) {
        problems.push({ name, reason: `${name}.crt/${name}.key: ${unusable}` });
        continue;
      }
      certificates.push({ name, domains, certificatePem, privateKeyPem, notBefore, notAfter });
    } catch (error) {
      problems.push({ name, reason: `cannot load ${name}.crt/${name}.key: ${(error as Error).message}` });
    }
  }
  return { certificates, problems };
}

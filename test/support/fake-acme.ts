// A fake ACME CA: issues real (self-signed, openssl-made) certificates with a chosen lifetime, or fails on demand.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { AcmePort, IssuedCertificate, OrderInput } from '../../src/acme/acme-adapter.ts';

export class FakeAcme implements AcmePort {
  orders: OrderInput[] = [];
  accountKeys = 0;
  /** Orders fail while this is above zero (and count it down). */
  failNext = 0;
  lifetimeDays = 90;

  async createAccountKey(): Promise<string> {
    this.accountKeys++;
    return `fake-account-key-${this.accountKeys}`;
  }

  async order(input: OrderInput): Promise<IssuedCertificate> {
    this.orders.push(input);
    if (this.failNext > 0) {
      this.failNext--;
      throw new Error('fake CA is unavailable');
    }
    return { ...selfSigned(input.domains, this.lifetimeDays), accountUrl: 'https://ca.test/acct/1' };
  }
}

/** A self-signed certificate and its key, made by openssl; `key` names another kind (e.g. a weak 'rsa:1024'). */
export function selfSigned(
  domains: readonly string[],
  days: number,
  key: 'ec' | 'rsa:1024' = 'ec',
): { certificatePem: string; privateKeyPem: string } {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'swarmgate-cert-'));
  try {
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        ...(key === 'ec' ? ['ec', '-pkeyopt', 'ec_paramgen_curve:P-256'] : [key]),
        '-nodes',
        '-days',
        String(days),
        '-subj',
        `/CN=${domains[0] ?? 'test'}`,
        '-addext',
        `subjectAltName=${domains.map((d) => `DNS:${d}`).join(',')}`,
        '-keyout',
        path.join(dir, 'key.pem'),
        '-out',
        path.join(dir, 'cert.pem'),
      ],
      { stdio: 'ignore' },
    );
    return {
      certificatePem: readFileSync(path.join(dir, 'cert.pem'), 'utf8'),
      privateKeyPem: readFileSync(path.join(dir, 'key.pem'), 'utf8'),
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

// The only file importing acme-client. It turns "certificate for these names" into an ACME order with HTTP-01.
import acme from 'acme-client';
import { Resolver } from 'node:dns';
import type { LookupAddress, LookupOptions } from 'node:dns';
import https from 'node:https';
import { isIP } from 'node:net';
import { SwarmgateError } from '../errors.ts';

export interface ChallengeResponder {
  /** The edges proxy /.well-known/acme-challenge/ to the controller, which answers from here. */
  add(token: string, keyAuthorization: string): void;
  remove(token: string): void;
}

export interface OrderInput {
  readonly directoryUrl: string;
  readonly accountKeyPem: string;
  readonly accountUrl: string | null;
  readonly email: string | null;
  readonly domains: readonly string[];
  readonly challenges: ChallengeResponder;
}

export interface IssuedCertificate {
  readonly certificatePem: string;
  readonly privateKeyPem: string;
  readonly accountUrl: string;
}

export interface AcmePort {
  createAccountKey(): Promise<string>;
  order(input: OrderInput): Promise<IssuedCertificate>;
}

/** `caBundlePem`: extra CAs to trust for the ACME server itself (a private CA, or Pebble in tests). */
export function createAcmeAdapter(caBundlePem: string | null): AcmePort {
  // acme-client sends every request through its one shared axios instance. Without a timeout, a CA that
  // accepts a connection and never answers would hold an order (and its queue slot) forever.
  acme.axios.defaults.timeout = 30_000;
  // acme-client retries a request that got no answer 5 times, 5 s × attempt apart (75 s). Fail sooner and let the
  // certificate manager's own backoff, which is reported, handle longer outages.
  const defaults = acme.axios.defaults as unknown as { acmeSettings?: Record<string, number> };
  defaults.acmeSettings = { ...defaults.acmeSettings, retryMaxAttempts: 3, retryDefaultDelay: 2 };
  acme.axios.defaults.httpsAgent = new https.Agent({
    keepAlive: true,
    lookup: resolveWithoutThreadpool,
    ...(caBundlePem ? { ca: caBundlePem } : {}),
  });
  return {
    async createAccountKey() {
      return (await acme.crypto.createPrivateEcdsaKey('P-256')).toString();
    },
    async order(input) {
      const client = new acme.Client({
        directoryUrl: input.directoryUrl,
        // No accountUrl: the key is the account's identity, and looking it up (a 200 for an existing key) also
        // survives a CA that has forgotten the account URL (a test CA after a restart).
        accountKey: input.accountKeyPem,
        backoffAttempts: 10,
        backoffMin: 1000,
        backoffMax: 10_000,
      });
      const [key, csr] = await acme.crypto.createCsr(
        { commonName: input.domains[0], altNames: [...input.domains] },
        await acme.crypto.createPrivateEcdsaKey('P-256'),
      );
      try {
        const certificatePem = await client.auto({
          csr,
          email: input.email ?? undefined,
          termsOfServiceAgreed: true,
          challengePriority: ['http-01'],
          // The CA reaches the edges from outside; a self-check from inside the cluster may not (no hairpin).
          skipChallengeVerification: true,
          challengeCreateFn: (_authz, challenge, keyAuthorization) => {
            input.challenges.add(challenge.token, keyAuthorization);
            return Promise.resolve();
          },
          challengeRemoveFn: (_authz, challenge) => {
            input.challenges.remove(challenge.token);
            return Promise.resolve();
          },
        });
        return { certificatePem, privateKeyPem: key.toString(), accountUrl: client.getAccountUrl() };
      } catch (error) {
        throw new SwarmgateError(
          'ERR_ACME',
          `ACME order for ${input.domains.join(', ')} failed: ${(error as Error).message}`,
          {},
          error,
        );
      }
    },
  };
}

/**
 * DNS for the ACME client through c-ares instead of getaddrinfo: getaddrinfo blocks a libuv threadpool thread for as
 * long as the resolver waits, and a CA whose name does not resolve (an outage, a closed network) would then starve
 * the file operations the reconcile loop needs. Routing must never wait on the CA.
 */
// Short DNS timeouts: a CA name that does not answer fails the attempt in seconds, and the order is retried later.
const resolver = new Resolver({ timeout: 2000, tries: 2 });

function resolveWithoutThreadpool(
  hostname: string,
  options: LookupOptions,
  callback: (error: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void,
): void {
  const answer = (addresses: string[]): void => {
    if (options.all)
      callback(
        null,
        addresses.map((address) => ({ address, family: 4 })),
      );
    else callback(null, addresses[0] ?? '', 4);
  };
  if (isIP(hostname)) return answer([hostname]);
  if (hostname === 'localhost') return answer(['127.0.0.1']);
  resolver.resolve4(hostname, (error, addresses) => {
    if (error || addresses.length === 0)
      callback(error ?? Object.assign(new Error(`${hostname} has no address`), { code: 'ENOTFOUND' }), '');
    else answer(addresses);
  });
}

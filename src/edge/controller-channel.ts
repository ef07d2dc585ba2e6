// The edge's channel to the controller: an HTTPS long poll that trusts one certificate only, the controller's,
// pinned from a Docker secret. The overlay is shared with every app, so the name swarmgate-controller proves
// nothing (any container can take it as an alias); the TLS handshake does, and the edge's token is sent only on a
// connection whose peer proved it holds the pinned certificate's key. Bundles (with every private key) travel
// inside that TLS connection.
import { lookup } from 'node:dns/promises';
import https from 'node:https';
import { isIP } from 'node:net';
import { describeError, SwarmgateError } from '../errors.ts';
import type { EdgeReport, PublishedBundle } from '../publish/bundle-store.ts';

/** How the agent reaches the controller; a fake in tests. */
export interface ControllerChannel {
  /** The new bundle, or null when the long poll ended with nothing new. Throws when the controller is away. */
  poll(report: EdgeReport, signal: AbortSignal): Promise<PublishedBundle | null>;
}

/** Every address a name has now (Docker's DNS); tests pass their own. */
export type Resolve = (hostname: string) => Promise<string[]>;

export interface HttpsChannelOptions {
  /** https://host[:port]; the host is the name the certificate must carry. */
  readonly url: string;
  /** The edge token. */
  readonly token: string;
  /** The pinned certificate (PEM): the only one trusted, system CAs are not. */
  readonly ca: string;
  readonly timeoutMs: number;
  readonly resolve?: Resolve;
  /** How often the controller's name is checked while a poll is open. */
  readonly dnsWatchMs?: number;
}

/** A bundle is a few MB even with thousands of certificates; more than this is not the controller. */
const MAX_BUNDLE_BYTES = 256 * 1024 * 1024;

const systemResolve: Resolve = async (hostname) =>
  (await lookup(hostname, { all: true })).map((entry) => entry.address);

export function createHttpsControllerChannel(options: HttpsChannelOptions): ControllerChannel {
  const base = new URL(options.url);
  if (base.protocol !== 'https:') {
    // The token must never go out unencrypted and to an unauthenticated peer.
    throw new SwarmgateError(
      'ERR_CONFIG_INVALID',
      `the controller URL must be https://, not ${base.protocol}//`,
    );
  }
  const hostname = base.hostname;
  const port = Number(base.port || 443);
  const resolve = options.resolve ?? systemResolve;
  // The controller holds a poll open for less than the client timeout, so a timeout means trouble.
  const waitMs = Math.max(1000, options.timeoutMs - 10_000);
  // Keep-alive and TLS session reuse between polls; the connection is to an address, verified for the name.
  const agent = new https.Agent({ keepAlive: true, maxCachedSessions: 4 });
  // Docker's DNS may return an impostor's address beside the controller's (any container can take the alias):
  // stay with the address that last proved itself, and after a failure try another one first.
  const choice = { proven: null as string | null, failed: null as string | null };

  return {
    async poll(report, signal) {
      const abort = new AbortController();
      const watch = await watchControllerAddress(
        hostname,
        resolve,
        choice,
        abort,
        options.dnsWatchMs ?? 1000,
      );
      try {
        const { status, body } = await post(
          {
            agent,
            host: watch.address,
            port,
            // SNI and certificate name check against the URL's name, though the connection goes to an address.
            ...(isIP(hostname) ? {} : { servername: hostname }),
            ca: options.ca,
            rejectUnauthorized: true,
            path: `/v1/edge/poll?waitMs=${waitMs}`,
            method: 'POST',
            headers: { authorization: `Bearer ${options.token}`, 'content-type': 'application/json' },
            signal: AbortSignal.any([signal, abort.signal, AbortSignal.timeout(options.timeoutMs)]),
          },
          JSON.stringify(report),
        );
        choice.proven = watch.address;
        choice.failed = null;
        if (status === 204) return null;
        if (status < 200 || status > 299) {
          throw new SwarmgateError(
            'ERR_CONTROLLER_UNREACHABLE',
            `controller answered ${status}: ${body.toString('utf8').slice(0, 200)}`,
          );
        }
        return parseBundle(body);
      } catch (error) {
        if (choice.proven !== watch.address) {
          choice.failed = watch.address;
        }
        if (error instanceof SwarmgateError) throw error;
        throw new SwarmgateError(
          'ERR_CONTROLLER_UNREACHABLE',
          `controller ${base.host} unreachable: ${describeError(abort.signal.aborted ? abort.signal.reason : error)}`,
          {},
          error,
        );
      } finally {
        watch.stop();
      }
    },
  };
}

function post(options: https.RequestOptions, payload: string): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = https.request(options, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > MAX_BUNDLE_BYTES) {
          req.destroy(
            new SwarmgateError('ERR_BUNDLE_INVALID', `the answer is larger than ${MAX_BUNDLE_BYTES} bytes`),
          );
          return;
        }
        chunks.push(chunk);
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(payload);
  });
}

function parseBundle(body: Buffer): PublishedBundle {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.toString('utf8'));
  } catch {
    throw new SwarmgateError('ERR_BUNDLE_INVALID', 'the controller sent a bundle that is not JSON');
  }
  const bundle = parsed as Partial<PublishedBundle> | null;
  if (
    !bundle ||
    typeof bundle !== 'object' ||
    !Number.isSafeInteger(bundle.version) ||
    typeof bundle.fingerprint !== 'string' ||
    typeof bundle.files !== 'object' ||
    bundle.files === null
  ) {
    throw new SwarmgateError('ERR_BUNDLE_INVALID', 'the controller sent a malformed bundle');
  }
  return bundle as PublishedBundle;
}

/**
 * Resolves the controller's name and keeps checking it while a poll is open. When the controller moves (a new
 * task on another manager), its old address leaves Docker's DNS at once, but a connection to it can hang until the
 * poll times out; aborting then lets the edge reach the new controller within about a second.
 */
async function watchControllerAddress(
  hostname: string,
  resolve: Resolve,
  choice: { readonly proven: string | null; readonly failed: string | null },
  abort: AbortController,
  everyMs: number,
): Promise<{ address: string; stop: () => void }> {
  if (isIP(hostname)) return { address: hostname, stop: () => undefined };
  let address: string | undefined;
  try {
    const addresses = await resolve(hostname);
    address =
      choice.proven !== null && addresses.includes(choice.proven)
        ? choice.proven
        : (addresses.find((candidate) => candidate !== choice.failed) ?? addresses[0]);
  } catch (error) {
    throw new SwarmgateError(
      'ERR_CONTROLLER_UNREACHABLE',
      `cannot resolve ${hostname}: ${describeError(error)}`,
    );
  }
  if (address === undefined) {
    throw new SwarmgateError('ERR_CONTROLLER_UNREACHABLE', `${hostname} has no address`);
  }
  const current = address;
  const timer = setInterval(() => {
    resolve(hostname).then(
      (addresses) => {
        if (!addresses.includes(current)) {
          abort.abort(new Error(`controller address ${current} is no longer in DNS`));
        }
      },
      () => abort.abort(new Error(`${hostname} no longer resolves`)),
    );
  }, everyMs);
  return { address: current, stop: () => clearInterval(timer) };
}

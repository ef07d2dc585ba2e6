// The edge's channel to the controller: an HTTPS long poll that trusts one certificate only, the controller's,
// pinned from a Docker secret. The overlay is shared with every app, so the name swarmgate-controller proves
// nothing (any container can take it as an alias); the TLS handshake does, and the edge's token is sent only on a
// connection whose peer proved it holds the pinned certificate's key. Bundles (with every private key) travel
// inside that TLS connection.
import { lookup } from 'node:dns/promises';
import https from 'node:https';
import { isIP } from 'node:net';
import type { TLSSocket } from 'node:tls';
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
  /** How long an address that failed before the token was sent is tried only after the others (60 s). */
  readonly failedTtlMs?: number;
  /** The most a connection and TLS handshake may take before the next address is tried (5 s). */
  readonly connectTimeoutMs?: number;
  /** Milliseconds now; tests pass a fake. */
  readonly now?: () => number;
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
  // Docker's DNS may return impostors' addresses beside the controller's (any container can take the alias): stay
  // with the address that last proved itself; an address that failed before the token went out (TLS verification,
  // refused, no handshake in time) is tried after the others until its failure is failedTtlMs old. Within one poll
  // every address is tried at once, so two or more impostors never keep the edge from the controller.
  const now = options.now ?? Date.now;
  const failedTtlMs = options.failedTtlMs ?? 60_000;
  const connectTimeoutMs = options.connectTimeoutMs ?? 5000;
  const choice: AddressChoice = { proven: null, failed: new Map() };

  return {
    async poll(report, signal) {
      const candidates = await orderedAddresses(hostname, resolve, choice, now() - failedTtlMs);
      for (let index = 0; ; index++) {
        const address = candidates[index] ?? '';
        const attempt = await pollAt(address);
        if (attempt.ok) return attempt.bundle;
        const last = index === candidates.length - 1;
        // Nothing reusable went out: the next address, at once. A failure after the handshake is the controller's.
        if (attempt.beforeToken) choice.failed.set(address, now());
        if (!attempt.beforeToken || last || signal.aborted) throw attempt.error;
      }

      async function pollAt(
        address: string,
      ): Promise<
        | { ok: true; bundle: PublishedBundle | null }
        | { ok: false; error: SwarmgateError; beforeToken: boolean }
      > {
        const abort = new AbortController();
        const watch = watchControllerAddress(hostname, resolve, address, abort, options.dnsWatchMs ?? 1000);
        const verified = { done: false };
        try {
          const { status, body } = await post(
            {
              agent,
              host: address,
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
            { connectTimeoutMs, verified },
          );
          choice.proven = address;
          choice.failed.delete(address);
          if (status === 204) return { ok: true, bundle: null };
          if (status < 200 || status > 299) {
            throw new SwarmgateError(
              'ERR_CONTROLLER_UNREACHABLE',
              `controller answered ${status}: ${body.toString('utf8').slice(0, 200)}`,
            );
          }
          return { ok: true, bundle: parseBundle(body) };
        } catch (error) {
          if (choice.proven === address && !verified.done) choice.proven = null;
          const coded =
            error instanceof SwarmgateError
              ? error
              : new SwarmgateError(
                  'ERR_CONTROLLER_UNREACHABLE',
                  `controller ${base.host} unreachable at ${address}: ${describeError(abort.signal.aborted ? abort.signal.reason : error)}`,
                  {},
                  error,
                );
          return { ok: false, error: coded, beforeToken: !verified.done && !signal.aborted };
        } finally {
          watch.stop();
        }
      }
    },
  };
}

interface AddressChoice {
  proven: string | null;
  /** Address → when it last failed before the token was sent. */
  readonly failed: Map<string, number>;
}

/**
 * The addresses to try in this poll, best first: the proven one, then those that have not failed lately (in DNS
 * order), then those that failed, oldest failure first. Every address is in the list: with all of them failed
 * lately (the controller restarting), each is still tried once per poll.
 */
async function orderedAddresses(
  hostname: string,
  resolve: Resolve,
  choice: AddressChoice,
  failedSince: number,
): Promise<string[]> {
  if (isIP(hostname)) return [hostname];
  let addresses: string[];
  try {
    addresses = [...new Set(await resolve(hostname))];
  } catch (error) {
    throw new SwarmgateError(
      'ERR_CONTROLLER_UNREACHABLE',
      `cannot resolve ${hostname}: ${describeError(error)}`,
    );
  }
  if (addresses.length === 0) {
    throw new SwarmgateError('ERR_CONTROLLER_UNREACHABLE', `${hostname} has no address`);
  }
  for (const [address, at] of choice.failed) {
    if (at < failedSince || !addresses.includes(address)) choice.failed.delete(address);
  }
  const failedAt = (address: string): number => choice.failed.get(address) ?? -Infinity;
  const rank = (address: string): number =>
    address === choice.proven ? 0 : choice.failed.has(address) ? 2 : 1;
  return addresses
    .map((address, position) => ({ address, position }))
    .sort(
      (a, b) =>
        rank(a.address) - rank(b.address) ||
        failedAt(a.address) - failedAt(b.address) ||
        a.position - b.position,
    )
    .map((entry) => entry.address);
}

/**
 * One POST. `verified.done` turns true once the peer has passed the pinned-certificate check (a new connection's
 * handshake, or a kept-alive connection that passed it before): only then does the request, with the token, go out.
 */
function post(
  options: https.RequestOptions,
  payload: string,
  connection: { readonly connectTimeoutMs: number; readonly verified: { done: boolean } },
): Promise<{ status: number; body: Buffer }> {
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
    req.on('socket', (socket) => {
      const tlsSocket = socket as TLSSocket;
      if (tlsSocket.authorized && !tlsSocket.connecting) {
        connection.verified.done = true;
        return;
      }
      // An impostor that accepts the connection and never finishes the handshake must not hold the poll.
      const timer = setTimeout(
        () => req.destroy(new Error(`no TLS handshake within ${connection.connectTimeoutMs} ms`)),
        connection.connectTimeoutMs,
      );
      tlsSocket.once('secureConnect', () => {
        clearTimeout(timer);
        connection.verified.done = tlsSocket.authorized;
      });
      tlsSocket.once('close', () => clearTimeout(timer));
    });
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
 * Keeps checking the controller's name while a poll to `address` is open. When the controller moves (a new task on
 * another manager), its old address leaves Docker's DNS at once, but a connection to it can hang until the poll
 * times out; aborting then lets the edge reach the new controller within about a second.
 */
function watchControllerAddress(
  hostname: string,
  resolve: Resolve,
  address: string,
  abort: AbortController,
  everyMs: number,
): { stop: () => void } {
  if (isIP(hostname)) return { stop: () => undefined };
  const timer = setInterval(() => {
    resolve(hostname).then(
      (addresses) => {
        if (!addresses.includes(address)) {
          abort.abort(new Error(`controller address ${address} is no longer in DNS`));
        }
      },
      () => abort.abort(new Error(`${hostname} no longer resolves`)),
    );
  }, everyMs);
  return { stop: () => clearInterval(timer) };
}

// The edge's channel to the controller: an HTTPS long poll that trusts one certificate only, the controller's,
// pinned from a Docker secret. The overlay is shared with every app, so the name swarmgate-controller proves
// nothing (any container can take it as an alias); the TLS handshake does, and the edge's token is sent only on a
// connection whose peer proved it holds the pinned certificate's key. Bundles (with every private key) travel
// inside that TLS connection. The edge says which bundle it has and receives only what changed since (see
// src/publish/bundle-delta.ts), checked file by file and as a whole before the agent applies it.
import { lookup } from 'node:dns/promises';
import https from 'node:https';
import { isIP } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { TLSSocket } from 'node:tls';
import { gunzipSync } from 'node:zlib';
import { describeError, isSwarmgateError, SwarmgateError } from '../errors.ts';
import { assembleBundle, parseAnswer } from '../publish/bundle-delta.ts';
import type { Assembly, BaseSource, BundleAnswer, FetchFiles } from '../publish/bundle-delta.ts';
import type { EdgeReport, PublishedBundle } from '../publish/bundle-store.ts';

/** How the agent reaches the controller; a fake in tests. */
export interface ControllerChannel {
  /**
   * The new bundle, or null when the long poll ended with nothing new. Throws when the controller is away. With a
   * base (the bundle the edge applied, as its volume holds it), only what changed since it crosses the network.
   */
  poll(report: EdgeReport, signal: AbortSignal, base?: BaseSource | null): Promise<PublishedBundle | null>;
}

/** What one answer cost and how it was made whole: for logs, tests and the bench. */
export interface Transfer {
  readonly version: number;
  readonly fingerprint: string;
  /** The bundle the answer built on, or null: every file came. */
  readonly base: string | null;
  /** Bytes of answer bodies as received (gzip included), file fetches included. */
  readonly bytes: number;
  readonly whole: readonly string[];
  readonly edited: readonly string[];
  readonly reused: number;
  /** Files whose own copy was missing or damaged, fetched by hash. */
  readonly fetched: readonly string[];
  /** Why a delta could not be made whole and every file was asked for instead, or null. */
  readonly fallback: string | null;
  /** When the answer's last byte arrived (ms since the epoch). */
  readonly receivedAt: number;
  /** The edge's own work on it: gunzip, parse, patch, every hash check (ms); file fetches and waits excluded. */
  readonly workMs: number;
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
  /** false: ask for whole bundles as the previous release did (the fan-out bench's baseline). */
  readonly deltas?: boolean;
  /** Told of every bundle received. */
  readonly observe?: (transfer: Transfer) => void;
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

interface Answer {
  readonly status: number;
  /** As received: gzip when `gzip`. */
  readonly body: Buffer;
  readonly gzip: boolean;
  readonly receivedAt: number;
}

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
  const deltas = options.deltas ?? true;
  // The controller holds a poll open for less than the client timeout, so a timeout means trouble.
  const waitMs = Math.max(1000, options.timeoutMs - 10_000);
  // Keep-alive and TLS session reuse between polls; the connection is to an address, verified for the name.
  const agent = new https.Agent({ keepAlive: true, maxCachedSessions: 4 });
  // Docker's DNS may return impostors' addresses beside the controller's (any container can take the alias): stay
  // with the address that last proved itself; an address that failed before the token went out (TLS verification,
  // refused, no handshake in time) is tried after the others until its failure is failedTtlMs old. Within one call
  // every address is tried at once, so two or more impostors never keep the edge from the controller.
  const now = options.now ?? Date.now;
  const failedTtlMs = options.failedTtlMs ?? 60_000;
  const connectTimeoutMs = options.connectTimeoutMs ?? 5000;
  const choice: AddressChoice = { proven: null, failed: new Map() };

  /**
   * One POST to the controller (verified against the pinned certificate); a 2xx answer. Every resolved address is
   * tried in turn while the failures happen before the token goes out.
   */
  async function call(path: string, payload: unknown, signal: AbortSignal): Promise<Answer> {
    const candidates = await orderedAddresses(hostname, resolve, choice, now() - failedTtlMs);
    for (let index = 0; ; index++) {
      const address = candidates[index] ?? '';
      const attempt = await callAt(address, path, payload, signal);
      if (attempt.ok) return attempt.answer;
      const last = index === candidates.length - 1;
      // Nothing reusable went out: the next address, at once. A failure after the handshake is the controller's.
      if (attempt.beforeToken) choice.failed.set(address, now());
      if (!attempt.beforeToken || last || signal.aborted) throw attempt.error;
    }
  }

  async function callAt(
    address: string,
    path: string,
    payload: unknown,
    signal: AbortSignal,
  ): Promise<{ ok: true; answer: Answer } | { ok: false; error: SwarmgateError; beforeToken: boolean }> {
    const abort = new AbortController();
    const watch = watchControllerAddress(hostname, resolve, address, abort, options.dnsWatchMs ?? 1000);
    const verified = { done: false };
    try {
      const answer = await post(
        {
          agent,
          host: address,
          port,
          // SNI and certificate name check against the URL's name, though the connection goes to an address.
          ...(isIP(hostname) ? {} : { servername: hostname }),
          ca: options.ca,
          rejectUnauthorized: true,
          path,
          method: 'POST',
          headers: {
            authorization: `Bearer ${options.token}`,
            'content-type': 'application/json',
            ...(deltas ? { 'accept-encoding': 'gzip' } : {}),
          },
          signal: AbortSignal.any([signal, abort.signal, AbortSignal.timeout(options.timeoutMs)]),
        },
        JSON.stringify(payload),
        { connectTimeoutMs, verified },
      );
      choice.proven = address;
      choice.failed.delete(address);
      if (answer.status < 200 || answer.status > 299) {
        throw new SwarmgateError(
          'ERR_CONTROLLER_UNREACHABLE',
          `controller answered ${answer.status}: ${decode(answer).toString('utf8').slice(0, 200)}`,
        );
      }
      return { ok: true, answer };
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

  /** A delta answer made whole: the edge's own copies (checked) plus what changed, fetched copies for damaged ones. */
  async function answerFor(
    report: EdgeReport,
    signal: AbortSignal,
    have: BaseSource | null,
    wait: number,
  ): Promise<{ answer: BundleAnswer; bytes: number; receivedAt: number; started: number } | null> {
    const query = `waitMs=${wait}&delta=1${have ? `&have=${have.fingerprint}` : ''}`;
    const received = await call(`/v1/edge/poll?${query}`, report, signal);
    if (received.status === 204) return null;
    const started = performance.now();
    return {
      answer: parseAnswer(parseJson(decode(received))),
      bytes: received.body.length,
      receivedAt: received.receivedAt,
      started,
    };
  }

  return {
    async poll(report, signal, have = null) {
      if (!deltas) {
        const received = await call(`/v1/edge/poll?waitMs=${waitMs}`, report, signal);
        if (received.status === 204) return null;
        const started = performance.now();
        const bundle = parseBundle(received.body);
        options.observe?.({
          version: bundle.version,
          fingerprint: bundle.fingerprint,
          base: null,
          bytes: received.body.length,
          whole: Object.keys(bundle.files),
          edited: [],
          reused: 0,
          fetched: [],
          fallback: null,
          receivedAt: received.receivedAt,
          workMs: performance.now() - started,
        });
        return bundle;
      }
      const first = await answerFor(report, signal, have, waitMs);
      if (first === null) return null;
      let bytes = first.bytes;
      /** Time spent waiting for fetched files, not the edge's own work. */
      let waitedMs = 0;
      const fetchFiles: FetchFiles = async (wanted) => {
        const asked = performance.now();
        const received = await call('/v1/edge/files', { files: wanted }, signal);
        waitedMs += performance.now() - asked;
        bytes += received.body.length;
        const files = (parseJson(decode(received)) as { files?: unknown }).files;
        const found = new Map<string, string>();
        if (typeof files === 'object' && files !== null) {
          for (const [hash, content] of Object.entries(files)) {
            if (typeof content === 'string') found.set(hash, content);
          }
        }
        return found;
      };
      let answer = first.answer;
      let fallback: string | null = null;
      let { receivedAt, started } = first;
      let assembly: Assembly;
      try {
        assembly = await assembleBundle(answer, have, fetchFiles);
      } catch (error) {
        if (!isSwarmgateError(error, 'ERR_BUNDLE_INVALID') || answer.base === null) throw error;
        // The delta cannot be made whole (an old base the controller forgot, a damaged copy it no longer has):
        // ask for every file once, at once.
        fallback = error.message;
        const full = await answerFor(report, signal, null, 0);
        if (full === null) return null;
        bytes += full.bytes;
        answer = full.answer;
        ({ receivedAt, started } = full);
        waitedMs = 0;
        assembly = await assembleBundle(answer, null, fetchFiles);
      }
      options.observe?.({
        version: answer.version,
        fingerprint: answer.fingerprint,
        base: answer.base,
        bytes,
        whole: assembly.whole,
        edited: assembly.edited,
        reused: assembly.reused,
        fetched: assembly.fetched,
        fallback,
        receivedAt,
        workMs: performance.now() - started - waitedMs,
      });
      return {
        version: answer.version,
        fingerprint: answer.fingerprint,
        publishedAt: answer.publishedAt,
        files: assembly.files,
      };
    },
  };
}

/**
 * One POST. `verified.done` turns true once the peer has passed the pinned-certificate check (a new connection's
 * handshake, or a kept-alive connection that passed it before): only then does the request, with the token, go out.
 */
function post(
  options: https.RequestOptions,
  payload: string,
  connection: { readonly connectTimeoutMs: number; readonly verified: { done: boolean } },
): Promise<Answer> {
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
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          body: Buffer.concat(chunks),
          gzip: res.headers['content-encoding'] === 'gzip',
          receivedAt: performance.timeOrigin + performance.now(),
        }),
      );
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

/** The body gunzipped (bounded: a small gzip stream can expand to gigabytes). */
function decode(answer: Answer): Buffer {
  if (!answer.gzip) return answer.body;
  try {
    return gunzipSync(answer.body, { maxOutputLength: MAX_BUNDLE_BYTES });
  } catch (error) {
    throw new SwarmgateError(
      'ERR_BUNDLE_INVALID',
      `the controller's answer does not gunzip within ${MAX_BUNDLE_BYTES} bytes: ${describeError(error)}`,
    );
  }
}

function parseJson(body: Buffer): unknown {
  try {
    return JSON.parse(body.toString('utf8')) as unknown;
  } catch {
    throw new SwarmgateError('ERR_BUNDLE_INVALID', 'the controller sent an answer that is not JSON');
  }
}

function parseBundle(body: Buffer): PublishedBundle {
  const bundle = parseJson(body) as Partial<PublishedBundle> | null;
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

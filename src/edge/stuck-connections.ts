// Connections to a dead node, cut so the requests on them go to a live task at once.
//
// A node that dies (power lost, network cut) never closes its TCP connections. nginx keeps idle connections to
// tasks (upstream keepalive); a request it sends on one to a task on the dead node is written into the kernel and
// then waits for proxy_read_timeout (60 s by default), while the kernel retransmits it to nobody. The balancer
// learns soon that the task is gone (another request's connect times out, lua/swarmgate/balancer.lua), but cannot
// reach the requests already sent. HAProxy cuts such sessions when a server is marked down; this is the same for
// the edge. Watched are the members nginx lists as unreachable (GET /unreachable on its local socket: the last
// failure was a timeout), for WATCH_AFTER_MS after the last listing, and the members that left the routes in the
// last WATCH_AFTER_MS. The agent looks at the edge's established connections to them and destroys (SOCK_DESTROY,
// `ss -K`) those whose sent segments the peer has not acknowledged through MIN_BACKOFF retransmission timeouts.
// nginx sees an error on the connection and retries the request on another task (proxy_next_upstream error):
// idempotent methods only; a POST, PATCH or LOCK, or an unbuffered upload, gets a 502 after about a second
// instead of waiting for the timeout.
//
// A live but busy task is never cut: its kernel acknowledges the request even while the app is slow, so a
// connection waiting on a slow answer has no unacknowledged segments. Idle kept-alive connections are left alone
// too: they are cut as soon as a request is sent on one and goes unacknowledged. Not caught: a request the task's
// kernel acknowledged before its node died (nothing is left to retransmit); it waits for proxy_read_timeout.
import { execFile } from 'node:child_process';
import { describeError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import type { Clock, TimerHandle } from '../reconcile/clock.ts';

/** How often the agent asks nginx which members are unreachable. */
export const STUCK_WATCH_MS = 500;
/**
 * Retransmission timeouts without an acknowledgement before a connection counts as stuck. Linux's first one is at
 * least 200 ms and each doubles: 2 means the peer has been silent for 0.6 s or more, far beyond any live peer on
 * the overlay, whose round trip is well under a millisecond.
 */
export const MIN_BACKOFF = 2;
/** At most this many members are looked at per round, and this many connections cut per `ss -K`. */
const MAX_MEMBERS = 256;
const MAX_CUT_PER_CALL = 64;
const SS_TIMEOUT_MS = 2000;

const ADDRESS = /^(\d{1,3}(?:\.\d{1,3}){3}):(\d{1,5})$/;

function validAddress(text: string): boolean {
  const match = ADDRESS.exec(text);
  return (
    match !== null &&
    match[1]!.split('.').every((octet) => Number(octet) <= 255) &&
    Number(match[2]) >= 1 &&
    Number(match[2]) <= 65535
  );
}

/** GET /unreachable: "address \t skip_until" per line. Lines that do not fit are skipped; sorted, bounded. */
export function parseUnreachable(text: string): string[] {
  const members = new Set<string>();
  for (const line of text.split('\n')) {
    const address = line.split('\t')[0] ?? '';
    if (validAddress(address)) members.add(address);
  }
  return [...members].sort().slice(0, MAX_MEMBERS);
}

export interface EdgeConnection {
  /** The edge's side, "ip:port". */
  readonly local: string;
  /** The task's side, "ip:port" as in peers.txt. */
  readonly peer: string;
  /** Segments sent and not yet acknowledged. */
  readonly unacked: number;
  /** Retransmission timeouts in a row (0 when the kernel printed none). */
  readonly backoff: number;
}

function numberField(line: string, name: string): number {
  const match = new RegExp(`(?:^|\\s)${name}:(\\d+)(?:\\s|$)`).exec(line);
  return match ? Number(match[1]) : 0;
}

/**
 * `ss -tinHO state established ...`: one socket per line, "Recv-Q Send-Q local peer" then the TCP info fields
 * (iproute2's names: backoff, unacked). IPv4 only: task addresses on an overlay are IPv4.
 */
export function parseConnections(text: string): EdgeConnection[] {
  const out: EdgeConnection[] = [];
  for (const line of text.split('\n')) {
    const fields = line.trim().split(/\s+/);
    const [, , local = '', peer = ''] = fields;
    if (!validAddress(local) || !validAddress(peer)) continue;
    out.push({ local, peer, unacked: numberField(line, 'unacked'), backoff: numberField(line, 'backoff') });
  }
  return out;
}

/** The connections to unreachable members that the peer has stopped acknowledging. */
export function stuckConnections(
  connections: readonly EdgeConnection[],
  unreachable: ReadonlySet<string>,
): EdgeConnection[] {
  return connections.filter(
    (connection) =>
      unreachable.has(connection.peer) && connection.unacked > 0 && connection.backoff >= MIN_BACKOFF,
  );
}

/** An ss filter (iproute2's expression grammar) matching exactly these connections. */
export function connectionFilter(connections: readonly EdgeConnection[]): string[] {
  const terms: string[] = [];
  for (const connection of connections) {
    const localPort = connection.local.split(':')[1];
    if (terms.length > 0) terms.push('or');
    terms.push('(', 'dst', connection.peer, 'and', 'sport', '=', `:${localPort}`, ')');
  }
  return terms;
}

/** An ss filter matching any connection to these members. */
export function peerFilter(members: readonly string[]): string[] {
  const terms: string[] = [];
  for (const member of members) {
    if (terms.length > 0) terms.push('or');
    terms.push('dst', member);
  }
  return ['(', ...terms, ')'];
}

/** The kernel's view of the edge's sockets: `ss`, in the edge's network namespace. */
export interface SocketTable {
  list(members: readonly string[]): Promise<EdgeConnection[]>;
  /**
   * Destroys these connections. `destroyed` is what ss printed as gone (it prints only the sockets the kernel
   * destroyed, and exits 0 whatever failed); `stderr` says why the others were not.
   */
  destroy(connections: readonly EdgeConnection[]): Promise<{ destroyed: number; stderr: string }>;
}

function runSs(args: readonly string[]): Promise<{ stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    execFile('ss', args, { timeout: SS_TIMEOUT_MS, maxBuffer: 16 * 1024 * 1024 }, (error, stdout, stderr) => {
      if (error) reject(new Error(`ss failed: ${stderr.trim() || error.message}`, { cause: error }));
      else resolve({ stdout, stderr });
    });
  });
}

export const kernelSocketTable: SocketTable = {
  async list(members) {
    if (members.length === 0) return [];
    const { stdout } = await runSs(['-tinHO', 'state', 'established', ...peerFilter(members)]);
    return parseConnections(stdout);
  },
  async destroy(connections) {
    let destroyed = 0;
    let stderr = '';
    for (let start = 0; start < connections.length; start += MAX_CUT_PER_CALL) {
      const batch = connections.slice(start, start + MAX_CUT_PER_CALL);
      const said = await runSs(['-tKH', 'state', 'established', ...connectionFilter(batch)]);
      destroyed += said.stdout.split('\n').filter((line) => line.trim() !== '').length;
      stderr += said.stderr;
    }
    return { destroyed, stderr: stderr.trim() };
  },
};

/**
 * How long a member stays watched after nginx last listed it as unreachable, or after it left the routes. A cut
 * is an error to nginx, not a timeout, so a member whose backoff was over may leave the list at the first cut while
 * other requests still wait on connections to it; and a dead task the controller took out of the routes before any
 * connect to it timed out is never listed at all.
 */
export const WATCH_AFTER_MS = 30_000;

export interface StuckConnectionWatch {
  /** Connections cut since the start. */
  cut(): number;
  /** Members that left the routes (the agent applied peers without them): watched for WATCH_AFTER_MS. */
  watch(members: Iterable<string>): void;
  /** Stops the rounds and waits for the one under way. */
  stop(): Promise<void>;
}

/**
 * Every STUCK_WATCH_MS: which members are watched (listed unreachable by nginx, or recently so, or recently taken
 * out of the routes), which connections to them are stuck (the kernel), cut those. One round at a time; a round that
 * fails is logged and the next one tries again. A container that may not destroy sockets (no CAP_NET_ADMIN) or a
 * kernel that cannot (no CONFIG_INET_DIAG_DESTROY) is said once, at warn: the edge then works as before, with
 * requests on stuck connections waiting for proxy_read_timeout.
 */
export function watchStuckConnections(deps: {
  readonly unreachable: (signal: AbortSignal) => Promise<string | null>;
  readonly sockets: SocketTable;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly intervalMs?: number;
}): StuckConnectionWatch {
  const { clock, logger } = deps;
  const intervalMs = deps.intervalMs ?? STUCK_WATCH_MS;
  const stopped = new AbortController();
  let timer: TimerHandle | null = null;
  let running: Promise<void> | null = null;
  let cutCount = 0;
  let cannotSaid = false;
  /** Member → until when it is watched (clock ms). */
  const watched = new Map<string, number>();

  function watchUntil(members: Iterable<string>, until: number): void {
    for (const member of members) if ((watched.get(member) ?? 0) < until) watched.set(member, until);
  }

  function sayCannot(reason: string, stderr: string): void {
    if (cannotSaid) return;
    cannotSaid = true;
    logger.warn(
      { stderr: stderr.slice(0, 300) },
      `cannot cut connections to unreachable tasks (${reason}): requests sent on them wait for proxy_read_timeout`,
    );
  }

  async function round(): Promise<void> {
    const text = await deps.unreachable(AbortSignal.any([stopped.signal, AbortSignal.timeout(1000)]));
    const now = clock.now();
    watchUntil(text === null ? [] : parseUnreachable(text), now + WATCH_AFTER_MS);
    for (const [member, until] of watched) if (until <= now) watched.delete(member);
    if (watched.size === 0) return;
    const members = [...watched.keys()].sort().slice(0, MAX_MEMBERS);
    const stuck = stuckConnections(await deps.sockets.list(members), new Set(members));
    if (stuck.length === 0 || stopped.signal.aborted) return;
    const { destroyed, stderr } = await deps.sockets.destroy(stuck);
    if (/not permitted|denied/i.test(stderr)) sayCannot('the edge needs CAP_NET_ADMIN', stderr);
    else if (destroyed === 0)
      sayCannot('the kernel does not destroy sockets: CONFIG_INET_DIAG_DESTROY', stderr);
    if (destroyed === 0) return;
    cutCount += destroyed;
    logger.warn(
      {
        connections: destroyed,
        tasks: [...new Set(stuck.map((connection) => connection.peer))].slice(0, 20),
      },
      'cut connections to unreachable tasks that stopped acknowledging; nginx retries their requests on other tasks',
    );
  }

  // The same failure every round (ss missing from a custom image) is said once, not twice a second.
  let lastFailure = '';
  function schedule(): void {
    if (stopped.signal.aborted) return;
    timer = clock.setTimer(intervalMs, () => {
      running = round()
        .then(() => void (lastFailure = ''))
        .catch((error: unknown) => {
          const said = describeError(error);
          if (!stopped.signal.aborted && said !== lastFailure)
            logger.warn({ err: said }, 'looking for stuck connections failed');
          lastFailure = said;
        })
        .finally(() => {
          running = null;
          schedule();
        });
    });
  }
  schedule();

  return {
    cut: () => cutCount,
    watch(members) {
      watchUntil(members, clock.now() + WATCH_AFTER_MS);
    },
    async stop() {
      stopped.abort();
      timer?.cancel();
      await running;
    },
  };
}

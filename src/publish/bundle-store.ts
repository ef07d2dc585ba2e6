// The published bundle and what each edge has applied. Edges long-poll here; a publish wakes them all.
import { SwarmgateError } from '../errors.ts';
import type { BundleFiles } from '../render/render-config.ts';
import type { Clock } from '../reconcile/clock.ts';
import { BundleAnswers } from './bundle-answers.ts';
import { versionOf, VERSIONS_PER_EPOCH } from './version-epoch.ts';

/** Edges kept in the status; beyond it the one heard of longest ago is forgotten (edge ids are self-asserted). */
export const MAX_EDGES = 1024;
/** An edge not heard of for this long is forgotten: a live edge polls at least every long-poll window. */
export const EDGE_FORGET_MS = 10 * 60_000;

export interface PublishedBundle {
  readonly version: number;
  readonly fingerprint: string;
  readonly files: BundleFiles;
  readonly publishedAt: string;
}

export interface AppliedBundle {
  readonly version: number;
  readonly fingerprint: string;
}

/** What an edge says on every poll. */
export interface EdgeReport {
  readonly edge: string;
  readonly node: string | null;
  readonly applied: AppliedBundle | null;
  /** A bundle the edge refused (nginx -t failed there); it is not offered again. */
  readonly rejected: { readonly fingerprint: string; readonly error: string } | null;
  /** Since the agent started: bundles applied with an nginx reload, and with posted task addresses only. */
  readonly reloads: number;
  readonly peerUpdates: number;
  /** Tasks this edge's active health checks found down (absent from edges of older releases). */
  readonly tasksDown?: readonly TaskDown[];
  /** Down tasks beyond the ones listed (a report carries at most MAX_REPORTED_DOWN). */
  readonly tasksDownOmitted?: number;
}

/** A task an edge's health checks (lua/swarmgate/health.lua) took out of its rotation. */
export interface TaskDown {
  /** "ip:port", as in peers.txt. */
  readonly address: string;
  readonly upstream: string;
  /** Since when (ISO 8601, the edge's clock). */
  readonly since: string;
  /** What the probe got: "status 500", "status line: timeout", "connect: connection refused". */
  readonly reason: string;
}

/** Down tasks one report carries at most: with the rest of a report they stay well inside its 64 KiB bound. */
export const MAX_REPORTED_DOWN = 128;
export const MAX_REASON_CHARS = 120;

export interface EdgeState extends EdgeReport {
  readonly lastContact: string;
  readonly inSync: boolean;
}

interface Waiter {
  readonly wants: (bundle: PublishedBundle) => boolean;
  readonly resolve: (bundle: PublishedBundle | null) => void;
}

export class BundleStore {
  private bundle: PublishedBundle | null = null;
  private readonly edgeStates = new Map<string, Omit<EdgeState, 'inSync'>>();
  private readonly waiters = new Set<Waiter>();
  private readonly clock: Clock;
  /** Recent bundles and the encoded answers edges are sent (only what changed since the edge's bundle). */
  readonly answers = new BundleAnswers();
  /** From Swarm's Raft (version-epoch.ts); versions are epoch·2^20 + counter, never derived from edge reports. */
  private epoch: number | null = null;
  private counter = 0;

  constructor(clock: Clock) {
    this.clock = clock;
  }

  get current(): PublishedBundle | null {
    return this.bundle;
  }

  /** Versions from a new, higher epoch on (at start, and before the current one runs out). */
  startEpoch(epoch: number): void {
    if (this.epoch !== null && epoch <= this.epoch) {
      throw new SwarmgateError('ERR_VERSION_EPOCH', `epoch ${epoch} is not above the current ${this.epoch}`);
    }
    this.epoch = epoch;
    this.counter = 0;
  }

  /** Publishes left in the current epoch (0 before the first). */
  get versionsLeft(): number {
    return this.epoch === null ? 0 : VERSIONS_PER_EPOCH - 1 - this.counter;
  }

  publish(files: BundleFiles, fingerprint: string): PublishedBundle {
    if (this.bundle?.fingerprint === fingerprint) return this.bundle;
    if (this.epoch === null || this.versionsLeft === 0) {
      throw new SwarmgateError(
        'ERR_VERSION_EPOCH',
        this.epoch === null ? 'no version epoch from Swarm yet' : 'the version epoch is used up',
      );
    }
    this.counter++;
    const version = versionOf(this.epoch, this.counter);
    this.bundle = {
      version,
      fingerprint,
      files: sharingUnchanged(files, this.bundle?.files),
      publishedAt: new Date(this.clock.now()).toISOString(),
    };
    this.answers.remember(this.bundle);
    for (const waiter of [...this.waiters]) {
      if (waiter.wants(this.bundle)) {
        this.waiters.delete(waiter);
        waiter.resolve(this.bundle);
      }
    }
    return this.bundle;
  }

  /**
   * Notes an edge's report. The applied version is recorded, never followed: edge token holders can send any
   * number, and versions come from Swarm's Raft index (startEpoch).
   */
  recordEdge(report: EdgeReport): void {
    const now = this.clock.now();
    // Delete first: the map's order is then the order edges were last heard of, oldest first.
    this.edgeStates.delete(report.edge);
    this.forgetEdges(now);
    this.edgeStates.set(report.edge, { ...report, lastContact: new Date(now).toISOString() });
  }

  private forgetEdges(now: number): void {
    for (const [edge, state] of this.edgeStates) {
      const stale = now - Date.parse(state.lastContact) > EDGE_FORGET_MS;
      if (!stale && this.edgeStates.size < MAX_EDGES) break;
      this.edgeStates.delete(edge);
    }
  }

  edges(): EdgeState[] {
    return [...this.edgeStates.values()]
      .map((state) => ({ ...state, inSync: state.applied?.fingerprint === this.bundle?.fingerprint }))
      .sort((a, b) => (a.edge < b.edge ? -1 : a.edge > b.edge ? 1 : 0));
  }

  /**
   * The current bundle if the edge lacks it, else wait until a publish gives it one, the timeout passes (null),
   * or the signal aborts (null).
   */
  waitForBundle(report: EdgeReport, timeoutMs: number, signal: AbortSignal): Promise<PublishedBundle | null> {
    const wants = (bundle: PublishedBundle): boolean =>
      bundle.fingerprint !== report.applied?.fingerprint &&
      bundle.fingerprint !== report.rejected?.fingerprint;
    if (this.bundle && wants(this.bundle)) return Promise.resolve(this.bundle);
    return new Promise((resolve) => {
      const finish = (bundle: PublishedBundle | null): void => {
        timer.cancel();
        signal.removeEventListener('abort', onAbort);
        this.waiters.delete(waiter);
        resolve(bundle);
      };
      const waiter: Waiter = { wants, resolve: (bundle) => finish(bundle) };
      const onAbort = (): void => finish(null);
      const timer = this.clock.setTimer(timeoutMs, () => finish(null));
      signal.addEventListener('abort', onAbort, { once: true });
      this.waiters.add(waiter);
    });
  }

  get waitingEdges(): number {
    return this.waiters.size;
  }
}

/**
 * The files, each unchanged one as the last bundle's own string: the recent bundles kept for edges' deltas then share
 * one copy of a config that only task addresses changed (nginx.conf is 15 MB at 10,000 services, and 8 are kept).
 */
export function sharingUnchanged(files: BundleFiles, last: BundleFiles | undefined): BundleFiles {
  if (!last) return files;
  const shared: Record<string, string> = {};
  for (const [name, content] of Object.entries(files)) {
    const before = last[name];
    shared[name] = before !== undefined && before === content ? before : content;
  }
  return shared;
}

// The published bundle and what each edge has applied. Edges long-poll here; a publish wakes them all.
import { SwarmgateError } from '../errors.ts';
import type { BundleFiles } from '../render/render-config.ts';
import type { Clock } from '../reconcile/clock.ts';
import { BundleAnswers } from './bundle-answers.ts';

/** Edges kept in the status; beyond it the one heard of longest ago is forgotten (edge ids are self-asserted). */
export const MAX_EDGES = 1024;
/** An edge not heard of for this long is forgotten: a live edge polls at least every long-poll window. */
export const EDGE_FORGET_MS = 10 * 60_000;
/**
 * An applied version above this, and above anything this controller published, is refused: a report of 2^53-1
 * would stop versions from rising. At one publish a second this ceiling lasts 35,000 years.
 */
export const MAX_ADOPTED_VERSION = 2 ** 40;

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
}

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
  private highestVersionSeen = 0;
  /** Recent bundles and the encoded answers edges are sent (only what changed since the edge's bundle). */
  readonly answers = new BundleAnswers();

  constructor(clock: Clock) {
    this.clock = clock;
  }

  get current(): PublishedBundle | null {
    return this.bundle;
  }

  publish(files: BundleFiles, fingerprint: string): PublishedBundle {
    if (this.bundle?.fingerprint === fingerprint) return this.bundle;
    // Versions keep rising across controller restarts: edges tell us the highest version they applied.
    const version = Math.max(this.bundle?.version ?? 0, this.highestVersionSeen) + 1;
    this.highestVersionSeen = version;
    this.bundle = { version, fingerprint, files, publishedAt: new Date(this.clock.now()).toISOString() };
    this.answers.remember(this.bundle);
    for (const waiter of [...this.waiters]) {
      if (waiter.wants(this.bundle)) {
        this.waiters.delete(waiter);
        waiter.resolve(this.bundle);
      }
    }
    return this.bundle;
  }

  /** Notes an edge's report; an absurd applied version is refused (ERR_BAD_REQUEST) before anything changes. */
  recordEdge(report: EdgeReport): void {
    const applied = report.applied;
    if (applied && applied.version > MAX_ADOPTED_VERSION && applied.version > this.highestVersionSeen) {
      throw new SwarmgateError(
        'ERR_BAD_REQUEST',
        `edge report: applied version ${applied.version} is beyond any version this controller published`,
      );
    }
    const now = this.clock.now();
    // Delete first: the map's order is then the order edges were last heard of, oldest first.
    this.edgeStates.delete(report.edge);
    this.forgetEdges(now);
    this.edgeStates.set(report.edge, { ...report, lastContact: new Date(now).toISOString() });
    if (!applied) return;
    if (applied.version > this.highestVersionSeen) this.highestVersionSeen = applied.version;
    if (!this.bundle || applied.version < this.bundle.version) return;
    // The edge runs a version this controller has not reached: a restarted or moved controller counts from 1
    // again, and edges refuse a version that does not move forward. Same bytes: take over the edge's number;
    // other bytes: renumber the current bundle past it, so the edge takes it.
    const version = applied.fingerprint === this.bundle.fingerprint ? applied.version : applied.version + 1;
    if (version > this.bundle.version) {
      this.bundle = { ...this.bundle, version };
      if (version > this.highestVersionSeen) this.highestVersionSeen = version;
    }
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

// The published bundle and what each edge has applied. Edges long-poll here; a publish wakes them all.
import type { BundleFiles } from '../render/render-config.ts';
import type { Clock } from '../reconcile/clock.ts';

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
    for (const waiter of [...this.waiters]) {
      if (waiter.wants(this.bundle)) {
        this.waiters.delete(waiter);
        waiter.resolve(this.bundle);
      }
    }
    return this.bundle;
  }

  recordEdge(report: EdgeReport): void {
    this.edgeStates.set(report.edge, { ...report, lastContact: new Date(this.clock.now()).toISOString() });
    const applied = report.applied;
    if (!applied) return;
    if (applied.version > this.highestVersionSeen) this.highestVersionSeen = applied.version;
    // A restarted controller renders the same bytes an edge already runs: take over that edge's version number
    // instead of counting from 1 again.
    if (
      this.bundle &&
      applied.fingerprint === this.bundle.fingerprint &&
      applied.version > this.bundle.version
    ) {
      this.bundle = { ...this.bundle, version: applied.version };
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

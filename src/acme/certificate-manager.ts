// The controller is the only ACME client. This keeps the certificates the routing model asks for: it orders
// missing ones through a bounded queue, renews when a set fraction of the lifetime remains, backs off
// exponentially after failures, and keeps everything in the sealed Swarm state store so a rescheduled controller
// serves the same certificates with no new order.
//
// What no fault may cause (review findings F3, F8, F9, F15):
// - an issued certificate is never thrown away: it is served from memory at once, and only its save is retried;
// - no name is ordered more than `maxOrdersPerName` times per `orderWindowMs`, counted in the sealed state before
//   each order, so neither a bug nor a restart can loop against the CA;
// - while records are sealed with another state key nothing is ordered, and publishBlocked() tells the reconcile
//   loop not to publish a bundle that would drop the certificates the edges serve;
// - with a state lease, only its holder orders and writes; the others follow the stored state;
// - a local clock far ahead of the CA neither drops certificates from bundles nor makes renewals due forever.
import { createHash } from 'node:crypto';
import { describeError, SwarmgateError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import type { AvailableCertificate, CertificateRequest } from '../model/routing-model.ts';
import type { Clock, TimerHandle } from '../reconcile/clock.ts';
import { BoundedQueue } from '../reconcile/queues.ts';
import type { CertificateMaterial } from '../render/render-config.ts';
import { certificatePairProblem } from '../render/certificate-pairs.ts';
import type { AcmePort, ChallengeResponder } from './acme-adapter.ts';
import type { StateLease } from './state-lease.ts';
import type { LoadedState, StateStore } from './state-store.ts';
import type { LoadedCertificate } from './user-certificates.ts';
import { describeCertificate } from './user-certificates.ts';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

export interface AcmeSettings {
  readonly enabled: boolean;
  /** The controller's directory: a certificate request without a directory of its own is ordered here. */
  readonly directoryUrl: string;
  /** Where LETSENCRYPT_TEST=true certificates are ordered (the model resolves the label to this URL). */
  readonly stagingDirectoryUrl?: string;
  /** Further directories an ACME_CA_URI label may name; a request for any other directory is never sent. */
  readonly allowedDirectoryUrls?: readonly string[];
  /** Renew when this fraction of the certificate's lifetime remains (1/3 by default). */
  readonly renewFraction: number;
  readonly concurrency: number;
  readonly retryMinMs: number;
  readonly retryMaxMs: number;
  /** An order still running after this long is given up (and retried with backoff). */
  readonly orderTimeoutMs?: number;
  /** Orders per certificate name within orderWindowMs, whatever happens (3 by default: Let's Encrypt allows 5
   * duplicate certificates a week). */
  readonly maxOrdersPerName?: number;
  readonly orderWindowMs?: number;
  /** A certificate whose notBefore is further behind the local clock than this when it arrives shows the local
   * clock is ahead of the CA (1 day by default; CAs backdate notBefore by an hour at most). */
  readonly clockAheadBoundMs?: number;
}

/** What the reconcile loop needs from certificates: what can be served, its PEMs, and what the model wants. */
export interface CertificateSource {
  available(): AvailableCertificate[];
  material(name: string): CertificateMaterial | undefined;
  sync(requests: readonly CertificateRequest[]): void;
  /**
   * Why no bundle may be published now, or null. Non-null while the certificate state is unread or sealed with
   * another key: a bundle rendered then would drop certificates every edge serves (with HSTS, an outage).
   */
  publishBlocked?(): string | null;
}

export const NO_CERTIFICATES: CertificateSource = {
  available: () => [],
  material: () => undefined,
  sync: () => undefined,
  publishBlocked: () => null,
};

/** An issued certificate as kept in the state store: the loaded PEMs plus the CA it came from. */
interface StoredCertificate extends LoadedCertificate {
  readonly directoryUrl: string;
}

interface StoredAccount {
  readonly directoryUrl: string;
  readonly keyPem: string;
  readonly url: string | null;
}

/**
 * When orders for one certificate name were placed (local clock, ms), written before each order, and which of them
 * failed for sure (the CA answered with an error, or never answered). The budget counts the rest: certificates
 * issued, and orders whose outcome is unknown (a crash). Failed orders are paced by the backoff instead, so a CA
 * outage does not spend a day's budget.
 */
interface StoredOrders {
  readonly orders: readonly number[];
  readonly failed?: readonly number[];
}

interface Tracker {
  attempts: number;
  nextAttemptAt: number;
  inFlight: boolean;
  lastError: string | null;
  /** While the order budget is spent: when the next order is allowed. */
  budgetUntil: number | null;
}

/** A record issued or changed in memory that is not in Swarm yet: only its save is retried. */
interface UnsavedRecord {
  value: unknown;
  attempts: number;
  nextAt: number;
  lastError: string | null;
  saving: boolean;
}

export interface CertificateStatus {
  readonly name: string;
  readonly domains: readonly string[];
  readonly source: 'acme' | 'user';
  /** The ACME directory it is (to be) ordered from (acme only). */
  readonly directory?: string;
  readonly state:
    | 'valid'
    | 'expired'
    | 'pending'
    | 'ordering'
    | 'failed'
    /** Issued and served, but not stored yet (the save is retried). */
    | 'unsaved'
    /** Its stored record does not open under the right key: it is ordered again within the budget. */
    | 'damaged'
    | 'budget-spent'
    /** Another controller holds the state lease and orders it. */
    | 'standby'
    | 'sealed-with-another-key';
  readonly notAfter: string | null;
  readonly renewAt: string | null;
  readonly attempts: number;
  /** Orders placed for this name within the budget window. */
  readonly recentOrders: number;
  readonly nextAttemptAt: string | null;
  readonly lastError: string | null;
}

export type OrderReason = 'missing' | 'names-changed' | 'directory-changed' | 'renewal' | 'expired';

export type CertificateAction =
  | { readonly kind: 'order'; readonly reason: OrderReason }
  | { readonly kind: 'wait'; readonly until: number | null }
  | { readonly kind: 'blocked' };

export function renewalTime(notBefore: string, notAfter: string, renewFraction: number): number {
  const start = Date.parse(notBefore);
  const end = Date.parse(notAfter);
  return end - (end - start) * renewFraction;
}

/**
 * Pure: what to do about one requested certificate now. A certificate from another directory than the one now
 * chosen (LETSENCRYPT_TEST or ACME_CA_URI changed) is ordered again: a staging certificate must not stay served
 * once production is asked for. Until the new one is issued the old one is still served.
 */
export function decideCertificateAction(
  stored:
    (Pick<StoredCertificate, 'domains' | 'notBefore' | 'notAfter'> & { directoryUrl?: string }) | undefined,
  request: Pick<CertificateRequest, 'domains'> & { directoryUrl?: string },
  tracker: Pick<Tracker, 'inFlight' | 'nextAttemptAt'>,
  blocked: boolean,
  now: number,
  renewFraction: number,
): CertificateAction {
  if (blocked) return { kind: 'blocked' };
  if (tracker.inFlight) return { kind: 'wait', until: null };
  let reason: OrderReason;
  if (!stored) reason = 'missing';
  else if (!sameNames(stored.domains, request.domains)) reason = 'names-changed';
  else if (
    stored.directoryUrl !== undefined &&
    request.directoryUrl !== undefined &&
    stored.directoryUrl !== request.directoryUrl
  )
    reason = 'directory-changed';
  else if (now >= Date.parse(stored.notAfter)) reason = 'expired';
  else {
    const renewAt = renewalTime(stored.notBefore, stored.notAfter, renewFraction);
    if (now < renewAt) return { kind: 'wait', until: renewAt };
    reason = 'renewal';
  }
  if (now < tracker.nextAttemptAt) return { kind: 'wait', until: tracker.nextAttemptAt };
  return { kind: 'order', reason };
}

/** Pure: may one more order for a name be placed now, given when its recent orders were placed? */
export function orderBudget(
  orders: readonly number[],
  now: number,
  limit: number,
  windowMs: number,
): { readonly allowed: boolean; readonly recent: number; readonly nextAt: number | null } {
  // Orders stamped in the future (the clock went back) still count: the budget errs towards fewer orders.
  const recent = orders.filter((at) => at > now - windowMs).sort((a, b) => a - b);
  if (recent.length < limit) return { allowed: true, recent: recent.length, nextAt: null };
  return { allowed: false, recent: recent.length, nextAt: (recent[recent.length - limit] ?? now) + windowMs };
}

/** Exponential backoff after the n-th consecutive failure (n ≥ 1). */
export function retryDelay(failures: number, minMs: number, maxMs: number): number {
  return Math.min(maxMs, minMs * 2 ** Math.max(0, failures - 1));
}

function union(a: readonly number[], b: readonly number[]): number[] {
  return [...new Set([...a, ...b])].sort((x, y) => x - y);
}

function sameNames(a: readonly string[], b: readonly string[]): boolean {
  return [...a].sort().join(',') === [...b].sort().join(',');
}

export interface CertificateManagerDeps {
  readonly acme: AcmePort;
  readonly store: StateStore;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly settings: AcmeSettings;
  readonly userCertificates: readonly LoadedCertificate[];
  /** Called when the set of servable certificates changed: the reconcile loop renders again. */
  readonly onChange: () => void;
  /** With a lease, only its holder orders and writes; without one, this controller assumes it is alone. */
  readonly lease?: StateLease;
}

export interface AcmeStats {
  ordersStarted: number;
  ordersSucceeded: number;
  ordersFailed: number;
}

export class CertificateManager implements CertificateSource {
  private readonly deps: CertificateManagerDeps;
  private readonly certificates = new Map<string, StoredCertificate>();
  private readonly trackers = new Map<string, Tracker>();
  /** Records sealed with another state key: never replaced, and publishing is held while certificates are. */
  private otherKey = new Map<string, string>();
  /** Records that do not open under the right key: reported; a certificate is ordered again within budget. */
  private damaged = new Map<string, string>();
  private readonly orderHistory = new Map<string, { orders: number[]; failed: number[] }>();
  private readonly unsaved = new Map<string, UnsavedRecord>();
  /** One ACME account per directory, keyed by directory URL. */
  private readonly accounts = new Map<string, StoredAccount>();
  private requests: readonly CertificateRequest[] = [];
  private readonly challenges = new Map<string, string>();
  private readonly orders: BoundedQueue;
  private readonly background = new Set<Promise<void>>();
  private timer: TimerHandle | null = null;
  private leaseTimer: TimerHandle | null = null;
  private holdsLease = false;
  /** How far the local clock runs ahead of the CA, as the last issued certificate's notBefore showed (0: not). */
  private clockAheadMs = 0;
  private loaded = false;
  private stopped = false;
  private readonly shutdown = new AbortController();
  readonly stats: AcmeStats = { ordersStarted: 0, ordersSucceeded: 0, ordersFailed: 0 };

  constructor(deps: CertificateManagerDeps) {
    this.deps = deps;
    this.orders = new BoundedQueue(deps.settings.concurrency);
  }

  /** The directories this controller may contact: its own, the staging one and the operator's allow-list. */
  private knownDirectories(): string[] {
    const { directoryUrl, stagingDirectoryUrl, allowedDirectoryUrls } = this.deps.settings;
    return [
      ...new Set([
        directoryUrl,
        ...(stagingDirectoryUrl === undefined ? [] : [stagingDirectoryUrl]),
        ...(allowedDirectoryUrls ?? []),
      ]),
    ];
  }

  /** Account records of the known directories, record name → directory URL. */
  private accountRecords(): Map<string, string> {
    return new Map(this.knownDirectories().map((url) => [accountStateName(url), url]));
  }

  private directoryOf(request: CertificateRequest): string {
    return request.directory ?? this.deps.settings.directoryUrl;
  }

  private get maxOrders(): number {
    return this.deps.settings.maxOrdersPerName ?? 3;
  }

  private get orderWindowMs(): number {
    return this.deps.settings.orderWindowMs ?? DAY;
  }

  /** Reads the sealed state. Until it has, nothing is ordered (a restart must never cause a new order). */
  async loadState(signal: AbortSignal): Promise<void> {
    this.adoptState(await this.deps.store.load(signal));
  }

  /** Takes the account and certificates out of state loaded from Swarm (other records are not its business). */
  adoptState(state: LoadedState): void {
    this.merge(state);
    for (const [name, reason] of this.otherKey)
      this.deps.logger.error(
        { state: name, reason },
        'stored state was sealed with another state key; nothing is ordered and no bundle is published until the key is restored or the record removed',
      );
    for (const [name, reason] of this.damaged)
      this.deps.logger.error(
        { state: name, reason },
        'stored state is damaged; it is replaced within the order budget',
      );
    this.loaded = true;
    this.deps.logger.info(
      {
        certificates: this.certificates.size,
        accounts: this.accounts.size,
        sealedWithOtherKey: this.otherKey.size,
        damaged: this.damaged.size,
      },
      'certificate state loaded',
    );
    if (this.deps.lease && !this.leaseTimer && !this.stopped) this.leaseTick();
    this.evaluate();
  }

  private isMine(name: string): boolean {
    return this.accountRecords().has(name) || name.startsWith('cert.') || name.startsWith('orders.');
  }

  /** Folds stored state into memory; newer certificates win, order stamps add up. Returns whether what is
   * served changed. */
  private merge({ values, unreadable, sealedWithOtherKey }: LoadedState): boolean {
    let changed = false;
    this.otherKey = new Map();
    this.damaged = new Map();
    for (const [name, reason] of unreadable) {
      if (!this.isMine(name)) continue;
      if (sealedWithOtherKey.has(name)) this.otherKey.set(name, reason);
      else this.damaged.set(name, reason);
    }
    for (const name of this.damaged.keys()) {
      // A damaged order log counts as a spent budget from now: ordering blind could exceed it.
      const certificate = name.startsWith('orders.') ? name.slice('orders.'.length) : null;
      if (certificate !== null && !this.orderHistory.has(certificate))
        this.orderHistory.set(certificate, {
          orders: Array<number>(this.maxOrders).fill(this.deps.clock.now()),
          failed: [],
        });
    }
    const accountRecords = this.accountRecords();
    for (const [name, value] of values) {
      if (this.unsaved.has(name)) continue;
      const accountDirectory = accountRecords.get(name);
      if (accountDirectory !== undefined) {
        if (this.accounts.get(accountDirectory)?.keyPem !== (value as StoredAccount).keyPem)
          this.accounts.set(accountDirectory, value as StoredAccount);
      } else if (name.startsWith('cert.')) {
        const stored = value as StoredCertificate;
        const unusable = certificatePairProblem(stored.certificatePem, stored.privateKeyPem);
        if (unusable) {
          // Never served; like any damaged record it is replaced within the order budget.
          this.damaged.set(name, unusable);
          continue;
        }
        const current = this.certificates.get(stored.name);
        if (!current || Date.parse(stored.notBefore) > Date.parse(current.notBefore)) {
          this.certificates.set(stored.name, stored);
          changed = true;
        }
      } else if (name.startsWith('orders.')) {
        const certificate = name.slice('orders.'.length);
        const known = this.orderHistory.get(certificate) ?? { orders: [], failed: [] };
        const stored = value as StoredOrders;
        this.orderHistory.set(certificate, {
          orders: union(known.orders, stored.orders),
          failed: union(known.failed, stored.failed ?? []),
        });
      }
    }
    return changed;
  }

  /** The clock certificates are judged by: the local one, less how far it was seen to run ahead of the CA. */
  private caNow(): number {
    return this.deps.clock.now() - this.clockAheadMs;
  }

  available(): AvailableCertificate[] {
    const result: AvailableCertificate[] = [];
    for (const certificate of this.deps.userCertificates) {
      result.push({ name: certificate.name, domains: certificate.domains, source: 'user' });
    }
    // An ACME certificate stays in the bundles until a new one replaces it, also past its notAfter by this clock:
    // a clock far ahead would otherwise strip HTTPS from every edge (F15), and a truly expired one fails no worse
    // than a missing one for clients that must use HTTPS.
    for (const certificate of this.certificates.values()) {
      if (!this.userByName().has(certificate.name)) {
        result.push({ name: certificate.name, domains: certificate.domains, source: 'acme' });
      }
    }
    return result;
  }

  /** The operator certificates by name, the first of each name (as a scan of the list found it). */
  private userByName(): ReadonlyMap<string, LoadedCertificate> {
    const list = this.deps.userCertificates;
    if (this.userIndex?.list !== list) {
      const byName = new Map<string, LoadedCertificate>();
      for (const certificate of list)
        if (!byName.has(certificate.name)) byName.set(certificate.name, certificate);
      this.userIndex = { list, byName };
    }
    return this.userIndex.byName;
  }

  private userIndex: {
    readonly list: readonly LoadedCertificate[];
    readonly byName: ReadonlyMap<string, LoadedCertificate>;
  } | null = null;

  material(name: string): CertificateMaterial | undefined {
    // By name: render asks for every host's certificate, twice per reconcile (a scan per host was O(hosts²)).
    const user = this.userByName().get(name);
    const certificate = user ?? this.certificates.get(name);
    return certificate
      ? { certificatePem: certificate.certificatePem, privateKeyPem: certificate.privateKeyPem }
      : undefined;
  }

  sync(requests: readonly CertificateRequest[]): void {
    this.requests = requests;
    this.evaluate();
  }

  publishBlocked(): string | null {
    if (!this.loaded) return 'the certificate state has not been read yet';
    const accountRecords = this.accountRecords();
    const records = [...this.otherKey.keys()].filter(
      (name) => name.startsWith('cert.') || accountRecords.has(name),
    );
    if (records.length === 0) return null;
    return (
      `${records.length} certificate record(s) (${records.sort().slice(0, 3).join(', ')}) were sealed with another ` +
      `swarmgate_state_key (this controller's key id is ${this.deps.store.keyId}): publishing is held so the edges ` +
      'keep the certificates they serve. Restore the previous key, or remove those records to order new certificates'
    );
  }

  /** The key authorization for an HTTP-01 token the controller is answering, if any. */
  challengeResponse(token: string): string | undefined {
    return this.challenges.get(token);
  }

  status(): CertificateStatus[] {
    const now = this.deps.clock.now();
    const caNow = this.caNow();
    const rows: CertificateStatus[] = [];
    for (const user of this.deps.userCertificates) {
      rows.push({
        name: user.name,
        domains: user.domains,
        source: 'user',
        state: Date.parse(user.notAfter) > caNow ? 'valid' : 'expired',
        notAfter: user.notAfter,
        renewAt: null,
        attempts: 0,
        recentOrders: 0,
        nextAttemptAt: null,
        lastError: null,
      });
    }
    for (const request of this.requests) {
      const stored = this.certificates.get(request.name);
      const tracker = this.trackers.get(request.name);
      const record = `cert.${request.name}`;
      const otherKey = this.otherKeyReason(request);
      const unsaved = this.unsaved.get(record);
      const budget = this.budgetOf(request.name, now);
      const budgetSpent = tracker?.budgetUntil != null && tracker.budgetUntil > now;
      const damaged = this.damaged.get(record);
      const state: CertificateStatus['state'] = otherKey
        ? 'sealed-with-another-key'
        : tracker?.inFlight
          ? 'ordering'
          : unsaved
            ? 'unsaved'
            : budgetSpent
              ? 'budget-spent'
              : tracker?.lastError
                ? 'failed'
                : stored
                  ? Date.parse(stored.notAfter) > caNow
                    ? 'valid'
                    : 'expired'
                  : damaged
                    ? 'damaged'
                    : this.deps.lease && !this.holdsLease
                      ? 'standby'
                      : 'pending';
      const budgetError = budgetSpent
        ? `${budget.recent} orders for ${request.name} within ${Math.round(this.orderWindowMs / HOUR)} h: the order budget is spent; the next order is allowed at ${new Date(tracker.budgetUntil ?? now).toISOString()}`
        : null;
      rows.push({
        name: request.name,
        domains: request.domains,
        source: 'acme',
        directory: this.directoryOf(request),
        state,
        notAfter: stored?.notAfter ?? null,
        renewAt: stored
          ? new Date(
              renewalTime(stored.notBefore, stored.notAfter, this.deps.settings.renewFraction) +
                this.clockAheadMs,
            ).toISOString()
          : null,
        attempts: tracker?.attempts ?? 0,
        recentOrders: budget.recent,
        nextAttemptAt:
          tracker && tracker.nextAttemptAt > now ? new Date(tracker.nextAttemptAt).toISOString() : null,
        lastError: otherKey ?? unsaved?.lastError ?? budgetError ?? tracker?.lastError ?? damaged ?? null,
      });
    }
    // Records sealed with another key show even before the model asks for them: publishing waits on them.
    for (const [record, reason] of this.otherKey) {
      const name = record.slice('cert.'.length);
      if (!record.startsWith('cert.') || rows.some((row) => row.name === name)) continue;
      rows.push({
        name,
        domains: [],
        source: 'acme',
        state: 'sealed-with-another-key',
        notAfter: null,
        renewAt: null,
        attempts: 0,
        recentOrders: 0,
        nextAttemptAt: null,
        lastError: reason,
      });
    }
    return rows.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.shutdown.abort();
    this.timer?.cancel();
    this.leaseTimer?.cancel();
    this.orders.clear();
    await this.orders.onIdle();
    await Promise.allSettled([...this.background]);
    if (this.unsaved.size > 0)
      this.deps.logger.error(
        { records: [...this.unsaved.keys()] },
        'stopping with state that was never saved',
      );
    await this.deps.lease?.release(AbortSignal.timeout(5000));
  }

  /** Resolves once no order, save or lease round is running. */
  async idle(): Promise<void> {
    for (;;) {
      await this.orders.onIdle();
      if (this.background.size === 0) return;
      await Promise.allSettled([...this.background]);
    }
  }

  private otherKeyReason(request: CertificateRequest): string | undefined {
    return (
      this.otherKey.get(`cert.${request.name}`) ??
      this.otherKey.get(`orders.${request.name}`) ??
      this.otherKey.get(accountStateName(this.directoryOf(request)))
    );
  }

  private budgetOf(certificate: string, now: number): ReturnType<typeof orderBudget> {
    const history = this.orderHistory.get(certificate);
    const counted = history ? history.orders.filter((at) => !history.failed.includes(at)) : [];
    return orderBudget(counted, now, this.maxOrders, this.orderWindowMs);
  }

  private mayWrite(): boolean {
    return !this.deps.lease || this.deps.lease.token() !== null;
  }

  private track(work: Promise<void>): void {
    this.background.add(work);
    void work.finally(() => this.background.delete(work));
  }

  /** Starts the orders and saves that are due and sets one timer for the next thing that will be. */
  private evaluate(): void {
    if (!this.loaded || this.stopped) return;
    const now = this.deps.clock.now();
    let next: number | null = null;
    const wake = (at: number): void => {
      next = next === null ? at : Math.min(next, at);
    };
    for (const [record, entry] of this.unsaved) {
      if (entry.saving) continue;
      if (entry.nextAt <= now) this.flush(record);
      else wake(entry.nextAt);
    }
    if (this.deps.settings.enabled) {
      for (const request of this.requests) {
        const until = this.evaluateOne(request, now);
        if (until !== null) wake(until);
      }
    }
    this.timer?.cancel();
    this.timer = null;
    if (next !== null) {
      // Timers are capped so a clock jump or a far renewal date is re-checked at least daily.
      const delay = Math.min(Math.max(0, (next as number) - now), DAY);
      this.timer = this.deps.clock.setTimer(delay, () => this.evaluate());
    }
  }

  /** Orders one certificate if it is due and allowed; returns when to look again, if at a known time. */
  private evaluateOne(request: CertificateRequest, now: number): number | null {
    const tracker = this.trackerFor(request.name);
    const directoryUrl = this.directoryOf(request);
    // The model only names directories the operator configured; this holds even if a request came from elsewhere:
    // the controller never contacts a directory it was not given (it holds the Docker socket).
    if (!this.knownDirectories().includes(directoryUrl)) {
      const reason = new SwarmgateError(
        'ERR_ACME_DIRECTORY',
        `${directoryUrl} is not the controller's ACME directory, its staging directory or one in SWARMGATE_ACME_DIRECTORIES; nothing is ordered for ${request.name}`,
        { certificate: request.name, directory: directoryUrl },
      );
      if (tracker.lastError !== reason.message)
        this.deps.logger.error({ certificate: request.name, err: reason }, 'ACME directory not allowed');
      tracker.lastError = reason.message;
      return null;
    }
    const skew = this.clockAheadMs;
    const action = decideCertificateAction(
      this.certificates.get(request.name),
      { domains: request.domains, directoryUrl },
      { inFlight: tracker.inFlight, nextAttemptAt: tracker.nextAttemptAt - skew },
      this.otherKeyReason(request) !== undefined,
      now - skew,
      this.deps.settings.renewFraction,
    );
    if (action.kind === 'wait') return action.until === null ? null : action.until + skew;
    if (action.kind === 'blocked') return null;
    // Only the lease holder orders; the lease rounds call evaluate again when that changes.
    if (!this.mayWrite()) return null;
    const budget = this.budgetOf(request.name, now);
    if (!budget.allowed) {
      if (tracker.budgetUntil !== budget.nextAt)
        this.deps.logger.error(
          {
            certificate: request.name,
            recentOrders: budget.recent,
            nextOrderAt: budget.nextAt,
            reason: action.reason,
          },
          'certificate order budget spent; no order until the window allows one',
        );
      tracker.budgetUntil = budget.nextAt;
      return budget.nextAt;
    }
    tracker.budgetUntil = null;
    tracker.inFlight = true;
    this.deps.logger.info(
      { certificate: request.name, domains: request.domains, directory: directoryUrl, reason: action.reason },
      'ordering certificate',
    );
    void this.orders.add(() => this.order(request));
    return null;
  }

  private trackerFor(name: string): Tracker {
    let tracker = this.trackers.get(name);
    if (!tracker)
      this.trackers.set(
        name,
        (tracker = { attempts: 0, nextAttemptAt: 0, inFlight: false, lastError: null, budgetUntil: null }),
      );
    return tracker;
  }

  private async order(request: CertificateRequest): Promise<void> {
    const tracker = this.trackerFor(request.name);
    const signal = this.shutdown.signal;
    const directoryUrl = this.directoryOf(request);
    let issued: Awaited<ReturnType<AcmePort['order']>>;
    let account: StoredAccount;
    let stamp: number | null = null;
    try {
      account = await this.ensureAccount(directoryUrl, signal);
      // The order is counted in Swarm before the CA is asked: no crash, failed save or restart buys another one.
      const now = this.deps.clock.now();
      const known = this.orderHistory.get(request.name) ?? { orders: [], failed: [] };
      const recent = (at: number): boolean => at > now - this.orderWindowMs;
      const history = { orders: [...known.orders.filter(recent), now], failed: known.failed.filter(recent) };
      await this.deps.store.save(`orders.${request.name}`, history satisfies StoredOrders, signal);
      this.orderHistory.set(request.name, history);
      stamp = now;
      this.stats.ordersStarted++;
      const responder: ChallengeResponder = {
        add: (token, keyAuthorization) => void this.challenges.set(token, keyAuthorization),
        remove: (token) => void this.challenges.delete(token),
      };
      issued = await this.withTimeout(
        request.name,
        this.deps.acme.order({
          directoryUrl,
          accountKeyPem: account.keyPem,
          accountUrl: account.url,
          email: request.email,
          domains: request.domains,
          challenges: responder,
        }),
      );
      // nginx no longer loads certificates at a reload (lua/swarmgate/certificates.lua): what it would have refused
      // is refused here, before the certificate reaches any bundle.
      const unusable = certificatePairProblem(issued.certificatePem, issued.privateKeyPem);
      if (unusable)
        throw new SwarmgateError('ERR_ACME', `the CA issued an unusable certificate: ${unusable}`);
    } catch (error) {
      if (!this.stopped) {
        this.failed(request.name, tracker, error);
        if (stamp !== null) await this.markFailed(request.name, stamp, signal);
      }
      tracker.inFlight = false;
      this.evaluate();
      return;
    }
    // Issued: from here on nothing throws the certificate away. It is served at once and saved in the background;
    // a failed save is retried on its own, never by ordering again.
    const { notBefore, notAfter } = describeCertificate(issued.certificatePem);
    const stored: StoredCertificate = {
      name: request.name,
      domains: [...request.domains],
      certificatePem: issued.certificatePem,
      privateKeyPem: issued.privateKeyPem,
      notBefore,
      notAfter,
      directoryUrl,
    };
    this.certificates.set(request.name, stored);
    this.damaged.delete(`cert.${request.name}`);
    this.noteCaTime(request.name, notBefore);
    if (account.url !== issued.accountUrl) {
      const updated = { ...account, url: issued.accountUrl };
      this.accounts.set(directoryUrl, updated);
      this.persist(accountStateName(directoryUrl), updated);
    }
    this.persist(`cert.${request.name}`, stored);
    tracker.attempts = 0;
    // Never order the same certificate twice within the minimum retry time, even if the CA's validity dates
    // (clock skew, very short lifetimes) say it is due again at once: no order loop against a CA.
    tracker.nextAttemptAt = this.deps.clock.now() + this.deps.settings.retryMinMs;
    tracker.lastError = null;
    tracker.inFlight = false;
    this.stats.ordersSucceeded++;
    this.deps.logger.info(
      { certificate: request.name, directory: directoryUrl, notAfter },
      'certificate issued',
    );
    this.deps.onChange();
    this.evaluate();
  }

  private failed(name: string, tracker: Tracker, error: unknown): void {
    tracker.attempts++;
    const delay = retryDelay(tracker.attempts, this.deps.settings.retryMinMs, this.deps.settings.retryMaxMs);
    tracker.nextAttemptAt = this.deps.clock.now() + delay;
    tracker.lastError = describeError(error);
    this.stats.ordersFailed++;
    this.deps.logger.error(
      { certificate: name, attempts: tracker.attempts, retryInMs: delay, err: tracker.lastError },
      'certificate order failed; will retry',
    );
  }

  /** The CA answered with an error (or not at all): that order issued nothing and leaves the budget. If this
   * save fails, the order keeps counting: the safe side. */
  private async markFailed(certificate: string, stamp: number, signal: AbortSignal): Promise<void> {
    const history = this.orderHistory.get(certificate);
    if (!history) return;
    const next = { orders: history.orders, failed: union(history.failed, [stamp]) };
    try {
      await this.deps.store.save(`orders.${certificate}`, next satisfies StoredOrders, signal);
      this.orderHistory.set(certificate, next);
    } catch (error) {
      this.deps.logger.warn(
        { certificate, err: describeError(error) },
        'a failed order could not be noted; it still counts against the order budget',
      );
    }
  }

  /** A fresh certificate's notBefore is the CA's time: a local clock far ahead of it is noted, not obeyed. */
  private noteCaTime(name: string, notBefore: string): void {
    const lag = this.deps.clock.now() - Date.parse(notBefore);
    const ahead = lag > (this.deps.settings.clockAheadBoundMs ?? DAY) ? lag : 0;
    if (ahead > 0)
      this.deps.logger.error(
        { certificate: name, aheadMs: ahead },
        'the local clock is ahead of the CA; certificate dates are judged by the CA’s time',
      );
    else if (this.clockAheadMs > 0) this.deps.logger.info('the local clock agrees with the CA again');
    this.clockAheadMs = ahead;
  }

  /** Keeps a record in memory as the truth and saves it in the background, retrying only the save. */
  private persist(record: string, value: unknown): void {
    const entry = this.unsaved.get(record);
    if (entry) {
      entry.value = value;
      entry.nextAt = Math.min(entry.nextAt, this.deps.clock.now());
    } else {
      this.unsaved.set(record, {
        value,
        attempts: 0,
        nextAt: this.deps.clock.now(),
        lastError: null,
        saving: false,
      });
    }
    this.flush(record);
  }

  private flush(record: string): void {
    const entry = this.unsaved.get(record);
    if (!entry || entry.saving || this.stopped) return;
    entry.saving = true;
    const value = entry.value;
    this.track(
      (async () => {
        try {
          await this.deps.store.save(record, value, this.shutdown.signal);
          if (entry.value === value) this.unsaved.delete(record);
          if (entry.attempts > 0)
            this.deps.logger.info({ state: record, attempts: entry.attempts }, 'state saved');
        } catch (error) {
          if (this.stopped) return;
          entry.attempts++;
          const delay = retryDelay(
            entry.attempts,
            this.deps.settings.retryMinMs,
            this.deps.settings.retryMaxMs,
          );
          entry.nextAt = this.deps.clock.now() + delay;
          entry.lastError = `not saved yet (served from memory): ${describeError(error)}`;
          this.deps.logger.error(
            { state: record, attempts: entry.attempts, retryInMs: delay, err: describeError(error) },
            'state not saved; it is served from memory and only the save is retried',
          );
        } finally {
          entry.saving = false;
          this.evaluate();
        }
      })(),
    );
  }

  /** One lease round: acquire or renew; a new holder first reads what the last one stored, a standby follows it. */
  private leaseTick(): void {
    const lease = this.deps.lease;
    if (!lease || this.stopped) return;
    const signal = this.shutdown.signal;
    const round = (async () => {
      const held = this.holdsLease;
      try {
        this.holdsLease = await lease.tick(signal);
      } catch (error) {
        this.holdsLease = lease.token() !== null;
        this.deps.logger.error({ err: describeError(error) }, 'state lease round failed');
      }
      if (this.stopped) return;
      if (!this.holdsLease || !held) {
        try {
          if (this.merge(await this.deps.store.load(signal))) this.deps.onChange();
        } catch (error) {
          this.deps.logger.error({ err: describeError(error) }, 'cannot read the certificate state');
        }
      }
      if (this.holdsLease !== held)
        this.deps.logger.info({ holder: lease.holder, holds: this.holdsLease }, 'state lease changed');
      this.evaluate();
    })();
    this.track(round);
    void round.finally(() => {
      if (!this.stopped)
        this.leaseTimer = this.deps.clock.setTimer(lease.renewEveryMs, () => this.leaseTick());
    });
  }

  private withTimeout<T>(name: string, work: Promise<T>): Promise<T> {
    const timeoutMs = this.deps.settings.orderTimeoutMs ?? 300_000;
    let timer: TimerHandle | null = null;
    const timeout = new Promise<never>((_, reject) => {
      timer = this.deps.clock.setTimer(timeoutMs, () =>
        reject(new SwarmgateError('ERR_ACME', `the order for ${name} took longer than ${timeoutMs} ms`)),
      );
    });
    return Promise.race([work, timeout]).finally(() => timer?.cancel());
  }

  private readonly accountCreations = new Map<string, Promise<StoredAccount>>();

  /** One account per directory, its key sealed in Swarm; concurrent first orders share one creation. */
  private ensureAccount(directoryUrl: string, signal: AbortSignal): Promise<StoredAccount> {
    const known = this.accounts.get(directoryUrl);
    if (known) return Promise.resolve(known);
    let creation = this.accountCreations.get(directoryUrl);
    if (!creation) {
      creation = this.createAccount(directoryUrl, signal).finally(() => {
        this.accountCreations.delete(directoryUrl);
      });
      this.accountCreations.set(directoryUrl, creation);
    }
    return creation;
  }

  private async createAccount(directoryUrl: string, signal: AbortSignal): Promise<StoredAccount> {
    const account: StoredAccount = {
      directoryUrl,
      keyPem: await this.deps.acme.createAccountKey(),
      url: null,
    };
    await this.deps.store.save(accountStateName(directoryUrl), account, signal);
    this.accounts.set(directoryUrl, account);
    return account;
  }
}

/** The state record of a directory's account: named by a digest of its URL (the name the first version used). */
function accountStateName(directoryUrl: string): string {
  const digest = createHash('sha256').update(directoryUrl).digest('hex').slice(0, 12);
  return `account.${digest}`;
}

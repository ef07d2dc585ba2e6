// The controller is the only ACME client. This keeps the certificates the routing model asks for: it orders
// missing ones through a bounded queue, renews when a set fraction of the lifetime remains, backs off
// exponentially after failures, and keeps everything in the sealed Swarm state store so a rescheduled controller
// serves the same certificates with no new order.
import { createHash } from 'node:crypto';
import { describeError, SwarmgateError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import type { AvailableCertificate, CertificateRequest } from '../model/routing-model.ts';
import type { Clock, TimerHandle } from '../reconcile/clock.ts';
import { BoundedQueue } from '../reconcile/queues.ts';
import type { CertificateMaterial } from '../render/render-config.ts';
import type { AcmePort, ChallengeResponder } from './acme-adapter.ts';
import type { LoadedState, StateStore } from './state-store.ts';
import type { LoadedCertificate } from './user-certificates.ts';
import { describeCertificate } from './user-certificates.ts';

export interface AcmeSettings {
  readonly enabled: boolean;
  readonly directoryUrl: string;
  /** Renew when this fraction of the certificate's lifetime remains (1/3 by default). */
  readonly renewFraction: number;
  readonly concurrency: number;
  readonly retryMinMs: number;
  readonly retryMaxMs: number;
  /** An order still running after this long is given up (and retried with backoff). */
  readonly orderTimeoutMs?: number;
}

/** What the reconcile loop needs from certificates: what can be served, its PEMs, and what the model wants. */
export interface CertificateSource {
  available(): AvailableCertificate[];
  material(name: string): CertificateMaterial | undefined;
  sync(requests: readonly CertificateRequest[]): void;
}

export const NO_CERTIFICATES: CertificateSource = {
  available: () => [],
  material: () => undefined,
  sync: () => undefined,
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

interface Tracker {
  attempts: number;
  nextAttemptAt: number;
  inFlight: boolean;
  lastError: string | null;
}

export interface CertificateStatus {
  readonly name: string;
  readonly domains: readonly string[];
  readonly source: 'acme' | 'user';
  readonly state: 'valid' | 'expired' | 'pending' | 'ordering' | 'failed' | 'blocked';
  readonly notAfter: string | null;
  readonly renewAt: string | null;
  readonly attempts: number;
  readonly nextAttemptAt: string | null;
  readonly lastError: string | null;
}

export type CertificateAction =
  | { readonly kind: 'order'; readonly reason: 'missing' | 'names-changed' | 'renewal' | 'expired' }
  | { readonly kind: 'wait'; readonly until: number | null }
  | { readonly kind: 'blocked' };

export function renewalTime(notBefore: string, notAfter: string, renewFraction: number): number {
  const start = Date.parse(notBefore);
  const end = Date.parse(notAfter);
  return end - (end - start) * renewFraction;
}

/** Pure: what to do about one requested certificate now. */
export function decideCertificateAction(
  stored: Pick<StoredCertificate, 'domains' | 'notBefore' | 'notAfter'> | undefined,
  request: Pick<CertificateRequest, 'domains'>,
  tracker: Pick<Tracker, 'inFlight' | 'nextAttemptAt'>,
  blocked: boolean,
  now: number,
  renewFraction: number,
): CertificateAction {
  if (blocked) return { kind: 'blocked' };
  if (tracker.inFlight) return { kind: 'wait', until: null };
  let reason: 'missing' | 'names-changed' | 'renewal' | 'expired';
  if (!stored) reason = 'missing';
  else if (!sameNames(stored.domains, request.domains)) reason = 'names-changed';
  else if (now >= Date.parse(stored.notAfter)) reason = 'expired';
  else {
    const renewAt = renewalTime(stored.notBefore, stored.notAfter, renewFraction);
    if (now < renewAt) return { kind: 'wait', until: renewAt };
    reason = 'renewal';
  }
  if (now < tracker.nextAttemptAt) return { kind: 'wait', until: tracker.nextAttemptAt };
  return { kind: 'order', reason };
}

/** Exponential backoff after the n-th consecutive failure (n ≥ 1). */
export function retryDelay(failures: number, minMs: number, maxMs: number): number {
  return Math.min(maxMs, minMs * 2 ** Math.max(0, failures - 1));
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
  private readonly blocked = new Map<string, string>();
  private account: StoredAccount | null = null;
  private requests: readonly CertificateRequest[] = [];
  private readonly challenges = new Map<string, string>();
  private readonly orders: BoundedQueue;
  private timer: TimerHandle | null = null;
  private loaded = false;
  private stopped = false;
  private readonly shutdown = new AbortController();
  readonly stats: AcmeStats = { ordersStarted: 0, ordersSucceeded: 0, ordersFailed: 0 };

  constructor(deps: CertificateManagerDeps) {
    this.deps = deps;
    this.orders = new BoundedQueue(deps.settings.concurrency);
  }

  private get accountStateName(): string {
    const digest = createHash('sha256').update(this.deps.settings.directoryUrl).digest('hex').slice(0, 12);
    return `account.${digest}`;
  }

  /** Reads the sealed state. Until it has, nothing is ordered (a restart must never cause a new order). */
  async loadState(signal: AbortSignal): Promise<void> {
    this.adoptState(await this.deps.store.load(signal));
  }

  /** Takes the account and certificates out of state loaded from Swarm (other records are not its business). */
  adoptState({ values, unreadable }: LoadedState): void {
    for (const [name, reason] of unreadable) {
      if (name !== this.accountStateName && !name.startsWith('cert.')) continue;
      this.blocked.set(name, reason);
      this.deps.logger.error(
        { state: name, reason },
        'stored state cannot be opened; no new order replaces it until the key is fixed or the record removed',
      );
    }
    for (const [name, value] of values) {
      if (name === this.accountStateName) this.account = value as StoredAccount;
      else if (name.startsWith('cert.')) {
        const certificate = value as StoredCertificate;
        this.certificates.set(certificate.name, certificate);
      }
    }
    this.loaded = true;
    this.deps.logger.info(
      { certificates: this.certificates.size, account: this.account !== null, unreadable: unreadable.size },
      'certificate state loaded',
    );
  }

  available(): AvailableCertificate[] {
    const now = this.deps.clock.now();
    const result: AvailableCertificate[] = [];
    for (const certificate of this.deps.userCertificates) {
      result.push({ name: certificate.name, domains: certificate.domains, source: 'user' });
    }
    for (const certificate of this.certificates.values()) {
      if (
        Date.parse(certificate.notAfter) > now &&
        !this.deps.userCertificates.some((user) => user.name === certificate.name)
      ) {
        result.push({ name: certificate.name, domains: certificate.domains, source: 'acme' });
      }
    }
    return result;
  }

  material(name: string): CertificateMaterial | undefined {
    const user = this.deps.userCertificates.find((certificate) => certificate.name === name);
    const certificate = user ?? this.certificates.get(name);
    return certificate
      ? { certificatePem: certificate.certificatePem, privateKeyPem: certificate.privateKeyPem }
      : undefined;
  }

  sync(requests: readonly CertificateRequest[]): void {
    this.requests = requests;
    this.evaluate();
  }

  /** The key authorization for an HTTP-01 token the controller is answering, if any. */
  challengeResponse(token: string): string | undefined {
    return this.challenges.get(token);
  }

  status(): CertificateStatus[] {
    const now = this.deps.clock.now();
    const rows: CertificateStatus[] = [];
    for (const user of this.deps.userCertificates) {
      rows.push({
        name: user.name,
        domains: user.domains,
        source: 'user',
        state: Date.parse(user.notAfter) > now ? 'valid' : 'expired',
        notAfter: user.notAfter,
        renewAt: null,
        attempts: 0,
        nextAttemptAt: null,
        lastError: null,
      });
    }
    for (const request of this.requests) {
      const stored = this.certificates.get(request.name);
      const tracker = this.trackers.get(request.name);
      const blockedReason =
        this.blocked.get(`cert.${request.name}`) ?? this.blocked.get(this.accountStateName);
      const valid = stored && Date.parse(stored.notAfter) > now;
      const state: CertificateStatus['state'] = blockedReason
        ? 'blocked'
        : tracker?.inFlight
          ? 'ordering'
          : tracker?.lastError
            ? 'failed'
            : valid
              ? 'valid'
              : 'pending';
      rows.push({
        name: request.name,
        domains: request.domains,
        source: 'acme',
        state,
        notAfter: stored?.notAfter ?? null,
        renewAt: stored
          ? new Date(
              renewalTime(stored.notBefore, stored.notAfter, this.deps.settings.renewFraction),
            ).toISOString()
          : null,
        attempts: tracker?.attempts ?? 0,
        nextAttemptAt:
          tracker && tracker.nextAttemptAt > now ? new Date(tracker.nextAttemptAt).toISOString() : null,
        lastError: blockedReason ?? tracker?.lastError ?? null,
      });
    }
    return rows.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  stop(): Promise<void> {
    this.stopped = true;
    this.shutdown.abort();
    this.timer?.cancel();
    this.orders.clear();
    return this.orders.onIdle();
  }

  idle(): Promise<void> {
    return this.orders.onIdle();
  }

  /** Starts the orders that are due and sets one timer for the next thing that will be. */
  private evaluate(): void {
    if (!this.loaded || this.stopped || !this.deps.settings.enabled) return;
    const now = this.deps.clock.now();
    let next: number | null = null;
    for (const request of this.requests) {
      const tracker = this.trackerFor(request.name);
      const blocked = this.blocked.has(`cert.${request.name}`) || this.blocked.has(this.accountStateName);
      const action = decideCertificateAction(
        this.certificates.get(request.name),
        request,
        tracker,
        blocked,
        now,
        this.deps.settings.renewFraction,
      );
      if (action.kind === 'order') {
        tracker.inFlight = true;
        this.deps.logger.info(
          { certificate: request.name, domains: request.domains, reason: action.reason },
          'ordering certificate',
        );
        void this.orders.add(() => this.order(request));
      } else if (action.kind === 'wait' && action.until !== null) {
        next = next === null ? action.until : Math.min(next, action.until);
      }
    }
    this.timer?.cancel();
    this.timer = null;
    if (next !== null) {
      // Timers are capped so a clock jump or a far renewal date is re-checked at least daily.
      const delay = Math.min(Math.max(0, next - now), 24 * 3_600_000);
      this.timer = this.deps.clock.setTimer(delay, () => this.evaluate());
    }
  }

  private trackerFor(name: string): Tracker {
    let tracker = this.trackers.get(name);
    if (!tracker)
      this.trackers.set(
        name,
        (tracker = { attempts: 0, nextAttemptAt: 0, inFlight: false, lastError: null }),
      );
    return tracker;
  }

  private async order(request: CertificateRequest): Promise<void> {
    const tracker = this.trackerFor(request.name);
    const signal = this.shutdown.signal;
    this.stats.ordersStarted++;
    try {
      const account = await this.ensureAccount(signal);
      const responder: ChallengeResponder = {
        add: (token, keyAuthorization) => void this.challenges.set(token, keyAuthorization),
        remove: (token) => void this.challenges.delete(token),
      };
      const issued = await this.withTimeout(
        request.name,
        this.deps.acme.order({
          directoryUrl: this.deps.settings.directoryUrl,
          accountKeyPem: account.keyPem,
          accountUrl: account.url,
          email: request.email,
          domains: request.domains,
          challenges: responder,
        }),
      );
      if (account.url !== issued.accountUrl) {
        this.account = { ...account, url: issued.accountUrl };
        await this.deps.store.save(this.accountStateName, this.account, signal);
      }
      const { notBefore, notAfter } = describeCertificate(issued.certificatePem);
      const stored: StoredCertificate = {
        name: request.name,
        domains: [...request.domains],
        certificatePem: issued.certificatePem,
        privateKeyPem: issued.privateKeyPem,
        notBefore,
        notAfter,
        directoryUrl: this.deps.settings.directoryUrl,
      };
      // Persist before serving: a certificate the next controller cannot find would be ordered again.
      await this.deps.store.save(`cert.${request.name}`, stored, signal);
      this.certificates.set(request.name, stored);
      tracker.attempts = 0;
      // Never order the same certificate twice within the minimum retry time, even if the CA's validity dates
      // (clock skew, very short lifetimes) say it is due again at once: no order loop against a CA.
      tracker.nextAttemptAt = this.deps.clock.now() + this.deps.settings.retryMinMs;
      tracker.lastError = null;
      this.stats.ordersSucceeded++;
      this.deps.logger.info({ certificate: request.name, notAfter }, 'certificate issued');
      this.deps.onChange();
    } catch (error) {
      if (this.stopped) return;
      tracker.attempts++;
      const delay = retryDelay(
        tracker.attempts,
        this.deps.settings.retryMinMs,
        this.deps.settings.retryMaxMs,
      );
      tracker.nextAttemptAt = this.deps.clock.now() + delay;
      tracker.lastError = describeError(error);
      this.stats.ordersFailed++;
      this.deps.logger.error(
        { certificate: request.name, attempts: tracker.attempts, retryInMs: delay, err: tracker.lastError },
        'certificate order failed; will retry',
      );
    } finally {
      tracker.inFlight = false;
      this.evaluate();
    }
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

  private accountCreation: Promise<StoredAccount> | null = null;

  /** One account per directory; concurrent first orders share one creation. */
  private ensureAccount(signal: AbortSignal): Promise<StoredAccount> {
    if (this.account && this.account.directoryUrl === this.deps.settings.directoryUrl) {
      return Promise.resolve(this.account);
    }
    this.accountCreation ??= this.createAccount(signal).finally(() => {
      this.accountCreation = null;
    });
    return this.accountCreation;
  }

  private async createAccount(signal: AbortSignal): Promise<StoredAccount> {
    const account: StoredAccount = {
      directoryUrl: this.deps.settings.directoryUrl,
      keyPem: await this.deps.acme.createAccountKey(),
      url: null,
    };
    await this.deps.store.save(this.accountStateName, account, signal);
    this.account = account;
    return account;
  }
}

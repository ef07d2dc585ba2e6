// Failed sign-ins to the status page, counted per client address in fixed windows of the injected clock. With
// SWARMGATE_ADMIN_HOST the login form faces the internet: an address that failed too often gets 429 without its
// token being looked at, and a cap on all failures together bounds an attacker who rotates addresses. Memory is
// bounded: at most `maxAddresses` entries, and an address that finds the table full counts toward the total only.
import type { Clock } from '../../reconcile/clock.ts';

export interface LoginThrottleLimits {
  /** Failed logins one address may make per window. */
  readonly perAddress: number;
  /** Failed logins all addresses together may make per window. */
  readonly total: number;
  readonly windowMs: number;
  readonly maxAddresses: number;
}

export const DEFAULT_LOGIN_LIMITS: LoginThrottleLimits = {
  perAddress: 10,
  total: 300,
  windowMs: 60_000,
  maxAddresses: 4096,
};

interface Window {
  start: number;
  failures: number;
}

export class LoginThrottle {
  private readonly clock: Clock;
  private readonly limits: LoginThrottleLimits;
  private readonly byAddress = new Map<string, Window>();
  private readonly all: Window = { start: 0, failures: 0 };

  constructor(clock: Clock, limits: LoginThrottleLimits = DEFAULT_LOGIN_LIMITS) {
    this.clock = clock;
    this.limits = limits;
  }

  /** Milliseconds until `address` may try again; 0: it may now. */
  retryAfterMs(address: string): number {
    const now = this.clock.now();
    const mine = this.current(this.byAddress.get(address), now);
    const all = this.current(this.all, now);
    const waits = [
      mine && mine.failures >= this.limits.perAddress ? mine.start + this.limits.windowMs - now : 0,
      all && all.failures >= this.limits.total ? all.start + this.limits.windowMs - now : 0,
    ];
    return Math.max(...waits);
  }

  failed(address: string): void {
    const now = this.clock.now();
    if (!this.current(this.all, now)) Object.assign(this.all, { start: now, failures: 0 });
    this.all.failures++;
    let mine = this.current(this.byAddress.get(address), now);
    if (!mine) {
      if (this.byAddress.size >= this.limits.maxAddresses) this.forgetExpired(now);
      if (this.byAddress.size >= this.limits.maxAddresses) return;
      mine = { start: now, failures: 0 };
      this.byAddress.set(address, mine);
    }
    mine.failures++;
  }

  /** Addresses with a failure in the current window (for tests and the bound). */
  get size(): number {
    return this.byAddress.size;
  }

  private current(window: Window | undefined, now: number): Window | undefined {
    return window && now - window.start < this.limits.windowMs && window.failures > 0 ? window : undefined;
  }

  private forgetExpired(now: number): void {
    for (const [address, window] of this.byAddress) {
      if (!this.current(window, now)) this.byAddress.delete(address);
    }
  }
}

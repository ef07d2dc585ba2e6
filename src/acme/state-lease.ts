// Only one controller of an instance orders certificates and writes state: the one holding this lease. The lease
// is a chain of Docker configs `sg-<instance hash>-lease-<seq>`; Docker refuses a second config of one name, so
// writing seq+1 is a compare-and-swap that exactly one contender wins. The holder renews it well before it expires;
// another controller takes it over only once it has expired. Each new holder gets a higher fence token, written
// into every state record it saves: readers rank records by fence first, so a late write of a holder that lost the
// lease (paused, partitioned) never wins over the new holder's, and the store takes such a write back at once.
import type { DockerPort, RawConfig } from '../docker/docker-port.ts';
import { describeError, isSwarmgateError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import type { Clock } from '../reconcile/clock.ts';
import type { StateFence } from './state-store.ts';
import { instanceOf, instancePrefix, LABEL_INSTANCE, maxStateFence } from './state-store.ts';

const LABEL_LEASE = 'swarmgate.lease';
const LABEL_SEQ = 'swarmgate.lease.seq';
const LABEL_TOKEN = 'swarmgate.lease.token';
const LABEL_EXPIRES = 'swarmgate.lease.expires';

export interface LeaseRecord {
  readonly id: string;
  readonly holder: string;
  readonly seq: number;
  readonly token: number;
  readonly expiresAt: number;
}

export interface StateLeaseDeps {
  readonly docker: DockerPort;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly instance: string;
  /** Unique per process: a restarted controller is a new holder and gets a new fence token. */
  readonly holder: string;
  /** How long a lease lasts without renewal (30 s by default); the holder renews every third of it. */
  readonly ttlMs?: number;
}

export class StateLease implements StateFence {
  readonly holder: string;
  readonly ttlMs: number;
  private readonly deps: StateLeaseDeps;
  private held: { token: number; seq: number; expiresAt: number } | null = null;

  constructor(deps: StateLeaseDeps) {
    this.deps = deps;
    this.holder = deps.holder;
    this.ttlMs = deps.ttlMs ?? 30_000;
  }

  get renewEveryMs(): number {
    return Math.max(1, Math.floor(this.ttlMs / 3));
  }

  /** The fence token while this controller holds an unexpired lease (by its own clock), else null. */
  token(): number | null {
    return this.held && this.deps.clock.now() < this.held.expiresAt ? this.held.token : null;
  }

  /** Who holds the lease now, as last read: for status output. */
  async current(signal: AbortSignal): Promise<LeaseRecord | null> {
    return newestOf(await this.list(signal));
  }

  /** One acquire-or-renew attempt. Returns whether this controller holds the lease afterwards. */
  async tick(signal: AbortSignal): Promise<boolean> {
    const leases = await this.list(signal);
    const newest = newestOf(leases);
    const now = this.deps.clock.now();
    if (newest && newest.holder !== this.holder && newest.expiresAt > now) {
      this.held = null;
      return false;
    }
    const renewing =
      newest !== null &&
      newest.holder === this.holder &&
      newest.expiresAt > now &&
      this.held?.token === newest.token;
    // A new holder's token is above every token in use, also above fences in records whose lease chain is gone.
    const token = renewing
      ? newest.token
      : Math.max(newest?.token ?? 0, await maxStateFence(this.deps.docker, this.deps.instance, signal)) + 1;
    const seq = (newest?.seq ?? 0) + 1;
    const expiresAt = now + this.ttlMs;
    try {
      await this.write(seq, token, expiresAt, signal);
    } catch (error) {
      if (isSwarmgateError(error) && error.details.statusCode === 409) {
        // Another controller wrote that seq first: it won this round.
        this.held = null;
        return false;
      }
      throw error;
    }
    if (!renewing)
      this.deps.logger.info(
        { holder: this.holder, token },
        'state lease acquired: this controller writes state',
      );
    this.held = { token, seq, expiresAt };
    for (const lease of leases)
      if (lease.seq < seq) await this.deps.docker.removeConfig(lease.id, signal).catch(() => undefined);
    return true;
  }

  /** Read back: is the newest lease still this controller's under `token`? */
  async confirm(token: number, signal: AbortSignal): Promise<boolean> {
    const newest = newestOf(await this.list(signal));
    return (
      newest !== null &&
      newest.holder === this.holder &&
      newest.token === token &&
      newest.expiresAt > this.deps.clock.now()
    );
  }

  /** Hands the lease over at once (at shutdown): an expired record under the same token, not a removal, so the
   * next holder still counts tokens up from it. */
  async release(signal: AbortSignal): Promise<void> {
    const held = this.held;
    this.held = null;
    if (!held) return;
    try {
      const newest = newestOf(await this.list(signal));
      if (newest?.holder === this.holder && newest.token === held.token)
        await this.write(newest.seq + 1, held.token, 0, signal);
    } catch (error) {
      this.deps.logger.warn({ err: describeError(error) }, 'state lease not released; it expires by itself');
    }
  }

  private async write(seq: number, token: number, expiresAt: number, signal: AbortSignal): Promise<void> {
    const record = { holder: this.holder, seq, token, expiresAt };
    await this.deps.docker.createConfig(
      `${instancePrefix(this.deps.instance)}-lease-${seq}`,
      {
        [LABEL_LEASE]: this.holder,
        [LABEL_INSTANCE]: this.deps.instance,
        [LABEL_SEQ]: String(seq),
        [LABEL_TOKEN]: String(token),
        [LABEL_EXPIRES]: String(expiresAt),
      },
      Buffer.from(JSON.stringify(record)),
      signal,
    );
  }

  private async list(signal: AbortSignal): Promise<LeaseRecord[]> {
    const configs = await this.deps.docker.listConfigs(LABEL_LEASE, signal);
    return configs.flatMap((config) => this.parse(config));
  }

  private parse(config: RawConfig): LeaseRecord[] {
    const labels = config.Spec?.Labels ?? {};
    if (instanceOf(labels) !== this.deps.instance || !config.ID) return [];
    const seq = Number(labels[LABEL_SEQ]);
    const token = Number(labels[LABEL_TOKEN]);
    const expiresAt = Number(labels[LABEL_EXPIRES]);
    const holder = labels[LABEL_LEASE];
    if (!holder || ![seq, token, expiresAt].every(Number.isSafeInteger)) return [];
    return [{ id: config.ID, holder, seq, token, expiresAt }];
  }
}

function newestOf(leases: readonly LeaseRecord[]): LeaseRecord | null {
  let newest: LeaseRecord | null = null;
  for (const lease of leases) if (!newest || lease.seq > newest.seq) newest = lease;
  return newest;
}

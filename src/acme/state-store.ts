// Controller state (ACME account keys, certificates and their keys) kept in Swarm itself as Docker configs, so a
// controller rescheduled to another manager finds it with no volume. Configs are readable through the API, so
// every value is sealed with AES-256-GCM under a key from a Docker secret; the config's logical name is bound in
// as associated data, so a blob moved under another name does not open either.
//
// Docker config names are at most 64 [a-zA-Z0-9-_.] characters (swarmkit's validateConfigOrSecretAnnotations), so
// a record's name is never part of the config name: the config is named by hashes, and the readable record name,
// its generation, the instance it belongs to, the id of the key that sealed it and the writer's fence token are
// labels. Configs written before that (named `swarmgate-state-<record>-<hash8>-<gen>`, no instance or key label)
// are still read, as the default instance's, and replaced by the new form on their next save.
import { createCipheriv, createDecipheriv, createHash, createHmac, randomBytes } from 'node:crypto';
import type { DockerPort, RawConfig } from '../docker/docker-port.ts';
import { describeError, isSwarmgateError, SwarmgateError } from '../errors.ts';

export const LABEL_STATE = 'swarmgate.state';
const LABEL_GENERATION = 'swarmgate.state.generation';
export const LABEL_INSTANCE = 'swarmgate.instance';
const LABEL_KEY_ID = 'swarmgate.state.key-id';
const LABEL_FENCE = 'swarmgate.state.fence';

/** The instance a record without an instance label (written before instances existed) belongs to. */
export const DEFAULT_INSTANCE = 'swarmgate';
/** What SWARMGATE_INSTANCE may be: it goes into labels and, hashed, into config names. */
export const INSTANCE_NAME = /^[a-z0-9][a-z0-9_.-]{0,62}$/;

function sha256Hex(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

/** A short, stable id of a state key that reveals nothing about it: "wrong key" is then told from "damaged". */
export function stateKeyId(key: Buffer): string {
  return createHmac('sha256', key).update('swarmgate-state-key-id-v1').digest('hex').slice(0, 16);
}

/** The hash-prefix of every config of one instance (8 hex). */
export function instancePrefix(instance: string): string {
  return `sg-${sha256Hex(`swarmgate-instance\u0000${instance}`).slice(0, 8)}`;
}

/** `sg-<instance hash 8>-<sha256(record)[:16]>-<generation>`: 29 characters plus the generation's digits, ≤ 64. */
export function stateConfigName(instance: string, record: string, generation: number): string {
  return `${instancePrefix(instance)}-${sha256Hex(record).slice(0, 16)}-${generation}`;
}

/** Which instance a config belongs to: its label, or the default instance for configs older than the label. */
export function instanceOf(labels: Readonly<Record<string, string>> | null | undefined): string {
  return labels?.[LABEL_INSTANCE] ?? DEFAULT_INSTANCE;
}

export interface Sealed {
  readonly v: 1;
  readonly iv: string;
  readonly tag: string;
  readonly data: string;
}

/** Any secret text becomes a 256-bit key; the secret itself never leaves memory. */
export function deriveStateKey(secret: string): Buffer {
  return createHash('sha256').update(`swarmgate-state-v1\u0000${secret.trim()}`).digest();
}

export function seal(key: Buffer, name: string, value: unknown): Buffer {
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', key, iv);
  cipher.setAAD(Buffer.from(`swarmgate-state:${name}`));
  const data = Buffer.concat([cipher.update(JSON.stringify(value), 'utf8'), cipher.final()]);
  const sealed: Sealed = {
    v: 1,
    iv: iv.toString('base64'),
    tag: cipher.getAuthTag().toString('base64'),
    data: data.toString('base64'),
  };
  return Buffer.from(JSON.stringify(sealed));
}

export function unseal(key: Buffer, name: string, blob: Buffer): unknown {
  let sealed: Sealed;
  try {
    sealed = JSON.parse(blob.toString('utf8')) as Sealed;
    if (sealed.v !== 1) throw new Error(`unknown format version ${String(sealed.v)}`);
  } catch (error) {
    throw new SwarmgateError(
      'ERR_STATE_UNREADABLE',
      `state "${name}" is not a sealed swarmgate record`,
      {},
      error,
    );
  }
  try {
    const decipher = createDecipheriv('aes-256-gcm', key, Buffer.from(sealed.iv, 'base64'));
    decipher.setAAD(Buffer.from(`swarmgate-state:${name}`));
    decipher.setAuthTag(Buffer.from(sealed.tag, 'base64'));
    const plain = Buffer.concat([decipher.update(Buffer.from(sealed.data, 'base64')), decipher.final()]);
    return JSON.parse(plain.toString('utf8')) as unknown;
  } catch (error) {
    throw new SwarmgateError(
      'ERR_STATE_UNREADABLE',
      `state "${name}" cannot be opened: wrong state key or tampered data`,
      {},
      error,
    );
  }
}

export interface LoadedState {
  readonly values: ReadonlyMap<string, unknown>;
  /** Records that exist but do not open: they are reported, never silently replaced. */
  readonly unreadable: ReadonlyMap<string, string>;
  /**
   * The unreadable records that were sealed with another state key (their key id label says so; for records older
   * than that label: none of the old records opens). A wrong or rotated key, not damage: nothing may replace them
   * and no bundle may drop what they hold.
   */
  readonly sealedWithOtherKey: ReadonlySet<string>;
}

/** What the store needs from the state lease: the fence token to write under, and a re-check after a write. */
export interface StateFence {
  /** The token while this controller holds the lease, else null (then nothing is written). */
  token(): number | null;
  /** Whether the lease is still this controller's under that token, read back from Swarm. */
  confirm(token: number, signal: AbortSignal): Promise<boolean>;
}

export interface StateStoreOptions {
  readonly instance?: string;
  readonly fence?: StateFence;
  /** Attempts of one save against concurrent writers taking the same generation. */
  readonly maxAttempts?: number;
}

interface Entry {
  readonly id: string;
  readonly record: string;
  readonly generation: number;
  readonly fence: number;
  readonly keyId: string | null;
  readonly data: string;
}

/** A newer write wins: first the writer's fence token (a stale lease holder never wins), then the generation. */
function newer(a: Entry, b: Entry): boolean {
  return a.fence !== b.fence ? a.fence > b.fence : a.generation > b.generation;
}

export class StateStore {
  readonly instance: string;
  readonly keyId: string;
  private readonly docker: DockerPort;
  private readonly key: Buffer;
  private readonly fence: StateFence | null;
  private readonly maxAttempts: number;
  private readonly generations = new Map<string, number>();
  /** One save per record at a time: two saves of one record from this controller never race each other. */
  private readonly saving = new Map<string, Promise<void>>();

  constructor(docker: DockerPort, key: Buffer, options: StateStoreOptions = {}) {
    this.docker = docker;
    this.key = key;
    this.instance = options.instance ?? DEFAULT_INSTANCE;
    if (!INSTANCE_NAME.test(this.instance))
      throw new SwarmgateError('ERR_CONFIG_INVALID', `instance name "${this.instance}" is not allowed`);
    this.keyId = stateKeyId(key);
    this.fence = options.fence ?? null;
    this.maxAttempts = options.maxAttempts ?? 5;
  }

  /** This instance's state configs, parsed; configs of other instances are never looked at again. */
  private async entries(signal: AbortSignal): Promise<Entry[]> {
    const configs = await this.docker.listConfigs(LABEL_STATE, signal);
    const entries: Entry[] = [];
    for (const config of configs) entries.push(...this.parse(config));
    return entries;
  }

  private parse(config: RawConfig): Entry[] {
    const labels = config.Spec?.Labels ?? {};
    const record = labels[LABEL_STATE];
    const generation = Number(labels[LABEL_GENERATION] ?? NaN);
    const fence = Number(labels[LABEL_FENCE] ?? 0);
    if (!record || !config.ID || !Number.isSafeInteger(generation) || !Number.isSafeInteger(fence)) return [];
    if (instanceOf(labels) !== this.instance) return [];
    return [
      {
        id: config.ID,
        record,
        generation,
        fence,
        keyId: labels[LABEL_KEY_ID] ?? null,
        data: config.Spec?.Data ?? '',
      },
    ];
  }

  async load(signal: AbortSignal): Promise<LoadedState> {
    const newest = new Map<string, Entry>();
    for (const entry of await this.entries(signal)) {
      const current = newest.get(entry.record);
      if (!current || newer(entry, current)) newest.set(entry.record, entry);
      this.generations.set(entry.record, Math.max(this.generations.get(entry.record) ?? 0, entry.generation));
    }
    const values = new Map<string, unknown>();
    const unreadable = new Map<string, string>();
    const sealedWithOtherKey = new Set<string>();
    const unlabelledFailures: string[] = [];
    let unlabelledOpened = false;
    for (const [name, entry] of newest) {
      if (entry.keyId !== null && entry.keyId !== this.keyId) {
        unreadable.set(
          name,
          `state "${name}" was sealed with another state key (key id ${entry.keyId}; this controller's is ${this.keyId})`,
        );
        sealedWithOtherKey.add(name);
        continue;
      }
      try {
        values.set(name, unseal(this.key, name, Buffer.from(entry.data, 'base64')));
        if (entry.keyId === null) unlabelledOpened = true;
      } catch (error) {
        unreadable.set(name, describeError(error));
        if (entry.keyId === null) unlabelledFailures.push(name);
      }
    }
    // Records older than the key id label cannot say which key sealed them. If not one of them opens, the key is
    // the likelier cause than damage to every one: treat them as sealed with another key (the safe side).
    if (!unlabelledOpened) for (const name of unlabelledFailures) sealedWithOtherKey.add(name);
    return { values, unreadable, sealedWithOtherKey };
  }

  /** Removes every generation of a record (of this instance only). */
  async remove(name: string, signal: AbortSignal): Promise<void> {
    for (const entry of await this.entries(signal)) {
      if (entry.record === name) await this.docker.removeConfig(entry.id, signal);
    }
    this.generations.delete(name);
  }

  /**
   * Writes a new generation, then removes the older ones: a crash in between leaves the newest readable. Docker
   * refuses a second config of the same name, which makes the create a compare-and-swap on the generation: a
   * concurrent writer that took it makes this save re-read and take the next one.
   */
  save(name: string, value: unknown, signal: AbortSignal): Promise<void> {
    const previous = this.saving.get(name) ?? Promise.resolve();
    const run = previous.catch(() => undefined).then(() => this.saveNow(name, value, signal));
    const settled = run.catch(() => undefined);
    this.saving.set(name, settled);
    void settled.then(() => {
      if (this.saving.get(name) === settled) this.saving.delete(name);
    });
    return run;
  }

  private async saveNow(name: string, value: unknown, signal: AbortSignal): Promise<void> {
    const fence = this.fenceToken();
    for (let attempt = 1; ; attempt++) {
      const existing = (await this.entries(signal)).filter((entry) => entry.record === name);
      const generation =
        Math.max(this.generations.get(name) ?? 0, ...existing.map((entry) => entry.generation)) + 1;
      let id: string;
      try {
        id = await this.docker.createConfig(
          stateConfigName(this.instance, name, generation),
          {
            [LABEL_STATE]: name,
            [LABEL_GENERATION]: String(generation),
            [LABEL_INSTANCE]: this.instance,
            [LABEL_KEY_ID]: this.keyId,
            [LABEL_FENCE]: String(fence),
          },
          seal(this.key, name, value),
          signal,
        );
      } catch (error) {
        const conflict = isSwarmgateError(error) && error.details.statusCode === 409;
        if (conflict && attempt < this.maxAttempts) {
          this.generations.set(name, generation);
          continue;
        }
        throw error;
      }
      this.generations.set(name, generation);
      if (this.fence && !(await this.fence.confirm(fence, signal))) {
        // The lease moved while this write was in flight: take it back. Readers would rank it below the new
        // holder's writes anyway (fence first), so a crash right here loses nothing either.
        await this.docker.removeConfig(id, signal).catch(() => undefined);
        throw new SwarmgateError(
          'ERR_STATE_LEASE',
          `state "${name}" was not saved: this controller lost the state lease (fence ${fence}) while writing`,
        );
      }
      const mine: Entry = { id, record: name, generation, fence, keyId: this.keyId, data: '' };
      for (const entry of await this.entries(signal)) {
        if (entry.record === name && entry.id !== id && newer(mine, entry))
          await this.docker.removeConfig(entry.id, signal).catch(() => undefined);
      }
      return;
    }
  }

  private fenceToken(): number {
    if (!this.fence) return 0;
    const token = this.fence.token();
    if (token === null)
      throw new SwarmgateError(
        'ERR_STATE_LEASE',
        'this controller does not hold the state lease; another controller writes the state',
      );
    return token;
  }
}

/** The highest fence token in an instance's state records: a new lease holder's token must be above it. */
export async function maxStateFence(
  docker: DockerPort,
  instance: string,
  signal: AbortSignal,
): Promise<number> {
  let max = 0;
  for (const config of await docker.listConfigs(LABEL_STATE, signal)) {
    const labels = config.Spec?.Labels ?? {};
    const fence = Number(labels[LABEL_FENCE] ?? 0);
    if (instanceOf(labels) === instance && Number.isSafeInteger(fence)) max = Math.max(max, fence);
  }
  return max;
}

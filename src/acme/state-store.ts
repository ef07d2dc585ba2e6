// Controller state (ACME account keys, certificates and their keys) kept in Swarm itself as Docker configs, so a
// controller rescheduled to another manager finds it with no volume. Configs are readable through the API, so
// every value is sealed with AES-256-GCM under a key from a Docker secret; the config's logical name is bound in
// as associated data, so a blob moved under another name does not open either.
import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import type { DockerPort, RawConfig } from '../docker/docker-port.ts';
import { SwarmgateError } from '../errors.ts';

const LABEL_NAME = 'swarmgate.state';
const LABEL_GENERATION = 'swarmgate.state.generation';

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
}

export class StateStore {
  private readonly docker: DockerPort;
  private readonly key: Buffer;
  private readonly generations = new Map<string, number>();

  constructor(docker: DockerPort, key: Buffer) {
    this.docker = docker;
    this.key = key;
  }

  async load(signal: AbortSignal): Promise<LoadedState> {
    const configs = await this.docker.listConfigs(LABEL_NAME, signal);
    const newest = new Map<string, { generation: number; config: RawConfig }>();
    for (const config of configs) {
      const name = config.Spec?.Labels?.[LABEL_NAME];
      const generation = Number(config.Spec?.Labels?.[LABEL_GENERATION] ?? NaN);
      if (!name || !Number.isSafeInteger(generation)) continue;
      const current = newest.get(name);
      if (!current || generation > current.generation) newest.set(name, { generation, config });
    }
    const values = new Map<string, unknown>();
    const unreadable = new Map<string, string>();
    for (const [name, { generation, config }] of newest) {
      this.generations.set(name, generation);
      try {
        values.set(name, unseal(this.key, name, Buffer.from(config.Spec?.Data ?? '', 'base64')));
      } catch (error) {
        unreadable.set(name, (error as Error).message);
      }
    }
    return { values, unreadable };
  }

  /** Removes every generation of a record. */
  async remove(name: string, signal: AbortSignal): Promise<void> {
    const configs = await this.docker.listConfigs(LABEL_NAME, signal);
    for (const config of configs) {
      if (config.Spec?.Labels?.[LABEL_NAME] === name && config.ID)
        await this.docker.removeConfig(config.ID, signal);
    }
    this.generations.delete(name);
  }

  /** Writes a new generation, then removes the older ones: a crash in between leaves the newest readable. */
  async save(name: string, value: unknown, signal: AbortSignal): Promise<void> {
    const generation = (this.generations.get(name) ?? 0) + 1;
    const configName = `swarmgate-state-${name.replace(/[^A-Za-z0-9_.-]/g, '_').slice(0, 40)}-${createHash('sha256').update(name).digest('hex').slice(0, 8)}-${generation}`;
    await this.docker.createConfig(
      configName,
      { [LABEL_NAME]: name, [LABEL_GENERATION]: String(generation) },
      seal(this.key, name, value),
      signal,
    );
    this.generations.set(name, generation);
    const configs = await this.docker.listConfigs(LABEL_NAME, signal);
    for (const config of configs) {
      const labels = config.Spec?.Labels ?? {};
      if (labels[LABEL_NAME] === name && Number(labels[LABEL_GENERATION]) < generation && config.ID) {
        await this.docker.removeConfig(config.ID, signal).catch(() => undefined);
      }
    }
  }
}

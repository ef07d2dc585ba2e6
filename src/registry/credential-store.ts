// Registry credentials, sealed in the Swarm state store so any manager's controller can use them. The password
// is only ever read to build X-Registry-Auth or a registry request; it is never returned, logged or put in an error.
import type { StateStore } from '../acme/state-store.ts';
import type { RegistryAuth } from '../docker/docker-port.ts';
import { SwarmgateError } from '../errors.ts';
import type { Clock } from '../reconcile/clock.ts';
import { parseImageReference } from './image-reference.ts';

export interface StoredCredential {
  readonly host: string;
  readonly username: string;
  readonly password: string;
  /** Only images under this path prefix use these credentials (e.g. "team/"). */
  readonly imagePrefix: string | null;
  /** Extra CA (PEM) to trust for this registry's TLS, for private CAs. */
  readonly caPem: string | null;
  /**
   * Hosts (name[:port]) besides the registry's own that may receive these credentials as a Bearer token realm
   * (a separate token service). Empty: the registry's own host only.
   */
  readonly realmHosts: readonly string[];
  readonly updatedAt: string;
}

/** What the API shows: everything except the password. */
export interface CredentialView {
  readonly host: string;
  readonly username: string;
  readonly imagePrefix: string | null;
  readonly hasCustomCa: boolean;
  readonly realmHosts: readonly string[];
  readonly updatedAt: string;
}

export function viewOf(credential: StoredCredential): CredentialView {
  return {
    host: credential.host,
    username: credential.username,
    imagePrefix: credential.imagePrefix,
    hasCustomCa: credential.caPem !== null,
    realmHosts: credential.realmHosts,
    updatedAt: credential.updatedAt,
  };
}

export const REGISTRY_HOST =
  /^(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*(?::\d{1,5})?$/;

export class CredentialStore {
  private readonly store: StateStore;
  private readonly clock: Clock;
  private readonly credentials = new Map<string, StoredCredential>();
  private loaded = false;

  constructor(store: StateStore, clock: Clock) {
    this.store = store;
    this.clock = clock;
  }

  /** Takes the registry records out of state the controller loaded at start. */
  adopt(values: ReadonlyMap<string, unknown>): void {
    for (const [name, value] of values) {
      if (name.startsWith('registry.')) {
        const stored = value as Omit<StoredCredential, 'realmHosts'> & { realmHosts?: string[] };
        // Records saved before realm hosts existed allow the registry's own host only.
        const credential: StoredCredential = { ...stored, realmHosts: stored.realmHosts ?? [] };
        this.credentials.set(credential.host, credential);
      }
    }
    this.loaded = true;
  }

  list(): CredentialView[] {
    this.ensureLoaded();
    return [...this.credentials.values()]
      .map(viewOf)
      .sort((a, b) => (a.host < b.host ? -1 : a.host > b.host ? 1 : 0));
  }

  get(host: string): StoredCredential | undefined {
    this.ensureLoaded();
    return this.credentials.get(host);
  }

  async put(
    input: {
      host: string;
      username: string;
      password: string;
      imagePrefix: string | null;
      caPem: string | null;
      realmHosts: readonly string[];
    },
    signal: AbortSignal,
  ): Promise<CredentialView> {
    this.ensureLoaded();
    const credential: StoredCredential = { ...input, updatedAt: new Date(this.clock.now()).toISOString() };
    await this.store.save(`registry.${input.host}`, credential, signal);
    this.credentials.set(input.host, credential);
    return viewOf(credential);
  }

  async delete(host: string, signal: AbortSignal): Promise<boolean> {
    this.ensureLoaded();
    if (!this.credentials.has(host)) return false;
    await this.store.remove(`registry.${host}`, signal);
    this.credentials.delete(host);
    return true;
  }

  /** The credentials for an image: same registry host, and under the prefix when one is set. Never a guess. */
  forImage(image: string): RegistryAuth | null {
    const reference = parseImageReference(image);
    if (!reference) return null;
    const credential = this.credentials.get(reference.registry);
    if (!credential) return null;
    if (credential.imagePrefix && !reference.repository.startsWith(credential.imagePrefix)) return null;
    return { username: credential.username, password: credential.password, serveraddress: credential.host };
  }

  private ensureLoaded(): void {
    if (!this.loaded)
      throw new SwarmgateError('ERR_CONFLICT', 'the controller is still loading its state; try again');
  }
}

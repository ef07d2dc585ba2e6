// The edge's local copy of bundles: each in a directory named by its fingerprint, `current` a symlink swapped
// atomically (rename), `applied.json` the last applied version. It survives restarts on the edge's volume, so an
// edge serves its last good config even when the controller is away. Every file and directory is fsynced before
// the rename that makes it visible: a power loss leaves the old bundle or the new one, not empty files.
import { randomUUID } from 'node:crypto';
import path from 'node:path';
import { nodeBundleFs, writeBundleFiles } from '../nginx/bundle-dir.ts';
import type { BundleFs } from '../nginx/bundle-dir.ts';
import { fileHashes } from '../publish/bundle-delta.ts';
import type { BaseSource } from '../publish/bundle-delta.ts';
import type { AppliedBundle } from '../publish/bundle-store.ts';
import { parsePeers } from '../render/peers-text.ts';
import { fingerprintBundle, PEERS_FILE } from '../render/render-config.ts';
import type { BundleFiles } from '../render/render-config.ts';

/** What the volume holds at start. */
export type SavedBundle =
  /** Nothing applied yet (or the built-in empty config was running). */
  | { readonly kind: 'none' }
  | { readonly kind: 'intact'; readonly applied: AppliedBundle; readonly files: BundleFiles }
  /** applied.json names a bundle the files no longer match: never start on it, never report it. */
  | { readonly kind: 'damaged'; readonly reason: string };

const TEMPORARY = /\.tmp(-|$)/;

/** How many files of earlier bundles are read back at once when a new bundle is staged. */
const SAME_FILE_READS = 64;

export class BundleCache {
  readonly stateDir: string;
  private readonly fs: BundleFs;
  /**
   * Per-file hashes of the bundles on the volume, taken from verified files (staged, or loaded and matching their
   * fingerprint): what a copy read back later must still hash to before a delta builds on it.
   */
  private readonly hashes = new Map<string, ReadonlyMap<string, string>>();

  constructor(stateDir: string, fs: BundleFs = nodeBundleFs) {
    this.stateDir = stateDir;
    this.fs = fs;
  }

  private get bundlesDir(): string {
    return path.join(this.stateDir, 'bundles');
  }

  /** nginx always runs with this path; the symlink under it changes. */
  get currentConfPath(): string {
    return path.join(this.stateDir, 'current', 'nginx.conf');
  }

  /**
   * The last applied bundle, checked: its files must still hash to the fingerprint applied.json names, and its
   * peers.txt must parse (nginx -t never reads it). Torn writes, disk errors and hand edits all end up damaged.
   */
  async loadSaved(): Promise<SavedBundle> {
    let record: string;
    try {
      record = await this.fs.readFile(path.join(this.stateDir, 'applied.json'));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return { kind: 'none' };
      return { kind: 'damaged', reason: `applied.json unreadable: ${(error as Error).message}` };
    }
    let applied: AppliedBundle;
    try {
      const parsed = JSON.parse(record) as Partial<AppliedBundle>;
      if (!Number.isSafeInteger(parsed.version) || !/^[0-9a-f]{64}$/.test(parsed.fingerprint ?? '')) {
        return { kind: 'damaged', reason: 'applied.json has no valid version and fingerprint' };
      }
      applied = { version: parsed.version as number, fingerprint: parsed.fingerprint as string };
    } catch {
      return { kind: 'damaged', reason: 'applied.json is not JSON' };
    }
    try {
      const dir = path.join(this.stateDir, await this.fs.readlink(path.join(this.stateDir, 'current')));
      const files: Record<string, string> = {};
      for (const name of await this.fs.listFiles(dir))
        files[name] = await this.fs.readFile(path.join(dir, name));
      const actual = fingerprintBundle(files);
      if (actual !== applied.fingerprint) {
        return {
          kind: 'damaged',
          reason: `the files of current/ hash to ${actual.slice(0, 12)}, applied.json names ${applied.fingerprint.slice(0, 12)}`,
        };
      }
      const peers = parsePeers(files[PEERS_FILE] ?? '');
      if (!peers.ok) return { kind: 'damaged', reason: `${PEERS_FILE}: ${peers.reason}` };
      this.hashes.set(applied.fingerprint, fileHashes(files));
      return { kind: 'intact', applied, files };
    } catch (error) {
      return { kind: 'damaged', reason: `current/ unreadable: ${(error as Error).message}` };
    }
  }

  /** Leftovers of an apply that failed or was cut short (a crash, a full disk). */
  async removeTemporaries(): Promise<void> {
    const inBundles = await this.fs.readdir(this.bundlesDir).catch(() => []);
    const inState = await this.fs.readdir(this.stateDir).catch(() => []);
    await Promise.all([
      ...inBundles
        .filter((entry) => TEMPORARY.test(entry))
        .map((entry) => this.fs.rm(path.join(this.bundlesDir, entry))),
      ...inState
        .filter((entry) => TEMPORARY.test(entry))
        .map((entry) => this.fs.rm(path.join(this.stateDir, entry))),
    ]);
  }

  /** Writes the files into a fresh directory; returns its nginx.conf path for `nginx -t`. Leaves nothing on failure. */
  async stage(fingerprint: string, files: BundleFiles): Promise<string> {
    const dir = path.join(this.bundlesDir, fingerprint);
    const temporary = `${dir}.tmp-${randomUUID()}`;
    const hashes = fileHashes(files);
    try {
      await this.fs.mkdir(this.bundlesDir);
      // Looked up side by side (thousands of small reads), then linked or written in order.
      const names = Object.keys(files);
      const existing = new Map<string, string | null>();
      for (let start = 0; start < names.length; start += SAME_FILE_READS) {
        const batch = names.slice(start, start + SAME_FILE_READS);
        const found = await Promise.all(
          batch.map((name) => this.sameFile(fingerprint, name, hashes.get(name), files[name] ?? '')),
        );
        batch.forEach((name, index) => existing.set(name, found[index] ?? null));
      }
      await writeBundleFiles(temporary, files, {
        fs: this.fs,
        durable: true,
        sameFile: (name) => Promise.resolve(existing.get(name) ?? null),
      });
      await this.fs.rm(dir);
      await this.fs.rename(temporary, dir);
      await this.fs.syncDir(this.bundlesDir);
    } catch (error) {
      await this.fs.rm(temporary).catch(() => undefined);
      throw error;
    }
    this.hashes.set(fingerprint, hashes);
    return path.join(dir, 'nginx.conf');
  }

  /**
   * A file of another bundle on the volume with this content: the newest bundle whose recorded hash for the name
   * matches, read back and compared (a copy damaged since it was staged is never linked into a new bundle).
   */
  private async sameFile(
    fingerprint: string,
    name: string,
    hash: string | undefined,
    content: string,
  ): Promise<string | null> {
    for (const [other, known] of [...this.hashes].reverse()) {
      if (other === fingerprint || hash === undefined || known.get(name) !== hash) continue;
      const existing = path.join(this.bundlesDir, other, name);
      const text = await this.fs.readFile(existing).catch(() => null);
      if (text === content) return existing;
    }
    return null;
  }

  /**
   * A staged bundle as the base of the next answer: the controller sends only what changed since it. Its files are
   * read from the volume when needed and checked against the hashes recorded here (a damaged one is fetched).
   */
  baseFor(fingerprint: string): BaseSource | null {
    const hashes = this.hashes.get(fingerprint);
    if (!hashes) return null;
    const dir = path.join(this.bundlesDir, fingerprint);
    return {
      fingerprint,
      hashes,
      read: (name) => this.fs.readFile(path.join(dir, name)).catch(() => null),
    };
  }

  /** Points `current` at the staged bundle in one rename, then records it as applied (null: nothing applied). */
  async activate(fingerprint: string, applied: AppliedBundle | null): Promise<void> {
    const link = path.join(this.stateDir, 'current');
    const record = path.join(this.stateDir, 'applied.json');
    const temporaryLink = `${link}.tmp-${randomUUID()}`;
    const temporaryRecord = `${record}.tmp`;
    try {
      // applied.json and the link go from one consistent pair to the next; a crash between the two renames leaves
      // a pair whose fingerprints differ, which loadSaved reports damaged (so the edge starts empty, never wrong).
      if (applied) await this.fs.writeFile(temporaryRecord, JSON.stringify(applied), 0o644, true);
      else await this.fs.rm(record);
      await this.fs.symlink(path.join('bundles', fingerprint), temporaryLink);
      await this.fs.rename(temporaryLink, link);
      if (applied) await this.fs.rename(temporaryRecord, record);
      await this.fs.syncDir(this.stateDir);
    } catch (error) {
      await this.fs.rm(temporaryLink).catch(() => undefined);
      await this.fs.rm(temporaryRecord).catch(() => undefined);
      throw error;
    }
  }

  async discard(fingerprint: string): Promise<void> {
    this.hashes.delete(fingerprint);
    await this.fs.rm(path.join(this.bundlesDir, fingerprint));
  }

  /** Removes every bundle directory except the ones named. */
  async prune(keep: readonly string[]): Promise<void> {
    for (const fingerprint of [...this.hashes.keys()])
      if (!keep.includes(fingerprint)) this.hashes.delete(fingerprint);
    let entries: string[];
    try {
      entries = await this.fs.readdir(this.bundlesDir);
    } catch {
      return;
    }
    await Promise.all(
      entries
        .filter((entry) => !keep.includes(entry))
        .map((entry) => this.fs.rm(path.join(this.bundlesDir, entry))),
    );
  }
}

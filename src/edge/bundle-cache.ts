// The edge's local copy of bundles: each in a directory named by its fingerprint, `current` a symlink swapped
// atomically (rename), `applied.json` the last applied version. It survives restarts on the edge's volume, so an
// edge serves its last good config even when the controller is away.
import { randomUUID } from 'node:crypto';
import { readdir, readFile, readlink, rename, rm, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { writeBundleFiles } from '../nginx/bundle-dir.ts';
import type { AppliedBundle } from '../publish/bundle-store.ts';
import type { BundleFiles } from '../render/render-config.ts';

export class BundleCache {
  readonly stateDir: string;

  constructor(stateDir: string) {
    this.stateDir = stateDir;
  }

  private get bundlesDir(): string {
    return path.join(this.stateDir, 'bundles');
  }

  /** nginx always runs with this path; the symlink under it changes. */
  get currentConfPath(): string {
    return path.join(this.stateDir, 'current', 'nginx.conf');
  }

  /** The last applied bundle, if its files are still there. */
  async readApplied(): Promise<AppliedBundle | null> {
    try {
      const applied = JSON.parse(
        await readFile(path.join(this.stateDir, 'applied.json'), 'utf8'),
      ) as AppliedBundle;
      const target = await readlink(path.join(this.stateDir, 'current'));
      await readFile(path.join(this.stateDir, target, 'nginx.conf'));
      if (!Number.isSafeInteger(applied.version) || typeof applied.fingerprint !== 'string') return null;
      return { version: applied.version, fingerprint: applied.fingerprint };
    } catch {
      return null;
    }
  }

  async hasCurrent(): Promise<boolean> {
    try {
      await readFile(this.currentConfPath);
      return true;
    } catch {
      return false;
    }
  }

  /** Writes the files into a fresh directory; returns its nginx.conf path for `nginx -t`. */
  async stage(fingerprint: string, files: BundleFiles): Promise<string> {
    const dir = path.join(this.bundlesDir, fingerprint);
    const temporary = `${dir}.tmp-${randomUUID()}`;
    await writeBundleFiles(temporary, files);
    await rm(dir, { recursive: true, force: true });
    await rename(temporary, dir);
    return path.join(dir, 'nginx.conf');
  }

  /** Points `current` at the staged bundle in one rename, then records it as applied. */
  async activate(fingerprint: string, applied: AppliedBundle | null): Promise<void> {
    const link = path.join(this.stateDir, 'current');
    const temporaryLink = `${link}.tmp-${randomUUID()}`;
    await symlink(path.join('bundles', fingerprint), temporaryLink);
    await rename(temporaryLink, link);
    const record = path.join(this.stateDir, 'applied.json');
    if (applied) {
      await writeFile(`${record}.tmp`, JSON.stringify(applied));
      await rename(`${record}.tmp`, record);
    } else {
      await rm(record, { force: true });
    }
  }

  async discard(fingerprint: string): Promise<void> {
    await rm(path.join(this.bundlesDir, fingerprint), { recursive: true, force: true });
  }

  /** Removes every bundle directory except the ones named. */
  async prune(keep: readonly string[]): Promise<void> {
    let entries: string[];
    try {
      entries = await readdir(this.bundlesDir);
    } catch {
      return;
    }
    await Promise.all(
      entries
        .filter((entry) => !keep.includes(entry))
        .map((entry) => rm(path.join(this.bundlesDir, entry), { recursive: true, force: true })),
    );
  }
}

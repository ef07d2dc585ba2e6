// Writing a bundle to disk: used by the controller (to validate a candidate) and by the edge (to apply one).
import { link, mkdir, open, readdir, readFile, readlink, rename, rm, symlink } from 'node:fs/promises';
import path from 'node:path';
import { SwarmgateError } from '../errors.ts';
import type { BundleFiles } from '../render/render-config.ts';
import { CERTIFICATE_PEMS_FILE } from '../render/certificates-text.ts';

/** Files written or linked at once. */
const FILES_AT_ONCE = 32;

const SAFE_RELATIVE_PATH = /^[A-Za-z0-9_.-]+(\/[A-Za-z0-9_.-]+)*$/;

/**
 * The file operations bundles need, as a port: the edge's volume can be full, read-only or refuse a rename, and
 * tests inject exactly that.
 */
export interface BundleFs {
  mkdir(dir: string): Promise<void>;
  /** durable: the data is on disk (fsync) before this resolves, so a rename after it never exposes an empty file. */
  writeFile(file: string, data: string, mode: number, durable: boolean): Promise<void>;
  /** fsync of a directory: makes the names created or renamed in it durable. */
  syncDir(dir: string): Promise<void>;
  rename(from: string, to: string): Promise<void>;
  /** Recursive and quiet when the target does not exist. */
  rm(target: string): Promise<void>;
  readdir(dir: string): Promise<string[]>;
  /** Relative paths (with "/") of the regular files under dir. */
  listFiles(dir: string): Promise<string[]>;
  readFile(file: string): Promise<string>;
  readlink(link: string): Promise<string>;
  symlink(target: string, link: string): Promise<void>;
  /** A hard link: a second name for a file already on the volume, whose data is durable already. */
  link(existing: string, newName: string): Promise<void>;
}

export const nodeBundleFs: BundleFs = {
  async mkdir(dir) {
    await mkdir(dir, { recursive: true, mode: 0o755 });
  },
  async writeFile(file, data, mode, durable) {
    const handle = await open(file, 'w', mode);
    try {
      await handle.writeFile(data);
      if (durable) await handle.sync();
    } finally {
      await handle.close();
    }
  },
  async syncDir(dir) {
    const handle = await open(dir, 'r');
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
  },
  rename: (from, to) => rename(from, to),
  rm: (target) => rm(target, { recursive: true, force: true }),
  readdir: (dir) => readdir(dir),
  async listFiles(dir) {
    const entries = await readdir(dir, { recursive: true, withFileTypes: true });
    return entries
      .filter((entry) => entry.isFile())
      .map((entry) => path.relative(dir, path.join(entry.parentPath, entry.name)).split(path.sep).join('/'));
  },
  readFile: (file) => readFile(file, 'utf8'),
  readlink: (link) => readlink(link),
  symlink: (target, linkName) => symlink(target, linkName),
  link: (existing, newName) => link(existing, newName),
};

/** Private keys (certs/*.key, certificates.pem) are readable by root only; the nginx master reads them before dropping
 * privileges. */
export function fileModeFor(name: string): number {
  return name.endsWith('.key') || name === CERTIFICATE_PEMS_FILE ? 0o600 : 0o644;
}

/**
 * Writes the files under dir. durable (the edge): every file and directory is fsynced, so the caller can rename dir
 * into place knowing a power loss leaves either the old bundle or the whole new one, never empty files.
 */
export async function writeBundleFiles(
  dir: string,
  files: BundleFiles,
  {
    fs = nodeBundleFs,
    durable = false,
    sameFile,
  }: {
    fs?: BundleFs;
    durable?: boolean;
    /**
     * A file already on the volume with exactly this name's content, or null. It is linked instead of written: at
     * 2,000 HTTPS hosts a bundle is 4,000 certificate and key files, and writing and fsyncing each took seconds
     * for a bundle that changed one of them.
     */
    sameFile?: (name: string, content: string) => Promise<string | null>;
  } = {},
): Promise<void> {
  await fs.mkdir(dir);
  const dirs = new Set<string>([dir]);
  const names = Object.keys(files).sort();
  for (const name of names) {
    if (!SAFE_RELATIVE_PATH.test(name) || name.split('/').includes('..')) {
      throw new SwarmgateError(
        'ERR_BUNDLE_INVALID',
        `bundle file name "${name}" is not a safe relative path`,
      );
    }
    const parentDir = path.dirname(path.join(dir, name));
    if (!dirs.has(parentDir)) {
      await fs.mkdir(parentDir);
      // Every directory the mkdir may have made, so each new name gets its directory fsynced.
      for (let parent = parentDir; !dirs.has(parent); parent = path.dirname(parent)) dirs.add(parent);
    }
  }
  const place = async (name: string): Promise<void> => {
    const target = path.join(dir, name);
    const content = files[name] ?? '';
    const existing = sameFile ? await sameFile(name, content) : null;
    if (existing !== null) {
      try {
        await fs.link(existing, target);
        return;
      } catch {
        // Another file system, a volume without hard links, the file just removed: written instead.
      }
    }
    await fs.writeFile(target, content, fileModeFor(name), durable);
  };
  // Side by side: a bundle may hold thousands of small files, and each fsync waits on the disk.
  for (let start = 0; start < names.length; start += FILES_AT_ONCE) {
    await Promise.all(names.slice(start, start + FILES_AT_ONCE).map(place));
  }
  if (durable) for (const created of [...dirs].sort().reverse()) await fs.syncDir(created);
}

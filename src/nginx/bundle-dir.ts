// Writing a bundle to disk: used by the controller (to validate a candidate) and by the edge (to apply one).
import { mkdir, open, readdir, readFile, readlink, rename, rm, symlink } from 'node:fs/promises';
import path from 'node:path';
import { SwarmgateError } from '../errors.ts';
import type { BundleFiles } from '../render/render-config.ts';

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
  symlink: (target, link) => symlink(target, link),
};

/** Private keys are readable by root only; the nginx master reads them before dropping privileges. */
export function fileModeFor(name: string): number {
  return name.endsWith('.key') ? 0o600 : 0o644;
}

/**
 * Writes the files under dir. durable (the edge): every file and directory is fsynced, so the caller can rename dir
 * into place knowing a power loss leaves either the old bundle or the whole new one, never empty files.
 */
export async function writeBundleFiles(
  dir: string,
  files: BundleFiles,
  { fs = nodeBundleFs, durable = false }: { fs?: BundleFs; durable?: boolean } = {},
): Promise<void> {
  await fs.mkdir(dir);
  const dirs = new Set<string>([dir]);
  for (const name of Object.keys(files).sort()) {
    if (!SAFE_RELATIVE_PATH.test(name) || name.split('/').includes('..')) {
      throw new SwarmgateError(
        'ERR_BUNDLE_INVALID',
        `bundle file name "${name}" is not a safe relative path`,
      );
    }
    const target = path.join(dir, name);
    if (!dirs.has(path.dirname(target))) {
      await fs.mkdir(path.dirname(target));
      // Every directory the mkdir may have made, so each new name gets its directory fsynced.
      for (let parent = path.dirname(target); !dirs.has(parent); parent = path.dirname(parent))
        dirs.add(parent);
    }
    await fs.writeFile(target, files[name] ?? '', fileModeFor(name), durable);
  }
  if (durable) for (const created of [...dirs].sort().reverse()) await fs.syncDir(created);
}

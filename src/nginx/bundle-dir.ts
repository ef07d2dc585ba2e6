// Writing a bundle to disk: used by the controller (to validate a candidate) and by the edge (to apply one).
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { SwarmgateError } from '../errors.ts';
import type { BundleFiles } from '../render/render-config.ts';

const SAFE_RELATIVE_PATH = /^[A-Za-z0-9_.-]+(\/[A-Za-z0-9_.-]+)*$/;

/** Private keys are readable by root only; the nginx master reads them before dropping privileges. */
export function fileModeFor(name: string): number {
  return name.endsWith('.key') ? 0o600 : 0o644;
}

export async function writeBundleFiles(dir: string, files: BundleFiles): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o755 });
  for (const name of Object.keys(files).sort()) {
    if (!SAFE_RELATIVE_PATH.test(name) || name.split('/').includes('..')) {
      throw new SwarmgateError(
        'ERR_BUNDLE_INVALID',
        `bundle file name "${name}" is not a safe relative path`,
      );
    }
    const target = path.join(dir, name);
    await mkdir(path.dirname(target), { recursive: true, mode: 0o755 });
    await writeFile(target, files[name] ?? '', { mode: fileModeFor(name) });
  }
}

// Bundles that scale with the change, not the cluster. The controller answers an edge's poll relative to the bundle
// the edge says it has: files that did not change are not sent, a large text file that changed (nginx.conf,
// peers.txt) goes as line edits of the edge's copy, anything else whole. Every file in an answer carries its
// SHA-256; the edge checks each file it assembles (its own copies too, which its volume may have damaged) and the
// bundle's fingerprint before it applies anything. Pure: shared by the controller (encode) and the edge (decode).
import { createHash } from 'node:crypto';
import { SwarmgateError } from '../errors.ts';
import { fingerprintBundle } from '../render/render-config.ts';
import type { BundleFiles } from '../render/render-config.ts';

/** Replace base[offset, offset + remove) by insert. Offsets index the base (UTF-16 units), ascending, disjoint. */
export type Edit = readonly [offset: number, remove: number, insert: string];

/** One file of an answer: its hash, and either its content or edits of the edge's copy whose hash is `from`. */
export type AnswerFile =
  | { readonly sha256: string; readonly content: string }
  | { readonly sha256: string; readonly from: string; readonly edits: readonly Edit[] };

export interface BundleAnswer {
  readonly version: number;
  readonly fingerprint: string;
  readonly publishedAt: string;
  /** The fingerprint this answer is relative to (a file not named here is the base's), or null: every file is here. */
  readonly base: string | null;
  readonly files: Readonly<Record<string, AnswerFile>>;
  /** Files of the base that the bundle no longer has. */
  readonly removed: readonly string[];
}

/** What the edge has to build on: the files of a bundle it applied, as its volume holds them now. */
export interface BaseSource {
  readonly fingerprint: string;
  /** name → SHA-256 of each file, recorded when the bundle was verified and applied. */
  readonly hashes: ReadonlyMap<string, string>;
  /** The file as the volume has it now (it may be damaged: the caller checks it), or null if it cannot be read. */
  read(name: string): Promise<string | null>;
}

/** A file whose edge copy is missing or damaged: fetched from the controller by the hash the bundle needs. */
export interface WantedFile {
  readonly name: string;
  readonly sha256: string;
}

/** Fetches files by content hash; a hash the controller no longer has is left out of the result. */
export type FetchFiles = (wanted: readonly WantedFile[]) => Promise<ReadonlyMap<string, string>>;

export const SHA256 = /^[0-9a-f]{64}$/;
/** Below this a changed file goes whole: edits would save nothing worth their cost. */
const DIFF_MIN_BYTES = 4096;
/**
 * Myers' diff costs O(lines × edits); past this many edited lines it gives up and the file goes whole (gzip still
 * applies). One new host is about 40 edited lines of nginx.conf and 2 of peers.txt.
 */
export const MAX_DIFF_EDITS = 1000;

export function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

export function fileHashes(files: BundleFiles): Map<string, string> {
  const hashes = new Map<string, string>();
  for (const name of Object.keys(files).sort()) hashes.set(name, sha256(files[name] ?? ''));
  return hashes;
}

/** A bundle with its per-file hashes, computed once per bundle on the controller. */
export interface HashedBundle {
  readonly version: number;
  readonly fingerprint: string;
  readonly publishedAt: string;
  readonly files: BundleFiles;
  readonly hashes: ReadonlyMap<string, string>;
}

/** The answer for an edge that has `base` (null: it has nothing the controller knows, so every file goes). */
export function buildAnswer(target: HashedBundle, base: HashedBundle | null): BundleAnswer {
  const files: Record<string, AnswerFile> = {};
  for (const [name, hash] of target.hashes) {
    const baseHash = base?.hashes.get(name);
    if (baseHash === hash) continue;
    const content = target.files[name] ?? '';
    const baseContent = base?.files[name];
    if (baseHash !== undefined && baseContent !== undefined && content.length >= DIFF_MIN_BYTES) {
      const edits = diffText(baseContent, content);
      // Edits that carry most of the file anyway are not worth the edge's patching.
      if (edits && editsSize(edits) < content.length / 2) {
        files[name] = { sha256: hash, from: baseHash, edits };
        continue;
      }
    }
    files[name] = { sha256: hash, content };
  }
  const removed = base ? [...base.hashes.keys()].filter((name) => !target.hashes.has(name)) : [];
  return {
    version: target.version,
    fingerprint: target.fingerprint,
    publishedAt: target.publishedAt,
    base: base?.fingerprint ?? null,
    files,
    removed,
  };
}

function editsSize(edits: readonly Edit[]): number {
  return edits.reduce((sum, [, , insert]) => sum + insert.length + 24, 0);
}

/** The lines of a text, each with its line break. */
function splitLines(text: string): string[] {
  const lines: string[] = [];
  let start = 0;
  while (start < text.length) {
    const end = text.indexOf('\n', start);
    const next = end === -1 ? text.length : end + 1;
    lines.push(text.slice(start, next));
    start = next;
  }
  return lines;
}

/**
 * Line edits that turn base into target (Myers' O(ND) diff over line ids), or null when they would take more than
 * maxEdits inserted and removed lines.
 */
export function diffText(base: string, target: string, maxEdits = MAX_DIFF_EDITS): Edit[] | null {
  const baseLines = splitLines(base);
  const targetLines = splitLines(target);
  // Character offset of each base line (and of the end).
  const offsets = new Array<number>(baseLines.length + 1);
  offsets[0] = 0;
  for (let i = 0; i < baseLines.length; i++) offsets[i + 1] = (offsets[i] ?? 0) + (baseLines[i]?.length ?? 0);
  let prefix = 0;
  while (
    prefix < baseLines.length &&
    prefix < targetLines.length &&
    baseLines[prefix] === targetLines[prefix]
  )
    prefix++;
  let suffix = 0;
  while (
    suffix < baseLines.length - prefix &&
    suffix < targetLines.length - prefix &&
    baseLines[baseLines.length - 1 - suffix] === targetLines[targetLines.length - 1 - suffix]
  )
    suffix++;
  // Lines as small integers: the inner loop compares numbers, not strings.
  const ids = new Map<string, number>();
  const idOf = (line: string): number => {
    let id = ids.get(line);
    if (id === undefined) ids.set(line, (id = ids.size));
    return id;
  };
  const a = Int32Array.from(baseLines.slice(prefix, baseLines.length - suffix), idOf);
  const b = Int32Array.from(targetLines.slice(prefix, targetLines.length - suffix), idOf);
  const matches = myersMatches(a, b, maxEdits);
  if (matches === null) return null;
  // Between two matched lines (and before the first, after the last) lies one hunk: base lines removed, target
  // lines inserted.
  const edits: Edit[] = [];
  let x = 0;
  let y = 0;
  const hunk = (toX: number, toY: number): void => {
    if (toX === x && toY === y) return;
    const offset = offsets[prefix + x] ?? 0;
    const remove = (offsets[prefix + toX] ?? 0) - offset;
    const insert = targetLines.slice(prefix + y, prefix + toY).join('');
    edits.push([offset, remove, insert]);
  };
  for (let i = 0; i < matches.length; i += 2) {
    const mx = matches[i] ?? 0;
    const my = matches[i + 1] ?? 0;
    hunk(mx, my);
    x = mx + 1;
    y = my + 1;
  }
  hunk(a.length, b.length);
  return edits;
}

/** Matched (x, y) pairs of a shortest edit script, flattened and ascending; null past maxEdits. */
function myersMatches(a: Int32Array, b: Int32Array, maxEdits: number): number[] | null {
  const n = a.length;
  const m = b.length;
  const max = Math.min(n + m, maxEdits);
  const offset = max + 1;
  const v = new Int32Array(2 * max + 3);
  // trace[d] is the part of v that step d read (diagonals -d-1 .. d+1), for walking back.
  const trace: Int32Array[] = [];
  for (let d = 0; d <= max; d++) {
    trace.push(v.slice(offset - d - 1, offset + d + 2));
    for (let k = -d; k <= d; k += 2) {
      const down = k === -d || (k !== d && (v[offset + k - 1] ?? 0) < (v[offset + k + 1] ?? 0));
      let x = down ? (v[offset + k + 1] ?? 0) : (v[offset + k - 1] ?? 0) + 1;
      let y = x - k;
      while (x < n && y < m && a[x] === b[y]) {
        x++;
        y++;
      }
      v[offset + k] = x;
      if (x >= n && y >= m) return walkBack(trace, d, n, m);
    }
  }
  return null;
}

function walkBack(trace: readonly Int32Array[], steps: number, n: number, m: number): number[] {
  const reversed: number[] = [];
  let x = n;
  let y = m;
  for (let d = steps; d > 0; d--) {
    const at = trace[d] as Int32Array;
    const read = (k: number): number => at[k + d + 1] ?? 0;
    const k = x - y;
    const prevK = k === -d || (k !== d && read(k - 1) < read(k + 1)) ? k + 1 : k - 1;
    const prevX = read(prevK);
    const prevY = prevX - prevK;
    // The snake after the step: matched lines.
    while (x > prevX && y > prevY) {
      x--;
      y--;
      reversed.push(y, x);
    }
    x = prevX;
    y = prevY;
  }
  while (x > 0 && y > 0) {
    x--;
    y--;
    reversed.push(y, x);
  }
  return reversed.reverse();
}

/** The target text from the base and edits; malformed edits (out of range, overlapping) are ERR_BUNDLE_INVALID. */
export function applyEdits(base: string, edits: readonly Edit[]): string {
  const parts: string[] = [];
  let at = 0;
  for (const edit of edits) {
    const [offset, remove, insert] = edit;
    if (
      !Number.isSafeInteger(offset) ||
      !Number.isSafeInteger(remove) ||
      typeof insert !== 'string' ||
      offset < at ||
      remove < 0 ||
      offset + remove > base.length
    ) {
      throw new SwarmgateError('ERR_BUNDLE_INVALID', 'bundle delta: an edit is out of order or out of range');
    }
    parts.push(base.slice(at, offset), insert);
    at = offset + remove;
  }
  parts.push(base.slice(at));
  return parts.join('');
}

/** What assembling an answer took: for logs, tests and the bench. */
export interface Assembly {
  readonly files: BundleFiles;
  /** Files that came whole, as edits, or from the edge's own copy. */
  readonly whole: readonly string[];
  readonly edited: readonly string[];
  readonly reused: number;
  /** Files whose edge copy was missing or damaged, fetched by hash. */
  readonly fetched: readonly string[];
}

function invalid(message: string): never {
  throw new SwarmgateError('ERR_BUNDLE_INVALID', `bundle delta: ${message}`);
}

/**
 * The bundle's files from an answer and what the edge has. Every file is checked against its hash (the answer's,
 * or the one recorded for the edge's copy); a copy that is missing or fails is fetched by hash; the whole must
 * match the fingerprint. Throws ERR_BUNDLE_INVALID when the answer cannot be made whole.
 */
export async function assembleBundle(
  answer: BundleAnswer,
  base: BaseSource | null,
  fetchFiles: FetchFiles,
): Promise<Assembly> {
  if (answer.base !== null && answer.base !== base?.fingerprint) {
    invalid(`the answer builds on ${answer.base.slice(0, 12)}, which this edge did not offer`);
  }
  const files: Record<string, string> = {};
  const whole: string[] = [];
  const edited: string[] = [];
  const wanted: WantedFile[] = [];
  let reused = 0;
  const ownCopy = async (name: string, hash: string): Promise<string | null> => {
    if (base?.hashes.get(name) !== hash) return null;
    const text = await base.read(name);
    return text !== null && sha256(text) === hash ? text : null;
  };
  for (const [name, file] of Object.entries(answer.files)) {
    if (!SHA256.test(file.sha256)) invalid(`${name} has no sha256`);
    if ('content' in file) {
      if (typeof file.content !== 'string' || sha256(file.content) !== file.sha256)
        invalid(`${name} does not match its hash`);
      files[name] = file.content;
      whole.push(name);
      continue;
    }
    const own = answer.base === null ? null : await ownCopy(name, file.from);
    const text = own === null ? null : applyEdits(own, file.edits);
    if (text !== null && sha256(text) === file.sha256) {
      files[name] = text;
      edited.push(name);
    } else wanted.push({ name, sha256: file.sha256 });
  }
  if (answer.base !== null && base) {
    const removed = new Set(answer.removed);
    for (const [name, hash] of base.hashes) {
      if (removed.has(name) || Object.hasOwn(answer.files, name)) continue;
      const own = await ownCopy(name, hash);
      if (own === null) wanted.push({ name, sha256: hash });
      else {
        files[name] = own;
        reused++;
      }
    }
  }
  if (wanted.length > 0) {
    const got = await fetchFiles(wanted);
    for (const { name, sha256: hash } of wanted) {
      const text = got.get(hash);
      if (text === undefined || sha256(text) !== hash) invalid(`the controller no longer has ${name}`);
      files[name] = text;
    }
  }
  if (fingerprintBundle(files) !== answer.fingerprint)
    invalid('the assembled files do not match the fingerprint');
  return { files, whole, edited, reused, fetched: wanted.map((file) => file.name) };
}

/** Checks the shape of a parsed answer (the content is checked by assembleBundle). */
export function parseAnswer(parsed: unknown): BundleAnswer {
  const answer = parsed as Partial<BundleAnswer> | null;
  if (
    !answer ||
    typeof answer !== 'object' ||
    !Number.isSafeInteger(answer.version) ||
    typeof answer.fingerprint !== 'string' ||
    !SHA256.test(answer.fingerprint) ||
    typeof answer.publishedAt !== 'string' ||
    !(answer.base === null || (typeof answer.base === 'string' && SHA256.test(answer.base))) ||
    typeof answer.files !== 'object' ||
    answer.files === null ||
    !Array.isArray(answer.removed)
  ) {
    throw new SwarmgateError('ERR_BUNDLE_INVALID', 'the controller sent a malformed bundle answer');
  }
  for (const file of Object.values(answer.files)) {
    const ok =
      typeof file === 'object' &&
      file !== null &&
      typeof file.sha256 === 'string' &&
      ('content' in file
        ? typeof file.content === 'string'
        : typeof file.from === 'string' && Array.isArray(file.edits));
    if (!ok) throw new SwarmgateError('ERR_BUNDLE_INVALID', 'the controller sent a malformed bundle file');
  }
  return answer as BundleAnswer;
}

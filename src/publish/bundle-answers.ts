// The controller's side of delta transport: the last few published bundles (what edges may still have), and each
// answer encoded once. After a publish, hundreds of edges on the same previous bundle get the same bytes: the diff,
// the JSON and the gzip are made for the first of them and served from memory to the rest.
import { gzipSync } from 'node:zlib';
import { buildAnswer, fileHashes } from './bundle-delta.ts';
import type { HashedBundle, WantedFile } from './bundle-delta.ts';
import type { BundleFiles } from '../render/render-config.ts';

/**
 * Bundles kept to answer relative to. An edge is normally one publish behind (it applies within a second and polls
 * again); a storm publishes at most about two a second. An edge further behind gets every file (gzip).
 */
export const RECENT_BUNDLES = 8;
/** Encoded answers kept: one per (base, target, version, encoding). */
const ENCODED_ANSWERS = 32;
/** Smaller answers go plain: gzip would save a few hundred bytes at the cost of a deflate stream per answer. */
const GZIP_MIN_BYTES = 1024;

export interface EncodedAnswer {
  readonly body: Buffer;
  readonly gzip: boolean;
  /** Relative to the edge's bundle (true), or every file (false). */
  readonly delta: boolean;
}

interface Publishable {
  readonly version: number;
  readonly fingerprint: string;
  readonly publishedAt: string;
  readonly files: BundleFiles;
}

/**
 * A kept bundle. The newest one's files are the published strings (the store holds them anyway); older ones are
 * packed: their files as UTF-8 outside the JS heap, one copy per distinct content (by hash), decoded when an answer
 * needs them. At 10,000 services 8 bundles of a changing peers.txt and nginx.conf were up to 90 MB of strings the
 * GC kept and sized its heap growth by (about 4× what it finds alive).
 */
interface Kept {
  readonly version: number;
  readonly fingerprint: string;
  readonly publishedAt: string;
  readonly hashes: ReadonlyMap<string, string>;
  /** Its files are packed (not the newest bundle's strings). */
  readonly packed: boolean;
  /** The files as a BundleFiles object (a packed bundle decodes a file when it is read). */
  readonly files: BundleFiles;
}

export class BundleAnswers {
  /** Oldest first. */
  private readonly recent: Kept[] = [];
  private readonly encoded = new Map<string, EncodedAnswer>();
  /** Packed file contents by SHA-256, one copy shared by every older bundle that has them. */
  private readonly packed = new Map<string, Buffer>();

  /** Bytes of packed file contents held (for tests and benches). */
  get packedBytes(): number {
    let bytes = 0;
    for (const content of this.packed.values()) bytes += content.length;
    return bytes;
  }

  /** Notes a published bundle; its file hashes are computed when an answer first needs them. */
  remember(bundle: Publishable): void {
    const index = this.recent.findIndex((known) => known.fingerprint === bundle.fingerprint);
    if (index !== -1) this.recent.splice(index, 1);
    const previous = this.recent.at(-1);
    if (previous && !previous.packed) this.recent[this.recent.length - 1] = this.pack(previous);
    let hashes: Map<string, string> | null = null;
    this.recent.push({
      version: bundle.version,
      fingerprint: bundle.fingerprint,
      publishedAt: bundle.publishedAt,
      packed: false,
      files: bundle.files,
      get hashes() {
        return (hashes ??= fileHashes(bundle.files));
      },
    });
    while (this.recent.length > RECENT_BUNDLES) this.recent.shift();
    // Contents no packed bundle has any more are let go.
    const used = new Set(this.recent.flatMap((kept) => (kept.packed ? [...kept.hashes.values()] : [])));
    for (const hash of [...this.packed.keys()]) if (!used.has(hash)) this.packed.delete(hash);
  }

  /** A bundle that is no longer the newest, with its files packed. */
  private pack(kept: Kept): Kept {
    const hashes = kept.hashes;
    for (const [name, hash] of hashes) {
      if (!this.packed.has(hash)) this.packed.set(hash, Buffer.from(kept.files[name] ?? '', 'utf8'));
    }
    const files: Record<string, string> = {};
    for (const [name, hash] of hashes) {
      Object.defineProperty(files, name, {
        enumerable: true,
        get: () => this.packed.get(hash)?.toString('utf8') ?? '',
      });
    }
    return {
      version: kept.version,
      fingerprint: kept.fingerprint,
      publishedAt: kept.publishedAt,
      hashes,
      packed: true,
      files,
    };
  }

  /** The answer to an edge that has the bundle `have` (null or unknown here: every file), encoded once. */
  encode(target: Publishable, have: string | null, gzip: boolean): EncodedAnswer {
    const base = have === null ? undefined : this.recent.find((known) => known.fingerprint === have);
    const key = `${base?.fingerprint ?? '-'}>${target.fingerprint}@${target.version}:${gzip ? 'gzip' : 'plain'}`;
    const cached = this.encoded.get(key);
    if (cached) return cached;
    const hashed = this.hashed(target);
    const json = Buffer.from(JSON.stringify(buildAnswer(hashed, base ?? null)));
    const compress = gzip && json.length >= GZIP_MIN_BYTES;
    const answer: EncodedAnswer = {
      body: compress ? gzipSync(json) : json,
      gzip: compress,
      delta: base !== undefined,
    };
    this.encoded.set(key, answer);
    while (this.encoded.size > ENCODED_ANSWERS)
      this.encoded.delete(this.encoded.keys().next().value as string);
    return answer;
  }

  /** Files by content hash from the bundles kept (for an edge whose own copy is damaged); unknown ones left out. */
  files(wanted: readonly WantedFile[]): Record<string, string> {
    const found: Record<string, string> = {};
    for (const { name, sha256 } of wanted) {
      for (let i = this.recent.length - 1; i >= 0; i--) {
        const bundle = this.recent[i] as Kept;
        // The hash first: a packed file is decoded only when it is the one wanted.
        if (bundle.hashes.get(name) !== sha256) continue;
        const content = bundle.files[name];
        if (content !== undefined) {
          found[sha256] = content;
          break;
        }
      }
    }
    return found;
  }

  private hashed(bundle: Publishable): HashedBundle {
    const known = this.recent.find((entry) => entry.fingerprint === bundle.fingerprint);
    if (known) return { ...bundle, hashes: known.hashes };
    return { ...bundle, hashes: fileHashes(bundle.files) };
  }
}

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

export class BundleAnswers {
  /** Oldest first. */
  private readonly recent: HashedBundle[] = [];
  private readonly encoded = new Map<string, EncodedAnswer>();

  /** Notes a published bundle; its file hashes are computed when an answer first needs them. */
  remember(bundle: Publishable): void {
    const index = this.recent.findIndex((known) => known.fingerprint === bundle.fingerprint);
    if (index !== -1) this.recent.splice(index, 1);
    let hashes: Map<string, string> | null = null;
    this.recent.push({
      ...bundle,
      get hashes() {
        return (hashes ??= fileHashes(bundle.files));
      },
    });
    while (this.recent.length > RECENT_BUNDLES) this.recent.shift();
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
        const bundle = this.recent[i] as HashedBundle;
        const content = bundle.files[name];
        if (content !== undefined && bundle.hashes.get(name) === sha256) {
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

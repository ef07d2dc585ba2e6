// The blocks of nginx.conf that repeat per host and per service (server blocks, upstreams), each rendered once and
// reused while its part of the model and the settings it reads are the same. One nunjucks render of every block at
// 10,000 hosts allocated ~160 MB per reconcile, most of it strings alive until the whole config was joined, which the
// GC therefore promoted to the old generation (with --max-semi-space-size=2) and collected only by a full GC.
import { hash } from 'node:crypto';

/**
 * What renderConfig keeps between renders of the same config: owned by whoever renders it again and again (the
 * reconciler's candidate render). Each part holds the blocks of the last render only, so it is bounded by the current
 * hosts and services, and a removed one's block is gone after the next render.
 */
export class RenderCache {
  readonly servers = new BlockCache();
  readonly upstreams = new BlockCache();

  /** See BlockCache.settle. */
  settle(conf: string): void {
    this.servers.settle(conf);
    this.upstreams.settle(conf);
  }
}

/** Rendered blocks of one kind by what they were rendered from, kept for the next render. */
export class BlockCache {
  /** What every block reads besides its own item (the settings the macro sees): another one empties the cache. */
  private setting: string | null = null;
  private blocks = new Map<string, string>();
  /** The keys of the last render's blocks, in the order nginx.conf has them. */
  private order: string[] = [];
  /** The config the blocks are parts of (settle), and where the first one starts in it. */
  private conf: string | null = null;
  private start = 0;
  /** Blocks the last render took from the cache, and rendered (for tests and benches). */
  reused = 0;
  rendered = 0;

  /**
   * The text of each item, in order: from the cache when an item with the same key (of everything its text is made
   * from besides `setting`) was rendered with the same `setting` last time, else from `render`. Afterwards the cache
   * holds exactly these items' blocks.
   */
  texts<T>(
    setting: string,
    items: readonly T[],
    key: (item: T) => string,
    render: (item: T) => string,
  ): string[] {
    const kept = setting === this.setting ? this.blocks : new Map<string, string>();
    const next = new Map<string, string>();
    let reused = 0;
    const order: string[] = [];
    const texts = items.map((item) => {
      const itemKey = key(item);
      order.push(itemKey);
      let text = next.get(itemKey) ?? kept.get(itemKey);
      if (text === undefined) text = render(item);
      else reused++;
      next.set(itemKey, text);
      return text;
    });
    this.setting = setting;
    this.blocks = next;
    this.order = order;
    this.conf = null;
    this.reused = reused;
    this.rendered = items.length - reused;
    return texts;
  }

  /**
   * Holds the blocks as parts of `conf`, the nginx.conf the last texts were put into one after another, instead of as
   * strings of their own: V8 makes a substring of a flat string a slice of it (a few words), so the blocks then cost
   * nothing beside the config the bundle store holds anyway (a second copy of the server blocks was 9 MB at 10,000
   * hosts, alive between reconciles, and the GC sizes the heap by what is alive). Called again with an equal config that is another string
   * (the published one, when the candidate's is the same), the blocks move to that one. Not found: kept as they are.
   */
  settle(conf: string): void {
    const [first] = this.order;
    if (first === undefined) return;
    let start = this.conf !== null && conf === this.conf ? this.start : -1;
    if (start < 0) {
      const text = this.blocks.get(first) ?? '';
      for (start = conf.indexOf(text); start >= 0; start = conf.indexOf(text, start + 1)) {
        if (this.inOrderAt(conf, start)) break;
      }
      if (start < 0) return;
    }
    const parts = new Map<string, string>();
    let at = start;
    for (const key of this.order) {
      const length = (this.blocks.get(key) ?? '').length;
      if (!parts.has(key)) parts.set(key, conf.slice(at, at + length));
      at += length;
    }
    this.blocks = parts;
    this.conf = conf;
    this.start = start;
  }

  /** Whether the blocks follow each other in `conf` from `start` on. */
  private inOrderAt(conf: string, start: number): boolean {
    let at = start;
    for (const key of this.order) {
      const text = this.blocks.get(key) ?? '';
      if (!conf.startsWith(text, at)) return false;
      at += text.length;
    }
    return true;
  }

  /** Blocks held (for tests). */
  get size(): number {
    return this.blocks.size;
  }
}

/**
 * A key of a block's render input, as a digest: the input is plain data (the model is JSON-serialisable), so equal
 * JSON is equal input. A digest, not the JSON, is kept: 10,000 hosts' JSON would be ~15 MB held between reconciles.
 */
export function inputKey(input: unknown): string {
  return hash('sha256', JSON.stringify(input), 'base64');
}

// The server blocks of nginx.conf, one host at a time, each rendered once and reused while its part of the model and
// the settings it reads are the same. One nunjucks render of every block at 10,000 hosts made ~120 MB of short-lived
// strings per reconcile, which the GC promoted (the blocks outlive a young-generation cycle) and sized the heap by.
import { hash } from 'node:crypto';

/**
 * Rendered server blocks by what they were rendered from, kept for the next render. Owned by whoever renders the
 * same config again and again (the reconciler's candidate render); it holds the blocks of the last render only, so
 * it is bounded by the current hosts, and a removed host's block is gone after the next render.
 */
export class ServerBlockCache {
  /** What every block reads besides its own host (the settings the macro sees): another one empties the cache. */
  private setting: string | null = null;
  private blocks = new Map<string, string>();
  /** Blocks the last render took from the cache, and rendered (for tests and benches). */
  reused = 0;
  rendered = 0;

  /**
   * The text of each server, in order: from the cache when a server with the same `input` (everything its text is
   * made from besides `setting`) was rendered with the same `setting` last time, else from `render`. Afterwards the
   * cache holds exactly these servers' blocks.
   */
  texts<T>(
    setting: string,
    servers: readonly T[],
    input: (server: T) => unknown,
    render: (server: T) => string,
  ): string[] {
    const kept = setting === this.setting ? this.blocks : new Map<string, string>();
    const next = new Map<string, string>();
    let reused = 0;
    const texts = servers.map((server) => {
      const key = serverKey(input(server));
      let text = next.get(key) ?? kept.get(key);
      if (text === undefined) text = render(server);
      else reused++;
      next.set(key, text);
      return text;
    });
    this.setting = setting;
    this.blocks = next;
    this.reused = reused;
    this.rendered = servers.length - reused;
    return texts;
  }

  /** Blocks held (for tests). */
  get size(): number {
    return this.blocks.size;
  }
}

/**
 * A server's render input as a digest: the input is plain data (the model is JSON-serialisable), so equal JSON is
 * equal input. A digest, not the JSON, is kept: 10,000 hosts' JSON would be ~15 MB held between reconciles.
 */
function serverKey(server: unknown): string {
  return hash('sha256', JSON.stringify(server), 'base64');
}

// Docker's lists (100,000 tasks are ~150 MB of JSON) read one element at a time: each element is parsed alone and
// handed to `keep`, which copies the few fields swarmgate reads, so the whole body and the full objects are never
// in memory at once (a whole-body JSON.parse of that list needs over a gigabyte).
//
// Elements are found by the bytes `},{"` between them. That sequence also occurs inside an element (an array of
// objects), but never inside a JSON string (a quote there is always escaped): a split inside an element leaves an
// unbalanced piece that does not parse, and the piece is then joined with the next one. So every element is
// parsed by JSON.parse itself, whatever splits were tried.

import { crc32 } from 'node:zlib';

const SEPARATOR = Buffer.from('},{"');
/** A piece this long without a separator that parses: give up splitting and parse the rest as one. */
const MAX_PIECE = 8 * 2 ** 20;

/**
 * The items of the last read of a list, by Swarm object ID, version and byte length, so an element that is the same
 * as last time is taken as read then instead of parsed again (100,000 running tasks are ~150 MB of JSON; between
 * two reads only a few of them change).
 *
 * Swarm gives every object a version (`"Version":{"Index":N}`, the Raft index of its last write) that changes with
 * every write of it, and the Engine writes an object's `ID` and `Version` first (Go's field order). An element whose
 * first bytes name the ID and version of a remembered one, whose length is the same and which is followed by the
 * next element, is that element. As a safety net against an element that changed without a new version, each
 * element's bytes are checked against the CRC-32 they had when parsed at least every `fullParseEvery`-th read: in
 * turns, a twelfth of the elements (by a hash of their ID) each read, and one whose bytes differ is parsed again.
 * Every 12th read parsing everything (what this was) made that reconcile at 10,000 services 1.4 s instead of 0.6 s,
 * and held every task twice while it ran (the peak of the live set the GC sizes the heap by); parsing a twelfth each
 * read cost ~85 ms per read, the checksum of a twelfth (12 MB) a few.
 */
export class ElementCache<T> {
  private last: ReadonlyMap<string, Remembered<T>> = new Map();
  private reads = 0;
  /** Elements the last finished read took from the read before it (for tests and benches). */
  reused = 0;
  private readonly fullParseEvery: number;

  constructor(fullParseEvery = 12) {
    this.fullParseEvery = fullParseEvery;
  }

  /** One read of the list; reads at the same time each have their own (the last to finish is remembered). */
  open(): CachedRead<T> {
    const turn = this.reads % this.fullParseEvery;
    this.reads++;
    return new CachedRead(this.last, turn, this.fullParseEvery, (seen, reused) => {
      this.last = seen;
      this.reused = reused;
    });
  }
}

/**
 * Remembered by the element's ID (the parsed object's own ID string, which the item keeps too: no second copy of
 * 100,000 keys), with the version it had.
 */
interface Remembered<T> {
  /** The parsed element's ID: the key the next read files it under (not the copy read from its bytes). */
  readonly id: string;
  readonly version: number;
  readonly length: number;
  /** CRC-32 of the element's bytes as parsed (as a signed 32-bit number: it then needs no heap number). */
  readonly crc: number;
  readonly item: T;
}

export class CachedRead<T> {
  private readonly last: ReadonlyMap<string, Remembered<T>>;
  private readonly seen = new Map<string, Remembered<T>>();
  private readonly done: (seen: ReadonlyMap<string, Remembered<T>>, reused: number) => void;
  private reused = 0;
  /** Elements whose ID hashes to this turn (modulo `every`) are parsed in full this read, whatever is remembered. */
  private readonly turn: number;
  private readonly every: number;

  constructor(
    last: ReadonlyMap<string, Remembered<T>>,
    turn: number,
    every: number,
    done: (seen: ReadonlyMap<string, Remembered<T>>, reused: number) => void,
  ) {
    this.last = last;
    this.turn = turn;
    this.every = every;
    this.done = done;
  }

  /**
   * The remembered item for the element starting at `start` if it is the same, null if it is not, WAIT if more
   * bytes are needed to tell.
   */
  lookup(bytes: Buffer, start: number): Remembered<T> | null | typeof WAIT {
    if (this.last.size === 0) return null;
    const id = identify(bytes, start);
    if (id === null) return null;
    const known = this.last.get(id);
    if (!known || known.version !== identified.version) return null;
    const end = start + known.length;
    if (end + 1 + ELEMENT_START.length > bytes.length) return WAIT;
    // The element must end where it ended before, and the next element begin right there.
    if (bytes[end - 1] !== 0x7d || bytes[end] !== 0x2c || !startsElement(bytes, end + 1)) return null;
    // Its turn: taken only if its bytes are still the ones parsed.
    if (identified.hash % this.every === this.turn && (crc32(bytes.subarray(start, end)) | 0) !== known.crc)
      return null;
    // Under the ID string the entry already holds: the one read from the bytes is garbage at once (100,000 tasks
    // kept a second copy of every ID, 3 MB).
    this.seen.set(known.id, known);
    this.reused++;
    return known;
  }

  /** An element parsed in full: remembered for the next read under the ID and version it begins with. */
  remember(bytes: Buffer, start: number, end: number, parsed: unknown, item: T): void {
    const id = identify(bytes, start);
    if (id === null) return;
    // The prefix must be what the parser read: the element's own ID and version, not a nested object's.
    const object = parsed as { ID?: unknown; Version?: { Index?: unknown } } | null;
    if (object?.ID !== id || object.Version?.Index !== identified.version) return;
    this.seen.set(object.ID, {
      id: object.ID,
      version: identified.version,
      length: end - start,
      crc: crc32(bytes.subarray(start, end)) | 0,
      item,
    });
  }

  /** The read ended whole: what it saw is what the next read may reuse (removed objects are forgotten). */
  commit(): void {
    this.done(this.seen, this.reused);
  }
}

export const WAIT = Symbol('wait for more bytes');
/** How every Swarm object the Engine lists begins: its ID, then its version. */
const ELEMENT_START = '{"ID":"';
const VERSION = Buffer.from('","Version":{"Index":');
/** The longest ID taken (Swarm's are 25 characters). */
const MAX_ID = 128;
/** Enough bytes for the ID and version of any element the cache takes. */
const PREFIX_BYTES = 200;

const ELEMENT_START_BYTES = Buffer.from(ELEMENT_START, 'latin1');

/** Whether the bytes at `at` are ELEMENT_START (compared in place: no string per element). */
function startsElement(bytes: Buffer, at: number): boolean {
  const end = at + ELEMENT_START_BYTES.length;
  return (
    end <= bytes.length && bytes.compare(ELEMENT_START_BYTES, 0, ELEMENT_START_BYTES.length, at, end) === 0
  );
}

/** The version and ID hash of the element identify() last named (module state: no object per element). */
const identified = { version: 0, hash: 0 };

/**
 * The ID of the element starting at `start` (`{"ID":"<ID>","Version":{"Index":<N>}`), read from the bytes (no JSON
 * parse, no string of the element), with its version and hash in `identified`; or null when it does not begin that
 * way or more bytes are needed.
 */
function identify(bytes: Buffer, start: number): string | null {
  if (!startsElement(bytes, start)) return null;
  const idStart = start + ELEMENT_START.length;
  let at = idStart;
  // FNV-1a of the ID's bytes: which read parses the element again (see ElementCache).
  let hash = 0x811c9dc5;
  for (; at < bytes.length && at - idStart <= MAX_ID; at++) {
    const byte = bytes[at] as number;
    // Letters, digits, "-", "_", "."; a quote ends the ID, anything else (an escape) is not an ID to trust.
    if (byte === 0x22) break;
    if (!(isAlnum(byte) || byte === 0x2d || byte === 0x5f || byte === 0x2e)) return null;
    hash = Math.imul(hash ^ byte, 0x01000193) >>> 0;
  }
  if (at === idStart || bytes[at] !== 0x22) return null;
  if (
    at + VERSION.length > bytes.length ||
    bytes.compare(VERSION, 0, VERSION.length, at, at + VERSION.length) !== 0
  )
    return null;
  let end = at + VERSION.length;
  const digits = end;
  let version = 0;
  // Up to 15 digits: the version is then exact as a number (Swarm's Raft index is far below that).
  while (
    end < bytes.length &&
    end - digits < 15 &&
    (bytes[end] as number) >= 0x30 &&
    (bytes[end] as number) <= 0x39
  )
    version = version * 10 + ((bytes[end++] as number) - 0x30);
  if (end === digits || bytes[end] !== 0x7d) return null;
  // A leading zero is not how JSON writes a number: such an element is not one to take by its prefix.
  if (bytes[digits] === 0x30 && end - digits > 1) return null;
  identified.version = version;
  identified.hash = hash;
  // Swarm's IDs are short: one flat string, holding no larger one alive.
  return bytes.toString('latin1', idStart, at);
}

/** The hash identify() computes from an ID's bytes (IDs are ASCII), for tests that predict an element's turn. */
export function idHash(id: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < id.length; i++) hash = Math.imul(hash ^ id.charCodeAt(i), 0x01000193) >>> 0;
  return hash;
}

function isAlnum(byte: number): boolean {
  return (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5a) || (byte >= 0x61 && byte <= 0x7a);
}

export async function readJsonArray<T>(
  chunks: AsyncIterable<Buffer | string>,
  keep: (item: unknown) => T,
  elementCache?: ElementCache<T>,
): Promise<T[]> {
  const cache = elementCache?.open();
  const items: T[] = [];
  /** Bytes not yet parsed, from the start of an element (or of the body). */
  let rest: Buffer = Buffer.alloc(0);
  /** Whether the opening `[` has been passed. */
  let opened = false;
  /** Unsplittable input (not compact JSON, a huge element): everything is collected and parsed at the end. */
  const whole: Buffer[] = [];
  let fallback = false;
  /** One buffer the unparsed tail and the next chunk are joined in, reused for every chunk (see `joined`). */
  const scratch = { bytes: Buffer.alloc(0) };
  /** Where the search for the next separator resumes in `rest` (before it: tried, the piece did not parse). */
  let searchFrom = 0;

  for await (const chunk of chunks) {
    const bytes = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
    if (fallback) {
      whole.push(bytes);
      continue;
    }
    rest = rest.length === 0 ? bytes : joined(scratch, rest, bytes);
    if (!opened) {
      const start = firstNonSpace(rest, 0);
      if (start < 0) continue;
      if (rest[start] !== 0x5b) throw new SyntaxError('a Docker list is not a JSON array');
      rest = rest.subarray(start + 1);
      opened = true;
    }
    let begin = 0;
    let at: number;
    for (;;) {
      if (cache && searchFrom <= begin) {
        // Too few bytes to tell the element's ID and version: wait for more (the end of the body parses the rest).
        if (rest.length - begin < PREFIX_BYTES) break;
        const known = cache.lookup(rest, begin);
        if (known === WAIT) break;
        if (known) {
          items.push(known.item);
          begin += known.length + 1;
          searchFrom = begin;
          continue;
        }
      }
      at = rest.indexOf(SEPARATOR, Math.max(begin, searchFrom));
      if (at < 0) break;
      const piece = parsePiece(rest, begin, at + 1);
      if (piece === NOT_JSON) {
        // A separator inside an element: keep the piece and look for the next one.
        searchFrom = at + 1;
        continue;
      }
      const item = keep(piece);
      cache?.remember(rest, begin, at + 1, piece, item);
      items.push(item);
      begin = at + 2;
      searchFrom = begin;
    }
    rest = rest.subarray(begin);
    searchFrom -= begin;
    if (rest.length > MAX_PIECE) {
      fallback = true;
      // A copy: `rest` may be a view of the scratch buffer, which the next chunk overwrites.
      whole.push(Buffer.from(rest));
      rest = Buffer.alloc(0);
    }
  }
  if (fallback) {
    const tail = Buffer.concat(whole).toString('utf8');
    const parsed = JSON.parse(`[${tail}`) as unknown[];
    for (const item of parsed) items.push(keep(item));
    return items;
  }
  if (!opened) throw new SyntaxError('a Docker list ended before it began');
  // The last element (or several the separator did not part, such as `{},{}`), then `]`.
  for (const item of JSON.parse(`[${rest.toString('utf8')}`) as unknown[]) items.push(keep(item));
  cache?.commit();
  return items;
}

/**
 * `tail` then `chunk`, in the scratch buffer (grown when too small). A new buffer per chunk (Buffer.concat) was about
 * 150 MB of native allocations per reconcile at 100,000 tasks, freed only when the GC got to their wrappers: the
 * process's malloc heap grew past 100 MB and kept it. Only synchronous readers may see the result: the next join
 * overwrites it (and `tail` may be a view of it: its bytes are moved to the front first).
 */
function joined(scratch: { bytes: Buffer }, tail: Buffer, chunk: Buffer): Buffer {
  const size = tail.length + chunk.length;
  let target = scratch.bytes;
  if (target.length < size) {
    target = Buffer.allocUnsafe(Math.max(size, 2 * target.length));
    tail.copy(target, 0);
    scratch.bytes = target;
  } else if (tail.buffer === target.buffer) {
    const from = tail.byteOffset - target.byteOffset;
    target.copyWithin(0, from, from + tail.length);
  } else {
    tail.copy(target, 0);
  }
  chunk.copy(target, tail.length);
  return target.subarray(0, size);
}

const NOT_JSON = Symbol('not json');

function parsePiece(bytes: Buffer, start: number, end: number): unknown {
  try {
    return JSON.parse(bytes.toString('utf8', start, end)) as unknown;
  } catch {
    return NOT_JSON;
  }
}

function firstNonSpace(bytes: Buffer, from: number): number {
  for (let i = from; i < bytes.length; i++) {
    const byte = bytes[i];
    if (byte !== 0x20 && byte !== 0x0a && byte !== 0x0d && byte !== 0x09) return i;
  }
  return -1;
}

// Docker's lists (100,000 tasks are ~150 MB of JSON) read one element at a time: each element is parsed alone and
// handed to `keep`, which copies the few fields swarmgate reads, so the whole body and the full objects are never
// in memory at once (a whole-body JSON.parse of that list needs over a gigabyte).
//
// Elements are found by the bytes `},{"` between them. That sequence also occurs inside an element (an array of
// objects), but never inside a JSON string (a quote there is always escaped): a split inside an element leaves an
// unbalanced piece that does not parse, and the piece is then joined with the next one. So every element is
// parsed by JSON.parse itself, whatever splits were tried.

const SEPARATOR = Buffer.from('},{"');
/** A piece this long without a separator that parses: give up splitting and parse the rest as one. */
const MAX_PIECE = 8 * 2 ** 20;

export async function readJsonArray<T>(
  chunks: AsyncIterable<Buffer | string>,
  keep: (item: unknown) => T,
): Promise<T[]> {
  const items: T[] = [];
  /** Bytes not yet parsed, from the start of an element (or of the body). */
  let rest: Buffer = Buffer.alloc(0);
  /** Whether the opening `[` has been passed. */
  let opened = false;
  /** Unsplittable input (not compact JSON, a huge element): everything is collected and parsed at the end. */
  const whole: Buffer[] = [];
  let fallback = false;
  /** Where the search for the next separator resumes in `rest` (before it: tried, the piece did not parse). */
  let searchFrom = 0;

  for await (const chunk of chunks) {
    const bytes = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
    if (fallback) {
      whole.push(bytes);
      continue;
    }
    rest = rest.length === 0 ? bytes : Buffer.concat([rest, bytes]);
    if (!opened) {
      const start = firstNonSpace(rest, 0);
      if (start < 0) continue;
      if (rest[start] !== 0x5b) throw new SyntaxError('a Docker list is not a JSON array');
      rest = rest.subarray(start + 1);
      opened = true;
    }
    let begin = 0;
    let at: number;
    while ((at = rest.indexOf(SEPARATOR, Math.max(begin, searchFrom))) >= 0) {
      const piece = parsePiece(rest, begin, at + 1);
      if (piece === NOT_JSON) {
        // A separator inside an element: keep the piece and look for the next one.
        searchFrom = at + 1;
        continue;
      }
      items.push(keep(piece));
      begin = at + 2;
      searchFrom = begin;
    }
    rest = rest.subarray(begin);
    searchFrom -= begin;
    if (rest.length > MAX_PIECE) {
      fallback = true;
      whole.push(rest);
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
  return items;
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

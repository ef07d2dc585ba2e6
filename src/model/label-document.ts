// A structured label value (VIRTUAL_HOST_MULTIPORTS) written as YAML or JSON, read into plain data. The only file
// importing `yaml`. Label values come from every service owner and the controller reads them on every reconcile,
// so the document is held to small limits before and while it is read: the parser itself can run out of memory on
// deeply nested flow collections (13,000 nested "{" killed the process in a test), which no try/catch survives.
import { isAlias, isMap, isScalar, isSeq, parseDocument } from 'yaml';
import type { Parsed } from './labels.ts';

export interface DocumentLimits {
  /** Characters of the whole value. */
  readonly maxLength: number;
  /** Collections nested in one another (host → path → options is 3). */
  readonly maxDepth: number;
  /** Collections and scalars in all. */
  readonly maxNodes: number;
}

export const LABEL_DOCUMENT_LIMITS: DocumentLimits = { maxLength: 16_384, maxDepth: 3, maxNodes: 4096 };

/** Deeper than this in "[" / "{" (counted without regard to quotes: it errs towards refusing) is never read. */
const MAX_FLOW_NESTING = 8;
/** Leading spaces of a line: bounds the nesting of block collections before the parser sees them. */
const MAX_INDENT = 32;

/** The same values are read on every reconcile: keep recent answers (the function is pure, so this is safe). */
const cache = new Map<string, Parsed<unknown>>();
const CACHE_SIZE = 512;

/**
 * YAML 1.2 (core schema: no YAML 1.1 "on"/"yes" booleans or octal surprises) or JSON, which is YAML 1.2's flow
 * form. Refused: anchors and aliases (no expansion "bombs", and nothing hidden by reference), explicit tags,
 * duplicate keys (JSON.parse would keep the last one silently), keys that are not strings, several documents,
 * and anything past the limits.
 */
export function parseLabelDocument(raw: string, limits = LABEL_DOCUMENT_LIMITS): Parsed<unknown> {
  const key = `${limits.maxLength}/${limits.maxDepth}/${limits.maxNodes}\u0000${raw}`;
  const known = cache.get(key);
  if (known) return known;
  const result = readDocument(raw, limits);
  if (cache.size >= CACHE_SIZE) cache.delete(cache.keys().next().value ?? '');
  cache.set(key, result);
  return result;
}

function readDocument(raw: string, limits: DocumentLimits): Parsed<unknown> {
  const fail = (reason: string): Parsed<unknown> => ({ ok: false, reason });
  if (raw.length > limits.maxLength) return fail(`longer than ${limits.maxLength} characters`);
  let nesting = 0;
  for (const char of raw) {
    if (char === '[' || char === '{') nesting++;
    else if (char === ']' || char === '}') nesting--;
    if (nesting > MAX_FLOW_NESTING) return fail(`nested deeper than ${MAX_FLOW_NESTING} brackets`);
  }
  if (raw.split('\n').some((line) => line.length - line.trimStart().length > MAX_INDENT))
    return fail(`a line is indented more than ${MAX_INDENT} spaces`);

  let document: ReturnType<typeof parseDocument>;
  try {
    document = parseDocument(raw, {
      version: '1.2',
      schema: 'core',
      uniqueKeys: true,
      strict: true,
      merge: false,
      prettyErrors: false,
    });
  } catch (error) {
    return fail(`not YAML or JSON: ${firstLine(error)}`);
  }
  const problem = document.errors[0] ?? document.warnings[0];
  if (problem) {
    return fail(
      problem.code === 'DUPLICATE_KEY'
        ? 'a key appears twice in one map'
        : problem.code === 'MULTIPLE_DOCS'
          ? 'several YAML documents: give one'
          : `not YAML or JSON: ${firstLine(problem)}`,
    );
  }
  let nodes = 0;
  const toData = (node: unknown, depth: number): Parsed<unknown> => {
    if (++nodes > limits.maxNodes) return fail(`more than ${limits.maxNodes} values`);
    if (node === null || node === undefined) return { ok: true, value: null };
    if (isAlias(node)) return fail(`aliases (*${node.source}) are not accepted: write the value out`);
    if (!isScalar(node) && !isMap(node) && !isSeq(node)) return fail('unexpected YAML content');
    if (node.anchor) return fail(`anchors (&${node.anchor}) are not accepted: write the value out`);
    if (node.tag) return fail(`tags (${node.tag}) are not accepted`);
    if (isScalar(node)) return { ok: true, value: node.value };
    if (depth >= limits.maxDepth) return fail(`nested deeper than ${limits.maxDepth} levels`);
    if (isSeq(node)) {
      const items: unknown[] = [];
      for (const item of node.items) {
        const value = toData(item, depth + 1);
        if (!value.ok) return value;
        items.push(value.value);
      }
      return { ok: true, value: items };
    }
    const map: Record<string, unknown> = {};
    for (const pair of node.items) {
      if (isAlias(pair.key))
        return fail(`aliases (*${pair.key.source}) are not accepted: write the value out`);
      if (!isScalar(pair.key) || typeof pair.key.value !== 'string' || pair.key.tag || pair.key.anchor)
        return fail(`keys must be strings, not ${describeKey(pair.key)}`);
      const value = toData(pair.value, depth + 1);
      if (!value.ok) return value;
      // defineProperty: a key "__proto__" stays a plain key, never the object's prototype.
      Object.defineProperty(map, pair.key.value, {
        value: value.value,
        enumerable: true,
        writable: true,
        configurable: true,
      });
    }
    return { ok: true, value: map };
  };
  return toData(document.contents, 0);
}

function describeKey(key: unknown): string {
  if (isScalar(key)) {
    const value = key.value;
    if (value === null) return 'null';
    return typeof value === 'number' || typeof value === 'boolean'
      ? `${typeof value} ${value}`
      : 'a tagged key';
  }
  if (isMap(key)) return 'a map';
  if (isSeq(key)) return 'a list';
  return 'an empty key';
}

function firstLine(error: unknown): string {
  return (error instanceof Error ? error.message : String(error)).split('\n')[0] ?? '';
}

// The label grammar: every value a user writes is parsed into a typed field here, or rejected with a reason.
// Nothing else reaches nginx, so a label can never inject a directive.

export type Proto = 'http' | 'https' | 'grpc' | 'grpcs' | 'uwsgi' | 'fastcgi';
export const PROTOS: readonly Proto[] = ['http', 'https', 'grpc', 'grpcs', 'uwsgi', 'fastcgi'];

export interface HostPattern {
  /** exact: www.example.com; wildcard: *.example.com or example.*; regex: ~^app\d+\.example\.com$ */
  readonly kind: 'exact' | 'wildcard' | 'regex';
  /** The value as nginx's server_name takes it (regex with its leading ~). */
  readonly value: string;
}

export interface PathPattern {
  /** prefix: /api/; regex: ~^/api/v\d+/ (case-sensitive) or ~*^/img/ (case-insensitive). */
  readonly kind: 'prefix' | 'regex';
  readonly value: string;
}

export type Parsed<T> =
  { readonly ok: true; readonly value: T } | { readonly ok: false; readonly reason: string };

const ok = <T>(value: T): Parsed<T> => ({ ok: true, value });
const fail = <T>(reason: string): Parsed<T> => ({ ok: false, reason });

const DNS_LABEL = /^(?:[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)$/;
// No quotes, whitespace, braces, semicolons, hash or backslash: none of them has a meaning in a URL path that
// nginx should see, and each could end a directive.
const PATH_CHARS = /^\/[A-Za-z0-9._~!*+,=:@%/-]*$/;
// Control characters are exactly what this pattern exists to find.
// eslint-disable-next-line no-control-regex
const CONTROL_OR_SPACE = /[\s\u0000-\u001f\u007f]/;

// nginx keeps exact server names in a hash whose buckets (server_names_hash_bucket_size 128 in
// templates/nginx.conf.njk) must hold one name plus two pointers: 8 + align8(length + 2) + 8 <= 128. A longer name
// fails nginx -t with "could not build server_names_hash" (found by label fuzzing). Wildcards are kept elsewhere.
const MAX_EXACT_HOST = 110;

function isDnsName(name: string): boolean {
  if (name.length === 0 || name.length > 253) return false;
  return name.split('.').every((label) => DNS_LABEL.test(label));
}

/**
 * Label regexes must mean the same to JavaScript (checked here) and to nginx's PCRE (which compiles them on every
 * edge), and must not touch nginx's variables. So the grammar is a whitelist, not a blacklist: printable ASCII;
 * literals; `.` `^` `$` `|`; the escapes \d \D \w \W \s \S \b \B and escaped punctuation; classes `[...]`
 * of those; groups `(...)`, `(?:...)` and look-aheads `(?=...)` `(?!...)`; quantifiers `* + ? {n} {n,} {n,m}`
 * (n, m at most 1000), optionally lazy. Everything else gets a reason that says why nginx cannot have it.
 */
export function checkRegex(body: string, flags = ''): string | null {
  if (body.length === 0) return 'the regular expression is empty';
  if (body.length > 512) return 'the regular expression is longer than 512 characters';
  if (CONTROL_OR_SPACE.test(body)) return 'the regular expression contains whitespace or a control character';
  if (/["']/.test(body)) return 'the regular expression contains a quote';
  if (/[^\x21-\x7e]/.test(body)) {
    return 'the regular expression contains a character outside printable ASCII (nginx matches bytes, not characters)';
  }
  const problem = scanRegex(body);
  if (problem) return problem;
  try {
    new RegExp(body, flags);
  } catch (error) {
    return `the regular expression does not compile: ${(error as Error).message}`;
  }
  return null;
}

const CLASS_ESCAPES = new Set(['d', 'D', 'w', 'W', 's', 'S']);
const ASSERTION_ESCAPES = new Set(['b', 'B']);
const PUNCTUATION = /^[!#$%&()*+,\-./:;<=>?@[\\\]^_`{|}~]$/;
const MAX_REPEAT = 1000;
const MAX_DEPTH = 32;
// PCRE2 refuses a pattern whose compiled form exceeds 64 KiB; repeats are compiled as copies, so count them.
const MAX_WEIGHT = 20_000;

/** The PCRE/JS whitelist above; returns the first reason the pattern falls outside it, or null. */
function scanRegex(body: string): string | null {
  // One frame per open group: the weight of its finished alternatives and of the current one.
  const stack: { best: number; current: number }[] = [{ best: 0, current: 0 }];
  let lastAtom = 0; // weight of the atom a quantifier would repeat (0: nothing repeatable)
  let i = 0;
  const top = (): { best: number; current: number } =>
    stack[stack.length - 1] as { best: number; current: number };
  const atom = (weight: number): void => {
    top().current += weight;
    lastAtom = weight;
  };
  while (i < body.length) {
    const c = body[i] as string;
    if (c === '\\') {
      const escaped = escapeProblem(body, i, false);
      if (escaped) return escaped;
      const next = body[i + 1] as string;
      if (ASSERTION_ESCAPES.has(next)) {
        top().current += 1;
        lastAtom = 0;
      } else atom(1);
      i += 2;
    } else if (c === '[') {
      // "[:alpha:]" outside a class: PCRE refuses it ("POSIX named classes are supported only within a class"),
      // JavaScript reads a class of ":alph" (found by label fuzzing).
      if (isPosixSyntax(body, i + 1)) {
        return 'POSIX classes such as [:alpha:] are not allowed; use \\w, \\d or a range';
      }
      const end = scanClass(body, i);
      if (typeof end === 'string') return end;
      atom(1);
      i = end;
    } else if (c === '(') {
      const kind = groupKind(body, i);
      if (kind.problem) return kind.problem;
      if (stack.length > MAX_DEPTH) return `groups are nested deeper than ${MAX_DEPTH}`;
      stack.push({ best: 0, current: 0 });
      lastAtom = 0;
      i += kind.length;
    } else if (c === ')') {
      if (stack.length === 1) return 'a ")" closes no group';
      const frame = stack.pop() as { best: number; current: number };
      atom(Math.max(frame.best, frame.current) + 2);
      i += 1;
    } else if (c === '|') {
      const frame = top();
      frame.best = Math.max(frame.best, frame.current);
      frame.current = 0;
      lastAtom = 0;
      i += 1;
    } else if (c === '*' || c === '+' || c === '?' || (c === '{' && /^\{\d/.test(body.slice(i)))) {
      const quantifier = /^(?:[*+?]|\{(\d{1,4})(,(\d{0,4}))?\})/.exec(body.slice(i));
      if (!quantifier) return `"{" must start a repeat {n}, {n,} or {n,m}, or be escaped as \\{`;
      const min = Number(quantifier[1] ?? 0);
      const max = quantifier[3] ? Number(quantifier[3]) : min;
      if (min > MAX_REPEAT || max > MAX_REPEAT) return `a repeat count is above ${MAX_REPEAT}`;
      if (lastAtom === 0) return `"${quantifier[0]}" repeats nothing`;
      let length = quantifier[0].length;
      if (body[i + length] === '+') return 'possessive repeats ("++", "*+") are not allowed';
      if (body[i + length] === '?') length += 1;
      top().current += lastAtom * Math.max(min, max, 1);
      if (top().current > MAX_WEIGHT) return 'the regular expression would compile too large for nginx';
      lastAtom = 0;
      i += length;
    } else if (c === '{') {
      // "{," is a repeat in newer PCRE2 ({,3} = {0,3}) and a literal in JavaScript and older PCRE2.
      if (body[i + 1] === ',') return '"{," means different things to nginx and here; escape "{" as \\{';
      atom(1);
      i += 1;
    } else if (c === '^' || c === '$') {
      top().current += 1;
      lastAtom = 0;
      i += 1;
    } else {
      atom(1);
      i += 1;
    }
    if (top().current > MAX_WEIGHT) return 'the regular expression would compile too large for nginx';
  }
  if (stack.length > 1) return 'a "(" is never closed';
  return null;
}

/** The reason the escape at body[i] (a backslash) is not allowed, or null. */
function escapeProblem(body: string, i: number, inClass: boolean): string | null {
  const next = body[i + 1];
  if (next === undefined) return 'the regular expression ends with a lone backslash';
  if (/[1-9]/.test(next) || next === 'k' || next === 'g') {
    return 'backreferences (\\1, \\k<name>, \\g) are not allowed';
  }
  if (CLASS_ESCAPES.has(next) || (!inClass && ASSERTION_ESCAPES.has(next)) || PUNCTUATION.test(next)) {
    return null;
  }
  return `"\\${next}" is not allowed: use \\d \\D \\w \\W \\s \\S${inClass ? '' : ' \\b \\B'} or a backslash before punctuation`;
}

/** What the "(" at body[i] opens: its length, or why it is not allowed. */
function groupKind(body: string, i: number): { length: number; problem?: string } {
  const rest = body.slice(i, i + 4);
  if (rest[1] !== '?' && rest[1] !== '*') return { length: 1 };
  if (rest.startsWith('(?:') || rest.startsWith('(?=') || rest.startsWith('(?!')) return { length: 3 };
  if (rest.startsWith('(?<=') || rest.startsWith('(?<!')) {
    return {
      length: 0,
      problem: 'look-behind "(?<=" / "(?<!" is not allowed (nginx\'s PCRE needs it fixed-length)',
    };
  }
  if (rest.startsWith('(?<') || rest.startsWith('(?P') || rest.startsWith("(?'")) {
    return {
      length: 0,
      problem:
        'named groups are not allowed: nginx makes each name a variable, and names such as host or uri collide with its own; use (...) or (?:...)',
    };
  }
  if (rest[1] === '*') return { length: 0, problem: 'PCRE verbs "(*...)" are not allowed' };
  return {
    length: 0,
    problem: `"${rest.slice(0, 3)}" is not allowed: use (...), (?:...), (?=...) or (?!...) (case-insensitive paths start with ~*)`,
  };
}

/** PCRE2's check_posix_syntax: "[" then ":", "." or "=" and that character before "]", with no "]" before it. */
function isPosixSyntax(body: string, at: number): boolean {
  const terminator = body[at];
  if (terminator !== ':' && terminator !== '.' && terminator !== '=') return false;
  for (let j = at + 1; j + 1 < body.length; j++) {
    const c = body[j];
    if (c === '\\' && (body[j + 1] === ']' || body[j + 1] === '\\')) j++;
    else if ((c === '[' && body[j + 1] === terminator) || c === ']') return false;
    else if (c === terminator && body[j + 1] === ']') return true;
  }
  return false;
}

/** The index after the class that starts at body[i] ("["), or why it is not allowed. */
function scanClass(body: string, i: number): number | string {
  let j = i + 1;
  if (body[j] === '^') j++;
  // "[]" and "[^]": PCRE reads the "]" as a member, JavaScript as the end of an empty class.
  if (body[j] === ']') return 'an empty class "[]" or "[^]" is not allowed; escape a "]" member as \\]';
  let previous: 'char' | 'set' | 'none' = 'none';
  let rangePending = false;
  while (j < body.length) {
    const c = body[j] as string;
    if (c === ']') {
      return j + 1;
    }
    let item: 'char' | 'set';
    if (c === '\\') {
      const escaped = escapeProblem(body, j, true);
      if (escaped) return escaped;
      item = CLASS_ESCAPES.has(body[j + 1] as string) ? 'set' : 'char';
      j += 2;
    } else if (c === '[' && /[:.=]/.test(body[j + 1] ?? '')) {
      return 'POSIX classes such as [:alpha:] are not allowed; use \\w, \\d or a range';
    } else if (c === '-' && previous !== 'none' && !rangePending && body[j + 1] !== ']') {
      if (previous === 'set') return 'a range cannot start at \\d, \\w or \\s';
      rangePending = true;
      j += 1;
      continue;
    } else {
      item = 'char';
      j += 1;
    }
    if (rangePending && item === 'set') return 'a range cannot end at \\d, \\w or \\s';
    previous = rangePending ? 'none' : item;
    rangePending = false;
  }
  return 'a "[" is never closed';
}

export function parseHost(raw: string): Parsed<HostPattern> {
  const value = raw.trim();
  if (value.startsWith('~')) {
    const problem = checkRegex(value.slice(1));
    return problem ? fail(`host "${value}": ${problem}`) : ok({ kind: 'regex', value });
  }
  const lower = value.toLowerCase();
  if (lower.startsWith('*.')) {
    return isDnsName(lower.slice(2))
      ? ok({ kind: 'wildcard', value: lower })
      : fail(`host "${value}": after "*." must come a DNS name`);
  }
  if (lower.endsWith('.*')) {
    return isDnsName(lower.slice(0, -2))
      ? ok({ kind: 'wildcard', value: lower })
      : fail(`host "${value}": before ".*" must come a DNS name`);
  }
  if (lower.includes(':')) return fail(`host "${value}": a port does not belong in VIRTUAL_HOST`);
  if (!isDnsName(lower)) return fail(`host "${value}" is not a DNS name, "*.name", "name.*" or "~regex"`);
  if (lower.length > MAX_EXACT_HOST) {
    return fail(
      `host "${value}" is longer than ${MAX_EXACT_HOST} characters, more than nginx's server name table holds (server_names_hash_bucket_size 128)`,
    );
  }
  return ok({ kind: 'exact', value: lower });
}

/** VIRTUAL_HOST: a comma list; blanks are skipped, duplicates kept once, every entry must parse. */
export function parseHostList(raw: string): Parsed<HostPattern[]> {
  // A comma inside a regex repeat ("~^a{2,5}$") is not a separator (found by the label table's nginx check).
  const entries = raw
    .split(/,(?!\d*\})/)
    .map((entry) => entry.trim())
    .filter((entry) => entry !== '');
  if (entries.length === 0) return fail('no host name given');
  const hosts = new Map<string, HostPattern>();
  const reasons: string[] = [];
  for (const entry of entries) {
    const parsed = parseHost(entry);
    if (parsed.ok) hosts.set(parsed.value.value, parsed.value);
    else reasons.push(parsed.reason);
  }
  if (reasons.length > 0) return fail(reasons.join('; '));
  return ok([...hosts.values()]);
}

export function parsePort(raw: string): Parsed<number> {
  const value = raw.trim();
  if (!/^\d{1,5}$/.test(value)) return fail(`"${raw}" is not a port number`);
  const port = Number(value);
  return port >= 1 && port <= 65535 ? ok(port) : fail(`${port} is outside 1..65535`);
}

export function parsePath(raw: string): Parsed<PathPattern> {
  const value = raw.trim();
  if (value.startsWith('~')) {
    const insensitive = value.startsWith('~*');
    const body = value.slice(insensitive ? 2 : 1);
    const problem = checkRegex(body, insensitive ? 'i' : '');
    return problem ? fail(`path "${value}": ${problem}`) : ok({ kind: 'regex', value });
  }
  if (value.length > 1024) return fail('the path is longer than 1024 characters');
  return PATH_CHARS.test(value)
    ? ok({ kind: 'prefix', value })
    : fail(`path "${raw}" must start with "/" and use only letters, digits and ._~!*+,=:@%/-`);
}

/** VIRTUAL_DEST: the path that replaces the matched VIRTUAL_PATH prefix upstream (e.g. "/"). */
export function parseDest(raw: string): Parsed<string> {
  const value = raw.trim();
  if (value.length > 1024) return fail('the destination is longer than 1024 characters');
  return PATH_CHARS.test(value)
    ? ok(value)
    : fail(`destination "${raw}" must start with "/" and use only letters, digits and ._~!*+,=:@%/-`);
}

export function parseProto(raw: string): Parsed<Proto> {
  const value = raw.trim().toLowerCase();
  return (PROTOS as readonly string[]).includes(value)
    ? ok(value as Proto)
    : fail(`"${raw}" is not one of ${PROTOS.join(', ')}`);
}

export function parseRoot(raw: string): Parsed<string> {
  const value = raw.trim();
  return PATH_CHARS.test(value) && value.length <= 1024
    ? ok(value)
    : fail(`"${raw}" is not an absolute path of letters, digits and ._~!*+,=:@%/-`);
}

export function parseNetworkName(raw: string): Parsed<string> {
  const value = raw.trim();
  return /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/.test(value) ? ok(value) : fail(`"${raw}" is not a network name`);
}

export type HttpsMethod = 'redirect' | 'noredirect' | 'nohttp' | 'nohttps';
export const HTTPS_METHODS: readonly HttpsMethod[] = ['redirect', 'noredirect', 'nohttp', 'nohttps'];

export function parseHttpsMethod(raw: string): Parsed<HttpsMethod> {
  const value = raw.trim().toLowerCase();
  return (HTTPS_METHODS as readonly string[]).includes(value)
    ? ok(value as HttpsMethod)
    : fail(`"${raw}" is not one of ${HTTPS_METHODS.join(', ')}`);
}

/** HSTS: "off", or a Strict-Transport-Security value built from max-age, includeSubDomains and preload. */
export function parseHsts(raw: string): Parsed<string | null> {
  const value = raw.trim();
  if (value.toLowerCase() === 'off') return ok(null);
  const parts = value.split(';').map((part) => part.trim());
  const [maxAge, ...flags] = parts;
  if (!maxAge || !/^max-age=\d{1,10}$/i.test(maxAge)) {
    return fail(`"${raw}" must be "off" or start with max-age=<seconds>`);
  }
  const allowed = new Set(['includesubdomains', 'preload']);
  const seen = new Set<string>();
  for (const flag of flags) {
    const lower = flag.toLowerCase();
    if (!allowed.has(lower) || seen.has(lower))
      return fail(`"${flag}" is not an HSTS directive (includeSubDomains, preload)`);
    seen.add(lower);
  }
  return ok(parts.join('; '));
}

/** A certificate name: a file stem such as "shop.example.com" or "wildcard_example". */
export function parseCertName(raw: string): Parsed<string> {
  const value = raw.trim();
  return /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/.test(value) && !value.includes('..')
    ? ok(value)
    : fail(`"${raw}" is not a certificate name (letters, digits, . _ -)`);
}

export type SslPolicy = 'Mozilla-Modern' | 'Mozilla-Intermediate';
export const SSL_POLICIES: readonly SslPolicy[] = ['Mozilla-Modern', 'Mozilla-Intermediate'];

/**
 * nginx-proxy's AWS ELB policy names, by the oldest TLS version each allows. TLS 1.3-only maps to Modern, TLS 1.2+
 * to Intermediate (the cipher lists differ a little: swarmgate offers only forward-secret AEAD suites); policies
 * that allow TLS 1.0 or 1.1 are refused, because OpenSSL 3 on the edge refuses those versions at its default
 * security level anyway, so a client that needs them would fail after the migration without a word.
 */
const AWS_POLICIES: Readonly<Record<string, SslPolicy | 'old'>> = {
  'AWS-TLS13-1-3-2021-06': 'Mozilla-Modern',
  'AWS-TLS13-1-2-2021-06': 'Mozilla-Intermediate',
  'AWS-TLS13-1-2-Restricted-2021-06': 'Mozilla-Intermediate',
  'AWS-TLS13-1-2-Ext1-2021-06': 'Mozilla-Intermediate',
  'AWS-TLS13-1-2-Ext2-2021-06': 'Mozilla-Intermediate',
  'AWS-TLS13-1-1-2021-06': 'old',
  'AWS-TLS13-1-0-2021-06': 'old',
  'AWS-FS-1-2-Res-2020-10': 'Mozilla-Intermediate',
  'AWS-FS-1-2-Res-2019-08': 'Mozilla-Intermediate',
  'AWS-FS-1-2-2019-08': 'Mozilla-Intermediate',
  'AWS-FS-1-1-2019-08': 'old',
  'AWS-FS-2018-06': 'old',
  'AWS-TLS-1-2-Ext-2018-06': 'Mozilla-Intermediate',
  'AWS-TLS-1-2-2017-01': 'Mozilla-Intermediate',
  'AWS-TLS-1-1-2017-01': 'old',
  'AWS-2016-08': 'old',
  'AWS-2015-05': 'old',
  'AWS-2015-03': 'old',
  'AWS-2015-02': 'old',
};

/** The policy an nginx-proxy SSL_POLICY name maps to, and whether it was mapped from another name. */
export function parseSslPolicy(raw: string): Parsed<SslPolicy> {
  const value = raw.trim();
  const match = SSL_POLICIES.find((policy) => policy.toLowerCase() === value.toLowerCase());
  if (match) return ok(match);
  const aws = Object.entries(AWS_POLICIES).find(([name]) => name.toLowerCase() === value.toLowerCase());
  if (aws && aws[1] !== 'old') return ok(aws[1]);
  if (aws || value.toLowerCase() === 'mozilla-old') {
    return fail(
      `"${raw}" allows TLS 1.0/1.1, which the edge does not offer; use Mozilla-Intermediate (TLS 1.2 and 1.3)`,
    );
  }
  return fail(`"${raw}" is not one of ${SSL_POLICIES.join(', ')} or an AWS-* policy name nginx-proxy knows`);
}

/** Whether SSL_POLICY names an AWS policy that parseSslPolicy mapped onto a Mozilla one (reported as a warning). */
export function isMappedSslPolicy(raw: string): boolean {
  return !SSL_POLICIES.some((policy) => policy.toLowerCase() === raw.trim().toLowerCase());
}

/** LETSENCRYPT_HOST: exact names only; HTTP-01 cannot prove a wildcard or a regex. */
export function parseCertificateHosts(raw: string): Parsed<string[]> {
  const hosts = parseHostList(raw);
  if (!hosts.ok) return hosts;
  const notExact = hosts.value.filter((host) => host.kind !== 'exact');
  if (notExact.length > 0) {
    return fail(
      `${notExact.map((host) => `"${host.value}"`).join(', ')}: only exact names can get a certificate over HTTP-01`,
    );
  }
  if (hosts.value.length > 100) return fail('a certificate can name at most 100 hosts');
  return ok(hosts.value.map((host) => host.value));
}

export function parseEmail(raw: string): Parsed<string> {
  const value = raw.trim();
  return /^[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,63}$/.test(value)
    ? ok(value)
    : fail(`"${raw}" is not an e-mail address`);
}

/** swarmgate.max-body-size: nginx client_max_body_size; "0" means unlimited (registries, uploads). */
export function parseBodySize(raw: string): Parsed<string> {
  const value = raw.trim().toLowerCase();
  return /^(0|[1-9]\d{0,5}[kmg]?)$/.test(value)
    ? ok(value)
    : fail(`"${raw}" is not a size such as 0 (unlimited), 10m or 2g`);
}

/** swarmgate.proxy-timeout: seconds the edge waits on a slow upstream (read and send), 1..86400. */
export function parseTimeoutSeconds(raw: string): Parsed<number> {
  const match = /^(\d{1,5})(s|m|h)?$/.exec(raw.trim().toLowerCase());
  if (!match) return fail(`"${raw}" is not a duration such as 300s, 15m or 1h`);
  const seconds = Number(match[1]) * ({ s: 1, m: 60, h: 3600 }[match[2] ?? 's'] ?? 1);
  return seconds >= 1 && seconds <= 86_400 ? ok(seconds) : fail(`${raw} is outside 1s..24h`);
}

/** on/off labels. */
export function parseSwitch(raw: string): Parsed<boolean> {
  const value = raw.trim().toLowerCase();
  if (['on', 'true', 'yes', '1'].includes(value)) return ok(true);
  if (['off', 'false', 'no', '0'].includes(value)) return ok(false);
  return fail(`"${raw}" is not on or off`);
}

// The grammar of the access, limit, header and redirect labels (issue 14). Like labels.ts: every value becomes a
// typed field or a reason; nothing a label says reaches nginx except through these fields and the quoting filter.
import { isIPv4, isIPv6 } from 'node:net';
import type { Parsed } from './labels.ts';
import { parseHsts, parsePath } from './labels.ts';

const ok = <T>(value: T): Parsed<T> => ({ ok: true, value });
const fail = <T>(reason: string): Parsed<T> => ({ ok: false, reason });

/** Split a comma list, trimmed, blanks dropped. */
function items(raw: string): string[] {
  return raw
    .split(',')
    .map((item) => item.trim())
    .filter((item) => item !== '');
}

// ---- client addresses -------------------------------------------------------------------------------------

/** NETWORK_ACCESS with nginx-proxy's two values. */
export type NetworkAccess = 'internal' | 'external';

export function parseNetworkAccess(raw: string): Parsed<NetworkAccess> {
  const value = raw.trim().toLowerCase();
  if (value === 'internal' || value === 'external') return ok(value);
  return fail(`"${raw}" is not internal or external; use swarmgate.allow for other address lists`);
}

/** nginx-proxy's network_internal.conf: RFC 1918, loopback and IPv6 unique-local and loopback. */
export const INTERNAL_RANGES: readonly string[] = [
  '127.0.0.0/8',
  '10.0.0.0/8',
  '172.16.0.0/12',
  '192.168.0.0/16',
  '::1/128',
  'fc00::/7',
];

function ipv4Bytes(address: string): number[] {
  return address.split('.').map(Number);
}

function ipv6Bytes(address: string): number[] | null {
  let text = address.toLowerCase();
  let tail: number[] = [];
  const lastColon = text.lastIndexOf(':');
  if (text.includes('.')) {
    const v4 = text.slice(lastColon + 1);
    if (!isIPv4(v4)) return null;
    tail = ipv4Bytes(v4);
    text = `${text.slice(0, lastColon + 1)}0:0`;
  }
  const [head = '', rest] = text.split('::');
  const headGroups = head === '' ? [] : head.split(':');
  const restGroups = rest === undefined || rest === '' ? [] : rest.split(':');
  const missing = 8 - headGroups.length - restGroups.length;
  const groups =
    rest === undefined ? headGroups : [...headGroups, ...Array<string>(missing).fill('0'), ...restGroups];
  if (groups.length !== 8) return null;
  const bytes = groups.flatMap((group) => {
    const value = parseInt(group, 16);
    return [value >> 8, value & 0xff];
  });
  if (tail.length === 4) bytes.splice(12, 4, ...tail);
  return bytes;
}

/** One address or CIDR range, canonical (lower case, no host bits), as nginx's allow/deny and set_real_ip_from take. */
export function parseCidr(raw: string): Parsed<string> {
  const value = raw.trim().toLowerCase();
  const match = /^([0-9a-f:.]{2,45})(?:\/(\d{1,3}))?$/.exec(value);
  const address = match?.[1] ?? '';
  const v4 = isIPv4(address);
  if (!match || (!v4 && !isIPv6(address))) {
    return fail(`"${raw}" is not an IPv4 or IPv6 address or CIDR range (e.g. 192.168.0.0/16, fd00::/8)`);
  }
  const bits = v4 ? 32 : 128;
  const prefix = match[2] === undefined ? bits : Number(match[2]);
  if (prefix > bits) return fail(`"${raw}": a prefix length is at most ${bits}`);
  const bytes = v4 ? ipv4Bytes(address) : ipv6Bytes(address);
  if (!bytes) return fail(`"${raw}" is not an IPv6 address nginx reads`);
  for (let bit = prefix; bit < bits; bit++) {
    if (((bytes[bit >> 3] ?? 0) >> (7 - (bit & 7))) & 1) {
      return fail(`"${raw}" has bits set after the /${prefix} prefix; write the range's first address`);
    }
  }
  return ok(match[2] === undefined ? address : `${address}/${prefix}`);
}

/** swarmgate.allow / swarmgate.deny and SWARMGATE_TRUSTED_PROXIES: a comma list of addresses or ranges. */
export function parseCidrList(raw: string): Parsed<string[]> {
  const entries = items(raw);
  if (entries.length === 0) return fail('no address or range given');
  if (entries.length > 256) return fail('at most 256 addresses or ranges');
  const out: string[] = [];
  const reasons: string[] = [];
  for (const entry of entries) {
    const parsed = parseCidr(entry);
    if (parsed.ok) {
      if (!out.includes(parsed.value)) out.push(parsed.value);
    } else reasons.push(parsed.reason);
  }
  return reasons.length > 0 ? fail(reasons.join('; ')) : ok(out);
}

// ---- files named in labels (Docker configs) ----------------------------------------------------------------

/** A Docker config name (Docker allows [a-zA-Z0-9][a-zA-Z0-9_.-]*, at most 64 characters). */
export function parseConfigName(raw: string): Parsed<string> {
  const value = raw.trim();
  return /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/.test(value) && !value.includes('..')
    ? ok(value)
    : fail(`"${raw}" is not a Docker config name (letters, digits, _ . -, at most 64)`);
}

/** The hashes nginx checks itself ({SHA}, $apr1$) or through libcrypt (bcrypt, SHA-crypt). */
const HTPASSWD_HASHES: readonly { readonly name: string; readonly pattern: RegExp }[] = [
  { name: 'bcrypt', pattern: /^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$/ },
  { name: 'apr1', pattern: /^\$apr1\$[./0-9A-Za-z]{1,8}\$[./0-9A-Za-z]{22}$/ },
  { name: 'sha', pattern: /^\{SHA\}[A-Za-z0-9+/]{27}=$/ },
  { name: 'sha-crypt', pattern: /^\$[56]\$(?:rounds=\d{4,9}\$)?[./0-9A-Za-z]{1,16}\$[./0-9A-Za-z]{43,86}$/ },
];

export interface Htpasswd {
  /** The file as nginx reads it: one user:hash per line, comments and blanks removed. */
  readonly content: string;
  readonly users: number;
  /** Unsalted {SHA} entries: accepted (nginx-proxy users have them) but reported. */
  readonly weak: readonly string[];
}

/**
 * An htpasswd file from a Docker config. Plain-text passwords ({PLAIN}, or a line nginx would compare as is) and
 * DES crypt (8 characters of password) are refused: the file would protect nothing worth the name.
 */
export function parseHtpasswd(text: string): Parsed<Htpasswd> {
  if (text.length > 1_048_576) return fail('the htpasswd file is larger than 1 MiB');
  const lines: string[] = [];
  const weak: string[] = [];
  const seen = new Set<string>();
  let number = 0;
  for (const rawLine of text.split(/\r?\n/)) {
    number++;
    const line = rawLine.trim();
    if (line === '' || line.startsWith('#')) continue;
    const colon = line.indexOf(':');
    const user = line.slice(0, colon);
    const hash = line.slice(colon + 1).split(':')[0] ?? '';
    if (colon <= 0 || !/^[\x21-\x39\x3b-\x7e]{1,255}$/.test(user)) {
      return fail(`htpasswd line ${number} is not user:hash`);
    }
    const kind = HTPASSWD_HASHES.find((candidate) => candidate.pattern.test(hash));
    if (!kind) {
      return fail(
        `htpasswd line ${number} (user "${user}"): the password is not hashed with bcrypt, apr1 or sha (create it with "htpasswd -B")`,
      );
    }
    if (seen.has(user)) return fail(`htpasswd line ${number}: user "${user}" appears twice`);
    seen.add(user);
    if (kind.name === 'sha') weak.push(user);
    lines.push(`${user}:${hash}`);
  }
  if (lines.length === 0) return fail('the htpasswd file names no user');
  return ok({ content: `${lines.join('\n')}\n`, users: lines.length, weak });
}

/** An error page: HTML shown for 502, 503 and 504, from a Docker config. */
export function parseErrorPage(text: string): Parsed<string> {
  if (text.length === 0) return fail('the error page is empty');
  if (text.length > 65_536) return fail('the error page is larger than 64 KiB');
  return ok(text);
}

// ---- forward auth -------------------------------------------------------------------------------------------

export interface ForwardAuthTarget {
  /** host:port on the overlay, resolved by nginx at request time through Docker's DNS. */
  readonly authority: string;
  readonly path: string;
}

/** swarmgate.auth.forward: http://<service or alias on the edge network>[:port][/path]. */
export function parseForwardAuthUrl(raw: string): Parsed<ForwardAuthTarget> {
  const value = raw.trim();
  const match = /^http:\/\/([a-z0-9](?:[a-z0-9_.-]{0,251}[a-z0-9])?)(?::(\d{1,5}))?(\/[^?#]*)?$/i.exec(value);
  if (!match) {
    return fail(
      `"${raw}" is not http://<service>[:port][/path] (the auth service is reached over the edge network, plain HTTP)`,
    );
  }
  const port = match[2] === undefined ? 80 : Number(match[2]);
  if (port < 1 || port > 65535) return fail(`${port} is outside 1..65535`);
  const path = match[3] ?? '/';
  const parsedPath = parsePath(path);
  if (!parsedPath.ok || parsedPath.value.kind !== 'prefix') {
    return fail(`the path of "${raw}" must use only letters, digits and ._~!*+,=:@%/-`);
  }
  return ok({ authority: `${(match[1] ?? '').toLowerCase()}:${port}`, path });
}

const HEADER_NAME = /^[A-Za-z0-9][A-Za-z0-9-]{0,63}$/;

/** A comma list of header names (swarmgate.auth.forward.headers, CORS headers). */
export function parseHeaderNames(raw: string): Parsed<string[]> {
  const entries = items(raw);
  if (entries.length === 0) return fail('no header name given');
  if (entries.length > 32) return fail('at most 32 header names');
  const bad = entries.filter((entry) => !HEADER_NAME.test(entry));
  if (bad.length > 0) return fail(`not header names: ${bad.map((entry) => `"${entry}"`).join(', ')}`);
  return ok([...new Set(entries)]);
}

/** $upstream_http_<name>: nginx's variable for a response header of the auth sub-request. */
export function headerVariable(name: string): string {
  return name.toLowerCase().replace(/-/g, '_');
}

// ---- limits -------------------------------------------------------------------------------------------------

export interface Rate {
  readonly count: number;
  readonly per: 's' | 'm';
}

/** swarmgate.rate-limit: requests per second or minute per client address, "10r/s" or "600r/m". */
export function parseRate(raw: string): Parsed<Rate> {
  const match = /^(\d{1,6})\s*(?:r\/|\/)?(s|m|sec|min)$/.exec(raw.trim().toLowerCase());
  if (!match) return fail(`"${raw}" is not a rate such as 10r/s or 600r/m`);
  const count = Number(match[1]);
  if (count < 1 || count > 100_000) return fail(`${count} is outside 1..100000`);
  return ok({ count, per: match[2]?.startsWith('s') ? 's' : 'm' });
}

export function parseCount(min: number, max: number) {
  return (raw: string): Parsed<number> => {
    const value = raw.trim();
    if (!/^\d{1,9}$/.test(value)) return fail(`"${raw}" is not a whole number`);
    const n = Number(value);
    return n >= min && n <= max ? ok(n) : fail(`${n} is outside ${min}..${max}`);
  };
}

// ---- headers, CORS, redirects -------------------------------------------------------------------------------

export interface ResponseHeader {
  readonly name: string;
  readonly value: string;
}

/** Headers swarmgate itself sets or that decide routing and framing; a label may not add them. */
const RESERVED_HEADERS = new Set([
  'strict-transport-security',
  'content-length',
  'transfer-encoding',
  'connection',
  'content-encoding',
  'location',
  'set-cookie',
  'host',
  'upgrade',
  'alt-svc',
]);

/** swarmgate.header.<Name>=<value>: a response header added to every answer of the route. */
export function parseResponseHeader(name: string, raw: string): Parsed<ResponseHeader> {
  if (!HEADER_NAME.test(name)) return fail(`"${name}" is not a header name (letters, digits, -)`);
  if (RESERVED_HEADERS.has(name.toLowerCase()) || name.toLowerCase().startsWith('access-control-')) {
    return fail(`${name} is set by swarmgate (HSTS, CORS labels) or by the service, not by a header label`);
  }
  const value = raw.trim();
  if (value.length === 0 || value.length > 1024) return fail('a header value is 1 to 1024 characters');
  // Printable ASCII only: no control character can end the directive or the header line, and nginx variables
  // ("$") are not expanded from a label.
  if (!/^[\x20-\x7e]+$/.test(value) || value.includes('$')) {
    return fail(`the value of ${name} must be printable ASCII without "$"`);
  }
  return ok({ name, value });
}

/** The security-headers preset (swarmgate.security-headers=on). HSTS stays with the HSTS label. */
export const SECURITY_HEADERS: readonly ResponseHeader[] = [
  { name: 'X-Content-Type-Options', value: 'nosniff' },
  { name: 'X-Frame-Options', value: 'SAMEORIGIN' },
  { name: 'Referrer-Policy', value: 'strict-origin-when-cross-origin' },
  { name: 'Permissions-Policy', value: 'camera=(), microphone=(), geolocation=()' },
  { name: 'Cross-Origin-Opener-Policy', value: 'same-origin' },
];

/** An origin: scheme://host[:port] with no path, as CORS and redirects compare it. */
export function parseOrigin(raw: string): Parsed<string> {
  const value = raw.trim().replace(/\/$/, '');
  const match = /^(https?):\/\/([a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?)(?::(\d{1,5}))?$/i.exec(value);
  if (!match) return fail(`"${raw}" is not an origin such as https://app.example.com`);
  if (match[3] !== undefined && (Number(match[3]) < 1 || Number(match[3]) > 65535)) {
    return fail(`${match[3]} is outside 1..65535`);
  }
  return ok(value.toLowerCase());
}

export interface Cors {
  /** "*" or the exact origins allowed. */
  readonly origins: '*' | readonly string[];
}

/** swarmgate.cors.origins: "*" or a comma list of origins. */
export function parseCorsOrigins(raw: string): Parsed<'*' | string[]> {
  if (raw.trim() === '*') return ok('*');
  const entries = items(raw);
  if (entries.length === 0) return fail('no origin given');
  if (entries.length > 64) return fail('at most 64 origins');
  const out: string[] = [];
  for (const entry of entries) {
    const parsed = parseOrigin(entry);
    if (!parsed.ok) return parsed;
    out.push(parsed.value);
  }
  return ok([...new Set(out)]);
}

const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'];

export function parseMethods(raw: string): Parsed<string[]> {
  const entries = items(raw).map((entry) => entry.toUpperCase());
  if (entries.length === 0) return fail('no method given');
  const bad = entries.filter((entry) => !METHODS.includes(entry));
  return bad.length > 0
    ? fail(`not one of ${METHODS.join(', ')}: ${bad.join(', ')}`)
    : ok([...new Set(entries)]);
}

/** A regex that matches exactly these origins (each literal escaped), for nginx's $http_origin test. */
export function originsRegex(origins: readonly string[]): string {
  return `^(${origins.map((origin) => origin.replace(/[.*+?^${}()|[\]\\-]/g, '\\$&')).join('|')})$`;
}

/** swarmgate.redirect: the origin every request of the route is sent to, permanently, path and query kept. */
export function parseRedirectTarget(raw: string): Parsed<string> {
  return parseOrigin(raw);
}

export type WwwRedirect = 'to-www' | 'to-apex';

export function parseWwwRedirect(raw: string): Parsed<WwwRedirect | null> {
  const value = raw.trim().toLowerCase();
  if (value === 'to-www' || value === 'to-apex') return ok(value);
  if (value === 'off') return ok(null);
  return fail(`"${raw}" is not to-www, to-apex or off`);
}

// ---- TLS settings nginx-proxy and acme-companion users bring ------------------------------------------------

/** HSTS as nginx-proxy users write it: any order, any case, a trailing ";"; normalised to max-age first. */
export function parseHstsLenient(raw: string): Parsed<string | null> {
  const value = raw.trim();
  if (value.toLowerCase() === 'off') return ok(null);
  const parts = value
    .split(';')
    .map((part) => part.trim())
    .filter((part) => part !== '');
  const maxAge = parts.filter((part) => /^max-age\s*=\s*"?\d{1,10}"?$/i.test(part));
  if (maxAge.length !== 1) return fail(`"${raw}" must be "off" or contain one max-age=<seconds>`);
  const age = /\d+/.exec(maxAge[0] ?? '')?.[0] ?? '0';
  const flags = parts.filter((part) => part !== maxAge[0]);
  const canonical = flags.map((flag) =>
    flag.toLowerCase() === 'includesubdomains' ? 'includeSubDomains' : flag.toLowerCase(),
  );
  return parseHsts([`max-age=${age}`, ...canonical].join('; '));
}

/** LETSENCRYPT_TEST=true: the staging directory for this certificate. */
export function parseBoolean(raw: string): Parsed<boolean> {
  const value = raw.trim().toLowerCase();
  if (['true', '1', 'yes', 'on'].includes(value)) return ok(true);
  if (['false', '0', 'no', 'off'].includes(value)) return ok(false);
  return fail(`"${raw}" is not true or false`);
}

/** ACME_CA_URI: an https ACME directory URL. */
export function parseDirectoryUrl(raw: string): Parsed<string> {
  const value = raw.trim();
  return /^https:\/\/[A-Za-z0-9.-]+(?::\d{1,5})?(\/[A-Za-z0-9._~!*+,=:@%/-]*)?$/.test(value) &&
    value.length <= 512
    ? ok(value)
    : fail(`"${raw}" is not an https:// ACME directory URL`);
}

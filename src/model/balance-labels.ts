// The grammar of the balancing labels (issue 15): method, hash key, sticky cookie, canary weight, retry policy.
// Like labels.ts: every value becomes a typed field or a reason. The names that reach the Lua balancer (header and
// cookie names) are limited to [A-Za-z0-9_-], so they can be written into a Lua string and an nginx variable
// name without quoting.
import type { Parsed } from './labels.ts';

const ok = <T>(value: T): Parsed<T> => ({ ok: true, value });
const fail = <T>(reason: string): Parsed<T> => ({ ok: false, reason });

export type BalanceMethod = 'round_robin' | 'least_conn' | 'hash';
export const BALANCE_METHODS: readonly BalanceMethod[] = ['round_robin', 'least_conn', 'hash'];

export function parseBalanceMethod(raw: string): Parsed<BalanceMethod> {
  const value = raw.trim().toLowerCase().replace(/-/g, '_');
  return (BALANCE_METHODS as readonly string[]).includes(value)
    ? ok(value as BalanceMethod)
    : fail(`"${raw}" is not one of ${BALANCE_METHODS.join(', ')}`);
}

/** What swarmgate.balance=hash hashes: the client's address, a request header or a cookie. */
export type HashKey =
  | { readonly kind: 'client_ip' }
  | { readonly kind: 'header'; readonly name: string }
  | { readonly kind: 'cookie'; readonly name: string };

// A header name the Lua reads as ngx.var.http_<name> (lower case, "-" → "_").
const HEADER_NAME = /^[A-Za-z0-9][A-Za-z0-9-]{0,63}$/;
// A cookie name: RFC 6265 allows more, but these also make a valid nginx $cookie_<name> and a plain Lua string.
const COOKIE_NAME = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;

export function parseHashKey(raw: string): Parsed<HashKey> {
  const value = raw.trim();
  if (value.toLowerCase() === 'client_ip') return ok({ kind: 'client_ip' });
  const colon = value.indexOf(':');
  const kind = value.slice(0, colon).toLowerCase();
  const name = value.slice(colon + 1).trim();
  if (colon > 0 && kind === 'header') {
    return HEADER_NAME.test(name)
      ? ok({ kind: 'header', name })
      : fail(`"${name}" is not a header name (letters, digits, -; at most 64)`);
  }
  if (colon > 0 && kind === 'cookie') {
    return COOKIE_NAME.test(name)
      ? ok({ kind: 'cookie', name })
      : fail(`"${name}" is not a cookie name (letters, digits, _ -; at most 64)`);
  }
  return fail(`"${raw}" is not client_ip, header:<Name> or cookie:<name>`);
}

/** swarmgate.sticky: only cookie stickiness exists; "off" says so explicitly. */
export function parseSticky(raw: string): Parsed<boolean> {
  const value = raw.trim().toLowerCase();
  if (value === 'cookie') return ok(true);
  if (value === 'off' || value === 'none') return ok(false);
  return fail(`"${raw}" is not cookie or off`);
}

export function parseCookieName(raw: string): Parsed<string> {
  const value = raw.trim();
  return COOKIE_NAME.test(value)
    ? ok(value)
    : fail(`"${raw}" is not a cookie name (letters, digits, _ -; at most 64)`);
}

/** swarmgate.sticky.max_age: how long the browser keeps the cookie; "session" (or 0): until it closes. */
export function parseCookieMaxAge(raw: string): Parsed<number | null> {
  const value = raw.trim().toLowerCase();
  if (value === 'session' || value === '0') return ok(null);
  const match = /^(\d{1,7})(s|m|h|d)?$/.exec(value);
  if (!match) return fail(`"${raw}" is not a duration such as 3600, 30m, 12h, 7d, or session`);
  const seconds = Number(match[1]) * ({ s: 1, m: 60, h: 3600, d: 86_400 }[match[2] ?? 's'] ?? 1);
  return seconds >= 1 && seconds <= 31_536_000 ? ok(seconds) : fail(`${raw} is outside 1s..365d`);
}

/** The most a canary weight may be; the split is relative, so 90/10 and 9/1 are the same. */
export const MAX_WEIGHT = 1000;

/** swarmgate.weight: this service's share of a host and path it shares with other weighted services. */
export function parseWeight(raw: string): Parsed<number> {
  const value = raw.trim();
  if (!/^\d{1,4}$/.test(value)) return fail(`"${raw}" is not a whole number 0..${MAX_WEIGHT}`);
  const weight = Number(value);
  return weight <= MAX_WEIGHT ? ok(weight) : fail(`${weight} is outside 0..${MAX_WEIGHT}`);
}

/** The most tries nginx is configured for (proxy_next_upstream_tries in templates/nginx.conf.njk). */
export const MAX_RETRY_TRIES = 24;

/** swarmgate.retry.tries: tries per request in all (1: never retried), at most the edge's own bound. */
export function parseRetryTries(raw: string): Parsed<number> {
  const value = raw.trim();
  if (!/^\d{1,3}$/.test(value)) return fail(`"${raw}" is not a whole number 1..${MAX_RETRY_TRIES}`);
  const tries = Number(value);
  return tries >= 1 && tries <= MAX_RETRY_TRIES
    ? ok(tries)
    : fail(`${tries} is outside 1..${MAX_RETRY_TRIES} (1: no retry)`);
}

/** swarmgate.retry.timeout: how long a request may spend trying tasks, in milliseconds (100ms..5m). */
export function parseRetryTimeout(raw: string): Parsed<number> {
  const match = /^(\d{1,6})(ms|s|m)?$/.exec(raw.trim().toLowerCase());
  if (!match) return fail(`"${raw}" is not a duration such as 500ms, 5s or 1m`);
  const ms = Number(match[1]) * ({ ms: 1, s: 1000, m: 60_000 }[match[2] ?? 's'] ?? 1000);
  return ms >= 100 && ms <= 300_000 ? ok(ms) : fail(`${raw} is outside 100ms..5m`);
}

/**
 * Active health checks (swarmgate.healthcheck.*): each edge sends GET <path> to every task of the service, every
 * interval, and stops routing to a task that fails `fails` checks in a row until it passes `passes` in a row.
 */
export interface HealthCheck {
  /** Origin-form target of the probe (path and query), characters that need no quoting in Lua or a request line. */
  readonly path: string;
  readonly intervalMs: number;
  /** Always below intervalMs: a probe ends before the next one of the same task is due. */
  readonly timeoutMs: number;
  /** Accepted statuses as inclusive ranges ([200, 399] for the default 2xx/3xx). */
  readonly status: readonly (readonly [number, number])[];
  readonly fails: number;
  readonly passes: number;
}

export const HEALTH_LABELS = [
  'swarmgate.healthcheck.path',
  'swarmgate.healthcheck.interval',
  'swarmgate.healthcheck.timeout',
  'swarmgate.healthcheck.status',
  'swarmgate.healthcheck.fails',
  'swarmgate.healthcheck.passes',
] as const;

export const HEALTH_INTERVAL_MS = { min: 1000, max: 60_000, default: 5000 } as const;
export const HEALTH_TIMEOUT_MS = { min: 100, default: 2000 } as const;
export const HEALTH_COUNT_MAX = 10;
export const HEALTH_STATUS_DEFAULT: HealthCheck['status'] = [[200, 399]];

// No quote, backslash, space or control character: the path goes into a Lua string and an HTTP request line as is.
const HEALTH_PATH = /^\/[A-Za-z0-9._~!$&()*+,;=:@%/?-]{0,255}$/;

/** swarmgate.healthcheck.path: the probe's target, e.g. /healthz or /status?full=0. */
export function parseHealthPath(raw: string): Parsed<string> {
  const value = raw.trim();
  return HEALTH_PATH.test(value)
    ? ok(value)
    : fail(
        `"${raw}" is not a path such as /healthz (starts with /, at most 256 URL characters, no quotes or spaces)`,
      );
}

function durationMs(raw: string): number | null {
  const match = /^(\d{1,6})(ms|s|m)?$/.exec(raw.trim().toLowerCase());
  if (!match) return null;
  return Number(match[1]) * ({ ms: 1, s: 1000, m: 60_000 }[match[2] ?? 's'] ?? 1000);
}

/** swarmgate.healthcheck.interval: time between two probes of one task, 1s..60s. */
export function parseHealthInterval(raw: string): Parsed<number> {
  const ms = durationMs(raw);
  if (ms === null) return fail(`"${raw}" is not a duration such as 5s, 1500ms or 1m`);
  return ms >= HEALTH_INTERVAL_MS.min && ms <= HEALTH_INTERVAL_MS.max
    ? ok(ms)
    : fail(`${raw} is outside 1s..60s`);
}

/** swarmgate.healthcheck.timeout: how long a probe may take (connect, send, status line); below the interval. */
export function parseHealthTimeout(raw: string): Parsed<number> {
  const ms = durationMs(raw);
  if (ms === null) return fail(`"${raw}" is not a duration such as 2s or 500ms`);
  return ms >= HEALTH_TIMEOUT_MS.min && ms < HEALTH_INTERVAL_MS.max
    ? ok(ms)
    : fail(`${raw} is outside 100ms..59s`);
}

/** swarmgate.healthcheck.status: statuses and classes that pass, e.g. 200, 2xx or 200,204,3xx (at most 8). */
export function parseHealthStatus(raw: string): Parsed<HealthCheck['status']> {
  const items = raw
    .split(',')
    .map((item) => item.trim().toLowerCase())
    .filter((item) => item !== '');
  if (items.length === 0 || items.length > 8) return fail(`"${raw}" is not 1 to 8 statuses such as 200, 2xx`);
  const ranges: [number, number][] = [];
  for (const item of items) {
    const klass = /^([1-5])xx$/.exec(item);
    if (klass) {
      const hundred = Number(klass[1]) * 100;
      ranges.push([hundred, hundred + 99]);
    } else if (/^[1-5]\d\d$/.test(item)) ranges.push([Number(item), Number(item)]);
    else return fail(`"${item}" is not a status (100..599) or a class (2xx)`);
  }
  ranges.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  return ok(ranges);
}

/** swarmgate.healthcheck.fails and .passes: checks in a row that take a task out, or put it back (1..10). */
export function parseHealthCount(raw: string): Parsed<number> {
  const value = raw.trim();
  if (!/^\d{1,2}$/.test(value)) return fail(`"${raw}" is not a whole number 1..${HEALTH_COUNT_MAX}`);
  const count = Number(value);
  return count >= 1 && count <= HEALTH_COUNT_MAX
    ? ok(count)
    : fail(`${count} is outside 1..${HEALTH_COUNT_MAX}`);
}

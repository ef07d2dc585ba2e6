// Login sessions for the status page. A browser cannot send the bearer token on an EventSource, so the admin
// token is typed once into a login form and exchanged for a random session id in an HttpOnly, Secure,
// SameSite=Strict cookie: scripts cannot read it, it never travels over plain HTTP, and no other site's page can
// make the browser send it. Only a hash of each id is kept, in memory: a controller restart signs everyone out.
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Clock } from '../../reconcile/clock.ts';

export const SESSION_COOKIE = 'swarmgate_session';
/** Cookies are sent only to the status page's own paths. */
export const SESSION_PATH = '/status';
const MAX_SESSIONS = 64;

const digest = (text: string): Buffer => createHash('sha256').update(text).digest();

/** Constant-time comparison of a typed token with the admin token. */
export function tokenMatches(presented: string, expected: string): boolean {
  return presented.length > 0 && timingSafeEqual(digest(presented), digest(expected));
}

export function cookieValue(req: IncomingMessage, name: string): string | null {
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const at = part.indexOf('=');
    if (at > 0 && part.slice(0, at).trim() === name) return part.slice(at + 1).trim();
  }
  return null;
}

export class StatusSessions {
  private readonly clock: Clock;
  private readonly ttlMs: number;
  /** sha256(session id) in hex → expiry (ms). */
  private readonly sessions = new Map<string, number>();

  constructor(clock: Clock, ttlMs: number) {
    this.clock = clock;
    this.ttlMs = ttlMs;
  }

  /** A new session; the Set-Cookie header value that carries it. */
  create(): string {
    const now = this.clock.now();
    for (const [key, expiry] of this.sessions) if (expiry <= now) this.sessions.delete(key);
    // Bounded: the oldest session goes first (Map keeps insertion order).
    while (this.sessions.size >= MAX_SESSIONS) {
      const oldest = this.sessions.keys().next().value;
      if (oldest === undefined) break;
      this.sessions.delete(oldest);
    }
    const id = randomBytes(32).toString('base64url');
    this.sessions.set(digest(id).toString('hex'), now + this.ttlMs);
    return `${SESSION_COOKIE}=${id}; Path=${SESSION_PATH}; Max-Age=${Math.floor(this.ttlMs / 1000)}; HttpOnly; Secure; SameSite=Strict`;
  }

  valid(req: IncomingMessage): boolean {
    const id = cookieValue(req, SESSION_COOKIE);
    if (!id || !/^[A-Za-z0-9_-]{43}$/.test(id)) return false;
    const expiry = this.sessions.get(digest(id).toString('hex'));
    return expiry !== undefined && expiry > this.clock.now();
  }

  /** Ends the request's session; the Set-Cookie header value that clears the cookie. */
  end(req: IncomingMessage): string {
    const id = cookieValue(req, SESSION_COOKIE);
    if (id) this.sessions.delete(digest(id).toString('hex'));
    return `${SESSION_COOKIE}=; Path=${SESSION_PATH}; Max-Age=0; HttpOnly; Secure; SameSite=Strict`;
  }
}

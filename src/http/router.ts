// A tiny router: method + path pattern ("/v1/services/:name") → handler. Unknown paths get a coded 404.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { SwarmgateError } from '../errors.ts';
import { sendError } from './json-http.ts';

export interface RouteContext {
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  readonly params: Readonly<Record<string, string>>;
  readonly query: URLSearchParams;
  /** Aborts when the client goes away. */
  readonly signal: AbortSignal;
}

export type RouteHandler = (context: RouteContext) => Promise<void> | void;

interface Route {
  readonly method: string;
  readonly path: string;
  readonly pattern: RegExp;
  readonly names: readonly string[];
  readonly handler: RouteHandler;
}

export class Router {
  private readonly routes: Route[] = [];

  add(method: string, path: string, handler: RouteHandler): this {
    const names: string[] = [];
    const source = path
      .split('/')
      .map((part) => {
        if (part === '*') {
          names.push('*');
          return '(.+)';
        }
        if (!part.startsWith(':')) return part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
        names.push(part.slice(1));
        return '([^/]+)';
      })
      .join('/');
    this.routes.push({ method, path, pattern: new RegExp(`^${source}$`), names, handler });
    return this;
  }

  /** Every registered method and path pattern, in registration order (tests walk them). */
  list(): { readonly method: string; readonly path: string }[] {
    return this.routes.map(({ method, path }) => ({ method, path }));
  }

  async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const abort = new AbortController();
    res.on('close', () => abort.abort());
    try {
      const url = plainTarget(req.url ?? '');
      let pathMatched = false;
      for (const route of this.routes) {
        const match = route.pattern.exec(url.pathname);
        if (!match) continue;
        pathMatched = true;
        if (route.method !== req.method) continue;
        const params: Record<string, string> = {};
        route.names.forEach((name, index) => {
          params[name] = decodeURIComponent(match[index + 1] ?? '');
        });
        await route.handler({ req, res, params, query: url.searchParams, signal: abort.signal });
        return;
      }
      throw pathMatched
        ? new SwarmgateError(
            'ERR_BAD_REQUEST',
            `method ${req.method ?? ''} is not allowed on ${url.pathname}`,
          )
        : new SwarmgateError('ERR_NOT_FOUND', `no route ${url.pathname}`);
    } catch (error) {
      if (!res.headersSent) sendError(res, error);
      else res.destroy();
    }
  }
}

/**
 * The request target as a URL, only when it is a plain origin-form path that the WHATWG parser keeps as sent.
 * That parser treats a backslash as `/`, resolves `.`/`..` segments (also as %2e) and reads `//host/...` as a host, so an
 * odd target could name another route than the one a proxy in front matched (review F6). Such targets are refused
 * rather than normalised, and so are encoded separators (%2f, %5c), which no route needs.
 */
export function plainTarget(target: string): URL {
  const refuse = (why: string): never => {
    throw new SwarmgateError('ERR_REQUEST_TARGET', `request target refused: ${why}`);
  };
  const query = target.indexOf('?');
  const path = query < 0 ? target : target.slice(0, query);
  if (!path.startsWith('/')) refuse('not a path');
  if (path.includes('\\')) refuse('backslash');
  if (/%(?:2f|5c)/i.test(path)) refuse('encoded slash or backslash');
  if (path.includes('//')) refuse('empty segment');
  const segments = path.split('/').map((segment) => segment.replace(/%2e/gi, '.'));
  if (segments.some((segment) => segment === '.' || segment === '..')) refuse('dot segment');
  const url = new URL(target, 'http://controller');
  // Anything else the parser would rewrite is refused too: the route is matched on exactly what was sent.
  if (url.pathname !== path) refuse('not in canonical form');
  return url;
}

// Browsing a Docker registry (HTTP API v2) with stored credentials: catalog and tags, with paging. Basic auth
// first; on a Bearer challenge, the token flow, with tokens cached per scope until they expire.
import http from 'node:http';
import https from 'node:https';
import { SwarmgateError } from '../errors.ts';
import type { Clock } from '../reconcile/clock.ts';
import type { StoredCredential } from './credential-store.ts';

export interface Page<T> {
  readonly items: T[];
  /** Pass as `last` to get the next page; null on the last page. */
  readonly next: string | null;
}

interface RawResponse {
  readonly status: number;
  readonly headers: http.IncomingHttpHeaders;
  readonly body: string;
}

export type RegistryTransport = (
  url: URL,
  headers: Record<string, string>,
  caPem: string | null,
  signal: AbortSignal,
) => Promise<RawResponse>;

const MAX_BODY = 4 * 1024 * 1024;

/** GET over https (or http for a plain-HTTP registry), with an optional extra CA, bounded in size and time. */
export const httpsTransport: RegistryTransport = (url, headers, caPem, signal) =>
  new Promise((resolve, reject) => {
    const client = url.protocol === 'http:' ? http : https;
    const req = client.request(
      url,
      {
        method: 'GET',
        headers,
        signal,
        timeout: 15_000,
        ...(caPem && url.protocol === 'https:' ? { ca: caPem } : {}),
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          body += chunk;
          if (body.length > MAX_BODY) req.destroy(new Error('registry answer too large'));
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      },
    );
    req.on('timeout', () => req.destroy(new Error('registry did not answer within 15 s')));
    req.on('error', reject);
    req.end();
  });

/** `Bearer realm="https://auth/token",service="registry",scope="registry:catalog:*"` → its parameters. */
export function parseChallenge(header: string): { scheme: string; params: Record<string, string> } {
  const space = header.indexOf(' ');
  const scheme = (space < 0 ? header : header.slice(0, space)).trim().toLowerCase();
  const params: Record<string, string> = {};
  const pattern = /([A-Za-z]+)="([^"]*)"/g;
  for (let match = pattern.exec(header); match; match = pattern.exec(header)) {
    if (match[1] && match[2] !== undefined) params[match[1].toLowerCase()] = match[2];
  }
  return { scheme, params };
}

/** The `last` parameter of a `Link: </v2/_catalog?last=x&n=100>; rel="next"` header. */
export function nextFromLink(link: string | undefined): string | null {
  if (!link || !/rel="?next"?/.test(link)) return null;
  const target = /<([^>]+)>/.exec(link)?.[1];
  if (!target) return null;
  return new URL(target, 'http://registry').searchParams.get('last');
}

export class RegistryClient {
  private readonly transport: RegistryTransport;
  private readonly clock: Clock;
  private readonly tokens = new Map<string, { token: string; expiresAt: number }>();

  constructor(transport: RegistryTransport, clock: Clock) {
    this.transport = transport;
    this.clock = clock;
  }

  async catalog(
    credential: StoredCredential,
    n: number,
    last: string | null,
    signal: AbortSignal,
  ): Promise<Page<string>> {
    const url = this.url(credential, '/v2/_catalog', n, last);
    const response = await this.get(credential, url, 'registry:catalog:*', signal);
    const body = parseJson(response.body) as { repositories?: string[] };
    return { items: body.repositories ?? [], next: nextFromLink(header(response.headers.link)) };
  }

  async tags(
    credential: StoredCredential,
    repository: string,
    n: number,
    last: string | null,
    signal: AbortSignal,
  ): Promise<Page<string>> {
    const url = this.url(credential, `/v2/${repository}/tags/list`, n, last);
    const response = await this.get(credential, url, `repository:${repository}:pull`, signal);
    const body = parseJson(response.body) as { tags?: string[] | null };
    return { items: body.tags ?? [], next: nextFromLink(header(response.headers.link)) };
  }

  private url(credential: StoredCredential, path: string, n: number, last: string | null): URL {
    const url = new URL(path, `https://${credential.host}`);
    url.searchParams.set('n', String(n));
    if (last) url.searchParams.set('last', last);
    return url;
  }

  private async get(
    credential: StoredCredential,
    url: URL,
    scope: string,
    signal: AbortSignal,
  ): Promise<RawResponse> {
    const cached = this.tokens.get(`${credential.host} ${credential.username} ${scope}`);
    const authorization =
      cached && cached.expiresAt > this.clock.now()
        ? `Bearer ${cached.token}`
        : `Basic ${Buffer.from(`${credential.username}:${credential.password}`).toString('base64')}`;
    let response = await this.send(credential, url, authorization, signal);
    if (response.status === 401) {
      const challenge = parseChallenge(header(response.headers['www-authenticate']) ?? '');
      if (challenge.scheme === 'bearer' && challenge.params.realm) {
        const token = await this.fetchToken(credential, challenge.params, scope, signal);
        response = await this.send(credential, url, `Bearer ${token}`, signal);
      }
    }
    if (response.status === 401 || response.status === 403) {
      throw new SwarmgateError(
        'ERR_REGISTRY',
        `registry ${credential.host} refused the stored credentials (${response.status})`,
      );
    }
    if (response.status === 404)
      throw new SwarmgateError('ERR_NOT_FOUND', `registry ${credential.host} has no ${url.pathname}`);
    if (response.status !== 200) {
      throw new SwarmgateError(
        'ERR_REGISTRY',
        `registry ${credential.host} answered ${response.status} for ${url.pathname}`,
      );
    }
    return response;
  }

  private async send(
    credential: StoredCredential,
    url: URL,
    authorization: string,
    signal: AbortSignal,
  ): Promise<RawResponse> {
    try {
      return await this.transport(
        url,
        { authorization, accept: 'application/json' },
        credential.caPem,
        signal,
      );
    } catch (error) {
      throw new SwarmgateError(
        'ERR_REGISTRY',
        `registry ${credential.host} unreachable: ${(error as Error).message}`,
      );
    }
  }

  private async fetchToken(
    credential: StoredCredential,
    params: Record<string, string>,
    scope: string,
    signal: AbortSignal,
  ): Promise<string> {
    const realm = allowedRealm(credential, params.realm ?? '');
    if (params.service) realm.searchParams.set('service', params.service);
    realm.searchParams.set('scope', scope);
    const basic = `Basic ${Buffer.from(`${credential.username}:${credential.password}`).toString('base64')}`;
    const response = await this.send(credential, realm, basic, signal);
    if (response.status !== 200) {
      throw new SwarmgateError(
        'ERR_REGISTRY',
        `token service of ${credential.host} refused the stored credentials (${response.status})`,
      );
    }
    const body = parseJson(response.body) as { token?: string; access_token?: string; expires_in?: number };
    const token = body.token ?? body.access_token;
    if (!token)
      throw new SwarmgateError('ERR_REGISTRY', `token service of ${credential.host} returned no token`);
    // Tokens live 60 s unless the service says otherwise; renew a little early.
    const lifetimeMs = Math.max(10, body.expires_in ?? 60) * 1000;
    this.tokens.set(`${credential.host} ${credential.username} ${scope}`, {
      token,
      expiresAt: this.clock.now() + lifetimeMs - 5000,
    });
    return token;
  }
}

/** `host[:port]` as the origin it names over https, so `registry.test` and `registry.test:443` compare equal. */
function httpsOrigin(hostAndPort: string): string | null {
  try {
    const url = new URL(`https://${hostAndPort}`);
    return `${url.hostname}:${url.port || '443'}`;
  } catch {
    return null;
  }
}

/**
 * The realm of a Bearer challenge, if the stored password may go there: https only, and the registry's own host
 * or a realm host the operator stored with the credential. The registry chooses the realm, so without this check
 * it could have the password sent in clear, or to any address the controller reaches (review F13).
 */
export function allowedRealm(credential: StoredCredential, realm: string): URL {
  let url: URL;
  try {
    url = new URL(realm);
  } catch {
    throw new SwarmgateError(
      'ERR_REGISTRY_REALM',
      `registry ${credential.host} sent a token realm that is not a URL`,
    );
  }
  if (url.protocol !== 'https:') {
    throw new SwarmgateError(
      'ERR_REGISTRY_REALM',
      `registry ${credential.host} sent a token realm over ${url.protocol.replace(':', '')}; only https realms get the credentials`,
      { registry: credential.host },
    );
  }
  if (url.username || url.password) {
    throw new SwarmgateError(
      'ERR_REGISTRY_REALM',
      `registry ${credential.host} sent a token realm with user info`,
    );
  }
  const origin = `${url.hostname}:${url.port || '443'}`;
  const allowed = [credential.host, ...credential.realmHosts].map(httpsOrigin);
  if (!allowed.includes(origin)) {
    throw new SwarmgateError(
      'ERR_REGISTRY_REALM',
      `registry ${credential.host} sent the token realm host ${url.host}, which is not the registry's own host nor one of the credential's realm hosts (realmHosts)`,
      { registry: credential.host, realmHost: url.host },
    );
  }
  return url;
}

function header(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw new SwarmgateError('ERR_REGISTRY', 'the registry answered with something that is not JSON');
  }
}

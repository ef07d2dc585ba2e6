// Small JSON-over-HTTP helpers shared by the controller's API and the edge's health endpoint.
import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { isSwarmgateError, SwarmgateError } from '../errors.ts';
import type { ErrorCode } from '../errors.ts';

const STATUS_FOR_CODE: Partial<Record<ErrorCode, number>> = {
  ERR_UNAUTHORIZED: 401,
  ERR_FORBIDDEN: 403,
  ERR_NOT_FOUND: 404,
  ERR_BAD_REQUEST: 400,
  ERR_PAYLOAD_TOO_LARGE: 413,
  ERR_DOCKER_UNAVAILABLE: 503,
  ERR_DOCKER_REQUEST: 502,
  ERR_DOCKER_CONFLICT: 409,
  ERR_CONFLICT: 409,
  ERR_REGISTRY: 502,
  ERR_REQUEST_TARGET: 400,
  ERR_REGISTRY_REALM: 502,
  ERR_SERVICE_NOT_MANAGED: 403,
  // Only the lease holder writes state; the operator retries, or calls the controller that holds it.
  ERR_STATE_LEASE: 503,
};

export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(text);
}

/** Errors become `{ error: { code, message } }`; anything that is not a SwarmgateError is a 500 with no details. */
export function sendError(res: ServerResponse, error: unknown): void {
  if (isSwarmgateError(error)) {
    sendJson(res, STATUS_FOR_CODE[error.code] ?? 500, {
      error: { code: error.code, message: error.message },
    });
    return;
  }
  sendJson(res, 500, { error: { code: 'ERR_INTERNAL', message: 'internal error' } });
}

export async function readJsonBody(req: IncomingMessage, limitBytes: number): Promise<unknown> {
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > limitBytes) {
    throw new SwarmgateError('ERR_PAYLOAD_TOO_LARGE', `the body is larger than ${limitBytes} bytes`);
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limitBytes)
      throw new SwarmgateError('ERR_PAYLOAD_TOO_LARGE', `the body is larger than ${limitBytes} bytes`);
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString('utf8');
  if (text.trim() === '') return {};
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw new SwarmgateError('ERR_BAD_REQUEST', 'the body is not valid JSON');
  }
}

/** Constant-time comparison of the request's bearer token with the expected one. */
export function hasBearerToken(req: IncomingMessage, expected: string): boolean {
  const header = req.headers.authorization ?? '';
  const match = /^Bearer\s+(\S+)$/i.exec(header);
  if (!match?.[1]) return false;
  const digest = (text: string): Buffer => createHash('sha256').update(text).digest();
  return timingSafeEqual(digest(match[1]), digest(expected));
}

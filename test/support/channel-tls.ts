// Test certificates for the edge⇄controller channel, made with openssl at test time as the lab and
// scripts/create-secrets.sh make the real one: a self-signed ECDSA P-256 certificate for swarmgate-controller.
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

export interface ChannelKeyPair {
  readonly key: string;
  readonly cert: string;
  readonly keyFile: string;
  readonly certFile: string;
}

const run = promisify(execFile);

/** A fresh key pair in its own temp dir; `remove` deletes the dir. */
export async function makeChannelKeyPair(
  name = 'swarmgate-controller',
): Promise<ChannelKeyPair & { remove: () => Promise<void> }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'swarmgate-channel-'));
  const keyFile = path.join(dir, 'key.pem');
  const certFile = path.join(dir, 'cert.pem');
  await run('openssl', [
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-days',
    '2',
    '-subj',
    `/CN=${name}`,
    '-addext',
    `subjectAltName=DNS:${name}`,
    '-keyout',
    keyFile,
    '-out',
    certFile,
  ]);
  return {
    key: await readFile(keyFile, 'utf8'),
    cert: await readFile(certFile, 'utf8'),
    keyFile,
    certFile,
    remove: () => rm(dir, { recursive: true, force: true }),
  };
}

/** Docker's DNS for tests: swarmgate-controller (and any name given) resolves to loopback. */
export function loopbackResolver(
  table: Record<string, string[]> = {},
): (hostname: string) => Promise<string[]> {
  return async (hostname) => table[hostname] ?? (hostname === 'swarmgate-controller' ? ['127.0.0.1'] : []);
}

export interface ApiAnswer {
  readonly status: number;
  readonly text: string;
  readonly json: Record<string, unknown>;
}

/** One request to the controller's HTTPS API on 127.0.0.1, verified against `ca` for swarmgate-controller. */
export function apiRequest(
  port: number,
  ca: string,
  method: string,
  urlPath: string,
  { token = null, body }: { token?: string | null; body?: unknown } = {},
): Promise<ApiAnswer> {
  const payload = body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = https.request(
      {
        host: '127.0.0.1',
        port,
        servername: 'swarmgate-controller',
        ca,
        method,
        path: urlPath,
        agent: false,
        headers: {
          ...(token === null ? {} : { authorization: `Bearer ${token}` }),
          'content-type': 'application/json',
        },
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (text += chunk));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            text,
            json: text.startsWith('{') ? (JSON.parse(text) as Record<string, unknown>) : { text },
          }),
        );
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

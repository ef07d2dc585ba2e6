// `nginx -t` on a candidate bundle, in a directory of its own, before anything is published or applied.
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { SwarmgateError } from '../errors.ts';
import type { BundleFiles } from '../render/render-config.ts';
import { writeBundleFiles } from './bundle-dir.ts';

/**
 * transient: nginx -t did not give a verdict on the config (killed, timed out); the same bytes may pass next time,
 * so callers must not remember it as a refusal.
 */
export type ValidationResult =
  { readonly ok: true } | { readonly ok: false; readonly output: string; readonly transient?: boolean };

export interface NginxValidator {
  validate(files: BundleFiles, signal: AbortSignal): Promise<ValidationResult>;
}

/**
 * nginx runs a bundle with its directory as the prefix: certificate paths are relative to nginx.conf, and the Lua
 * balancer finds peers.txt at ngx.config.prefix().
 */
export function bundleArguments(confPath: string): string[] {
  return ['-p', `${path.dirname(confPath)}/`, '-c', confPath];
}

export function runNginxTest(
  nginxBinary: string,
  confPath: string,
  signal: AbortSignal,
  timeoutMs = 30_000,
): Promise<ValidationResult> {
  return new Promise((resolve, reject) => {
    // stdout goes to /dev/null rather than a pipe: libuv pipes are sockets, and nginx cannot open() a socket as
    // /dev/stdout for access_log. Diagnostics come on stderr.
    const child = spawn(nginxBinary, ['-t', '-q', '-e', 'stderr', ...bundleArguments(confPath)], {
      stdio: ['ignore', 'ignore', 'pipe'],
      signal,
      timeout: timeoutMs,
    });
    let stderr = '';
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk: string) => {
      if (stderr.length < 64 * 1024) stderr += chunk;
    });
    child.once('error', (error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT' || error.code === 'EACCES') {
        reject(
          new SwarmgateError('ERR_NGINX_UNAVAILABLE', `cannot run ${nginxBinary}: ${error.code}`, {}, error),
        );
      } else if (signal.aborted) {
        reject(new SwarmgateError('ERR_ABORTED', undefined, {}, error));
      } else {
        reject(
          new SwarmgateError('ERR_NGINX_UNAVAILABLE', `nginx -t failed to run: ${error.message}`, {}, error),
        );
      }
    });
    child.once('close', (code, killedBy) => {
      if (code === 0) resolve({ ok: true });
      else if (killedBy !== null) {
        // Killed (our timeout, the OOM killer, an operator): no verdict on the config.
        const output = `nginx -t was killed by ${killedBy} before it finished${stderr.trim() ? `: ${stderr.trim()}` : ''}`;
        resolve({ ok: false, output, transient: true });
      } else if (code !== null) {
        resolve({ ok: false, output: stderr.trim() || `nginx -t exited with ${code}` });
      }
    });
  });
}

export function createNginxValidator(nginxBinary: string): NginxValidator {
  return {
    async validate(files, signal) {
      const dir = await mkdtemp(path.join(os.tmpdir(), 'swarmgate-candidate-'));
      try {
        await writeBundleFiles(dir, files);
        return await runNginxTest(nginxBinary, path.join(dir, 'nginx.conf'), signal);
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    },
  };
}

// runNginxTest with stand-in nginx binaries: a refusal is a verdict, a killed or timed-out run is not.
import assert from 'node:assert/strict';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { runNginxTest } from '../../src/nginx/nginx-validator.ts';

async function fakeNginx(t: { after(fn: () => Promise<void>): void }, script: string): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'swarmgate-fake-nginx-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const binary = path.join(dir, 'nginx');
  await writeFile(binary, `#!/bin/sh\n${script}\n`);
  await chmod(binary, 0o755);
  return binary;
}

test('nginx -t refusing the config is a verdict (not transient)', async (t) => {
  const binary = await fakeNginx(t, 'echo "nginx: [emerg] unknown directive" >&2; exit 1');
  const result = await runNginxTest(binary, '/nonexistent/nginx.conf', AbortSignal.timeout(10_000));
  assert.deepEqual(result, { ok: false, output: 'nginx: [emerg] unknown directive' });
});

test('nginx -t killed by its timeout gives no verdict: transient', async (t) => {
  const binary = await fakeNginx(t, 'exec sleep 30');
  const result = await runNginxTest(binary, '/nonexistent/nginx.conf', AbortSignal.timeout(10_000), 100);
  assert.equal(result.ok, false);
  assert.equal(!result.ok && result.transient, true);
  assert.match(!result.ok ? result.output : '', /killed by SIGTERM/);
});

test('nginx -t killed by a signal (the OOM killer) gives no verdict: transient', async (t) => {
  const binary = await fakeNginx(t, 'kill -9 $$');
  const result = await runNginxTest(binary, '/nonexistent/nginx.conf', AbortSignal.timeout(10_000));
  assert.equal(!result.ok && result.transient, true);
  assert.match(!result.ok ? result.output : '', /SIGKILL/);
});

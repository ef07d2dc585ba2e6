// nginx killed outright (SIGKILL, as the OOM killer does) leaves its unix listeners behind as files, and a bind to
// an existing file fails: the next start on the same state must not be refused for the sockets of the dead one
// (the agent's peers socket, the balancer's wait and the ACME relay of every config).
import assert from 'node:assert/strict';
import { mkdtemp, readFile, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { BundleCache } from '../../src/edge/bundle-cache.ts';
import { createNginxProcess, WITHOUT_NET_ADMIN } from '../../src/edge/nginx-process.ts';
import { createTemplateRenderer } from '../../src/render/nunjucks-env.ts';
import {
  freePort,
  get,
  loopbackBundle,
  loopbackSetup,
  NGINX_BINARY,
  startBundleNginx,
  workerPids,
} from '../support/loopback-nginx.ts';
import { waitUntil } from '../support/wait.ts';

const HOST = 'app.test';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

test('an nginx killed with SIGKILL leaves its local sockets; the next start on the same state still starts', async (t) => {
  const stateDir = await mkdtemp(path.join(os.tmpdir(), 'swarmgate-nginx-restart-'));
  const setup = await loopbackSetup(stateDir);
  const files = loopbackBundle(setup, createTemplateRenderer(), HOST, ['127.0.0.2'], await freePort());
  await startBundleNginx(t, stateDir, setup, files);

  const master = Number((await readFile(setup.pidFile, 'utf8')).trim());
  const all = [master, ...(await workerPids(setup))];
  for (const pid of all) process.kill(pid, 'SIGKILL');
  await waitUntil('the killed nginx to be gone', () => all.every((pid) => !alive(pid)));
  for (const suffix of ['', '.wait', '.acme']) {
    assert.ok(
      (await stat(`${setup.proxy.peersSocket}${suffix}`)).isSocket(),
      `${suffix || 'peers'} left behind`,
    );
  }

  const again = createNginxProcess(NGINX_BINARY, setup.proxy.peersSocket);
  t.after(() => again.stop(5000));
  await again.start(new BundleCache(stateDir).currentConfPath);
  assert.equal((await get(setup.listenPort, 'unknown.test')).status, 503, 'the new nginx serves');
});

/** Whether a process may hold CAP_NET_ADMIN (bit 12 of its bounding set in /proc/<pid>/status). */
async function mayHoldNetAdmin(pid: number): Promise<boolean> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const bounding = /^CapBnd:\s*([0-9a-f]+)$/m.exec(status)?.[1] ?? '0';
  return (BigInt(`0x${bounding}`) & (1n << 12n)) !== 0n;
}

test('the edge starts nginx without CAP_NET_ADMIN (only the agent cuts connections); nginx still serves and reloads', async (t) => {
  assert.ok(
    await mayHoldNetAdmin(process.pid),
    'the test runs with CAP_NET_ADMIN, as the edge container does',
  );
  const stateDir = await mkdtemp(path.join(os.tmpdir(), 'swarmgate-nginx-caps-'));
  const setup = await loopbackSetup(stateDir);
  const port = await freePort();
  const files = loopbackBundle(setup, createTemplateRenderer(), HOST, ['127.0.0.2'], port);
  const { nginx } = await startBundleNginx(t, stateDir, setup, files, WITHOUT_NET_ADMIN);
  const master = Number((await readFile(setup.pidFile, 'utf8')).trim());
  assert.equal(await mayHoldNetAdmin(master), false, 'the master cannot take NET_ADMIN');
  for (const worker of await workerPids(setup)) assert.equal(await mayHoldNetAdmin(worker), false);
  // setpriv execs nginx: the pid the agent signals is nginx's own, so a reload still works.
  const before = await workerPids(setup);
  nginx.reload();
  await waitUntil('new workers after the reload', async () => {
    const now = await workerPids(setup);
    return now.length > 0 && now.every((pid) => !before.includes(pid));
  });
  assert.equal(Number((await readFile(setup.pidFile, 'utf8')).trim()), master);
  assert.equal((await get(setup.listenPort, 'unknown.test')).status, 503, 'it serves after the reload');
});

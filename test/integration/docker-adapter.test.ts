// The dockerode adapter against a fake Engine API on a unix socket: what a service update really puts on the wire.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { createDockerodeAdapter } from '../../src/docker/dockerode-adapter.ts';

test('service updates: X-Registry-Auth carries the credentials, an explicit empty auth, or nothing for "keep"', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'swarmgate-engine-'));
  const socketPath = path.join(dir, 'docker.sock');
  const seen: { url: string; auth: string | undefined }[] = [];
  const engine = http.createServer((req, res) => {
    req.resume();
    seen.push({ url: req.url ?? '', auth: req.headers['x-registry-auth'] as string | undefined });
    res.writeHead(200, { 'content-type': 'application/json' }).end('{"Warnings":null}');
  });
  await new Promise<void>((resolve) => engine.listen(socketPath, () => resolve()));
  t.after(async () => {
    engine.close();
    await rm(dir, { recursive: true, force: true });
  });
  const docker = createDockerodeAdapter(socketPath);
  const spec = { Name: 'web', TaskTemplate: { ContainerSpec: { Image: 'other.test/web:2' } } };
  const signal = AbortSignal.timeout(5000);

  await docker.updateService('svc1', 7, spec, 'anonymous', signal);
  await docker.updateService('svc1', 8, spec, 'keep', signal);
  await docker.updateService(
    'svc1',
    9,
    spec,
    { username: 'robot', password: 'pw', serveraddress: 'registry.test' },
    signal,
  );

  assert.deepEqual(
    seen.map((entry) => entry.url),
    [7, 8, 9].map((version) => `/v1.41/services/svc1/update?version=${version}`),
  );
  // moby stores any non-empty header as the new PullOptions; "{}" is an empty AuthConfig (anonymous pull).
  assert.equal(seen[0]?.auth, 'e30=');
  assert.deepEqual(JSON.parse(Buffer.from(seen[0]?.auth ?? '', 'base64url').toString()), {});
  assert.equal(seen[1]?.auth, undefined, '"keep" sends no header, so dockerd keeps the stored credentials');
  assert.deepEqual(JSON.parse(Buffer.from(seen[2]?.auth ?? '', 'base64url').toString()), {
    username: 'robot',
    password: 'pw',
    serveraddress: 'registry.test',
  });
});

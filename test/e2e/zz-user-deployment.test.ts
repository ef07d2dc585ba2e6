// The suite's cleanup leaves a user's deployment alone, checked for real: a stand-in for one (a stack, a secret,
// sealed-state configs named like a real swarmgate's, none with the lab's marks) is put on the daemon, the
// suite's cleanup (`lab clean`, what global-setup runs) removes the lab's swarmgate, and nothing else may change.
// The file runs last (files run one at a time in name order) because the cleanup removes the lab's stack.
// test-all.sh runs the same check around `lab down`.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { test } from 'node:test';
import {
  docker,
  EDGE_HTTP_PORT,
  EDGE_HTTPS_PORT,
  EDGE_NETWORK,
  EDGE_TCP_PORT,
  LAB,
  REPO_ROOT,
  STACK,
} from './support/lab.ts';

interface ServiceSpec {
  Spec: {
    TaskTemplate: {
      ContainerSpec: { Env?: string[]; Secrets?: { SecretName: string; File: { Name: string } }[] };
      Networks?: { Target: string }[];
    };
    EndpointSpec?: { Ports?: { PublishedPort: number; Protocol?: string }[] };
  };
}

test('the lab swarmgate has names and ports of its own: none of a real swarmgate', async () => {
  const services = JSON.parse(
    await docker(['service', 'inspect', `${STACK}_controller`, `${STACK}_edge`]),
  ) as ServiceSpec[];
  const networkIds = new Set(
    services.flatMap((s) => s.Spec.TaskTemplate.Networks?.map((n) => n.Target) ?? []),
  );
  const networks = await Promise.all(
    [...networkIds].map((id) => docker(['network', 'inspect', '--format', '{{.Name}}', id])),
  );
  assert.deepEqual(networks, [EDGE_NETWORK]);
  const ports = services
    .flatMap((s) => s.Spec.EndpointSpec?.Ports?.map((p) => `${p.PublishedPort}/${p.Protocol ?? 'tcp'}`) ?? [])
    .sort();
  // HTTPS over TCP, and over UDP for HTTP/3 (QUIC); the TCP port services may take (swarmgate.tcp.port).
  assert.deepEqual(ports, [
    `${EDGE_HTTP_PORT}/tcp`,
    `${EDGE_TCP_PORT}/tcp`,
    `${EDGE_HTTPS_PORT}/tcp`,
    `${EDGE_HTTPS_PORT}/udp`,
  ]);
  const env = services[0]?.Spec.TaskTemplate.ContainerSpec.Env ?? [];
  assert.ok(env.includes(`SWARMGATE_INSTANCE=${LAB}`), 'the lab controller keeps its state apart');
  assert.ok(env.includes(`SWARMGATE_NETWORKS=${EDGE_NETWORK}`));
  // Every secret the lab's swarmgate reads is one the lab made: a user's swarmgate_* secrets are never needed,
  // replaced or removed. A secret added to docker-stack.yml fails here until stack.e2e.yml renames it.
  const secrets = services.flatMap((s) => s.Spec.TaskTemplate.ContainerSpec.Secrets ?? []);
  assert.ok(secrets.length > 0);
  for (const secret of secrets) {
    assert.ok(secret.SecretName.startsWith(`${LAB}_`), `${secret.File.Name} comes from ${secret.SecretName}`);
    const label = await docker([
      'secret',
      'inspect',
      '--format',
      '{{index .Spec.Labels "swarmgate.lab"}}',
      secret.SecretName,
    ]);
    assert.equal(label, '1', `${secret.SecretName} carries the lab's label`);
  }
});

test("the suite's cleanup removes the lab's swarmgate and leaves a user's deployment untouched", async () => {
  const output = await new Promise<string>((resolve, reject) => {
    execFile(
      'bash',
      [path.join(REPO_ROOT, 'test', 'e2e', 'user-deployment-check.sh'), 'clean'],
      { timeout: 300_000, maxBuffer: 16 * 1024 * 1024 },
      (error, stdout, stderr) =>
        error ? reject(new Error(`the check failed:\n${stderr}`)) : resolve(`${stdout}${stderr}`),
    );
  });
  assert.match(output, /ok: \d+ objects of the lab's were there/);
  assert.equal(
    await docker(['service', 'ls', '-q', '--filter', `label=com.docker.stack.namespace=${STACK}`]),
    '',
  );
});

// Which services the admin API refuses to scale or roll, as a table. Review of the security work, item 5: the refusal
// of socket-holding services was bypassable with spellings the daemon resolves (`/var/lib/../run`, `/run/.`) and
// paths it did not know (`/proc/1/root` is the host's root, containerd's socket, /etc).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { whyNotManaged } from '../../src/admin/service-operations.ts';
import type { RawMount, RawService } from '../../src/docker/docker-port.ts';
import { rawService } from '../support/fake-docker.ts';

function routed(container: Record<string, unknown>): RawService {
  const service = rawService('app', { VIRTUAL_HOST: 'app.example.com' });
  const spec = service.Spec?.TaskTemplate?.ContainerSpec;
  if (spec) Object.assign(spec, container);
  return service;
}

const bind = (Source: string, extra: Partial<RawMount> = {}): RawMount => ({
  Type: 'bind',
  Source,
  Target: '/h',
  ...extra,
});

// mounts → refused (true) or manageable (false)
const MOUNTS: readonly [string, RawMount, boolean][] = [
  ['the Docker socket', bind('/var/run/docker.sock'), true],
  ['a dot-dot spelling of /run', bind('/var/lib/../run'), true],
  ['a dot spelling of /run', bind('/run/.'), true],
  ['the host root through /proc', bind('/proc/1/root'), true],
  ["containerd's socket", bind('/run/containerd/containerd.sock'), true],
  ['a containerd socket elsewhere', bind('/srv/k3s/containerd.sock'), true],
  ['a Docker socket elsewhere', bind('/home/ci/docker.sock'), true],
  ['the host configuration', bind('/etc'), true],
  ['a file of it', bind('/etc/shadow', { ReadOnly: true }), true],
  ['a trailing slash', bind('/etc/'), true],
  ['the root', bind('/'), true],
  ['a directory above /var/lib/docker', bind('/var/lib'), true],
  ["Docker's data", bind('/var/lib/docker/volumes'), true],
  ["containerd's data", bind('/var/lib/containerd'), true],
  ['devices', bind('/dev/sda'), true],
  ['kernel settings', bind('/sys/kernel'), true],
  ['double slashes', bind('//var//run/./docker.sock'), true],
  ['a relative spelling', bind('var/run'), true],
  [
    'a local volume that binds /run',
    {
      Type: 'volume',
      Target: '/r',
      VolumeOptions: { DriverConfig: { Options: { device: '/var/lib/../run' } } },
    },
    true,
  ],
  ["Docker's named pipe", { Type: 'npipe', Source: '\\\\.\\pipe\\docker_engine', Target: '/p' }, true],
  ['the time zone, read-only', bind('/etc/localtime', { ReadOnly: true }), false],
  ['the time zone, writable', bind('/etc/localtime'), true],
  ['app data', bind('/srv/app/data'), false],
  ['a path that only starts like /run', bind('/runner/cache'), false],
  ['a path that only starts like /etc', bind('/etcetera'), false],
  ['a named volume', { Type: 'volume', Source: 'app-data', Target: '/data' }, false],
  ['tmpfs', { Type: 'tmpfs', Target: '/tmp' }, false],
];

for (const [what, mount, refused] of MOUNTS) {
  test(`admin API scope: a service binding ${what} is ${refused ? 'refused' : 'manageable'}`, () => {
    const reason = whyNotManaged(routed({ Mounts: [mount] }));
    if (refused) assert.match(reason ?? '', /the API never changes such a service/);
    else assert.equal(reason, null);
  });
}

const PRIVILEGES: readonly [string, Record<string, unknown>, RegExp | null][] = [
  [
    'added capabilities',
    { CapabilityAdd: ['CAP_SYS_ADMIN'] },
    /privileged: it adds capabilities \(CAP_SYS_ADMIN\)/,
  ],
  ['all capabilities', { CapabilityAdd: ['ALL'] }, /adds capabilities/],
  ['no seccomp', { Privileges: { Seccomp: { Mode: 'unconfined' } } }, /without seccomp/],
  ['no AppArmor', { Privileges: { AppArmor: { Mode: 'disabled' } } }, /without AppArmor/],
  ['an empty capability list', { CapabilityAdd: [] }, null],
  [
    'the default profiles',
    { Privileges: { Seccomp: { Mode: 'default' }, AppArmor: { Mode: 'default' } } },
    null,
  ],
];

for (const [what, container, expected] of PRIVILEGES) {
  test(`admin API scope: a service with ${what} is ${expected ? 'refused' : 'manageable'}`, () => {
    const reason = whyNotManaged(routed(container));
    if (expected) assert.match(reason ?? '', expected);
    else assert.equal(reason, null);
  });
}

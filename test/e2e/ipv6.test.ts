// IPv6 (issue 15, item 6) on the lab: the real image's edge, deployed by `docker stack deploy` from docker-stack.yml
// with SWARMGATE_ENABLE_IPV6=true on its controller, serves a request that reaches it over IPv6, and the task sees
// the client's IPv6 address; then what an operator meets where the edge has no IPv6.
//
// The lab's daemon has no IPv6 settings (no "ipv6"/"ip6tables" in daemon.json, an IPv4-only docker_gwbridge), and a
// test never changes a daemon's settings. So a second, small swarmgate runs beside the lab's (stack.ipv6.e2e.yml):
// its edge is also on a swarm-scoped bridge network created with --ipv6 (from a config-only network: Docker 20.10
// keeps no subnets given directly to a swarm-scoped bridge), where a Swarm task gets an IPv6 address and its
// namespace keeps IPv6 on. Clients reach that address directly, without NAT. What the lab cannot show (a published
// port DNATed by ip6tables) is said in the README, "IPv6".
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import {
  createService,
  deployStackFiles,
  docker,
  E2E_LABEL,
  IMAGE,
  removeService,
  REPO_ROOT,
  edgeAddressForContainers,
  waitFor,
  waitForServiceRunning,
} from './support/lab.ts';

const STACK = 'sg-e2e-ipv6';
/** The stack's overlay (SWARMGATE_NETWORK): edges, controller and the app. */
const OVERLAY = STACK;
/** The IPv6 network only the edge joins, and the config-only network that holds its subnets. */
const V6_CONFIG = 'sg-e2e-ipv6-v6cfg';
const V6_NETWORK = 'sg-e2e-ipv6-v6';
const V6_SUBNETS = ['172.31.250.0/24', 'fd00:5e:3::/64'];
/** Host ports of this stack's edge (the lab's edge has 20080/20443). */
const HTTP_PORT = 20180;
const HTTPS_PORT = 20543;
const HOST = 'ipv6.e2e.test';
const APP = 'sg-e2e-ipv6-app';
/** A plain container running the edge image in a namespace whose socket(AF_INET6) fails, as without IPv6 in the kernel. */
const NO_IPV6_EDGE = 'sg-e2e-ipv6-nokernel';

interface Answer {
  readonly status: number;
  readonly body: string;
  /** The client's own address on this connection. */
  readonly localAddress: string;
}

function get(address: string, port: number, urlPath: string, host = HOST): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.get(
      { host: address, port, path: urlPath, headers: { host }, agent: false, timeout: 5000 },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (body += chunk));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, body, localAddress: res.socket.localAddress ?? '' }),
        );
      },
    );
    req.on('timeout', () => req.destroy(new Error(`GET http://[${address}]:${port}${urlPath} timed out`)));
    req.on('error', reject);
  });
}

/** The forwarding headers the app saw (the test backend's /headers). */
function seenBy(answer: Answer): { realIp: unknown; forwardedFor: unknown } {
  const { headers } = JSON.parse(answer.body) as { headers: Record<string, string> };
  return { realIp: headers['x-real-ip'], forwardedFor: headers['x-forwarded-for'] };
}

async function runningContainer(service: string): Promise<string | undefined> {
  const ids = await docker(['ps', '-q', '--filter', `name=${service}.`, '--filter', 'status=running']);
  return ids.split('\n').find(Boolean);
}

interface EdgeRow {
  edge: string;
  inSync: boolean;
  applied: { version: number } | null;
  rejected: { fingerprint: string; error: string } | null;
}

async function stackStatus(): Promise<{ config: { version: number } | null; edges: EdgeRow[] }> {
  const id = await runningContainer(`${STACK}_controller`);
  if (!id) throw new Error('no running controller container of the IPv6 stack');
  return JSON.parse(await docker(['exec', id, 'swarmgate', 'status', '--json'])) as {
    config: { version: number } | null;
    edges: EdgeRow[];
  };
}

/** Everything this file creates, by its own names: removed before (a run cut short) and after. */
async function removeOwn(): Promise<void> {
  await docker(['rm', '-f', NO_IPV6_EDGE]).catch(() => '');
  await removeService(APP);
  await docker(['stack', 'rm', STACK]).catch(() => '');
  await waitFor(
    `stack ${STACK} and its networks to go`,
    async () => {
      const services = await docker([
        'service',
        'ls',
        '-q',
        '--filter',
        `label=com.docker.stack.namespace=${STACK}`,
      ]);
      if (services) return undefined;
      for (const network of [OVERLAY, V6_NETWORK, V6_CONFIG]) {
        const exists = await docker(['network', 'inspect', network]).then(
          () => true,
          () => false,
        );
        if (exists) await docker(['network', 'rm', network]).catch(() => '');
      }
      const left = await docker([
        'network',
        'ls',
        '-q',
        '--filter',
        `name=^(${OVERLAY}|${V6_NETWORK}|${V6_CONFIG})$`,
      ]);
      return left === '' ? true : undefined;
    },
    { timeoutMs: 90_000, intervalMs: 1000 },
  );
  // The controller's sealed state, if it kept any (SWARMGATE_INSTANCE of this stack only).
  const configs = await docker(['config', 'ls', '-q', '--filter', `label=swarmgate.instance=${STACK}`]);
  if (configs) await docker(['config', 'rm', ...configs.split('\n')]).catch(() => '');
}

test('IPv6 on the lab: a Swarm edge with SWARMGATE_ENABLE_IPV6, and the edge without IPv6', async (t) => {
  await removeOwn();
  t.after(removeOwn);
  await docker([
    'network',
    'create',
    '--config-only',
    '--label',
    E2E_LABEL,
    '--ipv6',
    ...V6_SUBNETS.flatMap((subnet) => ['--subnet', subnet]),
    V6_CONFIG,
  ]);
  // Labels and subnets belong to the config-only network: Docker refuses them beside --config-from.
  await docker([
    'network',
    'create',
    '--driver',
    'bridge',
    '--scope',
    'swarm',
    '--attachable',
    '--config-from',
    V6_CONFIG,
    V6_NETWORK,
  ]);
  await deployStackFiles(
    STACK,
    [path.join(REPO_ROOT, 'docker-stack.yml'), path.join(REPO_ROOT, 'test', 'e2e', 'stack.ipv6.e2e.yml')],
    {
      SWARMGATE_NETWORK: OVERLAY,
      SWARMGATE_HTTP_PORT: String(HTTP_PORT),
      SWARMGATE_HTTPS_PORT: String(HTTPS_PORT),
    },
  );
  await waitForServiceRunning(`${STACK}_controller`, 1);
  await waitForServiceRunning(`${STACK}_edge`, 1);
  await createService({ name: APP, networks: [OVERLAY], labels: { VIRTUAL_HOST: HOST } });
  await waitFor(`${HOST} to be routed on 127.0.0.1:${HTTP_PORT}`, async () =>
    (await get('127.0.0.1', HTTP_PORT, '/')).status === 200 ? true : undefined,
  );

  /** This machine's own address on the IPv6 bridge, from the first request it sends there. */
  let hostBridgeAddress = '';

  await t.test('the edge answers on its IPv6 address, and the app sees the IPv6 client', async () => {
    const edge = await runningContainer(`${STACK}_edge`);
    assert.ok(edge, 'a running edge container');
    const address = await docker([
      'inspect',
      edge,
      '--format',
      `{{(index .NetworkSettings.Networks "${V6_NETWORK}").GlobalIPv6Address}}`,
    ]);
    assert.match(address, /^fd00:5e:3:/, 'the edge task has an address on the IPv6 network');
    const listening = await docker(['exec', edge, 'ss', '-Hltn']);
    assert.match(listening, /\[::\]:80\s/, 'nginx listens on [::]:80');
    assert.match(listening, /\[::\]:443\s/, 'nginx listens on [::]:443');

    // This machine as the client: its address on the IPv6 bridge.
    const fromHost = await get(address, 80, '/headers');
    assert.equal(fromHost.status, 200);
    assert.match(fromHost.localAddress, /^fd00:5e:3:/, 'the request went over IPv6');
    assert.deepEqual(seenBy(fromHost), {
      realIp: fromHost.localAddress,
      forwardedFor: fromHost.localAddress,
    });
    hostBridgeAddress = fromHost.localAddress;

    // Another container on the IPv6 network as the client: the app sees that container's own IPv6 address.
    const script =
      "ip -6 -o addr show dev eth0 scope global | awk '{print $4}'; " +
      `curl -gsS -m 5 -H 'Host: ${HOST}' 'http://[${address}]:80/headers'`;
    const output = await docker([
      'run',
      '--rm',
      '--label',
      E2E_LABEL,
      '--network',
      V6_NETWORK,
      '--entrypoint',
      'sh',
      IMAGE,
      '-c',
      script,
    ]);
    const [cidr = '', ...rest] = output.split('\n');
    const clientAddress = cidr.split('/')[0] ?? '';
    assert.match(clientAddress, /^fd00:5e:3:/);
    const { headers } = JSON.parse(rest.join('\n')) as { headers: Record<string, string> };
    assert.equal(headers['x-real-ip'], clientAddress);
    assert.equal(headers['x-forwarded-for'], clientAddress);
  });

  await t.test('a published port reached over IPv6 goes through Docker’s userland proxy', async () => {
    // Without ip6tables (Docker 20.10's default), docker-proxy listens on [::]:<port> for a host-mode port and opens
    // its own connection to the edge, here over the IPv6 bridge: the app sees the proxy's address on that bridge
    // (this machine's, as in the direct request above), not the client's ::1.
    const answer = await get('::1', HTTP_PORT, '/headers');
    assert.equal(answer.status, 200);
    assert.ok(hostBridgeAddress);
    assert.deepEqual(seenBy(answer), { realIp: hostBridgeAddress, forwardedFor: hostBridgeAddress });
  });

  await t.test(
    'without IPv6 in its namespace the edge still starts and serves IPv4; [::] answers nothing',
    async () => {
      const before = await runningContainer(`${STACK}_edge`);
      await docker(['service', 'update', '--detach', '--network-rm', V6_NETWORK, `${STACK}_edge`], {
        timeoutMs: 30_000,
      });
      const edge = await waitFor(
        'the edge task without the IPv6 network to run',
        async () => {
          const id = await runningContainer(`${STACK}_edge`);
          return id && id !== before ? id : undefined;
        },
        { timeoutMs: 90_000, intervalMs: 500 },
      );
      // Docker 20.10 turns IPv6 off in a container on no IPv6 network: no ::1, no address.
      assert.equal(await docker(['exec', edge, 'cat', '/proc/sys/net/ipv6/conf/all/disable_ipv6']), '1');
      assert.equal(await docker(['exec', edge, 'ip', '-6', 'addr']), '');
      // The new edge's own health (its agent, inside the container): the controller's current config applied, with
      // no apply failure and no fallback.
      const health = await waitFor('the new edge to apply the IPv6 config', async () => {
        const version = (await stackStatus()).config?.version;
        const own = JSON.parse(
          await docker(['exec', edge, 'curl', '-sS', '-m', '3', 'http://127.0.0.1:8081/healthz']),
        ) as { status: string; applied: { version: number } | null };
        return version !== undefined && own.applied?.version === version ? own : undefined;
      });
      assert.equal(health.status, 'ok');
      // nginx bound [::]:80 all the same (binding the wildcard needs no address), so nothing failed or was reported.
      const listening = await docker(['exec', edge, 'ss', '-Hltn']);
      assert.match(listening, /\[::\]:80\s/);
      const answer = await waitFor(`${HOST} through the new edge on 127.0.0.1:${HTTP_PORT}`, async () => {
        const result = await get('127.0.0.1', HTTP_PORT, '/headers');
        return result.status === 200 ? result : undefined;
      });
      assert.equal(answer.status, 200);
      const inside = await docker([
        'exec',
        edge,
        'sh',
        '-c',
        `curl -gsS -m 3 -o /dev/null -H 'Host: ${HOST}' 'http://[::1]:80/'; echo "exit $?"`,
      ]).catch((error: unknown) => String(error));
      assert.match(inside, /exit 7/, 'no IPv6 connection is possible inside the edge');
      // An IPv6 client of the published port is still served: docker-proxy hands it to the edge over IPv4 (the edge is
      // now reached through docker_gwbridge), and the app sees the bridge's gateway, not the client.
      const gateway = await edgeAddressForContainers();
      const proxied = await get('::1', HTTP_PORT, '/headers');
      assert.equal(proxied.status, 200);
      assert.deepEqual(seenBy(proxied), { realIp: gateway, forwardedFor: gateway });
    },
  );

  await t.test(
    'where socket(AF_INET6) fails (a kernel without IPv6) the edge refuses the config and says why',
    async (t) => {
      // socket(AF_INET6, ...) answers EAFNOSUPPORT (97), what a kernel booted with ipv6.disable=1 answers; every
      // other call is allowed. Swarm services cannot take a seccomp profile on Docker 20.10: a plain container of
      // the same image, on the stack's overlay, with the lab's edge token and channel certificate.
      const dir = mkdtempSync(path.join(os.tmpdir(), 'sg-e2e-ipv6-'));
      const profile = path.join(dir, 'no-inet6.json');
      writeFileSync(
        profile,
        JSON.stringify({
          defaultAction: 'SCMP_ACT_ALLOW',
          syscalls: [
            {
              names: ['socket'],
              action: 'SCMP_ACT_ERRNO',
              errnoRet: 97,
              args: [{ index: 0, value: 10, op: 'SCMP_CMP_EQ' }],
            },
          ],
        }),
      );
      await docker([
        'run',
        '--detach',
        '--name',
        NO_IPV6_EDGE,
        '--label',
        E2E_LABEL,
        '--network',
        OVERLAY,
        '--cap-add',
        'NET_ADMIN',
        '--security-opt',
        `seccomp=${profile}`,
        '--env',
        `SWARMGATE_EDGE_ID=${NO_IPV6_EDGE}`,
        '--mount',
        `type=bind,src=${path.join(REPO_ROOT, '.lab', 'edge-token')},dst=/run/secrets/swarmgate_edge_token,readonly`,
        '--mount',
        `type=bind,src=${path.join(REPO_ROOT, '.lab', 'channel', 'cert.pem')},dst=/run/secrets/swarmgate_channel_cert,readonly`,
        IMAGE,
        'edge',
      ]);
      const started = Date.now();
      const row = await waitFor(
        'the controller to hear that edge refuse the config',
        async () => (await stackStatus()).edges.find((edge) => edge.edge === NO_IPV6_EDGE && edge.rejected),
        { timeoutMs: 120_000, intervalMs: 500 },
      );
      t.diagnostic(`refusal reported ${Date.now() - started} ms after the container was started`);
      assert.equal(row.inSync, false);
      assert.equal(row.applied, null);
      // The reason an operator reads in `swarmgate status` and on the status page: nginx's own words, first.
      assert.match(
        row.rejected?.error ?? '',
        /^ERR_NGINX_INVALID: .*\[emerg\].*socket\(\) \[::\]:80 failed \(97: Address family not supported by protocol\)/,
      );
      // That edge serves its empty config: every host answers 503 there (on IPv4 too) until IPv6 is turned off.
      const code = await docker([
        'exec',
        NO_IPV6_EDGE,
        'curl',
        '-sS',
        '-m',
        '3',
        '-o',
        '/dev/null',
        '-w',
        '%{http_code}',
        '-H',
        `Host: ${HOST}`,
        'http://127.0.0.1:80/',
      ]);
      assert.equal(code, '503');
    },
  );
});

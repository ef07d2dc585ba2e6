// A scrape of every edge after traffic (issue 16): known requests go through each node's edge (200s and 404s of a
// routed service, 503s for an unknown host, a different number on each edge), then every edge's metrics port
// (9145, on the overlay only, never published) is scraped as Prometheus on the overlay would: from a container
// on the stack's network that finds the edges through Swarm's DNS, tasks.<stack>_edge. Each edge's counters for
// that host and status class rose by exactly what was sent to it, and its request histogram counted each request.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  BACKEND_IMAGE,
  createService,
  E2E_LABEL,
  inNode,
  labNodes,
  manager,
  removeService,
  request,
  STACK,
  stackNetwork,
  uniqueName,
  waitFor,
  waitForTasksThrough,
} from './support/nodes.ts';
import type { LabNode } from './support/nodes.ts';

const EDGE_SERVICE = `${STACK}_edge`;
const METRICS_PORT = 9145;
/** The default server's configured name: what nginx's $server_name (the host label) is for an unknown host. */
const UNKNOWN_HOST_LABEL = '_';

/** Runs inside the scraper container: Swarm's DNS for the edges, then each one's metrics port. */
const SCRAPE_SCRIPT = `
const dns = require('node:dns').promises;
(async () => {
  const found = await dns.lookup('tasks.${EDGE_SERVICE}', { all: true, family: 4 });
  const addresses = found.map((entry) => entry.address).sort();
  const texts = {};
  for (const ip of addresses) {
    const res = await fetch('http://' + ip + ':${METRICS_PORT}/metrics', { signal: AbortSignal.timeout(5000) });
    texts[ip] = res.status === 200 ? await res.text() : 'HTTP ' + res.status;
  }
  process.stdout.write(JSON.stringify({ addresses, texts }));
})().catch((error) => { console.error(String(error)); process.exit(1); });
`;

interface Scrape {
  /** What tasks.<stack>_edge resolved to, sorted. */
  readonly addresses: readonly string[];
  /** Edge address → its Prometheus text. */
  readonly texts: Readonly<Record<string, string>>;
}

const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

/** The value of the one sample of `name` whose labels are exactly `labels`; 0 when the series does not exist yet. */
function sample(text: string, name: string, labels: Readonly<Record<string, string>>): number {
  const wanted = JSON.stringify(Object.entries(labels).sort());
  for (const line of text.split('\n')) {
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\} (\S+)$/.exec(line);
    if (!match || match[1] !== name) continue;
    const found = [...(match[2] ?? '').matchAll(LABEL)].map((pair) => [pair[1] ?? '', pair[2] ?? '']);
    if (JSON.stringify(found.sort()) === wanted) return Number(match[3]);
  }
  return 0;
}

interface Sent {
  readonly ok: number;
  readonly notFound: number;
  readonly unknownHost: number;
}

/** The series this test reads on one edge. */
interface Readings {
  readonly ok: number;
  readonly notFound: number;
  readonly serviceErrors: number;
  readonly unknownHost: number;
  /** Requests of the route in its duration histogram (every one is observed once). */
  readonly durationCount: number;
}

function readings(text: string, host: string, service: string): Readings {
  const requests = (labelHost: string, labelService: string, code: string): number =>
    sample(text, 'swarmgate_edge_requests_total', { host: labelHost, service: labelService, code });
  return {
    ok: requests(host, service, '2xx'),
    notFound: requests(host, service, '4xx'),
    serviceErrors: requests(host, service, '5xx'),
    unknownHost: requests(UNKNOWN_HOST_LABEL, '', '5xx'),
    durationCount: sample(text, 'swarmgate_edge_request_duration_seconds_count', { host, service }),
  };
}

function difference(after: Readings, before: Readings): Readings {
  return {
    ok: after.ok - before.ok,
    notFound: after.notFound - before.notFound,
    serviceErrors: after.serviceErrors - before.serviceErrors,
    unknownHost: after.unknownHost - before.unknownHost,
    durationCount: after.durationCount - before.durationCount,
  };
}

test('every edge’s metrics, scraped over the overlay after known traffic, count exactly that traffic', async (t) => {
  const nodes = await labNodes();
  assert.ok(nodes.length >= 3, 'three lab nodes');
  const managerNode = await manager();
  const network = await stackNetwork();
  const name = uniqueName('sg-e2e-metrics');
  const host = `${name}.e2e.test`;
  const scraper = uniqueName('sg-e2e-scraper');
  t.after(async () => {
    await inNode(managerNode, ['rm', '-f', scraper]).catch(() => '');
    await removeService(name);
  });

  // The edges' overlay addresses, node by node: what each one's scrape is matched with.
  const edgeAddress = new Map<string, LabNode>();
  for (const node of nodes) {
    const container = (
      await inNode(node.name, ['ps', '-q', '--filter', `name=${EDGE_SERVICE}`, '--filter', 'status=running'])
    ).split('\n')[0];
    assert.ok(container, `an edge runs on ${node.name}`);
    const ip = await inNode(node.name, [
      'inspect',
      '--format',
      `{{(index .NetworkSettings.Networks "${network}").IPAddress}}`,
      container,
    ]);
    assert.match(ip, /^\d+\.\d+\.\d+\.\d+$/, `the edge on ${node.name} has an address on ${network}`);
    edgeAddress.set(ip, node);
  }

  // Prometheus' place: a container on the stack's overlay (the backend image has Node and its fetch).
  await inNode(managerNode, [
    'run',
    '--detach',
    '--name',
    scraper,
    '--label',
    E2E_LABEL,
    '--network',
    network,
    BACKEND_IMAGE,
  ]);
  const scrape = async (): Promise<Scrape> =>
    JSON.parse(
      await inNode(managerNode, ['exec', scraper, 'node', '-e', SCRAPE_SCRIPT], { timeoutMs: 30_000 }),
    ) as Scrape;

  const tasks = await createService({ name, host, replicas: nodes.length });
  for (const node of nodes) {
    await waitForTasksThrough(
      node,
      host,
      tasks.map((task) => task.name),
    );
  }

  // The baseline: the warm-up's requests above are counted too, and each nginx worker folds its counts into the
  // shared dictionary once a second. Two scrapes two seconds apart that agree are the settled counts.
  const settled = await waitFor(
    'every edge’s counters to settle after the warm-up',
    async () => {
      const first = await scrape();
      await new Promise((resolve) => setTimeout(resolve, 2000));
      const second = await scrape();
      const same =
        JSON.stringify(first.addresses) === JSON.stringify(second.addresses) &&
        second.addresses.every(
          (ip) =>
            JSON.stringify(readings(first.texts[ip] ?? '', host, name)) ===
            JSON.stringify(readings(second.texts[ip] ?? '', host, name)),
        );
      return same ? second : undefined;
    },
    { timeoutMs: 60_000, intervalMs: 500 },
  );
  assert.deepEqual(
    [...settled.addresses],
    [...edgeAddress.keys()].sort(),
    'tasks.<stack>_edge finds exactly one edge per node',
  );
  for (const ip of settled.addresses) {
    assert.match(
      settled.texts[ip] ?? '',
      /^# TYPE swarmgate_edge_requests_total counter$/m,
      `metrics of ${ip}`,
    );
  }

  // A different mix per edge, so counts that landed on the wrong edge would show.
  const sent = new Map<string, Sent>();
  for (const [index, node] of nodes.entries()) {
    const mix: Sent = { ok: 5 + index, notFound: 2 + index, unknownHost: 3 + 2 * index };
    for (let i = 0; i < mix.ok; i++) {
      assert.equal((await request(node.ip, host, '/')).status, 200, `a 200 through ${node.name}`);
    }
    for (let i = 0; i < mix.notFound; i++) {
      assert.equal((await request(node.ip, host, '/status/404')).status, 404, `a 404 through ${node.name}`);
    }
    for (let i = 0; i < mix.unknownHost; i++) {
      assert.equal((await request(node.ip, `unknown-${name}.invalid`)).status, 503, `a 503 on ${node.name}`);
    }
    sent.set(node.name, mix);
  }

  const expected = (node: LabNode): Readings => {
    const mix = sent.get(node.name) ?? { ok: 0, notFound: 0, unknownHost: 0 };
    return {
      ok: mix.ok,
      notFound: mix.notFound,
      serviceErrors: 0,
      unknownHost: mix.unknownHost,
      durationCount: mix.ok + mix.notFound,
    };
  };
  const reached = (after: Scrape): boolean =>
    [...edgeAddress].every(([ip, node]) => {
      const rose = difference(
        readings(after.texts[ip] ?? '', host, name),
        readings(settled.texts[ip] ?? '', host, name),
      );
      const want = expected(node);
      return rose.ok >= want.ok && rose.notFound >= want.notFound && rose.unknownHost >= want.unknownHost;
    });
  const final = await waitFor(
    'every edge to count the traffic sent to it',
    async () => {
      const after = await scrape();
      return reached(after) ? after : undefined;
    },
    { timeoutMs: 30_000, intervalMs: 1000 },
  );
  for (const [ip, node] of edgeAddress) {
    const rose = difference(
      readings(final.texts[ip] ?? '', host, name),
      readings(settled.texts[ip] ?? '', host, name),
    );
    assert.deepEqual(
      rose,
      expected(node),
      `the edge on ${node.name} (${ip}) counted exactly what it was sent`,
    );
  }
  t.diagnostic(
    `scraped ${edgeAddress.size} edges through tasks.${EDGE_SERVICE}:${METRICS_PORT}: ${[...sent]
      .map(([node, mix]) => `${node} ${mix.ok}×200 ${mix.notFound}×404 ${mix.unknownHost}×503`)
      .join(', ')}`,
  );
});

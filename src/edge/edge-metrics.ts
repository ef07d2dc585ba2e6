// The edge's traffic metrics in Prometheus text: nginx counts them (lua/swarmgate/metrics.lua), the agent reads
// them on nginx's local socket at each scrape and serves them on SWARMGATE_EDGE_METRICS_PORT, a port on the overlay
// that is never published. Prometheus finds every edge through Swarm's DNS (tasks.<edge service>).
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from '../logger.ts';
import { MetricsWriter } from '../metrics.ts';
import type { HistogramSeries, Labels } from '../metrics.ts';
import type { AppliedBundle } from '../publish/bundle-store.ts';
import { parsePeers } from '../render/peers-text.ts';

/** One entry of nginx's dictionary: its kind, its label fields, its value. */
interface Entry {
  readonly kind: string;
  readonly fields: readonly string[];
  readonly value: number;
}

/** What GET /metrics on the local socket returned, parsed. Lines that do not fit the grammar are skipped. */
export interface NginxTraffic {
  /** false: the config counts nothing (SWARMGATE_TRAFFIC_METRICS=false); nginx says so with a "counting\toff" line. */
  readonly counting: boolean;
  readonly buckets: readonly number[];
  readonly entries: readonly Entry[];
}

const FIELDS: Readonly<Record<string, number>> = {
  req: 3,
  dur: 3,
  in: 2,
  out: 2,
  proto: 1,
  ups: 3,
  udur: 3,
  uerr: 3,
  retry: 1,
  evict: 0,
  conn: 1,
};

export function parseNginxTraffic(text: string): NginxTraffic {
  let buckets: number[] = [];
  let counting = true;
  const entries: Entry[] = [];
  for (const line of text.split('\n')) {
    const parts = line.split('\t');
    const kind = parts[0] ?? '';
    if (line === 'counting\toff') {
      counting = false;
      continue;
    }
    if (kind === 'buckets') {
      buckets = (parts[1] ?? '').split(',').map(Number);
      continue;
    }
    const expected = FIELDS[kind];
    if (expected === undefined || parts.length !== expected + 2) continue;
    const value = Number(parts[expected + 1]);
    if (!Number.isFinite(value)) continue;
    entries.push({ kind, fields: parts.slice(1, expected + 1), value });
  }
  if (!buckets.every((bound) => Number.isFinite(bound) && bound > 0)) buckets = [];
  return { counting, buckets, entries };
}

/** What the agent itself knows, beside nginx's counts. */
export interface EdgeAgentView {
  readonly edge: string;
  readonly node: string | null;
  readonly applied: AppliedBundle | null;
  readonly lastContact: string | null;
  readonly reloads: number;
  readonly peerUpdates: number;
  readonly applyFailing: boolean;
  /** Connections to unreachable tasks the agent cut (src/edge/stuck-connections.ts). */
  readonly stuckConnectionsCut: number;
}

/** Histograms from "dur"/"udur" entries: per label set, non-cumulative bucket counts (index 1..n+1) and the sum. */
function histograms(
  entries: readonly Entry[],
  kind: string,
  names: readonly string[],
  bucketCount: number,
  keep: (labels: Labels) => boolean,
): HistogramSeries[] {
  const series = new Map<string, { labels: Labels; counts: number[]; sum: number }>();
  for (const entry of entries) {
    if (entry.kind !== kind) continue;
    const labelValues = entry.fields.slice(0, names.length);
    const key = labelValues.join('\t');
    let one = series.get(key);
    if (!one) {
      const labels = Object.fromEntries(names.map((name, index) => [name, labelValues[index] ?? '']));
      one = { labels, counts: new Array<number>(bucketCount + 1).fill(0), sum: 0 };
      series.set(key, one);
    }
    const slot = entry.fields[names.length] ?? '';
    if (slot === 'sum') one.sum = entry.value;
    else {
      const index = Number(slot) - 1;
      if (Number.isInteger(index) && index >= 0 && index <= bucketCount) one.counts[index] = entry.value;
    }
  }
  return [...series.values()].filter((one) => keep(one.labels)).sort(byLabels);
}

function byLabels(a: { labels: Labels }, b: { labels: Labels }): number {
  const ka = JSON.stringify(a.labels);
  const kb = JSON.stringify(b.labels);
  return ka < kb ? -1 : ka > kb ? 1 : 0;
}

function samples(
  entries: readonly Entry[],
  kind: string,
  names: readonly string[],
  keep: (labels: Labels) => boolean = () => true,
): [Labels, number][] {
  return entries
    .filter((entry) => entry.kind === kind)
    .map((entry): [Labels, number] => [
      Object.fromEntries(names.map((name, index) => [name, entry.fields[index] ?? ''])),
      entry.value,
    ])
    .filter(([labels]) => keep(labels))
    .sort((a, b) => byLabels({ labels: a[0] }, { labels: b[0] }));
}

/**
 * The scrape: nginx's traffic (null when nginx did not answer) and the agent's own state. Per-task series are kept
 * only for the members nginx routes to now (`members`, "ip:port"), so tasks that went away leave the exposition.
 */
export function edgeMetricsText(
  traffic: NginxTraffic | null,
  members: ReadonlySet<string>,
  agent: EdgeAgentView,
  now: number,
): string {
  const writer = new MetricsWriter()
    .metric('swarmgate_edge_info', 'gauge', 'The edge and the node it runs on.', [
      [{ edge: agent.edge, node: agent.node ?? '' }, 1],
    ])
    .metric('swarmgate_edge_config_version', 'gauge', 'Config version this edge applied (0: none).', [
      [{}, agent.applied?.version ?? 0],
    ])
    .metric('swarmgate_edge_reloads_total', 'counter', 'nginx reloads for a new config shape.', [
      [{}, agent.reloads],
    ])
    .metric(
      'swarmgate_edge_peer_updates_total',
      'counter',
      'Task addresses handed to nginx without a reload.',
      [[{}, agent.peerUpdates]],
    )
    .metric(
      'swarmgate_edge_stuck_connections_cut_total',
      'counter',
      'Connections to unreachable tasks cut so their requests were retried on other tasks.',
      [[{}, agent.stuckConnectionsCut]],
    )
    .metric(
      'swarmgate_edge_controller_contact_age_seconds',
      'gauge',
      'Seconds since the controller last answered a poll (-1: never).',
      [[{}, agent.lastContact ? Math.max(0, (now - Date.parse(agent.lastContact)) / 1000) : -1]],
    )
    .metric('swarmgate_edge_apply_failing', 'gauge', '1 while a bundle waits for a retry to apply.', [
      [{}, agent.applyFailing ? 1 : 0],
    ])
    .metric('swarmgate_edge_nginx_metrics_up', 'gauge', '1 when nginx answered with its traffic counts.', [
      [{}, traffic ? 1 : 0],
    ]);
  if (!traffic) return writer.text();
  const { entries, buckets } = traffic;
  writer.metric(
    'swarmgate_edge_traffic_counting',
    'gauge',
    '1 when nginx counts traffic; 0: SWARMGATE_TRAFFIC_METRICS=false on the controller, no traffic series.',
    [[{}, traffic.counting ? 1 : 0]],
  );
  const connections = (): void => {
    writer.metric(
      'swarmgate_edge_connections',
      'gauge',
      'Client connections by state (nginx stub_status).',
      samples(entries, 'conn', ['state']),
    );
  };
  if (!traffic.counting) {
    connections();
    return writer.text();
  }
  const current = (labels: Labels): boolean => members.has(labels.task ?? '');
  writer
    .metric(
      'swarmgate_edge_requests_total',
      'counter',
      "Requests by host (the route's configured name), service and status class.",
      samples(entries, 'req', ['host', 'service', 'code']),
    )
    .histograms(
      'swarmgate_edge_request_duration_seconds',
      'Request time on the edge ($request_time), by host and service.',
      buckets,
      histograms(entries, 'dur', ['host', 'service'], buckets.length, () => true),
    )
    .metric(
      'swarmgate_edge_received_bytes_total',
      'counter',
      'Bytes received from clients (request line, headers and body).',
      samples(entries, 'in', ['host', 'service']),
    )
    .metric(
      'swarmgate_edge_sent_bytes_total',
      'counter',
      'Bytes sent to clients.',
      samples(entries, 'out', ['host', 'service']),
    )
    .metric(
      'swarmgate_edge_requests_by_protocol_total',
      'counter',
      'Requests by HTTP version.',
      samples(entries, 'proto', ['protocol']),
    )
    .metric(
      'swarmgate_edge_upstream_responses_total',
      'counter',
      'Responses from tasks, by service, task address and status class: estimated from one response in ' +
        'SWARMGATE_TRAFFIC_TASK_SAMPLE (drawn at random, each counted that many times).',
      samples(entries, 'ups', ['service', 'task', 'code'], current),
    )
    .histograms(
      'swarmgate_edge_upstream_response_duration_seconds',
      "Time to a task's full response ($upstream_response_time), by service and task address: from one " +
        'response in SWARMGATE_TRAFFIC_TASK_SAMPLE, each counted that many times.',
      buckets,
      histograms(entries, 'udur', ['service', 'task'], buckets.length, current),
    )
    .metric(
      'swarmgate_edge_upstream_failures_total',
      'counter',
      'Attempts on a task that got no response (error: refused or reset; timeout), by service and task address.',
      samples(entries, 'uerr', ['service', 'task', 'kind'], current),
    )
    .metric(
      'swarmgate_edge_upstream_retries_total',
      'counter',
      'Extra attempts on another task after one failed (proxy_next_upstream).',
      samples(entries, 'retry', ['service']),
    )
    .metric(
      'swarmgate_edge_metrics_evictions_total',
      'counter',
      'Counter entries nginx dropped because its metrics memory was full.',
      [[{}, entries.find((entry) => entry.kind === 'evict')?.value ?? 0]],
    );
  connections();
  return writer.text();
}

/** "ip:port" of every member in a peers.txt (what nginx routes to now). */
export function membersOf(peersText: string | null): Set<string> {
  const parsed = peersText === null ? null : parsePeers(peersText);
  if (!parsed?.ok) return new Set();
  return new Set(
    parsed.peers.upstreams.flatMap((upstream) =>
      upstream.members.map((member) => `${member.ip}:${member.port}`),
    ),
  );
}

/** GET `path` on nginx's local socket; null when nothing (good) answers. */
export function localSocketGet(
  socketPath: string,
  path: string,
  signal: AbortSignal,
): Promise<string | null> {
  return new Promise((resolve) => {
    const req = http.request(
      { socketPath, method: 'GET', path, signal: AbortSignal.any([signal, AbortSignal.timeout(5000)]) },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (text += chunk));
        res.once('end', () => resolve(res.statusCode === 200 ? text : null));
        res.once('error', () => resolve(null));
      },
    );
    req.once('error', () => resolve(null));
    req.end();
  });
}

export interface EdgeMetricsServerDeps {
  readonly port: number;
  /** All interfaces in the container (the overlay); tests use 127.0.0.1. */
  readonly host?: string;
  readonly socketPath: string;
  readonly agent: () => EdgeAgentView;
  readonly now: () => number;
  readonly logger: Logger;
}

export interface EdgeMetricsServer {
  readonly port: number;
  close(): Promise<void>;
}

export async function startEdgeMetricsServer(deps: EdgeMetricsServerDeps): Promise<EdgeMetricsServer> {
  const server = http.createServer((req, res) => {
    if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('GET /metrics\n');
      return;
    }
    void (async () => {
      const signal = AbortSignal.timeout(5000);
      const [trafficText, peersText] = await Promise.all([
        localSocketGet(deps.socketPath, '/metrics', signal),
        localSocketGet(deps.socketPath, '/peers', signal),
      ]);
      const traffic = trafficText === null ? null : parseNginxTraffic(trafficText);
      if (!traffic) deps.logger.warn('nginx did not answer GET /metrics on its local socket');
      res
        .writeHead(200, { 'content-type': 'text/plain; version=0.0.4', 'cache-control': 'no-store' })
        .end(edgeMetricsText(traffic, membersOf(peersText), deps.agent(), deps.now()));
    })();
  });
  // A scrape is small and fast: nothing may hold a socket open for long.
  server.headersTimeout = 5000;
  server.requestTimeout = 10_000;
  server.maxConnections = 64;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(deps.port, deps.host, () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

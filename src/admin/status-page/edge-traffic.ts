// Live traffic per route for the status page: the controller scrapes every edge's metrics port (the same text
// Prometheus reads, found the same way: Swarm DNS tasks.<edge service>), and turns the counters' increase between
// two scrapes into requests/s, error rate and p95 per route, summed over the edges. A short history per route
// feeds the page's small charts. Prometheus and Grafana remain the place for anything longer.
import { lookup } from 'node:dns/promises';
import http from 'node:http';
import type { Logger } from '../../logger.ts';
import type { Clock } from '../../reconcile/clock.ts';
import { sleep } from '../../discovery/event-watcher.ts';

/** One edge's counters: per route ("host\tservice"), requests, 5xx answers and cumulative duration buckets. */
export interface EdgeCounters {
  readonly bounds: readonly number[];
  readonly routes: ReadonlyMap<string, { requests: number; errors: number; buckets: number[] }>;
}

const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\} (\S+)$/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

function parseLabels(text: string): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const match of text.matchAll(LABEL)) {
    labels[match[1] ?? ''] = (match[2] ?? '').replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
  }
  return labels;
}

/** The two edge series the page needs, from an edge's Prometheus text; everything else is ignored. */
export function parseEdgeCounters(text: string): EdgeCounters {
  const routes = new Map<string, { requests: number; errors: number; buckets: number[] }>();
  const boundsSeen = new Set<number>();
  const bucketLines: [string, number, number][] = [];
  const route = (key: string): { requests: number; errors: number; buckets: number[] } => {
    let entry = routes.get(key);
    if (!entry) routes.set(key, (entry = { requests: 0, errors: 0, buckets: [] }));
    return entry;
  };
  for (const line of text.split('\n')) {
    const match = SAMPLE.exec(line);
    if (!match) continue;
    const [, name, labelText, valueText] = match;
    const value = Number(valueText);
    if (!Number.isFinite(value)) continue;
    if (name === 'swarmgate_edge_requests_total') {
      const labels = parseLabels(labelText ?? '');
      const entry = route(`${labels.host ?? ''}\t${labels.service ?? ''}`);
      entry.requests += value;
      if (labels.code === '5xx') entry.errors += value;
    } else if (name === 'swarmgate_edge_request_duration_seconds_bucket') {
      const labels = parseLabels(labelText ?? '');
      const bound = labels.le === '+Inf' ? Infinity : Number(labels.le);
      if (Number.isNaN(bound)) continue;
      boundsSeen.add(bound);
      bucketLines.push([`${labels.host ?? ''}\t${labels.service ?? ''}`, bound, value]);
    }
  }
  const bounds = [...boundsSeen].sort((a, b) => a - b);
  for (const [key, bound, value] of bucketLines) {
    const entry = route(key);
    if (entry.buckets.length !== bounds.length) entry.buckets = new Array<number>(bounds.length).fill(0);
    entry.buckets[bounds.indexOf(bound)] = value;
  }
  return { bounds, routes };
}

/** histogram_quantile's estimate: linear inside the bucket the rank falls in; null without observations. */
export function quantile(bounds: readonly number[], cumulative: readonly number[], q: number): number | null {
  const total = cumulative.at(-1) ?? 0;
  if (total <= 0) return null;
  const rank = q * total;
  for (let index = 0; index < bounds.length; index++) {
    const count = cumulative[index] ?? 0;
    if (count >= rank) {
      const upper = bounds[index] ?? 0;
      // The +Inf bucket has no upper bound: the answer is the highest finite one, as Prometheus gives.
      if (upper === Infinity) return bounds[index - 1] ?? null;
      const lower = index === 0 ? 0 : (bounds[index - 1] ?? 0);
      const below = index === 0 ? 0 : (cumulative[index - 1] ?? 0);
      const inBucket = count - below;
      return inBucket <= 0 ? upper : lower + ((upper - lower) * (rank - below)) / inBucket;
    }
  }
  return null;
}

export interface TrafficPoint {
  /** ms since the epoch */
  readonly at: number;
  readonly rps: number;
  /** 5xx answers / answers; null without requests */
  readonly errorRate: number | null;
  readonly p95Seconds: number | null;
}

export interface RouteTraffic {
  readonly host: string;
  readonly service: string;
  readonly current: TrafficPoint;
  readonly history: readonly TrafficPoint[];
}

/** Increase of a counter; a smaller value is a restart (nginx's counters began again from 0). */
function increase(previous: number | undefined, now: number): number {
  return previous === undefined ? 0 : now >= previous ? now - previous : now;
}

/** Pure: the rate per route over `seconds`, summed over the edges present in both scrapes. */
export function trafficBetween(
  previous: ReadonlyMap<string, EdgeCounters>,
  current: ReadonlyMap<string, EdgeCounters>,
  seconds: number,
  at: number,
): Map<string, TrafficPoint> {
  const sums = new Map<string, { requests: number; errors: number; buckets: number[]; bounds: number[] }>();
  for (const [edge, now] of current) {
    const before = previous.get(edge);
    if (!before) continue;
    for (const [key, entry] of now.routes) {
      const old = before.routes.get(key);
      let sum = sums.get(key);
      if (!sum) {
        sum = {
          requests: 0,
          errors: 0,
          buckets: new Array<number>(now.bounds.length).fill(0),
          bounds: [...now.bounds],
        };
        sums.set(key, sum);
      }
      sum.requests += increase(old?.requests ?? 0, entry.requests);
      sum.errors += increase(old?.errors ?? 0, entry.errors);
      if (sum.bounds.join() === now.bounds.join()) {
        entry.buckets.forEach((value, index) => {
          sum.buckets[index] = (sum.buckets[index] ?? 0) + increase(old?.buckets[index] ?? 0, value);
        });
      }
    }
  }
  const points = new Map<string, TrafficPoint>();
  for (const [key, sum] of sums) {
    points.set(key, {
      at,
      rps: seconds > 0 ? sum.requests / seconds : 0,
      errorRate: sum.requests > 0 ? sum.errors / sum.requests : null,
      p95Seconds: quantile(sum.bounds, sum.buckets, 0.95),
    });
  }
  return points;
}

/** A scrape target: "host:port"; a name may stand for many addresses (tasks.<service>). */
export type ResolveTargets = (targets: readonly string[]) => Promise<string[]>;
export type FetchText = (address: string, signal: AbortSignal) => Promise<string>;

export const resolveWithDns: ResolveTargets = async (targets) => {
  const addresses = await Promise.all(
    targets.map(async (target) => {
      const at = target.lastIndexOf(':');
      const host = target.slice(0, at);
      const port = target.slice(at + 1);
      const found = await lookup(host, { all: true, family: 4 }).catch(() => []);
      return found.map((entry) => `${entry.address}:${port}`);
    }),
  );
  return [...new Set(addresses.flat())].sort();
};

export const fetchMetricsText: FetchText = (address, signal) =>
  new Promise((resolve, reject) => {
    const at = address.lastIndexOf(':');
    const req = http.get(
      {
        host: address.slice(0, at),
        port: Number(address.slice(at + 1)),
        path: '/metrics',
        agent: false,
        signal: AbortSignal.any([signal, AbortSignal.timeout(3000)]),
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          text += chunk;
          // An edge's exposition is a few hundred KiB at most; anything far larger is not one.
          if (text.length > 16 * 1024 * 1024) req.destroy(new Error('metrics too large'));
        });
        res.once('end', () =>
          res.statusCode === 200 ? resolve(text) : reject(new Error(`HTTP ${res.statusCode}`)),
        );
        res.once('error', reject);
      },
    );
    req.once('error', reject);
  });

export interface EdgeTrafficDeps {
  readonly targets: readonly string[];
  readonly intervalMs: number;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly resolve?: ResolveTargets;
  readonly fetch?: FetchText;
  /** Points kept per route for the charts. */
  readonly historyPoints?: number;
}

/** Scrapes the edges every interval; `routes()` is the latest view. */
export class EdgeTraffic {
  private readonly deps: EdgeTrafficDeps;
  private previous = new Map<string, EdgeCounters>();
  private previousAt = 0;
  private readonly history = new Map<string, TrafficPoint[]>();
  private failing = false;
  /** Edges answering at the last scrape. */
  reachable = 0;

  constructor(deps: EdgeTrafficDeps) {
    this.deps = deps;
  }

  get enabled(): boolean {
    return this.deps.targets.length > 0;
  }

  routes(): RouteTraffic[] {
    return [...this.history.entries()]
      .map(([key, history]) => {
        const [host = '', service = ''] = key.split('\t');
        const current = history.at(-1) ?? { at: 0, rps: 0, errorRate: null, p95Seconds: null };
        return { host, service, current, history };
      })
      .sort((a, b) => (a.host === b.host ? (a.service < b.service ? -1 : 1) : a.host < b.host ? -1 : 1));
  }

  async scrapeOnce(signal: AbortSignal): Promise<void> {
    const resolve = this.deps.resolve ?? resolveWithDns;
    const fetchText = this.deps.fetch ?? fetchMetricsText;
    const addresses = await resolve(this.deps.targets);
    const current = new Map<string, EdgeCounters>();
    let failures = 0;
    await Promise.all(
      addresses.map(async (address) => {
        try {
          current.set(address, parseEdgeCounters(await fetchText(address, signal)));
        } catch {
          failures++;
        }
      }),
    );
    this.reachable = current.size;
    const failing = failures > 0 || addresses.length === 0;
    if (failing !== this.failing) {
      this.failing = failing;
      if (failing) {
        this.deps.logger.warn(
          { targets: this.deps.targets, addresses: addresses.length, failures },
          'cannot scrape every edge for the status page',
        );
      } else this.deps.logger.info({ addresses: addresses.length }, 'scraping every edge again');
    }
    const now = this.deps.clock.now();
    const points = trafficBetween(this.previous, current, (now - this.previousAt) / 1000, now);
    const limit = this.deps.historyPoints ?? 60;
    for (const [key, point] of points) {
      const list = this.history.get(key) ?? [];
      list.push(point);
      if (list.length > limit) list.splice(0, list.length - limit);
      this.history.set(key, list);
    }
    // Routes no edge reports any more (a removed service) leave with the edges' series.
    for (const key of this.history.keys()) {
      if (![...current.values()].some((counters) => counters.routes.has(key))) this.history.delete(key);
    }
    this.previous = current;
    this.previousAt = now;
  }

  async run(signal: AbortSignal): Promise<void> {
    if (!this.enabled) return;
    while (!signal.aborted) {
      await this.scrapeOnce(signal).catch((error: unknown) =>
        this.deps.logger.warn({ err: error }, 'edge traffic scrape failed'),
      );
      await sleep(this.deps.clock, this.deps.intervalMs, signal);
    }
  }
}

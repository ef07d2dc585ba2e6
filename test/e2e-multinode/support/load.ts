// Open-loop load through several nodes' edges at once: a fixed rate per node, every request's outcome and latency
// kept. Bounded in rate, count and time: it stops by itself after maxSeconds. Targets are lab nodes only.
import http from 'node:http';
import { performance } from 'node:perf_hooks';
import { EDGE_PORT } from './nodes.ts';
import type { LabNode } from './nodes.ts';

export interface Sample {
  /** ms since the load started, when the request was sent. */
  readonly at: number;
  readonly node: string;
  readonly ms: number;
  /** HTTP status, or 0 for a socket error or timeout. */
  readonly status: number;
  readonly error?: string;
  readonly task?: string;
}

export interface LoadReport {
  readonly startedAt: number;
  readonly samples: readonly Sample[];
  readonly sent: number;
  /** Requests still unanswered when the report was taken (none, unless the edge hangs past the timeout). */
  readonly unanswered: number;
}

export interface LoadRun {
  readonly startedAt: number;
  stop(): Promise<LoadReport>;
  /** Samples so far (for waiting on what the load sees). */
  samples(): readonly Sample[];
}

export function startLoad(
  nodes: readonly LabNode[],
  host: string,
  { ratePerNode = 15, maxSeconds = 240, timeoutMs = 10_000 } = {},
): LoadRun {
  const startedAt = Date.now();
  const start = performance.now();
  const samples: Sample[] = [];
  const agents = new Map(
    nodes.map((node) => [node.name, new http.Agent({ keepAlive: true, maxSockets: 64 })]),
  );
  const interval = 1000 / ratePerNode;
  const deadline = start + maxSeconds * 1000;
  let sent = 0;
  let inFlight = 0;
  let stopped = false;
  const sentPerNode = new Map(nodes.map((node) => [node.name, 0]));

  function fire(node: LabNode, retry = false): void {
    if (!retry) inFlight++;
    const at = performance.now() - start;
    const record = (status: number, extra: { error?: string; task?: string }): void => {
      inFlight--;
      samples.push({ at, node: node.name, ms: performance.now() - start - at, status, ...extra });
    };
    const req = http.get(
      {
        host: node.ip,
        port: EDGE_PORT,
        path: '/',
        headers: { host },
        agent: agents.get(node.name),
        timeout: timeoutMs,
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (body += chunk));
        res.on('end', () => {
          const task = /"task":"([^"]+)"/.exec(body)?.[1];
          record(res.statusCode ?? 0, task ? { task } : {});
        });
      },
    );
    req.on('timeout', () => req.destroy(Object.assign(new Error('timeout'), { code: 'ETIMEDOUT' })));
    req.on('error', (error: NodeJS.ErrnoException) => {
      // A keep-alive connection the edge closed just as we reused it: clients resend an idempotent GET (RFC 9112
      // §9.3.1). Counted as the one request it is.
      if (!retry && req.reusedSocket && error.code === 'ECONNRESET') {
        fire(node, true);
        return;
      }
      record(0, { error: error.code ?? error.message });
    });
  }

  const timer = setInterval(() => {
    const now = performance.now();
    if (now > deadline) stopped = true;
    if (stopped) {
      // Past its time limit the load ends by itself: no timer left to keep the test process alive.
      clearInterval(timer);
      return;
    }
    const due = Math.floor((now - start) / interval);
    for (const node of nodes) {
      while ((sentPerNode.get(node.name) ?? 0) < due) {
        sentPerNode.set(node.name, (sentPerNode.get(node.name) ?? 0) + 1);
        sent++;
        fire(node);
      }
    }
  }, 5);

  return {
    startedAt,
    samples: () => samples,
    async stop() {
      stopped = true;
      clearInterval(timer);
      const until = performance.now() + timeoutMs + 2000;
      while (inFlight > 0 && performance.now() < until)
        await new Promise((resolve) => setTimeout(resolve, 20));
      for (const agent of agents.values()) agent.destroy();
      return { startedAt, samples: [...samples], sent, unanswered: inFlight };
    },
  };
}

export interface LoadSummary {
  readonly sent: number;
  readonly failed: number;
  readonly failures: Record<string, number>;
  readonly slow: number;
  readonly slowShare: number;
  readonly maxMs: number;
  readonly p99Ms: number;
}

/** Failed = not a 2xx (socket errors and timeouts included); slow = answered after more than `slowMs`. */
export function summarize(samples: readonly Sample[], slowMs = 500): LoadSummary {
  const failures: Record<string, number> = {};
  let failed = 0;
  let slow = 0;
  const latencies = samples.map((sample) => sample.ms).sort((a, b) => a - b);
  for (const sample of samples) {
    if (sample.status < 200 || sample.status >= 300) {
      failed++;
      const key = sample.error ?? String(sample.status);
      failures[key] = (failures[key] ?? 0) + 1;
    }
    if (sample.ms > slowMs) slow++;
  }
  return {
    sent: samples.length,
    failed,
    failures,
    slow,
    slowShare: samples.length === 0 ? 0 : slow / samples.length,
    maxMs: latencies.at(-1) ?? 0,
    p99Ms: latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * 0.99))] ?? 0,
  };
}

export function describe(summary: LoadSummary): string {
  const failures = Object.entries(summary.failures)
    .map(([key, count]) => `${key}×${count}`)
    .join(' ');
  return (
    `${summary.sent} requests, ${summary.failed} failed${failures ? ` (${failures})` : ''}, ` +
    `${summary.slow} over 0.5 s (${(summary.slowShare * 100).toFixed(2)} %), p99 ${summary.p99Ms.toFixed(0)} ms, ` +
    `max ${summary.maxMs.toFixed(0)} ms`
  );
}

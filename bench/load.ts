// An open-loop load generator: a fixed request rate through the edge on 127.0.0.1, every outcome counted.
// A closed loop (wait for each answer) would slow down exactly when the proxy stumbles and hide the failures.
import http from 'node:http';
import { performance } from 'node:perf_hooks';
import { EDGE_HTTP_PORT } from '../test/e2e/support/lab.ts';

export interface LoadReport {
  readonly sent: number;
  readonly ok: number;
  readonly non2xx: Record<string, number>;
  readonly errors: Record<string, number>;
  /** Milliseconds since the start of each failure, for finding out why. */
  readonly failureTimes: number[];
  /**
   * GETs resent once because a reused keepalive connection was reset before any answer: the race RFC 9112 §9.3.1
   * lets clients retry, and browsers do; here it happens when an old nginx worker closes idle connections at reload.
   */
  readonly keepaliveRetries: number;
  readonly durationMs: number;
  /** Per answering task: first and last time (ms since start) it served a request. */
  readonly tasks: Map<string, { first: number; last: number; count: number }>;
}

export interface LoadRun {
  stop(): Promise<LoadReport>;
  readonly startedAt: number;
}

export function startLoad(
  host: string,
  ratePerSecond: number,
  options: { port?: number; maxSeconds?: number } = {},
): LoadRun {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 128 });
  const startedAt = Date.now();
  const start = performance.now();
  const tasks = new Map<string, { first: number; last: number; count: number }>();
  const non2xx: Record<string, number> = {};
  const errors: Record<string, number> = {};
  const failureTimes: number[] = [];
  let sent = 0;
  let ok = 0;
  let inFlight = 0;
  let keepaliveRetries = 0;
  let stopped = false;
  const deadline = start + (options.maxSeconds ?? 600) * 1000;
  const interval = 1000 / ratePerSecond;

  function fire(retry = false): void {
    if (!retry) {
      sent++;
      inFlight++;
    }
    const at = performance.now() - start;
    const req = http.get(
      {
        host: '127.0.0.1',
        port: options.port ?? EDGE_HTTP_PORT,
        path: '/',
        headers: { host },
        agent,
        timeout: 10_000,
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (body += chunk));
        res.on('end', () => {
          inFlight--;
          const now = performance.now() - start;
          if (res.statusCode && res.statusCode >= 200 && res.statusCode < 300) {
            ok++;
            const task = /"task":"([^"]+)"/.exec(body)?.[1];
            if (task) {
              const entry = tasks.get(task);
              if (entry) {
                entry.last = now;
                entry.count++;
              } else tasks.set(task, { first: now, last: now, count: 1 });
            }
          } else {
            const key = String(res.statusCode);
            non2xx[key] = (non2xx[key] ?? 0) + 1;
            failureTimes.push(at);
          }
        });
      },
    );
    req.on('timeout', () => req.destroy(Object.assign(new Error('timeout'), { code: 'ETIMEDOUT' })));
    req.on('error', (error: NodeJS.ErrnoException) => {
      if (!retry && req.reusedSocket && error.code === 'ECONNRESET') {
        keepaliveRetries++;
        fire(true);
        return;
      }
      inFlight--;
      const key = error.code ?? error.message;
      errors[key] = (errors[key] ?? 0) + 1;
      failureTimes.push(at);
    });
  }

  // A tick every few ms sends whatever is due, so the rate holds even when a tick comes late.
  const timer = setInterval(() => {
    const now = performance.now();
    if (now > deadline) stopped = true;
    if (stopped) return;
    const due = Math.floor((now - start) / interval);
    while (sent < due) fire();
  }, 2);

  return {
    startedAt,
    async stop() {
      stopped = true;
      clearInterval(timer);
      const waitUntil = performance.now() + 15_000;
      while (inFlight > 0 && performance.now() < waitUntil)
        await new Promise((resolve) => setTimeout(resolve, 20));
      agent.destroy();
      return {
        sent,
        ok,
        non2xx,
        errors,
        failureTimes,
        keepaliveRetries,
        durationMs: performance.now() - start,
        tasks,
      };
    },
  };
}

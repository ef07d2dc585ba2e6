// Test backend for swarmgate's e2e tests and benchmarks.
// Answers with the task that served the request so tests can tell replicas apart.
import http from 'node:http';
import os from 'node:os';

const port = Number(process.env.PORT ?? 80);
const task = process.env.TASK_NAME ?? os.hostname();
const version = process.env.BACKEND_VERSION ?? 'v1';
// A real app stops accepting on SIGTERM; DRAIN_MS lets a test model one that keeps serving a little longer.
const drainMs = Number(process.env.DRAIN_MS ?? 0);

function send(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'x-backend-task': task });
  res.end(text);
}

// What /health answers: a test turns it to 503 (POST /health/fail) to stand for an app that runs but is broken,
// and back (POST /health/ok), while the task keeps accepting connections.
let healthy = true;

const server = http.createServer((req, res) => {
  const url = new URL(req.url ?? '/', 'http://backend');
  if (url.pathname === '/health') return send(res, healthy ? 200 : 503, { task, healthy });
  if (req.method === 'POST' && (url.pathname === '/health/fail' || url.pathname === '/health/ok')) {
    healthy = url.pathname === '/health/ok';
    return send(res, 200, { task, healthy });
  }
  const statusMatch = /^\/status\/(\d{3})$/.exec(url.pathname);
  if (statusMatch) return send(res, Number(statusMatch[1]), { task, status: Number(statusMatch[1]) });
  if (url.pathname === '/headers') return send(res, 200, { task, headers: req.headers });
  if (url.pathname === '/slow') {
    const ms = Math.min(Number(url.searchParams.get('ms') ?? 100), 30_000);
    setTimeout(() => send(res, 200, { task, slept: ms }), ms);
    return;
  }
  send(res, 200, { task, version, method: req.method, path: url.pathname, host: req.headers.host ?? null });
});
server.keepAliveTimeout = 65_000;
server.listen(port, () => console.log(JSON.stringify({ msg: 'listening', port, task, version })));

process.on('SIGTERM', () => {
  console.log(JSON.stringify({ msg: 'SIGTERM', drainMs }));
  setTimeout(() => {
    server.close(() => process.exit(0));
    server.closeIdleConnections();
    setTimeout(() => process.exit(0), 10_000).unref();
  }, drainMs);
});

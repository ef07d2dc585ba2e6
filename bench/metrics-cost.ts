// What counting traffic in nginx costs (lua/swarmgate/metrics.lua): the edge's real config on loopback, one worker,
// proxying to a second nginx that answers 200 at once (so the edge, not the backend, is what is measured), loaded
// with ApacheBench (keep-alive, 16 connections). Rounds alternate with and without the log_by_lua block; each round
// reports requests/s and the edge worker's CPU time per request (/proc/<pid>/schedstat), which shared cores
// disturb far less than throughput. The cost is taken per round (counting minus no counting, the same round) and
// summed up as the median and range of those differences.
//
// On two shared cores a round's CPU per request still moves by about a microsecond, more than counting costs. So
// two more variants time the Lua call itself inside nginx (bench/lua/perreq_timing.lua: the monotonic clock read
// around swarmgate.metrics.log(), median of each 5,000 requests), which moves by tens of nanoseconds: "timed log()"
// and "timed nothing" (what the clock reads add). Their CPU is not compared (the timing adds its own). The call's
// time leaves out the log_by_lua handler's own price (the "empty handler" variant) and what counting does to the
// caches of the rest of the request, which is why the CPU difference is larger than the call.
// PIN=1 moves the edge worker to CPU 0 once it runs; start the bench itself with `taskset -c 1` so ApacheBench and
// the backend stay on the other core: rounds then move by tenths of a microsecond instead of a whole one.
// No Docker: run it with `node bench/metrics-cost.ts [--smoke]`.
import { execFile, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { BundleCache } from '../src/edge/bundle-cache.ts';
import { createNginxProcess } from '../src/edge/nginx-process.ts';
import { createTemplateRenderer } from '../src/render/nunjucks-env.ts';
import { fingerprintBundle } from '../src/render/render-config.ts';
import {
  freePort,
  loopbackBundle,
  loopbackSetup,
  NGINX_BINARY,
  withConf,
} from '../test/support/loopback-nginx.ts';
import { BENCH_DIR, machineFacts, percentile, printTable, SMOKE } from './support.ts';

const run = promisify(execFile);
const ROUNDS = SMOKE ? 1 : Number(process.env.ROUNDS ?? 7);
const REQUESTS = SMOKE ? 5000 : 60_000;
const PIN = process.env.PIN === '1';
const METRICS_BLOCK = /\n {4}log_by_lua_block \{\n[^}]*\}\n/;
const TIMING_LUA_DIR = path.join(BENCH_DIR, 'lua');
const TIMING_LINE = /perreq-timing (?:log|empty) median_ns=(\d+(?:\.\d+)?)/g;

/** The config with the http-level log phase calling bench/lua/perreq_timing.lua's `call` instead. */
function timedConf(conf: string, call: 'log' | 'empty'): string {
  return conf
    .replace(/lua_package_path "([^"]*)";/, `lua_package_path "${TIMING_LUA_DIR}/?.lua;$1";`)
    .replace(METRICS_BLOCK, `\n    log_by_lua_block {\n        require("perreq_timing").${call}()\n    }\n`);
}

async function cpuNs(pid: number): Promise<number> {
  return Number((await readFile(`/proc/${pid}/schedstat`, 'utf8')).split(' ')[0]);
}

async function workerPid(pidFile: string): Promise<number> {
  const master = (await readFile(pidFile, 'utf8')).trim();
  const children = await readFile(`/proc/${master}/task/${master}/children`, 'utf8');
  return Number(children.trim().split(/\s+/)[0]);
}

async function main(): Promise<void> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'swarmgate-metrics-cost-'));
  const backendPort = await freePort();
  await writeFile(
    path.join(dir, 'backend.conf'),
    `worker_processes 1; pid ${dir}/backend.pid; error_log ${dir}/backend.log warn; events {}
http { access_log off; server { listen 127.0.0.2:${backendPort}; keepalive_requests 100000;
location / { return 200 "ok"; } } }\n`,
  );
  const backend = spawn(NGINX_BINARY, ['-c', `${dir}/backend.conf`, '-g', 'daemon off;'], {
    stdio: 'ignore',
  });
  const results: Record<string, unknown>[] = [];
  // Medians of 5,000 timed calls each, by variant (timed variants only).
  const timings: Record<string, number[]> = {};
  try {
    const setup = await loopbackSetup(dir, { workerProcesses: '1' });
    const files = loopbackBundle(setup, createTemplateRenderer(), 'app.test', ['127.0.0.2'], backendPort);
    const conf = files['nginx.conf'] ?? '';
    if (!METRICS_BLOCK.test(conf)) throw new Error('the config has no log_by_lua block to take out');
    const variants = {
      counting: files,
      'no counting': withConf(files, conf.replace(METRICS_BLOCK, '\n')),
      // The fixed price of any log_by_lua handler, whatever it does.
      'empty handler': withConf(
        files,
        conf.replace(METRICS_BLOCK, '\n    log_by_lua_block {\n        return\n    }\n'),
      ),
      'timed log()': withConf(files, timedConf(conf, 'log')),
      'timed nothing': withConf(files, timedConf(conf, 'empty')),
    };
    for (let round = 1; round <= ROUNDS; round++) {
      // Every other round in the opposite order, so no variant always follows the same one.
      const order = Object.entries(variants);
      if (round % 2 === 0) order.reverse();
      for (const [name, bundle] of order) {
        const cache = new BundleCache(path.join(dir, name.replace(' ', '-')));
        const fingerprint = fingerprintBundle(bundle);
        await cache.stage(fingerprint, bundle);
        await cache.activate(fingerprint, { version: 1, fingerprint });
        const nginx = createNginxProcess(NGINX_BINARY, setup.proxy.peersSocket);
        await writeFile(setup.errorLog, '');
        await nginx.start(cache.currentConfPath);
        try {
          const url = `http://127.0.0.1:${setup.listenPort}/`;
          // Warm-up: upstream keep-alive connections, JIT.
          await run('ab', ['-q', '-k', '-c', '16', '-n', '2000', '-H', 'Host: app.test', url]);
          const worker = await workerPid(setup.pidFile);
          if (PIN) await run('taskset', ['-p', '-c', '0', String(worker)]);
          const before = await cpuNs(worker);
          const { stdout } = await run(
            'ab',
            ['-q', '-k', '-c', '16', '-n', String(REQUESTS), '-H', 'Host: app.test', url],
            { timeout: 120_000 },
          );
          const cpu = (await cpuNs(worker)) - before;
          const rps = Number(/Requests per second:\s+([\d.]+)/.exec(stdout)?.[1]);
          const failed = Number(/Failed requests:\s+(\d+)/.exec(stdout)?.[1]);
          const non2xx = Number(/Non-2xx responses:\s+(\d+)/.exec(stdout)?.[1] ?? 0);
          if (failed > 0 || non2xx > 0) throw new Error(`${name}: ${failed} failed, ${non2xx} non-2xx`);
          results.push({ round, variant: name, rps, cpuUsPerRequest: cpu / 1000 / REQUESTS });
          const log = await readFile(setup.errorLog, 'utf8');
          for (const match of log.matchAll(TIMING_LINE)) (timings[name] ??= []).push(Number(match[1]));
        } finally {
          await nginx.stop(5000);
        }
      }
    }
  } finally {
    backend.kill('SIGQUIT');
    await rm(dir, { recursive: true, force: true });
  }
  printTable('metrics cost: rounds', results);
  const median = (variant: string, key: string): number =>
    percentile(
      results.filter((row) => row.variant === variant).map((row) => row[key] as number),
      50,
    );
  const summary = ['counting', 'no counting', 'empty handler'].map((variant) => ({
    variant,
    rpsMedian: median(variant, 'rps'),
    cpuUsPerRequestMedian: median(variant, 'cpuUsPerRequest'),
  }));
  printTable('metrics cost: medians', summary);
  // Per round: the variant's CPU per request minus no counting's in the same round.
  const cpuOf = (variant: string, round: unknown): number =>
    results.find((row) => row.variant === variant && row.round === round)?.cpuUsPerRequest as number;
  const differences = (variant: string): number[] =>
    results
      .filter((row) => row.variant === variant)
      .map((row) => (row.cpuUsPerRequest as number) - cpuOf('no counting', row.round));
  const spread = (values: number[]): Record<string, number> => ({
    median: +percentile(values, 50).toFixed(3),
    min: +Math.min(...values).toFixed(3),
    max: +Math.max(...values).toFixed(3),
  });
  const costs = ['counting', 'empty handler'].map((variant) => ({
    variant,
    ...spread(differences(variant)),
  }));
  printTable('metrics cost: extra CPU per request over no counting, µs (per round)', costs);
  const inside = ['timed log()', 'timed nothing'].map((variant) => ({
    variant,
    samples: timings[variant]?.length ?? 0,
    ...spread((timings[variant] ?? []).map((ns) => ns / 1000)),
  }));
  printTable('metrics cost: the Lua call timed inside nginx, µs (medians of 5,000 calls)', inside);
  const [withCounting, without] = summary;
  if (withCounting && without) {
    const cost = percentile(differences('counting'), 50);
    const call = percentile(
      (timings['timed log()'] ?? []).map((ns) => ns / 1000),
      50,
    );
    const clock = percentile(
      (timings['timed nothing'] ?? []).map((ns) => ns / 1000),
      50,
    );
    console.log(
      JSON.stringify({
        machine: machineFacts({ docker: false }),
        requests: REQUESTS,
        rounds: ROUNDS,
        throughputCostPercent: +(100 * (1 - withCounting.rpsMedian / without.rpsMedian)).toFixed(2),
        cpuCostUsPerRequest: +cost.toFixed(3),
        cpuCostPercent: +((100 * cost) / without.cpuUsPerRequestMedian).toFixed(2),
        logCallUs: +(call - clock).toFixed(3),
      }),
    );
  }
}

await main();

// What each balancing method costs the edge (issue 15): the edge's real config on loopback, one worker, in front of
// a second nginx that answers 200 at once on 100 loopback addresses (100 tasks), loaded with ApacheBench
// (keep-alive, 16 connections). Variants: round robin with the Lua from before the methods existed (the common
// path must not get slower), round robin, least_conn, hash on the client address, and sticky (every request with a
// valid cookie), and round robin with active health checks of all 100 tasks every second (the one worker is also the
// checker: 100 probes/s). Each round reports requests/s and the edge worker's CPU time per request
// (/proc/<pid>/schedstat), which shared cores disturb far less than throughput, and its CPU while idle (the checks'
// own cost). No Docker: `node bench/balancer-methods.ts [--smoke] [--timed]`;
// BEFORE_REF names the git revision whose lua/ is "before" (default: the merge base with main).
// --timed: every variant's balancer calls swarmgate.balance() through bench/lua/perreq_timing.lua, which reads the
// monotonic clock around it and logs the median of each 5,000 calls; the summary adds that median per variant. A round's
// CPU per request moves by about a microsecond on shared cores, the call's own time by about 10 ns, so a change to the
// balancer's Lua shows there first. The clock reads add about 20 ns to every variant's CPU.
import { execFile, spawn } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { BundleCache } from '../src/edge/bundle-cache.ts';
import { createNginxProcess } from '../src/edge/nginx-process.ts';
import { buildRoutingModel } from '../src/model/routing-model.ts';
import { createTemplateRenderer } from '../src/render/nunjucks-env.ts';
import { fingerprintBundle, renderConfig } from '../src/render/render-config.ts';
import type { BundleFiles } from '../src/render/render-config.ts';
import { labelledSnapshot } from '../test/support/labelled-services.ts';
import {
  freePort,
  loopbackConf,
  loopbackSetup,
  NGINX_BINARY,
  REPO_LUA_DIR,
  withConf,
} from '../test/support/loopback-nginx.ts';
import type { LoopbackSetup } from '../test/support/loopback-nginx.ts';
import { BENCH_DIR, percentile, printTable, SMOKE, writeResult } from './support.ts';

const run = promisify(execFile);
const ROUNDS = SMOKE ? 1 : Number(process.env.ROUNDS ?? 5);
const REQUESTS = SMOKE ? 5000 : 60_000;
const TASKS = 100;
const IDLE_MS = SMOKE ? 1000 : 3000;
const HOST = 'app.test';
const TIMED = process.argv.includes('--timed');
const TIMING_LINE = /perreq-timing balance median_ns=(\d+(?:\.\d+)?)/g;

/** The config with the balancer calling swarmgate.balance() through bench/lua/perreq_timing.lua. */
function timed(conf: string): string {
  return conf
    .replace(/lua_package_path "([^"]*)";/, `lua_package_path "${path.join(BENCH_DIR, 'lua')}/?.lua;$1";`)
    .replace(/swarmgate\.balance\(/g, 'require("perreq_timing").balance(');
}

async function cpuNs(pid: number): Promise<number> {
  return Number((await readFile(`/proc/${pid}/schedstat`, 'utf8')).split(' ')[0]);
}

async function workerPid(pidFile: string): Promise<number> {
  const master = (await readFile(pidFile, 'utf8')).trim();
  const children = await readFile(`/proc/${master}/task/${master}/children`, 'utf8');
  return Number(children.trim().split(/\s+/)[0]);
}

function bundle(
  setup: LoopbackSetup,
  ips: readonly string[],
  port: number,
  labels: Record<string, string>,
  luaDir: string,
): BundleFiles {
  const model = buildRoutingModel(labelledSnapshot([{ name: 'web', host: HOST, ips, labels }], port), {
    networks: ['swarmgate'],
  });
  const files = renderConfig(
    model,
    { proxy: setup.proxy, generator: 'bench', luaDir },
    createTemplateRenderer(),
  );
  const conf = loopbackConf(setup, files['nginx.conf'] ?? '');
  return withConf(files, TIMED ? timed(conf) : conf);
}

/** The Set-Cookie pair the edge gives a first request (for the sticky variant's ApacheBench -C). */
function stickyCookie(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path: '/', headers: { host: HOST }, agent: false }, (res) => {
        res.resume();
        const pair = (res.headers['set-cookie'] ?? [])[0]?.split(';')[0];
        if (pair) resolve(pair);
        else reject(new Error('no sticky cookie'));
      })
      .on('error', reject);
  });
}

async function main(): Promise<void> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'swarmgate-balancer-methods-'));
  // nginx's workers (nobody) load metrics.lua on the first request: mkdtemp's 0700 would hide the old copy.
  await chmod(dir, 0o755);
  const backendPort = await freePort();
  const ips = Array.from({ length: TASKS }, (_, index) => `127.0.1.${index + 1}`);
  await writeFile(
    path.join(dir, 'backend.conf'),
    `worker_processes 1; pid ${dir}/backend.pid; error_log ${dir}/backend.log warn; events {}
http { access_log off; server { ${ips.map((ip) => `listen ${ip}:${backendPort};`).join(' ')}
keepalive_requests 100000; location / { return 200 "ok"; } } }\n`,
  );
  const backend = spawn(NGINX_BINARY, ['-c', `${dir}/backend.conf`, '-g', 'daemon off;'], {
    stdio: 'ignore',
  });
  // The Lua of the revision before (BEFORE_REF) in a directory of its own.
  const beforeRef =
    process.env.BEFORE_REF ?? (await run('git', ['merge-base', 'HEAD', 'main'])).stdout.trim();
  const beforeLua = path.join(dir, 'before-lua');
  await mkdir(path.join(beforeLua, 'swarmgate'), { recursive: true });
  // Every module of that revision: the config requires more than the balancer (early routing, certificates).
  const { stdout: listing } = await run('git', ['ls-tree', '--name-only', beforeRef, 'lua/swarmgate/']);
  for (const file of listing.split('\n').filter((line) => line.endsWith('.lua'))) {
    const { stdout } = await run('git', ['show', `${beforeRef}:${file}`], {
      maxBuffer: 1 << 22,
    });
    await writeFile(path.join(beforeLua, 'swarmgate', path.basename(file)), stdout);
  }
  const results: Record<string, unknown>[] = [];
  try {
    const setup = await loopbackSetup(dir, { workerProcesses: '1', upstreamKeepalive: 256 });
    const variants: Record<string, { files: BundleFiles; sticky?: boolean }> = {
      'round robin (before)': { files: bundle(setup, ips, backendPort, {}, beforeLua) },
      'round robin': { files: bundle(setup, ips, backendPort, {}, REPO_LUA_DIR) },
      least_conn: {
        files: bundle(setup, ips, backendPort, { 'swarmgate.balance': 'least_conn' }, REPO_LUA_DIR),
      },
      'hash client_ip': {
        files: bundle(setup, ips, backendPort, { 'swarmgate.balance': 'hash' }, REPO_LUA_DIR),
      },
      sticky: {
        files: bundle(setup, ips, backendPort, { 'swarmgate.sticky': 'cookie' }, REPO_LUA_DIR),
        sticky: true,
      },
      'health checks 1s': {
        files: bundle(
          setup,
          ips,
          backendPort,
          { 'swarmgate.healthcheck.path': '/', 'swarmgate.healthcheck.interval': '1s' },
          REPO_LUA_DIR,
        ),
      },
    };
    // Round 0 is a warm-up, not reported (the first nginx started measured twice slower, whatever it ran); the
    // order rotates each round so no variant is always first.
    const entries = Object.entries(variants);
    for (let round = 0; round <= ROUNDS; round++) {
      const order = [...entries.slice(round % entries.length), ...entries.slice(0, round % entries.length)];
      for (const [name, variant] of round === 0 ? entries.slice(0, 1) : order) {
        const cache = new BundleCache(path.join(dir, name.replace(/[^a-z_]/g, '-')));
        const fingerprint = fingerprintBundle(variant.files);
        await cache.stage(fingerprint, variant.files);
        await cache.activate(fingerprint, { version: 1, fingerprint });
        const nginx = createNginxProcess(NGINX_BINARY, setup.proxy.peersSocket);
        // This run's lines only (the timed medians are read from it).
        await writeFile(setup.errorLog, '');
        await nginx.start(cache.currentConfPath);
        try {
          const url = `http://127.0.0.1:${setup.listenPort}/`;
          const cookie = variant.sticky ? ['-C', await stickyCookie(setup.listenPort)] : [];
          const ab = ['-q', '-k', '-c', '16', '-H', `Host: ${HOST}`, ...cookie];
          // Warm-up: upstream keep-alive connections, JIT.
          await run('ab', [...ab, '-n', '3000', url]);
          const worker = await workerPid(setup.pidFile);
          const before = await cpuNs(worker);
          const { stdout } = await run('ab', [...ab, '-n', String(REQUESTS), url], { timeout: 120_000 });
          const cpu = (await cpuNs(worker)) - before;
          // Idle: no requests, only what the worker does on its own (timers, health probes).
          const idleFrom = await cpuNs(worker);
          await new Promise((resolve) => setTimeout(resolve, IDLE_MS));
          const idleMsPerSecond = ((await cpuNs(worker)) - idleFrom) / 1e6 / (IDLE_MS / 1000);
          const rps = Number(/Requests per second:\s+([\d.]+)/.exec(stdout)?.[1]);
          const failed = Number(/Failed requests:\s+(\d+)/.exec(stdout)?.[1]);
          const non2xx = Number(/Non-2xx responses:\s+(\d+)/.exec(stdout)?.[1] ?? 0);
          if (failed > 0 || non2xx > 0) throw new Error(`${name}: ${failed} failed, ${non2xx} non-2xx`);
          // An error logged per request (a Lua file the workers cannot read) would be measured as the method.
          const log = await readFile(setup.errorLog, 'utf8').catch(() => '');
          const errors = log
            .split('\n')
            .filter((line) => line.trim() !== '' && !line.includes('perreq-timing'))
            .join('\n');
          if (errors !== '') throw new Error(`${name}: nginx logged errors: ${errors.slice(0, 300)}`);
          // The medians of the 5,000-call batches of this run, warm-up included (JIT compiled by the first).
          const calls = [...log.matchAll(TIMING_LINE)].map((match) => Number(match[1]) / 1000);
          if (round > 0) {
            results.push({
              round,
              variant: name,
              rps,
              cpuUsPerRequest: +(cpu / 1000 / REQUESTS).toFixed(2),
              idleCpuMsPerSecond: +idleMsPerSecond.toFixed(2),
              ...(TIMED ? { balanceUs: +percentile(calls, 50).toFixed(3) } : {}),
            });
          }
        } finally {
          await nginx.stop(5000);
        }
      }
    }
  } finally {
    backend.kill('SIGQUIT');
    await rm(dir, { recursive: true, force: true });
  }
  printTable('balancer methods: rounds', results);
  const median = (variant: string, key: string): number =>
    percentile(
      results.filter((row) => row.variant === variant).map((row) => row[key] as number),
      50,
    );
  const summary = [...new Set(results.map((row) => row.variant as string))].map((variant) => ({
    variant,
    rpsMedian: median(variant, 'rps'),
    cpuUsPerRequestMedian: median(variant, 'cpuUsPerRequest'),
    idleCpuMsPerSecondMedian: median(variant, 'idleCpuMsPerSecond'),
    ...(TIMED ? { balanceUsMedian: median(variant, 'balanceUs') } : {}),
  }));
  printTable(`balancer methods at ${TASKS} tasks: medians`, summary);
  writeResult(
    'balancer-methods',
    { requests: REQUESTS, rounds: ROUNDS, tasks: TASKS, timed: TIMED, summary },
    { docker: false },
  );
}

await main();

// Edge fan-out: one new host at 2,000 hosts, delivered to 500 edges. A real controller (its HTTPS API on loopback
// with a pinned test certificate, fake Docker, nginx -t faked as passing) runs in a child process, so its CPU, RSS
// and egress are its own; 500 edges long-poll it from this process with the real channel code. Measured from the
// moment the new service appears: publish, the last edge holding the verified bundle, the controller's egress
// (bytes written on its TCP sockets, TLS included), CPU and peak RSS meanwhile. It never touches Docker.
//   --transport full   the previous release's transport (the whole bundle, as JSON, to every edge): the baseline
//   --transport delta  only what changed since each edge's bundle (default)
import { fork } from 'node:child_process';
import diagnostics from 'node:diagnostics_channel';
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { AcmePort } from '../src/acme/acme-adapter.ts';
import { deriveStateKey } from '../src/acme/state-store.ts';
import { readControllerConfig } from '../src/config.ts';
import { startController } from '../src/controller/controller.ts';
import { createLogger } from '../src/logger.ts';
import { diffText } from '../src/publish/bundle-delta.ts';
import type { PublishedBundle } from '../src/publish/bundle-store.ts';
import { systemClock } from '../src/reconcile/clock.ts';
import { createTemplateRenderer } from '../src/render/nunjucks-env.ts';
import type { BundleFiles } from '../src/render/render-config.ts';
import { makeChannelKeyPair } from '../test/support/channel-tls.ts';
import {
  addService,
  ask,
  EDGE_TOKEN,
  now,
  serviceId,
  startSimulatedEdges,
  SyntheticDocker,
  TASKS_PER_SERVICE,
  waitFor,
  watchAnswers,
} from './fanout-parts.ts';
import { printTable, SMOKE, sleep, summary, writeResult } from './support.ts';

const SERVICES = SMOKE ? 200 : 2000;
const EDGES = SMOKE ? 50 : 500;
const TRANSPORT = process.argv.includes('--transport')
  ? (process.argv[process.argv.indexOf('--transport') + 1] ?? 'delta')
  : 'delta';

// ---------------------------------------------------------------------------------------------------------------
// The controller (child process).

interface ControllerReport {
  readonly egressBytes: number;
  readonly cpuMs: number;
  readonly peakRssMiB: number;
  readonly rssBeforeMiB: number;
  readonly answers: number;
  readonly lastAnswerAt: number;
  readonly publishedAt: number;
  readonly bundleBytes: number;
  readonly changedBytes: number;
  readonly version: number;
}

type ToController = { readonly cmd: 'add-host' } | { readonly cmd: 'report' };

/** Bytes a minimal line diff inserts and removes: what any transport must carry at least (before compression). */
function changedBytes(before: BundleFiles, after: BundleFiles): number {
  let bytes = 0;
  for (const name of new Set([...Object.keys(before), ...Object.keys(after)])) {
    const a = before[name];
    const b = after[name];
    if (a === b) continue;
    if (a === undefined || b === undefined) {
      bytes += (a ?? b ?? '').length;
      continue;
    }
    const edits = diffText(a, b, 100_000) ?? [];
    for (const [, remove, insert] of edits) bytes += remove + insert.length;
  }
  return bytes;
}

async function runController(): Promise<void> {
  const send = (message: unknown): void => void process.send?.(message);
  // Egress on the controller's TCP sockets (what leaves the machine, TLS records included).
  const sockets = new Set<Socket>();
  let closedBytes = 0;
  diagnostics.subscribe('net.server.socket', (message) => {
    const socket = (message as { socket: Socket }).socket;
    sockets.add(socket);
    socket.once('close', () => {
      closedBytes += socket.bytesWritten;
      sockets.delete(socket);
    });
  });
  const egress = (): number =>
    closedBytes + [...sockets].reduce((sum, socket) => sum + socket.bytesWritten, 0);
  const written = watchAnswers();

  const docker = new SyntheticDocker();
  for (let s = 0; s < SERVICES; s++) addService(docker, s);
  const unusedAcme: AcmePort = {
    createAccountKey: () => Promise.reject(new Error('no ACME in this bench')),
    order: () => Promise.reject(new Error('no ACME in this bench')),
  };
  const controller = await startController({
    config: readControllerConfig({
      SWARMGATE_LISTEN_PORT: '0',
      SWARMGATE_CHALLENGE_PORT: '0',
      SWARMGATE_HEALTH_PORT: '0',
      SWARMGATE_SLOW_POLL: '1h',
      SWARMGATE_EDGE_LONG_POLL: '25s',
    }),
    adminToken: 'bench-admin-token-0123456789abcdef',
    edgeToken: EDGE_TOKEN,
    channelTls: { key: process.env.BENCH_CHANNEL_KEY ?? '', cert: process.env.BENCH_CHANNEL_CERT ?? '' },
    docker,
    // nginx -t of a 2 MB config is issue 17 item 2's business; here it passes at once.
    validator: { validate: async () => ({ ok: true }) },
    templates: createTemplateRenderer(),
    logger: createLogger('silent'),
    clock: systemClock,
    version: 'bench',
    acme: unusedAcme,
    stateKey: deriveStateKey('bench-state-key-0123456789abcdef'),
    userCertificates: [],
  });
  let baseline = { egress: 0, cpu: process.cpuUsage(), rss: 0, answers: 0, before: {} as BundleFiles };
  let peakRss = 0;
  let rssTimer: NodeJS.Timeout | null = null;
  let addedAt = 0;
  send({ port: controller.port });
  process.on('message', (message: ToController) => {
    if (message.cmd === 'add-host') {
      baseline = {
        egress: egress(),
        cpu: process.cpuUsage(),
        rss: process.memoryUsage().rss,
        answers: written.answers,
        before: controller.store.current?.files ?? {},
      };
      peakRss = baseline.rss;
      rssTimer = setInterval(() => (peakRss = Math.max(peakRss, process.memoryUsage().rss)), 10);
      addedAt = now();
      addService(docker, SERVICES);
      docker.emit({
        Type: 'service',
        Action: 'create',
        Actor: { ID: serviceId(SERVICES) },
      });
      send({ addedAt });
    } else if (message.cmd === 'report') {
      if (rssTimer) clearInterval(rssTimer);
      const cpu = process.cpuUsage(baseline.cpu);
      const current = controller.store.current as PublishedBundle;
      const report: ControllerReport = {
        egressBytes: egress() - baseline.egress,
        cpuMs: (cpu.user + cpu.system) / 1000,
        peakRssMiB: Math.round(Math.max(peakRss, process.memoryUsage().rss) / 2 ** 20),
        rssBeforeMiB: Math.round(baseline.rss / 2 ** 20),
        answers: written.answers - baseline.answers,
        lastAnswerAt: written.lastAnswerAt,
        publishedAt: Date.parse(current.publishedAt),
        bundleBytes: Object.values(current.files).reduce((sum, text) => sum + Buffer.byteLength(text), 0),
        changedBytes: changedBytes(baseline.before, current.files),
        version: current.version,
      };
      send({ report });
      void controller.stop().then(() => process.exit(0));
    }
  });
}

// ---------------------------------------------------------------------------------------------------------------
// The edges (this process): bench/fanout-parts.ts.

async function runBench(): Promise<void> {
  const tls = await makeChannelKeyPair();
  const child = fork(import.meta.filename, ['--controller', ...process.argv.slice(2)], {
    execArgv: process.execArgv,
    stdio: 'inherit',
    env: { ...process.env, BENCH_CHANNEL_KEY: tls.key, BENCH_CHANNEL_CERT: tls.cert },
  });
  const stop = new AbortController();
  try {
    const port = await new Promise<number>((resolve) =>
      child.once('message', (reply: { port: number }) => resolve(reply.port)),
    );
    const edges = startSimulatedEdges({
      port,
      ca: tls.cert,
      count: EDGES,
      transport: TRANSPORT,
      stop: stop.signal,
    });
    const startup = performance.now();
    await waitFor('every edge to hold the first bundle', () => edges.every((edge) => edge.applied), 600_000);
    const startupMs = performance.now() - startup;
    const firstVersion = edges[0]?.applied?.version ?? 0;
    // Let every edge's next poll reach the controller and wait there.
    await sleep(2000);

    const addedAt = await ask<number>(child, { cmd: 'add-host' }, 'addedAt');
    await waitFor(
      'every edge to hold the bundle with the new host',
      () => edges.every((edge) => (edge.applied?.version ?? 0) > firstVersion),
      600_000,
    );
    const allHaveAt = Math.max(...edges.map((edge) => edge.haveAt));
    // The edges' next polls settle at the controller before its CPU and egress are read.
    await sleep(1000);
    const controller = await ask<ControllerReport>(child, { cmd: 'report' }, 'report');
    stop.abort();

    const perEdgeBytes = edges.map((edge) => edge.bytes);
    const work = summary(edges.map((edge) => edge.workMs));
    const received = summary(edges.map((edge) => edge.receivedAt - addedAt));
    const have = summary(edges.map((edge) => edge.haveAt - addedAt));
    const egressPerEdge = controller.egressBytes / EDGES;
    const publishMs = controller.publishedAt - addedAt;
    const delivered = controller.lastAnswerAt - addedAt;
    // Each real edge runs on its own node: on loopback an answer is in the edge's socket once the controller wrote
    // it, and the edge holds the bundle after its own work on it. Here 500 edges share this process's core, so
    // the wall clock (and the time an answer is seen received) also counts the other edges' work.
    const ownNodesMs = delivered + work.max;
    const rows = [
      { measure: `transport`, value: TRANSPORT, unit: '', target: '' },
      {
        measure: `bundle (${SERVICES} hosts, ${SERVICES * TASKS_PER_SERVICE} tasks)`,
        value: controller.bundleBytes,
        unit: 'B',
        target: '',
      },
      {
        measure: 'changed bytes (line diff, inserted + removed)',
        value: controller.changedBytes,
        unit: 'B',
        target: '',
      },
      {
        measure: 'new host → published (debounce, reconcile, render)',
        value: publishMs,
        unit: 'ms',
        target: '',
      },
      { measure: `new host → last of ${EDGES} answers written`, value: delivered, unit: 'ms', target: '' },
      {
        measure: `new host → last of ${EDGES} answers seen received here`,
        value: received.max,
        unit: 'ms',
        target: '',
      },
      {
        measure: '  per edge: its own work on the answer p50 / max',
        value: `${work.p50.toFixed(1)} / ${work.max.toFixed(1)}`,
        unit: 'ms',
        target: '',
      },
      {
        measure: `new host → all ${EDGES} hold it verified, each on its own node (last written + slowest work)`,
        value: ownNodesMs,
        unit: 'ms',
        target: '≤ 2000',
      },
      {
        measure: `new host → all ${EDGES} hold it verified, all on this machine (wall clock)`,
        value: allHaveAt - addedAt,
        unit: 'ms',
        target: '',
      },
      {
        measure: '  per edge: new host → verified p50 (wall clock)',
        value: have.p50,
        unit: 'ms',
        target: '',
      },
      { measure: 'controller egress, total', value: controller.egressBytes, unit: 'B', target: '' },
      {
        measure: 'controller egress per edge',
        value: Math.round(egressPerEdge),
        unit: 'B',
        target: `≤ ${10 * controller.changedBytes}`,
      },
      {
        measure: 'controller egress per edge / changed bytes',
        value: egressPerEdge / controller.changedBytes,
        unit: '×',
        target: '≤ 10',
      },
      {
        measure: 'answer body per edge p50 (as received)',
        value: summary(perEdgeBytes).p50,
        unit: 'B',
        target: '',
      },
      { measure: 'controller CPU, new host → settled', value: controller.cpuMs, unit: 'ms', target: '' },
      {
        measure: 'controller RSS before → peak',
        value: `${controller.rssBeforeMiB} → ${controller.peakRssMiB}`,
        unit: 'MiB',
        target: '',
      },
      { measure: `first bundle to ${EDGES} fresh edges (startup)`, value: startupMs, unit: 'ms', target: '' },
    ];
    printTable(`Edge fan-out: one new host, ${EDGES} edges (${TRANSPORT})`, rows);
    writeResult(
      `edge-fanout-${TRANSPORT}`,
      {
        transport: TRANSPORT,
        services: SERVICES,
        tasks: SERVICES * TASKS_PER_SERVICE,
        edges: EDGES,
        bundleBytes: controller.bundleBytes,
        changedBytes: controller.changedBytes,
        publishMs,
        lastAnswerMs: delivered,
        allEdgesHaveItMs: allHaveAt - addedAt,
        perEdgeHaveItMs: have,
        lastAnswerReceivedMs: received.max,
        perEdgeWorkMs: work,
        allEdgesHaveItOwnNodesMs: ownNodesMs,
        egressBytes: controller.egressBytes,
        egressPerEdgeBytes: egressPerEdge,
        egressPerEdgeOverChanged: egressPerEdge / controller.changedBytes,
        answersWritten: controller.answers,
        controllerCpuMs: controller.cpuMs,
        controllerRssBeforeMiB: controller.rssBeforeMiB,
        controllerPeakRssMiB: controller.peakRssMiB,
        startupMs,
        transfers: {
          whole: [...new Set(edges.flatMap((edge) => edge.transfers.at(-1)?.whole ?? []))],
          edited: [...new Set(edges.flatMap((edge) => edge.transfers.at(-1)?.edited ?? []))],
          fallbacks: edges.filter((edge) => edge.transfers.at(-1)?.fallback).length,
        },
      },
      // No Docker here: no daemon lock to wait for.
      { docker: false },
    );
  } finally {
    stop.abort();
    await tls.remove();
    if (child.exitCode === null) child.kill();
  }
  // Keep-alive sockets of 500 channels would hold the process open.
  process.exit(0);
}

if (process.argv.includes('--controller')) await runController();
else await runBench();

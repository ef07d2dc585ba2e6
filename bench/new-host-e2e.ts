// Issue 17 item 2 end to end: at 2,000 HTTPS hosts, from a new host's task running (or a certificate's issuance) to
// that host served over HTTPS on an edge. Three processes, no Docker:
//   - a real controller (child process): fake Docker with 2,000 hosts of 10 tasks, each host HTTPS with an operator
//     certificate of its own name (one key pair, as bench/new-host.ts), ACME faked (an order waits until the bench
//     issues it), and the real `nginx -t` (the host's nginx, on the published bytes with the image's paths moved to
//     the repository's, test/support/loopback-channel.ts);
//   - one real edge agent (child process, as on a node of its own) with the host's nginx on loopback, fed by the
//     controller through the real HTTPS channel; the new hosts' task is a loopback backend in that process, and a
//     prober there opens a new HTTPS connection to the new name every few ms until the backend answers with the
//     right certificate;
//   - 500 simulated edges long-polling the same controller (this process, bench/fanout-parts.ts), which also runs the
//     samples.
// Per sample: (a) a new HTTPS service whose task runs (fake Docker lists it running and sends the event): when the
// controller published it, when the last simulated edge held it, when the real edge received it, served it over HTTPS
// (early routing, before its own reload) and confirmed its reload; (b) an HTTP host already served whose ACME
// certificate is issued: the same steps, from issuance to HTTPS.
import { fork } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import type { TLSSocket } from 'node:tls';
import type { AcmePort, IssuedCertificate, OrderInput } from '../src/acme/acme-adapter.ts';
import { deriveStateKey } from '../src/acme/state-store.ts';
import type { LoadedCertificate } from '../src/acme/user-certificates.ts';
import { readControllerConfig, readEdgeConfig } from '../src/config.ts';
import { startController } from '../src/controller/controller.ts';
import { createHttpsControllerChannel } from '../src/edge/controller-channel.ts';
import type { ControllerChannel, Transfer } from '../src/edge/controller-channel.ts';
import { startEdgeAgent } from '../src/edge/edge-agent.ts';
import { createNginxProcess } from '../src/edge/nginx-process.ts';
import { createLogger } from '../src/logger.ts';
import { EMPTY_MODEL } from '../src/model/routing-model.ts';
import { createNginxValidator, runNginxTest } from '../src/nginx/nginx-validator.ts';
import type { NginxValidator } from '../src/nginx/nginx-validator.ts';
import type { PublishedBundle } from '../src/publish/bundle-store.ts';
import { systemClock } from '../src/reconcile/clock.ts';
import { CERTIFICATES_FILE } from '../src/render/certificates-text.ts';
import { createTemplateRenderer } from '../src/render/nunjucks-env.ts';
import { renderConfig } from '../src/render/render-config.ts';
import { loopbackResolver, makeChannelKeyPair } from '../test/support/channel-tls.ts';
import { selfSigned } from '../test/support/fake-acme.ts';
import { loopbackChannel, loopbackPublished } from '../test/support/loopback-channel.ts';
import {
  freePort,
  get,
  loopbackConf,
  loopbackSetup,
  NGINX_BINARY,
  REPO_LUA_DIR,
  startBackend,
  TEST_CHANNEL_CERT_FILE,
  withConf,
} from '../test/support/loopback-nginx.ts';
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
const SAMPLES = SMOKE ? 2 : Number(process.env.BENCH_SAMPLES ?? 5);
/** Pause between a failed probe and the next one (each probe is a new TCP connection and TLS handshake). */
const PROBE_EVERY_MS = 3;
/** How long a step may take before the sample counts as failed. */
const STEP_TIMEOUT_MS = 30_000;
const TARGET_MS = 1000;
const BODY = '127.0.0.1';

const newHost = (k: number): string => `e2e-new-${k}.bench.example.com`;
const certHost = (k: number): string => `e2e-cert-${k}.bench.example.com`;

/** A host's certificate and key, and the SHA-256 fingerprint a client sees (X509Certificate.fingerprint256). */
interface Pems {
  readonly host: string;
  readonly certificatePem: string;
  readonly privateKeyPem: string;
}

interface ControllerSetup {
  readonly cmd: 'setup';
  readonly channel: { key: string; cert: string };
  readonly backendPort: number;
  /** Operator certificates of the new hosts (a). */
  readonly newCertificates: readonly Pems[];
  /** What the fake CA issues for the certificate hosts (b). */
  readonly issued: readonly Pems[];
}

type ToController =
  | ControllerSetup
  | { readonly cmd: 'add'; readonly kind: 'new' | 'cert'; readonly k: number }
  | { readonly cmd: 'issue'; readonly k: number }
  | { readonly cmd: 'report' };

/** What the controller says of one step: when it happened (task running, issuance) and the bundle it published. */
interface Published {
  readonly at: number;
  readonly publishedAt: number;
  readonly version: number;
  /** When the controller wrote the last of its answers with that bundle to the edges' polls. */
  readonly lastAnswerAt: number;
  /** The reconcile that published it (read Docker, model, render, nginx -t, publish): when it started, how long. */
  readonly reconcileStartedAt: number;
  readonly reconcileMs: number;
}

// ---------------------------------------------------------------------------------------------------------------
// The controller (child process).

/** A CA whose orders wait until the bench issues them; the issuance time is when the order's answer is handed over. */
class HeldAcme implements AcmePort {
  /** host → settles the order: with the certificate, or with the error that refuses it. */
  private readonly waiting = new Map<string, (refusal?: Error) => void>();
  private readonly material: ReadonlyMap<string, Pems>;
  constructor(material: ReadonlyMap<string, Pems>) {
    this.material = material;
  }
  async createAccountKey(): Promise<string> {
    return 'bench-account-key';
  }
  order(input: OrderInput): Promise<IssuedCertificate> {
    const host = input.domains[0] ?? '';
    const pems = this.material.get(host);
    if (!pems) return Promise.reject(new Error(`the bench issues no certificate for ${host}`));
    return new Promise((resolve, reject) =>
      this.waiting.set(host, (refusal) =>
        refusal
          ? reject(refusal)
          : resolve({
              certificatePem: pems.certificatePem,
              privateKeyPem: pems.privateKeyPem,
              accountUrl: 'https://ca.bench.invalid/acct/1',
            }),
      ),
    );
  }
  /** Refuses every waiting order: the controller's stop waits for its orders in flight. */
  cancel(): void {
    for (const [host, release] of this.waiting)
      release(new Error(`the bench stopped before issuing ${host}`));
    this.waiting.clear();
  }
  pending(host: string): boolean {
    return this.waiting.has(host);
  }
  /** Issues the held order for host now; the time of issuance. */
  issue(host: string): number {
    const release = this.waiting.get(host);
    if (!release) throw new Error(`no order for ${host} is waiting`);
    this.waiting.delete(host);
    const at = now();
    release();
    return at;
  }
}

async function runController(): Promise<void> {
  const send = (message: unknown): void => void process.send?.(message);
  const setup = await new Promise<ControllerSetup>((resolve) =>
    process.once('message', (message: ControllerSetup) => resolve(message)),
  );
  // Every background host presents one key pair under its own name (each its own certificates.pem section).
  const fixtures = new URL('../test/fixtures/', import.meta.url);
  const fixture = {
    certificatePem: readFileSync(new URL('test-only.crt', fixtures), 'utf8'),
    privateKeyPem: readFileSync(new URL('test-only.key', fixtures), 'utf8'),
  };
  const validity = { notBefore: '2026-01-01T00:00:00.000Z', notAfter: '2036-01-01T00:00:00.000Z' };
  const userCertificates: LoadedCertificate[] = [
    ...Array.from({ length: SERVICES }, (_, s) => ({
      name: `app${s}.bench.example.com`,
      domains: [`app${s}.bench.example.com`],
      ...fixture,
      ...validity,
    })),
    ...setup.newCertificates.map((pems) => ({ name: pems.host, domains: [pems.host], ...pems, ...validity })),
  ];
  const docker = new SyntheticDocker();
  for (let s = 0; s < SERVICES; s++) addService(docker, s);
  const acme = new HeldAcme(new Map(setup.issued.map((pems) => [pems.host, pems])));

  // The real nginx -t, on the published bytes with the image's paths moved to this machine's (it binds nothing).
  /** Each nginx -t: when it ended and how long it took. */
  const validations: [number, number][] = [];
  const stateDir = await mkdtemp(path.join(os.tmpdir(), 'swarmgate-bench-e2e-controller-'));
  const local = await loopbackSetup(stateDir);
  const nginxTest = createNginxValidator(NGINX_BINARY);
  const validator: NginxValidator = {
    async validate(files, signal) {
      const started = performance.now();
      try {
        return await nginxTest.validate(loopbackPublished(local, files), signal);
      } finally {
        validations.push([now(), performance.now() - started]);
      }
    },
  };
  const controller = await startController({
    config: readControllerConfig({
      SWARMGATE_LISTEN_PORT: '0',
      SWARMGATE_CHALLENGE_PORT: '0',
      SWARMGATE_HEALTH_PORT: '0',
      SWARMGATE_SLOW_POLL: '1h',
      SWARMGATE_EDGE_LONG_POLL: '25s',
      // The ACME location's proxy_ssl_trusted_certificate, loaded by nginx -t.
      SWARMGATE_CHANNEL_CERT_FILE: TEST_CHANNEL_CERT_FILE,
      SWARMGATE_ACME_DIRECTORY: 'https://ca.bench.invalid/directory',
    }),
    adminToken: 'bench-admin-token-0123456789abcdef',
    edgeToken: EDGE_TOKEN,
    channelTls: setup.channel,
    docker,
    validator,
    templates: createTemplateRenderer(),
    logger: createLogger('silent'),
    clock: systemClock,
    version: 'bench',
    acme,
    stateKey: deriveStateKey('bench-state-key-0123456789abcdef'),
    userCertificates,
  });

  const written = watchAnswers();
  /**
   * The first bundle published after `since` (a version) in which `holds` is true, once the controller has answered
   * every edge's poll with it (the simulated ones and the real one).
   */
  async function published(
    since: number,
    answersBefore: number,
    holds: (bundle: PublishedBundle) => boolean,
  ): Promise<Omit<Published, 'at'>> {
    let seen = since;
    for (const deadline = Date.now() + STEP_TIMEOUT_MS; Date.now() < deadline; await sleep(2)) {
      const current = controller.store.current;
      if (!current || current.version === seen) continue;
      seen = current.version;
      if (!holds(current)) continue;
      const publishedAt = Date.parse(current.publishedAt);
      // The reconcile that published it: the outcome whose run holds the publish (it ends a little after it).
      let reconcile: { startedAt: number; durationMs: number } | null = null;
      await waitFor(
        'the publishing reconcile to end',
        () => {
          const outcome = controller.reconciler.lastOutcome;
          const startedAt = outcome ? Date.parse(outcome.at) : NaN;
          if (outcome?.published && startedAt <= publishedAt && startedAt + outcome.durationMs >= publishedAt)
            reconcile = { startedAt, durationMs: outcome.durationMs };
          return reconcile !== null;
        },
        STEP_TIMEOUT_MS,
        1,
      );
      await waitFor(
        'the controller to answer every edge',
        () => written.answers - answersBefore >= EDGES + 1,
        STEP_TIMEOUT_MS,
      );
      const { startedAt, durationMs } = reconcile ?? { startedAt: NaN, durationMs: NaN };
      return {
        publishedAt,
        version: current.version,
        lastAnswerAt: written.lastAnswerAt,
        reconcileStartedAt: startedAt,
        reconcileMs: durationMs,
      };
    }
    throw new Error('the controller published no bundle with the change');
  }

  // Once, on the bench's word or when the bench is gone (its IPC channel closed: it ended or failed).
  let stopping: Promise<void> | null = null;
  const cleanup = (): Promise<void> =>
    (stopping ??= (async () => {
      acme.cancel();
      await controller.stop().catch((error: unknown) => console.error('controller stop:', error));
      await rm(stateDir, { recursive: true, force: true });
    })());
  process.once('disconnect', () => void cleanup().finally(() => process.exit(0)));
  // Ctrl-C reaches the whole process group, children included.
  for (const signal of ['SIGINT', 'SIGTERM'] as const)
    process.once(signal, () => void cleanup().finally(() => process.exit(1)));
  send({ port: controller.port });
  let nextService = SERVICES;
  process.on('message', (message: ToController) => {
    void (async () => {
      if (message.cmd === 'add') {
        const host = message.kind === 'new' ? newHost(message.k) : certHost(message.k);
        const since = controller.store.current?.version ?? 0;
        const answersBefore = written.answers;
        const s = nextService++;
        addService(docker, s, {
          labels: {
            VIRTUAL_HOST: host,
            VIRTUAL_PORT: String(setup.backendPort),
            ...(message.kind === 'cert' ? { LETSENCRYPT_HOST: host } : {}),
          },
          ips: ['127.0.0.1'],
        });
        // The task runs from here: Docker lists it running and says so.
        const at = now();
        docker.emit({ Type: 'service', Action: 'create', Actor: { ID: serviceId(s) } });
        const bundle = await published(since, answersBefore, (candidate) =>
          (candidate.files['nginx.conf'] ?? '').includes(`"${host}"`),
        );
        // A certificate host's order waits at the fake CA before the bench issues it.
        if (message.kind === 'cert') await waitFor(`the order for ${host}`, () => acme.pending(host), 60_000);
        send({ added: { ...bundle, at } });
      } else if (message.cmd === 'issue') {
        const host = certHost(message.k);
        const since = controller.store.current?.version ?? 0;
        const answersBefore = written.answers;
        const at = acme.issue(host);
        const bundle = await published(since, answersBefore, (candidate) =>
          (candidate.files[CERTIFICATES_FILE] ?? '').split('\n').some((line) => line.startsWith(`${host} `)),
        );
        send({ issued: { ...bundle, at } });
      } else if (message.cmd === 'report') {
        await cleanup();
        send({ report: { validations } });
        process.exit(0);
      }
    })().catch((error: unknown) => {
      console.error('controller:', error);
      void cleanup().finally(() => process.exit(1));
    });
  });
}

// ---------------------------------------------------------------------------------------------------------------
// The real edge (child process).

interface EdgeSetup {
  readonly cmd: 'setup';
  readonly port: number;
  readonly ca: string;
  readonly backendPort: number;
}

type ToEdge =
  | EdgeSetup
  | { readonly cmd: 'watch'; readonly host: string; readonly fingerprint: string }
  | { readonly cmd: 'result'; readonly host: string; readonly version: number }
  | { readonly cmd: 'stop' };

interface EdgeResult {
  /** The channel handed the agent the bundle (with the bench's move to loopback done). */
  readonly receivedAt: number;
  /** The bench's own work on that bundle (moving it to loopback ports): not done by an edge in production. */
  readonly rewriteMs: number;
  /** The answer's body as received, and whether it was a delta on the edge's bundle (not every file). */
  readonly answerBytes: number;
  readonly delta: boolean;
  /** First answer from the backend over HTTPS with the host's certificate. */
  readonly servedAt: number;
  /** The agent applied the bundle: nginx -t, the reload and nginx confirming it runs the new config. */
  readonly reloadedAt: number;
  readonly probes: number;
  readonly servedOverHttpBefore: boolean;
}

/** One HTTPS GET / to the loopback nginx for host: status, body and the certificate's fingerprint. */
function probe(port: number, host: string): Promise<{ status: number; body: string; fingerprint: string }> {
  return new Promise((resolve, reject) => {
    const request = https.get(
      {
        host: '127.0.0.1',
        port,
        servername: host,
        headers: { host },
        rejectUnauthorized: false,
        agent: false,
        timeout: 2000,
      },
      (res) => {
        const fingerprint =
          (res.socket as TLSSocket).getPeerX509Certificate?.()?.fingerprint256 ?? 'no certificate';
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (body += chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body, fingerprint }));
      },
    );
    request.on('timeout', () => request.destroy(new Error('probe timed out')));
    request.on('error', reject);
  });
}

async function runEdge(): Promise<void> {
  const send = (message: unknown): void => void process.send?.(message);
  const setup = await new Promise<EdgeSetup>((resolve) =>
    process.once('message', (message: EdgeSetup) => resolve(message)),
  );
  const stateDir = await mkdtemp(path.join(os.tmpdir(), 'swarmgate-bench-e2e-edge-'));
  const local = await loopbackSetup(stateDir);
  const backend = await startBackend(BODY, setup.backendPort);
  const templates = createTemplateRenderer();
  const channel = loopbackChannel(
    createHttpsControllerChannel({
      url: `https://swarmgate-controller:${setup.port}`,
      token: EDGE_TOKEN,
      ca: setup.ca,
      timeoutMs: 60_000,
      resolve: loopbackResolver(),
      deltas: true,
      observe: (transfer) => (lastTransfer = transfer),
    }),
    local,
  );
  let lastTransfer: Transfer | null = null;
  const received = new Map<number, { at: number; rewriteMs: number; transfer: Transfer | null }>();
  const observed: ControllerChannel = {
    async poll(report, signal) {
      const bundle = await channel.poll(report, signal);
      if (bundle) {
        received.set(bundle.version, { at: now(), rewriteMs: channel.lastRewriteMs, transfer: lastTransfer });
      }
      return bundle;
    },
  };
  const edge = await startEdgeAgent({
    config: readEdgeConfig(
      {
        SWARMGATE_STATE_DIR: stateDir,
        SWARMGATE_EDGE_HEALTH_PORT: '0',
        SWARMGATE_CONTROLLER_URL: `https://swarmgate-controller:${setup.port}`,
      },
      'edge-real',
    ),
    nodeId: 'node-real',
    channel: observed,
    nginx: createNginxProcess(NGINX_BINARY, local.proxy.peersSocket),
    testConfig: (confPath, signal) => runNginxTest(NGINX_BINARY, confPath, signal),
    templates,
    logger: createLogger(process.env.BENCH_EDGE_LOG ?? 'warn'),
    clock: systemClock,
    version: 'bench',
    // The built-in 503 config, on this set-up's loopback ports, until the first bundle.
    emptyBundle: () => {
      const files = renderConfig(
        EMPTY_MODEL,
        { proxy: local.proxy, generator: 'bench', luaDir: REPO_LUA_DIR },
        templates,
      );
      return withConf(files, loopbackConf(local, files['nginx.conf'] ?? ''));
    },
  });
  // When the agent's applied version moved: it moves once nginx confirmed the reload.
  const appliedAt = new Map<number, number>();
  const watchApplied = setInterval(() => {
    const version = edge.applied()?.version;
    if (version !== undefined && !appliedAt.has(version)) appliedAt.set(version, now());
  }, 1);
  await waitFor('the first bundle on the real edge', () => edge.applied() !== null, 600_000, 50);
  send({ ready: true });

  const watches = new Map<
    string,
    Promise<{ servedAt: number; probes: number; servedOverHttpBefore: boolean }>
  >();
  // Once, on the bench's word or when the bench is gone: nginx must not outlive the bench on its loopback ports.
  let stopping: Promise<void> | null = null;
  const cleanup = (): Promise<void> =>
    (stopping ??= (async () => {
      clearInterval(watchApplied);
      await edge.stop().catch((error: unknown) => console.error('edge stop:', error));
      await backend.close();
      await rm(stateDir, { recursive: true, force: true });
    })());
  process.once('disconnect', () => void cleanup().finally(() => process.exit(0)));
  // Ctrl-C reaches the whole process group, children included.
  for (const signal of ['SIGINT', 'SIGTERM'] as const)
    process.once(signal, () => void cleanup().finally(() => process.exit(1)));
  process.on('message', (message: ToEdge) => {
    void (async () => {
      if (message.cmd === 'watch') {
        const { host, fingerprint } = message;
        // A certificate host is served over HTTP already (sanity: the backend answers on port 80).
        const overHttp = await get(local.listenPort, host)
          .then((answer) => answer.status === 200 && answer.body === BODY)
          .catch(() => false);
        watches.set(
          host,
          (async () => {
            let probes = 0;
            const deadline = Date.now() + STEP_TIMEOUT_MS;
            while (Date.now() < deadline) {
              probes++;
              const answer = await probe(local.tlsPort, host).catch(() => null);
              if (answer?.status === 200 && answer.body === BODY && answer.fingerprint === fingerprint)
                return { servedAt: now(), probes, servedOverHttpBefore: overHttp };
              await sleep(PROBE_EVERY_MS);
            }
            throw new Error(
              `${host} was not served over HTTPS with its certificate within ${STEP_TIMEOUT_MS} ms`,
            );
          })(),
        );
        send({ watching: host });
      } else if (message.cmd === 'result') {
        const served = await watches.get(message.host);
        if (!served) throw new Error(`no watch for ${message.host}`);
        await waitFor(
          `the real edge to apply version ${message.version}`,
          () => [...appliedAt.keys()].some((version) => version >= message.version),
          STEP_TIMEOUT_MS,
        );
        const reloadedAt = Math.min(
          ...[...appliedAt].filter(([version]) => version >= message.version).map(([, at]) => at),
        );
        const delivery = [...received]
          .filter(([version]) => version >= message.version)
          .sort(([a], [b]) => a - b)[0]?.[1];
        const result: EdgeResult = {
          receivedAt: delivery?.at ?? NaN,
          rewriteMs: delivery?.rewriteMs ?? NaN,
          answerBytes: delivery?.transfer?.bytes ?? NaN,
          delta: delivery?.transfer?.base !== null && delivery?.transfer?.fallback === null,
          reloadedAt,
          ...served,
        };
        send({ result });
      } else if (message.cmd === 'stop') {
        await cleanup();
        send({ stopped: true });
        process.exit(0);
      }
    })().catch((error: unknown) => {
      console.error('edge:', error);
      void cleanup().finally(() => process.exit(1));
    });
  });
}

// ---------------------------------------------------------------------------------------------------------------
// The samples (this process, with the simulated edges).

interface Sample {
  readonly kind: 'new host' | 'certificate';
  readonly host: string;
  readonly version: number;
  /** Milliseconds from the task running (a) or the issuance (b). */
  readonly publishedMs: number;
  /** From the change to the start of the reconcile that published it (the debounce, a reconcile in flight). */
  readonly reconcileStartMs: number;
  readonly reconcileMs: number;
  readonly lastAnswerWrittenMs: number;
  /** The last answer written, plus the slowest simulated edge's own work on its answer: each edge on its own node. */
  readonly lastEdgeOwnNodeMs: number;
  /** All simulated edges share this process's core: the wall clock counts the others' work too. */
  readonly lastSimulatedEdgeMs: number;
  readonly simulatedEdgeWorkMs: { p50: number; max: number };
  readonly realEdgeReceivedMs: number;
  readonly realEdgeServedMs: number;
  /** The same, less the bench's move of the bundle to loopback ports (what an edge in production would show). */
  readonly realEdgeServedLessRewriteMs: number;
  readonly realEdgeReloadedMs: number;
  readonly rewriteMs: number;
  readonly answerBytes: number;
  readonly delta: boolean;
  readonly probes: number;
  readonly servedOverHttpBefore: boolean;
}

function pems(host: string): Pems {
  return { host, ...selfSigned([host], 90) };
}

const fingerprintOf = (pem: string): string => new X509Certificate(pem).fingerprint256;

async function runBench(): Promise<void> {
  const channel = await makeChannelKeyPair();
  const backendPort = await freePort();
  const newCertificates = Array.from({ length: SAMPLES }, (_, k) => pems(newHost(k)));
  const issued = Array.from({ length: SAMPLES }, (_, k) => pems(certHost(k)));
  const children: ChildProcess[] = [];
  const spawn = (role: string): ChildProcess => {
    const child = fork(import.meta.filename, [role, ...process.argv.slice(2)], {
      execArgv: process.execArgv,
      // The real edge's nginx writes its access log (on, as in production) to stdout: not into the bench's output.
      stdio: ['ignore', role === '--edge' ? 'ignore' : 'inherit', 'inherit', 'ipc'],
    });
    children.push(child);
    return child;
  };
  const stop = new AbortController();
  const load: number[] = [];
  const loadTimer = setInterval(() => load.push(os.loadavg()[0] ?? NaN), 2000);
  try {
    const controller = spawn('--controller');
    const port = await ask<number>(
      controller,
      {
        cmd: 'setup',
        channel: { key: channel.key, cert: channel.cert },
        backendPort,
        newCertificates,
        issued,
      },
      'port',
    );
    const startup = performance.now();
    const realEdge = spawn('--edge');
    const realEdgeReady = ask<boolean>(
      realEdge,
      { cmd: 'setup', port, ca: channel.cert, backendPort } satisfies EdgeSetup,
      'ready',
    );
    const edges = startSimulatedEdges({
      port,
      ca: channel.cert,
      count: EDGES,
      transport: 'delta',
      stop: stop.signal,
    });
    await waitFor(
      'every simulated edge to hold the first bundle',
      () => edges.every((edge) => edge.applied),
      600_000,
    );
    await realEdgeReady;
    const startupMs = performance.now() - startup;
    console.log(
      `startup: ${EDGES} simulated edges and the real edge hold the first bundle after ${Math.round(startupMs)} ms`,
    );
    // Let every edge's next poll reach the controller and wait there.
    await sleep(2000);
    const loadBefore = os.loadavg();
    const samplesFrom = now();
    load.length = 0;

    const samples: Sample[] = [];
    const measure = async (
      kind: Sample['kind'],
      host: string,
      certificatePem: string,
      change: () => Promise<Published>,
    ): Promise<void> => {
      await ask(
        realEdge,
        { cmd: 'watch', host, fingerprint: fingerprintOf(certificatePem) } satisfies ToEdge,
        'watching',
      );
      const step = await change();
      await waitFor(
        `every simulated edge to hold version ${step.version}`,
        () => edges.every((edge) => (edge.applied?.version ?? 0) >= step.version),
        STEP_TIMEOUT_MS,
      );
      const lastSimulated = Math.max(...edges.map((edge) => edge.haveAt));
      const work = summary(edges.map((edge) => edge.workMs));
      const edge = await ask<EdgeResult>(
        realEdge,
        { cmd: 'result', host, version: step.version } satisfies ToEdge,
        'result',
      );
      const sample: Sample = {
        kind,
        host,
        version: step.version,
        publishedMs: step.publishedAt - step.at,
        reconcileStartMs: step.reconcileStartedAt - step.at,
        reconcileMs: step.reconcileMs,
        lastAnswerWrittenMs: step.lastAnswerAt - step.at,
        lastEdgeOwnNodeMs: step.lastAnswerAt - step.at + work.max,
        lastSimulatedEdgeMs: lastSimulated - step.at,
        simulatedEdgeWorkMs: { p50: work.p50, max: work.max },
        realEdgeReceivedMs: edge.receivedAt - step.at,
        realEdgeServedMs: edge.servedAt - step.at,
        realEdgeServedLessRewriteMs: edge.servedAt - step.at - edge.rewriteMs,
        realEdgeReloadedMs: edge.reloadedAt - step.at,
        rewriteMs: edge.rewriteMs,
        answerBytes: edge.answerBytes,
        delta: edge.delta,
        probes: edge.probes,
        servedOverHttpBefore: edge.servedOverHttpBefore,
      };
      samples.push(sample);
      console.log(
        `${kind} ${host}: published ${sample.publishedMs.toFixed(0)} ms, last answer written ${sample.lastAnswerWrittenMs.toFixed(0)} ms, ` +
          `last of ${EDGES} edges ${sample.lastEdgeOwnNodeMs.toFixed(0)} ms on own nodes (${sample.lastSimulatedEdgeMs.toFixed(0)} ms in one process), ` +
          `real edge received ${sample.realEdgeReceivedMs.toFixed(0)} ms, served over HTTPS ${sample.realEdgeServedMs.toFixed(0)} ms, ` +
          `reloaded ${sample.realEdgeReloadedMs.toFixed(0)} ms`,
      );
      // The reload's old workers leave, and the edges' next polls settle, before the next sample.
      await sleep(1500);
    };

    // (a) New hosts, one after another.
    for (let k = 0; k < SAMPLES; k++) {
      const certificate = newCertificates[k] as Pems;
      await measure('new host', certificate.host, certificate.certificatePem, () =>
        ask<Published>(controller, { cmd: 'add', kind: 'new', k } satisfies ToController, 'added'),
      );
    }
    // (b) Certificates: the host is added and served over HTTP first (its order waits at the fake CA), then issued.
    for (let k = 0; k < SAMPLES; k++) {
      const certificate = issued[k] as Pems;
      const added = await ask<Published>(
        controller,
        { cmd: 'add', kind: 'cert', k } satisfies ToController,
        'added',
      );
      await waitFor(
        `every simulated edge to hold version ${added.version}`,
        () => edges.every((edge) => (edge.applied?.version ?? 0) >= added.version),
        STEP_TIMEOUT_MS,
      );
      await sleep(1500);
      await measure('certificate', certificate.host, certificate.certificatePem, () =>
        ask<Published>(controller, { cmd: 'issue', k } satisfies ToController, 'issued'),
      );
    }
    const loadAfter = os.loadavg();
    // The simulated edges stop polling first: the controller they poll stops next.
    stop.abort();
    await ask(realEdge, { cmd: 'stop' } satisfies ToEdge, 'stopped');
    const { validations } = await ask<{ validations: [number, number][] }>(
      controller,
      { cmd: 'report' } satisfies ToController,
      'report',
    );
    const validationMs = validations.filter(([at]) => at >= samplesFrom).map(([, ms]) => ms);

    const rows: Record<string, unknown>[] = [];
    const steps: [keyof Sample, string][] = [
      ['reconcileStartMs', 'the publishing reconcile started (debounce)'],
      ['reconcileMs', '  the publishing reconcile took (to its end, just after the publish)'],
      ['publishedMs', 'controller published'],
      ['lastAnswerWrittenMs', `controller wrote the last of ${EDGES + 1} answers`],
      ['lastEdgeOwnNodeMs', `last of ${EDGES} simulated edges holds it, each on its own node`],
      ['lastSimulatedEdgeMs', `last of ${EDGES} simulated edges holds it, all in one process (wall clock)`],
      ['realEdgeReceivedMs', 'real edge received it'],
      ['realEdgeServedMs', 'real edge serves it over HTTPS'],
      ['realEdgeServedLessRewriteMs', "  the same, less the bench's move to loopback"],
      ['realEdgeReloadedMs', 'real edge reloaded (own server block)'],
    ];
    const figures: Record<string, Record<string, ReturnType<typeof summary>>> = {};
    for (const kind of ['new host', 'certificate'] as const) {
      const of = samples.filter((sample) => sample.kind === kind);
      const from = kind === 'new host' ? 'task running' : 'issuance';
      const perStep: Record<string, ReturnType<typeof summary>> = {};
      figures[kind] = perStep;
      for (const [key, label] of steps) {
        const stats = summary(of.map((sample) => sample[key] as number));
        perStep[key] = stats;
        rows.push({
          step: label.startsWith('  ') ? `${kind}: ${label}` : `${kind}: ${from} → ${label}`,
          n: stats.n,
          p50: stats.p50,
          p95: stats.p95,
          max: stats.max,
          unit: 'ms',
          target: key === 'realEdgeServedMs' || key === 'realEdgeServedLessRewriteMs' ? `≤ ${TARGET_MS}` : '',
        });
      }
    }
    const rewrite = summary(samples.map((sample) => sample.rewriteMs));
    rows.push({
      step: "  bench's move of each bundle to loopback ports (real edge, not in production)",
      n: rewrite.n,
      p50: rewrite.p50,
      p95: rewrite.p95,
      max: rewrite.max,
      unit: 'ms',
      target: '',
    });
    const answers = summary(samples.map((sample) => sample.answerBytes));
    rows.push({
      step: `  real edge's answer body (a delta on its bundle in ${samples.filter((sample) => sample.delta).length} of ${samples.length})`,
      n: answers.n,
      p50: answers.p50,
      p95: answers.p95,
      max: answers.max,
      unit: 'B',
      target: '',
    });
    const tests = summary(validationMs);
    rows.push({
      step: "  controller's nginx -t (each during the samples)",
      n: tests.n,
      p50: tests.p50,
      p95: tests.p95,
      max: tests.max,
      unit: 'ms',
      target: '',
    });
    const load1 = summary(load);
    rows.push({
      step: 'load average (1 min) during the run',
      n: load1.n,
      p50: load1.p50,
      p95: load1.p95,
      max: load1.max,
      unit: `on ${os.cpus().length} CPUs`,
      target: '',
    });
    const servedEarly = samples.filter(
      (sample) => sample.realEdgeServedMs < sample.realEdgeReloadedMs,
    ).length;
    printTable(
      `New host and certificate, end to end: ${SERVICES} HTTPS hosts (${SERVICES * TASKS_PER_SERVICE} tasks), ` +
        `${EDGES} simulated edges + 1 real edge; served before the real edge's reload in ${servedEarly} of ${samples.length}`,
      rows,
    );
    writeResult(
      'new-host-e2e',
      {
        services: SERVICES,
        tasks: SERVICES * TASKS_PER_SERVICE,
        edges: EDGES,
        samplesPerCase: SAMPLES,
        probeEveryMs: PROBE_EVERY_MS,
        targetMs: TARGET_MS,
        startupMs,
        figures,
        rewriteMs: rewrite,
        controllerValidationMs: validationMs,
        servedBeforeReload: servedEarly,
        loadAverage: { before: loadBefore, after: loadAfter, during1m: load },
        samples,
        rows,
      },
      { docker: false },
    );
    const late = samples.filter((sample) => !(sample.realEdgeServedMs <= TARGET_MS));
    if (late.length > 0)
      console.log(`\n${late.length} of ${samples.length} samples took longer than ${TARGET_MS} ms`);
  } finally {
    clearInterval(loadTimer);
    stop.abort();
    await channel.remove();
    // Each child stops its part (the controller, the edge and its nginx) and removes its files when the channel closes.
    for (const child of children) if (child.connected) child.disconnect();
  }
  // Keep-alive sockets of 500 channels would hold the process open.
  process.exit(0);
}

if (process.argv.includes('--controller')) await runController();
else if (process.argv.includes('--edge')) await runEdge();
else await runBench();

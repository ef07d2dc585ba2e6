// Shared by the benches where a real controller (a child process, fake Docker) serves simulated edges that long-poll
// it with the real channel code: bench/edge-fanout.ts and bench/new-host-e2e.ts.
import type { ChildProcess } from 'node:child_process';
import diagnostics from 'node:diagnostics_channel';
import { performance } from 'node:perf_hooks';
import type { RawService, RawTask, TaskFilter } from '../src/docker/docker-port.ts';
import { createHttpsControllerChannel } from '../src/edge/controller-channel.ts';
import type { Transfer } from '../src/edge/controller-channel.ts';
import { fileHashes } from '../src/publish/bundle-delta.ts';
import type { BaseSource } from '../src/publish/bundle-delta.ts';
import type { EdgeReport, PublishedBundle } from '../src/publish/bundle-store.ts';
import { fingerprintBundle } from '../src/render/render-config.ts';
import type { BundleFiles } from '../src/render/render-config.ts';
import { loopbackResolver } from '../test/support/channel-tls.ts';
import { FakeDocker, rawService, rawTask } from '../test/support/fake-docker.ts';
import { sleep } from './support.ts';

export const TASKS_PER_SERVICE = 10;
export const EDGE_TOKEN = 'bench-edge-token-0123456789abcdef';
/** Wall-clock milliseconds with sub-millisecond resolution, comparable between the bench's processes. */
export const now = (): number => performance.timeOrigin + performance.now();

/** The test fake deep-copies every list; a real client hands over freshly parsed JSON (see controller-scale). */
export class SyntheticDocker extends FakeDocker {
  override async listServices(): Promise<RawService[]> {
    return this.services;
  }
  override async listTasks<T = RawTask>(
    _signal?: AbortSignal,
    _filter?: TaskFilter,
    convert?: (task: RawTask) => T,
  ): Promise<T[]> {
    return convert ? this.tasks.map(convert) : (this.tasks as T[]);
  }
}

export const serviceId = (s: number): string => `svc${String(s).padStart(5, '0')}`;

/** Service number s (host app<s>.bench.example.com unless labels say otherwise) with its running tasks. */
export function addService(
  docker: FakeDocker,
  s: number,
  { labels = {}, ips }: { labels?: Record<string, string>; ips?: readonly string[] } = {},
): void {
  const id = serviceId(s);
  const addresses =
    ips ??
    Array.from({ length: TASKS_PER_SERVICE }, (_, t) => {
      const n = s * TASKS_PER_SERVICE + t;
      return `10.${Math.floor(n / 65536) + 1}.${Math.floor(n / 256) % 256}.${n % 256}`;
    });
  docker.services.push(
    rawService(id, { VIRTUAL_HOST: `app${s}.bench.example.com`, ...labels }, { replicas: addresses.length }),
  );
  addresses.forEach((ip, t) => docker.tasks.push(rawTask(`${id}-t${t}`, id, ip)));
}

/** In the controller's process: how many edge polls it answered with a bundle, and when it wrote the last one. */
export function watchAnswers(): { readonly answers: number; readonly lastAnswerAt: number } {
  const counts = { answers: 0, lastAnswerAt: 0 };
  diagnostics.subscribe('http.server.response.finish', (message) => {
    const { request, response } = message as {
      request: { url?: string };
      response: { statusCode: number };
    };
    if (response.statusCode === 200 && request.url?.startsWith('/v1/edge/poll')) {
      counts.answers++;
      counts.lastAnswerAt = now();
    }
  });
  return counts;
}

export interface SimulatedEdge {
  applied: { version: number; fingerprint: string } | null;
  haveAt: number;
  receivedAt: number;
  bytes: number;
  workMs: number;
  transfers: Transfer[];
}

/**
 * Verified bundles in memory, shared by every edge that holds the same fingerprint (each real edge has its own on
 * its volume). Every edge still receives, gunzips, patches and checks its own answer.
 */
const bases = new Map<string, { files: BundleFiles; hashes: ReadonlyMap<string, string> }>();
function baseOf(bundle: PublishedBundle): BaseSource {
  let known = bases.get(bundle.fingerprint);
  if (!known) {
    known = { files: bundle.files, hashes: fileHashes(bundle.files) };
    bases.set(bundle.fingerprint, known);
  }
  const files = known.files;
  return { fingerprint: bundle.fingerprint, hashes: known.hashes, read: async (name) => files[name] ?? null };
}

/**
 * `count` edges long-polling the controller on `port` from this process.
 *   transport 'full'   the previous release's transport (the whole bundle, as JSON, to every edge)
 *   transport 'delta'  only what changed since each edge's bundle
 */
export function startSimulatedEdges(options: {
  port: number;
  ca: string;
  count: number;
  transport: string;
  stop: AbortSignal;
}): SimulatedEdge[] {
  const { port, ca, count, transport, stop } = options;
  const edges: SimulatedEdge[] = [];
  for (let i = 0; i < count; i++) {
    const edge: SimulatedEdge = {
      applied: null,
      haveAt: 0,
      receivedAt: 0,
      bytes: 0,
      workMs: 0,
      transfers: [],
    };
    edges.push(edge);
    const channel = createHttpsControllerChannel({
      url: `https://swarmgate-controller:${port}`,
      token: EDGE_TOKEN,
      ca,
      timeoutMs: 60_000,
      resolve: loopbackResolver(),
      dnsWatchMs: 5000,
      deltas: transport === 'delta',
      observe: (transfer) => edge.transfers.push(transfer),
    });
    let base: BaseSource | null = null;
    void (async () => {
      while (!stop.aborted) {
        const report: EdgeReport = {
          edge: `edge-${i}`,
          node: `node-${i}`,
          applied: edge.applied,
          rejected: null,
          reloads: 0,
          peerUpdates: 0,
        };
        try {
          const bundle = await channel.poll(report, stop, base);
          if (!bundle) continue;
          const transfer = edge.transfers.at(-1);
          let checkMs = 0;
          if (transport === 'full') {
            // The previous release's edge checked the fingerprint first thing in apply; the delta channel checks
            // it (and every file's hash) before it returns, inside its workMs.
            const checking = performance.now();
            if (fingerprintBundle(bundle.files) !== bundle.fingerprint)
              throw new Error('fingerprint mismatch');
            checkMs = performance.now() - checking;
          }
          edge.applied = { version: bundle.version, fingerprint: bundle.fingerprint };
          edge.haveAt = now();
          edge.receivedAt = transfer?.receivedAt ?? edge.haveAt;
          edge.workMs = (transfer?.workMs ?? 0) + checkMs;
          edge.bytes = transfer?.bytes ?? 0;
          base = baseOf(bundle);
        } catch (error) {
          if (stop.aborted) return;
          console.error(`edge-${i}:`, error);
          await sleep(500);
        }
      }
    })();
  }
  return edges;
}

export async function waitFor(
  what: string,
  condition: () => boolean | Promise<boolean>,
  timeoutMs: number,
  everyMs = 5,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

/** Sends a child process a message and resolves with the first reply that has `key`; rejects if the child exits. */
export function ask<T>(child: ChildProcess, message: unknown, key: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const done = (): void => {
      child.off('message', listener);
      child.off('exit', exited);
    };
    const listener = (reply: Record<string, unknown>): void => {
      if (key in reply) {
        done();
        resolve(reply[key] as T);
      }
    };
    // A reply sent just before the child exits may still be on its way: it wins if it comes within a second.
    const exited = (code: number | null, signal: string | null): void =>
      void setTimeout(() => {
        done();
        reject(new Error(`the child process exited (${signal ?? code}) before it answered "${key}"`));
      }, 1000);
    child.on('message', listener);
    child.once('exit', exited);
    child.send(message as object);
  });
}

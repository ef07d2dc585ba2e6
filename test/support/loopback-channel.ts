// A real edge agent with a real nginx on loopback, fed by a real controller: the controller renders for the image
// (ports 80 and 443, /app/lua, /run sockets, the image's placeholder certificate), which a test machine's nginx can
// neither bind nor find. This channel hands the agent each bundle the controller published with those lines moved
// to the loopback set-up (as test/integration/admin-host-nginx.test.ts does for one bundle), and speaks to the
// controller in its own terms: reports name the controller's fingerprints and deltas build on the controller's
// files, so the controller sees an edge in sync and sends it only what changed.
import { performance } from 'node:perf_hooks';
import { EDGE_PEERS_SOCKET } from '../../src/config.ts';
import type { ControllerChannel } from '../../src/edge/controller-channel.ts';
import { fileHashes } from '../../src/publish/bundle-delta.ts';
import type { BaseSource } from '../../src/publish/bundle-delta.ts';
import type { AppliedBundle, EdgeReport, PublishedBundle } from '../../src/publish/bundle-store.ts';
import { fingerprintBundle, IMAGE_LUA_DIR } from '../../src/render/render-config.ts';
import type { BundleFiles } from '../../src/render/render-config.ts';
import { loopbackConf, REPO_LUA_DIR, withConf } from './loopback-nginx.ts';
import type { LoopbackSetup } from './loopback-nginx.ts';

/** A bundle as the controller rendered it, moved to the loopback set-up: listen lines, pid, log, Lua, sockets. */
export function loopbackPublished(setup: LoopbackSetup, files: BundleFiles): BundleFiles {
  const conf = loopbackConf(setup, files['nginx.conf'] ?? '')
    .replaceAll(IMAGE_LUA_DIR, REPO_LUA_DIR)
    .replaceAll(EDGE_PEERS_SOCKET, setup.proxy.peersSocket);
  return withConf(files, conf);
}

export interface LoopbackChannel extends ControllerChannel {
  /** The controller's bundle behind a fingerprint the agent holds (null: not one this channel handed over). */
  published(localFingerprint: string): PublishedBundle | null;
  /** How long moving the last bundle to loopback took (work an edge in production does not do). */
  readonly lastRewriteMs: number;
}

export function loopbackChannel(inner: ControllerChannel, setup: LoopbackSetup): LoopbackChannel {
  /** local fingerprint → the controller's bundle, and its file hashes once asked for as a base. */
  const known = new Map<string, { bundle: PublishedBundle; hashes?: ReadonlyMap<string, string> }>();
  let lastRewriteMs = 0;
  const theirs = <T extends { fingerprint: string } | null>(mine: T): T =>
    mine === null
      ? mine
      : { ...mine, fingerprint: known.get(mine.fingerprint)?.bundle.fingerprint ?? mine.fingerprint };
  const baseOf = (applied: AppliedBundle | null): BaseSource | null => {
    const entry = applied ? known.get(applied.fingerprint) : undefined;
    if (!entry) return null;
    entry.hashes ??= fileHashes(entry.bundle.files);
    const files = entry.bundle.files;
    return {
      fingerprint: entry.bundle.fingerprint,
      hashes: entry.hashes,
      read: async (name) => files[name] ?? null,
    };
  };
  return {
    get lastRewriteMs() {
      return lastRewriteMs;
    },
    published: (localFingerprint) => known.get(localFingerprint)?.bundle ?? null,
    async poll(report: EdgeReport, signal: AbortSignal): Promise<PublishedBundle | null> {
      const translated: EdgeReport = {
        ...report,
        applied: theirs(report.applied),
        rejected: theirs(report.rejected),
      };
      const bundle = await inner.poll(translated, signal, baseOf(report.applied));
      if (!bundle) return null;
      const started = performance.now();
      const files = loopbackPublished(setup, bundle.files);
      const fingerprint = fingerprintBundle(files);
      lastRewriteMs = performance.now() - started;
      // The applied bundle and the one before it are all a base or a report can name.
      const keep = report.applied ? known.get(report.applied.fingerprint) : undefined;
      known.clear();
      if (report.applied && keep) known.set(report.applied.fingerprint, keep);
      known.set(fingerprint, { bundle });
      return { ...bundle, files, fingerprint };
    },
  };
}

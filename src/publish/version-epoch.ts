// Bundle versions come from Swarm, never from what edges report. Each controller process takes an epoch: the Raft
// index (Version.Index) at which Swarm stored a small Docker config it creates for the purpose and removes at once.
// Raft indexes only grow, across controller restarts, moves to another manager and leader elections, so a later
// controller's epoch is always higher, and versions epoch·2^20 + counter only move forward. An edge token holder
// can report any version it likes: the controller records it and never follows it (review of the security work,
// item 2: a report of 2^40 once made a restarted controller refuse every honest edge).
import { randomBytes } from 'node:crypto';
import type { DockerPort } from '../docker/docker-port.ts';
import { SwarmgateError } from '../errors.ts';
import { instancePrefix, LABEL_INSTANCE } from '../acme/state-store.ts';

const LABEL_EPOCH = 'swarmgate.version-epoch';

/** Publishes one epoch can number; the controller takes a new epoch long before they run out. */
export const VERSION_COUNTER_BITS = 20;
export const VERSIONS_PER_EPOCH = 2 ** VERSION_COUNTER_BITS;
/** epoch·2^20 + counter stays a safe integer (2^53) for any epoch below this: 8.6 billion Raft entries. */
export const MAX_VERSION_EPOCH = 2 ** (53 - VERSION_COUNTER_BITS) - 1;

/** The first version of an epoch is epoch·2^20 + 1. */
export function versionOf(epoch: number, counter: number): number {
  return epoch * VERSIONS_PER_EPOCH + counter;
}

/**
 * Creates a config, reads the Raft index Swarm stored it at, and removes it (and any such config an earlier process
 * of this instance left behind when it died between the two steps).
 */
export async function acquireVersionEpoch(
  docker: DockerPort,
  instance: string,
  signal: AbortSignal,
): Promise<number> {
  const name = `${instancePrefix(instance)}-epoch-${randomBytes(6).toString('hex')}`;
  const id = await docker.createConfig(
    name,
    { [LABEL_EPOCH]: '1', [LABEL_INSTANCE]: instance },
    Buffer.from('version epoch\n'),
    signal,
  );
  const listed = await docker.listConfigs(LABEL_EPOCH, signal);
  const mine = listed.find((config) => config.ID === id);
  const epoch = mine?.Version?.Index;
  for (const config of listed) {
    const leftover =
      config.ID !== undefined &&
      config.Spec?.Labels?.[LABEL_INSTANCE] === instance &&
      (config.ID === id || (config.Version?.Index ?? 0) < (epoch ?? 0));
    if (leftover) await docker.removeConfig(config.ID ?? '', signal).catch(() => undefined);
  }
  if (epoch === undefined || !Number.isSafeInteger(epoch) || epoch < 1 || epoch > MAX_VERSION_EPOCH) {
    throw new SwarmgateError(
      'ERR_VERSION_EPOCH',
      `Swarm gave config ${name} no usable version index (${String(epoch)})`,
    );
  }
  return epoch;
}

// Swarm events are only triggers. On every (re)connect the controller resyncs in full, because the daemon replays
// just 256 events and drops events for slow readers; a lost stream is retried with backoff.
import type { DockerEvent, DockerPort } from '../docker/docker-port.ts';
import { describeError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import type { Clock } from '../reconcile/clock.ts';

export interface EventWatcherOptions {
  readonly docker: DockerPort;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly signal: AbortSignal;
  /** Called once subscribed, so nothing between the last list and the subscription is missed. */
  readonly onConnect: () => void;
  readonly onEvent: (event: DockerEvent) => void;
  readonly initialBackoffMs?: number;
  readonly maxBackoffMs?: number;
}

export async function watchSwarmEvents(options: EventWatcherOptions): Promise<void> {
  const { docker, clock, logger, signal } = options;
  const initial = options.initialBackoffMs ?? 500;
  const max = options.maxBackoffMs ?? 30_000;
  let backoff = initial;
  while (!signal.aborted) {
    try {
      const events = await docker.openEventStream(signal);
      logger.info('subscribed to swarm events; resyncing');
      options.onConnect();
      backoff = initial;
      for await (const event of events) options.onEvent(event);
    } catch (error) {
      if (signal.aborted) break;
      logger.warn(
        { err: describeError(error), retryInMs: backoff },
        'swarm event stream lost; edges keep serving',
      );
    }
    if (signal.aborted) break;
    await sleep(clock, backoff, signal);
    backoff = Math.min(backoff * 2, max);
  }
}

export function sleep(clock: Clock, ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = clock.setTimer(ms, () => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    });
    const onAbort = (): void => {
      timer.cancel();
      resolve();
    };
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

// The controller role: discovery triggers, the reconcile loop, and the HTTP API, wired together.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { ControllerConfig } from '../config.ts';
import type { DockerPort } from '../docker/docker-port.ts';
import { sleep, watchSwarmEvents } from '../discovery/event-watcher.ts';
import type { Logger } from '../logger.ts';
import type { NginxValidator } from '../nginx/nginx-validator.ts';
import { BundleStore } from '../publish/bundle-store.ts';
import type { Clock } from '../reconcile/clock.ts';
import { Reconciler } from '../reconcile/reconciler.ts';
import type { TemplateRenderer } from '../render/nunjucks-env.ts';
import { createControllerRouter } from './controller-api.ts';

export interface ControllerDeps {
  readonly config: ControllerConfig;
  readonly token: string;
  readonly docker: DockerPort;
  readonly validator: NginxValidator;
  readonly templates: TemplateRenderer;
  readonly logger: Logger;
  readonly clock: Clock;
  readonly version: string;
}

export interface RunningController {
  readonly port: number;
  readonly store: BundleStore;
  readonly reconciler: Reconciler;
  stop(): Promise<void>;
}

export async function startController(deps: ControllerDeps): Promise<RunningController> {
  const { config, logger, clock } = deps;
  const shutdown = new AbortController();
  const store = new BundleStore(clock);
  const reconciler = new Reconciler(
    {
      docker: deps.docker,
      validator: deps.validator,
      templates: deps.templates,
      store,
      logger: logger.child({ component: 'reconciler' }),
      clock,
    },
    {
      networks: config.networks,
      debounce: config.debounce,
      fastPollMs: config.fastPollMs,
      fastPollWindowMs: config.fastPollWindowMs,
      proxy: config.proxy,
      generator: deps.version,
    },
  );

  const router = createControllerRouter({
    token: deps.token,
    store,
    reconciler,
    version: deps.version,
    edgeLongPollMs: config.edgeLongPollMs,
  });
  const server = http.createServer((req, res) => void router.handle(req, res));
  server.keepAliveTimeout = 75_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(config.listenPort, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  logger.info({ port, networks: config.networks }, 'controller listening');

  const watcher = watchSwarmEvents({
    docker: deps.docker,
    clock,
    logger: logger.child({ component: 'events' }),
    signal: shutdown.signal,
    onConnect: () => void reconciler.reconcileNow(),
    onEvent: (event) => reconciler.trigger(`${event.Type ?? '?'}:${event.Action ?? '?'}`),
  });

  // Task state changes and node loss emit no events: a slow poll is the safety net.
  const slowPoll = (async () => {
    while (!shutdown.signal.aborted) {
      await sleep(clock, config.slowPollMs, shutdown.signal);
      if (!shutdown.signal.aborted) reconciler.trigger('poll');
    }
  })();

  return {
    port,
    store,
    reconciler,
    async stop() {
      shutdown.abort();
      reconciler.stop();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      await Promise.allSettled([watcher, slowPoll, reconciler.idle()]);
      logger.info('controller stopped');
    },
  };
}

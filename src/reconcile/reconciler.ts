// The one loop that owns concurrency: triggers → debounce → one reconcile at a time (latest wins) →
// fetchSnapshot → buildRoutingModel → renderConfig → fingerprint → nginx -t → publish.
import type { DebounceWindow, ProxySettings } from '../config.ts';
import type { DockerPort } from '../docker/docker-port.ts';
import { fetchSnapshot } from '../discovery/snapshot.ts';
import type { Snapshot } from '../discovery/snapshot.ts';
import { describeError, SwarmgateError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import { NO_CERTIFICATES } from '../acme/certificate-manager.ts';
import type { CertificateSource } from '../acme/certificate-manager.ts';
import { buildRoutingModel, DEFAULT_TLS, EMPTY_MODEL, lookupLabel } from '../model/routing-model.ts';
import type { RoutingModel, TlsDefaults } from '../model/routing-model.ts';
import { compareProblems } from '../model/problems.ts';
import type { Problem } from '../model/problems.ts';
import type { NginxValidator } from '../nginx/nginx-validator.ts';
import type { BundleStore } from '../publish/bundle-store.ts';
import { fingerprintBundle, renderConfig, renderedShape } from '../render/render-config.ts';
import type { BundleFiles } from '../render/render-config.ts';
import type { TemplateRenderer } from '../render/nunjucks-env.ts';
import type { Clock, TimerHandle } from './clock.ts';
import { unconvergedServices } from './convergence.ts';
import { Debouncer } from './debounce.ts';
import { SingleFlight } from './queues.ts';
import { Histogram } from '../metrics.ts';

export interface ReconcilerDeps {
  readonly docker: DockerPort;
  readonly validator: NginxValidator;
  readonly templates: TemplateRenderer;
  readonly store: BundleStore;
  readonly logger: Logger;
  readonly clock: Clock;
  readonly certificates?: CertificateSource;
}

export interface ReconcilerSettings {
  readonly networks: readonly string[];
  readonly debounce: DebounceWindow;
  readonly fastPollMs: number;
  readonly fastPollWindowMs: number;
  readonly proxy: ProxySettings;
  readonly generator: string;
  readonly reconcileTimeoutMs?: number;
  readonly tlsDefaults?: TlsDefaults;
  readonly nonGetRedirect?: 301 | 307 | 308;
  readonly defaultCertificate?: string | null;
}

export interface ReconcileOutcome {
  readonly at: string;
  readonly durationMs: number;
  readonly ok: boolean;
  readonly error: string | null;
  readonly published: boolean;
}

export interface ReconcilerStats {
  reconciles: number;
  failures: number;
  publishes: number;
  validations: number;
  lastDurationMs: number;
  /** Seconds from a task reaching running (Swarm's clock) to the first bundle that routes it. */
  readonly routingLagsSeconds: number[];
  readonly routingLag: Histogram;
  readonly reconcileDuration: Histogram;
}

const MAX_LAG_SAMPLES = 1000;

/** What nginx -t made of a candidate: the files to publish (perhaps without quarantined services), or why not. */
type Verdict =
  | {
      readonly ok: true;
      readonly files: BundleFiles;
      readonly fingerprint: string;
      readonly quarantined: readonly Problem[];
    }
  | { readonly ok: false; readonly output: string };

export class Reconciler {
  private readonly deps: ReconcilerDeps;
  private readonly settings: ReconcilerSettings;
  private readonly debouncer: Debouncer;
  private readonly flight: SingleFlight;
  private readonly shutdown = new AbortController();
  private lastCandidate: { fingerprint: string; verdict: Verdict } | null = null;
  private lastAcceptedShape: string | null = null;
  private model: RoutingModel = EMPTY_MODEL;
  private snapshot: Snapshot | null = null;
  private outcome: ReconcileOutcome | null = null;
  private running: number | null = null;
  private fastPollTimer: TimerHandle | null = null;
  private readonly unconvergedSince = new Map<string, number>();
  private routedTasks = new Set<string>();
  readonly stats: ReconcilerStats = {
    reconciles: 0,
    failures: 0,
    publishes: 0,
    validations: 0,
    lastDurationMs: 0,
    routingLagsSeconds: [],
    routingLag: new Histogram([0.1, 0.25, 0.5, 1, 2, 5, 10, 30]),
    reconcileDuration: new Histogram([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5]),
  };

  private get certificates(): CertificateSource {
    return this.deps.certificates ?? NO_CERTIFICATES;
  }

  constructor(deps: ReconcilerDeps, settings: ReconcilerSettings) {
    this.deps = deps;
    this.settings = settings;
    this.flight = new SingleFlight(() => this.reconcileOnce());
    this.debouncer = new Debouncer(settings.debounce, deps.clock, () => void this.flight.request());
  }

  /** Something may have changed (an event, a poll tick): reconcile after the debounce window. */
  trigger(reason: string): void {
    this.deps.logger.trace({ reason }, 'reconcile triggered');
    this.debouncer.trigger();
  }

  /** Reconcile as soon as the running one (if any) is done; resolves when that run has finished. */
  reconcileNow(): Promise<void> {
    this.debouncer.cancel();
    return this.flight.request();
  }

  get currentModel(): RoutingModel {
    return this.model;
  }

  /** The plain data of the last reconcile: services and tasks as Swarm reported them. */
  get lastSnapshot(): Snapshot | null {
    return this.snapshot;
  }

  get lastOutcome(): ReconcileOutcome | null {
    return this.outcome;
  }

  stop(): void {
    this.shutdown.abort();
    this.debouncer.cancel();
    this.fastPollTimer?.cancel();
    this.fastPollTimer = null;
  }

  idle(): Promise<void> {
    return this.flight.onIdle();
  }

  /** Start of the reconcile running now, or null: liveness tells a stuck loop from a busy one. */
  get runningSince(): number | null {
    return this.running;
  }

  /** The most a reconcile may take before it is aborted. */
  get timeoutMs(): number {
    return this.settings.reconcileTimeoutMs ?? 60_000;
  }

  private async reconcileOnce(): Promise<void> {
    if (this.shutdown.signal.aborted) return;
    const started = this.deps.clock.now();
    this.running = started;
    try {
      await this.reconcileWithin(started);
    } finally {
      this.running = null;
    }
  }

  private async reconcileWithin(started: number): Promise<void> {
    const signal = AbortSignal.any([this.shutdown.signal, AbortSignal.timeout(this.timeoutMs)]);
    try {
      const snapshot = await fetchSnapshot(this.deps.docker, signal);
      this.snapshot = snapshot;
      const published = await this.applySnapshot(snapshot, signal);
      this.scheduleFastPoll(snapshot);
      this.outcome = this.finish(started, true, null, published);
    } catch (error) {
      this.stats.failures++;
      this.outcome = this.finish(started, false, describeError(error), false);
      this.deps.logger.error(
        { err: describeError(error) },
        'reconcile failed; edges keep the last good config',
      );
    }
  }

  private finish(started: number, ok: boolean, error: string | null, published: boolean): ReconcileOutcome {
    const durationMs = this.deps.clock.now() - started;
    this.stats.reconciles++;
    this.stats.lastDurationMs = durationMs;
    this.stats.reconcileDuration.observe(durationMs / 1000);
    return { at: new Date(started).toISOString(), durationMs, ok, error, published };
  }

  /** Returns whether a new bundle was published. */
  private async applySnapshot(snapshot: Snapshot, signal: AbortSignal): Promise<boolean> {
    // Certificate state unread or sealed with another key: a bundle now would strip HTTPS from every edge (F8).
    const held = this.certificates.publishBlocked?.() ?? null;
    if (held) throw new SwarmgateError('ERR_PUBLISH_HELD', `publishing held: ${held}`);
    const model = buildRoutingModel(snapshot, {
      networks: this.settings.networks,
      certificates: this.certificates.available(),
      tlsDefaults: this.settings.tlsDefaults ?? DEFAULT_TLS,
    });
    const files = this.render(model);
    const fingerprint = fingerprintBundle(files);
    let verdict: Verdict;
    if (this.lastCandidate?.fingerprint === fingerprint) {
      // Same bytes as last time: no nginx -t again. Problems that do not show in the config (a new service with a
      // bad label) are still taken from the fresh model.
      verdict = this.lastCandidate.verdict;
    } else {
      verdict = await this.validateWithQuarantine(model, files, signal);
      this.lastCandidate = { fingerprint, verdict };
    }
    if (!verdict.ok) {
      this.model = model;
      throw new SwarmgateError(
        'ERR_NGINX_INVALID',
        `nginx rejected the candidate config: ${lastLine(verdict.output)}`,
      );
    }
    const accepted =
      verdict.quarantined.length === 0
        ? model
        : restrictModel(
            model,
            new Set(
              model.services
                .map((service) => service.name)
                .filter((name) => !verdict.quarantined.some((problem) => problem.service === name)),
            ),
            verdict.quarantined,
          );
    this.logProblemChanges(this.model.problems, accepted.problems);
    this.model = accepted;
    this.certificates.sync(accepted.certificateRequests);
    const before = this.deps.store.current?.fingerprint;
    const bundle = this.deps.store.publish(verdict.files, verdict.fingerprint);
    if (bundle.fingerprint === before) return false;
    this.stats.publishes++;
    this.recordRoutingLags(snapshot, accepted);
    this.deps.logger.info(
      {
        version: bundle.version,
        fingerprint: bundle.fingerprint.slice(0, 12),
        services: accepted.services.length,
        problems: accepted.problems.length,
      },
      'published config bundle',
    );
    return true;
  }

  private render(model: RoutingModel): BundleFiles {
    return renderConfig(
      model,
      {
        proxy: this.settings.proxy,
        generator: this.settings.generator,
        nonGetRedirect: this.settings.nonGetRedirect ?? 308,
        defaultCertificate: this.settings.defaultCertificate ?? null,
      },
      this.deps.templates,
      (name) => this.certificates.material(name),
    );
  }

  /**
   * nginx -t on the candidate. If nginx rejects it, find the services whose routes nginx rejects on their own,
   * leave them out with a Problem, and try again, so one bad service never blocks every other change.
   */
  private async validateWithQuarantine(
    model: RoutingModel,
    files: BundleFiles,
    signal: AbortSignal,
  ): Promise<Verdict> {
    // Only task addresses changed since nginx last accepted this shape (scaling, rolling updates): no nginx -t,
    // which under load is the slowest step between a task running and it being routed.
    const shape = renderedShape(files);
    if (shape === this.lastAcceptedShape) {
      return { ok: true, files, fingerprint: fingerprintBundle(files), quarantined: [] };
    }
    this.stats.validations++;
    const first = await this.deps.validator.validate(files, signal);
    if (first.ok) {
      this.lastAcceptedShape = shape;
      return { ok: true, files, fingerprint: fingerprintBundle(files), quarantined: [] };
    }

    const quarantined: Problem[] = [];
    for (const service of model.services) {
      const alone = restrictModel(model, new Set([service.name]));
      this.stats.validations++;
      const result = await this.deps.validator.validate(this.render(alone), signal);
      if (!result.ok) {
        quarantined.push({
          service: service.name,
          label: 'VIRTUAL_HOST',
          code: 'NGINX_REJECTED',
          reason: `nginx rejected this service's routes: ${lastLine(result.output)}`,
          severity: 'error',
        });
      }
    }
    if (quarantined.length > 0) {
      const remaining = new Set(model.services.map((service) => service.name));
      for (const problem of quarantined) remaining.delete(problem.service);
      const reducedFiles = this.render(restrictModel(model, remaining, quarantined));
      this.stats.validations++;
      const second = await this.deps.validator.validate(reducedFiles, signal);
      if (second.ok)
        return { ok: true, files: reducedFiles, fingerprint: fingerprintBundle(reducedFiles), quarantined };
    }
    this.deps.logger.error(
      { output: first.output },
      'nginx rejected the candidate config; edges keep the last good version',
    );
    return { ok: false, output: first.output };
  }

  private scheduleFastPoll(snapshot: Snapshot): void {
    const now = this.deps.clock.now();
    const unconverged = unconvergedServices(
      snapshot,
      (service) => lookupLabel(service, 'VIRTUAL_HOST') !== undefined,
    );
    for (const id of [...this.unconvergedSince.keys()])
      if (!unconverged.has(id)) this.unconvergedSince.delete(id);
    let anyWithinWindow = false;
    for (const id of unconverged) {
      const since = this.unconvergedSince.get(id) ?? now;
      this.unconvergedSince.set(id, since);
      // A crash-looping service never converges: after the window it is left to the slow poll.
      if (now - since < this.settings.fastPollWindowMs) anyWithinWindow = true;
    }
    if (!anyWithinWindow || this.fastPollTimer || this.shutdown.signal.aborted) return;
    this.fastPollTimer = this.deps.clock.setTimer(this.settings.fastPollMs, () => {
      this.fastPollTimer = null;
      void this.flight.request();
    });
  }

  /** Services seen changing from now on are polled fast (called on a service event). */
  get fastPolling(): boolean {
    return this.fastPollTimer !== null;
  }

  private recordRoutingLags(snapshot: Snapshot, model: RoutingModel): void {
    const now = this.deps.clock.now();
    const current = new Set<string>();
    const newlyRouted = new Set<string>();
    for (const upstream of model.upstreams) {
      for (const server of upstream.servers) {
        current.add(server.taskId);
        if (!this.routedTasks.has(server.taskId)) newlyRouted.add(server.taskId);
      }
    }
    // Only the new tasks' timestamps are read: at 20,000 tasks, parsing all of them on every publish shows.
    if (newlyRouted.size > 0) {
      for (const task of snapshot.tasks) {
        if (!newlyRouted.has(task.id)) continue;
        const since = Date.parse(task.stateSince);
        if (!Number.isFinite(since)) continue;
        const lag = Math.max(0, (now - since) / 1000);
        this.stats.routingLagsSeconds.push(lag);
        this.stats.routingLag.observe(lag);
        if (this.stats.routingLagsSeconds.length > MAX_LAG_SAMPLES) this.stats.routingLagsSeconds.shift();
      }
    }
    this.routedTasks = current;
  }

  private logProblemChanges(before: readonly Problem[], after: readonly Problem[]): void {
    const key = (problem: Problem): string => JSON.stringify(problem);
    const old = new Set(before.map(key));
    for (const problem of after) {
      if (!old.has(key(problem))) {
        this.deps.logger.warn({ problem }, 'service problem');
      }
    }
  }
}

/** The model with only the named services' routes (and the given extra problems). */
export function restrictModel(
  model: RoutingModel,
  keep: ReadonlySet<string>,
  extraProblems: readonly Problem[] = [],
): RoutingModel {
  const servers = model.servers
    .map((server) => ({
      ...server,
      locations: server.locations.filter((location) => keep.has(location.service)),
    }))
    .filter((server) => server.locations.length > 0);
  return {
    servers,
    upstreams: model.upstreams.filter((upstream) => keep.has(upstream.service)),
    services: model.services.filter((service) => keep.has(service.name)),
    problems: [...model.problems, ...extraProblems].sort(compareProblems),
    certificateRequests: model.certificateRequests.filter((request) => keep.has(request.service)),
    certificatesInUse: [...new Set(servers.flatMap((server) => server.tls.certificate ?? []))].sort(),
  };
}

function lastLine(output: string): string {
  const lines = output.split('\n').filter((line) => line.trim() !== '');
  return (lines.find((line) => line.includes('[emerg]')) ?? lines.at(-1) ?? output).trim();
}

// The one loop that owns concurrency: triggers → debounce → one reconcile at a time (latest wins) →
// fetchSnapshot → buildRoutingModel → renderConfig → fingerprint → nginx -t → publish.
import type { DebounceWindow, ProxySettings } from '../config.ts';
import type { DockerPort } from '../docker/docker-port.ts';
import { fetchServiceTasks, fetchSnapshot, withServiceTasks } from '../discovery/snapshot.ts';
import type { Snapshot, TaskInfo } from '../discovery/snapshot.ts';
import type { RawService } from '../docker/docker-port.ts';
import { describeError, SwarmgateError } from '../errors.ts';
import type { Logger } from '../logger.ts';
import { NO_CERTIFICATES } from '../acme/certificate-manager.ts';
import type { CertificateSource } from '../acme/certificate-manager.ts';
import {
  ADMIN_HOST_SETTING,
  buildRoutingModel,
  DEFAULT_TLS,
  EMPTY_MODEL,
  isProxied,
} from '../model/routing-model.ts';
import type { RoutingModel, TlsDefaults } from '../model/routing-model.ts';
import { compareProblems } from '../model/problems.ts';
import type { Problem } from '../model/problems.ts';
import type { NginxValidator, ValidationResult } from '../nginx/nginx-validator.ts';
import { sharingUnchanged } from '../publish/bundle-store.ts';
import type { BundleStore } from '../publish/bundle-store.ts';
import { createHash } from 'node:crypto';
import { configForm, fingerprintBundle, renderConfig, renderedShape } from '../render/render-config.ts';
import type { BundleFiles, RenderSettings } from '../render/render-config.ts';
import type { TemplateRenderer } from '../render/nunjucks-env.ts';
import { RenderCache } from '../render/block-cache.ts';
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
  /**
   * Time nginx -t may take per reconcile (whole candidate plus quarantine search), default 20 s. When it runs out
   * the candidate waits for the next reconcile (verdicts found so far are kept); task address changes of services
   * already published are still published, since they need no nginx -t.
   */
  readonly validationBudgetMs?: number;
  /** Delay before a reconcile is retried after nginx -t gave no verdict (killed, budget out), default 5 s. */
  readonly validationRetryMs?: number;
}

/** The last candidate nginx refused as a whole, kept beside the published model for the status API. */
export interface RefusedCandidate {
  readonly at: string;
  /** The model that was refused (every route it would have published, and its problems). */
  readonly model: RoutingModel;
  readonly reason: string;
  /** true: nginx -t gave no verdict (killed, timed out, not runnable, budget out); retried, not remembered. */
  readonly transient: boolean;
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
  /** Fast polls that read only converging services' tasks and found nothing new (no model, no render). */
  quietFastPolls: number;
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
  | { readonly ok: false; readonly output: string; readonly transient: boolean };

/** nginx -t's verdict on one service's routes alone, by the fingerprint of that rendering (its fragment). */
type ServiceVerdict = { readonly ok: true } | { readonly ok: false; readonly problem: Problem };

/** Thrown inside the quarantine search when nginx -t gives no verdict: the search stops, nothing is concluded. */
class NoVerdict extends Error {
  readonly output: string;
  constructor(output: string) {
    super(output);
    this.output = output;
  }
}

const MAX_SERVICE_VERDICTS = 20_000;

/**
 * How far the number of hosts may grow past the largest candidate a whole nginx -t accepted before the next change is
 * tested whole again: the server names hash is the one nginx limit only the composition can exceed.
 */
const HOST_GROWTH_BEFORE_WHOLE_TEST = 1.1;

/** What the last accepted candidate was made of, so the next one can be validated by what changed. */
interface AcceptedComposition {
  /** Shape of the config with no service at all: settings, default server, everything outside the hosts. */
  readonly prologue: string;
  /** Per service: a digest of its routes, hosts (with their TLS) and certificate material, without task addresses. */
  readonly services: ReadonlyMap<string, string>;
  /** Per service: the hosts it has routes on. */
  readonly hosts: ReadonlyMap<string, readonly string[]>;
  /** Host count of the largest candidate nginx -t accepted whole. */
  readonly wholeHosts: number;
}

export class Reconciler {
  private readonly deps: ReconcilerDeps;
  private readonly settings: ReconcilerSettings;
  private readonly debouncer: Debouncer;
  private readonly flight: SingleFlight;
  private readonly shutdown = new AbortController();
  private lastCandidate: { fingerprint: string; verdict: Verdict } | null = null;
  private lastAcceptedShape: string | null = null;
  private accepted: AcceptedComposition | null = null;
  /** The last published model: what the edges serve (or are being sent). */
  private model: RoutingModel = EMPTY_MODEL;
  private refused: RefusedCandidate | null = null;
  /** Per-service nginx -t verdicts by fragment fingerprint, so quarantine re-tests only what changed. */
  private readonly serviceVerdicts = new Map<string, ServiceVerdict>();
  /** Services nginx refused, with the fingerprint of the fragment it refused: left out before any nginx -t. */
  private readonly knownBad = new Map<string, string>();
  /** The candidate's blocks, reused for hosts and services that did not change since the last candidate. */
  private readonly blocks = new RenderCache();
  private retryTimer: TimerHandle | null = null;
  /**
   * Fragments of the smallest group nginx refused in a quarantine search that the budget cut short: the next
   * search starts there, so each budget narrows it down instead of starting over.
   */
  private suspicion: ReadonlySet<string> | null = null;
  private snapshot: Snapshot | null = null;
  private outcome: ReconcileOutcome | null = null;
  private running: number | null = null;
  private fastPollTimer: TimerHandle | null = null;
  private readonly unconvergedSince = new Map<string, number>();
  /** Services polled fast (converging, within the window): a fast poll reads only their tasks. */
  private fastPolled: readonly string[] = [];
  /** Set by every trigger: the next run re-lists everything; a fast poll tick alone reads fewer. */
  private fullWanted = true;
  /** Each service's spec version at the last full read: a changed one may have tasks told to stop. */
  private serviceVersions = new Map<string, number>();
  private routedTasks = new Set<string>();
  readonly stats: ReconcilerStats = {
    reconciles: 0,
    quietFastPolls: 0,
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
    this.debouncer = new Debouncer(settings.debounce, deps.clock, () => {
      this.fullWanted = true;
      void this.flight.request();
    });
  }

  /** Something may have changed (an event, a poll tick): reconcile after the debounce window. */
  trigger(reason: string): void {
    this.deps.logger.trace({ reason }, 'reconcile triggered');
    this.debouncer.trigger();
  }

  /** Reconcile as soon as the running one (if any) is done; resolves when that run has finished. */
  reconcileNow(): Promise<void> {
    this.debouncer.cancel();
    this.fullWanted = true;
    return this.flight.request();
  }

  /** The last published model (what edges serve), never a refused candidate: see lastRefused. */
  get currentModel(): RoutingModel {
    return this.model;
  }

  /** The last candidate nginx refused as a whole, until a later candidate is published. */
  get lastRefused(): RefusedCandidate | null {
    return this.refused;
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
    this.retryTimer?.cancel();
    this.retryTimer = null;
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
      const last = this.snapshot;
      const full = this.fullWanted || last === null || this.fastPolled.length === 0;
      this.fullWanted = false;
      const snapshot =
        full || last === null ? await this.readAll(signal) : await this.readConverging(last, signal);
      if (snapshot === null) {
        // A fast poll that found the converging services' tasks as they were: nothing to render.
        this.stats.quietFastPolls++;
        if (this.snapshot) this.scheduleFastPoll(this.snapshot);
        return;
      }
      this.snapshot = snapshot;
      const { published, error } = await this.applySnapshot(snapshot, signal);
      this.scheduleFastPoll(snapshot);
      if (error !== null) this.stats.failures++;
      this.outcome = this.finish(started, error === null, error, published);
    } catch (error) {
      this.stats.failures++;
      // A failed read (a fast poll of a service removed meanwhile, Docker away) is followed by a full one.
      this.fullWanted = true;
      this.outcome = this.finish(started, false, describeError(error), false);
      this.deps.logger.error(
        { err: describeError(error) },
        'reconcile failed; edges keep the last good config',
      );
    }
  }

  /** Everything, with the full task lists of services that are converging or whose spec changed. */
  private async readAll(signal: AbortSignal): Promise<Snapshot> {
    const watch = (services: readonly RawService[]): string[] => {
      const changed = services
        .filter((service) => {
          const before = this.serviceVersions.get(service.ID ?? '');
          return before !== undefined && before !== (service.Version?.Index ?? 0);
        })
        .map((service) => service.ID ?? '');
      this.serviceVersions = new Map(
        services.map((service) => [service.ID ?? '', service.Version?.Index ?? 0]),
      );
      // Only services that still exist: asking for the tasks of a removed one is a 404 from the Engine.
      const listed = new Set(this.serviceVersions.keys());
      return [...[...this.unconvergedSince.keys()].filter((id) => listed.has(id)), ...changed];
    };
    return fetchSnapshot(this.deps.docker, signal, watch);
  }

  /**
   * A fast poll: only the converging services' tasks are read (one small list, not every task of the swarm). When
   * they are as last read, null: no model, no render. Otherwise the last snapshot with those tasks replaced.
   */
  private async readConverging(last: Snapshot, signal: AbortSignal): Promise<Snapshot | null> {
    const ids = this.fastPolled;
    const watched = new Set(ids);
    const fresh = await fetchServiceTasks(this.deps.docker, signal, ids);
    const before = last.tasks.filter((task) => watched.has(task.serviceId));
    if (sameTasks(before, fresh)) return null;
    return withServiceTasks(last, watched, fresh);
  }

  private finish(started: number, ok: boolean, error: string | null, published: boolean): ReconcileOutcome {
    const durationMs = this.deps.clock.now() - started;
    this.stats.reconciles++;
    this.stats.lastDurationMs = durationMs;
    this.stats.reconcileDuration.observe(durationMs / 1000);
    return { at: new Date(started).toISOString(), durationMs, ok, error, published };
  }

  /** Whether a new bundle was published, and why the candidate was not (null: it was). */
  private async applySnapshot(
    snapshot: Snapshot,
    signal: AbortSignal,
  ): Promise<{ published: boolean; error: string | null }> {
    // Certificate state unread or sealed with another key: a bundle now would strip HTTPS from every edge (F8).
    const held = this.certificates.publishBlocked?.() ?? null;
    if (held) throw new SwarmgateError('ERR_PUBLISH_HELD', `publishing held: ${held}`);
    const model = buildRoutingModel(snapshot, {
      networks: this.settings.networks,
      certificates: this.certificates.available(),
      tlsDefaults: this.settings.tlsDefaults ?? DEFAULT_TLS,
      defaultHost: this.settings.proxy.defaultHost,
      adminHost: this.settings.proxy.adminHost,
      tcpPorts: this.settings.proxy.tcpPorts,
      trustedProxies: this.settings.proxy.trustedProxies,
    });
    const candidate = this.withoutKnownBad(model);
    // Files as published ones where unchanged: the candidate kept for the next reconcile then holds no second copy
    // of a config the store holds already (15 MB at 10,000 services).
    const files = sharingUnchanged(this.render(candidate, this.blocks), this.deps.store.current?.files);
    // The blocks are parts of the config kept: the published one when it is the same.
    this.blocks.settle(files['nginx.conf'] ?? '');
    const fingerprint = fingerprintBundle(files);
    let verdict: Verdict;
    if (this.lastCandidate?.fingerprint === fingerprint) {
      // Same bytes as last time: no nginx -t again. Problems that do not show in the config (a new service with a
      // bad label) are still taken from the fresh model.
      verdict = this.lastCandidate.verdict;
    } else {
      verdict = await this.validateWithQuarantine(candidate, files, fingerprint, signal);
      // A refusal without a verdict (nginx -t killed, budget out) is not remembered: the next reconcile retries.
      if (verdict.ok || !verdict.transient) this.lastCandidate = { fingerprint, verdict };
    }
    if (!verdict.ok) {
      const reason = `nginx rejected the candidate config: ${lastLine(verdict.output)}`;
      this.refused = {
        at: new Date(this.deps.clock.now()).toISOString(),
        model,
        reason,
        transient: verdict.transient,
      };
      this.deps.logger.error(
        { output: verdict.output, transient: verdict.transient },
        'nginx rejected the candidate config; edges keep the last good version',
      );
      if (verdict.transient) this.scheduleRetry();
      return { published: this.publishPeersOnly(snapshot, candidate), error: reason };
    }
    const accepted =
      verdict.quarantined.length === 0
        ? candidate
        : restrictModel(
            candidate,
            new Set(
              candidate.services
                .map((service) => service.name)
                .filter((name) => !verdict.quarantined.some((problem) => problem.service === name)),
            ),
            verdict.quarantined,
          );
    this.refused = null;
    return { published: this.publish(snapshot, accepted, verdict.files, verdict.fingerprint), error: null };
  }

  /** Publishes files for model (the store ignores the same fingerprint); returns whether it was new. */
  private publish(
    snapshot: Snapshot,
    accepted: RoutingModel,
    files: BundleFiles,
    fingerprint: string,
  ): boolean {
    this.logProblemChanges(this.model.problems, accepted.problems);
    this.model = accepted;
    this.certificates.sync(accepted.certificateRequests);
    const before = this.deps.store.current?.fingerprint;
    const bundle = this.deps.store.publish(files, fingerprint);
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

  /**
   * The candidate was refused or is still being validated: publish at least the new task addresses of the services
   * the edges already serve, when their routes are exactly the shape nginx last accepted (then no nginx -t is
   * needed). So scaling keeps working while one new service is quarantined or nginx -t is slow.
   */
  private publishPeersOnly(snapshot: Snapshot, candidate: RoutingModel): boolean {
    if (this.lastAcceptedShape === null) return false;
    const served = new Set(this.model.services.map((service) => service.name));
    const reduced = restrictModel(candidate, served);
    const files = this.render(reduced);
    if (renderedShape(files) !== this.lastAcceptedShape) return false;
    return this.publish(snapshot, reduced, files, fingerprintBundle(files));
  }

  /** The model without the services nginx refused before, when their fragment is still the one it refused. */
  private withoutKnownBad(model: RoutingModel): RoutingModel {
    if (this.knownBad.size === 0) return model;
    const present = new Set(model.services.map((service) => service.name));
    const excluded: Problem[] = [];
    for (const [name, key] of [...this.knownBad]) {
      const verdict = this.serviceVerdicts.get(key);
      if (!present.has(name) || !verdict || verdict.ok || this.fragmentKey(model, name) !== key) {
        this.knownBad.delete(name);
        continue;
      }
      excluded.push(verdict.problem);
    }
    if (excluded.length === 0) return model;
    const keep = new Set(
      [...present].filter((name) => !excluded.some((problem) => problem.service === name)),
    );
    return restrictModel(model, keep, excluded);
  }

  /** `blocks`: for the candidate only; the renders of parts of it (validation, quarantine) would evict its blocks. */
  private render(model: RoutingModel, blocks: RenderCache | null = null): BundleFiles {
    return renderConfig(
      model,
      this.renderSettings(),
      this.deps.templates,
      (name) => this.certificates.material(name),
      blocks,
    );
  }

  private renderSettings(): RenderSettings {
    return {
      proxy: this.settings.proxy,
      generator: this.settings.generator,
      nonGetRedirect: this.settings.nonGetRedirect ?? 308,
      defaultCertificate: this.settings.defaultCertificate ?? null,
    };
  }

  /** The fingerprint of one service's routes rendered alone (its hosts keep the TLS the whole model gave them). */
  private fragmentKey(model: RoutingModel, name: string): string {
    return renderedShape(this.render(checkedPart(model, new Set([name]))));
  }

  /**
   * nginx -t on the candidate. If nginx rejects it, find the services whose routes nginx rejects on their own by
   * bisection (halves of the suspects, not one nginx -t per service), leave them out with a Problem, and try again,
   * so one bad service never blocks every other change. Verdicts per service fragment are kept: a service that
   * passed is not a suspect next time, one that failed is left out before nginx -t while its fragment is the same.
   */
  private async validateWithQuarantine(
    model: RoutingModel,
    files: BundleFiles,
    /** fingerprintBundle(files), already taken: hashing the 9 MB nginx.conf again cost ~10 ms and a 28 MB buffer. */
    fingerprint: string,
    signal: AbortSignal,
  ): Promise<Verdict> {
    // Only task addresses changed since nginx last accepted this shape (scaling, rolling updates): no nginx -t,
    // which under load is the slowest step between a task running and it being routed.
    const shape = renderedShape(files);
    if (shape === this.lastAcceptedShape) {
      return { ok: true, files, fingerprint, quarantined: [] };
    }
    const budget = AbortSignal.any([signal, AbortSignal.timeout(this.settings.validationBudgetMs ?? 20_000)]);
    // Only some services changed since nginx accepted the last candidate: nginx -t of their hosts' server blocks with
    // everything outside the hosts (tens of ms instead of seconds at 2,000 hosts); see docs/design-notes.md.
    const composition = this.composition(model);
    const changed = this.changedServices(model, composition);
    let first: ValidationResult | null = null;
    if (changed !== null) {
      const partial = await this.runValidation(this.render(checkedPart(model, changed)), signal, budget);
      if (partial.ok) {
        this.lastAcceptedShape = ownCopy(shape);
        this.accepted = { ...composition, wholeHosts: this.accepted?.wholeHosts ?? 0 };
        return { ok: true, files, fingerprint, quarantined: [] };
      }
      if (partial.transient) return { ok: false, output: partial.output, transient: true };
      // Refused: the rest is known good, so the quarantine search below looks among the changed services only.
      first = partial;
    }
    if (first === null) {
      first = await this.runValidation(files, signal, budget);
      if (first.ok) {
        this.lastAcceptedShape = ownCopy(shape);
        this.accepted = { ...composition, wholeHosts: model.servers.length };
        return { ok: true, files, fingerprint, quarantined: [] };
      }
      if (first.transient) return { ok: false, output: first.output, transient: true };
    }
    if (first.ok) throw new Error('unreachable: an accepted candidate returned above');

    const keys = new Map(
      model.services.map((service) => [service.name, this.fragmentKey(model, service.name)]),
    );
    const suspects = model.services
      .map((service) => service.name)
      .filter((name) => changed === null || changed.has(name))
      .filter((name) => this.serviceVerdicts.get(keys.get(name) ?? '')?.ok !== true);
    let quarantined: Problem[];
    try {
      quarantined = await this.findRefused(model, suspects, keys, first.output, signal, budget);
    } catch (error) {
      if (error instanceof NoVerdict) return { ok: false, output: error.output, transient: true };
      throw error;
    }
    if (quarantined.length > 0) {
      // Refused alone: left out from now on, also when the budget cuts the test of the rest short.
      for (const problem of quarantined) this.knownBad.set(problem.service, keys.get(problem.service) ?? '');
      const remaining = new Set(model.services.map((service) => service.name));
      for (const problem of quarantined) remaining.delete(problem.service);
      const reducedFiles = this.render(restrictModel(model, remaining, quarantined));
      const second = await this.runValidation(reducedFiles, signal, budget);
      if (second.ok) {
        this.lastAcceptedShape = ownCopy(renderedShape(reducedFiles));
        this.accepted = {
          ...this.composition(restrictModel(model, remaining)),
          wholeHosts: Math.max(this.accepted?.wholeHosts ?? 0, model.servers.length),
        };
        return { ok: true, files: reducedFiles, fingerprint: fingerprintBundle(reducedFiles), quarantined };
      }
      if (second.transient) return { ok: false, output: second.output, transient: true };
    }
    // nginx refuses the services together but none alone (or refuses something that is no service's): refuse all.
    return { ok: false, output: first.output, transient: false };
  }

  /** The parts of a candidate that decide whether it can be validated by what changed. */
  private composition(model: RoutingModel): Omit<AcceptedComposition, 'wholeHosts'> {
    // Everything outside the hosts: the empty config, and the switches the whole model sets (configForm).
    const prologue = `${renderedShape(this.render(checkedPart(model, new Set())))} ${configForm(
      model,
      this.renderSettings(),
      (name) => this.certificates.material(name),
    )}`;
    const parts = new Map<string, { servers: unknown[]; upstreams: string[]; certificates: string[] }>();
    const partOf = (name: string) => {
      let part = parts.get(name);
      if (!part) parts.set(name, (part = { servers: [], upstreams: [], certificates: [] }));
      return part;
    };
    for (const service of model.services) partOf(service.name);
    for (const server of model.servers) {
      const material = server.tls.certificate
        ? this.certificates.material(server.tls.certificate)
        : undefined;
      const certificate = material
        ? createHash('sha256').update(material.certificatePem).update(material.privateKeyPem).digest('hex')
        : null;
      for (const location of server.locations) {
        const part = partOf(location.service);
        part.servers.push({ host: server.host, tls: server.tls, location });
        if (certificate) part.certificates.push(certificate);
      }
    }
    for (const upstream of model.upstreams) partOf(upstream.service).upstreams.push(upstream.name);
    const services = new Map<string, string>();
    const hosts = new Map<string, string[]>();
    // Kept as a digest: only compared with the next candidate's (10,000 services' parts as JSON were ~20 MB kept).
    for (const [name, part] of parts)
      services.set(name, createHash('sha256').update(JSON.stringify(part)).digest('base64'));
    for (const server of model.servers) {
      for (const location of server.locations) {
        const list = hosts.get(location.service) ?? [];
        if (!list.includes(server.host.value)) list.push(server.host.value);
        hosts.set(location.service, list);
      }
    }
    return { prologue, services, hosts };
  }

  /**
   * The services whose server blocks must be tested for the candidate to be accepted on what changed, or null when
   * it must be tested whole: no accepted candidate yet, anything outside the hosts changed, or the host count grew
   * past what a whole test accepted. A changed service brings every service sharing one of its hosts (they render
   * one server block together), and so does a removed one. The rest is the byte-identical rendering of services
   * nginx accepted before; the model gives every host one server block and every service its own upstream, so
   * putting them together adds no conflict nginx -t could find.
   */
  private changedServices(
    model: RoutingModel,
    composition: Omit<AcceptedComposition, 'wholeHosts'>,
  ): Set<string> | null {
    const last = this.accepted;
    if (last === null || last.prologue !== composition.prologue) return null;
    if (model.servers.length > last.wholeHosts * HOST_GROWTH_BEFORE_WHOLE_TEST) return null;
    const touched = new Set<string>();
    for (const [name, part] of composition.services) if (last.services.get(name) !== part) touched.add(name);
    const touchedHosts = new Set<string>();
    for (const [name, hosts] of last.hosts)
      if (!composition.services.has(name)) for (const host of hosts) touchedHosts.add(host);
    const changed = new Set<string>();
    for (const server of model.servers) {
      if (
        touchedHosts.has(server.host.value) ||
        server.locations.some((location) => touched.has(location.service))
      ) {
        for (const location of server.locations) changed.add(location.service);
      }
    }
    return changed;
  }

  /**
   * The suspects nginx refuses alone, by bisection: a group that passes clears all its services; a failing group is
   * split in two. When one half passes, the other must fail (its parent did), so it is split without a test of its
   * own; a single service reached that way is tested alone before it is blamed. One bad service among n costs
   * about log2(n) to 2·log2(n) runs of nginx -t.
   */
  private async findRefused(
    model: RoutingModel,
    suspects: readonly string[],
    keys: ReadonlyMap<string, string>,
    firstOutput: string,
    signal: AbortSignal,
    budget: AbortSignal,
  ): Promise<Problem[]> {
    const refused: Problem[] = [];
    const test = async (names: readonly string[]): Promise<ValidationResult> => {
      const result = await this.runValidation(
        this.render(checkedPart(model, new Set(names))),
        signal,
        budget,
      );
      if (!result.ok && result.transient) throw new NoVerdict(result.output);
      if (result.ok) for (const name of names) this.remember(keys.get(name), { ok: true });
      else this.suspicion = new Set(names.map((name) => keys.get(name) ?? ''));
      return result;
    };
    const search = async (names: readonly string[], known: 'inferred' | 'unknown', output: string) => {
      if (names.length === 0) return;
      let failure = output;
      if (known === 'unknown' || (known === 'inferred' && names.length === 1)) {
        const result = await test(names);
        if (result.ok) return;
        failure = result.output;
      }
      const [only] = names;
      if (names.length === 1 && only !== undefined) {
        const problem: Problem = {
          service: only,
          label: 'VIRTUAL_HOST',
          code: 'NGINX_REJECTED',
          reason: `nginx rejected this service's routes: ${lastLine(failure)}`,
          severity: 'error',
        };
        this.remember(keys.get(only), { ok: false, problem });
        refused.push(problem);
        return;
      }
      const half = Math.ceil(names.length / 2);
      const before = refused.length;
      await search(names.slice(0, half), 'unknown', failure);
      await search(names.slice(half), refused.length === before ? 'inferred' : 'unknown', failure);
    };
    const suspicion = this.suspicion;
    const narrowed = suspects.filter((name) => suspicion?.has(keys.get(name) ?? '') === true);
    if (suspicion && narrowed.length === suspicion.size) {
      // Same fragments as the group refused last time: search it first, then test the rest once.
      await search(narrowed, 'inferred', firstOutput);
      await search(
        suspects.filter((name) => !narrowed.includes(name)),
        'unknown',
        firstOutput,
      );
    } else if (suspects.length > 0) {
      // Inferred: the whole model failed; the suspects alone (known-good services left out) have not been tried.
      await search(suspects, 'inferred', firstOutput);
    }
    this.suspicion = null;
    return refused;
  }

  private remember(key: string | undefined, verdict: ServiceVerdict): void {
    if (key === undefined) return;
    // Bounded: the oldest verdicts go first (a Map iterates in insertion order).
    this.serviceVerdicts.delete(key);
    this.serviceVerdicts.set(key, verdict);
    if (this.serviceVerdicts.size > MAX_SERVICE_VERDICTS) {
      const oldest = this.serviceVerdicts.keys().next();
      if (!oldest.done) this.serviceVerdicts.delete(oldest.value);
    }
  }

  /**
   * One nginx -t within the budget. No verdict (killed, timed out, not runnable, budget out) comes back as a
   * transient refusal; only the reconcile's own abort is thrown.
   */
  private async runValidation(
    files: BundleFiles,
    signal: AbortSignal,
    budget: AbortSignal,
  ): Promise<ValidationResult> {
    if (budget.aborted && !signal.aborted) {
      return { ok: false, output: 'the nginx -t time budget ran out; retried later', transient: true };
    }
    this.stats.validations++;
    try {
      return await this.deps.validator.validate(files, budget);
    } catch (error) {
      if (signal.aborted) throw error;
      const output = budget.aborted
        ? 'the nginx -t time budget ran out; retried later'
        : `nginx -t could not run: ${describeError(error)}`;
      return { ok: false, output, transient: true };
    }
  }

  private scheduleRetry(): void {
    if (this.retryTimer || this.shutdown.signal.aborted) return;
    this.retryTimer = this.deps.clock.setTimer(this.settings.validationRetryMs ?? 5_000, () => {
      this.retryTimer = null;
      this.trigger('retry: nginx -t gave no verdict');
    });
  }

  private scheduleFastPoll(snapshot: Snapshot): void {
    const now = this.deps.clock.now();
    const unconverged = unconvergedServices(snapshot, isProxied);
    for (const id of [...this.unconvergedSince.keys()])
      if (!unconverged.has(id)) this.unconvergedSince.delete(id);
    const polled: string[] = [];
    for (const id of unconverged) {
      const since = this.unconvergedSince.get(id) ?? now;
      this.unconvergedSince.set(id, since);
      // A crash-looping service never converges: after the window it is left to the slow poll.
      if (now - since < this.settings.fastPollWindowMs) polled.push(id);
    }
    this.fastPolled = polled.sort();
    if (polled.length === 0 || this.fastPollTimer || this.shutdown.signal.aborted) return;
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

/**
 * The model with only the named services' routes (and the given extra problems), as published after a quarantine.
 * The stream routes (TCP ports, TLS passthrough) of every other service stay: a bundle without them would close every
 * TCP port and passthrough name on every edge while any HTTP service is quarantined. A service cut here loses its
 * stream routes too, as a refused service keeps no route of any kind.
 */
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
    // The admin host is no service: a quarantine never takes its server or certificate away.
    certificateRequests: model.certificateRequests.filter(
      (request) => keep.has(request.service) || request.service === ADMIN_HOST_SETTING,
    ),
    certificatesInUse: [
      ...new Set([
        ...servers.flatMap((server) => server.tls.certificate ?? []),
        ...(model.adminServer?.certificate ? [model.adminServer.certificate] : []),
      ]),
    ].sort(),
    adminServer: model.adminServer,
    ...streamWithout(
      model,
      model.services.filter((service) => !keep.has(service.name)).map((service) => service.name),
    ),
  };
}

/** The model's stream routes without those of the services cut; nothing when none is left. */
function streamWithout(model: RoutingModel, cut: readonly string[]): Pick<RoutingModel, 'stream'> {
  if (!model.stream) return {};
  if (cut.length === 0) return { stream: model.stream };
  const gone = new Set(cut);
  const tcp = model.stream.tcp.filter((route) => !gone.has(route.service));
  const passthrough = model.stream.passthrough.filter((route) => !gone.has(route.service));
  if (tcp.length === 0 && passthrough.length === 0) return {};
  const used = new Set([...tcp, ...passthrough].map((route) => route.upstream));
  return {
    stream: {
      tcp,
      passthrough,
      upstreams: model.stream.upstreams.filter((upstream) => used.has(upstream.name)),
    },
  };
}

/**
 * A part of the model rendered only to be checked by nginx -t or keyed, never published: without the stream block,
 * which configForm covers (a change to it has the candidate tested whole).
 */
function checkedPart(model: RoutingModel, keep: ReadonlySet<string>): RoutingModel {
  const part = restrictModel(model, keep);
  return part.stream ? { ...part, stream: undefined } : part;
}

/** Same tasks in the same states at the same addresses (both sorted by service and ID). */
function sameTasks(a: readonly TaskInfo[], b: readonly TaskInfo[]): boolean {
  return a.length === b.length && JSON.stringify(a) === JSON.stringify(b);
}

/**
 * A string of its own: renderedShape answers with a slice of peers.txt, which kept a superseded peers.txt alive for
 * as long as its shape was the last accepted one (1.5 MB at 10,000 services).
 */
function ownCopy(text: string): string {
  return Buffer.from(text, 'utf8').toString('utf8');
}

function lastLine(output: string): string {
  const lines = output.split('\n').filter((line) => line.trim() !== '');
  return (lines.find((line) => line.includes('[emerg]')) ?? lines.at(-1) ?? output).trim();
}

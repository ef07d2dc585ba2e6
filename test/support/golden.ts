// Golden files: a case is a folder with snapshot.json (plain data, defaults filled in for brevity) and
// optionally settings.json; expected.txt holds every rendered file and the problems. UPDATE_GOLDEN=1 rewrites.
import { CERTIFICATE_PEMS_FILE } from '../../src/render/certificates-text.ts';
import { readFileSync } from 'node:fs';
import type { ProxySettings } from '../../src/config.ts';
import { defaultProxySettings } from '../../src/config.ts';
import type {
  ConfigFile,
  NetworkInfo,
  NodeInfo,
  ServiceInfo,
  Snapshot,
  TaskInfo,
} from '../../src/discovery/snapshot.ts';
import { buildRoutingModel, DEFAULT_TLS } from '../../src/model/routing-model.ts';
import type { AvailableCertificate, RoutingModel, TlsDefaults } from '../../src/model/routing-model.ts';
import { createTemplateRenderer } from '../../src/render/nunjucks-env.ts';
import { renderConfig } from '../../src/render/render-config.ts';
import type { BundleFiles } from '../../src/render/render-config.ts';

export interface GoldenSettings {
  readonly networks?: string[];
  readonly proxy?: Partial<ProxySettings>;
  readonly certificates?: AvailableCertificate[];
  readonly tlsDefaults?: Partial<TlsDefaults>;
  readonly nonGetRedirect?: 301 | 307 | 308;
  readonly defaultCertificate?: string;
}

/** snapshot.json may list Docker configs (labelled swarmgate.file) as { name, kind, data }. */

const fixtures = new URL('../fixtures/', import.meta.url);
/** Every certificate a golden case names is the same self-signed test certificate, so nginx -t can load it. */
const testCertificate = {
  certificatePem: readFileSync(new URL('test-only.crt', fixtures), 'utf8'),
  privateKeyPem: readFileSync(new URL('test-only.key', fixtures), 'utf8'),
};

type Loose<T> = Partial<T> & { id: string };

export function loadSnapshot(file: string): Snapshot {
  const raw = JSON.parse(readFileSync(file, 'utf8')) as {
    services?: Loose<ServiceInfo>[];
    tasks?: Loose<TaskInfo>[];
    networks?: Loose<NetworkInfo>[];
    nodes?: Loose<NodeInfo>[];
    configs?: ConfigFile[];
  };
  return {
    services: (raw.services ?? []).map((service) => ({
      name: service.id,
      createdAt: '2026-01-01T00:00:00Z',
      labels: {},
      env: {},
      mode: 'replicated',
      replicas: 1,
      networks: ['net-swarmgate'],
      image: 'example/app:1',
      updateState: null,
      ...service,
    })),
    tasks: (raw.tasks ?? []).map((task) => ({
      serviceId: '',
      nodeId: 'node-1',
      slot: 1,
      desiredState: 'running',
      state: 'running',
      stateSince: '2026-01-01T00:00:00Z',
      error: null,
      image: 'example/app:1',
      addresses: [],
      ...task,
    })),
    networks: (raw.networks ?? [{ id: 'net-swarmgate', name: 'swarmgate' }]).map((network) => ({
      name: network.id,
      driver: 'overlay',
      scope: 'swarm',
      ingress: false,
      ...network,
    })),
    nodes: (raw.nodes ?? []).map((node) => ({
      hostname: node.id,
      role: 'manager',
      state: 'ready',
      availability: 'active',
      ...node,
    })),
    ...(raw.configs ? { configs: raw.configs } : {}),
  };
}

export function renderCase(
  snapshot: Snapshot,
  settings: GoldenSettings,
): { model: RoutingModel; files: BundleFiles } {
  const model = buildRoutingModel(snapshot, {
    networks: settings.networks ?? ['swarmgate'],
    certificates: settings.certificates ?? [],
    tlsDefaults: { ...DEFAULT_TLS, ...settings.tlsDefaults },
    defaultHost: settings.proxy?.defaultHost ?? null,
    adminHost: settings.proxy?.adminHost ?? null,
    tcpPorts: settings.proxy?.tcpPorts ?? [],
    trustedProxies: settings.proxy?.trustedProxies ?? [],
  });
  const known = new Set((settings.certificates ?? []).map((certificate) => certificate.name));
  const files = renderConfig(
    model,
    {
      proxy: { ...defaultProxySettings(), ...settings.proxy },
      generator: 'golden',
      nonGetRedirect: settings.nonGetRedirect ?? 308,
      defaultCertificate: settings.defaultCertificate ?? null,
    },
    createTemplateRenderer(),
    (name) => (known.has(name) ? testCertificate : undefined),
  );
  return { model, files };
}

/** The one readable text a case is compared with. */
export function goldenText(model: RoutingModel, files: BundleFiles): string {
  const parts: string[] = [];
  for (const name of Object.keys(files).sort()) {
    const content = files[name] ?? '';
    // Certificate and key files are named, not shown: their bytes say nothing a reviewer can check.
    if (name.startsWith('certs/')) parts.push(`==> ${name} <== (${content.length} bytes)\n`);
    else if (name === CERTIFICATE_PEMS_FILE) {
      // Its section headers only, for the same reason.
      const headers = content.split('\n').filter((line) => line.startsWith('certificate '));
      parts.push(`==> ${name} <== (${content.length} bytes)\n${headers.map((line) => `${line}\n`).join('')}`);
    } else parts.push(`==> ${name} <==\n${content}`);
  }
  // What the controller is asked to order, and from which ACME directory (null: the controller's own).
  if (model.certificateRequests.length > 0) {
    const requests = model.certificateRequests.map((request) =>
      JSON.stringify({ name: request.name, domains: request.domains, directory: request.directory ?? null }),
    );
    parts.push(`==> certificate requests <==\n${requests.join('\n')}\n`);
  }
  parts.push(`==> problems <==\n${model.problems.map((problem) => JSON.stringify(problem)).join('\n')}\n`);
  return parts.join('\n');
}

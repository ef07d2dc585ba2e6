// renderConfig: pure. Routing model in, the files of an edge bundle out (same model, same bytes).
import { createHash } from 'node:crypto';
import type { ProxySettings } from '../config.ts';
import type { RoutingModel } from '../model/routing-model.ts';
import type { TemplateRenderer } from './nunjucks-env.ts';

/** Bundle-relative path → file content. nginx.conf is the entry point; everything else is relative to it. */
export type BundleFiles = Readonly<Record<string, string>>;

export interface RenderSettings {
  readonly proxy: ProxySettings;
  /** Written into the header comment; tests pin it so goldens do not change with every release. */
  readonly generator: string;
  /** Redirect status for methods other than GET and HEAD under HTTPS_METHOD=redirect. */
  readonly nonGetRedirect?: 301 | 307 | 308;
  /** Certificate for unknown names on 443; without one their TLS handshake is rejected. */
  readonly defaultCertificate?: string | null;
}

/** PEM material of a certificate the config uses; the chain goes to certs/NAME.crt, the key to certs/NAME.key. */
export interface CertificateMaterial {
  readonly certificatePem: string;
  readonly privateKeyPem: string;
}

export type CertificateLookup = (name: string) => CertificateMaterial | undefined;

const NO_CERTIFICATES: CertificateLookup = () => undefined;

export function renderConfig(
  model: RoutingModel,
  settings: RenderSettings,
  templates: TemplateRenderer,
  certificates: CertificateLookup = NO_CERTIFICATES,
): BundleFiles {
  const defaultCertificate =
    settings.defaultCertificate && certificates(settings.defaultCertificate)
      ? settings.defaultCertificate
      : null;
  const servers = model.servers.map((server) => ({
    host: server.host,
    tls: server.tls,
    hasRoot: server.locations.some(
      (location) => location.path.kind === 'prefix' && location.path.value === '/',
    ),
    locations: server.locations.map((location) => ({
      ...location,
      path: {
        ...location.path,
        // "~*^/img/" → modifier "~*", body "^/img/"
        modifier: location.path.value.startsWith('~*') ? '~*' : '~',
        body: location.path.value.replace(/^~\*?/, ''),
      },
    })),
  }));
  const nginxConf = templates.render('nginx.conf.njk', {
    generator: settings.generator,
    proxy: settings.proxy,
    nonGetRedirect: settings.nonGetRedirect ?? 308,
    defaultCertificate,
    upstreams: model.upstreams,
    servers,
  });
  const files: Record<string, string> = { 'nginx.conf': nginxConf };
  for (const name of [
    ...model.certificatesInUse,
    ...(defaultCertificate ? [defaultCertificate] : []),
  ].sort()) {
    const material = certificates(name);
    if (!material) continue;
    files[`certs/${name}.crt`] = material.certificatePem;
    files[`certs/${name}.key`] = material.privateKeyPem;
  }
  return files;
}

/** Content address of a bundle: the same files always give the same fingerprint. */
export function fingerprintBundle(files: BundleFiles): string {
  const hash = createHash('sha256');
  for (const name of Object.keys(files).sort()) {
    const content = files[name] ?? '';
    hash.update(`${name}\u0000${Buffer.byteLength(content)}\u0000`);
    hash.update(content);
  }
  return hash.digest('hex');
}

/** An upstream member line: an IP and a port the model validated, nothing nginx could reject. */
const UPSTREAM_SERVER_LINE =
  /^ {8}server \d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}:\d{1,5} max_fails=1 fail_timeout=2s;\n/gm;

/**
 * The fingerprint of a bundle without its upstream member lines. Two bundles with the same shape differ only in
 * task addresses, so if nginx accepted one it accepts the other: scaling needs no new `nginx -t`.
 */
export function shapeFingerprint(files: BundleFiles): string {
  const shape: Record<string, string> = {};
  for (const [name, content] of Object.entries(files))
    shape[name] = content.replace(UPSTREAM_SERVER_LINE, '');
  return fingerprintBundle(shape);
}

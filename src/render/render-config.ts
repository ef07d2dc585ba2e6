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
}

export function renderConfig(
  model: RoutingModel,
  settings: RenderSettings,
  templates: TemplateRenderer,
): BundleFiles {
  const servers = model.servers.map((server) => ({
    host: server.host,
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
    upstreams: model.upstreams,
    servers,
  });
  return { 'nginx.conf': nginxConf };
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

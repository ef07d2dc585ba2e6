import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { defaultProxySettings } from '../../src/config.ts';
import { buildRoutingModel } from '../../src/model/routing-model.ts';
import type { RoutingModel } from '../../src/model/routing-model.ts';
import { createTemplateRenderer } from '../../src/render/nunjucks-env.ts';
import { renderConfig } from '../../src/render/render-config.ts';
import type { RenderSettings } from '../../src/render/render-config.ts';
import { BlockCache, RenderCache } from '../../src/render/block-cache.ts';
import { servicesSnapshot } from '../support/one-service.ts';

const templates = createTemplateRenderer();
const SETTINGS: RenderSettings = { proxy: defaultProxySettings(), generator: 'test' };

function model(services: Record<string, Record<string, string>>): RoutingModel {
  return buildRoutingModel(
    servicesSnapshot(
      Object.entries(services).map(([name, labels], index) => ({
        name,
        labels,
        ips: [`10.0.${index}.1`, `10.0.${index}.2`],
      })),
    ),
    { networks: ['swarmgate'] },
  );
}

/** Blocks rendered, reused and held by the last render: servers, then upstreams. */
const counts = (cache: RenderCache) => ({
  servers: [cache.servers.rendered, cache.servers.reused, cache.servers.size],
  upstreams: [cache.upstreams.rendered, cache.upstreams.reused, cache.upstreams.size],
});

const fresh = (routing: RoutingModel, settings = SETTINGS) => renderConfig(routing, settings, templates);

test('render cache: an unchanged host or service is reused, a changed one rendered again, a removed one dropped', () => {
  const cache = new RenderCache();
  const first = model({
    a: { VIRTUAL_HOST: 'a.example.com' },
    b: { VIRTUAL_HOST: 'b.example.com' },
    c: { VIRTUAL_HOST: 'c.example.com' },
  });
  assert.deepEqual(renderConfig(first, SETTINGS, templates, undefined, cache), fresh(first));
  assert.deepEqual(counts(cache), { servers: [3, 0, 3], upstreams: [3, 0, 3] });

  // b's routes change, a's task addresses change (peers.txt only), c is removed.
  const second = model({
    a: { VIRTUAL_HOST: 'a.example.com' },
    b: { VIRTUAL_HOST: 'b.example.com', VIRTUAL_PATH: '/api/' },
  });
  assert.deepEqual(renderConfig(second, SETTINGS, templates, undefined, cache), fresh(second));
  assert.deepEqual(counts(cache), { servers: [1, 1, 2], upstreams: [0, 2, 2] });

  // c is back: its block was let go with it, so it is rendered again.
  const third = model({
    a: { VIRTUAL_HOST: 'a.example.com' },
    b: { VIRTUAL_HOST: 'b.example.com', VIRTUAL_PATH: '/api/' },
    c: { VIRTUAL_HOST: 'c.example.com' },
  });
  assert.deepEqual(renderConfig(third, SETTINGS, templates, undefined, cache), fresh(third));
  assert.deepEqual(counts(cache), { servers: [1, 2, 3], upstreams: [1, 2, 3] });
});

test('render cache: a setting every block reads renders them all again', () => {
  const cache = new RenderCache();
  const routing = model({ a: { VIRTUAL_HOST: 'a.example.com' }, b: { VIRTUAL_HOST: 'b.example.com' } });
  renderConfig(routing, SETTINGS, templates, undefined, cache);
  const metricsOff: RenderSettings = {
    ...SETTINGS,
    proxy: { ...SETTINGS.proxy, trafficMetrics: !SETTINGS.proxy.trafficMetrics },
  };
  const files = renderConfig(routing, metricsOff, templates, undefined, cache);
  assert.deepEqual(files, fresh(routing, metricsOff));
  assert.notEqual(files['nginx.conf'], fresh(routing)['nginx.conf']);
  assert.deepEqual(counts(cache), { servers: [2, 0, 2], upstreams: [2, 0, 2] });
});

test('render cache: any sequence of models rendered through one cache gives the bytes of a fresh render', () => {
  const hosts = ['a.example.com', 'b.example.com', 'c.example.com', 'shared.example.com'];
  const fields = {
    host: fc.constantFrom(...hosts),
    path: fc.constantFrom(undefined, '/api/', '/static/'),
    https: fc.constantFrom(undefined, 'redirect', 'noredirect', 'nohttp'),
    gzip: fc.constantFrom(undefined, 'on', 'off'),
    // Read from the service's upstream, not its server: sticky and least_conn change the locations' text.
    balance: fc.constantFrom(undefined, 'least_conn'),
    sticky: fc.constantFrom(undefined, 'true'),
  };
  type Spec = { [K in keyof typeof fields]?: string };
  const names = ['s1', 's2', 's3', 's4', 's5'];
  // Each step changes one field of one service (or removes it): consecutive models differ a little, as in a swarm.
  const change = fc.oneof(
    ...Object.entries(fields).map(([field, value]) =>
      fc.record({ name: fc.constantFrom(...names), field: fc.constant(field), value }),
    ),
    fc.record({
      name: fc.constantFrom(...names),
      field: fc.constant('removed'),
      value: fc.constant(undefined),
    }),
  );
  const settings = fc.record({ trafficMetrics: fc.boolean(), ipv6: fc.boolean() });
  const base = fc.dictionary(fc.constantFrom(...names), fc.record(fields), { minKeys: 1, maxKeys: 5 });
  fc.assert(
    fc.property(base, fc.array(change, { maxLength: 8 }), settings, (start, changes, proxy) => {
      const cache = new RenderCache();
      const stepSettings: RenderSettings = { ...SETTINGS, proxy: { ...SETTINGS.proxy, ...proxy } };
      const specs: Record<string, Spec> = { ...start };
      for (const step of [null, ...changes]) {
        if (step?.field === 'removed') delete specs[step.name];
        else if (step)
          specs[step.name] = { host: 'a.example.com', ...specs[step.name], [step.field]: step.value };
        const routing = model(
          Object.fromEntries(
            Object.entries(specs).map(([name, spec]) => [
              name,
              {
                VIRTUAL_HOST: spec.host ?? 'a.example.com',
                ...(spec.path ? { VIRTUAL_PATH: spec.path } : {}),
                ...(spec.https ? { HTTPS_METHOD: spec.https, CERT_NAME: 'shared' } : {}),
                ...(spec.gzip ? { 'swarmgate.gzip': spec.gzip } : {}),
                ...(spec.balance ? { 'swarmgate.balance': spec.balance } : {}),
                ...(spec.sticky ? { 'swarmgate.sticky': spec.sticky } : {}),
              },
            ]),
          ),
        );
        assert.deepEqual(
          renderConfig(routing, stepSettings, templates, undefined, cache),
          fresh(routing, stepSettings),
        );
        assert.equal(cache.servers.size <= routing.servers.length, true);
        assert.equal(cache.upstreams.size <= routing.upstreams.length, true);
      }
    }),
    { numRuns: 100 },
  );
});

test('render cache: blocks held as parts of the config they were put into stay the same text', () => {
  const cache = new BlockCache();
  const render = (name: string) => `server ${name} {}\n`;
  const servers = ['a', 'b', 'a', 'c'];
  const texts = cache.texts('s', servers, (name) => name, render);
  // The first block's text also occurs before the blocks: the one followed by the others is theirs.
  const conf = `# server a {}\n${texts.join('')}# end\n`;
  cache.settle(conf);
  // An equal config that is another string (the published one), then one without the blocks (left as they are).
  cache.settle(`${conf.slice(0, 5)}${conf.slice(5)}`);
  cache.settle('nothing of theirs');
  const again = cache.texts(
    's',
    servers,
    (name) => name,
    () => 'rendered again',
  );
  assert.deepEqual(again, texts);
  assert.deepEqual([cache.reused, cache.rendered, cache.size], [4, 0, 3]);
});

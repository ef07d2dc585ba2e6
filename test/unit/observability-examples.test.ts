// examples/prometheus-alerts.yml and examples/grafana-dashboard.json parse, have the alerts the docs promise, and
// use only metric names swarmgate really serves (read from the code that writes them).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { parseYamlSubset } from '../support/yaml-subset.ts';
import type { YamlValue } from '../support/yaml-subset.ts';

const root = path.resolve(import.meta.dirname, '../..');
const read = (file: string): string => readFileSync(path.join(root, file), 'utf8');

/** Every metric name the controller's /metrics and the edge's metrics port write. */
function servedMetricNames(): Set<string> {
  const names = new Set<string>();
  for (const file of ['src/admin/admin-routes.ts', 'src/edge/edge-metrics.ts']) {
    for (const match of read(file).matchAll(/'(swarmgate_[a-z0-9_]+)'/g)) names.add(match[1] ?? '');
  }
  return names;
}

/** Metric names in a PromQL expression, histogram series mapped to the histogram's name. */
function metricNamesIn(expr: string): string[] {
  return [...expr.matchAll(/\b(swarmgate_[a-z0-9_]+)/g)].map((match) =>
    (match[1] ?? '').replace(/_(bucket|sum|count)$/, ''),
  );
}

interface Rule {
  alert: string;
  expr: string;
  labels: { severity: string };
  annotations: { summary: string };
}

function asObject(value: YamlValue | undefined): Record<string, YamlValue> {
  assert.ok(value !== undefined && typeof value === 'object' && !Array.isArray(value));
  return value;
}

test('the YAML subset parser reads the rule file shape and refuses what it does not know', () => {
  assert.deepEqual(parseYamlSubset("a:\n  - b: 'it''s'\n    c: |\n      x\n      y\n  - d: e\n"), {
    a: [{ b: "it's", c: 'x\ny\n' }, { d: 'e' }],
  });
  assert.throws(() => parseYamlSubset('a:\n\tb: 1\n'), /tab/);
  assert.throws(() => parseYamlSubset('a: [1, 2]\n'), /outside the subset/);
  assert.throws(() => parseYamlSubset('a: 1\na: 2\n'), /duplicate/);
  assert.throws(() => parseYamlSubset("a: 'open\n"), /quote/);
});

test('alert rules: they parse, cover what the docs promise, and use real metric names', () => {
  const rules = (
    asObject(parseYamlSubset(read('examples/prometheus-alerts.yml'))).groups as YamlValue[]
  ).flatMap((group) => asObject(group).rules as unknown as Rule[]);
  const names = rules.map((rule) => rule.alert);
  assert.equal(new Set(names).size, names.length, 'alert names are unique');
  for (const rule of rules) {
    assert.ok(typeof rule.expr === 'string' && rule.expr.length > 0, rule.alert);
    assert.ok(['critical', 'warning', 'info'].includes(rule.labels.severity), rule.alert);
    assert.ok(rule.annotations.summary.length > 0, rule.alert);
  }
  const expr = (alert: string): string => rules.find((rule) => rule.alert === alert)?.expr ?? '';
  assert.match(
    expr('SwarmgateCertificateExpiresSoon'),
    /swarmgate_certificate_expiry_timestamp_seconds - time\(\) < 14 \* 86400/,
  );
  assert.match(expr('SwarmgateCertificateRenewalFailing'), /swarmgate_certificate_failing/);
  assert.match(expr('SwarmgateEdgeOutOfSync'), /swarmgate_edge_in_sync == 0/);
  assert.match(expr('SwarmgateProblems'), /swarmgate_problems/);
  assert.match(expr('SwarmgateRouteErrorRate'), /code="5xx"/);
  assert.match(expr('SwarmgateRouteSlow'), /histogram_quantile\(0\.95/);
  assert.match(expr('SwarmgateControllerNotReady'), /swarmgate_controller_ready == 0/);

  const served = servedMetricNames();
  const unknown = rules.flatMap((rule) => metricNamesIn(rule.expr)).filter((name) => !served.has(name));
  assert.deepEqual(unknown, [], 'every metric an alert reads is served');
});

test('Grafana dashboard: valid JSON, importable, every panel queries real metric names', () => {
  const dashboard = JSON.parse(read('examples/grafana-dashboard.json')) as {
    uid: string;
    __inputs: { name: string }[];
    panels: { id: number; type: string; gridPos: { w: number; h: number }; targets?: { expr: string }[] }[];
  };
  assert.equal(dashboard.uid, 'swarmgate');
  assert.deepEqual(
    dashboard.__inputs.map((input) => input.name),
    ['DS_PROMETHEUS'],
  );
  const ids = dashboard.panels.map((panel) => panel.id);
  assert.equal(new Set(ids).size, ids.length, 'panel ids are unique');
  const served = servedMetricNames();
  const queries = dashboard.panels
    .filter((panel) => panel.type !== 'row')
    .flatMap((panel) => panel.targets ?? []);
  assert.ok(queries.length >= 15, `${queries.length} queries`);
  for (const panel of dashboard.panels) assert.ok(panel.gridPos.w > 0 && panel.gridPos.w <= 24);
  const unknown = queries.flatMap((query) => metricNamesIn(query.expr)).filter((name) => !served.has(name));
  assert.deepEqual(unknown, [], 'every metric a panel reads is served');
});

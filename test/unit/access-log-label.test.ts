// swarmgate.access_log: labels in, parsed value or reason out (a caddy-docker-proxy style table).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseAccessLog } from '../../src/model/access-log-label.ts';

const CASES: readonly (readonly [string, string])[] = [
  ['off', 'off'],
  ['json', 'json'],
  [' JSON ', 'json'],
  ['nginx-proxy', 'nginx-proxy'],
  ['Nginx-Proxy', 'nginx-proxy'],
  ['', 'error: "" is not one of off, json, nginx-proxy'],
  ['on', 'error: "on" is not one of off, json, nginx-proxy'],
  [
    'json; access_log /etc/passwd',
    'error: "json; access_log /etc/passwd" is not one of off, json, nginx-proxy',
  ],
];

test('swarmgate.access_log accepts off, json and nginx-proxy only', () => {
  for (const [label, expected] of CASES) {
    const parsed = parseAccessLog(label);
    assert.equal(parsed.ok ? parsed.value : `error: ${parsed.reason}`, expected, label);
  }
});

import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  parseDest,
  parseHost,
  parseHostList,
  parseNetworkName,
  parsePath,
  parsePort,
  parseProto,
  parseRoot,
} from '../../src/model/labels.ts';
import type { Parsed } from '../../src/model/labels.ts';
import { REGEX_TABLE } from '../support/label-tables.ts';

function value<T>(parsed: Parsed<T>): T {
  assert.ok(parsed.ok, `expected a value, got: ${parsed.ok ? '' : parsed.reason}`);
  return parsed.value;
}

function reason<T>(parsed: Parsed<T>): string {
  assert.ok(!parsed.ok, `expected a rejection, got ${JSON.stringify(parsed)}`);
  return parsed.reason;
}

test('VIRTUAL_HOST: exact names are lower-cased; wildcards and regexes are recognised', () => {
  assert.deepEqual(value(parseHost('Shop.Example.COM')), { kind: 'exact', value: 'shop.example.com' });
  assert.deepEqual(value(parseHost('*.example.com')), { kind: 'wildcard', value: '*.example.com' });
  assert.deepEqual(value(parseHost('example.*')), { kind: 'wildcard', value: 'example.*' });
  assert.deepEqual(value(parseHost('~^api\\d+\\.Example\\.com$')), {
    kind: 'regex',
    value: '~^api\\d+\\.Example\\.com$',
  });
  assert.deepEqual(value(parseHost('10.0.0.1')), { kind: 'exact', value: '10.0.0.1' });
  assert.deepEqual(value(parseHost('under_score.local')), { kind: 'exact', value: 'under_score.local' });
});

test('VIRTUAL_HOST: what does not parse is rejected with a reason', () => {
  assert.match(reason(parseHost('a.example.com:8080')), /port/);
  assert.match(reason(parseHost('evil.com;}')), /not a DNS name/);
  assert.match(reason(parseHost('bad host.com')), /not a DNS name/);
  assert.match(reason(parseHost('-leading.example.com')), /not a DNS name/);
  assert.match(reason(parseHost('a..b')), /not a DNS name/);
  assert.match(reason(parseHost(`${'a'.repeat(64)}.com`)), /not a DNS name/);
  // could not build server_names_hash, you should increase server_names_hash_bucket_size: 128
  assert.match(reason(parseHost(`${'a'.repeat(60)}.${'b'.repeat(50)}`)), /longer than 110 characters/);
  assert.equal(value(parseHost(`${'a'.repeat(60)}.${'b'.repeat(49)}`)).value.length, 110);
  assert.equal(
    value(parseHost(`*.${'a'.repeat(63)}.${'b'.repeat(63)}.${'c'.repeat(63)}.d`)).kind,
    'wildcard',
  );
  assert.match(reason(parseHost('*.')), /after "\*\."/);
  assert.match(reason(parseHost('*.*.example.com')), /after "\*\."/);
  assert.match(reason(parseHost('.*')), /before "\.\*"/);
  assert.match(reason(parseHost('~')), /empty/);
  assert.match(reason(parseHost('~^(open')), /never closed/);
  assert.match(reason(parseHost('~^a"b')), /quote/);
  assert.match(reason(parseHost('~^a b')), /whitespace/);
});

test('VIRTUAL_HOST: a comma list keeps each host once and fails as a whole if one entry fails', () => {
  assert.deepEqual(
    value(parseHostList(' a.example.com, ,b.example.com,A.example.com ')).map((host) => host.value),
    ['a.example.com', 'b.example.com'],
  );
  assert.match(reason(parseHostList('ok.example.com, not ok')), /"not ok"/);
  assert.deepEqual(
    value(parseHostList('~^a{2,5}\\.example$,b.example.com,~^c{1,}$')).map((host) => host.value),
    ['~^a{2,5}\\.example$', 'b.example.com', '~^c{1,}$'],
  );
  assert.match(reason(parseHostList(' , ')), /no host/);
  assert.match(reason(parseHostList('')), /no host/);
});

test('VIRTUAL_PORT: 1..65535 only', () => {
  assert.equal(value(parsePort('8080')), 8080);
  assert.equal(value(parsePort(' 1 ')), 1);
  assert.equal(value(parsePort('65535')), 65535);
  for (const bad of ['0', '65536', '-1', '80a', '80;', '', '8 0', '1e3']) assert.ok(!parsePort(bad).ok, bad);
});

test('VIRTUAL_PATH: prefixes and regexes; nothing that could end a directive', () => {
  assert.deepEqual(value(parsePath('/api/')), { kind: 'prefix', value: '/api/' });
  assert.deepEqual(value(parsePath('/')), { kind: 'prefix', value: '/' });
  assert.deepEqual(value(parsePath('~^/v[0-9]+/')), { kind: 'regex', value: '~^/v[0-9]+/' });
  assert.deepEqual(value(parsePath('~*\\.png$')), { kind: 'regex', value: '~*\\.png$' });
  for (const bad of [
    'api',
    '/a b',
    '/a;',
    '/a{',
    '/a}',
    '/a#',
    '/a"',
    "/a'",
    '/a\\b',
    '/a\nb',
    '~^/a\nb',
    '~(',
  ]) {
    assert.ok(!parsePath(bad).ok, JSON.stringify(bad));
  }
});

test('VIRTUAL_DEST, VIRTUAL_ROOT: absolute, safe paths', () => {
  assert.equal(value(parseDest('/')), '/');
  assert.equal(value(parseDest('/v2/')), '/v2/');
  assert.ok(!parseDest('v2').ok);
  assert.ok(!parseDest('/x;return 200').ok);
  assert.ok(!parseDest('http://other/').ok);
  assert.equal(value(parseRoot('/var/www/html')), '/var/www/html');
  assert.ok(!parseRoot('relative').ok);
  assert.ok(!parseRoot('/a b').ok);
});

test('VIRTUAL_PROTO: one of six, case-insensitive', () => {
  for (const proto of ['http', 'https', 'grpc', 'grpcs', 'uwsgi', 'fastcgi'])
    assert.equal(value(parseProto(proto)), proto);
  assert.equal(value(parseProto(' HTTPS ')), 'https');
  assert.match(reason(parseProto('ftp')), /not one of/);
  assert.ok(!parseProto('http;').ok);
});

test('swarmgate.network: a Docker network name', () => {
  assert.equal(value(parseNetworkName('swarmgate')), 'swarmgate');
  assert.equal(value(parseNetworkName('my_stack-public.1')), 'my_stack-public.1');
  assert.ok(!parseNetworkName('-x').ok);
  assert.ok(!parseNetworkName('a b').ok);
  assert.ok(!parseNetworkName('').ok);
});

test('regex label table: nginx-safe regexes pass; what nginx refuses or reads differently has a reason', () => {
  for (const [body, expected] of REGEX_TABLE) {
    const host = parseHost(`~${body}`);
    const path = parsePath(`~${body}`);
    if (expected === 'ok') {
      assert.ok(host.ok, `host ~${body}: ${host.ok ? '' : host.reason}`);
      assert.ok(path.ok, `path ~${body}: ${path.ok ? '' : path.reason}`);
    } else {
      assert.match(reason(host), expected, `host ~${body}`);
      assert.match(reason(path), expected, `path ~${body}`);
    }
  }
});

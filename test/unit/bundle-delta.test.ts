import assert from 'node:assert/strict';
import { test } from 'node:test';
import { gunzipSync } from 'node:zlib';
import fc from 'fast-check';
import { isSwarmgateError } from '../../src/errors.ts';
import { BundleAnswers, RECENT_BUNDLES } from '../../src/publish/bundle-answers.ts';
import {
  applyEdits,
  assembleBundle,
  buildAnswer,
  diffText,
  fileHashes,
  parseAnswer,
  sha256,
} from '../../src/publish/bundle-delta.ts';
import type { BaseSource, BundleAnswer, FetchFiles, HashedBundle } from '../../src/publish/bundle-delta.ts';
import { fingerprintBundle } from '../../src/render/render-config.ts';
import type { BundleFiles } from '../../src/render/render-config.ts';

function hashed(files: BundleFiles, version = 1): HashedBundle {
  return {
    version,
    fingerprint: fingerprintBundle(files),
    publishedAt: '2026-11-25T00:00:00.000Z',
    files,
    hashes: fileHashes(files),
  };
}

function baseOf(files: BundleFiles, read = (name: string): string | null => files[name] ?? null): BaseSource {
  return {
    fingerprint: fingerprintBundle(files),
    hashes: fileHashes(files),
    read: async (name) => read(name),
  };
}

const noFetch: FetchFiles = () => Promise.reject(new Error('nothing should be fetched'));

const lines = fc.array(
  fc.constantFrom('a\n', 'b\n', 'server {\n', '}\n', '\n', 'upstream x 10.0.0.1:80\n', 'z'),
  {
    maxLength: 60,
  },
);

test('diffText: applying its edits to the base gives the target, for any two texts', () => {
  fc.assert(
    fc.property(lines, lines, (a, b) => {
      const base = a.join('');
      const target = b.join('');
      const edits = diffText(base, target, 10_000);
      assert.ok(edits);
      assert.equal(applyEdits(base, edits), target);
    }),
    { numRuns: 1000 },
  );
});

test('diffText: one block inserted in a large file is one small edit; past maxEdits it gives up', () => {
  const blocks = Array.from({ length: 3000 }, (_, i) => `server {\n    server_name app${i};\n}\n`);
  const base = blocks.join('');
  const target = [
    ...blocks.slice(0, 1500),
    'server {\n    server_name new;\n}\n',
    ...blocks.slice(1500),
  ].join('');
  const edits = diffText(base, target);
  assert.ok(edits);
  assert.equal(edits.length, 1);
  assert.equal(edits[0]?.[2].length, 'server {\n    server_name new;\n}\n'.length);
  assert.equal(applyEdits(base, edits), target);
  assert.equal(diffText(base, blocks.reverse().join(''), 100), null);
});

test('applyEdits: edits out of order or out of range are refused (ERR_BUNDLE_INVALID)', () => {
  for (const edits of [
    [
      [5, 0, 'x'],
      [2, 0, 'y'],
    ],
    [[0, 99, '']],
    [[-1, 0, 'x']],
    [[0, 0, 5]],
  ] as unknown as Parameters<typeof applyEdits>[1][]) {
    assert.throws(
      () => applyEdits('0123456789', edits),
      (error) => isSwarmgateError(error, 'ERR_BUNDLE_INVALID'),
    );
  }
});

const bundles = fc.dictionary(
  fc.constantFrom('nginx.conf', 'peers.txt', 'certs/a.crt', 'certs/a.key', 'certs/b.crt'),
  lines.map((parts) => parts.join('').repeat(80)),
);

test('buildAnswer + assembleBundle: any bundle is rebuilt exactly from any base, with only changed files sent', async () => {
  await fc.assert(
    fc.asyncProperty(bundles, bundles, async (before, after) => {
      const answer = buildAnswer(hashed(after, 2), hashed(before));
      const assembly = await assembleBundle(
        parseAnswer(JSON.parse(JSON.stringify(answer))),
        baseOf(before),
        noFetch,
      );
      assert.deepEqual(assembly.files, { ...after });
      for (const name of Object.keys(answer.files))
        assert.notEqual(before[name], after[name], `${name} unchanged but sent`);
    }),
    { numRuns: 300 },
  );
});

test('assembleBundle: a file that does not match its hash is refused', async () => {
  const files = { 'nginx.conf': 'events {}\n', 'peers.txt': 'generation x\n' };
  const answer = buildAnswer(hashed(files), null);
  const tampered: BundleAnswer = {
    ...answer,
    files: { ...answer.files, 'nginx.conf': { sha256: sha256('events {}\n'), content: 'evil\n' } },
  };
  await assert.rejects(assembleBundle(tampered, null, noFetch), (error) =>
    isSwarmgateError(error, 'ERR_BUNDLE_INVALID'),
  );
});

test('assembleBundle: an answer built on a bundle the edge did not offer is refused', async () => {
  const a = { 'nginx.conf': 'a\n'.repeat(5000) };
  const b = { 'nginx.conf': 'a\n'.repeat(5000) + 'b\n' };
  const answer = buildAnswer(hashed(b, 2), hashed(a));
  assert.ok('edits' in (answer.files['nginx.conf'] ?? {}), 'a large file goes as edits');
  await assert.rejects(assembleBundle(answer, null, noFetch), /did not offer/);
  await assert.rejects(assembleBundle(answer, baseOf({ 'nginx.conf': 'c\n' }), noFetch), /did not offer/);
});

test('assembleBundle: a damaged own copy is fetched by the hash the bundle needs; a missing fetch is refused', async () => {
  const before = { 'nginx.conf': 'a\n'.repeat(5000), 'certs/a.crt': 'CERT\n' };
  const after = { 'nginx.conf': 'a\n'.repeat(5000) + 'b\n', 'certs/a.crt': 'CERT\n' };
  const answer = buildAnswer(hashed(after, 2), hashed(before));
  const damaged = baseOf(before, (name) => `${before[name as keyof typeof before]}damage`);
  const asked: string[] = [];
  const fetchFiles: FetchFiles = async (wanted) => {
    asked.push(...wanted.map((file) => file.name));
    return new Map(wanted.map((file) => [file.sha256, after[file.name as keyof typeof after]]));
  };
  const assembly = await assembleBundle(answer, damaged, fetchFiles);
  assert.deepEqual(assembly.files, after);
  assert.deepEqual(asked.sort(), ['certs/a.crt', 'nginx.conf']);
  await assert.rejects(
    assembleBundle(answer, damaged, async () => new Map()),
    /no longer has/,
  );
});

test('BundleAnswers: one encoding per base and version, served to every edge; an unknown base gets every file', () => {
  const answers = new BundleAnswers();
  const v1 = { version: 1, fingerprint: '', publishedAt: 'x', files: { 'nginx.conf': 'a\n'.repeat(5000) } };
  const v1f = { ...v1, fingerprint: fingerprintBundle(v1.files) };
  const v2files = { 'nginx.conf': 'a\n'.repeat(5000) + 'b\n' };
  const v2 = { version: 2, fingerprint: fingerprintBundle(v2files), publishedAt: 'y', files: v2files };
  answers.remember(v1f);
  answers.remember(v2);
  const delta = answers.encode(v2, v1f.fingerprint, true);
  assert.equal(answers.encode(v2, v1f.fingerprint, true), delta, 'the same bytes for the next edge');
  assert.equal(delta.delta, true);
  assert.equal(delta.gzip, false, 'a small answer goes plain');
  const full = answers.encode(v2, 'f'.repeat(64), true);
  assert.equal(full.delta, false);
  assert.equal(full.gzip, true);
  const decoded = JSON.parse(gunzipSync(full.body).toString('utf8')) as BundleAnswer;
  assert.equal(decoded.base, null);
  assert.deepEqual(Object.keys(decoded.files), ['nginx.conf']);
  assert.deepEqual(answers.files([{ name: 'nginx.conf', sha256: sha256(v1.files['nginx.conf']) }]), {
    [sha256(v1.files['nginx.conf'])]: v1.files['nginx.conf'],
  });
  assert.deepEqual(answers.files([{ name: 'nginx.conf', sha256: 'f'.repeat(64) }]), {});
});

test('BundleAnswers: older bundles are kept packed, one copy per distinct file, and still answer and serve files', () => {
  const answers = new BundleAnswers();
  const conf = 'server\n'.repeat(1000);
  const bundles = Array.from({ length: RECENT_BUNDLES + 2 }, (_, n) => {
    const files = {
      'nginx.conf': conf,
      'peers.txt': `generation x\n${'upstream b 10.0.1.1:80\n'.repeat(300)}upstream a 10.0.0.${n}:80\n`,
    };
    return { version: n + 1, fingerprint: fingerprintBundle(files), publishedAt: `t${n}`, files };
  });
  const [first, second, third] = bundles as [(typeof bundles)[0], (typeof bundles)[0], (typeof bundles)[0]];
  answers.remember(first);
  assert.equal(answers.packedBytes, 0, 'the newest bundle is the published strings');
  answers.remember(second);
  answers.remember(third);
  // Two older bundles: their nginx.conf once, and each its own peers.txt.
  assert.equal(
    answers.packedBytes,
    conf.length + first.files['peers.txt'].length + second.files['peers.txt'].length,
  );
  const delta = JSON.parse(
    answers.encode(third, first.fingerprint, false).body.toString('utf8'),
  ) as BundleAnswer;
  assert.equal(delta.base, first.fingerprint);
  assert.deepEqual(Object.keys(delta.files), ['peers.txt']);
  assert.ok(
    'edits' in (delta.files['peers.txt'] as object),
    'an edit of the packed base, not the whole file',
  );
  const wanted = sha256(first.files['peers.txt']);
  assert.deepEqual(answers.files([{ name: 'peers.txt', sha256: wanted }]), {
    [wanted]: first.files['peers.txt'],
  });
  for (const bundle of bundles.slice(3)) answers.remember(bundle);
  // The first two left the window: their peers.txt is let go, the shared nginx.conf is not.
  const kept = bundles.slice(-RECENT_BUNDLES, -1);
  assert.equal(
    answers.packedBytes,
    conf.length + kept.reduce((sum, bundle) => sum + bundle.files['peers.txt'].length, 0),
  );
  assert.deepEqual(answers.files([{ name: 'peers.txt', sha256: wanted }]), {});
});

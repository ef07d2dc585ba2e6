// Staging a bundle on the edge's volume links the files an earlier bundle already has with the same content instead
// of writing and fsyncing them again (at 2,000 HTTPS hosts a bundle is 4,000 certificate and key files, and a new host
// changes two of them). A copy damaged on the volume since it was staged is written fresh, never linked; a volume
// that refuses hard links gets every file written.
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import type { TestContext } from 'node:test';
import { BundleCache } from '../../src/edge/bundle-cache.ts';
import { nodeBundleFs } from '../../src/nginx/bundle-dir.ts';
import type { BundleFs } from '../../src/nginx/bundle-dir.ts';

async function stateDir(t: TestContext): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'swarmgate-bundle-links-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

const first = {
  'nginx.conf': 'events {}\n',
  'certificates.pem': 'certificate a\nchain a\nkey\nkey a\nend\n',
  'certs/a.crt': 'chain a\n',
  'certs/a.key': 'key a\n',
  'certs/b.crt': 'chain b\n',
};
const second = { ...first, 'nginx.conf': 'events {} # a new host\n', 'certs/c.crt': 'chain c\n' };

/** The file system, counting what it writes and links. */
function countingFs(linking = true): BundleFs & { written: string[]; linked: string[] } {
  const fs = {
    ...nodeBundleFs,
    written: [] as string[],
    linked: [] as string[],
    async writeFile(file: string, data: string, mode: number, durable: boolean) {
      fs.written.push(path.basename(file));
      return nodeBundleFs.writeFile(file, data, mode, durable);
    },
    async link(existing: string, newName: string) {
      if (!linking) throw Object.assign(new Error('EPERM: link'), { code: 'EPERM' });
      fs.linked.push(path.basename(newName));
      return nodeBundleFs.link(existing, newName);
    },
  };
  return fs;
}

test('unchanged files of the next bundle are links to the previous one; changed and new ones are written', async (t) => {
  const dir = await stateDir(t);
  const fs = countingFs();
  const cache = new BundleCache(dir, fs);
  const firstConf = await cache.stage('f1', first);
  assert.deepEqual(fs.linked, [], 'nothing to link to yet');
  fs.written.length = 0;
  const secondConf = await cache.stage('f2', second);
  assert.deepEqual(fs.written.sort(), ['c.crt', 'nginx.conf']);
  assert.deepEqual(fs.linked.sort(), ['a.crt', 'a.key', 'b.crt', 'certificates.pem']);
  const [before, after] = [path.dirname(firstConf), path.dirname(secondConf)];
  for (const name of ['certs/a.crt', 'certs/a.key', 'certs/b.crt', 'certificates.pem']) {
    const [old, linked] = [await stat(path.join(before, name)), await stat(path.join(after, name))];
    assert.equal(linked.ino, old.ino, `${name} is the same file`);
    // Keys, and certificates.pem which holds keys, are root's only.
    assert.equal(linked.mode & 0o777, name.endsWith('.crt') ? 0o644 : 0o600, name);
  }
  for (const [name, content] of Object.entries(second)) {
    assert.equal(await readFile(path.join(after, name), 'utf8'), content);
  }
  // The previous bundle removed: the links keep the files.
  await cache.prune(['f2']);
  assert.equal(await readFile(path.join(after, 'certs/a.key'), 'utf8'), 'key a\n');
});

test('a file damaged on the volume since it was staged is written fresh, not linked', async (t) => {
  const dir = await stateDir(t);
  const fs = countingFs();
  const cache = new BundleCache(dir, fs);
  const firstConf = await cache.stage('f1', first);
  await writeFile(path.join(path.dirname(firstConf), 'certs/a.crt'), 'damaged\n');
  const secondConf = await cache.stage('f2', second);
  assert.ok(!fs.linked.includes('a.crt'));
  assert.equal(await readFile(path.join(path.dirname(secondConf), 'certs/a.crt'), 'utf8'), 'chain a\n');
});

test('a volume that refuses hard links gets every file written', async (t) => {
  const dir = await stateDir(t);
  const fs = countingFs(false);
  const cache = new BundleCache(dir, fs);
  await cache.stage('f1', first);
  fs.written.length = 0;
  const secondConf = await cache.stage('f2', second);
  assert.deepEqual(fs.written.sort(), ['a.crt', 'a.key', 'b.crt', 'c.crt', 'certificates.pem', 'nginx.conf']);
  assert.equal(await readFile(path.join(path.dirname(secondConf), 'certs/b.crt'), 'utf8'), 'chain b\n');
});

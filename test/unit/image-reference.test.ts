import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseImageReference } from '../../src/registry/image-reference.ts';

test('image references: registry host by Docker’s rule', () => {
  assert.deepEqual(parseImageReference('nginx'), {
    registry: 'docker.io',
    repository: 'library/nginx',
    tag: null,
    digest: null,
  });
  assert.deepEqual(parseImageReference('team/app:1.2'), {
    registry: 'docker.io',
    repository: 'team/app',
    tag: '1.2',
    digest: null,
  });
  assert.deepEqual(parseImageReference('registry.example.com/team/app:2'), {
    registry: 'registry.example.com',
    repository: 'team/app',
    tag: '2',
    digest: null,
  });
  assert.deepEqual(parseImageReference('localhost:5000/app'), {
    registry: 'localhost:5000',
    repository: 'app',
    tag: null,
    digest: null,
  });
  assert.equal(parseImageReference('localhost/app')?.registry, 'localhost');
  const digest = `sha256:${'a'.repeat(64)}`;
  assert.equal(parseImageReference(`reg.test/app:1@${digest}`)?.digest, digest);
});

test('image references: what is not one', () => {
  for (const text of ['', 'UPPER/case', 'a b', 'app:', 'reg.test/', '/app', 'app@sha256:short', 'app:-bad']) {
    assert.equal(parseImageReference(text), null, text);
  }
});

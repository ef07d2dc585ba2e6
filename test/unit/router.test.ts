import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isSwarmgateError } from '../../src/errors.ts';
import { plainTarget } from '../../src/http/router.ts';

test('request targets: plain paths pass as sent; backslash, dot segments, encoded separators and // are refused', () => {
  for (const target of [
    '/v1/status',
    '/v1/services/web/scale',
    '/v1/registries/registry.test%3A5000/tags/apps/web?n=10&last=a%2Fb',
    '/.well-known/acme-challenge/Ab-c_09',
    '/v1/services/a.b..c',
  ]) {
    assert.equal(plainTarget(target).pathname, target.split('?')[0], target);
  }
  for (const target of [
    '/.well-known/acme-challenge/..\\..\\..\\v1/status',
    '/.well-known/acme-challenge/..%5c..%5cv1/status',
    '/.well-known/acme-challenge/..%5C..%5Cv1/status',
    '/.well-known/acme-challenge/%2e%2e/%2e%2e/v1/status',
    '/.well-known/acme-challenge/.%2E/.%2e/v1/status',
    '/.well-known/acme-challenge/x%2f..%2f..%2fv1%2fstatus',
    '/.well-known/acme-challenge/../../v1/status',
    '/v1/./status',
    '//controller/v1/status',
    '/v1//status',
    'http://controller/v1/status',
    '*',
    '',
    '/v1/status<x>',
  ]) {
    assert.throws(
      () => plainTarget(target),
      (error: unknown) => isSwarmgateError(error, 'ERR_REQUEST_TARGET'),
      target,
    );
  }
});

// F8: a controller started with another swarmgate_state_key must not publish a bundle that drops the certificates
// every edge serves. The reconcile loop holds publishing while certificate records are sealed with another key.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { AcmePort } from '../../src/acme/acme-adapter.ts';
import { describeCertificate } from '../../src/acme/user-certificates.ts';
import { deriveStateKey, StateStore } from '../../src/acme/state-store.ts';
import { readControllerConfig } from '../../src/config.ts';
import { startController } from '../../src/controller/controller.ts';
import { createCapturingLogger } from '../../src/logger.ts';
import { systemClock } from '../../src/reconcile/clock.ts';
import { createTemplateRenderer } from '../../src/render/nunjucks-env.ts';
import { makeChannelKeyPair } from '../support/channel-tls.ts';
import type { ChannelKeyPair } from '../support/channel-tls.ts';
import { selfSigned } from '../support/fake-acme.ts';
import { FakeDocker, rawService, rawTask } from '../support/fake-docker.ts';
import { waitUntil } from '../support/wait.ts';

const HOST = 'shop.test';
let channelTls: ChannelKeyPair & { remove: () => Promise<void> };
before(async () => {
  channelTls = await makeChannelKeyPair();
});
after(() => channelTls.remove());
const acme: AcmePort = {
  createAccountKey: () => Promise.reject(new Error('no ACME in this test')),
  order: () => Promise.reject(new Error('no ACME in this test')),
};

async function swarmWithCertificate(key: string): Promise<FakeDocker> {
  const docker = new FakeDocker();
  docker.services = [rawService('shop', { VIRTUAL_HOST: HOST, LETSENCRYPT_HOST: HOST })];
  docker.tasks = [rawTask('t1', 'shop', '10.0.0.5')];
  const pems = selfSigned([HOST], 90);
  await new StateStore(docker, deriveStateKey(key)).save(
    `cert.${HOST}`,
    { name: HOST, ...describeCertificate(pems.certificatePem), ...pems, directoryUrl: 'https://ca.test/dir' },
    new AbortController().signal,
  );
  return docker;
}

async function firstOutcome(docker: FakeDocker, key: string) {
  const { logger } = createCapturingLogger();
  const controller = await startController({
    config: readControllerConfig({
      SWARMGATE_LISTEN_PORT: '0',
      SWARMGATE_CHALLENGE_PORT: '0',
      SWARMGATE_HEALTH_PORT: '0',
      SWARMGATE_DEBOUNCE: '5ms:20ms',
      SWARMGATE_SLOW_POLL: '1h',
      SWARMGATE_ACME_DIRECTORY: 'https://ca.test/dir',
    }),
    adminToken: 'state-key-test-token-0123456789',
    edgeToken: 'state-key-test-edge-token-01234567',
    channelTls,
    docker,
    validator: { validate: async () => ({ ok: true }) },
    templates: createTemplateRenderer(),
    logger,
    clock: systemClock,
    version: 'test',
    acme,
    stateKey: deriveStateKey(key),
    userCertificates: [],
  });
  try {
    await waitUntil('the first reconcile', () => controller.reconciler.lastOutcome !== null);
    return {
      outcome: controller.reconciler.lastOutcome,
      bundle: controller.store.current,
      status: controller.certificates.status(),
    };
  } finally {
    await controller.stop();
  }
}

test('the right key: the stored certificate is published', async () => {
  const { outcome, bundle } = await firstOutcome(await swarmWithCertificate('the key'), 'the key');
  assert.equal(outcome?.ok, true, outcome?.error ?? '');
  assert.match(bundle?.files['nginx.conf'] ?? '', /listen 443/);
});

test('another key: nothing is published and the reason is reported (F8)', async () => {
  const { outcome, bundle, status } = await firstOutcome(
    await swarmWithCertificate('the key'),
    'a rotated key',
  );
  assert.equal(bundle, null, 'no bundle that drops the certificate');
  assert.equal(outcome?.ok, false);
  assert.match(outcome?.error ?? '', /publishing held: .*cert\.shop\.test.*another swarmgate_state_key/);
  assert.equal(status.find((row) => row.name === HOST)?.state, 'sealed-with-another-key');
});

import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { defaultProxySettings } from '../../src/config.ts';
import { createNginxValidator } from '../../src/nginx/nginx-validator.ts';
import {
  forNginxAtHand,
  NGINX_BINARY,
  REPO_NJS_DIR,
  TEST_CHANNEL_CERT_FILE,
  TEST_PLACEHOLDER_KEY_FILE,
} from '../support/loopback-nginx.ts';
import { IMAGE_NJS_DIR } from '../../src/render/render-config.ts';
import { goldenText, loadSnapshot, renderCase } from '../support/golden.ts';
import type { GoldenSettings } from '../support/golden.ts';

const casesDir = path.join(import.meta.dirname, 'cases');
const update = process.env.UPDATE_GOLDEN === '1';
// Where the nginx at hand lacks http_v3, QUIC cases are checked without their QUIC lines (forNginxAtHand says how
// test:all checks them whole).
const validator = createNginxValidator(NGINX_BINARY);
for (const name of readdirSync(casesDir).sort()) {
  const dir = path.join(casesDir, name);
  test(`golden: ${name}`, async (t) => {
    const settingsFile = path.join(dir, 'settings.json');
    const settings = existsSync(settingsFile)
      ? (JSON.parse(readFileSync(settingsFile, 'utf8')) as GoldenSettings)
      : {};
    const snapshot = loadSnapshot(path.join(dir, 'snapshot.json'));
    const { model, files } = renderCase(snapshot, settings);
    const actual = goldenText(model, files);
    const expectedFile = path.join(dir, 'expected.txt');
    if (update) writeFileSync(expectedFile, actual);
    assert.equal(actual, readFileSync(expectedFile, 'utf8'), `render of ${name} differs from expected.txt`);

    // Same input, same bytes.
    const again = renderCase(snapshot, settings);
    assert.equal(goldenText(again.model, again.files), actual, 'rendering twice gave different bytes');

    // The goldens show the production paths of the channel certificate and the placeholder; nginx -t loads them, so
    // point them at files this machine has.
    // The same for the stream balancer's njs (js_import compiles it during nginx -t): the repository's copy.
    const conf = (files['nginx.conf'] ?? '')
      .replaceAll(defaultProxySettings().channelCertFile, TEST_CHANNEL_CERT_FILE)
      .replaceAll(defaultProxySettings().placeholderCertFile, TEST_CHANNEL_CERT_FILE)
      .replaceAll(defaultProxySettings().placeholderKeyFile, TEST_PLACEHOLDER_KEY_FILE)
      .replaceAll(`js_path "${IMAGE_NJS_DIR}";`, `js_path "${REPO_NJS_DIR}";`);
    const { conf: checked, quicLinesRemoved } = forNginxAtHand(conf);
    const label = quicLinesRemoved ? `nginx -t without the QUIC lines (${NGINX_BINARY} lacks http_v3)` : 'nginx -t';
    await t.test(label, async () => {
      const result = await validator.validate({ ...files, 'nginx.conf': checked }, AbortSignal.timeout(20_000));
      assert.ok(result.ok, `nginx -t rejected the ${name} output:\n${result.ok ? '' : result.output}`);
    });
  });
}

import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { defaultProxySettings } from '../../src/config.ts';
import { createNginxValidator } from '../../src/nginx/nginx-validator.ts';
import { TEST_CHANNEL_CERT_FILE } from '../support/loopback-nginx.ts';
import { goldenText, loadSnapshot, renderCase } from '../support/golden.ts';
import type { GoldenSettings } from '../support/golden.ts';

const casesDir = path.join(import.meta.dirname, 'cases');
const update = process.env.UPDATE_GOLDEN === '1';
const validator = createNginxValidator(process.env.SWARMGATE_NGINX ?? 'nginx');

for (const name of readdirSync(casesDir).sort()) {
  const dir = path.join(casesDir, name);
  test(`golden: ${name}`, async () => {
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

    // The goldens show the production path of the channel certificate; nginx -t loads it, so point it at a file
    // this machine has.
    const conf = (files['nginx.conf'] ?? '').replaceAll(
      defaultProxySettings().channelCertFile,
      TEST_CHANNEL_CERT_FILE,
    );
    const result = await validator.validate({ ...files, 'nginx.conf': conf }, AbortSignal.timeout(20_000));
    assert.ok(result.ok, `nginx -t rejected the ${name} output:\n${result.ok ? '' : result.output}`);
  });
}

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { defaultProxySettings } from '../../src/config.ts';
import { createNginxValidator } from '../../src/nginx/nginx-validator.ts';
import { REPO_NJS_DIR, TEST_CHANNEL_CERT_FILE, TEST_PLACEHOLDER_KEY_FILE } from '../support/loopback-nginx.ts';
import { IMAGE_NJS_DIR } from '../../src/render/render-config.ts';
import { goldenText, loadSnapshot, renderCase } from '../support/golden.ts';
import type { GoldenSettings } from '../support/golden.ts';

const casesDir = path.join(import.meta.dirname, 'cases');
const update = process.env.UPDATE_GOLDEN === '1';
const nginxBinary = process.env.SWARMGATE_NGINX ?? 'nginx';
const validator = createNginxValidator(nginxBinary);
// HTTP/3 needs nginx built with http_v3 (the edge image's is; Debian 12's is not). Where the nginx at hand lacks it,
// a QUIC case is checked without its QUIC lines (everything else still goes through nginx -t), and `npm run test:all`
// checks every case, QUIC lines included, with the image's nginx:
//   flock /tmp/swarmgate-daemon.lock timeout 600 env SWARMGATE_NGINX=test/support/image-nginx.sh \
//     node --test test/golden/golden.test.ts
// nginx -V prints its configure arguments on stderr.
const version = spawnSync(nginxBinary, ['-V'], { encoding: 'utf8', timeout: 60_000 });
const nginxHasHttp3 = `${version.stdout}${version.stderr}`.includes('--with-http_v3_module');

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
    const quic = /^\s*listen \S+ quic\b/m.test(conf);
    const withoutQuic = quic && !nginxHasHttp3;
    const checked = withoutQuic ? conf.replace(/^\s*(listen \S+ quic\b[^;]*|http3 [^;]*|quic_\w+ [^;]*);\n/gm, '') : conf;
    const label = withoutQuic ? `nginx -t without the QUIC lines (${nginxBinary} lacks http_v3)` : 'nginx -t';
    await t.test(label, async () => {
      const result = await validator.validate({ ...files, 'nginx.conf': checked }, AbortSignal.timeout(20_000));
      assert.ok(result.ok, `nginx -t rejected the ${name} output:\n${result.ok ? '' : result.output}`);
    });
  });
}

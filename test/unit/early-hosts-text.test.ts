// early-hosts.txt's grammar (src/render/early-hosts-text.ts) and the post an edge makes of it: only the entries new
// or changed since the running bundle, their upstreams' members, and the certificates the running nginx lacks.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  EARLY_HOSTS_FILE,
  earlyHostProblem,
  earlyPost,
  formatEarlyHosts,
  MAX_EARLY_HOSTS,
  parseEarlyHosts,
} from '../../src/render/early-hosts-text.ts';
import type { EarlyHost } from '../../src/render/early-hosts-text.ts';

const plain = (host: string, upstream = `svc_${host.split('.')[0]}`): EarlyHost => ({
  host,
  service: host.split('.')[0] ?? host,
  upstream,
  http: 'serve',
  certificate: null,
  httpsPort: null,
  hsts: null,
});
const secure: EarlyHost = {
  host: 'shop.example.com',
  service: 'shop',
  upstream: 'svc_shop',
  http: 'redirect',
  certificate: 'shop.example.com',
  httpsPort: 8443,
  hsts: 'max-age=31536000; includeSubDomains',
};

test('written sorted, read back the same; a duplicate or a value outside the grammar is refused', () => {
  const text = formatEarlyHosts([secure, plain('api.example.com')]);
  assert.equal(
    text,
    'api.example.com\tapi\tsvc_api\tserve\t-\t-\t-\n' +
      'shop.example.com\tshop\tsvc_shop\tredirect\tshop.example.com\t8443\tmax-age=31536000; includeSubDomains\n',
  );
  const parsed = parseEarlyHosts(text);
  assert.ok(parsed.ok);
  assert.deepEqual(parsed.hosts.get('shop.example.com'), secure);
  assert.throws(() => formatEarlyHosts([secure, secure]), /appears twice/);
  for (const [change, reason] of [
    [{ host: '*.example.com' }, /exact host/],
    [{ host: 'under_score.example.com' }, /exact host/],
    [{ upstream: 'svc shop' }, /upstream/],
    [{ certificate: null }, /no HTTPS and no HTTP/],
    [{ hsts: 'max-age=1\nadd_header' }, /HSTS/],
    [{ httpsPort: 70000 }, /port/],
  ] as const) {
    assert.match(earlyHostProblem({ ...secure, ...change }) ?? '', reason);
  }
  assert.deepEqual(parseEarlyHosts('a.example.com\ta\tsvc_a\tserve\t-\t-\n'), {
    ok: false,
    reason: 'line 1: not 7 fields',
  });
  assert.deepEqual(parseEarlyHosts('api.example.com\tapi\tsvc_api\tserve\t-\t-\t-'), {
    ok: false,
    reason: 'does not end with a newline',
  });
});

const pems = (...names: string[]): string =>
  names.map((name) => `certificate ${name}\nCERT ${name}\nkey\nKEY ${name}\nend\n`).join('');

test('the post holds the hosts new to the table or newly HTTPS, their members, and only the certificates nginx does not hold', () => {
  const running = {
    [EARLY_HOSTS_FILE]: formatEarlyHosts([plain('api.example.com')]),
    'certificates.pem': pems('other.example.com'),
  };
  const next = {
    [EARLY_HOSTS_FILE]: formatEarlyHosts([plain('api.example.com'), plain('new.example.com'), secure]),
    'peers.txt': `generation ${'0'.repeat(64)}\nupstream svc_api 10.0.0.1:80\nupstream svc_new 10.0.0.2:80 10.0.0.3:80@5\nupstream svc_shop 10.0.0.4:80\n`,
    'certificates.pem': pems('other.example.com', 'shop.example.com'),
  };
  assert.equal(
    earlyPost(next, running),
    'new.example.com\tnew\tsvc_new\tserve\t-\t-\t-\n' +
      'shop.example.com\tshop\tsvc_shop\tredirect\tshop.example.com\t8443\tmax-age=31536000; includeSubDomains\n' +
      'upstream svc_new 10.0.0.2:80 10.0.0.3:80@5\nupstream svc_shop 10.0.0.4:80\n' +
      'certificate shop.example.com\nCERT shop.example.com\nkey\nKEY shop.example.com\nend\n',
  );
  // The certificate is held already (same section): not sent again.
  assert.doesNotMatch(
    earlyPost(next, { ...running, 'certificates.pem': next['certificates.pem'] }),
    /^certificate/m,
  );
  // Nothing new: an empty post (the table is emptied).
  assert.equal(earlyPost(running, running), '');
  // A bundle without the table (early routing off): nothing.
  assert.equal(earlyPost({ 'nginx.conf': '' }, running), '');
});

test('a first deploy of thousands of hosts sends at most MAX_EARLY_HOSTS of them early', () => {
  const hosts = Array.from({ length: MAX_EARLY_HOSTS + 10 }, (_, index) => plain(`h${index}.example.com`));
  const body = earlyPost({ [EARLY_HOSTS_FILE]: formatEarlyHosts(hosts) }, null);
  assert.equal(body.split('\n').filter((line) => line.includes('\tserve\t')).length, MAX_EARLY_HOSTS);
});

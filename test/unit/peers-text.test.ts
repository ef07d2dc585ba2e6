// peers.txt grammar: the TypeScript twin of the Lua balancer's parser (the same table runs against the Lua in
// test/integration/nginx-balancer.test.ts).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { formatPeers, parsePeers } from '../../src/render/peers-text.ts';
import { GENERATION, PEERS_CASES, peersCaseText } from '../support/peers-cases.ts';

for (const peersCase of PEERS_CASES) {
  test(`peers.txt ${peersCase.ok ? 'accepts' : 'refuses'}: ${peersCase.name}`, () => {
    const result = parsePeers(peersCaseText(peersCase));
    assert.equal(result.ok, peersCase.ok, result.ok ? 'accepted' : result.reason);
    if (!result.ok) assert.ok(result.reason.length > 0);
  });
}

test('parsePeers reads generation, names and members in file order', () => {
  const result = parsePeers(`generation ${GENERATION}\nupstream b 10.0.0.2:80 10.0.0.1:8080\nupstream a\n`);
  assert.deepEqual(result, {
    ok: true,
    peers: {
      generation: GENERATION,
      upstreams: [
        {
          name: 'b',
          members: [
            { ip: '10.0.0.2', port: 80 },
            { ip: '10.0.0.1', port: 8080 },
          ],
        },
        { name: 'a', members: [] },
      ],
    },
  });
});

test('formatPeers writes what parsePeers reads, and refuses to write what it would refuse', () => {
  const peers = {
    generation: GENERATION,
    upstreams: [{ name: 'svc_a', members: [{ ip: '10.0.0.1', port: 80 }] }],
  };
  const text = formatPeers(peers);
  assert.equal(text, `generation ${GENERATION}\nupstream svc_a 10.0.0.1:80\n`);
  assert.deepEqual(parsePeers(text), { ok: true, peers });
  assert.throws(
    () => formatPeers({ ...peers, upstreams: [{ name: 'svc-a', members: [] }] }),
    (error: unknown) => (error as { code?: string }).code === 'ERR_TEMPLATE',
  );
  assert.throws(
    () => formatPeers({ ...peers, upstreams: [{ name: 'a', members: [{ ip: '10.0.0.01', port: 80 }] }] }),
    (error: unknown) => (error as { code?: string }).code === 'ERR_TEMPLATE',
  );
});

test('weights: written as "@<weight>" only when not 1, read back the same', () => {
  const peers = {
    generation: GENERATION,
    upstreams: [
      {
        name: 'svc_split',
        members: [
          { ip: '10.0.0.1', port: 80, weight: 90_000 },
          { ip: '10.0.0.2', port: 80, weight: 10_000 },
          { ip: '10.0.0.3', port: 80 },
        ],
      },
    ],
  };
  const text = formatPeers(peers);
  assert.equal(
    text,
    `generation ${GENERATION}\nupstream svc_split 10.0.0.1:80@90000 10.0.0.2:80@10000 10.0.0.3:80\n`,
  );
  assert.deepEqual(parsePeers(text), { ok: true, peers });
  assert.equal(
    formatPeers({
      generation: GENERATION,
      upstreams: [{ name: 'a', members: [{ ip: '10.0.0.1', port: 80, weight: 1 }] }],
    }),
    `generation ${GENERATION}\nupstream a 10.0.0.1:80\n`,
  );
  for (const weight of [0, 1_000_001, 1.5, -1]) {
    assert.throws(
      () =>
        formatPeers({
          generation: GENERATION,
          upstreams: [{ name: 'a', members: [{ ip: '10.0.0.1', port: 80, weight }] }],
        }),
      (error: unknown) => (error as { code?: string }).code === 'ERR_TEMPLATE',
      `weight ${weight}`,
    );
  }
});

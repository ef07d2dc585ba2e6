import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { ElementCache, readJsonArray } from '../../src/docker/json-array.ts';
import { slimTask } from '../../src/docker/dockerode-adapter.ts';

async function* chunked(text: string, cuts: readonly number[]): AsyncIterable<Buffer> {
  const bytes = Buffer.from(text);
  let from = 0;
  for (const cut of [...cuts].sort((a, b) => a - b)) {
    if (cut <= from || cut >= bytes.length) continue;
    yield bytes.subarray(from, cut);
    from = cut;
  }
  yield bytes.subarray(from);
}

const same = (item: unknown): unknown => item;

test('json array: elements with the separator bytes inside (nested arrays, escaped strings) come out whole', async () => {
  const items = [
    { ID: 'a', Platforms: [{ OS: 'linux' }, { OS: 'windows' }], Env: ['X="},{"'] },
    { ID: 'b', Note: '},{"ID":"fake"}', Nested: [[{ x: 1 }, { y: 2 }]] },
    { ID: 'c', Unicode: 'é},{"ü' },
  ];
  const text = JSON.stringify(items);
  // Every cut position: a separator split across two chunks is still found.
  for (let cut = 0; cut <= Buffer.byteLength(text); cut++) {
    assert.deepEqual(await readJsonArray(chunked(text, [cut]), same), items, `cut at ${cut}`);
  }
});

test('json array: any array of objects, cut anywhere, reads as JSON.parse reads it', async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.dictionary(fc.string(), fc.jsonValue()), { maxLength: 8 }),
      fc.array(fc.nat(400), { maxLength: 6 }),
      fc.boolean(),
      async (items, cuts, pretty) => {
        const text = pretty ? JSON.stringify(items, null, 2) : JSON.stringify(items);
        assert.deepEqual(await readJsonArray(chunked(text, cuts), same), JSON.parse(text));
      },
    ),
    { numRuns: 300 },
  );
});

test('json array: a list in chunks shorter than one element (each join builds on the last one in the same buffer)', async () => {
  const items = Array.from({ length: 40 }, (_, i) => ({
    ID: `t${i}`,
    Version: { Index: i },
    Note: 'x'.repeat(i * 7),
    List: [{ a: i }, { b: '},{"' }],
  }));
  const text = JSON.stringify(items);
  for (const step of [1, 5, 64]) {
    const cuts = Array.from({ length: Math.ceil(text.length / step) }, (_, i) => i * step);
    assert.deepEqual(await readJsonArray(chunked(text, cuts), same), items, `chunks of ${step}`);
    const cache = new ElementCache<unknown>();
    await readJsonArray(chunked(text, cuts), same, cache);
    assert.deepEqual(
      await readJsonArray(chunked(text, cuts), same, cache),
      items,
      `reused, chunks of ${step}`,
    );
    assert.ok(cache.reused > 0, 'the second read reused elements');
  }
});

test('json array: an empty list, trailing newline; a cut-off or non-array body is an error', async () => {
  assert.deepEqual(await readJsonArray(chunked('[]\n', []), same), []);
  assert.deepEqual(await readJsonArray(chunked(' [ {"a":1} ]\n', [3]), same), [{ a: 1 }]);
  await assert.rejects(readJsonArray(chunked('[{"a":1},{"b"', []), same), SyntaxError);
  await assert.rejects(readJsonArray(chunked('{"message":"no"}', []), same), SyntaxError);
  await assert.rejects(readJsonArray(chunked('', []), same), SyntaxError);
});

test('json array: each element is handed over as it is read (slimmed tasks keep only what swarmgate reads)', async () => {
  const task = {
    ID: 't1',
    ServiceID: 's1',
    NodeID: 'n1',
    Slot: 2,
    DesiredState: 'running',
    Spec: { ContainerSpec: { Image: 'app:1', Env: ['SECRET=x'] }, Placement: {} },
    Status: { State: 'running', Timestamp: '2026-01-01T00:00:00Z', ContainerStatus: { PID: 1 } },
    NetworksAttachments: [
      {
        Network: { ID: 'net', Spec: { Name: 'swarmgate', Labels: {} }, DriverState: {} },
        Addresses: ['10.0.0.2/24'],
      },
    ],
  };
  const [slim] = await readJsonArray(chunked(JSON.stringify([task]), []), slimTask);
  assert.deepEqual(slim, {
    ID: 't1',
    ServiceID: 's1',
    NodeID: 'n1',
    Slot: 2,
    DesiredState: 'running',
    Spec: { ContainerSpec: { Image: 'app:1' } },
    Status: { State: 'running', Timestamp: '2026-01-01T00:00:00Z', Err: undefined },
    NetworksAttachments: [
      { Network: { ID: 'net', Spec: { Name: 'swarmgate' } }, Addresses: ['10.0.0.2/24'] },
    ],
  });
});

/** A Swarm object as the Engine lists it: ID and version first. */
function swarmObject(
  id: string,
  version: number,
  extra: Record<string, unknown> = {},
): Record<string, unknown> {
  return { ID: id, Version: { Index: version }, ...extra };
}

test('json array cache: an element with the ID, version and length of the last read is reused; any other is parsed', async () => {
  const cache = new ElementCache<unknown>(1000);
  const pad = 'x'.repeat(300); // elements longer than the prefix window, as Docker's are
  // The last element of a list is parsed with the closing bracket and not remembered: z stands there.
  const first = [1, 2, 3, 4, 26].map((n) => swarmObject(`t${n}`, 10 + n, { State: 'running', pad }));
  assert.deepEqual(await readJsonArray(chunked(JSON.stringify(first), [700]), same, cache), first);
  assert.equal(cache.reused, 0);

  const second = [
    first[0], // same: reused
    swarmObject('t2', 99, { State: 'failed', pad }), // written again: new version, parsed
    swarmObject('t3', 13, { State: 'runningX', pad }), // changed without a new version, other length: parsed
    first[3], // same: reused
    swarmObject('t5', 15, { State: 'running', pad }), // new (and last: parsed with the closing bracket)
  ];
  const read = await readJsonArray(chunked(JSON.stringify(second), [350, 900]), same, cache);
  assert.deepEqual(read, second);
  assert.equal(cache.reused, 2, 't1 and t4');

  // An element that was not in the read before is parsed, even with a version seen earlier (t26: removed, back).
  const third = [second[1], first[4], second[0], second[2]];
  assert.deepEqual(await readJsonArray(chunked(JSON.stringify(third), []), same, cache), third);
  assert.equal(cache.reused, 2, 't2 and t1');
});

test('json array cache: an element changed without a new version is parsed again within fullParseEvery reads, a share each read', async () => {
  const every = 3;
  const cache = new ElementCache<unknown>(every);
  const pad = 'x'.repeat(300);
  const ids = Array.from({ length: 30 }, (_, n) => `task${n}`);
  const list = (state: string) => ids.map((id, n) => swarmObject(id, n + 1, { state, pad }));
  await readJsonArray(chunked(JSON.stringify(list('run')), []), same, cache); // read 0: nothing to reuse
  // Same IDs, versions and lengths, other bytes: what the Engine never sends; an element shows it on its turn only.
  const fresh: number[] = [];
  for (let read = 1; read <= every; read++) {
    const items = (await readJsonArray(chunked(JSON.stringify(list('new')), []), same, cache)) as {
      state: string;
    }[];
    fresh.push(items.filter((item) => item.state === 'new').length);
  }
  assert.equal(
    fresh.at(-1),
    ids.length,
    `every element read again within ${every} reads (${fresh.join(', ')})`,
  );
  assert.ok((fresh[0] ?? 0) > 0 && (fresh[0] ?? 0) < ids.length, `a share on the first read (${fresh[0]})`);
  assert.ok(
    fresh.every((count, i) => i === 0 || count > (fresh[i - 1] ?? 0)),
    `more each read (${fresh.join(', ')}): never all at once`,
  );
});

test('json array cache: any sequence of lists with versions bumped on change, cut anywhere, reads as JSON.parse', async () => {
  const element = fc.record({
    id: fc.constantFrom('a', 'b', 'c', 'd', 'e', 'f'),
    body: fc.dictionary(fc.string(), fc.jsonValue(), { maxKeys: 4 }),
    pad: fc.nat(400),
  });
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.array(element, { maxLength: 6 }), { minLength: 1, maxLength: 5 }),
      fc.array(fc.nat(3000), { maxLength: 6 }),
      async (lists, cuts) => {
        const cache = new ElementCache<unknown>(4);
        // The Engine's rule: an object whose content changes gets a new version.
        const versions = new Map<string, { content: string; version: number }>();
        let raft = 0;
        for (const list of lists) {
          const seen = new Set<string>();
          const items = list
            .filter(({ id }) => !seen.has(id) && seen.add(id))
            .map(({ id, body, pad }) => {
              const content = JSON.stringify({ body, pad: 'p'.repeat(pad) });
              const known = versions.get(id);
              const version = known?.content === content ? known.version : ++raft;
              versions.set(id, { content, version });
              return swarmObject(id, version, { body, pad: 'p'.repeat(pad) });
            });
          const text = JSON.stringify(items);
          assert.deepEqual(await readJsonArray(chunked(text, cuts), same, cache), JSON.parse(text));
        }
      },
    ),
    { numRuns: 300 },
  );
});

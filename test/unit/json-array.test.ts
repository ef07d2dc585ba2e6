import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { readJsonArray } from '../../src/docker/json-array.ts';
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

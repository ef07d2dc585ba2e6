// Property-based label fuzzing: random and adversarial label sets through buildRoutingModel → renderConfig →
// real `nginx -t`. 1,000 cases in 20 batches of 50 (one nginx -t per batch while it passes). FUZZ_SEED picks
// another fixed sequence; bench/label-fuzz.ts runs 100,000 cases with a random seed.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { createNginxValidator } from '../../src/nginx/nginx-validator.ts';
import { caseArbitrary, checkBatch, checkCase, mergeModels, renderModel } from '../support/label-fuzz.ts';
import { REGEX_TABLE } from '../support/label-tables.ts';

const validator = createNginxValidator(process.env.SWARMGATE_NGINX ?? 'nginx');
const BATCH = 50;
const RUNS = Number(process.env.FUZZ_RUNS ?? 20);

test(`label fuzzing: ${RUNS * BATCH} cases; every accepted config passes nginx -t, every refusal is a Problem`, async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(caseArbitrary, { minLength: BATCH, maxLength: BATCH }), async (cases) => {
      const result = await checkBatch(cases, validator, AbortSignal.timeout(60_000));
      assert.deepEqual(
        result.failures.map((failure) => ({ issue: failure.issue, services: failure.fuzzCase })),
        [],
      );
    }),
    // No shrinking: checkBatch already names each failing case (a few services), and shrinking a batch of 50
    // costs minutes of nginx -t.
    { numRuns: RUNS, seed: Number(process.env.FUZZ_SEED ?? 20261112), endOnFailure: true },
  );
});

test('every regex the label table accepts passes nginx -t as a host and as a path', async () => {
  const accepted = REGEX_TABLE.filter(([, expected]) => expected === 'ok').map(([body]) => body);
  const models = accepted.map((body, index) => {
    const { model, issues } = checkCase(
      [
        {
          labels: { VIRTUAL_HOST: `~${body}`, VIRTUAL_PATH: `~${body}` },
          inEnv: false,
          createdAt: '2026-01-01T00:00:00Z',
          networks: ['net-sg'],
          taskIps: ['10.0.0.1'],
        },
      ],
      `t${index}-`,
    );
    assert.deepEqual(issues, []);
    assert.equal(model.services.length, 1, body);
    return model;
  });
  const result = await validator.validate(renderModel(mergeModels(models)), AbortSignal.timeout(30_000));
  assert.ok(result.ok, result.ok ? '' : result.output);
});

// Property-based label fuzzing: random and adversarial label sets through buildRoutingModel → renderConfig →
// real `nginx -t`. 1,000 cases in 20 batches of 50 (one nginx -t per batch while it passes). FUZZ_SEED picks
// another fixed sequence; bench/label-fuzz.ts runs 100,000 cases with a random seed.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { createNginxValidator } from '../../src/nginx/nginx-validator.ts';
import { caseArbitrary, checkBatch } from '../support/label-fuzz.ts';

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

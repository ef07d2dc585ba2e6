// Label fuzzing at volume: the cases of test/unit/label-fuzz.test.ts (random and adversarial label sets through
// buildRoutingModel → renderConfig → real nginx -t), 100,000 by default, many cases merged into one config per
// nginx -t. Prints a table, writes bench/results/label-fuzz-*.json, and lists every failure found.
//   node bench/label-fuzz.ts [--cases 100000] [--batch 200] [--seed N] [--smoke]
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import fc from 'fast-check';
import { createNginxValidator } from '../src/nginx/nginx-validator.ts';
import type { NginxValidator } from '../src/nginx/nginx-validator.ts';
import { caseArbitrary, checkBatch } from '../test/support/label-fuzz.ts';
import type { FuzzCase } from '../test/support/label-fuzz.ts';
import { BENCH_DIR, printTable, SMOKE } from './support.ts';

function flag(name: string, fallback: number): number {
  const index = process.argv.indexOf(`--${name}`);
  const value = index >= 0 ? Number(process.argv[index + 1]) : fallback;
  if (!Number.isInteger(value) || value < 1) throw new Error(`--${name} must be a positive integer`);
  return value;
}

const CASES = flag('cases', SMOKE ? 1_000 : 100_000);
const BATCH = flag('batch', 200);
const SEED = flag('seed', Math.floor(Math.random() * 2 ** 31) + 1);

let nginxMs = 0;
const real = createNginxValidator(process.env.SWARMGATE_NGINX ?? 'nginx');
const validator: NginxValidator = {
  async validate(files, signal) {
    const started = performance.now();
    try {
      return await real.validate(files, signal);
    } finally {
      nginxMs += performance.now() - started;
    }
  },
};

const started = performance.now();
let done = 0;
let services = 0;
let routed = 0;
let refused = 0;
let nginxRuns = 0;
const failures: { issue: string; fuzzCase: FuzzCase }[] = [];
// One fast-check stream, read a chunk at a time, so the cases are the same for the same seed whatever the batch.
const stream = fc.sample(caseArbitrary, { numRuns: CASES, seed: SEED });
for (let offset = 0; offset < stream.length; offset += BATCH) {
  const cases = stream.slice(offset, offset + BATCH);
  const result = await checkBatch(cases, validator, AbortSignal.timeout(120_000));
  done += result.cases;
  services += cases.reduce((sum, fuzzCase) => sum + fuzzCase.length, 0);
  routed += result.routedServices;
  refused += result.refusedServices;
  nginxRuns += result.nginxRuns;
  failures.push(...result.failures);
  if ((offset / BATCH) % 50 === 0) {
    console.log(
      `${done}/${CASES} cases, ${failures.length} failures, ${Math.round((performance.now() - started) / 1000)} s`,
    );
  }
}
const seconds = (performance.now() - started) / 1000;

const row = {
  seed: SEED,
  cases: done,
  services,
  'routed services': routed,
  'refused services (Problem)': refused,
  'nginx -t runs': nginxRuns,
  'nginx -t s': Math.round(nginxMs / 1000),
  failures: failures.length,
  's total': Math.round(seconds),
};
printTable(`Label fuzzing: ${done} cases, batches of ${BATCH}`, [row]);
for (const failure of failures.slice(0, 20)) {
  console.log(
    `\nFAILURE: ${failure.issue.slice(0, 400)}\n  case: ${JSON.stringify(failure.fuzzCase).slice(0, 800)}`,
  );
}

const dir = path.join(BENCH_DIR, 'results');
mkdirSync(dir, { recursive: true });
const body = JSON.stringify(
  {
    benchmark: 'label-fuzz',
    machine: {
      date: new Date().toISOString(),
      cpus: os.cpus().length,
      cpuModel: os.cpus()[0]?.model ?? 'unknown',
      node: process.version,
      smoke: SMOKE,
    },
    batch: BATCH,
    ...row,
    failureList: failures.slice(0, 200),
  },
  null,
  2,
);
const stamp = new Date().toISOString().replace(/[:.]/g, '-');
writeFileSync(path.join(dir, `label-fuzz${SMOKE ? '-smoke' : ''}-${stamp}.json`), body);
writeFileSync(path.join(dir, `label-fuzz${SMOKE ? '-smoke' : ''}-latest.json`), body);
console.log(
  `\nwritten: ${path.relative(process.cwd(), path.join(dir, `label-fuzz${SMOKE ? '-smoke' : ''}-latest.json`))}`,
);
process.exitCode = failures.length > 0 ? 1 : 0;

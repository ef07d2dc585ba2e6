// npm run bench [-- --smoke]: every benchmark, one after the other, each printing its table and writing its JSON.
import { spawnSync } from 'node:child_process';
import path from 'node:path';

const smoke = process.argv.includes('--smoke');
const benchmarks = ['controller-scale.ts', 'convergence.ts', 'zero-downtime.ts', 'throughput.ts'];
let failed = 0;
for (const file of benchmarks) {
  console.log(`\n=== bench/${file}${smoke ? ' (smoke)' : ''} ===`);
  const started = Date.now();
  const result = spawnSync(
    process.execPath,
    [path.join(import.meta.dirname, file), ...(smoke ? ['--smoke'] : [])],
    {
      stdio: 'inherit',
    },
  );
  console.log(
    `bench/${file}: exit ${result.status ?? result.signal ?? '?'} after ${Math.round((Date.now() - started) / 1000)} s`,
  );
  if (result.status !== 0) failed++;
}
process.exit(failed === 0 ? 0 : 1);

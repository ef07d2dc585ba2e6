// npm run bench [-- --smoke]: every benchmark, one after the other, each printing its table and writing its JSON.
import { spawnSync } from 'node:child_process';
import path from 'node:path';

const smoke = process.argv.includes('--smoke');
// Each benchmark as its npm script, so `npm run bench` measures exactly what the single commands do.
// A benchmark with extra arguments runs again with them (the throughput bench's HTTPS/1.1 and HTTP/2 runs).
const benchmarks: [string, ...string[]][] = [
  ['controller-scale'],
  ['convergence'],
  ['zero-downtime'],
  ['throughput'],
  ['throughput', '--tls'],
  ['new-host-e2e'],
];
let failed = 0;
for (const [name, ...extra] of benchmarks) {
  const file = `${name}.ts`;
  console.log(
    `\n=== bench/${file}${extra.length ? ` ${extra.join(' ')}` : ''}${smoke ? ' (smoke)' : ''} ===`,
  );
  const started = Date.now();
  const result = spawnSync(
    'npm',
    ['run', '-s', `bench:${name}`, '--', ...extra, ...(smoke ? ['--smoke'] : [])],
    {
      stdio: 'inherit',
      cwd: path.join(import.meta.dirname, '..'),
    },
  );
  console.log(
    `bench/${file}: exit ${result.status ?? result.signal ?? '?'} after ${Math.round((Date.now() - started) / 1000)} s`,
  );
  if (result.status !== 0) failed++;
}
process.exit(failed === 0 ? 0 : 1);

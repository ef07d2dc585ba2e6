// Shared by the benchmarks: flags, machine facts, percentiles, a table printer and the JSON result file.
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/** bench/ of the repository, also when a benchmark runs compiled from build/bench/. */
export const BENCH_DIR = path.join(
  import.meta.dirname,
  path.basename(path.dirname(import.meta.dirname)) === 'build' ? '../../bench' : '.',
);
export const SMOKE = process.argv.includes('--smoke');

/** docker: false for benchmarks that never touch the daemon (they then need not wait for its lock). */
export function machineFacts({ docker = true }: { docker?: boolean } = {}): Record<string, unknown> {
  const quiet = (command: string, args: string[]): string => {
    try {
      return execFileSync(command, args, {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'ignore'],
        timeout: 10_000,
      }).trim();
    } catch {
      return 'unavailable';
    }
  };
  return {
    date: new Date().toISOString(),
    host: os.hostname(),
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model ?? 'unknown',
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    kernel: os.release(),
    node: process.version,
    nodeFlags: process.execArgv,
    docker: docker ? quiet('docker', ['version', '--format', '{{.Server.Version}}']) : 'not used',
    smoke: SMOKE,
  };
}

export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[index] ?? NaN;
}

export function summary(values: readonly number[]): { n: number; p50: number; p95: number; max: number } {
  return {
    n: values.length,
    p50: percentile(values, 50),
    p95: percentile(values, 95),
    max: percentile(values, 100),
  };
}

export function printTable(title: string, rows: readonly Record<string, unknown>[]): void {
  const columns = [...new Set(rows.flatMap((row) => Object.keys(row)))];
  const cell = (value: unknown): string =>
    typeof value === 'number'
      ? Number.isInteger(value)
        ? String(value)
        : value.toFixed(3)
      : typeof value === 'string'
        ? value
        : JSON.stringify(value ?? '');
  const widths = columns.map((column) =>
    Math.max(column.length, ...rows.map((row) => cell(row[column]).length)),
  );
  const line = (values: string[]): string =>
    `| ${values.map((value, i) => value.padEnd(widths[i] ?? 0)).join(' | ')} |`;
  console.log(`\n${title}`);
  console.log(line(columns));
  console.log(`|${widths.map((width) => '-'.repeat(width + 2)).join('|')}|`);
  for (const row of rows) console.log(line(columns.map((column) => cell(row[column]))));
}

/** Writes bench/results/<name>-<timestamp>.json (and <name>-latest.json) with the machine facts. */
export function writeResult(
  name: string,
  result: Record<string, unknown>,
  options: { docker?: boolean } = {},
): string {
  const dir = path.join(BENCH_DIR, 'results');
  mkdirSync(dir, { recursive: true });
  const body = JSON.stringify({ benchmark: name, machine: machineFacts(options), ...result }, null, 2);
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const file = path.join(dir, `${name}${SMOKE ? '-smoke' : ''}-${stamp}.json`);
  writeFileSync(file, body);
  writeFileSync(path.join(dir, `${name}${SMOKE ? '-smoke' : ''}-latest.json`), body);
  console.log(`\nwritten: ${path.relative(process.cwd(), file)}`);
  return file;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// The machine while a bench runs: 1-minute load averages sampled every 5 s, and this process's CPU (the load
// generator's own cost), so a figure from a busy machine says how busy it was.
const loadSamples: { at: number; load1: number }[] = [];
let loadTimer: NodeJS.Timeout | null = null;

export interface MachineWindowStart {
  readonly from: number;
  readonly cpu: NodeJS.CpuUsage;
}

export interface MachineWindow {
  readonly loadStart: number;
  readonly loadMax: number;
  readonly loadEnd: number;
  readonly load15End: number;
  readonly benchCpuPercent: number;
}

export function openMachineWindow(): MachineWindowStart {
  if (!loadTimer) {
    loadTimer = setInterval(() => loadSamples.push({ at: Date.now(), load1: os.loadavg()[0] ?? 0 }), 5000);
    loadTimer.unref();
  }
  loadSamples.push({ at: Date.now(), load1: os.loadavg()[0] ?? 0 });
  return { from: Date.now(), cpu: process.cpuUsage() };
}

/** Load averages (1 min) over a window: at its start, max, at its end; and this process's CPU in % of one core. */
export function closeMachineWindow(window: MachineWindowStart): MachineWindow {
  loadSamples.push({ at: Date.now(), load1: os.loadavg()[0] ?? 0 });
  const inside = loadSamples.filter((sample) => sample.at >= window.from);
  const cpu = process.cpuUsage(window.cpu);
  const ms = Math.max(1, Date.now() - window.from);
  return {
    loadStart: round2(inside[0]?.load1 ?? NaN),
    loadMax: round2(Math.max(...inside.map((sample) => sample.load1))),
    loadEnd: round2(inside.at(-1)?.load1 ?? NaN),
    load15End: round2(os.loadavg()[2] ?? NaN),
    benchCpuPercent: round2(((cpu.user + cpu.system) / 1000 / ms) * 100),
  };
}

export function round2(value: number): number {
  return Math.round(value * 100) / 100;
}

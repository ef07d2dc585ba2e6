// The only file importing pino. One root logger is built in main.ts and passed down; components take a child.
import { pino } from 'pino';
import type { DestinationStream, Logger as PinoLogger } from 'pino';

export type Logger = PinoLogger;

/** Field paths whose values must never reach a log line. */
export const REDACTED_PATHS = [
  'token',
  'password',
  'authorization',
  'headers.authorization',
  'req.headers.authorization',
  '*.password',
  '*.token',
  '*.privateKey',
  '*.key',
];

export function createLogger(level: string, destination?: DestinationStream): Logger {
  const options = {
    level,
    base: undefined,
    redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  return destination ? pino(options, destination) : pino(options);
}

/** A logger that writes JSON lines into an array: for tests that assert on log output. */
export function createCapturingLogger(level = 'debug'): { logger: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const destination = {
    write(chunk: string): void {
      for (const line of chunk.split('\n'))
        if (line.trim()) lines.push(JSON.parse(line) as Record<string, unknown>);
    },
  };
  return { logger: createLogger(level, destination), lines };
}

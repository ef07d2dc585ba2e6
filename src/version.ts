import { readFileSync } from 'node:fs';

/** The package version, read once; shown in logs, the status API and the rendered config header. */
export const SWARMGATE_VERSION: string = (
  JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }
).version;

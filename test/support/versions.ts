// Bundle versions are epoch·2^20 + counter (src/publish/version-epoch.ts): tests that count publishes of one
// controller read the counter.
import { VERSIONS_PER_EPOCH } from '../../src/publish/version-epoch.ts';

/** The publish count within the version's epoch: 1 for a controller's first bundle. */
export function publishCount(version: number | undefined): number | null {
  return version === undefined ? null : version % VERSIONS_PER_EPOCH;
}

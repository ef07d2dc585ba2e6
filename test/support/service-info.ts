// One replicated service on the swarmgate network, as discovery reports it, for tests that build a model from
// labels (and nginx-proxy style env).
import type { ServiceInfo } from '../../src/discovery/snapshot.ts';

export function serviceInfo(
  name: string,
  labels: Record<string, string>,
  env: Record<string, string> = {},
): ServiceInfo {
  return {
    id: name,
    name,
    createdAt: '2026-01-01T00:00:00Z',
    labels,
    env,
    mode: 'replicated',
    replicas: 1,
    networks: ['swarmgate'],
    image: 'x:1',
    updateState: null,
  };
}

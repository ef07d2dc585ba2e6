// A snapshot of routed services with the given labels and running tasks, all on the "swarmgate" network: for
// real-nginx tests and benchmarks that configure the balancer through labels (as users do).
import type { ServiceInfo, Snapshot } from '../../src/discovery/snapshot.ts';

export interface ServiceSpec {
  readonly name: string;
  readonly host: string;
  readonly labels?: Record<string, string>;
  readonly ips: readonly string[];
  readonly createdAt?: string;
}

export function labelledSnapshot(specs: readonly ServiceSpec[], port: number): Snapshot {
  return {
    services: specs.map((spec): ServiceInfo => ({
      id: spec.name,
      name: spec.name,
      createdAt: spec.createdAt ?? '2026-01-01T00:00:00Z',
      labels: { VIRTUAL_HOST: spec.host, VIRTUAL_PORT: String(port), ...spec.labels },
      env: {},
      mode: 'replicated',
      replicas: spec.ips.length,
      networks: ['swarmgate'],
      image: 'example/web:1',
      updateState: null,
    })),
    tasks: specs.flatMap((spec) =>
      spec.ips.map((ip, index) => ({
        id: `${spec.name}-t${index}`,
        serviceId: spec.name,
        nodeId: 'n1',
        slot: index + 1,
        desiredState: 'running',
        state: 'running',
        stateSince: '2026-01-01T00:00:00Z',
        error: null,
        image: 'example/web:1',
        addresses: [{ networkId: 'net-swarmgate', networkName: 'swarmgate', ip }],
      })),
    ),
    networks: [],
    nodes: [],
  };
}

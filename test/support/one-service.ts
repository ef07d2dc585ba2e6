// Snapshots of routed services with running tasks at given addresses, for tests and benches that need a real
// rendered bundle without a golden case.
import type { Snapshot } from '../../src/discovery/snapshot.ts';

export interface RoutedService {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  /** One running task per address, on the swarmgate network. */
  readonly ips: readonly string[];
}

/** The services on the swarmgate network, each with a running task at each of its addresses. */
export function servicesSnapshot(entries: readonly RoutedService[]): Snapshot {
  return {
    services: entries.map(({ name, labels, ips }) => ({
      id: name,
      name,
      createdAt: '2026-01-01T00:00:00Z',
      labels: { ...labels },
      env: {},
      mode: 'replicated' as const,
      replicas: ips.length,
      networks: ['swarmgate'],
      image: 'example/web:1',
      updateState: null,
    })),
    tasks: entries.flatMap(({ name, ips }) =>
      ips.map((ip, index) => ({
        id: `${name}-t${index}`,
        serviceId: name,
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

/** One routed service "web" for host, with running tasks at the given addresses. */
export function oneServiceSnapshot(host: string, ips: readonly string[], port = 80): Snapshot {
  return servicesSnapshot([{ name: 'web', labels: { VIRTUAL_HOST: host, VIRTUAL_PORT: String(port) }, ips }]);
}

// A snapshot with one routed service "web" and running tasks at the given addresses, for tests that need a real
// rendered bundle without a golden case.
import type { Snapshot } from '../../src/discovery/snapshot.ts';

export function oneServiceSnapshot(host: string, ips: readonly string[], port = 80): Snapshot {
  return {
    services: [
      {
        id: 'web',
        name: 'web',
        createdAt: '2026-01-01T00:00:00Z',
        labels: { VIRTUAL_HOST: host, VIRTUAL_PORT: String(port) },
        env: {},
        mode: 'replicated',
        replicas: ips.length,
        networks: ['swarmgate'],
        image: 'example/web:1',
        updateState: null,
      },
    ],
    tasks: ips.map((ip, index) => ({
      id: `t${index}`,
      serviceId: 'web',
      nodeId: 'n1',
      slot: index + 1,
      desiredState: 'running',
      state: 'running',
      stateSince: '2026-01-01T00:00:00Z',
      error: null,
      image: 'example/web:1',
      addresses: [{ networkId: 'net-swarmgate', networkName: 'swarmgate', ip }],
    })),
    networks: [],
    nodes: [],
  };
}

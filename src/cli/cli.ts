// The operator's CLI in the image (`docker exec <controller> swarmgate status`): a thin client of the admin API.
import { readFile } from 'node:fs/promises';
import { describeError, SwarmgateError } from '../errors.ts';

export interface CliIo {
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly out: (line: string) => void;
}

interface ApiClient {
  get(path: string): Promise<unknown>;
}

async function createApiClient(env: CliIo['env']): Promise<ApiClient> {
  const base = (env.SWARMGATE_API_URL ?? 'http://127.0.0.1:8080').replace(/\/$/, '');
  const tokenFile = env.SWARMGATE_TOKEN_FILE ?? '/run/secrets/swarmgate_token';
  let token: string;
  try {
    token = (await readFile(tokenFile, 'utf8')).trim();
  } catch (error) {
    throw new SwarmgateError(
      'ERR_CONFIG_INVALID',
      `cannot read the API token from ${tokenFile}: ${describeError(error)}`,
    );
  }
  return {
    async get(path) {
      const response = await fetch(`${base}${path}`, {
        headers: { authorization: `Bearer ${token}` },
        signal: AbortSignal.timeout(10_000),
      });
      const body = (await response.json()) as { error?: { code: string; message: string } };
      if (!response.ok) {
        throw new SwarmgateError(
          'ERR_BAD_REQUEST',
          `${body.error?.code ?? response.status}: ${body.error?.message ?? ''}`,
        );
      }
      return body;
    },
  };
}

interface StatusBody {
  config: { version: number; fingerprint: string; publishedAt: string } | null;
  lastReconcile: { at: string; ok: boolean; error: string | null } | null;
  edges: { edge: string; applied: { version: number } | null; inSync: boolean; lastContact: string }[];
  problems: { service: string; label: string; code: string; reason: string; severity: string }[];
  services: {
    name: string;
    hosts: string[];
    path: string;
    routedTasks: number;
    desiredReplicas: number | null;
  }[];
}

export async function runCli(args: readonly string[], io: CliIo): Promise<void> {
  const [command, ...rest] = args;
  const json = rest.includes('--json');
  const api = await createApiClient(io.env);
  switch (command) {
    case 'status': {
      const status = (await api.get('/v1/status')) as StatusBody;
      if (json) return io.out(JSON.stringify(status, null, 2));
      io.out(
        `config: ${status.config ? `v${status.config.version} ${status.config.fingerprint.slice(0, 12)} (${status.config.publishedAt})` : 'none yet'}`,
      );
      if (status.lastReconcile) {
        io.out(
          `last reconcile: ${status.lastReconcile.at} ${status.lastReconcile.ok ? 'ok' : `FAILED: ${status.lastReconcile.error ?? ''}`}`,
        );
      }
      io.out('edges:');
      for (const edge of status.edges) {
        io.out(
          `  ${edge.edge}  v${edge.applied?.version ?? '-'}  ${edge.inSync ? 'in sync' : 'BEHIND'}  last contact ${edge.lastContact}`,
        );
      }
      io.out('services:');
      for (const service of status.services) {
        io.out(
          `  ${service.name}  ${service.hosts.join(',')}${service.path}  ${service.routedTasks}/${service.desiredReplicas ?? '-'} routed`,
        );
      }
      io.out(`problems: ${status.problems.length === 0 ? 'none' : ''}`);
      for (const problem of status.problems) {
        io.out(`  [${problem.severity}] ${problem.service} ${problem.label}: ${problem.reason}`);
      }
      return;
    }
    default:
      throw new SwarmgateError('ERR_BAD_REQUEST', `unknown CLI command "${command ?? ''}" (try: status)`);
  }
}

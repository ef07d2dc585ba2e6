// The operator's CLI in the image (`docker exec <controller> swarmgate status`): a thin client of the admin API.
import { readFile } from 'node:fs/promises';
import https from 'node:https';
import { isIP } from 'node:net';
import { describeError, SwarmgateError } from '../errors.ts';

export interface CliIo {
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly out: (line: string) => void;
  readonly readStdin?: () => Promise<string>;
}

interface ApiClient {
  get(path: string): Promise<unknown>;
  send(method: string, path: string, body?: unknown): Promise<unknown>;
}

/** The name in the controller's channel certificate (its SAN): checked even when the URL is an address. */
const CONTROLLER_NAME = 'swarmgate-controller';

async function readFileOrFail(file: string, what: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (error) {
    throw new SwarmgateError(
      'ERR_CONFIG_INVALID',
      `cannot read the ${what} from ${file}: ${describeError(error)}`,
    );
  }
}

async function createApiClient(env: CliIo['env']): Promise<ApiClient> {
  // The API is HTTPS with the controller's own certificate: trust that one only, for its name.
  const base = new URL((env.SWARMGATE_API_URL ?? 'https://127.0.0.1:8443').replace(/\/$/, ''));
  if (base.protocol !== 'https:') {
    // As the edge does: the admin token must never cross a network in clear, nor go to a peer nobody verified.
    throw new SwarmgateError(
      'ERR_CONFIG_INVALID',
      `SWARMGATE_API_URL must be https://, not ${base.protocol}// (the admin token would be sent in clear)`,
    );
  }
  const tokenFile = env.SWARMGATE_TOKEN_FILE ?? '/run/secrets/swarmgate_token';
  const token = (await readFileOrFail(tokenFile, 'API token')).trim();
  const certFile = env.SWARMGATE_CHANNEL_CERT_FILE ?? '/run/secrets/swarmgate_channel_cert';
  const tlsOptions: https.RequestOptions = {
    ca: await readFileOrFail(certFile, "controller's channel certificate"),
    servername: isIP(base.hostname) || base.hostname === 'localhost' ? CONTROLLER_NAME : base.hostname,
  };
  async function send(method: string, path: string, body?: unknown): Promise<unknown> {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const response = await new Promise<{ status: number; text: string }>((resolve, reject) => {
      const req = https.request(
        {
          ...tlsOptions,
          host: base.hostname,
          port: base.port || 443,
          path: `${base.pathname.replace(/\/$/, '')}${path}`,
          method,
          headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
          // Scaling with --wait may take up to its deadline.
          signal: AbortSignal.timeout(660_000),
        },
        (res) => {
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (chunk: string) => (text += chunk));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
          res.on('error', reject);
        },
      );
      req.on('error', (error) =>
        reject(
          new SwarmgateError(
            'ERR_CONTROLLER_UNREACHABLE',
            `cannot reach the API at ${base.origin}: ${describeError(error)}`,
          ),
        ),
      );
      req.end(payload);
    });
    let answer: { error?: { code: string; message: string } };
    try {
      answer = JSON.parse(response.text) as typeof answer;
    } catch {
      throw new SwarmgateError('ERR_BAD_REQUEST', `HTTP ${response.status}: the API answered no JSON`);
    }
    if ((response.status < 200 || response.status > 299) && response.status !== 202) {
      throw new SwarmgateError(
        'ERR_BAD_REQUEST',
        `${answer.error?.code ?? response.status}: ${answer.error?.message ?? ''}`,
      );
    }
    return answer;
  }
  return { get: (path) => send('GET', path), send };
}

interface StatusBody {
  config: { version: number; fingerprint: string; publishedAt: string } | null;
  lastReconcile: { at: string; ok: boolean; error: string | null } | null;
  edges: {
    edge: string;
    applied: { version: number } | null;
    inSync: boolean;
    /** Absent from older controllers. */
    condition?: string;
    lastContact: string;
    /** Tasks the edge's health checks took out of its rotation; absent from older controllers. */
    tasksDown?: {
      address: string;
      service: string | null;
      task: string | null;
      since: string;
      reason: string;
    }[];
    tasksDownOmitted?: number;
  }[];
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
          `  ${edge.edge}  v${edge.applied?.version ?? '-'}  ${edge.condition === undefined || edge.condition === 'in-sync' || edge.condition === 'behind' ? (edge.inSync ? 'in sync' : 'BEHIND') : edge.condition.toUpperCase()}  last contact ${edge.lastContact}`,
        );
        for (const down of edge.tasksDown ?? []) {
          io.out(
            `    task down: ${down.service ?? '?'} ${down.task ?? '?'} ${down.address} since ${down.since} (${down.reason})`,
          );
        }
        if (edge.tasksDownOmitted) io.out(`    and ${edge.tasksDownOmitted} more tasks down`);
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
    case 'services':
      return io.out(JSON.stringify(await api.get('/v1/services'), null, 2));
    case 'api': {
      // Any API call: swarmgate api METHOD /v1/path [JSON body on stdin]
      const [method = '', path = ''] = positional(rest, 2, 'api <METHOD> </v1/path> [< body.json]');
      if (!/^(GET|PUT|POST|DELETE)$/.test(method) || !path.startsWith('/')) {
        throw new SwarmgateError(
          'ERR_BAD_REQUEST',
          'usage: swarmgate api GET|PUT|POST|DELETE /v1/... [< body.json]',
        );
      }
      const text = method === 'PUT' || method === 'POST' ? ((await io.readStdin?.()) ?? '') : '';
      const body: unknown = text.trim() === '' ? undefined : (JSON.parse(text) as unknown);
      return io.out(JSON.stringify(await api.send(method, path, body), null, 2));
    }
    case 'scale': {
      const [service = '', replicas = ''] = positional(
        rest,
        2,
        'scale <service> <replicas> [--wait[=seconds]]',
      );
      if (!/^\d+$/.test(replicas))
        throw new SwarmgateError('ERR_BAD_REQUEST', `"${replicas}" is not a number of replicas`);
      return io.out(
        JSON.stringify(
          await api.send('POST', `/v1/services/${encodeURIComponent(service)}/scale`, {
            replicas: Number(replicas),
            ...waitOption(rest),
          }),
          null,
          2,
        ),
      );
    }
    case 'image': {
      const [service = '', image = ''] = positional(rest, 2, 'image <service> <image> [--wait[=seconds]]');
      return io.out(
        JSON.stringify(
          await api.send('POST', `/v1/services/${encodeURIComponent(service)}/image`, {
            image,
            ...waitOption(rest),
          }),
          null,
          2,
        ),
      );
    }
    case 'registry': {
      const [action = 'list', host = '', ...more] = rest.filter((arg) => !arg.startsWith('--'));
      const path = `/v1/registries/${encodeURIComponent(host)}`;
      if (action === 'list') return io.out(JSON.stringify(await api.get('/v1/registries'), null, 2));
      if (action === 'delete') return io.out(JSON.stringify(await api.send('DELETE', path), null, 2));
      if (action === 'repos') return io.out(JSON.stringify(await api.get(`${path}/repositories`), null, 2));
      if (action === 'tags')
        return io.out(JSON.stringify(await api.get(`${path}/tags/${more[0] ?? ''}`), null, 2));
      if (action === 'set') {
        const username = more[0];
        if (!username) throw new SwarmgateError('ERR_BAD_REQUEST', `usage: swarmgate ${REGISTRY_SET_USAGE}`);
        const password = await readPassword(rest, io);
        const prefix = option(rest, '--prefix');
        const realmHosts = rest
          .filter((arg) => arg.startsWith('--realm-host='))
          .map((arg) => arg.slice('--realm-host='.length));
        return io.out(
          JSON.stringify(
            await api.send('PUT', path, {
              username,
              password,
              ...(prefix ? { imagePrefix: prefix } : {}),
              ...(realmHosts.length > 0 ? { realmHosts } : {}),
            }),
            null,
            2,
          ),
        );
      }
      throw new SwarmgateError('ERR_BAD_REQUEST', 'usage: swarmgate registry list|set|delete|repos|tags ...');
    }
    default:
      throw new SwarmgateError(
        'ERR_BAD_REQUEST',
        `unknown CLI command "${command ?? ''}" (try: status, services, scale, image, registry)`,
      );
  }
}

const REGISTRY_SET_USAGE =
  'registry set <host> <username> --password-stdin|--password-file=PATH [--prefix=team/] [--realm-host=auth.example.com ...]';

function option(args: readonly string[], name: string): string | undefined {
  return args.find((arg) => arg.startsWith(`${name}=`))?.slice(name.length + 1);
}

/**
 * The registry password from stdin or a file, never from the command line or the environment: both show up in the
 * process list of the host that runs `docker exec` (review F16). One trailing line break is dropped, as
 * `docker login --password-stdin` does.
 */
async function readPassword(args: readonly string[], io: CliIo): Promise<string> {
  if (args.some((arg) => arg === '--password' || arg.startsWith('--password=') || arg === '-p')) {
    throw new SwarmgateError(
      'ERR_BAD_REQUEST',
      'a password is never taken from the command line (it shows in ps); use --password-stdin or --password-file=PATH',
    );
  }
  if (io.env.SWARMGATE_REGISTRY_PASSWORD !== undefined) {
    throw new SwarmgateError(
      'ERR_BAD_REQUEST',
      'SWARMGATE_REGISTRY_PASSWORD is not read (docker exec -e NAME=value shows in ps); use --password-stdin or --password-file=PATH',
    );
  }
  const file = option(args, '--password-file');
  const fromStdin = args.includes('--password-stdin');
  if (fromStdin === (file !== undefined)) {
    throw new SwarmgateError(
      'ERR_BAD_REQUEST',
      `usage: swarmgate ${REGISTRY_SET_USAGE} (exactly one of the two)`,
    );
  }
  let text: string;
  if (file !== undefined) {
    try {
      text = await readFile(file, 'utf8');
    } catch (error) {
      throw new SwarmgateError(
        'ERR_BAD_REQUEST',
        `cannot read the password file ${file}: ${describeError(error)}`,
      );
    }
  } else {
    if (!io.readStdin) throw new SwarmgateError('ERR_BAD_REQUEST', 'no stdin to read the password from');
    text = await io.readStdin();
  }
  const password = text.replace(/\r?\n$/, '');
  if (password === '' || /[\r\n]/.test(password)) {
    throw new SwarmgateError(
      'ERR_BAD_REQUEST',
      `the password ${file === undefined ? 'on stdin' : `in ${file}`} must be one non-empty line`,
    );
  }
  return password;
}

function positional(args: readonly string[], count: number, usage: string): string[] {
  const values = args.filter((arg) => !arg.startsWith('--'));
  if (values.length < count) throw new SwarmgateError('ERR_BAD_REQUEST', `usage: swarmgate ${usage}`);
  return values.map((value) => value);
}

function waitOption(args: readonly string[]): { wait?: boolean | number } {
  const flag = args.find((arg) => arg === '--wait' || arg.startsWith('--wait='));
  if (!flag) return {};
  return flag === '--wait' ? { wait: true } : { wait: Number(flag.slice('--wait='.length)) };
}

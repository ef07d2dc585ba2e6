// The controller's move, timed on the lab (issue 13): `docker service update --force` of the controller, then when
// the new task was created, when it listened, when Swarm called it running, when the edges' Docker DNS returned
// it, and when the first edge poll reached it. Each stack file given is deployed in turn and measured the same way,
// so a healthcheck change is compared within one run on one machine.
//
//   flock /tmp/swarmgate-daemon.lock timeout 900 node bench/controller-move.ts \
//     --runs 3 --stack before=/tmp/stack-before.yml --stack after=docker-stack.yml
import path from 'node:path';
import {
  deployStackFiles,
  docker,
  edgeAddressForContainers,
  REPO_ROOT,
  labClean,
  EDGE_HTTP_PORT,
  EDGE_HTTPS_PORT,
  EDGE_NETWORK,
  STACK,
  waitFor,
  waitForServiceRunning,
} from '../test/e2e/support/lab.ts';
import { printTable, sleep, summary, writeResult } from './support.ts';

const CONTROLLER = `${STACK}_controller`;
const STEP_MS = 150;

function flag(name: string): string[] {
  const values: string[] = [];
  process.argv.forEach((arg, i) => {
    if (arg === `--${name}` && process.argv[i + 1]) values.push(process.argv[i + 1] ?? '');
  });
  return values;
}

interface TaskJson {
  ID: string;
  CreatedAt: string;
  DesiredState: string;
  Status: { State: string; Timestamp: string; ContainerStatus?: { ContainerID?: string } };
  NetworksAttachments?: { Network: { Spec: { Name: string } }; Addresses: string[] }[];
}

async function controllerTasks(): Promise<TaskJson[]> {
  const ids = (await docker(['service', 'ps', '-q', '--no-trunc', CONTROLLER])).split('\n').filter(Boolean);
  if (ids.length === 0) return [];
  return JSON.parse(await docker(['inspect', ...ids]).catch(() => '[]')) as TaskJson[];
}

async function edgeContainer(): Promise<string> {
  const id = (
    await docker(['ps', '-q', '--filter', `name=${STACK}_edge`, '--filter', 'status=running'])
  ).split('\n')[0];
  if (!id) throw new Error('no running edge container');
  return id;
}

interface Move {
  readonly created: number;
  readonly listening: number;
  readonly swarmRunning: number;
  readonly inDns: number;
  readonly firstPoll: number;
}

/** One forced update; every figure in ms after the new task was created (Swarm's clock = this host's clock). */
async function measureMove(): Promise<Move> {
  const old = new Set((await controllerTasks()).map((task) => task.ID));
  const edge = await edgeContainer();
  const issued = Date.now();
  await docker(['service', 'update', '--force', '--detach', CONTROLLER]);
  let task: TaskJson | undefined;
  let listening: number | undefined;
  let inDns: number | undefined;
  let firstPoll: number | undefined;
  const deadline = issued + 120_000;
  while (
    Date.now() < deadline &&
    (listening === undefined || inDns === undefined || firstPoll === undefined)
  ) {
    await sleep(STEP_MS);
    const tasks = await controllerTasks();
    task = tasks.find((candidate) => !old.has(candidate.ID) && candidate.DesiredState === 'running') ?? task;
    const container = task?.Status.ContainerStatus?.ContainerID;
    if (!task || !container) continue;
    const ip = task.NetworksAttachments?.find(
      (attachment) => attachment.Network.Spec.Name === EDGE_NETWORK,
    )?.Addresses[0]?.split('/')[0];
    if (listening === undefined) {
      const logs = await docker(['logs', container]).catch(() => '');
      const line = logs.split('\n').find((entry) => entry.includes('"controller listening"'));
      if (line) listening = Date.parse((JSON.parse(line) as { time: string }).time);
    }
    if (inDns === undefined && ip) {
      const answer = await docker(['exec', edge, 'getent', 'ahosts', 'swarmgate-controller']).catch(() => '');
      if (answer.split(/\s+/).includes(ip)) inDns = Date.now();
    }
    if (firstPoll === undefined && listening !== undefined) {
      const status = await docker(['exec', container, 'swarmgate', 'status', '--json']).catch(() => '');
      const edges = status ? ((JSON.parse(status) as { edges: { lastContact: string }[] }).edges ?? []) : [];
      if (edges.length > 0) firstPoll = Math.min(...edges.map((entry) => Date.parse(entry.lastContact)));
    }
  }
  if (!task || listening === undefined || inDns === undefined || firstPoll === undefined) {
    throw new Error(
      `the move did not finish within 120 s: ${JSON.stringify({ task, listening, inDns, firstPoll })}`,
    );
  }
  const created = Date.parse(task.CreatedAt);
  const running = (await controllerTasks()).find((candidate) => candidate.ID === task?.ID);
  const swarmRunning =
    running?.Status.State === 'running' ? Date.parse(running.Status.Timestamp) : Number.NaN;
  await waitForServiceRunning(CONTROLLER, 1);
  return {
    created: created - issued,
    listening: listening - created,
    swarmRunning: swarmRunning - created,
    inDns: inDns - created,
    firstPoll: firstPoll - created,
  };
}

async function main(): Promise<void> {
  const runs = Number(flag('runs')[0] ?? '3');
  const stacks = flag('stack').map((entry) => {
    const [label, file] = entry.split('=');
    return { label: label ?? '', file: path.resolve(file ?? '') };
  });
  if (stacks.length === 0) stacks.push({ label: 'current', file: path.join(REPO_ROOT, 'docker-stack.yml') });
  process.env.SWARMGATE_E2E_EDGE_IP = await edgeAddressForContainers();
  const results: Record<string, unknown>[] = [];
  try {
    for (const stack of stacks) {
      await labClean();
      await deployStackFiles(STACK, [stack.file, path.join(REPO_ROOT, 'test', 'e2e', 'stack.e2e.yml')], {
        SWARMGATE_NETWORK: EDGE_NETWORK,
        SWARMGATE_HTTP_PORT: String(EDGE_HTTP_PORT),
        SWARMGATE_HTTPS_PORT: String(EDGE_HTTPS_PORT),
        SWARMGATE_E2E_EDGE_IP: process.env.SWARMGATE_E2E_EDGE_IP ?? '',
      });
      await waitForServiceRunning(CONTROLLER, 1);
      await waitForServiceRunning(`${STACK}_edge`, 1);
      await waitFor('the edge to poll the controller', async () => {
        const container = (await controllerTasks()).find((task) => task.Status.State === 'running')?.Status
          .ContainerStatus?.ContainerID;
        if (!container) return undefined;
        const status = JSON.parse(await docker(['exec', container, 'swarmgate', 'status', '--json'])) as {
          edges: { inSync: boolean }[];
        };
        return status.edges.some((entry) => entry.inSync) ? true : undefined;
      });
      const moves: Move[] = [];
      for (let i = 0; i < runs; i++) moves.push(await measureMove());
      for (const [i, move] of moves.entries()) results.push({ stack: stack.label, run: i + 1, ...move });
      const stat = (key: keyof Move): number => summary(moves.map((move) => move[key])).p50;
      results.push({
        stack: stack.label,
        run: 'p50',
        created: stat('created'),
        listening: stat('listening'),
        swarmRunning: stat('swarmRunning'),
        inDns: stat('inDns'),
        firstPoll: stat('firstPoll'),
      });
    }
  } finally {
    await labClean();
  }
  printTable(
    'controller move (ms; created: after the update was issued; the rest: after the task was created)',
    results,
  );
  writeResult('controller-move', { runs, stacks, results });
}

await main();

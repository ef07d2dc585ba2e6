// What an edge's active health checks (lua/swarmgate/health.lua) think of each task: GET /health on nginx's local
// socket, one line per checked task, "address \t upstream \t new|up|down \t since (epoch seconds) \t reason".
// The agent reports the tasks that are down to the controller on each poll, bounded.
import { MAX_REASON_CHARS, MAX_REPORTED_DOWN } from '../publish/bundle-store.ts';
import type { TaskDown } from '../publish/bundle-store.ts';

export type TaskHealthState = 'new' | 'up' | 'down';

export interface TaskHealth {
  /** "ip:port", as in peers.txt. */
  readonly address: string;
  readonly upstream: string;
  readonly state: TaskHealthState;
  /** When the task entered this state (ISO 8601). */
  readonly since: string;
  /** The last probe's result that changed the state: "status 500", "status line: timeout", "connect: ...". */
  readonly reason: string;
}

export type { TaskDown } from '../publish/bundle-store.ts';

const ADDRESS = /^\d{1,3}(\.\d{1,3}){3}:\d{1,5}$/;
const UPSTREAM = /^[A-Za-z0-9_]{1,64}$/;
const STATES: readonly string[] = ['new', 'up', 'down'];

/** Lines that do not fit the grammar are skipped: nginx's answer is data, never trusted to be whole. */
export function parseTaskHealth(text: string): TaskHealth[] {
  const out: TaskHealth[] = [];
  for (const line of text.split('\n')) {
    const [address = '', upstream = '', state = '', since = '', ...reason] = line.split('\t');
    const seconds = Number(since);
    if (!ADDRESS.test(address) || !UPSTREAM.test(upstream) || !STATES.includes(state)) continue;
    if (!Number.isFinite(seconds) || seconds < 0 || seconds > 1e11) continue;
    out.push({
      address,
      upstream,
      state: state as TaskHealthState,
      since: new Date(Math.round(seconds * 1000)).toISOString(),
      reason: reason.join(' ').slice(0, MAX_REASON_CHARS),
    });
  }
  return out.sort((a, b) => (a.address < b.address ? -1 : a.address > b.address ? 1 : 0));
}

/** The down tasks for a poll report: sorted, at most MAX_REPORTED_DOWN, and how many were left out. */
export function downForReport(health: readonly TaskHealth[]): { down: TaskDown[]; omitted: number } {
  const all = health
    .filter((task) => task.state === 'down')
    .map(({ address, upstream, since, reason }) => ({ address, upstream, since, reason }));
  return { down: all.slice(0, MAX_REPORTED_DOWN), omitted: Math.max(0, all.length - MAX_REPORTED_DOWN) };
}

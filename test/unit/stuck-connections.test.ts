// The stuck-connection watch (src/edge/stuck-connections.ts): which connections count as stuck, the ss filters
// that name them, and the watch's rounds with a fake nginx answer and a fake socket table.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  connectionFilter,
  MIN_BACKOFF,
  parseConnections,
  parseUnreachable,
  peerFilter,
  stuckConnections,
  STUCK_WATCH_MS,
  WATCH_AFTER_MS,
  watchStuckConnections,
} from '../../src/edge/stuck-connections.ts';
import type { EdgeConnection, SocketTable } from '../../src/edge/stuck-connections.ts';
import { createCapturingLogger } from '../../src/logger.ts';
import { FakeClock } from '../support/fake-clock.ts';
import { waitUntil } from '../support/wait.ts';

// `ss -tinHO state established`, as iproute2 6.1 prints it (one socket per line, no state column).
const SS_OUTPUT = [
  // A request sent to a task on a dead node: 517 bytes in Send-Q, three retransmission timeouts so far.
  '0      517           10.0.1.7:41234          10.0.1.23:8080 cubic wscale:7,7 rto:1600 backoff:3 rtt:0.21/0.1 ato:40 mss:1398 pmtu:1450 rcvmss:536 advmss:1398 cwnd:1 ssthresh:7 bytes_sent:2585 bytes_acked:2069 segs_out:9 segs_in:6 data_segs_out:5 send 53257142bps lastsnd:1420 lastrcv:1512 lastack:1512 pacing_rate 106514280bps delivery_rate 27960000bps delivered:4 busy:1420ms unacked:1 retrans:1/4 lost:1 rcv_space:14480 rcv_ssthresh:64088 notsent:0 minrtt:0.09',
  // An idle kept-alive connection to the same task: nothing unacknowledged.
  '0      0             10.0.1.7:41240          10.0.1.23:8080 cubic wscale:7,7 rto:204 rtt:0.2/0.1 ato:40 mss:1398 cwnd:10 bytes_sent:517 bytes_acked:518 lastsnd:1700 lastrcv:1690 lastack:1690 delivered:2 rcv_space:14480',
  // A request just sent to it: one timeout, not yet stuck.
  '0      517           10.0.1.7:41250          10.0.1.23:8080 cubic wscale:7,7 rto:408 backoff:1 rtt:0.2/0.1 mss:1398 cwnd:1 unacked:1 retrans:1/1 lastsnd:210 lastrcv:900 lastack:900',
  // A live task whose app stopped reading: the kernel probes its zero window (backoff) with nothing unacknowledged.
  '0      0             10.0.1.7:41270          10.0.1.23:8080 cubic wscale:7,7 rto:204 backoff:4 rtt:0.2/0.1 mss:1398 cwnd:10 lastsnd:3000 lastrcv:3100 lastack:100',
  // A live task's connection retransmitting (a lost segment): not listed as unreachable, never cut.
  '0      517           10.0.1.7:41260          10.0.1.31:8080 cubic wscale:7,7 rto:816 backoff:2 rtt:0.2/0.1 mss:1398 cwnd:1 unacked:1 retrans:1/2 lastsnd:600 lastrcv:700 lastack:700',
  // IPv6 and garbage lines are skipped.
  '0      0      [::ffff:10.0.1.7]:80  [::ffff:203.0.113.9]:51000 cubic rto:204 backoff:4 unacked:2',
  'not a socket line',
  '',
].join('\n');

test('ss lines: addresses, unacknowledged segments and retransmission timeouts', () => {
  const connections = parseConnections(SS_OUTPUT);
  assert.deepEqual(connections, [
    { local: '10.0.1.7:41234', peer: '10.0.1.23:8080', unacked: 1, backoff: 3 },
    { local: '10.0.1.7:41240', peer: '10.0.1.23:8080', unacked: 0, backoff: 0 },
    { local: '10.0.1.7:41250', peer: '10.0.1.23:8080', unacked: 1, backoff: 1 },
    { local: '10.0.1.7:41270', peer: '10.0.1.23:8080', unacked: 0, backoff: 4 },
    { local: '10.0.1.7:41260', peer: '10.0.1.31:8080', unacked: 1, backoff: 2 },
  ]);
});

test('stuck: to an unreachable member, unacknowledged, and silent through MIN_BACKOFF timeouts', () => {
  assert.equal(MIN_BACKOFF, 2);
  const stuck = stuckConnections(parseConnections(SS_OUTPUT), new Set(['10.0.1.23:8080']));
  assert.deepEqual(
    stuck.map((connection) => connection.local),
    ['10.0.1.7:41234'],
    "idle, just-sent, zero-window and other members' connections stay",
  );
  assert.deepEqual(stuckConnections(parseConnections(SS_OUTPUT), new Set()), []);
});

test('GET /unreachable: addresses only, deduplicated, sorted; bad lines skipped', () => {
  assert.deepEqual(
    parseUnreachable(
      '10.0.1.23:8080\t1764115200.250\n10.0.1.9:80\t1\n10.0.1.23:8080\t2\n999.0.0.1:80\t1\n10.0.1.5:0\t1\nx\n',
    ),
    ['10.0.1.23:8080', '10.0.1.9:80'],
  );
  assert.deepEqual(parseUnreachable(''), []);
});

test('ss filters name exactly the connections and members given', () => {
  const connections: EdgeConnection[] = [
    { local: '10.0.1.7:41234', peer: '10.0.1.23:8080', unacked: 1, backoff: 3 },
    { local: '10.0.1.7:41300', peer: '10.0.1.24:8080', unacked: 1, backoff: 2 },
  ];
  assert.deepEqual(connectionFilter(connections), [
    '(',
    'dst',
    '10.0.1.23:8080',
    'and',
    'sport',
    '=',
    ':41234',
    ')',
    'or',
    '(',
    'dst',
    '10.0.1.24:8080',
    'and',
    'sport',
    '=',
    ':41300',
    ')',
  ]);
  assert.deepEqual(peerFilter(['10.0.1.23:8080', '10.0.1.24:8080']), [
    '(',
    'dst',
    '10.0.1.23:8080',
    'or',
    'dst',
    '10.0.1.24:8080',
    ')',
  ]);
});

function fakeTable(
  output: string,
  outcome: (connections: readonly EdgeConnection[]) => { destroyed: number; stderr: string } = (
    connections,
  ) => ({ destroyed: connections.length, stderr: '' }),
): SocketTable & { listed: string[][]; destroyed: EdgeConnection[][] } {
  const table = {
    listed: [] as string[][],
    destroyed: [] as EdgeConnection[][],
    async list(members: readonly string[]) {
      table.listed.push([...members]);
      return parseConnections(output);
    },
    async destroy(connections: readonly EdgeConnection[]) {
      table.destroyed.push([...connections]);
      return outcome(connections);
    },
  };
  return table;
}

/** Fires the next round and waits until it has ended (the next one is scheduled). */
async function nextRound(clock: FakeClock, ms = STUCK_WATCH_MS): Promise<void> {
  clock.advance(ms);
  await waitUntil('the round to end', () => clock.pendingTimers === 1);
}

/** nginx's answer when the dead node's task is listed as unreachable. */
const LISTED = '10.0.1.23:8080\t1\n';

/** A watch over `sockets` with a fake clock and a capturing logger; nginx answers what `unreachable` returns. */
function startWatch(
  sockets: SocketTable,
  unreachable: () => Promise<string | null> = async () => LISTED,
): { clock: FakeClock; lines: Record<string, unknown>[]; watch: ReturnType<typeof watchStuckConnections> } {
  const clock = new FakeClock();
  const { logger, lines } = createCapturingLogger();
  const watch = watchStuckConnections({ unreachable, sockets, clock, logger });
  return { clock, lines, watch };
}

test('the watch cuts only stuck connections, and asks the kernel nothing while no member is watched', async (t) => {
  const table = fakeTable(SS_OUTPUT);
  let answer: string | null = '';
  const { clock, lines, watch } = startWatch(table, async () => answer);
  t.after(() => watch.stop());

  await nextRound(clock);
  assert.deepEqual(table.listed, [], 'no unreachable member: ss is not run');

  answer = '10.0.1.23:8080\t1764115200.250\n';
  await nextRound(clock);
  assert.deepEqual(table.listed, [['10.0.1.23:8080']]);
  assert.deepEqual(
    table.destroyed.map((cut) => cut.map((connection) => connection.local)),
    [['10.0.1.7:41234']],
  );
  assert.equal(watch.cut(), 1);
  assert.ok(lines.some((line) => String(line.msg).startsWith('cut connections to unreachable tasks')));

  // nginx no longer lists it (a cut is an error, not a timeout, or nginx is restarting): still watched a while.
  answer = null;
  await nextRound(clock);
  assert.equal(table.listed.length, 2, 'watched after it left the list');
  await nextRound(clock, WATCH_AFTER_MS);
  const before = table.listed.length;
  await nextRound(clock);
  assert.equal(table.listed.length, before, `not watched ${WATCH_AFTER_MS} ms after its last listing`);
});

test('tasks that left the routes are watched without being listed as unreachable', async (t) => {
  const table = fakeTable(SS_OUTPUT);
  const { clock, watch } = startWatch(table, async () => '');
  t.after(() => watch.stop());
  watch.watch(['10.0.1.23:8080', '10.0.1.24:8080']);
  await nextRound(clock);
  assert.deepEqual(table.listed, [['10.0.1.23:8080', '10.0.1.24:8080']]);
  assert.deepEqual(
    table.destroyed.map((cut) => cut.map((connection) => connection.local)),
    [['10.0.1.7:41234']],
  );
  await nextRound(clock, WATCH_AFTER_MS);
  const before = table.listed.length;
  await nextRound(clock);
  assert.equal(table.listed.length, before);
});

test('a container without CAP_NET_ADMIN, or a kernel without SOCK_DESTROY: said once, nothing counted as cut', async (t) => {
  for (const [stderr, says] of [
    ['SOCK_DESTROY answers: Operation not permitted', 'CAP_NET_ADMIN'],
    ['', 'CONFIG_INET_DIAG_DESTROY'],
  ] as const) {
    const table = fakeTable(SS_OUTPUT, () => ({ destroyed: 0, stderr }));
    const { clock, lines, watch } = startWatch(table);
    t.after(() => watch.stop());
    for (let round = 1; round <= 3; round++) await nextRound(clock);
    assert.equal(table.destroyed.length, 3, 'tried each round');
    assert.equal(watch.cut(), 0);
    assert.equal(lines.filter((line) => String(line.msg).includes(says)).length, 1, says);
    assert.ok(!lines.some((line) => String(line.msg).startsWith('cut connections')));
  }
});

test('only what ss destroyed is counted', async (t) => {
  const two = [SS_OUTPUT, SS_OUTPUT.replace('10.0.1.7:41234', '10.0.1.7:41235')].join('\n');
  const table = fakeTable(two, () => ({ destroyed: 1, stderr: '' }));
  const { clock, watch } = startWatch(table);
  t.after(() => watch.stop());
  await nextRound(clock);
  assert.equal(table.destroyed[0]!.length, 2);
  assert.equal(watch.cut(), 1);
});

test('stop waits for the round under way, which then cuts nothing', async () => {
  const table = fakeTable(SS_OUTPUT);
  let release: () => void = () => {};
  const listing = new Promise<void>((resolve) => (release = resolve));
  const slow: SocketTable = {
    async list(members) {
      await listing;
      return table.list(members);
    },
    destroy: (connections) => table.destroy(connections),
  };
  const { clock, watch } = startWatch(slow);
  clock.advance(STUCK_WATCH_MS);
  await waitUntil('the round to be listing', () => clock.pendingTimers === 0);
  let stopped = false;
  const stopping = watch.stop().then(() => (stopped = true));
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(stopped, false, 'stop waits for the round');
  release();
  await stopping;
  assert.deepEqual(table.destroyed, [], 'a round that ends after stop cuts nothing');
  assert.equal(clock.pendingTimers, 0, 'no round after stop');
});

test('a failing ss (missing from a custom image) is logged once per distinct failure, and the watch goes on', async (t) => {
  let calls = 0;
  const table: SocketTable = {
    async list() {
      calls++;
      throw Object.assign(new Error('spawn ss ENOENT'), { code: 'ENOENT' });
    },
    async destroy() {
      return { destroyed: 0, stderr: '' };
    },
  };
  const { clock, lines, watch } = startWatch(table);
  t.after(() => watch.stop());
  for (let round = 1; round <= 3; round++) {
    clock.advance(STUCK_WATCH_MS);
    await waitUntil(`round ${round}`, () => calls === round && clock.pendingTimers === 1);
  }
  assert.equal(lines.filter((line) => line.msg === 'looking for stuck connections failed').length, 1);
});

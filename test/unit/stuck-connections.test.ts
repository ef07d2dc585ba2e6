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
    { local: '10.0.1.7:41260', peer: '10.0.1.31:8080', unacked: 1, backoff: 2 },
  ]);
});

test('stuck: to an unreachable member, unacknowledged, and silent through MIN_BACKOFF timeouts', () => {
  assert.equal(MIN_BACKOFF, 2);
  const stuck = stuckConnections(parseConnections(SS_OUTPUT), new Set(['10.0.1.23:8080']));
  assert.deepEqual(
    stuck.map((connection) => connection.local),
    ['10.0.1.7:41234'],
    'idle, just-sent and other members connections stay',
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
  stderr = '',
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
      return stderr;
    },
  };
  return table;
}

test('the watch cuts only stuck connections, and asks the kernel nothing while no member is unreachable', async (t) => {
  const clock = new FakeClock();
  const { logger, lines } = createCapturingLogger();
  const table = fakeTable(SS_OUTPUT);
  let answer: string | null = '';
  const watch = watchStuckConnections({ unreachable: async () => answer, sockets: table, clock, logger });
  t.after(() => watch.stop());

  clock.advance(STUCK_WATCH_MS);
  await waitUntil('the empty round to end', () => clock.pendingTimers === 1);
  assert.deepEqual(table.listed, [], 'no unreachable member: ss is not run');

  answer = '10.0.1.23:8080\t1764115200.250\n';
  clock.advance(STUCK_WATCH_MS);
  await waitUntil('a cut', () => table.destroyed.length === 1);
  assert.deepEqual(table.listed, [['10.0.1.23:8080']]);
  assert.deepEqual(
    table.destroyed[0]!.map((connection) => connection.local),
    ['10.0.1.7:41234'],
  );
  await waitUntil('the round to end', () => clock.pendingTimers === 1);
  assert.equal(watch.cut(), 1);
  assert.ok(lines.some((line) => String(line.msg).startsWith('cut connections to unreachable tasks')));

  answer = null; // nginx not answering (restarting)
  clock.advance(STUCK_WATCH_MS);
  await waitUntil('the round to end', () => clock.pendingTimers === 1);
  assert.equal(table.listed.length, 1);
});

test('a container without CAP_NET_ADMIN: said once, nothing counted as cut', async (t) => {
  const clock = new FakeClock();
  const { logger, lines } = createCapturingLogger();
  const table = fakeTable(SS_OUTPUT, 'RTNETLINK answers: Operation not permitted');
  const watch = watchStuckConnections({
    unreachable: async () => '10.0.1.23:8080\t1\n',
    sockets: table,
    clock,
    logger,
  });
  t.after(() => watch.stop());
  for (let round = 1; round <= 3; round++) {
    clock.advance(STUCK_WATCH_MS);
    await waitUntil(`round ${round}`, () => table.destroyed.length === round);
    await waitUntil(`round ${round} to end`, () => clock.pendingTimers === 1);
  }
  assert.equal(watch.cut(), 0);
  assert.equal(lines.filter((line) => String(line.msg).includes('CAP_NET_ADMIN')).length, 1);
});

test('a failing ss (missing from a custom image) is logged once per distinct failure, and the watch goes on', async (t) => {
  const clock = new FakeClock();
  const { logger, lines } = createCapturingLogger();
  let calls = 0;
  const table: SocketTable = {
    async list() {
      calls++;
      throw Object.assign(new Error('spawn ss ENOENT'), { code: 'ENOENT' });
    },
    async destroy() {
      return '';
    },
  };
  const watch = watchStuckConnections({
    unreachable: async () => '10.0.1.23:8080\t1\n',
    sockets: table,
    clock,
    logger,
  });
  t.after(() => watch.stop());
  for (let round = 1; round <= 3; round++) {
    clock.advance(STUCK_WATCH_MS);
    await waitUntil(`round ${round}`, () => calls === round && clock.pendingTimers === 1);
  }
  assert.equal(lines.filter((line) => line.msg === 'looking for stuck connections failed').length, 1);
});

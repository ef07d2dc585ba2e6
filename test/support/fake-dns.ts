// A tiny DNS server on loopback UDP for nginx's `resolver`: every A question is answered with the addresses the test
// sets, as Docker's embedded DNS answers once a second container takes the alias swarmgate-controller.
import dgram from 'node:dgram';

export interface FakeDns {
  readonly port: number;
  /** Questions answered so far. */
  readonly queries: number;
  close(): Promise<void>;
}

export async function startFakeDns(addresses: readonly string[]): Promise<FakeDns> {
  const socket = dgram.createSocket('udp4');
  const state = { queries: 0 };
  socket.on('message', (message, peer) => {
    if (message.length < 17) return;
    // The question: labels up to the zero octet, then QTYPE and QCLASS.
    let end = 12;
    while (end < message.length && message[end] !== 0) end += (message[end] ?? 0) + 1;
    end += 5;
    if (end > message.length) return;
    state.queries++;
    const header = Buffer.alloc(12);
    message.copy(header, 0, 0, 2);
    header.writeUInt16BE(0x8180, 2); // response, recursion desired and available, no error
    header.writeUInt16BE(1, 4);
    header.writeUInt16BE(addresses.length, 6);
    const answers = addresses.map((address) =>
      Buffer.from([
        0xc0,
        0x0c, // the name: a pointer to the question's
        0,
        1, // A
        0,
        1, // IN
        0,
        0,
        0,
        5, // TTL 5 s
        0,
        4,
        ...address.split('.').map(Number),
      ]),
    );
    socket.send(Buffer.concat([header, message.subarray(12, end), ...answers]), peer.port, peer.address);
  });
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', () => resolve()));
  return {
    port: socket.address().port,
    get queries() {
      return state.queries;
    },
    close: () => new Promise<void>((resolve) => socket.close(() => resolve())),
  };
}

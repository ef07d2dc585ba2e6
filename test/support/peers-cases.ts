// peers.txt inputs that the TypeScript grammar (src/render/peers-text.ts) and the Lua balancer must judge alike:
// the unit test runs them through parsePeers, the real-nginx test posts them to the Lua's /peers.

/** A generation for the tests; the nginx test substitutes the one its config runs. */
export const GENERATION = 'ab'.repeat(32);

export interface PeersCase {
  readonly name: string;
  /** `{generation}` is replaced by the running generation. */
  readonly text: string;
  readonly ok: boolean;
}

const g = '{generation}';

export const PEERS_CASES: readonly PeersCase[] = [
  { name: 'no upstreams', text: `generation ${g}\n`, ok: true },
  { name: 'one upstream', text: `generation ${g}\nupstream svc_web_1 10.0.0.1:80\n`, ok: true },
  {
    name: 'several members and upstreams',
    text: `generation ${g}\nupstream a 10.0.0.1:80 10.0.0.2:8080\nupstream B_2 255.255.255.255:65535 0.0.0.0:1\n`,
    ok: true,
  },
  { name: 'an upstream without members', text: `generation ${g}\nupstream a\n`, ok: true },
  { name: 'empty', text: '', ok: false },
  { name: 'a newline only', text: '\n', ok: false },
  { name: 'truncated: no final newline', text: `generation ${g}\nupstream a 10.0.0.1:80`, ok: false },
  { name: 'truncated generation', text: `generation ${'ab'.repeat(31)}\n`, ok: false },
  { name: 'generation too long', text: `generation ${'ab'.repeat(33)}\n`, ok: false },
  { name: 'upper-case generation', text: `generation ${'AB'.repeat(32)}\n`, ok: false },
  { name: 'no generation line', text: 'upstream a 10.0.0.1:80\n', ok: false },
  { name: 'generation not first', text: `upstream a 10.0.0.1:80\ngeneration ${g}\n`, ok: false },
  { name: 'CRLF line ends', text: `generation ${g}\r\nupstream a 10.0.0.1:80\r\n`, ok: false },
  { name: 'an empty line', text: `generation ${g}\n\nupstream a 10.0.0.1:80\n`, ok: false },
  { name: 'an unknown line', text: `generation ${g}\nserver a 10.0.0.1:80\n`, ok: false },
  { name: 'upstream without a name', text: `generation ${g}\nupstream\n`, ok: false },
  { name: 'upstream with an empty name', text: `generation ${g}\nupstream  10.0.0.1:80\n`, ok: false },
  { name: 'a name with a dash', text: `generation ${g}\nupstream svc-web 10.0.0.1:80\n`, ok: false },
  { name: 'a name with a quote', text: `generation ${g}\nupstream a"b 10.0.0.1:80\n`, ok: false },
  { name: 'a non-ASCII name', text: `generation ${g}\nupstream caf\u00e9 10.0.0.1:80\n`, ok: false },
  {
    name: 'a name of 65 characters',
    text: `generation ${g}\nupstream ${'a'.repeat(65)} 10.0.0.1:80\n`,
    ok: false,
  },
  {
    name: 'a duplicate upstream',
    text: `generation ${g}\nupstream a 10.0.0.1:80\nupstream a 10.0.0.2:80\n`,
    ok: false,
  },
  {
    name: 'two spaces between members',
    text: `generation ${g}\nupstream a 10.0.0.1:80  10.0.0.2:80\n`,
    ok: false,
  },
  { name: 'a trailing space', text: `generation ${g}\nupstream a 10.0.0.1:80 \n`, ok: false },
  { name: 'a tab separator', text: `generation ${g}\nupstream a\t10.0.0.1:80\n`, ok: false },
  { name: 'a member without a port', text: `generation ${g}\nupstream a 10.0.0.1\n`, ok: false },
  { name: 'a member with an empty port', text: `generation ${g}\nupstream a 10.0.0.1:\n`, ok: false },
  { name: 'port 0', text: `generation ${g}\nupstream a 10.0.0.1:0\n`, ok: false },
  { name: 'port 65536', text: `generation ${g}\nupstream a 10.0.0.1:65536\n`, ok: false },
  { name: 'a port with a leading zero', text: `generation ${g}\nupstream a 10.0.0.1:080\n`, ok: false },
  { name: 'an octet of 256', text: `generation ${g}\nupstream a 10.0.0.256:80\n`, ok: false },
  { name: 'an octet with a leading zero', text: `generation ${g}\nupstream a 10.0.0.01:80\n`, ok: false },
  { name: 'three octets', text: `generation ${g}\nupstream a 10.0.1:80\n`, ok: false },
  { name: 'five octets', text: `generation ${g}\nupstream a 10.0.0.1.5:80\n`, ok: false },
  { name: 'a host name', text: `generation ${g}\nupstream a web:80\n`, ok: false },
  { name: 'IPv6', text: `generation ${g}\nupstream a [::1]:80\n`, ok: false },
  { name: 'two colons', text: `generation ${g}\nupstream a 10.0.0.1:80:81\n`, ok: false },
  { name: 'a negative port', text: `generation ${g}\nupstream a 10.0.0.1:-80\n`, ok: false },
  { name: 'a plus sign', text: `generation ${g}\nupstream a 10.0.0.1:+80\n`, ok: false },
  // Canary weights (issue 15): "@<1..1000000>" after a member.
  {
    name: 'weighted members',
    text: `generation ${g}\nupstream a 10.0.0.1:80@900 10.0.0.2:80 10.0.0.3:8080@1000000\n`,
    ok: true,
  },
  { name: 'weight 1 written out', text: `generation ${g}\nupstream a 10.0.0.1:80@1\n`, ok: true },
  { name: 'weight 0', text: `generation ${g}\nupstream a 10.0.0.1:80@0\n`, ok: false },
  { name: 'a weight above 1000000', text: `generation ${g}\nupstream a 10.0.0.1:80@1000001\n`, ok: false },
  { name: 'a weight of 8 digits', text: `generation ${g}\nupstream a 10.0.0.1:80@10000000\n`, ok: false },
  { name: 'a weight with a leading zero', text: `generation ${g}\nupstream a 10.0.0.1:80@09\n`, ok: false },
  { name: 'an empty weight', text: `generation ${g}\nupstream a 10.0.0.1:80@\n`, ok: false },
  { name: 'a negative weight', text: `generation ${g}\nupstream a 10.0.0.1:80@-5\n`, ok: false },
  { name: 'a fractional weight', text: `generation ${g}\nupstream a 10.0.0.1:80@1.5\n`, ok: false },
  { name: 'two weights', text: `generation ${g}\nupstream a 10.0.0.1:80@5@5\n`, ok: false },
  { name: 'a weight without a port', text: `generation ${g}\nupstream a 10.0.0.1@5\n`, ok: false },
  { name: 'a weight before the port', text: `generation ${g}\nupstream a 10.0.0.1@5:80\n`, ok: false },
  { name: 'a NUL byte', text: `generation ${g}\nupstream a 10.0.0.1:80\u0000\n`, ok: false },
];

export function peersCaseText(peersCase: PeersCase, generation = GENERATION): string {
  return peersCase.text.replaceAll(g, generation);
}

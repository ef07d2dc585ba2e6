// peers.txt: the task addresses of a bundle, the one file the edge's Lua balancer reads (lua/swarmgate/balancer.lua).
// `nginx -t` never runs init_by_lua, so nothing but this module checks the file before nginx loads it: the
// controller parses what it rendered before publishing, the edge parses what it received (or saved) before
// applying or posting it. The grammar is exactly the one the Lua accepts; test/support/peers-cases.ts holds the
// table both are tested against (the Lua through a real nginx).
//
//   peers.txt  = "generation " 64 lowercase hex "\n" *( upstream "\n" )
//   upstream   = "upstream " name *( " " member )                 a name appears once
//   member     = ipv4 ":" port [ "@" weight ]                     no weight: 1
//   name       = 1*64 ( A-Z / a-z / 0-9 / "_" )
//   ipv4       = four decimal octets 0-255 without leading zeros, separated by "."
//   port       = 1-65535 without leading zeros
//   weight     = 1-1000000 without leading zeros (a canary group's share per task; changes without a reload)
import { SwarmgateError } from '../errors.ts';

export interface PeersMember {
  readonly ip: string;
  readonly port: number;
  /** Absent: 1. */
  readonly weight?: number;
}

export interface PeersUpstream {
  readonly name: string;
  readonly members: readonly PeersMember[];
}

export interface PeersFile {
  /** The shape fingerprint of the bundle it belongs to. */
  readonly generation: string;
  readonly upstreams: readonly PeersUpstream[];
}

export type PeersParse =
  { readonly ok: true; readonly peers: PeersFile } | { readonly ok: false; readonly reason: string };

const GENERATION = /^[0-9a-f]{64}$/;
const NAME = /^[A-Za-z0-9_]{1,64}$/;
const PORT = /^[1-9][0-9]{0,4}$/;
const WEIGHT = /^[1-9][0-9]{0,6}$/;
export const MAX_PEER_WEIGHT = 1_000_000;

export function isUpstreamName(name: string): boolean {
  return NAME.test(name);
}

/** One octet 0-255 without leading zeros (OCTET with its bound), as one expression. */
const OCTET_0_255 = '(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])';
const IPV4 = new RegExp(`^(?:${OCTET_0_255}\\.){3}${OCTET_0_255}$`);

/**
 * A task address the Lua can route to: dotted-quad IPv4 without leading zeros. One regular expression, not a split:
 * it runs for every task of every reconcile (100,000 at 10,000 services).
 */
export function isPeerAddress(ip: string): boolean {
  return IPV4.test(ip);
}

export function isPeerPort(port: number): boolean {
  return PORT.test(String(port)) && port >= 1 && port <= 65535;
}

export function isPeerWeight(weight: number): boolean {
  return WEIGHT.test(String(weight)) && weight <= MAX_PEER_WEIGHT;
}

function parseMember(token: string): PeersMember | null {
  const at = token.indexOf('@');
  const address = at < 0 ? token : token.slice(0, at);
  const colon = address.lastIndexOf(':');
  if (colon < 0) return null;
  const ip = address.slice(0, colon);
  const portText = address.slice(colon + 1);
  if (!isPeerAddress(ip) || !PORT.test(portText)) return null;
  const port = Number(portText);
  if (!isPeerPort(port)) return null;
  if (at < 0) return { ip, port };
  const weightText = token.slice(at + 1);
  if (!WEIGHT.test(weightText) || !isPeerWeight(Number(weightText))) return null;
  return { ip, port, weight: Number(weightText) };
}

export function parsePeers(text: string): PeersParse {
  const fail = (reason: string): PeersParse => ({ ok: false, reason });
  if (!text.endsWith('\n')) return fail('peers.txt does not end with a newline');
  const lines = text.slice(0, -1).split('\n');
  const first = lines[0] ?? '';
  const generation = first.startsWith('generation ') ? first.slice('generation '.length) : null;
  if (generation === null || !GENERATION.test(generation)) {
    return fail('the first line is not "generation <64 hex digits>"');
  }
  const upstreams: PeersUpstream[] = [];
  const seen = new Set<string>();
  for (let index = 1; index < lines.length; index++) {
    const line = lines[index] ?? '';
    const where = `line ${index + 1}`;
    const tokens = line.split(' ');
    if (tokens[0] !== 'upstream' || tokens.length < 2) return fail(`${where} is not "upstream <name> ..."`);
    const name = tokens[1] ?? '';
    if (!NAME.test(name)) return fail(`${where}: "${name.slice(0, 80)}" is not an upstream name`);
    if (seen.has(name)) return fail(`${where}: upstream ${name} appears twice`);
    seen.add(name);
    const members = [];
    for (const token of tokens.slice(2)) {
      const member = parseMember(token);
      if (!member) return fail(`${where}: "${token.slice(0, 80)}" is not <IPv4>:<port>[@<weight>]`);
      members.push(member);
    }
    upstreams.push({ name, members });
  }
  return { ok: true, peers: { generation, upstreams } };
}

/** The one writer of peers.txt; it refuses to write anything parsePeers would refuse. */
export function formatPeers(peers: PeersFile): string {
  const lines = [`generation ${peers.generation}`];
  for (const upstream of peers.upstreams) {
    lines.push(
      [
        'upstream',
        upstream.name,
        ...upstream.members.map(
          (member) =>
            `${member.ip}:${member.port}${member.weight !== undefined && member.weight !== 1 ? `@${member.weight}` : ''}`,
        ),
      ].join(' '),
    );
  }
  const text = `${lines.join('\n')}\n`;
  const parsed = parsePeers(text);
  if (!parsed.ok) throw new SwarmgateError('ERR_TEMPLATE', `peers.txt would be invalid: ${parsed.reason}`);
  return text;
}

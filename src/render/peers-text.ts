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
  return readMember(token, true);
}

/**
 * One member of an upstream line; with `build` false only whether it is one (true), so the controller's check of what
 * it wrote makes no object per task (100,000 at 10,000 services, kept alive through the whole check).
 */
function readMember(token: string, build: true): PeersMember | null;
function readMember(token: string, build: false): true | null;
function readMember(token: string, build: boolean): PeersMember | true | null {
  const at = token.indexOf('@');
  const address = at < 0 ? token : token.slice(0, at);
  const colon = address.lastIndexOf(':');
  if (colon < 0) return null;
  const ip = address.slice(0, colon);
  const portText = address.slice(colon + 1);
  if (!isPeerAddress(ip) || !PORT.test(portText)) return null;
  const port = Number(portText);
  if (!isPeerPort(port)) return null;
  if (at < 0) return build ? { ip, port } : true;
  const weightText = token.slice(at + 1);
  if (!WEIGHT.test(weightText) || !isPeerWeight(Number(weightText))) return null;
  return build ? { ip, port, weight: Number(weightText) } : true;
}

export function parsePeers(text: string): PeersParse {
  const upstreams: PeersUpstream[] = [];
  const reason = scanPeers(text, (name, tokens) => {
    const members: PeersMember[] = [];
    for (const token of tokens) {
      const member = parseMember(token);
      if (member) members.push(member);
    }
    upstreams.push({ name, members });
  });
  if (reason !== null) return { ok: false, reason };
  return { ok: true, peers: { generation: text.slice('generation '.length, text.indexOf('\n')), upstreams } };
}

/** Why parsePeers would refuse the text, or null; builds nothing (the controller's check of what it wrote). */
export function peersProblem(text: string): string | null {
  return scanPeers(text, null);
}

/**
 * The grammar, line by line: the reason the text is not a peers.txt, or null. Each upstream line whose members all
 * pass goes to `take` (its members' tokens, each checked already). Lines are read in place (indexOf), not split
 * into one array of the whole file.
 */
function scanPeers(
  text: string,
  take: ((name: string, tokens: readonly string[]) => void) | null,
): string | null {
  if (!text.endsWith('\n')) return 'peers.txt does not end with a newline';
  let end = text.indexOf('\n');
  const first = text.slice(0, end);
  const generation = first.startsWith('generation ') ? first.slice('generation '.length) : null;
  if (generation === null || !GENERATION.test(generation)) {
    return 'the first line is not "generation <64 hex digits>"';
  }
  const seen = new Set<string>();
  for (let index = 1, start = end + 1; start < text.length; index++, start = end + 1) {
    end = text.indexOf('\n', start);
    const line = text.slice(start, end);
    const where = `line ${index + 1}`;
    const tokens = line.split(' ');
    if (tokens[0] !== 'upstream' || tokens.length < 2) return `${where} is not "upstream <name> ..."`;
    const name = tokens[1] ?? '';
    if (!NAME.test(name)) return `${where}: "${name.slice(0, 80)}" is not an upstream name`;
    if (seen.has(name)) return `${where}: upstream ${name} appears twice`;
    seen.add(name);
    for (let i = 2; i < tokens.length; i++) {
      const token = tokens[i] ?? '';
      if (!readMember(token, false))
        return `${where}: "${token.slice(0, 80)}" is not <IPv4>:<port>[@<weight>]`;
    }
    take?.(name, tokens.slice(2));
  }
  return null;
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
  const problem = peersProblem(text);
  if (problem !== null) throw new SwarmgateError('ERR_TEMPLATE', `peers.txt would be invalid: ${problem}`);
  return text;
}

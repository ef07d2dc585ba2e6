// early-hosts.txt: the hosts an edge can serve from shared memory between a bundle's arrival and the reload that
// gives them server blocks of their own (lua/swarmgate/early.lua). At 2,000 hosts `nginx -t` and a reload take about
// half a second on an edge; a new host listed here is served within milliseconds of the bundle, by the default
// servers of ports 80 and 443, which look its name up in a table the edge agent posts to nginx.
//
// Only hosts whose server block does nothing the default servers' generic location cannot do exactly are listed
// (an exact name, one location "/" proxied over HTTP to an upstream with the default balancing, no access rules,
// limits, auth, headers, tuning or TLS 1.3 limit): the same request gets the same answer either way, and a host that
// needs anything else waits for the reload, as every host did before. Every host listed is also in the bundle's
// nginx.conf, which the controller and the edge validated with `nginx -t` before nginx loads it: the table only
// moves a host's first requests ahead of the reload, it never routes anything the config does not.
//
//   early-hosts.txt = *( host TAB service TAB upstream TAB http TAB certificate TAB https-port TAB hsts "\n" )
//                 sorted by host, each host once
//   host        = a lowercase exact DNS name
//   service     = the Docker service's name (the traffic metrics' label)
//   upstream    = a peers.txt upstream name
//   http        = "serve" / "redirect" / "refuse"   what port 80 does (HTTPS_METHOD)
//   certificate = a certificates.pem section, or "-" (no HTTPS)
//   https-port  = the port redirects name (EXTERNAL_HTTPS_PORT), or "-"
//   hsts        = the Strict-Transport-Security value, or "-"
//
// What the agent posts to the running nginx (POST /early on its local socket) is the entries new or changed since the
// running bundle, then the peers.txt lines of their upstreams, then the certificates.pem sections of certificates the
// running nginx does not hold: earlyPost() below. lua/swarmgate/early.lua parses the same grammar.
import { isCertificateName, isCertificateHost } from './certificates-text.ts';
import { isUpstreamName } from './peers-text.ts';
import { SwarmgateError } from '../errors.ts';

export const EARLY_HOSTS_FILE = 'early-hosts.txt';

export interface EarlyHost {
  readonly host: string;
  readonly service: string;
  readonly upstream: string;
  readonly http: 'serve' | 'redirect' | 'refuse';
  /** certificates.pem section; null: HTTP only. */
  readonly certificate: string | null;
  readonly httpsPort: number | null;
  readonly hsts: string | null;
}

const HSTS = /^[A-Za-z0-9=;][A-Za-z0-9=; -]{0,199}$/;
const PORT = /^[1-9][0-9]{0,4}$/;
// Docker's service name grammar, as the Lua checks it.
const SERVICE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;
const HTTP_MODES = new Set(['serve', 'redirect', 'refuse']);

/** Why an entry cannot be written (null: it can); the renderer leaves such hosts to the reload. */
export function earlyHostProblem(entry: EarlyHost): string | null {
  if (!isCertificateHost(entry.host) || entry.host.startsWith('*.')) return 'not an exact host name';
  if (!SERVICE.test(entry.service)) return 'not a service name';
  if (!isUpstreamName(entry.upstream)) return 'not an upstream name';
  if (!HTTP_MODES.has(entry.http)) return 'not serve, redirect or refuse';
  if (entry.certificate !== null && !isCertificateName(entry.certificate)) return 'not a certificate name';
  if (entry.certificate === null && entry.http !== 'serve') return 'no HTTPS and no HTTP';
  if (entry.httpsPort !== null && !(PORT.test(String(entry.httpsPort)) && entry.httpsPort <= 65535))
    return 'not a port';
  if (entry.hsts !== null && !HSTS.test(entry.hsts)) return 'not an HSTS value';
  return null;
}

const line = (entry: EarlyHost): string =>
  [
    entry.host,
    entry.service,
    entry.upstream,
    entry.http,
    entry.certificate ?? '-',
    entry.httpsPort === null ? '-' : String(entry.httpsPort),
    entry.hsts ?? '-',
  ].join('\t');

/** The one writer of early-hosts.txt; it refuses to write anything parseEarlyHosts would refuse. */
export function formatEarlyHosts(entries: readonly EarlyHost[]): string {
  const sorted = [...entries].sort((a, b) => (a.host < b.host ? -1 : a.host > b.host ? 1 : 0));
  let text = '';
  let previous: string | null = null;
  for (const entry of sorted) {
    const problem = entry.host === previous ? 'appears twice' : earlyHostProblem(entry);
    if (problem) throw new SwarmgateError('ERR_TEMPLATE', `${EARLY_HOSTS_FILE}: ${entry.host}: ${problem}`);
    previous = entry.host;
    text += `${line(entry)}\n`;
  }
  return text;
}

export type EarlyHostsParse =
  | { readonly ok: true; readonly hosts: ReadonlyMap<string, EarlyHost> }
  | { readonly ok: false; readonly reason: string };

export function parseEarlyHosts(text: string): EarlyHostsParse {
  if (text !== '' && !text.endsWith('\n')) return { ok: false, reason: 'does not end with a newline' };
  const hosts = new Map<string, EarlyHost>();
  const lines = text === '' ? [] : text.slice(0, -1).split('\n');
  for (const [index, text] of lines.entries()) {
    const fields = text.split('\t');
    const [host = '', service = '', upstream = '', http = '', certificate = '', port = '', hsts = ''] =
      fields;
    const entry: EarlyHost = {
      host,
      service,
      upstream,
      http: http as EarlyHost['http'],
      certificate: certificate === '-' ? null : certificate,
      httpsPort: port === '-' ? null : PORT.test(port) ? Number(port) : -1,
      hsts: hsts === '-' ? null : hsts,
    };
    const problem =
      fields.length !== 7 ? 'not 7 fields' : hosts.has(host) ? 'appears twice' : earlyHostProblem(entry);
    if (problem) return { ok: false, reason: `line ${index + 1}: ${problem}` };
    hosts.set(host, entry);
  }
  return { ok: true, hosts };
}

/** At most this many hosts go early in one post: a first deploy of thousands waits for the reload, as before. */
export const MAX_EARLY_HOSTS = 256;

/** A bundle's files by name (render-config's BundleFiles, spelled out: render-config imports this file). */
type BundleFiles = Readonly<Record<string, string>>;

/**
 * The body of POST /early for a bundle `next` arriving at an edge that runs `running`: the entries of next's
 * early-hosts.txt that are new or changed, the peers.txt lines of their upstreams, and the certificates.pem sections
 * of their certificates that differ from the running ones. '' when nothing can go early (the table is then emptied).
 * Both bundles were checked before (grammar, certificate pairs), so a file that does not parse here yields ''.
 */
export function earlyPost(next: BundleFiles, running: BundleFiles | null): string {
  const nextHosts = parseEarlyHosts(next[EARLY_HOSTS_FILE] ?? '');
  if (!nextHosts.ok) return '';
  const runningHosts = parseEarlyHosts(running?.[EARLY_HOSTS_FILE] ?? '');
  const before = runningHosts.ok ? runningHosts.hosts : new Map<string, EarlyHost>();
  // A host the running table lists has its own server blocks in the running config: the catch-all servers never see
  // its requests, except on 443 when it had no certificate there. So only those, and hosts new to the table, go.
  const entries = [...nextHosts.hosts.values()]
    .filter((entry) => {
      const old = before.get(entry.host);
      return old === undefined || (old.certificate === null && entry.certificate !== null);
    })
    .slice(0, MAX_EARLY_HOSTS);
  if (entries.length === 0) return '';
  const upstreams = new Set(entries.map((entry) => entry.upstream));
  const peerLines = (next['peers.txt'] ?? '')
    .split('\n')
    .filter((text) => upstreams.has(text.split(' ', 2)[1] ?? '') && text.startsWith('upstream '));
  const certificates = new Set(entries.flatMap((entry) => (entry.certificate ? [entry.certificate] : [])));
  let pemText = '';
  // One section found by its header costs a scan of a 5 MB file: many are found in one pass over both files.
  const lookup =
    certificates.size > 4
      ? indexedSections(next['certificates.pem'] ?? '', running?.['certificates.pem'] ?? '')
      : (name: string) => ({
          next: pemSection(next['certificates.pem'] ?? '', name),
          running: pemSection(running?.['certificates.pem'] ?? '', name),
        });
  for (const name of [...certificates].sort()) {
    const sections = lookup(name);
    if (sections.next === null || sections.next === sections.running) continue;
    pemText += sections.next;
  }
  return `${entries.map((entry) => `${line(entry)}\n`).join('')}${peerLines.map((text) => `${text}\n`).join('')}${pemText}`;
}

/**
 * One certificate's section of a certificates.pem, as it stands ("certificate <name>" to "end"), or null. Found by
 * its header rather than by parsing the whole file: at 2,000 hosts the file is 5 MB, and this runs before the post.
 */
function pemSection(text: string, name: string): string | null {
  const header = `certificate ${name}\n`;
  let at = text.startsWith(header) ? 0 : text.indexOf(`\n${header}`);
  if (at < 0) return null;
  if (at > 0) at += 1;
  const end = text.indexOf('\nend\n', at);
  return end < 0 ? null : text.slice(at, end + 5);
}

/** Every section of a certificates.pem by name, in one pass. */
function sections(text: string): Map<string, string> {
  const found = new Map<string, string>();
  let at = 0;
  while (at < text.length) {
    const newline = text.indexOf('\n', at);
    const end = text.indexOf('\nend\n', at);
    if (newline < 0 || end < 0 || !text.startsWith('certificate ', at)) break;
    found.set(text.slice(at + 'certificate '.length, newline), text.slice(at, end + 5));
    at = end + 5;
  }
  return found;
}

function indexedSections(
  next: string,
  running: string,
): (name: string) => { next: string | null; running: string | null } {
  const nextSections = sections(next);
  const runningSections = sections(running);
  return (name) => ({ next: nextSections.get(name) ?? null, running: runningSections.get(name) ?? null });
}

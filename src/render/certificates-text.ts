// certificates.txt: which certificate each HTTPS host presents, and certificates.pem: those certificates and their
// keys, one file. The edge's Lua (lua/swarmgate/certificates.lua) reads both at every start and reload and puts a
// host's certificate on the connection while it reads the client hello. The host server blocks they list name no
// certificate file, so nginx loads none of them at a reload (2,000 certificate loads were most of a reload at 2,000
// hosts), and one file instead of two per certificate keeps a bundle of 2,000 HTTPS hosts at a few files.
//
// `nginx -t` never runs init_by_lua and never reads these files, so this module is what checks the grammar, on the
// controller after rendering and on the edge before applying; the key pairs themselves are checked by
// src/render/certificate-pairs.ts on both sides.
//
//   certificates.txt = *( name " " certificate [ " tls1.3" ] "\n" )   sorted by name, a name appears once
//   name             = a lowercase DNS name, or "*." and one (a leading wildcard, as in server_name)
//   certificate      = [A-Za-z0-9] *127( A-Z / a-z / 0-9 / "_" / "." / "-" )   a section of certificates.pem
//                    / "-"   the name's server block has a TLS context of its own: the Lua leaves it to nginx
//   " tls1.3"        = SSL_POLICY=Mozilla-Modern: the Lua allows only TLS 1.3 for this name. It must be set while the
//                      client hello is read: nginx's per-server ssl_protocols comes after OpenSSL chose the version
//                      (with the default server's protocols), so it never refused TLS 1.2 for a host by name.
import { SwarmgateError } from '../errors.ts';

export const CERTIFICATES_FILE = 'certificates.txt';
/**
 *   certificates.pem = *( "certificate " certificate "\n" chain "key\n" key "end\n" )   sorted by certificate, once each
 *   chain, key       = PEM text, every line ending in "\n" (a PEM line is never "key" or "end")
 * It holds private keys: written 0600 like certs/*.key (src/nginx/bundle-dir.ts).
 */
export const CERTIFICATE_PEMS_FILE = 'certificates.pem';

export interface CertificatePem {
  readonly name: string;
  readonly certificatePem: string;
  readonly privateKeyPem: string;
}

const withNewline = (text: string): string => (text.endsWith('\n') ? text : `${text}\n`);

/**
 * Whether a pair can be a section of certificates.pem: no line of it reads "key" or "end". OpenSSL skips such text
 * between PEM blocks, so an operator's file may hold it; that certificate then stays in a file of its own.
 */
export function fitsCertificatePems(pem: Omit<CertificatePem, 'name'>): boolean {
  const lines = `${pem.certificatePem}\n${pem.privateKeyPem}`.split(/\r?\n/);
  return !lines.includes('key') && !lines.includes('end');
}

export function formatCertificatePems(pems: readonly CertificatePem[]): string {
  let text = '';
  let previous: string | null = null;
  for (const pem of [...pems].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
    const lines = `${withNewline(pem.certificatePem)}${withNewline(pem.privateKeyPem)}`.split('\n');
    if (
      !isCertificateName(pem.name) ||
      pem.name === previous ||
      lines.includes('key') ||
      lines.includes('end')
    ) {
      throw new SwarmgateError(
        'ERR_TEMPLATE',
        `${CERTIFICATE_PEMS_FILE}: cannot hold certificate ${pem.name}`,
      );
    }
    previous = pem.name;
    text += `certificate ${pem.name}\n${withNewline(pem.certificatePem)}key\n${withNewline(pem.privateKeyPem)}end\n`;
  }
  return text;
}

export type CertificatePemsParse =
  | { readonly ok: true; readonly pems: ReadonlyMap<string, CertificatePem> }
  | { readonly ok: false; readonly reason: string };

export function parseCertificatePems(text: string): CertificatePemsParse {
  if (text !== '' && !text.endsWith('\n')) return { ok: false, reason: 'does not end with a newline' };
  const pems = new Map<string, CertificatePem>();
  const lines = text === '' ? [] : text.slice(0, -1).split('\n');
  let index = 0;
  let previous: string | null = null;
  while (index < lines.length) {
    const header = /^certificate (\S+)$/.exec(lines[index] ?? '');
    const name = header?.[1];
    if (name === undefined || !isCertificateName(name)) {
      return { ok: false, reason: `line ${index + 1} is not "certificate <name>"` };
    }
    const keyAt = lines.indexOf('key', index + 1);
    const endAt = keyAt < 0 ? -1 : lines.indexOf('end', keyAt + 1);
    if (keyAt < 0 || endAt < 0)
      return { ok: false, reason: `certificate ${name} has no "key" and "end" lines` };
    if (previous !== null && previous >= name) {
      return { ok: false, reason: `certificate ${name} is out of order or repeated` };
    }
    previous = name;
    const section = (from: number, to: number): string => `${lines.slice(from, to).join('\n')}\n`;
    pems.set(name, {
      name,
      certificatePem: section(index + 1, keyAt),
      privateKeyPem: section(keyAt + 1, endAt),
    });
    index = endAt + 1;
  }
  return { ok: true, pems };
}

export interface CertificateEntry {
  /** The host as the TLS client asks for it (SNI): exact, or "*.domain". */
  readonly name: string;
  /** The bundle's certs/<certificate>.crt and .key. */
  readonly certificate: string;
  /** TLS 1.3 only (SSL_POLICY=Mozilla-Modern). */
  readonly tls13Only: boolean;
}

const LABEL = '[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?';
const NAME = new RegExp(`^(?:\\*\\.)?${LABEL}(?:\\.${LABEL})*$`);
const CERTIFICATE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

export function isCertificateName(name: string): boolean {
  return CERTIFICATE.test(name);
}

/** certificates.txt's mark for a name whose server block keeps its own TLS context. */
export const OWN_CONTEXT = '-';

/** A host the Lua can pick a certificate for by the name a client asks for (exact or a leading wildcard). */
export function isCertificateHost(host: string): boolean {
  return host.length <= 253 && NAME.test(host);
}

export function formatCertificates(entries: readonly CertificateEntry[]): string {
  const sorted = [...entries].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  let text = '';
  let previous: string | null = null;
  for (const { name, certificate, tls13Only } of sorted) {
    const own = certificate === OWN_CONTEXT;
    if (
      !isCertificateHost(name) ||
      !(own || isCertificateName(certificate)) ||
      (own && tls13Only) ||
      name === previous
    ) {
      throw new SwarmgateError('ERR_TEMPLATE', `${CERTIFICATES_FILE}: cannot list ${name} → ${certificate}`);
    }
    previous = name;
    text += `${name} ${certificate}${tls13Only ? ' tls1.3' : ''}\n`;
  }
  return text;
}

export type CertificatesParse =
  | { readonly ok: true; readonly entries: readonly CertificateEntry[] }
  | { readonly ok: false; readonly reason: string };

export function parseCertificates(text: string): CertificatesParse {
  if (text !== '' && !text.endsWith('\n')) return { ok: false, reason: 'does not end with a newline' };
  const entries: CertificateEntry[] = [];
  const lines = text === '' ? [] : text.slice(0, -1).split('\n');
  for (const [index, line] of lines.entries()) {
    const parts = line.split(' ');
    const [name, certificate, policy] = parts;
    if (
      parts.length < 2 ||
      parts.length > 3 ||
      name === undefined ||
      certificate === undefined ||
      (policy !== undefined && policy !== 'tls1.3')
    ) {
      return { ok: false, reason: `line ${index + 1} is not "name certificate [tls1.3]"` };
    }
    if (!isCertificateHost(name))
      return { ok: false, reason: `line ${index + 1}: ${name} is not a host name` };
    if (certificate === OWN_CONTEXT ? policy !== undefined : !isCertificateName(certificate)) {
      return { ok: false, reason: `line ${index + 1}: ${certificate} is not a certificate name` };
    }
    const previous = entries.at(-1);
    if (previous && previous.name >= name) {
      return { ok: false, reason: `line ${index + 1}: ${name} is out of order or repeated` };
    }
    entries.push({ name, certificate, tls13Only: policy === 'tls1.3' });
  }
  return { ok: true, entries };
}

// certificates.txt: which certificate each HTTPS host presents, read by the edge's Lua (lua/swarmgate/certificates.lua)
// at every start and reload and used during the TLS handshake (ssl_certificate_by_lua). The host server blocks it
// lists name no certificate file, so nginx loads none of them at a reload: loading 2,000 certificates was most of a
// reload at 2,000 hosts. Each worker reads and parses a certificate at the first handshake for its name and keeps it.
//
// `nginx -t` never runs init_by_lua and never reads these files, so this module is what checks the grammar, on the
// controller after rendering and on the edge before applying; the key pairs themselves are checked by
// src/render/certificate-pairs.ts on both sides.
//
//   certificates.txt = *( name " " certificate [ " tls1.3" ] "\n" )   sorted by name, a name appears once
//   name             = a lowercase DNS name, or "*." and one (a leading wildcard, as in server_name)
//   certificate      = [A-Za-z0-9] *127( A-Z / a-z / 0-9 / "_" / "." / "-" )   the files certs/<certificate>.crt/.key
//   " tls1.3"        = SSL_POLICY=Mozilla-Modern: the Lua allows only TLS 1.3 for this name. It must be set while the
//                      client hello is read: nginx's per-server ssl_protocols comes after OpenSSL chose the version
//                      (with the default server's protocols), so it never refused TLS 1.2 for a host by name.
import { SwarmgateError } from '../errors.ts';

export const CERTIFICATES_FILE = 'certificates.txt';

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

/** A host the Lua can pick a certificate for by the name a client asks for (exact or a leading wildcard). */
export function isCertificateHost(host: string): boolean {
  return host.length <= 253 && NAME.test(host);
}

export function formatCertificates(entries: readonly CertificateEntry[]): string {
  const sorted = [...entries].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  let text = '';
  let previous: string | null = null;
  for (const { name, certificate, tls13Only } of sorted) {
    if (!isCertificateHost(name) || !isCertificateName(certificate) || name === previous) {
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
    if (!isCertificateName(certificate)) {
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

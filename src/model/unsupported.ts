// nginx-proxy and acme-companion settings swarmgate does not honour. A migrated service that carries one gets an
// UNSUPPORTED_SETTING Problem naming what to use instead, so nothing is dropped without a word (issue 14, item 9).
// Security-relevant ones fail closed: the service is left out (error) rather than served without the protection
// its owner asked for.

export interface UnsupportedSetting {
  /** What to do instead, in the Problem's reason. */
  readonly instead: string;
  /** true: the service is left out (error); false: it is routed and warned about. */
  readonly failClosed: boolean;
  /** Values that mean "the default" and so need no word (lower case). */
  readonly harmless?: readonly string[];
}

const NP = 'com.github.nginx-proxy.nginx-proxy.';

/** nginx-proxy's per-container HTTP/3 switch: read as swarmgate.http3 is (routing-model.ts). */
export const NGINX_PROXY_HTTP3_LABEL = `${NP}http3.enable`;
/** com.github.nginx-proxy.* labels swarmgate honours: never reported as unsupported. */
const HONOURED_PREFIXED_LABELS: ReadonlySet<string> = new Set([NGINX_PROXY_HTTP3_LABEL]);

// acme-companion settings that also have a legacy LETSENCRYPT_* name on the container: both names get one entry.
const KEYSIZE: UnsupportedSetting = {
  instead: 'certificates always use ECDSA P-256 keys',
  failClosed: false,
  harmless: ['ec-256'],
};
const SINGLE_DOMAIN_CERTS: UnsupportedSetting = {
  instead: 'one certificate per LETSENCRYPT_HOST list',
  failClosed: false,
  harmless: ['false'],
};
const RESTART_CONTAINER: UnsupportedSetting = {
  instead: 'services are not restarted after a renewal',
  failClosed: false,
  harmless: ['false'],
};

/** Keyed by the exact label or env name; read from service labels and container env like every other label. */
export const UNSUPPORTED_SETTINGS: Readonly<Record<string, UnsupportedSetting>> = {
  // nginx-proxy, per container
  SERVER_TOKENS: {
    instead: 'the edge always hides its version (server_tokens off)',
    failClosed: false,
    harmless: ['off'],
  },
  ENABLE_HTTP_ON_MISSING_CERT: {
    instead: 'a host without a usable certificate is always served over HTTP until its certificate is issued',
    failClosed: false,
    harmless: ['true'],
  },
  ACME_HTTP_CHALLENGE_LOCATION: {
    instead: 'the challenge location is always on and answered by the controller',
    failClosed: false,
    harmless: ['true'],
  },
  EXTERNAL_HTTP_PORT: {
    instead: 'the edge listens on 80; publish another host port for it in the stack file',
    failClosed: false,
    harmless: ['80'],
  },
  // nginx-proxy, container labels
  [`${NP}loadbalance`]: {
    instead:
      'no raw upstream directives; use swarmgate.balance (round_robin, least_conn, hash with swarmgate.balance.key) and swarmgate.sticky',
    failClosed: false,
  },
  [`${NP}keepalive`]: {
    instead: 'SWARMGATE_UPSTREAM_KEEPALIVE on the controller (global)',
    failClosed: false,
  },
  [`${NP}http2.enable`]: { instead: 'HTTP/2 is always on over HTTPS', failClosed: false, harmless: ['true'] },
  [`${NP}non-get-redirect`]: {
    instead: 'SWARMGATE_NON_GET_REDIRECT on the controller (global)',
    failClosed: false,
  },
  [`${NP}trust-default-cert`]: {
    instead: 'a known host never gets the default certificate (as trust-default-cert=false)',
    failClosed: false,
    harmless: ['false'],
  },
  [`${NP}ssl_verify_client`]: {
    instead:
      'client certificates (mTLS) are not supported; protect the route with swarmgate.auth.basic, swarmgate.auth.forward or swarmgate.allow',
    failClosed: true,
    harmless: ['off'],
  },
  [`${NP}debug-endpoint`]: {
    instead: 'GET /v1/status on the admin API',
    failClosed: false,
    harmless: ['false'],
  },
  [`${NP}nginx`]: { instead: 'edges poll the controller; no container is signalled', failClosed: false },
  // nginx-proxy options that belong on the proxy, set on a service by mistake
  DEFAULT_HOST: { instead: 'SWARMGATE_DEFAULT_HOST on the controller', failClosed: false },
  TRUST_DOWNSTREAM_PROXY: {
    instead: 'SWARMGATE_TRUST_DOWNSTREAM_PROXY and SWARMGATE_TRUSTED_PROXIES on the controller',
    failClosed: false,
  },
  // acme-companion, per container
  ACME_CHALLENGE: { instead: 'only HTTP-01 is supported', failClosed: false, harmless: ['http-01'] },
  ACMESH_DNS_API_CONFIG: { instead: 'only HTTP-01 is supported (no DNS-01)', failClosed: false },
  ACME_EAB_KID: { instead: 'External Account Binding is not supported', failClosed: false },
  ACME_EAB_HMAC_KEY: { instead: 'External Account Binding is not supported', failClosed: false },
  ZEROSSL_API_KEY: { instead: 'External Account Binding (ZeroSSL) is not supported', failClosed: false },
  ACME_CERT_PROFILE: { instead: 'ACME profiles are not supported', failClosed: false },
  ACME_KEYSIZE: KEYSIZE,
  LETSENCRYPT_KEYSIZE: KEYSIZE,
  ACME_OCSP: { instead: 'OCSP must-staple is not supported', failClosed: false, harmless: ['false'] },
  ACME_PREFERRED_CHAIN: { instead: "the CA's default chain is used", failClosed: false },
  ACME_RENEW_AFTER: { instead: 'SWARMGATE_ACME_RENEW_PERCENT on the controller (global)', failClosed: false },
  ACME_RENEW_PRIVATE_KEYS: {
    instead: 'a new key is made at every renewal',
    failClosed: false,
    harmless: ['true'],
  },
  ACME_SINGLE_DOMAIN_CERTS: SINGLE_DOMAIN_CERTS,
  LETSENCRYPT_SINGLE_DOMAIN_CERTS: SINGLE_DOMAIN_CERTS,
  ACME_RESTART_CONTAINER: RESTART_CONTAINER,
  LETSENCRYPT_RESTART_CONTAINER: RESTART_CONTAINER,
  ACME_PRE_HOOK: { instead: 'hooks are not run', failClosed: false },
  ACME_POST_HOOK: { instead: 'hooks are not run', failClosed: false },
};

/** Any other com.github.nginx-proxy.* label (acme-companion's included): warned about, never silent. */
export function unsupportedPrefixSetting(key: string): UnsupportedSetting | null {
  if (key.startsWith('com.github.nginx-proxy.') && !HONOURED_PREFIXED_LABELS.has(key)) {
    return {
      instead: 'swarmgate reads no other com.github.nginx-proxy.* label; see docs/migration.md',
      failClosed: false,
    };
  }
  return null;
}

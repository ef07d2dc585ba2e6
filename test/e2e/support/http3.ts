// One GET over HTTP/3 to the lab's edge with the edge image's own curl (Debian trixie's, built with HTTP/3), run
// on the host's network and verifying the edge's certificate against the given root: shared by the HTTP/3 and
// stream e2e tests.
import { docker, E2E_LABEL, EDGE_HTTPS_PORT, IMAGE } from './lab.ts';

export interface Http3Answer {
  readonly ok: boolean;
  /** curl's %{http_version} ("3") and status, or its error. */
  readonly version: string;
  readonly status: number;
  readonly body: string;
  readonly error: string;
}

/** One GET over HTTP/3 only (no fallback to TCP) to the lab edge, with `host` as SNI and authority. */
export async function http3Get(host: string, root: string): Promise<Http3Answer> {
  const script =
    'cat > /tmp/root.pem && exec curl --http3-only -sS -m 10 --cacert /tmp/root.pem --resolve "$1:$2:127.0.0.1" ' +
    '-w "\\n%{http_version} %{http_code}" "https://$1:$2/"';
  try {
    const output = await docker(
      [
        'run',
        '--rm',
        '-i',
        '--label',
        E2E_LABEL,
        '--network',
        'host',
        '--entrypoint',
        'sh',
        IMAGE,
        '-c',
        script,
        'curl-h3',
        host,
        String(EDGE_HTTPS_PORT),
      ],
      { input: root, timeoutMs: 30_000 },
    );
    const lines = output.split('\n');
    const [version = '', status = '0'] = (lines.pop() ?? '').split(' ');
    return { ok: true, version, status: Number(status), body: lines.join('\n'), error: '' };
  } catch (error) {
    return { ok: false, version: '', status: 0, body: '', error: (error as Error).message };
  }
}

// The one place that turns an upstream's balancing settings (swarmgate.balance, swarmgate.sticky) into the Lua the
// config hands lua/swarmgate/balancer.lua (M.configure in init_by_lua). Only validated names reach it, and it checks
// them again before writing them into Lua strings: nothing else from a label is ever Lua.
import { SwarmgateError } from '../errors.ts';
import type { Upstream } from '../model/routing-model.ts';

const LUA_SAFE = /^[A-Za-z0-9_-]{1,80}$/;

function luaString(value: string, upstream: Upstream): string {
  if (!LUA_SAFE.test(value)) {
    throw new SwarmgateError('ERR_TEMPLATE', `balancer setting "${value.slice(0, 80)}" is not a plain name`, {
      service: upstream.service,
    });
  }
  return `"${value}"`;
}

/** The nginx variable the hash method reads: $remote_addr (after real_ip), $http_<header>, $cookie_<name>. */
function keyVariable(upstream: Upstream): string | null {
  const key = upstream.balance.key;
  if (upstream.balance.method !== 'hash' || !key) return null;
  if (key.kind === 'client_ip') return 'remote_addr';
  if (key.kind === 'header') return `http_${key.name.toLowerCase().replace(/-/g, '_')}`;
  return `cookie_${key.name}`;
}

/** How an edge reaches a routed upstream's tasks for its health probes: the Host header and the scheme. */
export interface ProbeTarget {
  /** The first exact host routed to it; null: the task's own address. */
  readonly host: string | null;
  readonly tls: boolean;
}

const HEALTH_PATH = /^\/[A-Za-z0-9._~!$&()*+,;=:@%/?-]{0,255}$/;
// The host names the model accepts (src/model/labels.ts: DNS labels may hold underscores, as Docker's do).
const HOST_NAME = /^[A-Za-z0-9._-]{1,253}$/;

function wholeNumber(value: number, min: number, max: number, what: string, upstream: Upstream): number {
  if (!Number.isSafeInteger(value) || value < min || value > max) {
    throw new SwarmgateError('ERR_TEMPLATE', `${what} ${value} is outside ${min}..${max}`, {
      service: upstream.service,
    });
  }
  return value;
}

/** The health table the checker in lua/swarmgate/health.lua reads, or null when the upstream has no checks. */
function healthOptions(upstream: Upstream, probe: ProbeTarget | null): string | null {
  const health = upstream.health;
  if (!health || !probe) return null;
  const bad = (what: string): never => {
    throw new SwarmgateError('ERR_TEMPLATE', `health check ${what} is not plain`, {
      service: upstream.service,
    });
  };
  if (!HEALTH_PATH.test(health.path)) bad('path');
  if (probe.host !== null && !HOST_NAME.test(probe.host)) bad('host');
  const interval = wholeNumber(health.intervalMs, 1000, 60_000, 'interval', upstream);
  const timeout = wholeNumber(health.timeoutMs, 100, interval - 1, 'timeout', upstream);
  const status = health.status
    .flatMap(([low, high]) => [
      wholeNumber(low, 100, 599, 'status', upstream),
      wholeNumber(high, low, 599, 'status', upstream),
    ])
    .join(', ');
  const fields = [
    `path = "${health.path}"`,
    ...(probe.host === null ? [] : [`host = "${probe.host}"`]),
    `tls = ${probe.tls ? 'true' : 'false'}`,
    `interval_ms = ${interval}`,
    `timeout_ms = ${timeout}`,
    `status = { ${status} }`,
    `fails = ${wholeNumber(health.fails, 1, 10, 'fails', upstream)}`,
    `passes = ${wholeNumber(health.passes, 1, 10, 'passes', upstream)}`,
  ];
  return `{ ${fields.join(', ')} }`;
}

/**
 * The Lua table literal of an upstream's settings, or null for plain round robin without health checks (nothing to
 * configure: its requests take the balancer's fast path). Health checks only for an upstream a location routes to
 * (`probe`): an edge never probes tasks it does not send requests to.
 */
export function balancerOptions(upstream: Upstream, probe: ProbeTarget | null = null): string | null {
  const { method, sticky } = upstream.balance;
  const health = healthOptions(upstream, probe);
  if (method === 'round_robin' && !sticky && !health) return null;
  const fields: string[] = [];
  if (method !== 'round_robin') fields.push(`method = ${luaString(method, upstream)}`);
  const variable = keyVariable(upstream);
  if (variable) fields.push(`key_var = ${luaString(variable, upstream)}`);
  if (sticky) {
    fields.push(`sticky_var = ${luaString(`cookie_${sticky.cookie}`, upstream)}`);
    fields.push(`cookie = ${luaString(sticky.cookie, upstream)}`);
    if (sticky.maxAge !== null) {
      if (!Number.isSafeInteger(sticky.maxAge) || sticky.maxAge < 1) {
        throw new SwarmgateError(
          'ERR_TEMPLATE',
          `sticky max-age ${sticky.maxAge} is not a positive integer`,
          {
            service: upstream.service,
          },
        );
      }
      fields.push(`max_age = ${sticky.maxAge}`);
    }
  }
  if (health) fields.push(`health = ${health}`);
  return `{ ${fields.join(', ')} }`;
}

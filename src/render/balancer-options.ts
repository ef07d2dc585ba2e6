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

/**
 * The Lua table literal of an upstream's settings, or null for plain round robin (nothing to configure: its
 * requests take the balancer's fast path).
 */
export function balancerOptions(upstream: Upstream): string | null {
  const { method, sticky } = upstream.balance;
  if (method === 'round_robin' && !sticky) return null;
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
  return `{ ${fields.join(', ')} }`;
}

// The stream balancer (nginx's stream module, njs): picks a task for each new TCP connection of a TCP port
// (swarmgate.tcp.port) or a TLS passthrough name (swarmgate.tls.passthrough).
//
// Debian has no Lua for nginx's stream module, so this cannot share lua/swarmgate/balancer.lua. It reads the task
// addresses from stream-peers.txt (peers.txt's grammar, src/render/peers-text.ts) under the config's prefix, which
// is the edge's `current` link: the agent swaps it to each new bundle in one rename, also when only task addresses
// changed, so a new connection sees the tasks of the last applied bundle and nginx is never reloaded for them.
//
// The choice is uniform at random among the upstream's members. njs keeps no state between connections (each gets
// a fresh VM), and the shared dictionary that would hold a round-robin counter needs njs 0.8 (Debian 12 has 0.7.9);
// nginx's connection number is no counter to use either: a proxied connection takes two numbers and HTTP traffic
// takes others in between.
import fs from 'fs';

const FILE = 'stream-peers.txt';

/** The "ip:port" members of one upstream; [] when the file or the upstream is missing. */
function members(name) {
  let text;
  try {
    text = fs.readFileSync(ngx.conf_prefix + FILE, 'utf8');
  } catch (e) {
    return [];
  }
  let start = text.indexOf('\nupstream ' + name + ' ');
  if (start < 0) return [];
  start += '\nupstream '.length + name.length + 1;
  let end = text.indexOf('\n', start);
  if (end < 0) end = text.length;
  return text
    .slice(start, end)
    .split(' ')
    .filter((member) => member !== '');
}

function pick(s, name) {
  const list = members(name);
  if (list.length === 0) {
    // An empty answer makes nginx close the connection (and log it): the service has no running task.
    s.warn('swarmgate: no running task for ' + name);
    return '';
  }
  return list[Math.floor(Math.random() * list.length)];
}

/** js_set $swarmgate_tcp_peer: the upstream of the port the client connected to. */
function tcp(s) {
  return pick(s, 'tcp_' + s.variables.server_port);
}

/** js_set $swarmgate_tls_peer: the upstream the SNI map chose for this connection. */
function tls(s) {
  return pick(s, s.variables.swarmgate_tls_upstream);
}

export default { tcp, tls };

-- Certificates picked during the TLS handshake, when the client's hello names the host (ssl_client_hello_by_lua in
-- the default server of port 443). Ships in the image beside balancer.lua and is never part of a bundle.
--
-- Why: nginx loads every ssl_certificate of every server block at each start and reload, in the master, before the
-- new workers start. At 2,000 hosts that was most of the time between a new host's bundle and the new host being
-- served. The hosts listed in certificates.txt have no certificate and no TLS context of their own: nginx keeps the
-- default server's context for their handshakes, and this module puts the host's own certificate and key on the
-- connection as soon as the client hello names it. The client hello callback runs in the default server, before
-- nginx picks the server by name; ssl_certificate_by_lua would run in the picked server, which then needs a TLS
-- context of its own (the cost this avoids). A host with a context of its own (TLS 1.3 only, HTTP/3) replaces
-- whatever is set here with its own certificate when nginx picks it.
--
-- The bundle is checked before nginx loads it: certificates.txt with the same grammar in TypeScript
-- (src/render/certificates-text.ts), and every pair (the certificate parses, the key parses and belongs to it) by the
-- controller and again by the edge agent (src/render/certificate-pairs.ts). If a pair still fails here, that host's
-- handshakes fail and the error log names the certificate; no other host is touched.
local ssl = require("ngx.ssl")
local clienthello = require("ngx.ssl.clienthello")

local M = {}

-- Host (exact or "*.domain") -> certificate name, or false for a name with a TLS context of its own, from certificates.txt: read in the master at start and reload, so
-- every worker inherits it.
local hosts = {}
-- Certificate name -> { chain PEM, key PEM }, from certificates.pem.
local pems = {}
-- Hosts with SSL_POLICY=Mozilla-Modern: TLS 1.3 only.
local modern = {}
-- Per worker: certificate name -> { chain, key } (cdata parsed by ngx.ssl), or false after a failure (logged once).
local parsed = {}

local function read_file(path)
  local file, err = io.open(path, "rb")
  if not file then
    return nil, err
  end
  local text = file:read("*a")
  file:close()
  return text
end

-- certificates.pem: "certificate <name>\n" <chain PEM> "key\n" <key PEM> "end\n", per certificate.
local function split_pems(text)
  local texts = {}
  local position = 1
  while position <= #text do
    local name, chain_pem, key_pem, after = text:match("^certificate ([%w][%w_%.%-]*)\n(.-\n)key\n(.-\n)end\n()", position)
    if not name then
      return nil, "not a certificate section at byte " .. position
    end
    texts[name] = { chain_pem, key_pem }
    position = after
  end
  return texts
end

M.split_pems = split_pems

-- Master process, at every start and reload: the host table and the PEM text of every certificate it names. The
-- master reads them (as root) because certificates.pem holds the keys and is readable by root only, as with
-- ssl_certificate; the workers inherit the text and parse a certificate at its first handshake. An error fails the
-- start or the reload (not `nginx -t`, which skips init_by_lua), so nginx keeps running the previous config.
function M.load(bundle_dir)
  local text, err = read_file(bundle_dir .. "certificates.txt")
  if not text then
    error("swarmgate: cannot read certificates.txt: " .. tostring(err))
  end
  local pem_text
  pem_text, err = read_file(bundle_dir .. "certificates.pem")
  if not pem_text then
    error("swarmgate: cannot read certificates.pem: " .. tostring(err))
  end
  local texts
  texts, err = split_pems(pem_text)
  if not texts then
    error("swarmgate: certificates.pem: " .. err)
  end
  local loaded, tls13 = {}, {}
  for line in text:gmatch("([^\n]*)\n") do
    local host, name, policy = line:match("^([%w%.%*%-]+) ([%w_%.%-]+)( ?[%w%.]*)$")
    if not host or (policy ~= "" and policy ~= " tls1.3") or not (name == "-" or name:match("^%w")) then
      error("swarmgate: certificates.txt: not \"host certificate [tls1.3]\": " .. line)
    end
    if name == "-" then
      -- The name's server block has a TLS context of its own: nginx sets its certificate and protocols.
      name = false
    elseif not texts[name] then
      error("swarmgate: certificates.txt names certificate " .. name .. ", which certificates.pem lacks")
    end
    loaded[host] = name
    if policy ~= "" then
      tls13[host] = true
    end
  end
  hosts = loaded
  pems = texts
  modern = tls13
end

-- The name as nginx reads the client's server name before it looks for a server (ngx_http_validate_host): nothing
-- from the first ":" on, lower case, one trailing dot dropped; "..", "/", a space or a control character make it no
-- name (nginx then keeps the default server; an IPv6 literal is never a host here). Any other reading could leave a name that nginx gives a host's server block unmatched here,
-- and the handshake would go on with the default server's placeholder certificate.
local function nginx_name(name)
  if name:find("[/%c ]") or name:find("..", 1, true) or name:sub(1, 1) == "[" then
    return nil
  end
  local colon = name:find(":", 1, true)
  if colon then
    name = name:sub(1, colon - 1)
  end
  name = name:lower()
  if name:sub(-1) == "." then
    name = name:sub(1, -2)
  end
  if name == "" then
    return nil
  end
  return name
end
M.nginx_name = nginx_name

-- The certificate of the server nginx picked for this name: an exact host first, then the longest leading wildcard,
-- as nginx's server_name does. false: that server has a TLS context of its own (nginx's business), nil: none.
local function certificate_for(server_name)
  local name = hosts[server_name]
  if name ~= nil then
    return name, server_name
  end
  local dot = server_name:find(".", 1, true)
  while dot do
    local wildcard = "*" .. server_name:sub(dot)
    name = hosts[wildcard]
    if name ~= nil then
      return name, wildcard
    end
    dot = server_name:find(".", dot + 1, true)
  end
  return nil
end
M.certificate_for = certificate_for

local function parse_pair(name)
  local texts = pems[name]
  if not texts then
    return nil, "not loaded"
  end
  local chain, err = ssl.parse_pem_cert(texts[1])
  if not chain then
    return nil, "certificate: " .. tostring(err)
  end
  local key
  key, err = ssl.parse_pem_priv_key(texts[2])
  if not key then
    return nil, "key: " .. tostring(err)
  end
  return { chain = chain, key = key }
end

-- A certificate of certificates.pem, parsed in this worker at its first use; nil (logged once) when it cannot be.
local function pair_of(name, server_name)
  local pair = parsed[name]
  if pair == nil then
    local err
    pair, err = parse_pair(name)
    if not pair then
      ngx.log(ngx.ERR, "swarmgate: cannot use certificate ", name, " for ", server_name, ": ", err)
      pair = false
    end
    parsed[name] = pair
  end
  return pair or nil
end
M.pair = pair_of

local function put_pair(pair, name, server_name)
  local ok, err = ssl.clear_certs()
  if ok then
    ok, err = ssl.set_cert(pair.chain)
  end
  if ok then
    ok, err = ssl.set_priv_key(pair.key)
  end
  if not ok then
    ngx.log(ngx.ERR, "swarmgate: cannot set certificate ", name, " for ", server_name, ": ", err)
    return ngx.exit(ngx.ERROR)
  end
end

-- ssl_client_hello_by_lua. A name that is not in certificates.txt keeps the default server's own certificate (the
-- default host's, or SWARMGATE_DEFAULT_CERT's), or nginx refuses the handshake right after this (no server
-- by that name, ssl_reject_handshake), or the host's own context replaces it.
--
-- `known_only` (early routing on 443, where certificates.txt names every server of the port): a client hello without
-- a name, or with a name that is neither in certificates.txt nor an early host, is refused here. Only this callback
-- runs on every client hello, a resumed session's too: OpenSSL looks the offered session up (in the default server's
-- cache, against the default server's session context) before nginx picks the server by name, and a resumed session
-- skips the certificate callbacks, so neither the catch-all's ssl_certificate_by_lua nor the default server's
-- ssl_reject_handshake could refuse a session that a host of the port handed out (TLS 1.2 even picks the server by
-- the name the session was made for).
function M.select(known_only)
  local server_name = clienthello.get_client_hello_server_name()
  server_name = server_name and nginx_name(server_name)
  if not server_name then
    if known_only then
      return ngx.exit(ngx.ERROR)
    end
    return
  end
  local name, host = certificate_for(server_name)
  if name == nil and known_only then
    local early = package.loaded["swarmgate.early"]
    if not (early and early.has_certificate(server_name)) then
      return ngx.exit(ngx.ERROR)
    end
  end
  if not name then
    return
  end
  if modern[host] then
    local ok, err = clienthello.set_protocols({ "TLSv1.3" })
    if not ok then
      ngx.log(ngx.ERR, "swarmgate: cannot limit ", server_name, " to TLS 1.3: ", err)
      return ngx.exit(ngx.ERROR)
    end
  end
  local pair = pair_of(name, server_name)
  if not pair then
    return ngx.exit(ngx.ERROR)
  end
  return put_pair(pair, name, server_name)
end

-- ssl_certificate_by_lua of the server that takes every name no other server block of 443 takes, when early routing
-- is on (lua/swarmgate/early.lua): a host in the early table gets its certificate, any other name is refused, as
-- ssl_reject_handshake refuses unknown names in the default server.
function M.early_server()
  local server_name = ssl.server_name()
  server_name = server_name and nginx_name(server_name)
  local early = package.loaded["swarmgate.early"]
  if server_name and early then
    local name, pair = early.certificate(server_name)
    if pair then
      return put_pair(pair, name, server_name)
    end
  end
  return ngx.exit(ngx.ERROR)
end

return M

-- Early routing: a new host served by the catch-all servers of ports 80 and 443 from the moment its bundle reaches the
-- edge until the reload that gives it a server block of its own. Ships in the image beside balancer.lua and is never
-- part of a bundle.
--
-- Why: at 2,000 hosts an edge spends about half a second on `nginx -t` and the reload of a new bundle, and a new host
-- waited for both. The controller lists in early-hosts.txt the hosts whose server block the catch-all servers' generic
-- location reproduces exactly (src/render/early-hosts-text.ts says which); the edge agent posts the new or changed
-- ones, their task addresses and the certificates nginx does not hold yet to POST /early before it tests the bundle,
-- and empties the table once the reload is done (or failed). Every host in the table is also in the bundle's
-- nginx.conf, which `nginx -t` checked on the controller: the table only serves a host's first requests sooner.
-- Names with a server block in the running config never reach the catch-all servers, so the table never changes how
-- they are served.
--
-- POST /early body (lines):
--   host TAB service TAB upstream TAB http TAB certificate TAB https-port TAB hsts     (early-hosts.txt's grammar)
--   "upstream " name *( " " ipv4 ":" port [ "@" weight ] )                            (peers.txt's grammar)
--   then certificates.pem sections ("certificate <name>" ... "key" ... "end")
-- An empty body empties the table. The table is bound to the config that took it (refresh()).
local M = {}

local DICT = "swarmgate_early"

-- Per worker: the table of the last post, parsed again when the serial moves.
local seen_serial = false
local hosts, upstreams, pems, parsed = {}, {}, {}, {}

local HTTP_MODES = { serve = true, redirect = true, refuse = true }

local function host_entry(line)
  local host, service, upstream, http, certificate, port, hsts =
    line:match("^([^\t]+)\t([^\t]+)\t([^\t]+)\t([^\t]+)\t([^\t]+)\t([^\t]+)\t([^\t]+)$")
  if not host then
    return nil, "not 7 fields"
  end
  if #host > 253 or not host:match("^[a-z0-9][a-z0-9%.%-]*$") or host:find("..", 1, true) then
    return nil, "not an exact host name"
  end
  if #service > 63 or not service:match("^[%w][%w_%.%-]*$") then
    return nil, "not a service name"
  end
  if #upstream > 64 or not upstream:match("^[%w_]+$") then
    return nil, "not an upstream name"
  end
  if not HTTP_MODES[http] then
    return nil, "not serve, redirect or refuse"
  end
  if certificate == "-" then
    certificate = nil
    if http ~= "serve" then
      return nil, "no HTTPS and no HTTP"
    end
  elseif #certificate > 128 or not certificate:match("^[%w][%w_%.%-]*$") then
    return nil, "not a certificate name"
  end
  if port == "-" then
    port = nil
  elseif not port:match("^[1-9]%d?%d?%d?%d?$") or tonumber(port) > 65535 then
    return nil, "not a port"
  end
  if hsts == "-" then
    hsts = nil
  elseif #hsts > 200 or not hsts:match("^[%w=;][%w=; %-]*$") then
    return nil, "not an HSTS value"
  end
  return {
    host = host, service = service, upstream = upstream, http = http,
    certificate = certificate, port = port, hsts = hsts,
  }
end

-- The body as tables: hosts by name, upstreams (balancer members) by name, certificate PEM texts by name.
local function parse(text)
  local parsed_hosts, peer_lines = {}, {}
  local position = 1
  local pem_text = ""
  local number = 0
  while position <= #text do
    local newline = text:find("\n", position, true)
    if not newline then
      return nil, "does not end with a newline"
    end
    local line = text:sub(position, newline - 1)
    number = number + 1
    if line:sub(1, 12) == "certificate " then
      pem_text = text:sub(position)
      break
    elseif line:sub(1, 9) == "upstream " then
      peer_lines[#peer_lines + 1] = line
    else
      local entry, err = host_entry(line)
      if not entry then
        return nil, "line " .. number .. ": " .. err
      end
      if parsed_hosts[entry.host] then
        return nil, "line " .. number .. ": " .. entry.host .. " appears twice"
      end
      parsed_hosts[entry.host] = entry
    end
    position = newline + 1
  end
  -- The members with the balancer's own parser (peers.txt: a generation line, then the upstreams).
  local _, parsed_upstreams = swarmgate.parse(
    "generation " .. string.rep("0", 64) .. "\n" .. table.concat(peer_lines, "\n") .. (#peer_lines > 0 and "\n" or "")
  )
  if type(parsed_upstreams) ~= "table" then
    return nil, parsed_upstreams
  end
  local parsed_pems = {}
  if pem_text ~= "" then
    local err
    parsed_pems, err = require("swarmgate.certificates").split_pems(pem_text)
    if not parsed_pems then
      return nil, err
    end
  end
  return parsed_hosts, parsed_upstreams, parsed_pems
end

-- The table belongs to the config that took the post (its peers generation, stored beside it): a worker of any
-- other config, such as the reload's new workers, which serve the hosts from their own server blocks, ignores it.
-- So no table outlives the config it was posted to, even when the agent's clear never arrives.
local function refresh()
  local dict = ngx.shared[DICT]
  local serial = dict:get("serial")
  if serial == seen_serial then
    return
  end
  seen_serial = serial
  local text = dict:get("early") or ""
  if dict:get("generation") ~= swarmgate.generation then
    text = ""
  end
  local parsed_hosts, parsed_upstreams, parsed_pems = parse(text)
  if not parsed_hosts then
    -- update() stored only what parsed: nothing to route then.
    parsed_hosts, parsed_upstreams, parsed_pems = {}, {}, {}
  end
  hosts, upstreams, pems, parsed = parsed_hosts, parsed_upstreams, parsed_pems, {}
end

-- rewrite_by_lua of the catch-all servers' location. `non_get`: the status that moves other methods than GET and
-- HEAD to HTTPS (as the hosts' own port-80 blocks); `https`: whether this config serves early hosts on 443 too.
-- `counts`: traffic counting is on ($swarmgate_service exists only then).
function M.route(non_get, https, counts)
  refresh()
  local var = ngx.var
  local host = var.host
  local entry = hosts[host]
  if not entry then
    return ngx.exit(503)
  end
  -- Counted under the host from here on, as in its own server block (a redirect or a refusal with no service).
  var.swarmgate_early_host = host
  if var.scheme == "https" then
    if not entry.certificate then
      return ngx.exit(503)
    end
    if entry.hsts then
      var.swarmgate_early_hsts = entry.hsts
    end
  elseif entry.http == "refuse" or (entry.http == "redirect" and not https) then
    return ngx.exit(503)
  elseif entry.http == "redirect" then
    local method = ngx.req.get_method()
    local status = (method == "GET" or method == "HEAD") and 301 or non_get
    return ngx.redirect("https://" .. host .. (entry.port and ":" .. entry.port or "") .. var.request_uri, status)
  end
  var.swarmgate_early_upstream = entry.upstream
  if counts then
    var.swarmgate_service = entry.service
  end
end

-- balancer_by_lua of upstream swarmgate_early: the table's members of the upstream route() chose.
function M.balance()
  refresh()
  local name = ngx.var.swarmgate_early_upstream
  return swarmgate.balance(name, upstreams[name])
end

-- For the client hello (certificates.lua's select): whether the table holds this exact host with a certificate, the
-- names the catch-all server of 443 serves. Cheap: the pair is parsed when the catch-all asks for it.
function M.has_certificate(server_name)
  refresh()
  local entry = hosts[server_name]
  return entry ~= nil and entry.certificate ~= nil
end

-- For the TLS handshake (certificates.lua's early_server): the certificate name and parsed pair of an early host,
-- from the post or, when the running nginx holds that certificate already, from certificates.pem.
function M.certificate(server_name)
  refresh()
  local entry = hosts[server_name]
  if not entry or not entry.certificate then
    return nil
  end
  local name = entry.certificate
  local pair = parsed[name]
  if pair == nil then
    local texts = pems[name]
    if texts then
      local ssl = require("ngx.ssl")
      local chain, key, err
      chain, err = ssl.parse_pem_cert(texts[1])
      if chain then
        key, err = ssl.parse_pem_priv_key(texts[2])
      end
      if chain and key then
        pair = { chain = chain, key = key }
      else
        ngx.log(ngx.ERR, "swarmgate: cannot use certificate ", name, " for ", server_name, ": ", tostring(err))
        pair = false
      end
    else
      pair = require("swarmgate.certificates").pair(name, server_name) or false
    end
    parsed[name] = pair
  end
  return name, pair or nil
end

-- POST /early on the local socket: the table (checked whole, stored whole, or refused with 400). GET: the table.
function M.update()
  local dict = ngx.shared[DICT]
  if ngx.req.get_method() == "GET" then
    ngx.header["Content-Type"] = "text/plain"
    ngx.print(dict:get("early") or "")
    return
  end
  ngx.req.read_body()
  local text = ngx.req.get_body_data() or ""
  if text == "" and ngx.req.get_body_file() then
    ngx.status = 400
    ngx.say("the body must be in memory (client_body_buffer_size)")
    return
  end
  local parsed_hosts, err = parse(text)
  if not parsed_hosts then
    ngx.status = 400
    ngx.say(err)
    return
  end
  local ok, set_err = dict:set("early", text)
  if ok then
    ok, set_err = dict:set("generation", swarmgate.generation)
  end
  if not ok then
    dict:delete("early")
    dict:incr("serial", 1, 0)
    ngx.status = 507
    ngx.say("cannot store the table: ", set_err)
    return
  end
  dict:incr("serial", 1, 0)
  ngx.status = 204
end

return M

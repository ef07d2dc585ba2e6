-- The edge's Lua balancer (lua-nginx-module, Debian's libnginx-mod-http-lua). It ships in the image
-- (/app/lua, found through lua_package_path) and is never part of a bundle: a bundle carries data only.
--
-- Task addresses live in peers.txt beside nginx.conf, not in the upstream blocks. When only they change
-- (scaling, a rolling update), the edge agent posts the new peers.txt to /peers on the local socket and
-- nginx is not reloaded: a reload makes the old workers close every idle keep-alive client connection,
-- and a client that sends a request on one at that moment sees the connection reset.
--
-- nginx -t never runs init_by_lua, so the controller and the edge check peers.txt with the same grammar in
-- TypeScript (src/render/peers-text.ts) before nginx ever loads it; test/support/peers-cases.ts holds the
-- table of inputs both must agree on.
local balancer = require("ngx.balancer")

local M = {}

-- A member that failed is skipped for 0.1 s, doubling with each failure up to 2 s; a failure more than
-- 4 s after the last one starts again at 0.1 s. A new task whose app is not listening yet is tried
-- again soon (nginx's max_fails=1 fail_timeout=2s would bench it for 2 s); a dead one is left alone.
local FAIL_MIN, FAIL_MAX, FAIL_FORGIVEN = 0.1, 2, 4
local MAX_TRIES = 3

local function split(text, separator)
  local fields, start = {}, 1
  while true do
    local at = text:find(separator, start, true)
    if not at then
      fields[#fields + 1] = text:sub(start)
      return fields
    end
    fields[#fields + 1] = text:sub(start, at - 1)
    start = at + 1
  end
end

local function decimal(digits, max)
  return #digits <= #tostring(max) and not (#digits > 1 and digits:sub(1, 1) == "0")
    and tonumber(digits) <= max
end

local function parse_member(token)
  local a, b, c, d, port = token:match("^(%d+)%.(%d+)%.(%d+)%.(%d+):(%d+)$")
  if not a then
    return nil
  end
  for _, octet in ipairs({ a, b, c, d }) do
    if not decimal(octet, 255) then
      return nil
    end
  end
  if not decimal(port, 65535) or tonumber(port) < 1 then
    return nil
  end
  local host = a .. "." .. b .. "." .. c .. "." .. d
  return { host = host, port = tonumber(port), key = host .. ":" .. port }
end

-- peers.txt = "generation " 64 lowercase hex "\n" *( "upstream " name *( " " ipv4 ":" port ) "\n" ).
-- Anything else is refused whole: a file that half parses would route some services to nothing.
function M.parse(text)
  if type(text) ~= "string" or text:sub(-1) ~= "\n" then
    return nil, "peers.txt does not end with a newline"
  end
  local lines = split(text:sub(1, -2), "\n")
  local generation = lines[1]:match("^generation ([0-9a-f]+)$")
  if not generation or #generation ~= 64 then
    return nil, "the first line is not \"generation <64 hex digits>\""
  end
  local upstreams = {}
  for index = 2, #lines do
    local tokens = split(lines[index], " ")
    local where = "line " .. index
    if tokens[1] ~= "upstream" or #tokens < 2 then
      return nil, where .. " is not \"upstream <name> ...\""
    end
    local name = tokens[2]
    if #name > 64 or not name:match("^[A-Za-z0-9_]+$") then
      return nil, where .. ": not an upstream name"
    end
    if upstreams[name] then
      return nil, where .. ": upstream " .. name .. " appears twice"
    end
    local peers = {}
    for position = 3, #tokens do
      local peer = parse_member(tokens[position])
      if not peer then
        return nil, where .. ": not <IPv4>:<port>"
      end
      peers[#peers + 1] = peer
    end
    upstreams[name] = peers
  end
  return generation, upstreams
end

local parse = M.parse

-- Master process, at every start and reload: the peers of the config being loaded. An error here fails
-- the start and the reload (but not `nginx -t`, which skips init_by_lua).
function M.load(path)
  local file, err = io.open(path, "r")
  if not file then
    error("swarmgate: cannot read " .. path .. ": " .. tostring(err))
  end
  local text = file:read("*a")
  file:close()
  local generation, upstreams = parse(text)
  if not generation then
    error("swarmgate: " .. path .. ": " .. upstreams)
  end
  M.generation = generation
  M.configured = upstreams
  M.active = upstreams
  -- Peers posted before this load are never newer than the file (the agent writes the file first), and
  -- the same shape can come back (a service removed and created again): drop them.
  local dict = ngx.shared.swarmgate_peers
  dict:delete("peers")
  dict:incr("serial", 1, 0)
end

-- Per worker: peers posted for this config's generation win over the ones it was loaded with. Workers
-- of an older config (still finishing requests after a reload) keep their own.
local seen_serial = nil
local next_index = {}
local failures = {}

local function record_failure(key, now)
  local failure = failures[key]
  if not failure or now - failure.last > FAIL_FORGIVEN then
    failure = { count = 0 }
    failures[key] = failure
  end
  failure.count = failure.count + 1
  failure.last = now
  failure.skip_until = now + math.min(FAIL_MAX, FAIL_MIN * 2 ^ (failure.count - 1))
end

local function skipped(key, now)
  local failure = failures[key]
  return failure ~= nil and failure.skip_until > now
end

local function active_upstreams()
  local dict = ngx.shared.swarmgate_peers
  local serial = dict:get("serial")
  if serial ~= seen_serial then
    seen_serial = serial
    local text = dict:get("peers")
    local generation, upstreams
    if text then
      generation, upstreams = parse(text)
    end
    M.active = (generation == M.generation) and upstreams or M.configured
    -- Forget failures of members that are gone, so a long-lived edge does not collect them.
    local kept = {}
    for _, peers in pairs(M.active) do
      for _, peer in ipairs(peers) do
        kept[peer.key] = failures[peer.key]
      end
    end
    failures = kept
  end
  return M.active
end

-- balancer_by_lua: round robin over the members; a retry (proxy_next_upstream) marks the member that
-- failed and moves to one not tried yet for this request.
function M.balance(name)
  local peers = active_upstreams()[name] or M.configured[name]
  local count = peers and #peers or 0
  if count == 0 then
    ngx.log(ngx.ERR, "swarmgate: upstream ", name, " has no members")
    return ngx.exit(ngx.ERROR)
  end
  local ctx = ngx.ctx
  local now = ngx.now()
  local tried = ctx.swarmgate_tried
  if tried then
    record_failure(ctx.swarmgate_last, now)
  else
    tried = {}
    ctx.swarmgate_tried = tried
    if count > 1 then
      balancer.set_more_tries(math.min(count, MAX_TRIES) - 1)
    end
  end
  local start = next_index[name] or 0
  local chosen, fallback
  for step = 1, count do
    local index = (start + step - 1) % count + 1
    local peer = peers[index]
    if not tried[peer.key] then
      if not skipped(peer.key, now) then
        chosen = peer
        next_index[name] = index
        break
      end
      fallback = fallback or peer
    end
  end
  -- Every member failed lately: try one anyway rather than answer 502 without trying.
  chosen = chosen or fallback or peers[start % count + 1]
  tried[chosen.key] = true
  ctx.swarmgate_last = chosen.key
  local ok, err = balancer.set_current_peer(chosen.host, chosen.port)
  if not ok then
    ngx.log(ngx.ERR, "swarmgate: cannot use ", chosen.key, ": ", err)
  end
end

-- POST /peers on the local socket: a new peers.txt for the running config. 409 when this worker runs
-- another generation (right after a reload an old worker may still answer): the agent asks again.
-- GET /peers: what the answering worker routes to, in peers.txt form (the agent reads it to confirm a reload).
function M.update()
  if ngx.req.get_method() == "GET" then
    local upstreams = active_upstreams()
    local names = {}
    for name in pairs(upstreams) do
      names[#names + 1] = name
    end
    table.sort(names)
    ngx.say("generation ", M.generation)
    for _, name in ipairs(names) do
      local keys = {}
      for _, peer in ipairs(upstreams[name]) do
        keys[#keys + 1] = " " .. peer.key
      end
      ngx.say("upstream ", name, table.concat(keys))
    end
    return
  end
  ngx.req.read_body()
  local text = ngx.req.get_body_data()
  if not text then
    ngx.status = 400
    ngx.say("the body must be peers.txt, in memory (client_body_buffer_size)")
    return
  end
  local generation, err = parse(text)
  if not generation then
    ngx.status = 400
    ngx.say(err)
    return
  end
  if generation ~= M.generation then
    ngx.status = 409
    ngx.say("this worker runs generation ", M.generation)
    return
  end
  local ok, set_err = ngx.shared.swarmgate_peers:set("peers", text)
  if not ok then
    ngx.status = 507
    ngx.say("cannot store the peers: ", set_err)
    return
  end
  ngx.shared.swarmgate_peers:incr("serial", 1, 0)
  ngx.status = 204
end

return M

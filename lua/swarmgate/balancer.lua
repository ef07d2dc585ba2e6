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
local bit = require("bit")

local get_last_failure = balancer.get_last_failure

local M = {}

-- Failures are known to every worker of the edge (lua_shared_dict swarmgate_failures, keyed by task address):
-- the first worker that sees a task refuse or time out makes all of them skip it, so a stopped task or a dead
-- node costs the edge one failed try, not one per worker.
--
-- A member that refused (an error: a task that stopped, or whose app is not listening yet) is skipped for
-- 0.1 s, doubling with each failure up to 2 s; a failure more than 4 s after its backoff ended starts again
-- at 0.1 s. A new task whose app is not listening yet is tried again soon (nginx's max_fails=1
-- fail_timeout=2s would bench it for 2 s). A member that timed out (a dead node drops packets: every try
-- costs a whole connect timeout) is skipped for 1 s doubling to 8 s. Failing again while skipped (requests
-- already under way) keeps the backoff without doubling it.
--
-- When a refused member's backoff ends, the next request simply tries it: a refusal costs under a millisecond.
-- When a timed-out member's backoff ends, no request tries it: a visitor would wait the whole connect timeout if
-- it is still dead, at the end of every backoff, on every edge (4.4 % of the requests through the surviving edges
-- were over 0.5 s until Swarm marked a lost node down, half of them these tries; 2.3 % since). Instead the first
-- request that finds the backoff over starts a probe in the background (a timer of this worker: a TCP connect
-- with nginx's connect timeout) and skips the member as still timed out, as every request does until the probe
-- knows. A probe that connects makes the member fit again for every worker; one that fails sets the next,
-- doubled, backoff, as a visitor's failure would. So a dead task slows only the requests an edge sends it at first
-- contact (before the first of them times out), and none after.
local KIND_ERROR, KIND_TIMEOUT = 0, 1
local BACKOFF = {
  [KIND_ERROR] = { first = 0.1, max = 2, forgiven = 4 },
  [KIND_TIMEOUT] = { first = 1, max = 8, forgiven = 16 },
}
-- Tries per request. A refused connection costs well under a millisecond, so a request may try every member
-- (up to MAX_TRIES, proxy_next_upstream_tries in nginx.conf being the same). A timeout costs the whole connect
-- timeout, so a request stops after MAX_TIMEOUTS of them. Dead members come in runs: a scale-down while the
-- controller is away removes the last slots, whose addresses sit side by side in the list. So the try after a
-- timeout starts half the list away from the member that timed out, not next to it (with the next member, two
-- timeouts in a row were a 504 in the multi-node bench).
local MAX_TRIES = 24
-- A probe of a timed-out member holds the member's "probe <address>" entry while it runs (one probe per member for
-- the whole edge, so probes are bounded by the members that timed out, well under lua_max_pending_timers), and
-- frees it when done. The entry also expires on its own, PROBE_SLACK after the connect timeout, should the probe
-- never end (its worker killed): then another request starts one.
local PROBE_SLACK = 1
local MAX_TIMEOUTS = 3
-- When every member refused (a lone new task whose app is still starting), an idempotent request waits
-- WAIT_STEP on the edge's wait socket and tries again, at most MAX_WAITS times (1 s in all), instead of a 502.
local WAIT_STEP = 0.1
local MAX_WAITS = 10
local WAIT = "wait"
-- nginx never resends these once sent (proxy_next_upstream without non_idempotent); a wait would send them.
local NON_IDEMPOTENT = { POST = true, LOCK = true, PATCH = true }

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

local MAX_WEIGHT = 1000000

local function parse_member(token)
  local weight = 1
  local at = token:find("@", 1, true)
  if at then
    local digits = token:sub(at + 1)
    if not digits:match("^%d+$") or not decimal(digits, MAX_WEIGHT) or tonumber(digits) < 1 then
      return nil
    end
    weight = tonumber(digits)
    token = token:sub(1, at - 1)
  end
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
  return { host = host, port = tonumber(port), key = host .. ":" .. port, weight = weight }
end

-- peers.txt = "generation " 64 lowercase hex "\n" *( "upstream " name *( " " ipv4 ":" port [ "@" weight ] ) "\n" ).
-- A weight (1..1000000, absent: 1) is a canary group's share per task; an upstream with unequal weights is marked
-- weighted, so the others keep the plain round robin.
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
    local weighted = false
    for position = 3, #tokens do
      local peer = parse_member(tokens[position])
      if not peer then
        return nil, where .. ": not <IPv4>:<port>[@<weight>]"
      end
      peers[#peers + 1] = peer
      weighted = weighted or peer.weight ~= peers[1].weight
    end
    if weighted then
      local total = 0
      for _, peer in ipairs(peers) do
        total = total + peer.weight
        peer.current = 0
      end
      peers.total_weight = total
    end
    upstreams[name] = peers
  end
  return generation, upstreams
end

local parse = M.parse

-- Master process, at every start and reload: the peers of the config being loaded. An error here fails
-- the start and the reload (but not `nginx -t`, which skips init_by_lua).
-- `connect_timeout_ms`: proxy_connect_timeout (SWARMGATE_PROXY_CONNECT_TIMEOUT), which the probes of timed-out
-- members use too: a member that connects within it is one nginx can use.
function M.load(path, wait_socket, connect_timeout_ms)
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
  M.wait_socket = wait_socket
  M.connect_timeout_ms = connect_timeout_ms or 500
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

-- skip_until (seconds, ngx.now()), kind and count of a member's recent failures, or nil. The entry expires on
-- its own once forgiven, so the dictionary holds only members that failed lately.
local function failure_of(key)
  local skip_until, flags = ngx.shared.swarmgate_failures:get(key)
  if not skip_until then
    return nil
  end
  flags = flags or 0
  return skip_until, flags % 2, math.floor(flags / 2)
end

local function record_failure(key, kind, now)
  local skip_until, old_kind, count = failure_of(key)
  if skip_until and skip_until > now then
    kind = math.max(kind, old_kind)
  else
    count = (count or 0) + 1
  end
  local backoff = BACKOFF[kind]
  local until_ = math.max(skip_until or 0, now + math.min(backoff.max, backoff.first * 2 ^ (count - 1)))
  local ok, err = ngx.shared.swarmgate_failures:set(key, until_, until_ - now + backoff.forgiven, count * 2 + kind)
  if not ok then
    ngx.log(ngx.ERR, "swarmgate: cannot share the failure of ", key, ": ", err)
  end
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
  end
  return M.active
end

M.upstreams = active_upstreams

-- Tasks the active health checks (lua/swarmgate/health.lua) found down, per worker: the set is parsed again only
-- when the checker's serial moved, so a request of an upstream with checks costs one shared-dictionary lookup.
local down_serial = false
local down_set = {}

local function down_tasks()
  local dict = ngx.shared.swarmgate_health
  local serial = dict:get("serial")
  if serial ~= down_serial then
    down_serial = serial
    local set = {}
    for key in (dict:get("down") or ""):gmatch("%S+") do
      set[key] = true
    end
    down_set = set
  end
  return down_set
end

-- The background probe of a timed-out member whose backoff is over (a timer: cosockets cannot run in
-- balancer_by_lua). It connects and closes, nothing more: a member that accepts within nginx's connect timeout is
-- one nginx can use. Connected, the member becomes fit for every worker at once, but keeps its failure count until
-- the entry is forgiven (as a refusal whose backoff is over): if it times out again soon (a timeout is also what an
-- app that accepts and never answers costs, which a connect cannot see) its next backoff is the doubled one.
-- Not connected, it gets the next backoff, as a visitor's failure would. Either way the probe entry is freed.
local function probe(premature, key)
  local dict = ngx.shared.swarmgate_failures
  if not premature then
    local host, port = key:match("^(.+):(%d+)$")
    local sock = ngx.socket.tcp()
    sock:settimeout(M.connect_timeout_ms)
    local ok, err = sock:connect(host, tonumber(port))
    local now = ngx.now()
    if ok then
      sock:close()
      local skip_until, _, count = failure_of(key)
      if skip_until then
        local stored, set_err = dict:set(key, now, BACKOFF[KIND_TIMEOUT].forgiven, count * 2 + KIND_ERROR)
        if not stored then
          ngx.log(ngx.ERR, "swarmgate: cannot share that ", key, " is back: ", set_err)
        end
      end
    else
      record_failure(key, err == "timeout" and KIND_TIMEOUT or KIND_ERROR, now)
    end
  end
  dict:delete("probe " .. key)
end

local function failure_class(key, now, retry)
  local skip_until, kind = failure_of(key)
  if not skip_until then
    return 1, 0
  elseif kind == KIND_ERROR then
    if skip_until <= now then
      return retry and 2 or 1, skip_until
    end
    return 3, skip_until
  elseif skip_until <= now then
    -- Timed out, backoff over: the first request of the edge to see it starts the probe; every request, this one
    -- too, skips the member until the probe knows (see KIND_TIMEOUT above).
    local dict = ngx.shared.swarmgate_failures
    if dict:add("probe " .. key, true, M.connect_timeout_ms / 1000 + PROBE_SLACK) then
      local ok, err = ngx.timer.at(0, probe, key)
      if not ok then
        -- No timer to be had (lua_max_pending_timers reached, or the worker is exiting): this request is the
        -- probe, as every probe was before they ran in the background; the others skip the member meanwhile.
        ngx.log(ngx.WARN, "swarmgate: cannot probe ", key, " in the background: ", err)
        return retry and 2 or 1, skip_until
      end
    end
  end
  return 4, skip_until
end

-- How good a choice a member not yet tried by this request is: 1 never failed lately (or, on a first try, it
-- refused and its backoff is over, so that request finds out whether it is back; or a probe found it back), 2 the
-- same on a retry (a retry prefers members never seen failing), 3 refused lately (costs nothing to try again) or
-- down by its health check (skip_until 0), 4 timed out and not yet found back by a probe (costs a connect timeout).
-- A member of class 4 (or a down one) is still tried when nothing better is left: a dead node, or a broken health
-- path, must not turn every request into a 502.
local function class_of(key, now, retry, down)
  local class, skip_until = failure_class(key, now, retry)
  if down and class <= 2 and down[key] then
    return 3, 0
  end
  return class, skip_until
end

-- Per-upstream balancing settings (swarmgate.balance, swarmgate.sticky), registered by M.configure from the
-- config's init_by_lua (src/render/balancer-options.ts writes the calls from validated labels only). An upstream
-- without them is round robin: its requests look them up once and go on as before.
M.options = {}

function M.configure(name, options)
  local attributes = "; Path=/; HttpOnly; SameSite=Lax"
  if options.max_age then
    attributes = attributes .. "; Max-Age=" .. options.max_age
  end
  options.attributes = attributes
  M.options[name] = options
end

-- least_conn: requests under way per member, per worker (as nginx's least_conn without a shared zone).
local active_conns = {}

local function u32(x)
  return x % 4294967296
end

-- a * b mod 2^32 in doubles: both halves stay below 2^53.
local function mul32(a, b)
  local low = a % 65536
  return (low * b + ((a - low) / 65536 * b % 65536) * 65536) % 4294967296
end

-- MurmurHash3's finaliser: crc32 alone is linear, and rendezvous hashing needs scores that look independent.
local function mix(h)
  h = u32(bit.bxor(h, bit.rshift(h, 16)))
  h = mul32(h, 0x85ebca6b)
  h = u32(bit.bxor(h, bit.rshift(h, 13)))
  h = mul32(h, 0xc2b2ae35)
  return u32(bit.bxor(h, bit.rshift(h, 16)))
end

-- Rendezvous (highest random weight) hashing: every member scores the key, the best wins. When a member comes or
-- goes, only the keys it wins (or won) move: 1/N of them, and none between the others. Weighted: w / -ln(u).
local function rendezvous(peers, value)
  local key_hash = mix(ngx.crc32_long(value))
  local weighted = peers.total_weight ~= nil
  local best, best_score
  for index = 1, #peers do
    local peer = peers[index]
    local member_hash = peer.hash
    if not member_hash then
      member_hash = mix(ngx.crc32_long(peer.key))
      peer.hash = member_hash
    end
    local score = mix(u32(bit.bxor(key_hash, member_hash)))
    if weighted then
      score = peer.weight / -math.log((score + 0.5) / 4294967296)
    end
    if not best_score or score > best_score then
      best, best_score = index, score
    end
  end
  return best
end

-- Scoring every member costs about 20 ns each (2.3 µs a request at 100 tasks), and the winner depends only on the key
-- and the member list: each list (a new one with every peers.txt) remembers its recent keys' winners, per worker.
-- Short keys only (client addresses, ids), and at most HASH_MEMO of them: the memo starts over when full.
local HASH_MEMO = 1024
local HASH_MEMO_KEY = 64

local function hash_pick(peers, value)
  if #value > HASH_MEMO_KEY then
    return rendezvous(peers, value)
  end
  local memo = peers.hash_memo
  if memo then
    local index = memo[value]
    if index then
      return index
    end
  end
  if not memo or peers.hash_memo_size >= HASH_MEMO then
    memo = {}
    peers.hash_memo = memo
    peers.hash_memo_size = 0
  end
  local index = rendezvous(peers, value)
  memo[value] = index
  peers.hash_memo_size = peers.hash_memo_size + 1
  return index
end

-- The fewest requests under way per unit of weight; ties go round robin.
local function least_conn_pick(peers, name)
  local count = #peers
  local start = next_index[name] or 0
  local best, best_load
  for step = 1, count do
    local index = (start + step - 1) % count + 1
    local peer = peers[index]
    local load = (active_conns[peer.key] or 0) / peer.weight
    if not best_load or load < best_load then
      best, best_load = index, load
      if load == 0 then
        break
      end
    end
  end
  next_index[name] = best
  return best
end

-- nginx's smooth weighted round robin, per worker: 90/10 gives 9 of every 10 requests to the first, spread out.
local function weighted_pick(peers)
  local best, best_current
  for index = 1, #peers do
    local peer = peers[index]
    local current = peer.current + peer.weight
    peer.current = current
    if not best_current or current > best_current then
      best, best_current = index, current
    end
  end
  peers[best].current = best_current - peers.total_weight
  return best
end

-- The cookie value naming a member: opaque and the same on every edge (the upstream name and the address).
local function peer_id(name, peer)
  local id = peer.id
  if not id then
    id = ngx.md5(name .. " " .. peer.key):sub(1, 16)
    peer.id = id
  end
  return id
end

-- The member a sticky cookie names, among the members routed now (a task no longer in peers is never found).
local function sticky_index(peers, name, options)
  local id = ngx.var[options.sticky_var]
  if not id then
    return nil
  end
  local ids = peers.ids
  if not ids then
    ids = {}
    for index, peer in ipairs(peers) do
      ids[peer_id(name, peer)] = index
    end
    peers.ids = ids
  end
  return ids[id]
end

-- A first try's member by the upstream's method: the sticky member if it is fit, else the method's choice.
-- Returns the index and its class_of, or nil (round robin: the scan below decides).
local function preferred(peers, name, options, now, down)
  local sticky
  if options and options.sticky_var then
    sticky = sticky_index(peers, name, options)
    if sticky then
      local class, skip_until = class_of(peers[sticky].key, now, false, down)
      if class == 1 then
        return sticky, class, skip_until
      end
    end
  end
  local index
  local method = options and options.method
  if method == "hash" then
    local value = ngx.var[options.key_var]
    if value and value ~= "" then
      index = hash_pick(peers, value)
    end
  elseif method == "least_conn" then
    index = least_conn_pick(peers, name)
  end
  if not index and peers.total_weight then
    index = weighted_pick(peers)
  end
  if not index or index == sticky then
    return nil
  end
  return index, class_of(peers[index].key, now, false, down)
end

-- What a request's tries have done, kept in ngx.ctx once it needs it. A first try (nearly every request) keeps
-- nothing there: ngx.ctx's first read per request makes a table and registers it with the request (plus this table
-- and its `tried` set), which measured about a quarter of the balancer's time. Its first retry reads the member the
-- first try chose back from nginx instead (first_try_state). Only least_conn and sticky upstreams keep it from the
-- first try: release() and stick() read it after the balancer.
local function new_state()
  -- Every field the request will set, so the table is sized once (no rehash on the common path).
  return {
    tried = {}, ntried = 0, tries = 0, timeouts = 0, waits = 0, last = false, peer = false,
    timed_out = false, last_index = false,
  }
end

-- On a request's first retry, the state its first try would have kept: that try's member is the last attempt nginx
-- lists in $upstream_addr ("a, b : c" across internal redirects; the attempt being chosen now ends it as " : ").
local function first_try_state(peers, count)
  local state = new_state()
  local key = string.match(ngx.var.upstream_addr or "", "([^ ,]+) : $")
  state.tries, state.ntried = 1, 1
  if key then
    state.tried[key] = true
    state.last = key
    for index = 1, count do
      if peers[index].key == key then
        state.last_index = index
        state.peer = peers[index]
        break
      end
    end
  end
  return state
end

-- balancer_by_lua: the upstream's method picks a member for a first try (round robin unless configured). On a
-- retry (proxy_next_upstream) the member that failed is recorded for every worker, and the request moves to the
-- best member it has not tried; when every member refused, an idempotent request waits a little and tries them
-- again. Each call allows one more try only while there is something left to try.
-- `members`: the upstream's members when they come from elsewhere (early routing, lua/swarmgate/early.lua).
function M.balance(name, members)
  local peers = members or active_upstreams()[name] or M.configured[name]
  local count = peers and #peers or 0
  if count == 0 then
    ngx.log(ngx.ERR, "swarmgate: upstream ", name, " has no members")
    return ngx.exit(ngx.ERROR)
  end
  local now = ngx.now()
  -- Early routing's members come with none of the options the running config may hold for an upstream of that name
  -- (a host whose labels changed): the table lists only round-robin upstreams.
  local options = not members and M.options[name] or nil
  -- nil on a first try: nginx reports how the previous try of this request ended.
  local failed, status = get_last_failure()
  local retry = failed ~= nil
  local state
  if retry then
    local ctx = ngx.ctx
    state = ctx.swarmgate
    if not state then
      state = first_try_state(peers, count)
      ctx.swarmgate = state
    end
    if state.last == WAIT then
      -- Waited: every member may be tried again.
      state.tried = {}
      state.ntried = 0
    elseif state.last then
      local kind = status == 504 and KIND_TIMEOUT or KIND_ERROR
      if kind == KIND_TIMEOUT then
        state.timeouts = state.timeouts + 1
      end
      record_failure(state.last, kind, now)
      state.timed_out = kind == KIND_TIMEOUT
      -- Traffic counting (when the config has it) takes failed attempts from here, exactly: the log phase reads
      -- only a sample of requests' upstream lists (lua/swarmgate/metrics.lua).
      local metrics = package.loaded["swarmgate.metrics"]
      if metrics and metrics.enabled then
        metrics.failed_attempt(ngx.var.swarmgate_service, state.last, state.timed_out)
      end
    end
  elseif options and (options.sticky_var or options.method == "least_conn") then
    state = new_state()
    ngx.ctx.swarmgate = state
  end
  local tried = state and state.tried

  -- Only upstreams with active health checks look at what the checker found.
  local down = options and options.health and down_tasks() or nil
  local chosen, chosen_class, chosen_until, chosen_index
  -- Round robin over equal members (the common case) skips this: no options, no weights.
  if not retry and (options or peers.total_weight) then
    local index, class, skip_until = preferred(peers, name, options, now, down)
    if class == 1 then
      chosen, chosen_class, chosen_until, chosen_index = peers[index], class, skip_until, index
    end
  end
  local start = next_index[name] or 0
  if retry and state.timed_out and state.last_index then
    -- The scan begins at the member half the list away from the one that timed out (see MAX_TRIES).
    start = (state.last_index + math.floor(count / 2) - 1) % count
  end
  local scanned = chosen == nil
  if scanned then
    for step = 1, count do
      local index = (start + step - 1) % count + 1
      local peer = peers[index]
      if not (tried and tried[peer.key]) then
        local class, skip_until = class_of(peer.key, now, retry, down)
        if not chosen or class < chosen_class or (class == chosen_class and class > 2 and skip_until < chosen_until) then
          chosen, chosen_class, chosen_until, chosen_index = peer, class, skip_until, index
          if class == 1 then
            break
          end
        end
      end
    end
  end

  local can_wait = M.wait_socket ~= nil and retry and state.timeouts == 0 and state.waits < MAX_WAITS
    and not NON_IDEMPOTENT[ngx.req.get_method()]
  local tries = state and state.tries + 1 or 1
  local more
  if can_wait and (not chosen or chosen_class == 4) then
    state.tries = tries
    state.last = WAIT
    state.waits = state.waits + 1
    more = true
    local ok, err = balancer.set_current_peer(M.wait_socket)
    if not ok then
      ngx.log(ngx.ERR, "swarmgate: cannot use the wait socket: ", err)
    end
  else
    if not chosen then
      -- Tried every member and may not wait: the one that failed first gets the last try it was given.
      chosen_index = start % count + 1
      chosen = peers[chosen_index]
    end
    -- Round robin moves on past members that were fit, and past down ones (when every member is down, requests
    -- still spread over them).
    if scanned and chosen_class and (chosen_class <= 2 or (down and chosen_class == 3 and chosen_until == 0)) then
      next_index[name] = chosen_index
    end
    local timeouts, ntried, waits = 0, 1, 0
    if state then
      if not tried[chosen.key] then
        tried[chosen.key] = true
        state.ntried = state.ntried + 1
      end
      state.tries = tries
      state.last = chosen.key
      state.last_index = chosen_index
      state.peer = chosen
      timeouts, ntried, waits = state.timeouts, state.ntried, state.waits
    end
    if options and options.method == "least_conn" then
      local counted = state.counted
      if counted then
        active_conns[counted] = active_conns[counted] - 1
      end
      active_conns[chosen.key] = (active_conns[chosen.key] or 0) + 1
      state.counted = chosen.key
      -- error_page drops ngx.ctx but not variables: the error location releases by this one.
      ngx.var.swarmgate_counted = chosen.key
    end
    -- If this try times out as well, may the request still go on?
    more = timeouts + 1 < MAX_TIMEOUTS
      and (ntried < count or (M.wait_socket ~= nil and waits < MAX_WAITS
        and not NON_IDEMPOTENT[ngx.req.get_method()]))
    local ok, err = balancer.set_current_peer(chosen.host, chosen.port)
    if not ok then
      ngx.log(ngx.ERR, "swarmgate: cannot use ", chosen.key, ": ", err)
    end
  end
  if more and tries < MAX_TRIES then
    balancer.set_more_tries(1)
  end
end

-- log_by_lua of locations with swarmgate.retry.tries: the failure of a request's last try is recorded too. The
-- balancer records a failure when it is called for the next try; after the last one it is not called again, so
-- with tries=1 a refusing task was never recorded and every request sent to it failed. Only a try that got no
-- response header failed here (an app's own 502 has a header time).
function M.record_last_try()
  local status = ngx.var.upstream_status
  local last = status and string.match(status, "(%d+)%s*$")
  if last ~= "502" and last ~= "504" then
    return
  end
  local header_time = ngx.var.upstream_header_time
  if header_time and string.match(header_time, "[%d.]+%s*$") then
    return
  end
  -- A request that was never retried kept no state (see new_state): its one try is the last address nginx lists.
  local state = ngx.ctx.swarmgate
  local key
  if state then
    key = state.last
  else
    key = string.match(ngx.var.upstream_addr or "", "([^ ,]+)$")
  end
  if not key or key == WAIT or string.sub(key, 1, 5) == "unix:" then
    return
  end
  record_failure(key, last == "504" and KIND_TIMEOUT or KIND_ERROR, ngx.now())
end

-- log_by_lua of least_conn locations: the request no longer counts against its member.
function M.release()
  local state = ngx.ctx.swarmgate
  local counted = state and state.counted
  if counted then
    active_conns[counted] = active_conns[counted] - 1
    state.counted = nil
  end
end

-- log_by_lua of the error-page location of servers with least_conn locations: a request that failed and was
-- redirected to an error page lost its ngx.ctx, so its count is released by the variable the balancer set.
function M.release_redirected()
  local counted = ngx.var.swarmgate_counted
  if counted and counted ~= "" and active_conns[counted] then
    active_conns[counted] = active_conns[counted] - 1
    ngx.var.swarmgate_counted = ""
  end
end

-- header_filter_by_lua of sticky locations: a client whose cookie does not name the member that answered (no
-- cookie yet, or its member is gone or refused) gets one that does. Secure when the request came over HTTPS.
function M.stick(name)
  local options = M.options[name]
  local state = ngx.ctx.swarmgate
  local peer = state and state.peer
  if not options or not peer then
    return
  end
  local id = peer_id(name, peer)
  if ngx.var[options.sticky_var] == id then
    return
  end
  local cookie = options.cookie .. "=" .. id .. options.attributes .. (ngx.var.https == "on" and "; Secure" or "")
  local existing = ngx.header["Set-Cookie"]
  if existing == nil then
    ngx.header["Set-Cookie"] = cookie
  elseif type(existing) == "table" then
    existing[#existing + 1] = cookie
    ngx.header["Set-Cookie"] = existing
  else
    ngx.header["Set-Cookie"] = { existing, cookie }
  end
end

-- The wait socket's only location: hold the request WAIT_STEP, then close the connection unanswered, which
-- nginx counts as an error of that try and moves on to the next (the balancer's choice).
function M.wait()
  ngx.sleep(WAIT_STEP)
  return ngx.exit(444)
end

-- GET /unreachable on the local socket: the members whose last failure was a timeout (connect, or a read or send
-- timeout), one per line, "address \t skip_until". A member is listed until its failure is forgiven (the dictionary
-- entry expires). The agent cuts the edge's connections to them that the peer stopped acknowledging
-- (src/edge/stuck-connections.ts): a dead node never closes them, and a request nginx sends on a kept-alive one
-- would otherwise wait for proxy_read_timeout. The dictionary holds only members that failed lately: get_keys
-- under its lock twice a second is cheap.
local MAX_LISTED = 1024

function M.unreachable()
  local dict = ngx.shared.swarmgate_failures
  local lines = {}
  for _, key in ipairs(dict:get_keys(MAX_LISTED)) do
    if key:sub(1, 6) ~= "probe " then
      local skip_until, kind = failure_of(key)
      if skip_until and kind == KIND_TIMEOUT then
        lines[#lines + 1] = key .. "\t" .. string.format("%.3f", skip_until)
      end
    end
  end
  table.sort(lines)
  ngx.header["Content-Type"] = "text/plain"
  ngx.print(#lines > 0 and table.concat(lines, "\n") .. "\n" or "")
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
        keys[#keys + 1] = peer.weight == 1 and " " .. peer.key or " " .. peer.key .. "@" .. peer.weight
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

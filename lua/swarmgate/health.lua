-- Active health checks (swarmgate.healthcheck.*): the edge sends GET <path> to each task of the upstreams that ask
-- for it, and the balancer skips a task that fails them, as it skips one that refused a connection.
--
-- Why inside nginx rather than in the edge agent: the result is needed where requests are balanced, in every worker.
-- Here one worker probes and writes the set of tasks that are down into a shared dictionary with a serial; the
-- balancer reads the serial (one shared-dictionary lookup per request, and only for upstreams with checks) and
-- re-reads the set only when it changed. From the agent, every result would cross the local socket as an HTTP
-- request, and the agent (Node) would need its own view of which tasks each upstream routes to now.
--
-- One worker of the edge probes (a lock in swarmgate_health, renewed by the holder): every task is probed at most
-- once per interval whatever the number of workers, and a worker that exits (reload, crash) hands over within
-- LOCK_TTL. The new holder takes over the shared state, so a task that was down stays down until it passes.
-- Only tasks in the current peers of an upstream with checks are probed; a task that leaves the peers is forgotten
-- at the next tick.
local balancer = require("swarmgate.balancer")

local M = {}

local TICK = 0.2
local LOCK_TTL = 2
-- Probes running at once in the checker worker (each is a timer and a connection); the rest wait for a tick.
local MAX_INFLIGHT = 64
local MAX_REASON = 120

local dict = ngx.shared.swarmgate_health

-- The checker's view, in the worker that holds the lock: address → task.
local tasks = {}
local holder = false
local seen_upstreams = nil
local inflight = 0

local function any_checks()
  for _, options in pairs(balancer.options) do
    if options.health then
      return true
    end
  end
  return false
end

-- The shared view: "down" (addresses, for the balancer) and "state" (one line per checked task, for GET /health).
-- Written on a transition only, so workers re-read the set only when it changed.
local function publish()
  local down, lines = {}, {}
  for key, task in pairs(tasks) do
    if task.down then
      down[#down + 1] = key
    end
    lines[#lines + 1] = key .. "\t" .. task.upstream .. "\t" .. (task.down and "down" or task.state) .. "\t"
      .. string.format("%.3f", task.since) .. "\t" .. task.reason
  end
  table.sort(down)
  table.sort(lines)
  local ok, err = dict:set("state", #lines > 0 and table.concat(lines, "\n") .. "\n" or "")
  if ok then
    ok, err = dict:set("down", table.concat(down, " "))
  end
  if not ok then
    ngx.log(ngx.ERR, "swarmgate: cannot share the health of tasks: ", err)
  end
  dict:incr("serial", 1, 0)
end

-- A new holder starts from the shared state: tasks another worker found down stay down until they pass.
local function adopt()
  tasks = {}
  local text = dict:get("state") or ""
  for line in text:gmatch("[^\n]+") do
    local key, upstream, state, since, reason = line:match("^([^\t]+)\t([^\t]+)\t([^\t]+)\t([^\t]+)\t(.*)$")
    if key and state == "down" then
      tasks[key] = {
        upstream = upstream, down = true, state = "up", since = tonumber(since) or ngx.now(), reason = reason,
        fails = 0, passes = 0, next_due = 0, adopted = true,
      }
    end
  end
end

local function clean(text)
  return (tostring(text):gsub("[%c]", " "):sub(1, MAX_REASON))
end

-- GET <path> on one task, within timeout_ms in all: connect, TLS if the service speaks https, request, status line.
local function check(host, port, cfg)
  local deadline = ngx.now() + cfg.timeout_ms / 1000
  local function left()
    ngx.update_time()
    return math.floor((deadline - ngx.now()) * 1000)
  end
  local sock = ngx.socket.tcp()
  sock:settimeout(cfg.timeout_ms)
  local ok, err = sock:connect(host, port)
  if not ok then
    return false, "connect: " .. clean(err)
  end
  if cfg.tls then
    if left() <= 0 then
      sock:close()
      return false, "tls: timeout"
    end
    sock:settimeout(left())
    local _, tls_err = sock:sslhandshake(nil, cfg.host, false)
    if tls_err then
      sock:close()
      return false, "tls: " .. clean(tls_err)
    end
  end
  local request = "GET " .. cfg.path .. " HTTP/1.1\r\nHost: " .. (cfg.host or (host .. ":" .. port))
    .. "\r\nUser-Agent: swarmgate-health\r\nConnection: close\r\n\r\n"
  if left() <= 0 then
    sock:close()
    return false, "send: timeout"
  end
  sock:settimeout(left())
  local _, send_err = sock:send(request)
  if send_err then
    sock:close()
    return false, "send: " .. clean(send_err)
  end
  if left() <= 0 then
    sock:close()
    return false, "status line: timeout"
  end
  sock:settimeout(left())
  local line, receive_err = sock:receive("*l")
  sock:close()
  if not line then
    return false, "status line: " .. clean(receive_err)
  end
  local status = tonumber(line:match("^HTTP/1%.[01] (%d%d%d)"))
  if not status then
    return false, "not an HTTP response"
  end
  local ranges = cfg.status
  for index = 1, #ranges, 2 do
    if status >= ranges[index] and status <= ranges[index + 1] then
      return true, "status " .. status
    end
  end
  return false, "status " .. status
end

-- A timer of its own per probe (counted in `inflight` by the tick that started it): a slow task never delays the
-- probes of the others.
local function probe(premature, key, task)
  if premature then
    inflight = inflight - 1
    task.inflight = false
    return
  end
  local ok, reason = check(task.host, task.port, task.cfg)
  inflight = inflight - 1
  task.inflight = false
  if tasks[key] ~= task then
    return -- left the peers (or another upstream took it) while the probe ran
  end
  -- The first result says what a new task is (routed meanwhile, as a task without checks would be).
  local changed = task.state == "new"
  task.state = "up"
  if ok then
    task.fails = 0
    task.passes = task.passes + 1
    if task.down and task.passes >= task.cfg.passes then
      task.down, task.since, task.reason, changed = false, ngx.now(), reason, true
    elseif changed then
      task.reason = reason
    end
  else
    task.passes = 0
    task.fails = task.fails + 1
    if not task.down and task.fails >= task.cfg.fails then
      task.down, task.since, task.reason, changed = true, ngx.now(), reason, true
    elseif changed then
      task.reason = reason
    elseif task.down and task.reason ~= reason then
      task.reason = reason
    end
  end
  if changed then
    publish()
  end
end

-- The tasks to probe: each member of each upstream with checks, once (a task in two such upstreams, a canary group
-- and its own service, is probed with the settings of the first name in order).
local function refresh(upstreams)
  local names = {}
  for name, options in pairs(balancer.options) do
    if options.health and upstreams[name] then
      names[#names + 1] = name
    end
  end
  table.sort(names)
  local wanted = {}
  for _, name in ipairs(names) do
    local cfg = balancer.options[name].health
    for _, peer in ipairs(upstreams[name]) do
      if not wanted[peer.key] then
        wanted[peer.key] = { name = name, cfg = cfg, host = peer.host, port = peer.port }
      end
    end
  end
  local changed = false
  for key, task in pairs(tasks) do
    if not wanted[key] then
      tasks[key] = nil
      changed = true
    end
  end
  for key, want in pairs(wanted) do
    local task = tasks[key]
    if not task then
      tasks[key] = {
        upstream = want.name, cfg = want.cfg, host = want.host, port = want.port, down = false, state = "new",
        since = ngx.now(), reason = "", fails = 0, passes = 0, next_due = 0,
      }
      changed = true
    elseif task.adopted or task.upstream ~= want.name then
      changed = changed or task.upstream ~= want.name
      task.adopted = nil
      task.upstream, task.cfg, task.host, task.port = want.name, want.cfg, want.host, want.port
    end
  end
  if changed then
    publish()
  end
end

local function hold_lock()
  local pid = ngx.worker.pid()
  if dict:add("lock", pid, LOCK_TTL) then
    return true
  end
  if dict:get("lock") == pid then
    dict:set("lock", pid, LOCK_TTL)
    return true
  end
  return false
end

local function tick(premature)
  local pid = ngx.worker.pid()
  if premature then
    -- The worker exits (reload, stop): let another one take over at once.
    if holder and dict:get("lock") == pid then
      dict:delete("lock")
    end
    return
  end
  if not hold_lock() then
    if holder then
      holder, tasks, seen_upstreams = false, {}, nil
    end
    return
  end
  if not holder then
    holder = true
    adopt()
    seen_upstreams = nil
  end
  local upstreams = balancer.upstreams()
  if upstreams ~= seen_upstreams then
    seen_upstreams = upstreams
    refresh(upstreams)
  end
  local now = ngx.now()
  for key, task in pairs(tasks) do
    if not task.inflight and now >= task.next_due and inflight < MAX_INFLIGHT then
      local interval = task.cfg.interval_ms / 1000
      -- On the interval's grid while probes keep up; from now when they fell behind.
      task.next_due = task.next_due + interval > now and task.next_due + interval or now + interval
      task.inflight = true
      inflight = inflight + 1
      local ok, err = ngx.timer.at(0, probe, key, task)
      if not ok then
        task.inflight = false
        inflight = inflight - 1
        ngx.log(ngx.ERR, "swarmgate: cannot start a health probe of ", key, ": ", err)
      end
    end
  end
end

-- init_worker_by_lua: every worker ticks; only the lock holder probes. Nothing runs when no upstream has checks.
function M.start()
  if not any_checks() then
    return
  end
  local ok, err = ngx.timer.every(TICK, tick)
  if not ok then
    ngx.log(ngx.ERR, "swarmgate: cannot start health checks: ", err)
  end
end

-- GET /health on the local socket: one line per checked task, "address upstream up|down since reason" (tabs).
function M.serve()
  ngx.header["Content-Type"] = "text/plain"
  ngx.print(dict:get("state") or "")
end

return M

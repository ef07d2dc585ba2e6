-- Traffic metrics counted inside nginx, in the log phase (log_by_lua): no access log is parsed. Ships in the
-- image beside balancer.lua and is never part of a bundle.
--
-- Each worker adds to a plain Lua table (no lock, no shared memory per request) and folds it into the shared
-- dictionary swarmgate_metrics at most once a second, from a timer. A shared-dictionary increment takes a lock
-- that every worker contends for; doing ten of them per request cost more than the 3 % budget (docs/observability.md).
--
-- Labels stay bounded: the host is the server block's configured name ($server_name, never the Host header), the
-- service comes from the location ($swarmgate_service, set from the model), the task is the upstream member's
-- address (bounded by the tasks the edge routes to; the agent exports only current ones). No path, no client.
--
-- The agent reads the dictionary through GET /metrics on the local socket: one "key<TAB>value" line per entry.
-- Key grammar (fields separated by TAB; src/edge/edge-metrics.ts parses it):
--   req host service class          requests by status class (1xx..5xx)
--   dur host service bucket|sum     request time histogram (bucket = 1..#BUCKETS+1, the last is +Inf)
--   in host service / out host service   bytes received ($request_length) and sent ($bytes_sent)
--   proto protocol                   requests by HTTP version
--   ups service task class           upstream responses per task by status class
--   udur service task bucket|sum     upstream response time per task
--   uerr service task kind           upstream attempts without a response (kind: error = refused/reset, timeout)
--   retry service                    extra upstream attempts (proxy_next_upstream)
--   evict                            entries the dictionary dropped because it was full
local M = {}

-- Fixed bucket bounds, seconds (Prometheus' defaults). Changing them changes every exported series.
local BUCKETS = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10 }
M.BUCKETS = BUCKETS
local NBUCKETS = #BUCKETS
local FLUSH_SECONDS = 1

local ok_new_tab, new_tab = pcall(require, "table.new")
if not ok_new_tab then
  new_tab = function()
    return {}
  end
end

local pending = new_tab(0, 64)
local pending_count = 0
local scheduled = false
local evicted = 0

local CLASS = { "1xx", "2xx", "3xx", "4xx", "5xx" }
local PROTOCOLS = { ["HTTP/1.0"] = true, ["HTTP/1.1"] = true, ["HTTP/2.0"] = true, ["HTTP/3.0"] = true }

local function class_of(status)
  return CLASS[math.floor(status / 100)] or "other"
end

local function add(key, value)
  local current = pending[key]
  if current then
    pending[key] = current + value
  else
    pending[key] = value
    pending_count = pending_count + 1
  end
end

local function bucket_of(seconds)
  for index = 1, NBUCKETS do
    if seconds <= BUCKETS[index] then
      return index
    end
  end
  return NBUCKETS + 1
end

local function observe(prefix, seconds)
  add(prefix .. bucket_of(seconds), 1)
  add(prefix .. "sum", seconds)
end

local function flush(premature)
  scheduled = false
  local dict = ngx.shared.swarmgate_metrics
  local batch = pending
  pending = new_tab(0, pending_count)
  pending_count = 0
  for key, value in pairs(batch) do
    local _, err, forcible = dict:incr(key, value, 0)
    if forcible or err then
      evicted = evicted + 1
    end
  end
  if evicted > 0 then
    dict:incr("evict", evicted, 0)
    evicted = 0
  end
  if premature then
    return
  end
end
M.flush = flush

local function schedule()
  if scheduled then
    return
  end
  local ok = ngx.timer.at(FLUSH_SECONDS, flush)
  scheduled = ok and true or false
end

-- nginx's lists of attempts ("a, b : c"; " : " separates internal redirects) as a table of strings. Addresses
-- contain ":" too, but never with a space around it.
local function split_list(text)
  local list = {}
  for item in (text:gsub(" : ", ", ") .. ", "):gmatch("(.-), ") do
    list[#list + 1] = item
  end
  return list
end
M.split_list = split_list

local function count_upstreams(service, addr_text, status_text, time_text)
  -- One attempt (the usual case): no list to split.
  if not status_text:find(",", 1, true) and not status_text:find(":", 1, true) then
    local status = tonumber(status_text)
    local task_prefix = service .. "\t" .. addr_text .. "\t"
    local seconds = tonumber(time_text)
    if status and status >= 100 then
      add("ups\t" .. task_prefix .. class_of(status), 1)
      if seconds then
        observe("udur\t" .. task_prefix, seconds)
      end
    end
    return
  end
  local addresses = split_list(addr_text)
  local statuses = split_list(status_text)
  local times = split_list(time_text)
  local n = #statuses
  if n > 1 then
    add("retry\t" .. service, n - 1)
  end
  for index = 1, n do
    local task = addresses[index] or "-"
    local status = tonumber(statuses[index])
    local task_prefix = service .. "\t" .. task .. "\t"
    -- An attempt nginx gave up on (refused, reset, timed out) and moved past shows 502 or 504 but no response came;
    -- so does the last attempt when it failed the same way (its time is then "0.000" or the timeout, not a header).
    if index < n or status == nil then
      add("uerr\t" .. task_prefix .. (status == 504 and "timeout" or "error"), 1)
    else
      add("ups\t" .. task_prefix .. class_of(status), 1)
      local seconds = tonumber(times[index])
      if seconds then
        observe("udur\t" .. task_prefix, seconds)
      end
    end
  end
end

-- log_by_lua: once per request, after the response went out.
function M.log()
  local var = ngx.var
  local status = ngx.status
  local host = var.server_name or ""
  -- The agent's local socket has no server name: its own requests are not traffic.
  if host == "" then
    return
  end
  local service = var.swarmgate_service or ""
  local labels = host .. "\t" .. service
  add("req\t" .. labels .. "\t" .. class_of(status), 1)
  local seconds = tonumber(var.request_time)
  if seconds then
    observe("dur\t" .. labels .. "\t", seconds)
  end
  add("in\t" .. labels, tonumber(var.request_length) or 0)
  add("out\t" .. labels, tonumber(var.bytes_sent) or 0)
  local protocol = var.server_protocol
  add("proto\t" .. (PROTOCOLS[protocol] and protocol or "other"), 1)
  local upstream_status = var.upstream_status
  if upstream_status and service ~= "" then
    count_upstreams(service, var.upstream_addr or "-", upstream_status, var.upstream_response_time or "")
  end
  schedule()
end

-- GET /metrics on the local socket: this worker's pending counts first (so a scrape sees them at once), then
-- every entry, and the connection gauges nginx keeps (stub_status variables).
function M.serve()
  flush(false)
  local dict = ngx.shared.swarmgate_metrics
  local keys = dict:get_keys(0)
  local out = new_tab(#keys + 5, 0)
  for index = 1, #keys do
    local key = keys[index]
    local value = dict:get(key)
    if value then
      out[#out + 1] = key .. "\t" .. string.format("%.17g", value)
    end
  end
  local var = ngx.var
  out[#out + 1] = "conn\tactive\t" .. (var.connections_active or "0")
  out[#out + 1] = "conn\treading\t" .. (var.connections_reading or "0")
  out[#out + 1] = "conn\twriting\t" .. (var.connections_writing or "0")
  out[#out + 1] = "conn\twaiting\t" .. (var.connections_waiting or "0")
  out[#out + 1] = "buckets\t" .. table.concat(BUCKETS, ",")
  ngx.header["content-type"] = "text/plain"
  ngx.print(table.concat(out, "\n"), "\n")
end

return M

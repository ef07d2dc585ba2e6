-- Traffic metrics counted inside nginx, in the log phase (log_by_lua): no access log is parsed. Ships in the
-- image beside balancer.lua and is never part of a bundle.
--
-- Each worker adds to a plain Lua table (no lock, no shared memory per request) and folds it into the shared
-- dictionary swarmgate_metrics at most once a second, from a timer: a shared-dictionary increment takes a lock
-- that every worker contends for, and a request would need about ten. The cost per request is measured by
-- bench/metrics-cost.ts (docs/observability.md).
--
-- What a request costs is mostly nginx formatting the variables it reads. So every request reads one variable with
-- its route and byte counts ($swarmgate_log_fields), and only one response in `task_sample` (drawn at random) also reads
-- the three $upstream_* lists ($swarmgate_upstream_fields) for its task's status and time, counted `task_sample`
-- times (SWARMGATE_TRAFFIC_TASK_SAMPLE; 1 reads them on every request). Attempts that failed over to another task
-- are counted exactly, by the balancer when it moves on (failed_attempt below), where reading a variable is rare.
--
-- Labels stay bounded: the host is the server block's configured name ($server_name, never the Host header), the
-- service comes from the location ($swarmgate_service, set from the model), the task is the upstream member's
-- address (bounded by the tasks the edge routes to; the agent exports only current ones). No path, no client.
--
-- The agent reads the dictionary through GET /metrics on the local socket: one "key<TAB>value" line per entry.
-- Key grammar (fields separated by TAB; src/edge/edge-metrics.ts parses it):
--   req host service class          requests by status class (1xx..5xx, other)
--   dur host service bucket|sum     request time histogram (bucket = 1..#BUCKETS+1, the last is +Inf)
--   in host service / out host service   bytes received ($request_length) and sent ($bytes_sent)
--   proto protocol                   requests by HTTP version
--   ups service task class           upstream responses per task by status class (sampled, see above)
--   udur service task bucket|sum     upstream response time per task (sampled, see above)
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

-- This worker's counts since the last flush: host -> service -> record, and service -> task -> record.
-- Records are plain arrays, so a request costs table increments only; keys are built once a second, in flush().
local routes = {}
local tasks = {}
local retries = {}
local protocols = { 0, 0, 0, 0 }
local PROTOCOL_NAMES = { "HTTP/1.0", "HTTP/1.1", "HTTP/2.0", "other" }
local scheduled = false
-- One service response in task_sample (on average) has its task's status and time read.
local task_sample = 1
local random = math.random
local find, sub = string.find, string.sub
local CLASS = { "1xx", "2xx", "3xx", "4xx", "5xx", "other" }
local HISTOGRAM_SLOTS = NBUCKETS + 1
-- A record: [1..6] status classes, [7..6+HISTOGRAM_SLOTS] histogram slots, the sum, then two more counters
-- (routes: bytes in and out; tasks: attempts without a response, error and timeout).
local SUM = 6 + HISTOGRAM_SLOTS + 1
local RECORD_SIZE = SUM + 2

local function new_record()
  local record = new_tab(RECORD_SIZE, 0)
  for index = 1, RECORD_SIZE do
    record[index] = 0
  end
  return record
end

local function class_index(status)
  local index = math.floor(status / 100)
  if index < 1 or index > 5 then
    return 6
  end
  return index
end

local function bucket_of(seconds)
  for index = 1, NBUCKETS do
    if seconds <= BUCKETS[index] then
      return index
    end
  end
  return HISTOGRAM_SLOTS
end

-- tree[first][second], created on first use.
local function record_in(tree, first, second)
  local level = tree[first]
  if not level then
    level = {}
    tree[first] = level
  end
  local record = level[second]
  if not record then
    record = new_record()
    level[second] = record
  end
  return record
end

-- Adds one record to the dictionary under "<kind>\t<labels>\t..." keys; returns how many entries were dropped.
local function flush_record(dict, labels, record, class_kind, histogram_kind, extra_keys)
  local dropped = 0
  local function incr(key, value)
    local _, err, forcible = dict:incr(key, value, 0)
    if err or forcible then
      dropped = dropped + 1
    end
  end
  for index = 1, 6 do
    if record[index] > 0 then
      incr(class_kind .. labels .. "\t" .. CLASS[index], record[index])
    end
  end
  for slot = 1, HISTOGRAM_SLOTS do
    if record[6 + slot] > 0 then
      incr(histogram_kind .. labels .. "\t" .. slot, record[6 + slot])
    end
  end
  if record[SUM] > 0 then
    incr(histogram_kind .. labels .. "\tsum", record[SUM])
  end
  for index = 1, 2 do
    if record[SUM + index] > 0 then
      incr(extra_keys[index], record[SUM + index])
    end
  end
  return dropped
end

local function flush(premature)
  scheduled = false
  local dict = ngx.shared.swarmgate_metrics
  local route_batch, task_batch, retry_batch, protocol_batch = routes, tasks, retries, protocols
  routes, tasks, retries, protocols = {}, {}, {}, { 0, 0, 0, 0 }
  local dropped = 0
  for host, by_service in pairs(route_batch) do
    for service, record in pairs(by_service) do
      local labels = host .. "\t" .. service
      dropped = dropped
        + flush_record(dict, labels, record, "req\t", "dur\t", { "in\t" .. labels, "out\t" .. labels })
    end
  end
  for service, by_task in pairs(task_batch) do
    for task, record in pairs(by_task) do
      local labels = service .. "\t" .. task
      dropped = dropped
        + flush_record(dict, labels, record, "ups\t", "udur\t", { "uerr\t" .. labels .. "\terror", "uerr\t" .. labels .. "\ttimeout" })
    end
  end
  for service, value in pairs(retry_batch) do
    dict:incr("retry\t" .. service, value, 0)
  end
  for index = 1, 4 do
    if protocol_batch[index] > 0 then
      dict:incr("proto\t" .. PROTOCOL_NAMES[index], protocol_batch[index], 0)
    end
  end
  if dropped > 0 then
    dict:incr("evict", dropped, 0)
  end
  return premature
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

-- A sampled response stands for `task_sample` responses: counts and the time's sum are scaled, so rates stay
-- comparable with the requests' and a histogram's quantiles are those of the sample.
local function count_response(service, task, status, seconds)
  local record = record_in(tasks, service, task)
  local class = class_index(status)
  local weight = task_sample
  record[class] = record[class] + weight
  if seconds then
    local slot = 6 + bucket_of(seconds)
    record[slot] = record[slot] + weight
    record[SUM] = record[SUM] + seconds * weight
  end
end

-- The last attempt of a sampled request: the one that answered (earlier ones failed over and were counted by
-- failed_attempt). Default-server routes (no service) have none.
local function count_final_attempt(service, upstream_fields)
  if not upstream_fields then
    return
  end
  local a = find(upstream_fields, "\t", 1, true)
  local b = a and find(upstream_fields, "\t", a + 1, true)
  -- "\t\t": no upstream was asked (nginx answered itself).
  if not b or a == 1 then
    return
  end
  local status_text = sub(upstream_fields, 1, a - 1)
  local addr_text = sub(upstream_fields, a + 1, b - 1)
  local time_text = sub(upstream_fields, b + 1)
  if status_text:find(",", 1, true) or status_text:find(":", 1, true) then
    local statuses, addresses, times = split_list(status_text), split_list(addr_text), split_list(time_text)
    status_text, addr_text, time_text = statuses[#statuses], addresses[#addresses] or "-", times[#times]
  end
  local status = tonumber(status_text)
  -- A last attempt without a status ("-": the client left first) has no response to count.
  if status and status >= 100 then
    count_response(service, addr_text, status, tonumber(time_text))
  end
end

-- The balancer, on a retry: the task it moves away from got no response (refused, reset, or timed out). Exact,
-- not sampled: the retry path is rare, so reading $swarmgate_service there costs nothing that matters.
function M.failed_attempt(service, task, timed_out)
  if not service or service == "" then
    return
  end
  local record = record_in(tasks, service, task)
  local extra = SUM + (timed_out and 2 or 1)
  record[extra] = record[extra] + 1
  retries[service] = (retries[service] or 0) + 1
  schedule()
end

-- From init_by_lua when the config counts traffic: the balancer counts failed attempts only then.
function M.configure(sample)
  task_sample = sample
  M.enabled = true
end


-- log_by_lua: once per request, after the response went out. Plain finds, not a pattern: LuaJIT compiles them,
-- while string.match makes it fall back to the interpreter (measured in bench/metrics-cost.ts).
local function log_fields(fields)
  if not fields then
    return
  end
  local a = find(fields, "\t", 1, true)
  local b = find(fields, "\t", a + 1, true)
  local c = find(fields, "\t", b + 1, true)
  if not c then
    return
  end
  -- The agent's local socket has no server name: its own requests are not traffic.
  if b == a + 1 then
    return
  end
  -- Service "" outside services' locations (unknown host, ACME, redirects).
  local service = sub(fields, 1, a - 1)
  local record = record_in(routes, sub(fields, a + 1, b - 1), service)
  local class = class_index(ngx.status)
  record[class] = record[class] + 1
  -- ngx.now() is the event loop's cached time, as $request_time is: the same millisecond resolution.
  local seconds = ngx.now() - ngx.req.start_time()
  local slot = 6 + bucket_of(seconds)
  record[slot] = record[slot] + 1
  record[SUM] = record[SUM] + seconds
  record[SUM + 1] = record[SUM + 1] + (tonumber(sub(fields, b + 1, c - 1)) or 0)
  record[SUM + 2] = record[SUM + 2] + (tonumber(sub(fields, c + 1)) or 0)
  local version = ngx.req.http_version()
  local protocol = version == 1.1 and 2 or version == 2 and 3 or version == 1 and 1 or 4
  protocols[protocol] = protocols[protocol] + 1
  -- Drawn at random, not every n-th request: a worker's round robin would make every n-th request the same task's.
  if service ~= "" and (task_sample == 1 or random(task_sample) == 1) then
    count_final_attempt(service, ngx.var.swarmgate_upstream_fields)
  end
  schedule()
end
M.log_fields = log_fields

-- The log phase of every location but early routing's (which reads its own variable: $swarmgate_early_log_fields).
function M.log()
  return log_fields(ngx.var.swarmgate_log_fields)
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

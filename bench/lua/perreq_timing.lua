-- Bench only (never in the image): the edge's per-request Lua calls timed inside nginx, each by the monotonic clock
-- read around it (vDSO, ~20 ns), the median of each 5,000 calls logged as "perreq-timing <label> median_ns=<n>".
-- CPU per request from outside the worker moves by about a microsecond between rounds on shared cores; these move by
-- tens of nanoseconds.
local ffi = require("ffi")

pcall(ffi.cdef, [[
typedef struct { long tv_sec; long tv_nsec; } swarmgate_bench_timespec;
int clock_gettime(int clock, swarmgate_bench_timespec *ts);
]])
local CLOCK_MONOTONIC = 1
local SAMPLES = 5000
local C = ffi.C
local before, after = ffi.new("swarmgate_bench_timespec"), ffi.new("swarmgate_bench_timespec")

local M = {}

local series = {}

local function record(label, ns)
  local s = series[label]
  if not s then
    s = { n = 0 }
    series[label] = s
  end
  local n = s.n + 1
  s[n] = ns
  if n == SAMPLES then
    table.sort(s)
    ngx.log(ngx.WARN, "perreq-timing ", label, " median_ns=", s[SAMPLES / 2])
    s.n = 0
  else
    s.n = n
  end
end

local function elapsed()
  return tonumber(after.tv_sec - before.tv_sec) * 1e9 + tonumber(after.tv_nsec - before.tv_nsec)
end

-- balancer_by_lua: swarmgate.balance(name) timed (first tries and retries alike).
function M.balance(name)
  local balancer = swarmgate
  C.clock_gettime(CLOCK_MONOTONIC, before)
  balancer.balance(name)
  C.clock_gettime(CLOCK_MONOTONIC, after)
  record("balance", elapsed())
end

-- log_by_lua: swarmgate.metrics.log() timed.
local metrics = require("swarmgate.metrics")
function M.log()
  C.clock_gettime(CLOCK_MONOTONIC, before)
  metrics.log()
  C.clock_gettime(CLOCK_MONOTONIC, after)
  record("log", elapsed())
end

-- The clock reads around nothing: what the timing adds.
function M.empty()
  C.clock_gettime(CLOCK_MONOTONIC, before)
  C.clock_gettime(CLOCK_MONOTONIC, after)
  record("empty", elapsed())
end

return M

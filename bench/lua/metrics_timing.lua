-- Bench only (bench/metrics-cost.ts, never in the image): swarmgate.metrics.log() timed inside nginx, per request.
-- CPU per request from outside the worker varies by about a microsecond between rounds on shared cores, more than
-- counting costs; the wall time of the call itself, read from the monotonic clock (vDSO, ~20 ns) around it, varies
-- by tens of nanoseconds. The median of each 5,000 calls goes to the error log, where the bench reads it.
local ffi = require("ffi")
local metrics = require("swarmgate.metrics")

ffi.cdef([[
typedef struct { long tv_sec; long tv_nsec; } swarmgate_bench_timespec;
int clock_gettime(int clock, swarmgate_bench_timespec *ts);
]])
local CLOCK_MONOTONIC = 1
local SAMPLES = 5000
local C = ffi.C
local before, after = ffi.new("swarmgate_bench_timespec"), ffi.new("swarmgate_bench_timespec")
local samples = {}
local count = 0

local M = {}

function M.log()
  C.clock_gettime(CLOCK_MONOTONIC, before)
  metrics.log()
  C.clock_gettime(CLOCK_MONOTONIC, after)
  count = count + 1
  samples[count] = tonumber(after.tv_sec - before.tv_sec) * 1e9 + tonumber(after.tv_nsec - before.tv_nsec)
  if count == SAMPLES then
    table.sort(samples)
    ngx.log(ngx.WARN, "metrics-timing median_ns=", samples[SAMPLES / 2])
    count = 0
  end
end

-- The same clock reads around nothing: what the timing itself adds.
function M.empty()
  C.clock_gettime(CLOCK_MONOTONIC, before)
  C.clock_gettime(CLOCK_MONOTONIC, after)
  count = count + 1
  samples[count] = tonumber(after.tv_sec - before.tv_sec) * 1e9 + tonumber(after.tv_nsec - before.tv_nsec)
  if count == SAMPLES then
    table.sort(samples)
    ngx.log(ngx.WARN, "metrics-timing median_ns=", samples[SAMPLES / 2])
    count = 0
  end
end

return M

-- The machine-readable summary line both wrk scripts print for their Python drivers (bench/ingest.py,
-- bench/soak.py): `require("report")` finds it through LUA_PATH, which the drivers set to this directory.

local report = {}

-- Status codes counted per thread by the scripts' response() (each thread's `codes` global), summed.
local function status_counts(threads)
  local totals, statuses = {}, {}
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("codes") or {}) do
      totals[status] = (totals[status] or 0) + count
    end
  end
  for status, count in pairs(totals) do
    statuses[#statuses + 1] = string.format('"%d": %d', status, count)
  end
  return table.concat(statuses, ", ")
end

-- One `WRK_RESULT {json}` line (latencies in microseconds), from wrk's done() arguments.
function report.write(threads, summary, latency)
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests": %d, "duration_us": %d, "errors": {"connect": %d, "read": %d, "write": %d, ' ..
    '"status": %d, "timeout": %d}, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, ' ..
    '"codes": {%s}}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, status_counts(threads)))
end

return report

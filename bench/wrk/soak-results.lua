-- wrk script for bench/soak.py: relay results at a steady rate, each job in_progress then completed.
--
-- Environment:
--   BODY_FILE    two JSON body templates, one a line (in_progress, then completed); placeholders __JOB__
--                (the job's check_run_id), __PR__ (PR number), __SHA__ (head SHA), __BACKEND__ (verified repo),
--                __JOBNAME__ (job name), __CONCLUSION__ (the completed callback's conclusion)
--   RELAY_TOKEN  sent in X-OOT-Relay-Token
--   RUN_ID       makes job keys unique across the minutes' wrk runs against one server
--   RATE         requests a second over all connections (each connection waits CONNECTIONS/RATE between two)
--   CONNECTIONS  wrk's -c (a wrk script cannot read it)
--   PRS          PR numbers cycle over this many
--   JOBS         0 (default): every job is new; N: each connection cycles over N jobs, so the stored data
--                stops growing once each was posted (a completed callback posted again is a new version of
--                its record; an in_progress one after it is stale and changes nothing)
--
-- A connection posts a job's in_progress and then its completed, so every pair lands in order.

local path = "/api/oot/results"
local token = os.getenv("RELAY_TOKEN") or ""
local run = os.getenv("RUN_ID") or tostring(os.time())
local rate = tonumber(os.getenv("RATE") or "100")
local connections = tonumber(os.getenv("CONNECTIONS") or "1")
local prs = tonumber(os.getenv("PRS") or "50")
local jobs = tonumber(os.getenv("JOBS") or "0")
local next_tid = 0
local threads = {}

function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
  table.insert(threads, thread)
end

local templates = {}
local n = 0
local pause_ms = 0
codes = {}

function init(args)
  local file = assert(io.open(assert(os.getenv("BODY_FILE"), "BODY_FILE is not set"), "r"))
  for line in file:lines() do
    if #line > 0 then table.insert(templates, line) end
  end
  file:close()
  assert(#templates == 2, "BODY_FILE must hold two templates")
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["X-OOT-Relay-Token"] = token
  pause_ms = 1000 * connections / rate
end

-- The same pause on every connection: connections / pause = the rate, while answers are faster than it.
function delay()
  return pause_ms
end

function request()
  local job = math.floor(n / 2)
  if jobs > 0 then job = job % jobs end
  local second = n % 2 == 1
  n = n + 1
  local id = run .. "-" .. tostring(tid) .. "-" .. tostring(job)
  local pr = 190000 + (job * 7 + tid) % prs
  local values = {
    JOB = id, PR = tostring(pr), SHA = string.format("%040x", pr),
    BACKEND = "soak/backend-" .. tostring(job % 10), JOBNAME = "test-" .. tostring(job % 7),
    CONCLUSION = (job % 5 == 0) and "failure" or "success",
  }
  local body = string.gsub(templates[second and 2 or 1], "__(%u+)__", function(name) return values[name] end)
  return wrk.format("POST", path, nil, body)
end

function response(status, headers, body)
  codes[status] = (codes[status] or 0) + 1
end

-- One machine-readable line for bench/soak.py (bench/wrk/report.lua).
local report = require("report")

function done(summary, latency, requests)
  report.write(threads, summary, latency)
end

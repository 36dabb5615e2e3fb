-- wrk script for bench/ingest.py: POST relay callbacks to /api/oot/results, each on a job of its own.
--
-- Environment:
--   BODY_FILE    JSON body templates, one a line. Placeholders: __CRID__ (check_run_id) and, optionally,
--                __PR__ (PR number), __SHA__ (head SHA), __DLV__ (delivery id).
--   RELAY_TOKEN  sent in X-OOT-Relay-Token
--   RUN_ID       makes keys unique across wrk runs against one server (default: the clock)
--   LIMIT        optional: each thread stops after this many answers and prints WRK_LIMIT_REACHED (answers
--                are then counted by status)
--
-- With one template every request gets a new check_run_id. With several, request n posts template
-- n mod T, and the T requests of one "round" share a check_run_id, a PR (100000 + round mod 1000), a head
-- SHA and a delivery: an in_progress -> completed pair in the templates lands on one job, like real traffic.
-- Templates are split at their placeholders once; a request is a table.concat, not a search of ~12 KB.

local path = "/api/oot/results"
local token = os.getenv("RELAY_TOKEN") or ""
local run = os.getenv("RUN_ID") or tostring(os.time())
local limit = tonumber(os.getenv("LIMIT") or "")
local PR_COUNT = 1000
local KNOWN = { CRID = true, PR = true, SHA = true, DLV = true }

local threads = {}
local next_tid = 0

function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
  table.insert(threads, thread)
end

-- A template as a list of pieces: literal strings and {name} placeholders.
local function split(line)
  local pieces, pos = {}, 1
  while true do
    local s, e, name = string.find(line, "__(%u+)__", pos)
    if not s then break end
    if KNOWN[name] then
      table.insert(pieces, string.sub(line, pos, s - 1))
      table.insert(pieces, { name })
    else
      table.insert(pieces, string.sub(line, pos, e))
    end
    pos = e + 1
  end
  table.insert(pieces, string.sub(line, pos))
  return pieces
end

local templates = {}
local n = 0
codes = {}

function init(args)
  local file = assert(io.open(assert(os.getenv("BODY_FILE"), "BODY_FILE is not set"), "r"))
  for line in file:lines() do
    if #line > 0 then table.insert(templates, split(line)) end
  end
  file:close()
  assert(#templates > 0, "BODY_FILE holds no template")
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["X-OOT-Relay-Token"] = token
  if limit then
    -- Defined only with LIMIT: wrk skips parsing answers when no response() exists.
    local answered = 0
    response = function(status, headers, body)
      codes[status] = (codes[status] or 0) + 1
      answered = answered + 1
      if answered == limit then
        -- wrk itself runs until -d is over whatever its threads do: tell bench/ingest.py, which sends
        -- SIGINT (wrk then reports as usual).
        io.write("WRK_LIMIT_REACHED\n")
        io.flush()
        wrk.thread:stop()
      end
    end
  end
end

function request()
  local count = #templates
  local pieces = templates[(n % count) + 1]
  local round = math.floor(n / count)
  n = n + 1
  local crid = run .. "-" .. tostring(tid) .. "-" .. tostring(round)
  local pr = 100000 + round % PR_COUNT
  local values = { CRID = crid, PR = tostring(pr), SHA = string.format("%040x", pr), DLV = crid .. "-delivery" }
  local out = {}
  for i = 1, #pieces do
    local piece = pieces[i]
    out[i] = type(piece) == "table" and values[piece[1]] or piece
  end
  return wrk.format("POST", path, nil, table.concat(out))
end

-- One machine-readable line for bench/ingest.py (bench/wrk/report.lua).
local report = require("report")

function done(summary, latency, requests)
  report.write(threads, summary, latency)
end

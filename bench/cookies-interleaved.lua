-- wrk script for bench/scale.sh INTERLEAVE=S: like cookies.lua (a DIFFERENT
-- session cookie per request, cut out of $COOKIE_FILE by offset), but the
-- run alternates between two sets every S seconds of the wall clock: the
-- first $SMALL lines of the file in even slots, all of its lines in odd
-- ones. Host noise that lasts longer than a slot then falls on both sets
-- alike, which two separate wrk runs cannot promise.
--
-- Requests are counted per second in request(): with a fixed number of
-- connections each sends its next request when the last one is answered, so
-- requests started per second are responses per second (a response()
-- callback would make wrk parse every response for Lua, and wrk would set
-- the pace). os.time() has a resolution of one second, so slots start on
-- whole seconds. At the end, the first and the last second of the run are
-- dropped (partial), and each set's rate is the mean over its seconds:
--   RESULT_IL slot=S small_rps=R small_secs=N large_rps=R large_secs=N
-- Run it with one thread (wrk -t1): done() reads that thread's counters.
local path = os.getenv("COOKIE_FILE") or error("set COOKIE_FILE")
local small = tonumber(os.getenv("SMALL") or error("set SMALL"))
local slot = tonumber(os.getenv("SLOT") or "2")
local f = assert(io.open(path, "rb"))
local data = f:read("*a")
f:close()
local width = data:find("\n", 1, true) or error(path .. ": no complete line")
local count = math.floor(#data / width)
if count * width ~= #data then
  error(path .. ": lines differ in length")
end
if small < 1 or small >= count then
  error("SMALL must be between 1 and the file's line count - 1")
end

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

local headers, next_small, next_large
per_second = {}

function init(args)
  headers = {}
  for k, v in pairs(wrk.headers) do headers[k] = v end
  math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "0", 16) % 100000)
  next_small = math.random(0, small - 1)
  next_large = math.random(0, count - 1)
end

function request()
  local now = os.time()
  per_second[now] = (per_second[now] or 0) + 1
  local line
  if math.floor(now / slot) % 2 == 1 then
    line = next_large
    next_large = next_large + 1
    if next_large == count then next_large = 0 end
  else
    line = next_small
    next_small = next_small + 1
    if next_small == small then next_small = 0 end
  end
  local off = line * width
  headers["Cookie"] = data:sub(off + 1, off + width - 1)
  return wrk.format(nil, nil, headers)
end

function done(summary, latency, requests)
  local counts = threads[1]:get("per_second")
  local first, last
  for t in pairs(counts) do
    if not first or t < first then first = t end
    if not last or t > last then last = t end
  end
  local sum, secs = { [0] = 0, [1] = 0 }, { [0] = 0, [1] = 0 }
  for t = first + 1, last - 1 do
    local set = math.floor(t / slot) % 2
    sum[set] = sum[set] + (counts[t] or 0)
    secs[set] = secs[set] + 1
  end
  local e = summary.errors
  io.write(string.format(
    "RESULT_IL slot=%d small_rps=%.1f small_secs=%d large_rps=%.1f large_secs=%d " ..
    "requests=%d err_connect=%d err_read=%d err_write=%d err_status=%d err_timeout=%d\n",
    slot, secs[0] > 0 and sum[0] / secs[0] or 0, secs[0], secs[1] > 0 and sum[1] / secs[1] or 0, secs[1],
    summary.requests, e.connect, e.read, e.write, e.status, e.timeout))
end

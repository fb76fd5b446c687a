-- wrk script: every request carries a DIFFERENT session cookie, cycling over
-- the file $COOKIE_FILE (one `Cookie:` value per line, as printed by
-- `sessiongate session mint --count N`). Other headers given with -H
-- (User-Agent!) are kept.
--
-- Memory: the file stays ONE Lua string (a million cookies ≈ 62 MB) and each
-- request cuts its line out by offset, instead of a table of a million
-- strings (several times that). That needs every line to have the same
-- length, which minted cookies have (fixed name, 43-character token).
--
-- Each wrk run starts at a random line, so successive runs touch different
-- sessions. At the end one machine-readable line is printed (µs).
local path = os.getenv("COOKIE_FILE") or error("set COOKIE_FILE")
local f = assert(io.open(path, "rb"))
local data = f:read("*a")
f:close()
local width = data:find("\n", 1, true) or error(path .. ": no complete line")
local count = math.floor(#data / width)
if count * width ~= #data then
  error(path .. ": lines differ in length")
end

local headers, next_line

function init(args)
  headers = {}
  for k, v in pairs(wrk.headers) do headers[k] = v end
  math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "0", 16) % 100000)
  next_line = math.random(0, count - 1)
end

function request()
  local off = next_line * width
  headers["Cookie"] = data:sub(off + 1, off + width - 1)
  next_line = next_line + 1
  if next_line == count then next_line = 0 end
  return wrk.format(nil, nil, headers)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT cookies=%d requests=%d duration_us=%d p50_us=%d p99_us=%d " ..
    "err_connect=%d err_read=%d err_write=%d err_status=%d err_timeout=%d\n",
    count, summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end

-- wrk script: POST /orders/<handle>/cancel, each request naming a handle no other request of the run names.
--
--   wrk -t T -c C -d D -s bench/wrk/cancel.lua -H 'Authorization: Basic ...' URL -- PREFIX START T [LIMIT]
--
-- Thread t (0 .. T-1) sends PREFIX<START + t + k*T> for k = 0, 1, 2 ..., so threads never collide and
-- every handle is used at most once; seed at least START + T * (most requests of one thread) orders.
-- LIMIT > 0 stops each thread after LIMIT / T responses (a fixed number of requests instead of a
-- duration, or with one: whichever comes first); requests already sent on its other connections
-- go unanswered but may still reach the server, so seed C more.
-- done() prints one line "BENCH-JSON {...}" with the totals, latency percentiles (µs) and failures;
-- `issued` counts requests sent, `requests` (wrk's own count) those answered.

wrk.method = "POST"
wrk.body = "{}"
wrk.headers["Content-Type"] = "application/json"

local threads = {}
local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  table.insert(threads, thread)
  next_id = next_id + 1
end

function init(args)
  prefix = args[1] or "load-"
  start = tonumber(args[2] or "0")
  step = tonumber(args[3] or "1")
  local limit = tonumber(args[4] or "0")
  quota = 0
  if limit > 0 then
    quota = math.ceil(limit / step)
  end
  issued = 0
  answered = 0
  failed = 0
  first_failure = ""
end

function request()
  local n = start + id + issued * step
  issued = issued + 1
  return wrk.format(nil, "/orders/" .. prefix .. n .. "/cancel")
end

function response(status, headers, body)
  answered = answered + 1
  -- wrk counts only status > 399 as an error; any answer other than 2xx fails a cancel.
  if status < 200 or status > 299 then
    failed = failed + 1
    if first_failure == "" then
      first_failure = status .. " " .. string.sub(body or "", 1, 300)
    end
  end
  if quota > 0 and answered == quota then
    -- wrk's main thread sleeps out the whole duration regardless; the harness reads this line
    -- and sends SIGINT (wrk's "stop now") once every thread has said it.
    io.stderr:write("BENCH-THREAD-DONE\n")
    io.stderr:flush()
    wrk.thread:stop()
  end
end

local function escape(text)
  return (string.gsub(text, '[%c"\\]', function(c) return string.format("\\u%04x", string.byte(c)) end))
end

function done(summary, latency, requests)
  local issued_total, failed_total, most_issued, failure = 0, 0, 0, ""
  for _, thread in ipairs(threads) do
    local n = thread:get("issued")
    issued_total = issued_total + n
    failed_total = failed_total + thread:get("failed")
    if n > most_issued then most_issued = n end
    if failure == "" then failure = thread:get("first_failure") end
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH-JSON {"threads":%d,"requests":%d,"duration_us":%d,"bytes":%d,"issued":%d,'
      .. '"most_issued_per_thread":%d,"non_2xx":%d,"first_failure":"%s","errors":{"connect":%d,"read":%d,"write":%d,"status":%d,'
      .. '"timeout":%d},"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f}}\n',
    #threads, summary.requests, summary.duration, summary.bytes, issued_total, most_issued, failed_total,
    escape(failure), e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end

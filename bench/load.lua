-- wrk script for /me/message, driven by bench/run.py:
--   wrk ... -s bench/load.lua http://host:port/me/message -- TOKENS MODE THREADS OFFSET
-- TOKENS: a file of session tokens, one per line. Each wrk thread takes every THREADS-th line
--   (its own share) and sends them in turn, starting OFFSET requests in, so that a run picks
--   up where the previous one against the same server stopped. A file of a few hundred users'
--   tokens is the frontend pattern (each token reused); a file of many distinct tokens makes
--   every request a verification-cache miss.
-- MODE: get | put | mix (every 10th request a PUT, the others GET).
-- done() prints one line, `BENCH_RESULT {json}`: counts, latency percentiles (microseconds),
-- socket errors and the HTTP status counts of all threads.

local threads = {}

function setup(thread)
  thread:set("thread_index", #threads)
  table.insert(threads, thread)
end

function init(args)
  local path, nthreads, offset = args[1], tonumber(args[3]), tonumber(args[4] or "0")
  mode = args[2]
  tokens = {}
  local line_number = 0
  for line in io.lines(path) do
    if line ~= "" then
      if line_number % nthreads == thread_index then
        tokens[#tokens + 1] = "Bearer " .. line
      end
      line_number = line_number + 1
    end
  end
  if #tokens == 0 then
    error("no tokens for thread " .. thread_index .. " in " .. path)
  end
  position = math.floor(offset / nthreads) % #tokens + 1
  sent = 0
  statuses = {}
  put_body = '{"message": "The best way to predict the future is to invent it."}'
end

function request()
  local token = tokens[position]
  position = position % #tokens + 1
  sent = sent + 1
  if mode == "put" or (mode == "mix" and sent % 10 == 0) then
    return wrk.format("PUT", nil, {
      ["Authorization"] = token,
      ["Content-Type"] = "application/json",
    }, put_body)
  end
  return wrk.format("GET", nil, { ["Authorization"] = token })
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

local function json_value(value)
  if type(value) == "number" and (value ~= value or value == math.huge or value == -math.huge) then
    return "null" -- no requests completed: NaN or infinite latency figures
  end
  return tostring(value)
end

local function json_object(map)
  local parts = {}
  for key, value in pairs(map) do
    parts[#parts + 1] = string.format('"%s": %s', tostring(key), json_value(value))
  end
  return "{" .. table.concat(parts, ", ") .. "}"
end

function done(summary, latency, requests)
  local counts = {}
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do
      local key = tostring(status)
      counts[key] = (counts[key] or 0) + count
    end
  end
  local result = {
    requests = summary.requests,
    duration_us = summary.duration,
    bytes = summary.bytes,
    latency_mean_us = latency.mean,
    latency_max_us = latency.max,
    p50_us = latency:percentile(50),
    p90_us = latency:percentile(90),
    p99_us = latency:percentile(99),
    errors = json_object(summary.errors),
    statuses = json_object(counts),
  }
  io.write("BENCH_RESULT ", json_object(result), "\n")
end

-- wrk script for the llm-sidecar bench. Configured through the environment:
--   BENCH_MODE      json | stream | responses (request body, and what counts as an intact answer;
--                   responses: a /v1/responses stream of named events)
--   BENCH_DELAY_MS  think time per connection before each request (the paced latency run)
--   BENCH_CHUNKS    chat.completion.chunk events a stream must carry, or response.output_text.delta
--                   events a Responses stream must (default 50)
--   BENCH_EXPECT    "x-sidecar-backend=secondary,x-sidecar-attempts=2": response headers that show
--                   which path served the request; a mismatch counts as "offpath", not as bad
--   BENCH_HISTOGRAM 1: also print every latency sample, as "BENCH_HIST us:count,..."
-- done() prints one line "BENCH_RESULT {json}" that bench/wrk.py parses.

local mode = os.getenv("BENCH_MODE") or "json"
local delay_ms = tonumber(os.getenv("BENCH_DELAY_MS") or "0")
local chunks = tonumber(os.getenv("BENCH_CHUNKS") or "50")
local expect = {}
for name, value in string.gmatch(os.getenv("BENCH_EXPECT") or "", "([^=,]+)=([^,]+)") do
  expect[string.lower(name)] = value
end

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local stream = "false"
if mode == "stream" then stream = "true" end
wrk.body = '{"model":"bench-model","stream":' .. stream .. ',"max_tokens":64,'
  .. '"messages":[{"role":"system","content":"You are a terse assistant."},'
  .. '{"role":"user","content":"Say hello to the benchmark in one short sentence, please."}]}'
if mode == "responses" then
  wrk.body = '{"model":"bench-model","stream":true,"max_output_tokens":64,'
    .. '"instructions":"You are a terse assistant.",'
    .. '"input":"Say hello to the benchmark in one short sentence, please."}'
end

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  bad = 0
  checked = 0
  offpath = 0
end

if delay_ms > 0 then
  function delay()
    return delay_ms
  end
end

local function intact_stream(body)
  -- every content token, in order, then [DONE]; and exactly the expected number of chunks
  local pos = 1
  for i = 0, chunks - 2 do
    local _, e = string.find(body, '"w' .. i .. ' "', pos, true)
    if not e then return false end
    pos = e + 1
  end
  if not string.find(body, "data: [DONE]", pos, true) then return false end
  local n, at = 0, 1
  while true do
    local _, e = string.find(body, "chat.completion.chunk", at, true)
    if not e then break end
    n = n + 1
    at = e + 1
  end
  return n == chunks and not string.find(body, '"error"', 1, true)
end

local function count(body, needle)
  local n, at = 0, 1
  while true do
    local _, e = string.find(body, needle, at, true)
    if not e then return n end
    n = n + 1
    at = e + 1
  end
end

local function intact_responses(body)
  -- response.created first, every delta in order, response.completed last; no [DONE] in this API
  local created = "event: response.created\n"
  if string.sub(body, 1, #created) ~= created then return false end
  local pos = #created + 1
  for i = 0, chunks - 1 do
    local _, e = string.find(body, '"w' .. i .. ' "', pos, true)
    if not e then return false end
    pos = e + 1
  end
  if not string.find(body, "event: response.completed\n", pos, true) then return false end
  return count(body, "event: response.output_text.delta\n") == chunks
    and not string.find(body, '"error"', 1, true)
end

local function on_path(headers)
  for name, want in pairs(expect) do
    local got
    for k, v in pairs(headers) do
      if string.lower(k) == name then got = v end
    end
    if got ~= want then return false end
  end
  return true
end

local function intact_json(body)
  return string.find(body, '"chat.completion"', 1, true) ~= nil
    and string.find(body, "Hello from the bench upstream.", 1, true) ~= nil
end

function response(status, headers, body)
  checked = checked + 1
  local ok
  if mode == "stream" then
    ok = intact_stream(body)
  elseif mode == "responses" then
    ok = intact_responses(body)
  else
    ok = intact_json(body)
  end
  if status ~= 200 or not ok then bad = bad + 1 end
  if next(expect) and not on_path(headers) then offpath = offpath + 1 end
end

function done(summary, latency, requests)
  local total_bad, total_checked, total_offpath = 0, 0, 0
  for _, t in ipairs(threads) do
    total_bad = total_bad + (t:get("bad") or 0)
    total_checked = total_checked + (t:get("checked") or 0)
    total_offpath = total_offpath + (t:get("offpath") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"bad":%d,"checked":%d,"offpath":%d,'
      .. '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,'
      .. '"p50_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%f}\n',
    summary.requests, summary.duration, total_bad, total_checked, total_offpath,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean))
  if os.getenv("BENCH_HISTOGRAM") == "1" then
    -- wrk keeps one counter per microsecond; pooled across slices they give exact percentiles.
    -- latency(i), 1-based, is the i-th distinct value and its count (quadratic: paced runs only).
    local parts = {}
    for i = 1, #latency do
      local us, n = latency(i)
      parts[#parts + 1] = string.format("%d:%d", us, n)
    end
    io.write("BENCH_HIST " .. table.concat(parts, ",") .. "\n")
  end
end

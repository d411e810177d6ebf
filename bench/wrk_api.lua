-- wrk script of bench/bench_api.py. Read from the environment:
--   BENCH_METHOD (GET or POST), BENCH_PATHS (comma-separated, taken in turn),
--   BENCH_BODY (optional JSON body), BENCH_TOKEN (optional DRF token).
-- Prints one JSON line of figures when the run is done.
local method = os.getenv("BENCH_METHOD") or "GET"
local body = os.getenv("BENCH_BODY")
local token = os.getenv("BENCH_TOKEN")
local headers = { ["Content-Type"] = "application/json" }
if token and token ~= "" then
  headers["Authorization"] = "Token " .. token
end
local paths = {}
for path in string.gmatch(os.getenv("BENCH_PATHS") or "/", "[^,]+") do
  paths[#paths + 1] = path
end

local next_path = 0
request = function()
  next_path = next_path % #paths + 1
  return wrk.format(method, paths[next_path], headers, body)
end

done = function(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"non_2xx":%d,"socket_errors":%d,"p50_us":%d,"p99_us":%d}\n',
    summary.requests, summary.duration, errors.status,
    errors.connect + errors.read + errors.write + errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end

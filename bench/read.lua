-- wrk script: GET a random seeded contact by id, or (with path "list") the first list page.
-- Arguments: the API key, the first and last seeded ids, "get" or "list".
local key, first, last, what

function init(args)
  key, first, last, what = args[1], tonumber(args[2]), tonumber(args[3]), args[4]
  math.randomseed(os.time() + tonumber(string.sub(tostring({}), 8), 16) % 100000)
end

function request()
  local path = "/public-api/v1/contacts?per_page=200"
  if what == "get" then
    path = "/public-api/v1/contacts/" .. math.random(first, last)
  end
  return wrk.format("GET", path, {["Authorization"] = "Bearer " .. key})
end
function done(summary, latency, requests)
  io.write(string.format("BENCH requests=%d duration_us=%d non2xx=%d errors=%d p50_us=%d p90_us=%d p99_us=%d\n",
    summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99)))
end

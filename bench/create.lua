-- wrk script: POST a seed-shaped contact with unique emails on every request.
-- Arguments (after --): the API key, a run tag that keeps emails unique across runs.
local key, tag
local counter = 0
local threads = 0

function setup(thread)
  thread:set("thread_id", threads)
  threads = threads + 1
end

function init(args)
  key, tag = args[1], args[2]
end

function request()
  counter = counter + 1
  local who = string.format("%s-%d-%d", tag, thread_id, counter)
  local body = string.format(
    '{"emails":["%s@example.com","%s@example.org"],"phones":["+1234567890","+0987654321"],' ..
    '"names":["John Doe","Johnny"],"locations":["New York, NY","Los Angeles, CA"]}', who, who)
  return wrk.format("POST", "/public-api/v1/contacts",
    {["Authorization"] = "Bearer " .. key, ["Content-Type"] = "application/json"}, body)
end

function done(summary, latency, requests)
  io.write(string.format("BENCH requests=%d duration_us=%d non2xx=%d errors=%d p50_us=%d p90_us=%d p99_us=%d\n",
    summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99)))
end

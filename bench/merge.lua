-- wrk script: POST a contact whose email is a seeded one (so it merges) with a new phone.
-- Arguments: the API key, a run tag, the number of seeded contacts.
local key, tag, seeded
local counter = 0

function init(args)
  key, tag, seeded = args[1], args[2], tonumber(args[3])
  math.randomseed(os.time() + tonumber(string.sub(tostring({}), 8), 16) % 100000)
end

function request()
  counter = counter + 1
  local body = string.format(
    '{"emails":["seed%d@example.com"],"phones":["+%d %07d"],"names":["Seed"]}',
    math.random(1, seeded), math.random(10, 99), counter % 10000000)
  return wrk.format("POST", "/public-api/v1/contacts",
    {["Authorization"] = "Bearer " .. key, ["Content-Type"] = "application/json"}, body)
end
function done(summary, latency, requests)
  io.write(string.format("BENCH requests=%d duration_us=%d non2xx=%d errors=%d p50_us=%d p90_us=%d p99_us=%d\n",
    summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99)))
end

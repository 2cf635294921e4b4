-- wrk script for every scenario. Arguments (after --): MODE KEY TAG SEEDED FIRST_ID LAST_ID
-- [PAUSE_MS]: each connection waits about that long between requests (a paced, lighter load).
--   create: a seed-shaped contact (2 emails, phones, names, locations) with unique emails
--   merge:  one of the SEEDED emails (seed1..seedN@example.com), so it merges, with a new phone
--   resend: one of the SEEDED emails and nothing else: a merge that brings nothing new
--   get:    a random contact id between FIRST_ID and LAST_ID
--   list:   the first page of 200
local mode, key, tag, seeded, first, last, pause
local counter = 0
local threads = 0

function setup(thread)
  thread:set("thread_id", threads)
  threads = threads + 1
end

function init(args)
  mode, key, tag = args[1], args[2], args[3]
  seeded, first, last = tonumber(args[4]), tonumber(args[5]), tonumber(args[6])
  pause = tonumber(args[7] or "0")
  math.randomseed(os.time() + thread_id * 7919)
end

function delay()
  -- Uniformly 0..2x the mean, so that the connections do not fall into step and arrive in bursts.
  return math.random(0, 2 * pause)
end

local function post(body)
  return wrk.format("POST", "/public-api/v1/contacts",
    {["Authorization"] = "Bearer " .. key, ["Content-Type"] = "application/json"}, body)
end

function request()
  counter = counter + 1
  if mode == "create" then
    local who = string.format("%s-%d-%d", tag, thread_id, counter)
    return post(string.format(
      '{"emails":["%s@example.com","%s@example.org"],"phones":["+1234567890","+0987654321"],' ..
      '"names":["John Doe","Johnny"],"locations":["New York, NY","Los Angeles, CA"]}', who, who))
  elseif mode == "merge" then
    return post(string.format(
      '{"emails":["seed%d@example.com"],"phones":["+%d %07d"],"names":["Seed"]}',
      math.random(1, seeded), 10 + thread_id, counter % 10000000))
  elseif mode == "resend" then
    return post(string.format('{"emails":["seed%d@example.com"]}', math.random(1, seeded)))
  elseif mode == "get" then
    return wrk.format("GET", "/public-api/v1/contacts/" .. math.random(first, last),
      {["Authorization"] = "Bearer " .. key})
  end
  return wrk.format("GET", "/public-api/v1/contacts?per_page=200",
    {["Authorization"] = "Bearer " .. key})
end

function done(summary, latency, requests)
  io.write(string.format("BENCH requests=%d duration_us=%d non2xx=%d errors=%d p50_us=%d p90_us=%d p99_us=%d\n",
    summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99)))
end

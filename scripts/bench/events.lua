-- wrk script: the event webhook with realistic sequences. Each conversation (those the answer
-- run created, CON-b<thread>-<n>) gets its seven events in order: inbound started and answered,
-- outbound started, ringing, answered and completed, inbound completed. Every tenth request
-- repeats the previous event, as Vonage's retries do.
local next_thread = 0
function setup(thread)
  next_thread = next_thread + 1
  thread:set("tid", next_thread)
end

local steps = {
  { "in", "inbound", "started" }, { "in", "inbound", "answered" },
  { "out", "outbound", "started" }, { "out", "outbound", "ringing" },
  { "out", "outbound", "answered" }, { "out", "outbound", "completed" },
  { "in", "inbound", "completed" },
}

function init(args)
  n = 0
  m = 0
  last = nil
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  n = n + 1
  if n % 10 == 0 and last then
    return wrk.format(nil, "/webhooks/event", nil, last)
  end
  m = m + 1
  local k = math.floor((m - 1) / #steps) + 1
  local step = steps[((m - 1) % #steps) + 1]
  local conv = "CON-b" .. (os.getenv("VP_RUN") or "0") .. "-" .. tid .. "-" .. k
  local extra = ""
  if step[3] == "completed" then
    extra = ',"duration":"42","rate":"0.01200000","price":"0.00840000"'
  end
  last = string.format(
    '{"uuid":"%s-%s","conversation_uuid":"%s","status":"%s","direction":"%s",'
      .. '"from":"12125550000","to":"16465550000","timestamp":"2026-01-01T00:%02d:%02d.%03dZ"%s}',
    conv, step[1], conv, step[3], step[2], math.floor(m / 60) % 60, m % 60, m % 1000, extra)
  return wrk.format(nil, "/webhooks/event", nil, last)
end

-- wrk script: the answer webhook as Vonage calls it (GET with a query string), from random
-- existing (caller, proxy number) pairs read from $VP_PAIRS, each request a new conversation.
local next_thread = 0
function setup(thread)
  next_thread = next_thread + 1
  thread:set("tid", next_thread)
end

-- Requests are formatted in init(), before the clock starts, so that the load generator's own
-- Lua work does not count against the service (the /healthz run sends one fixed request);
-- VP_REQUESTS_PER_THREAD of them (each a new conversation), then formatted on the fly.
function init(args)
  pairs_list = {}
  for line in io.lines(os.getenv("VP_PAIRS")) do
    local caller, proxy = line:match("^(%d+)%s+(%d+)$")
    if caller then
      pairs_list[#pairs_list + 1] = { caller, proxy }
    end
  end
  math.randomseed(tid * 7919)
  run = os.getenv("VP_RUN") or "0"
  counter = 0
  prepared = {}
  for i = 1, tonumber(os.getenv("VP_REQUESTS_PER_THREAD") or "400000") do
    prepared[i] = format_request(i)
  end
end

function format_request(n)
  local p = pairs_list[math.random(#pairs_list)]
  local conv = "CON-b" .. run .. "-" .. tid .. "-" .. n
  return wrk.format("GET", "/webhooks/answer?from=" .. p[1] .. "&to=" .. p[2]
    .. "&uuid=" .. conv .. "-in&conversation_uuid=" .. conv)
end

function request()
  counter = counter + 1
  return prepared[counter] or format_request(counter)
end

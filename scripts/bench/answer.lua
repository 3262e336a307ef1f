-- wrk script: the answer webhook as Vonage calls it (GET with a query string), from random
-- existing (caller, proxy number) pairs read from $VP_PAIRS, each request a new conversation.
local next_thread = 0
function setup(thread)
  next_thread = next_thread + 1
  thread:set("tid", next_thread)
end

function init(args)
  pairs_list = {}
  for line in io.lines(os.getenv("VP_PAIRS")) do
    local caller, proxy = line:match("^(%d+)%s+(%d+)$")
    if caller then
      pairs_list[#pairs_list + 1] = { caller, proxy }
    end
  end
  math.randomseed(tid * 7919)
  counter = 0
end

function request()
  counter = counter + 1
  local p = pairs_list[math.random(#pairs_list)]
  local conv = "CON-b" .. (os.getenv("VP_RUN") or "0") .. "-" .. tid .. "-" .. counter
  return wrk.format("GET", "/webhooks/answer?from=" .. p[1] .. "&to=" .. p[2]
    .. "&uuid=" .. conv .. "-in&conversation_uuid=" .. conv)
end

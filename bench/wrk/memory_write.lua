-- POST /orchestrate memory.write with unique text per request (so no request is a replay).
package.path = package.path .. ";" .. debug.getinfo(1, "S").source:match("@(.*/)") .. "?.lua"
require "report"
require "threads"

function request()
  n = n + 1
  local body = string.format(
    '{"intent":"memory.write","inputs":{"text":"note %d-%d-%d: the Eiffel Tower is in Paris","tags":["bench"]}}',
    run, tid, n)
  return wrk.format("POST", "/orchestrate", {["Content-Type"] = "application/json"}, body)
end

-- POST /orchestrate for the flow intent bench.flow with unique inputs (no replays).
package.path = package.path .. ";" .. debug.getinfo(1, "S").source:match("@(.*/)") .. "?.lua"
require "report"
require "threads"

function request()
  n = n + 1
  local body = string.format('{"intent":"bench.flow","inputs":{"run":%d,"t":%d,"n":%d}}', run, tid, n)
  return wrk.format("POST", "/orchestrate", {["Content-Type"] = "application/json"}, body)
end

-- POST /orchestrate memory.write (unique text) with a bearer API key: the REST side of the
-- /mcp comparison, under the same authentication.
package.path = package.path .. ";" .. debug.getinfo(1, "S").source:match("@(.*/)") .. "?.lua"
require "report"
require "threads"

local token = os.getenv("TOKEN")

function request()
  n = n + 1
  local body = string.format(
    '{"intent":"memory.write","inputs":{"text":"note %d-%d-%d: the Eiffel Tower is in Paris","tags":["bench"]}}',
    run, tid, n)
  return wrk.format("POST", "/orchestrate",
    {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token}, body)
end

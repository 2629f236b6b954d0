-- POST /orchestrate memory.search for one or two random words of the seeded vocabulary
-- (bench/sql/scale.sql), with a tag filter on every fourth request.
package.path = package.path .. ";" .. debug.getinfo(1, "S").source:match("@(.*/)") .. "?.lua"
require "report"
require "threads"

local function word()
  -- The vocabulary is skewed like language: low numbers are common words.
  return "w" .. math.floor(20000 * math.random() ^ 2)
end

function request()
  n = n + 1
  local query = word()
  if n % 2 == 0 then query = query .. " " .. word() end
  local tags = ""
  if n % 4 == 0 then tags = string.format(',"tags":["t%d"]', math.random(0, 49)) end
  local body = string.format('{"intent":"memory.search","inputs":{"query":"%s"%s}}', query, tags)
  return wrk.format("POST", "/orchestrate", {["Content-Type"] = "application/json"}, body)
end

-- POST /mcp tools/call memory_write with unique text per request, the way a 2026-07-28 client
-- sends it (stateless: per-request _meta and the Mcp-Method/Mcp-Name headers), or within a
-- session when MCP_SESSION is set (2025-11-25: the answer is an SSE stream).
package.path = package.path .. ";" .. debug.getinfo(1, "S").source:match("@(.*/)") .. "?.lua"
require "report"
require "threads"

local session = os.getenv("MCP_SESSION")
local token = os.getenv("TOKEN")

function request()
  n = n + 1
  local headers = {
    ["Content-Type"] = "application/json",
    ["Accept"] = "application/json, text/event-stream",
    ["Authorization"] = "Bearer " .. token,
  }
  local meta = ""
  if session and session ~= "" then
    headers["Mcp-Session-Id"] = session
    headers["MCP-Protocol-Version"] = "2025-11-25"
  else
    headers["MCP-Protocol-Version"] = "2026-07-28"
    headers["Mcp-Method"] = "tools/call"
    headers["Mcp-Name"] = "memory_write"
    meta = ',"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28",'
      .. '"io.modelcontextprotocol/clientInfo":{"name":"wrk","version":"1"},'
      .. '"io.modelcontextprotocol/clientCapabilities":{}}'
  end
  local body = string.format(
    '{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"memory_write",'
      .. '"arguments":{"text":"note %d-%d-%d: the Eiffel Tower is in Paris","tags":["bench"]}%s}}',
    n, run, tid, n, meta)
  return wrk.format("POST", "/mcp", headers, body)
end

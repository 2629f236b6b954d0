// The official TypeScript MCP SDK as a client of /mcp: lists the tools, writes a memory and
// searches for it, then runs a call long enough to report progress. Prints one JSON object
// (what the Rust test asserts on).
//
// Usage: node mcp_client.mjs <url> <token> <sdk dir> <sleep ms>
import { pathToFileURL } from "node:url";
import { join } from "node:path";

const [url, token, sdkDir, sleepMs] = process.argv.slice(2);
const load = (path) => import(pathToFileURL(join(sdkDir, path)).href);
const { Client } = await load("dist/esm/client/index.js");
const { StreamableHTTPClientTransport } = await load("dist/esm/client/streamableHttp.js");

const transport = new StreamableHTTPClientTransport(new URL(url), {
  requestInit: { headers: { Authorization: `Bearer ${token}` } },
});
const client = new Client({ name: "orchestrator-ts-test", version: "1.0.0" });
await client.connect(transport);

const tools = await client.listTools();
const write = await client.callTool({
  name: "memory_write",
  arguments: { text: "the typescript sdk was here", tags: ["ts"] },
});
const search = await client.callTool({ name: "memory_search", arguments: { query: "typescript sdk" } });
const progress = [];
const slow = await client.callTool(
  { name: "system_sleep", arguments: { ms: Number(sleepMs) } },
  undefined,
  { onprogress: (p) => progress.push(p), resetTimeoutOnProgress: true, timeout: 120000 },
);
console.log(
  JSON.stringify({
    protocol: transport.protocolVersion,
    session: transport.sessionId ?? null,
    tools: tools.tools,
    write,
    search,
    slow,
    progress,
  }),
);
await transport.terminateSession().catch(() => {});
await client.close();

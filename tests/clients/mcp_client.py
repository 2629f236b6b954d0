"""The official Python MCP SDK as a client of /mcp: lists the tools, writes a memory and
searches for it. Prints one JSON object (what the Rust test asserts on).

Usage: mcp_client.py <url> <token> [mode]   (mode: auto (default), legacy, 2026-07-28)
"""

import asyncio
import json
import sys

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client


def dump(result):
    return result.model_dump(mode="json", by_alias=True, exclude_none=True)


async def main(url: str, token: str, mode: str) -> None:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60)
    async with Client(streamable_http_client(url, http_client=http), mode=mode) as client:
        tools = await client.list_tools()
        written = await client.call_tool(
            "memory_write", {"text": "the python sdk was here", "tags": ["py"]}
        )
        found = await client.call_tool("memory_search", {"query": "python sdk"})
        print(
            json.dumps(
                {
                    "protocol": client.protocol_version,
                    "tools": [dump(t) for t in tools.tools],
                    "write": dump(written),
                    "search": dump(found),
                }
            )
        )


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "auto"))

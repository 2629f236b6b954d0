#!/usr/bin/env python3
"""A minimal flow engine for the flow benchmark: answers every POST at once with
`{"ok": true, "bytes": <body length>}`, like an n8n webhook set to respond when the last node
finishes. Keep-alive HTTP/1.1 on asyncio, so the stub is not what limits the run.

    bench/flow/stub.py PORT
"""
import asyncio
import json
import sys


async def serve(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            body = await reader.readexactly(length) if length else b""
            out = json.dumps({"ok": True, "bytes": len(body)}).encode()
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                         b"content-length: " + str(len(out)).encode() + b"\r\n\r\n" + out)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main(port):
    server = await asyncio.start_server(serve, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))

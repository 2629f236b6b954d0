#!/usr/bin/env python3
"""N concurrent Server-Sent Events clients, one per job: each follows GET /jobs/{id}/stream
until `end` and records, for every live event, the delay from the event's `at` (when its row
was written) to its arrival here. Prints `ready` once every stream is open, then, when all
ended, `RESULT clients=… events=… p50_ms=… p99_ms=… max_ms=… reconnects=… failed=…`. A
stream that ends without `end` (the server said `reconnect`) is reopened with Last-Event-ID,
as EventSource does.

    sse_clients.py HOST PORT KEY JOB_IDS_FILE
"""
import asyncio
import json
import sys
import time
from datetime import datetime

host, port, key, ids_file = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
jobs = [line.strip() for line in open(ids_file) if line.strip()]
delays = []
failed = 0
reconnects = 0


def at_epoch(at: str) -> float:
    return datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()


async def follow(job: str, opened: asyncio.Event, counter: list) -> None:
    global failed, reconnects
    last_id = None
    history = True  # events before the job was claimed were written before we connected
    first = True
    try:
        while True:
            reader, writer = await asyncio.open_connection(host, port)
            resume = f"Last-Event-ID: {last_id}\r\n" if last_id else ""
            writer.write(
                (f"GET /jobs/{job}/stream HTTP/1.1\r\nHost: {host}:{port}\r\n"
                 f"Authorization: Bearer {key}\r\nAccept: text/event-stream\r\n{resume}\r\n")
                .encode())
            await writer.drain()
            status = await reader.readline()
            if b" 200 " not in status:
                raise RuntimeError(status)
            while (await reader.readline()) not in (b"\r\n", b""):
                pass
            if first:
                first = False
                counter[0] += 1
                if counter[0] == len(jobs):
                    opened.set()
            buf = b""
            while True:
                size = int((await reader.readline()).strip() or b"0", 16)  # chunked encoding
                if size == 0:
                    break
                buf += await reader.readexactly(size)
                await reader.readexactly(2)
                while b"\n\n" in buf:
                    block, buf = buf.split(b"\n\n", 1)
                    now = time.time()
                    event, data, event_id = "message", b"", None
                    for line in block.split(b"\n"):
                        if line.startswith(b"event:"):
                            event = line[6:].strip().decode()
                        elif line.startswith(b"data:"):
                            data += line[5:].strip()
                        elif line.startswith(b"id:"):
                            event_id = line[3:].strip().decode()
                    if event == "end":
                        writer.close()
                        return
                    if event == "message" and data:
                        last_id = event_id or last_id
                        e = json.loads(data)
                        if e["kind"] == "created" and history:
                            continue
                        history = False
                        delays.append((now - at_epoch(e["at"])) * 1000)
            writer.close()
            reconnects += 1
    except Exception as e:  # noqa: BLE001 - counted, reported
        failed += 1
        print(f"{job}: {e!r}", file=sys.stderr)


async def main() -> None:
    opened = asyncio.Event()
    counter = [0]
    tasks = [asyncio.create_task(follow(j, opened, counter)) for j in jobs]
    await asyncio.wait_for(opened.wait(), 60)
    print("ready", flush=True)
    await asyncio.gather(*tasks)
    delays.sort()
    pct = lambda q: delays[min(len(delays) - 1, int(q * len(delays)))] if delays else float("nan")
    print(f"RESULT clients={len(jobs)} events={len(delays)} p50_ms={pct(0.5):.1f} "
          f"p99_ms={pct(0.99):.1f} max_ms={delays[-1] if delays else float('nan'):.1f} "
          f"reconnects={reconnects} failed={failed}", flush=True)


asyncio.run(main())

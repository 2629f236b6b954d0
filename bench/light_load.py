#!/usr/bin/env python3
"""Insert-to-start latency under light load: N async system.echo requests at a steady rate,
one connection, tagged with an x-request-id prefix so their jobs can be found afterwards.

    light_load.py BASE_URL COUNT RATE_PER_SEC TAG
"""
import http.client
import json
import sys
import time
import urllib.parse

base, count, rate, tag = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
url = urllib.parse.urlparse(base)
conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
body = json.dumps({"intent": "system.echo", "inputs": {"light": True}, "async": True})
start = time.monotonic()
for i in range(count):
    # Steady pacing: each request at its slot, whatever the previous one took.
    slot = start + i / rate
    pause = slot - time.monotonic()
    if pause > 0:
        time.sleep(pause)
    conn.request("POST", "/orchestrate", body=body,
                 headers={"Content-Type": "application/json", "x-request-id": f"{tag}-{i}"})
    resp = conn.getresponse()
    resp.read()
    if resp.status != 202:
        sys.exit(f"request {i}: HTTP {resp.status}")

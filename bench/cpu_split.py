#!/usr/bin/env python3
"""Where the machine's CPU goes while a command runs: CPU seconds used by the server, by
PostgreSQL (every postgres process) and by the load generator, against what the cores offer.

    bench/cpu_split.py -- wrk -t2 -c64 -d20s -s bench/wrk/memory_write.lua http://127.0.0.1:18080

Counts come from /proc/<pid>/stat (utime + stime, children excluded); a process that starts and
ends inside the run (a short-lived backend) is counted from zero.
"""
import os
import subprocess
import sys
import time

TICK = os.sysconf("SC_CLK_TCK")
GROUPS = {"orchestrator": "server", "postgres": "postgres", "wrk": "load generator",
          "pgbench": "load generator"}


def snapshot():
    seen = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                raw = f.read()
        except OSError:
            continue
        comm = raw[raw.index("(") + 1:raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2:].split()
        seen[int(pid)] = (comm, int(fields[11]) + int(fields[12]))
    return seen


def main():
    cmd = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else sys.argv[1:]
    before, t0 = snapshot(), time.monotonic()
    proc = subprocess.Popen(cmd)
    last = {}
    # The load generator exits before the final snapshot: keep its latest reading.
    while proc.poll() is None:
        time.sleep(0.5)
        now = snapshot()
        last.update({pid: v for pid, v in now.items() if v[0] in GROUPS})
    after, elapsed = snapshot(), time.monotonic() - t0
    last.update({pid: v for pid, v in after.items() if v[0] in GROUPS})
    used = {}
    for pid, (comm, ticks) in last.items():
        start = before.get(pid, (comm, 0))[1]
        used[GROUPS[comm]] = used.get(GROUPS[comm], 0.0) + (ticks - start) / TICK
    cores = os.cpu_count()
    print(f"\nCPU over {elapsed:.1f} s on {cores} cores ({elapsed * cores:.1f} CPU-s offered):")
    for group in ("server", "postgres", "load generator"):
        s = used.get(group, 0.0)
        print(f"  {group:15} {s:6.1f} CPU-s  {100 * s / (elapsed * cores):5.1f} % of the machine")
    rest = elapsed * cores - sum(used.values())
    print(f"  {'everything else':15} {rest:6.1f} CPU-s  {100 * rest / (elapsed * cores):5.1f} % "
          "(idle, kernel threads, other processes)")
    sys.exit(proc.returncode)


if __name__ == "__main__":
    main()

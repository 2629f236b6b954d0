"""pgqueuer queue drain; run through bench/peers/pgqueuer_drain (which makes the database).

Env: DATABASE_URL (an empty database), JOBS, MANAGERS (queue managers in this process, each on
its own asyncpg connection as pgqueuer's tuning guide advises: 1), BATCH_SIZE (jobs per dequeue
and per completion flush: 500; the guide says to raise it from the default 10 for short jobs),
PG_POSTMASTER_PID (optional: PostgreSQL CPU per job from /proc).

Tuning, 20,000 jobs on the system PostgreSQL with two busy cores: batch 10 with 5 managers
(pgqueuer's own benchmark) 3,000 jobs/s; batch 50 9,600; batch 100-1000 with 1, 2 or 5 managers
14,000-16,500, within noise of each other. Graphile's local queue is 500, so 500 here too.
"""

import asyncio
import os
import resource
import sys
import time
from importlib.metadata import version

import asyncpg
import uvloop
from pgqueuer import PgQueuer
from pgqueuer.db import AsyncpgDriver
from pgqueuer.models import Job
from pgqueuer.queries import Queries

URL = os.environ["DATABASE_URL"]
JOBS = int(os.environ.get("JOBS") or 100000)
MANAGERS = int(os.environ.get("MANAGERS") or 1)
BATCH_SIZE = int(os.environ.get("BATCH_SIZE") or 500)
DEADLINE = float(os.environ.get("DEADLINE") or max(120, JOBS / 200))
TICK = os.sysconf("SC_CLK_TCK")


def pg_cpu() -> float | None:
    """CPU seconds of the whole PostgreSQL cluster: the postmaster with the children it
    reaped, plus the live children (backends, walwriter, checkpointer, autovacuum)."""
    pm = os.environ.get("PG_POSTMASTER_PID")
    if not pm:
        return None

    def stat(pid: str) -> list[str]:
        with open(f"/proc/{pid}/stat") as f:
            raw = f.read()
        return raw[raw.rindex(")") + 2 :].split()

    try:
        f = stat(pm)
        ticks = int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
        for p in os.listdir("/proc"):
            if not p.isdigit():
                continue
            try:
                c = stat(p)
            except OSError:
                continue
            if c[1] == pm:
                ticks += int(c[11]) + int(c[12])
        return ticks / TICK
    except OSError:
        return None


def own_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def main() -> None:
    conn = await asyncpg.connect(URL)
    queries = Queries(AsyncpgDriver(conn))
    await queries.install()
    await queries.optimize_autovacuum()  # `pgq autovac`, the tuning guide's first step
    await conn.execute("CHECKPOINT")

    t = time.monotonic()
    batch = 10000
    for done in range(0, JOBS, batch):
        n = min(batch, JOBS - done)
        await queries.enqueue(["noop"] * n, [None] * n, [0] * n)
    enqueue_s = time.monotonic() - t
    await conn.execute("ANALYZE pgqueuer")
    left = await conn.fetchval("SELECT count(*) FROM pgqueuer")
    assert left == JOBS, f"enqueue left {left} jobs, not {JOBS}"

    ran = 0
    managers = []
    for _ in range(MANAGERS):
        pgq = PgQueuer(AsyncpgDriver(await asyncpg.connect(URL)))

        @pgq.entrypoint("noop")
        async def noop(job: Job) -> None:
            nonlocal ran
            ran += 1

        managers.append(pgq)

    cpu0, own0 = pg_cpu(), own_cpu()
    t = time.monotonic()
    tasks = [asyncio.create_task(m.run(batch_size=BATCH_SIZE)) for m in managers]
    # Done: no job row left (a finished job's row is deleted and logged in pgqueuer_log).
    while True:
        if not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM pgqueuer ORDER BY id LIMIT 1)"):
            break
        for task in tasks:
            if task.done():
                task.result()  # a manager that stopped early raises here
        if time.monotonic() - t > DEADLINE:
            left = await conn.fetchval("SELECT count(*) FROM pgqueuer")
            sys.exit(f"pgqueuer: {left} jobs left after {DEADLINE:.0f} s")
        await asyncio.sleep(0.02)
    secs = time.monotonic() - t
    cpu1, own1 = pg_cpu(), own_cpu()
    for m in managers:
        m.shutdown.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 30)
    logged = await conn.fetchval(
        "SELECT count(*) FROM pgqueuer_log WHERE status = 'successful'"
    )
    await conn.close()
    if ran < JOBS or logged < JOBS:
        sys.exit(f"pgqueuer: ran {ran} of {JOBS}, {logged} logged successful")

    def ms(s: float) -> str:
        return f"{s * 1000 / JOBS:.3f}"

    print(
        f"peer=pgqueuer version={version('pgqueuer')} jobs={JOBS} seconds={secs:.2f} "
        f"jobs_per_s={round(JOBS / secs)} enqueue_seconds={enqueue_s:.2f} "
        f"pg_cpu_ms_per_job={'-' if cpu0 is None or cpu1 is None else ms(cpu1 - cpu0)} "
        f"worker_cpu_ms_per_job={ms(own1 - own0)} "
        f"settings=managers:{MANAGERS},batch_size:{BATCH_SIZE},driver:asyncpg-{version('asyncpg')}",
        flush=True,
    )


if __name__ == "__main__":
    uvloop.run(main())

#!/usr/bin/env python3
"""Times the dashboard's statements on a seeded database (seed.sql): each is executed five
times on one connection (so a generic plan, when PostgreSQL picks one, is what runs, as for the
server's cached statements), then explained with EXPLAIN (ANALYZE, BUFFERS). Run once with
custom plans forced and once with generic plans forced: the server gets one of the two.

Usage: explain.py <database url> [<plan output file>]
"""
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
EVERYTHING = "'00000000-0000-7000-0000-000000000000', 'ffffffff-ffff-7000-0000-000000000000', 'ffffffff-ffff-ffff-ffff-ffffffffffff'"

# (what the page does, the EXECUTE)
STATEMENTS = [
    ("overview: queue counts", "gauges"),
    ("overview: finished in 24 h by status", "finished_since(24)"),
    ("overview: 7 days of hourly outcomes", "hourly_outcomes(168)"),
    ("overview: SSH hosts over 24 h", "ssh_activity(24)"),
    ("jobs: first page, no filter", f"list_all({EVERYTHING}, 51, NULL)"),
    ("jobs: first page, mode = mcp", f"list_all({EVERYTHING}, 51, 'mcp')"),
    ("jobs: one day ten days ago", "list_all(:'day_lo', :'day_hi', 'ffffffff-ffff-ffff-ffff-ffffffffffff', 51, NULL)"),
    ("jobs: intent = gmail.triage", f"list_intent({EVERYTHING}, 51, NULL, 'gmail.triage')"),
    ("jobs: intent, page at the middle (15 days back)", f"list_intent('00000000-0000-7000-0000-000000000000', 'ffffffff-ffff-7000-0000-000000000000', :'mid_job', 51, NULL, 'gmail.triage')"),
    ("jobs: status = failed", f"list_status({EVERYTHING}, 51, NULL, 'failed')"),
    ("jobs: status = succeeded", f"list_succeeded({EVERYTHING}, 51, NULL)"),
    ("jobs: intent + status = succeeded", f"list_intent_succeeded({EVERYTHING}, 51, NULL, 'gmail.triage')"),
    ("jobs: one API key + status = succeeded", f"list_key_succeeded({EVERYTHING}, 51, NULL, :'key7')"),
    ("jobs: status = queued (the backlog)", f"list_status({EVERYTHING}, 51, NULL, 'queued')"),
    ("jobs: intent + status = failed", f"list_intent_unsuccessful({EVERYTHING}, 51, NULL, 'memory.write', 'failed')"),
    ("jobs: intent without failures + status = failed", f"list_intent_unsuccessful({EVERYTHING}, 51, NULL, 'gmail.triage', 'failed')"),
    ("jobs: intent + a status it has rarely", f"list_intent_unsuccessful({EVERYTHING}, 51, NULL, 'gmail.triage', 'cancelled')"),
    ("jobs: intent + a status it never has", f"list_intent_status({EVERYTHING}, 51, NULL, 'memory.write', 'awaiting_callback')"),
    ("jobs: one API key", f"list_key({EVERYTHING}, 51, NULL, :'key7')"),
    ("jobs: one API key + status = failed", f"list_key_unsuccessful({EVERYTHING}, 51, NULL, :'key_failing', 'failed')"),
    ("jobs: one API key without failed jobs + status = failed", f"list_key_unsuccessful({EVERYTHING}, 51, NULL, :'key7', 'failed')"),
    ("jobs: one API key + status = queued", f"list_key_status({EVERYTHING}, 51, NULL, :'key7', 'queued')"),
    ("jobs: search by idempotency key (every key)", "by_idempotency_key('order-4000003', NULL)"),
    ("jobs: bulk count page (500 queued of an intent)", f"list_intent_status({EVERYTHING}, 500, NULL, 'memory.write', 'queued')"),
    ("jobs: bulk count page (500 failed)", f"list_status({EVERYTHING}, 500, NULL, 'failed')"),
    ("job: the job", "get_job(:'failed_job')"),
    ("job: its timeline", "job_events(:'failed_job')"),
    ("job: its delivery", "delivery_of(:'failed_job')"),
    ("job: its delivery attempts", "callback_audits(:'failed_job')"),
    ("callbacks: open deliveries", "open_deliveries(NULL, NULL, 200)"),
    ("callbacks: open deliveries to one host", "open_deliveries(NULL, 'hooks3.example.com', 200)"),
]


def statements() -> str:
    """The server's statements as PREPAREs, from its query cache (gen.py)."""
    out = subprocess.run([sys.executable, str(HERE / "gen.py")], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(out.stderr)
    return out.stdout


def run(url: str, mode: str, prepares: str) -> str:
    script = [f"\\i {HERE / 'values.sql'}", prepares, f"SET plan_cache_mode = {mode};"]
    # The window "one day ten days ago" as UUIDv7 bounds, computed by the database.
    script.append(
        "SELECT (lpad(to_hex((extract(epoch FROM now() - interval '10 days') * 1000)::bigint), 12, '0') || '70000000000000000000')::uuid AS day_lo, "
        "(lpad(to_hex((extract(epoch FROM now() - interval '9 days') * 1000)::bigint), 12, '0') || '70000000000000000000')::uuid AS day_hi \\gset"
    )
    for i, (name, call) in enumerate(STATEMENTS):
        script.append("\\o /dev/null")
        script += [f"EXECUTE {call};"] * 5
        script.append("\\o")
        script.append(f"\\echo '### {i} {name}'")
        script.append(f"EXPLAIN (ANALYZE, BUFFERS) EXECUTE {call};")
    out = subprocess.run(
        ["psql", "-X", "-v", "ON_ERROR_STOP=1", "-d", url, "-f", "-"],
        input="\n".join(script), capture_output=True, text=True,
    )
    if out.returncode != 0:
        sys.exit(f"psql failed under {mode}:\n{out.stderr}")
    return out.stdout


def main() -> None:
    url = sys.argv[1]
    plans = []
    times = {}
    prepares = statements()
    for mode in ("force_custom_plan", "force_generic_plan"):
        text = run(url, mode, prepares)
        plans.append(f"======== {mode}\n{text}")
        for block in text.split("### ")[1:]:
            idx = int(block.split(" ", 1)[0])
            ms = re.search(r"Execution Time: ([\d.]+) ms", block)
            top = next(l.strip() for l in block.splitlines()[2:] if l.strip() and "QUERY PLAN" not in l and not l.startswith("-"))
            times.setdefault(idx, {})[mode] = (float(ms.group(1)) if ms else float("nan"), top)
    print(f"{'statement':<52} {'custom ms':>10} {'generic ms':>11}  plan (custom)")
    for i, (name, _) in enumerate(STATEMENTS):
        c, g = times[i]["force_custom_plan"], times[i]["force_generic_plan"]
        print(f"{name:<52} {c[0]:>10.3f} {g[0]:>11.3f}  {c[1][:90]}")
    if len(sys.argv) > 2:
        Path(sys.argv[2]).write_text("\n".join(plans))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Writes a pgbench script: what one synchronous `POST /orchestrate` costs in SQL.

    gen.py memory-server   the server's own statement for a request filed on its own, verbatim
                           from its query cache (sqlx-data/): the intake's statement with one
                           finished job (idempotency key + job + history + the memory item).
                           The server puts many concurrent requests in one such statement and
                           commit; this script is the one-request-per-commit reference.
    gen.py memory-ideal    the rows such a request must write and nothing else, in one commit:
                           the job row (already final) and the memory item
    gen.py echo-server     the statement for system.echo (the finished job; no key, no item:
                           the form without those two inserts, as the server sends it)
    gen.py echo-ideal      one job row, one commit
    gen.py echo-trail-ideal  the job row and its two audit events (created, succeeded) in one
                           statement and commit: what system.echo must write once the audit
                           trail is counted, without the intake's machinery (for reference)
    gen.py queued-ideal    one queued job row, one commit (what `async: true` must write)

Only the parameters differ from what the server sends: pgbench fills them from random
variables. The ideals are PostgreSQL's ceiling for the request (issue 16's "one-commit ideal").
"""
import glob
import json
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def statement(marker, has=None):
    """The one cached statement containing `marker` and, when `has` is a pair (text, wanted),
    containing `text` or not as `wanted` says."""
    found = []
    for path in glob.glob(os.path.join(ROOT, "sqlx-data", "*.json")):
        with open(path) as f:
            query = json.load(f)["query"]
        if marker in query and (has is None or (has[0] in query) == has[1]):
            found.append(query)
    if len(found) != 1:
        form = "" if has is None else f" and {'' if has[1] else 'not '}{has[0]!r}"
        sys.exit(f"expected one cached statement containing {marker!r}{form}, found {len(found)}")
    return found[0]


def bind(query, params):
    # Highest first, so $1 does not eat the start of $10.
    for n in sorted(params, reverse=True):
        query = re.sub(rf"\${n}(?!\d)", params[n], query)
    return re.sub(r'"([a-z_]+)[!?]?(: [A-Za-z]+)?"', r"\1", query).strip()


# pgbench -M prepared sends variables as untyped parameters: type them.
A, B = "(:a)::bigint", "(:b)::bigint"
# A UUIDv7 of the transaction's start, as the server makes (jobs are partitioned by it).
JOB = (f"(lpad(to_hex(floor(extract(epoch FROM now()) * 1000)::bigint), 12, '0') || '7' "
       f"|| substr(lpad(to_hex({A}), 16, '0'), 2, 15) || substr(lpad(to_hex({B}), 16, '0'), 13, 4))::uuid")
ITEM = f"(lpad(to_hex({B}), 16, '0') || lpad(to_hex({A}), 16, '0'))::uuid"
TEXT = f"('note ' || {A} || ' ' || {B} || ': the Eiffel Tower is in Paris')"
OWNER = "'0192f3a4-b5c6-7d8e-9f00-112233445566'::uuid"

INPUTS = f"jsonb_build_object('text', {TEXT}, 'tags', jsonb_build_array('bench'))"
RESULT = f"jsonb_build_object('item_id', {ITEM}, 'status', 'stored', 'tags', jsonb_build_array('bench'))"


def finished(intent, mode, keyed, inputs, result, memory):
    """The intake's statement for one request: key, finished job, its two events, the item.
    The server sends a batch without keys or memory items in the form without those inserts."""
    one = lambda value, sql_type: f"ARRAY[{value}]::{sql_type}[]"
    null = lambda sql_type: f"ARRAY[NULL]::{sql_type}[]"
    form = ("INSERT INTO idempotency_keys", keyed or memory)
    return bind(statement("AS t(id, intent, mode, requested_mode", form), {
        1: one(JOB, "uuid"), 2: one(f"'{intent}'", "text"), 3: one(f"'{mode}'", "job_mode"),
        4: one("'auto'", "job_mode"), 5: one("0", "int2"), 6: one("3", "int4"),
        7: one("10000", "int4"), 8: one(inputs, "jsonb"), 9: null("text"),
        10: one("'pgbench'", "text"), 11: null("uuid"), 12: one("'anonymous'", "text"),
        13: one("'127.0.0.1'", "text"), 14: null("timestamptz"), 15: null("uuid"),
        16: one("''", "text") if keyed else null("text"),
        17: one(f"'derived:' || md5({TEXT})", "text") if keyed else null("text"),
        18: one(f"sha256(convert_to({TEXT}, 'UTF8'))", "bytea") if keyed else null("bytea"),
        19: one("true", "bool") if keyed else null("bool"),
        20: one("86400", "float8") if keyed else null("float8"),
        21: "'orch_jobs'", 22: one("'succeeded'", "job_status"), 23: one(result, "jsonb"),
        24: null("text"), 25: null("text"), 26: one("0", "int8"), 27: one(OWNER, "uuid"),
        28: one(ITEM, "uuid") if memory else null("uuid"),
        29: one(TEXT, "text") if memory else null("text"),
        30: one("jsonb_build_array('bench')", "jsonb") if memory else null("jsonb"),
        31: one("'{}'", "jsonb") if memory else null("jsonb"),
        32: one("'anonymous'", "text"),
    })


def bare_job(intent, mode, inputs, result):
    return (
        "INSERT INTO jobs (id, intent, mode, requested_mode, status, max_attempts, "
        "attempt_timeout_ms, inputs, result, attempts, started_at, finished_at, duration_ms) "
        f"VALUES ({JOB}, '{intent}', '{mode}', 'auto', 'succeeded', 3, 10000, {inputs}, "
        f"{result}, 1, now(), now(), 0)"
    )


def with_trail(job_insert):
    """The job and its two history events, as the intake writes them for a job run at once
    (the live streams' NOTIFY deferred, as the intake does, so commits do not queue on it)."""
    return (
        "WITH quiet AS (SELECT set_config('orch.events_notify', 'deferred', true)), "
        f"j AS ({job_insert} RETURNING id, intent, mode, status) "
        "INSERT INTO audit_events (job_id, intent, mode, kind, from_status, to_status, attempt, "
        "instance_id, actor_kind, actor_name, client_addr, duration_ms) "
        "SELECT id, intent, mode, 'created', NULL::job_status, 'running'::job_status, 1, "
        f"{OWNER}, 'anonymous', 'anonymous', '127.0.0.1', NULL FROM j, quiet "
        "UNION ALL SELECT id, intent, mode, 'succeeded', 'running'::job_status, status, 1, "
        f"{OWNER}, 'instance', NULL, NULL, 0 FROM j, quiet"
    )


def queued_job(intent, mode, inputs):
    return (
        "INSERT INTO jobs (id, intent, mode, requested_mode, status, max_attempts, "
        f"attempt_timeout_ms, inputs, attempts) VALUES ({JOB}, '{intent}', '{mode}', 'auto', "
        f"'queued', 1, 5000, {inputs}, 0)"
    )


SCRIPTS = {
    "memory-server": [finished("memory.write", "agent", True, INPUTS, RESULT, True)],
    "memory-ideal": ["BEGIN", bare_job("memory.write", "agent", INPUTS, RESULT),
                     f"INSERT INTO memory_items (id, text, tags, metadata, source_job_id) "
                     f"VALUES ({ITEM}, {TEXT}, ARRAY['bench'], '{{}}'::jsonb, {JOB})", "COMMIT"],
    "echo-server": [finished("system.echo", "agent", False, INPUTS, INPUTS, False)],
    "echo-ideal": [bare_job("system.echo", "agent", INPUTS, INPUTS)],
    "echo-trail-ideal": [with_trail(bare_job("system.echo", "agent", INPUTS, INPUTS))],
    "queued-ideal": [queued_job("system.echo", "agent", INPUTS)],
}

which = sys.argv[1] if len(sys.argv) > 1 else "memory-server"
if which not in SCRIPTS:
    sys.exit(f"usage: gen.py {{{'|'.join(SCRIPTS)}}}")
print(f"-- Generated by bench/pgbench/gen.py {which} (statements from sqlx-data/).")
print(r"\set a random(1, 9000000000000000000)")
print(r"\set b random(1, 9000000000000000000)")
for sql in SCRIPTS[which]:
    # pgbench wants each statement on one line (so SQL comments go: they would run to its end).
    lines = (line.split("--")[0].strip() for line in sql.splitlines())
    print(" ".join(line for line in lines if line) + ";")

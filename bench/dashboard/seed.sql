-- Five million jobs over 30 days for the dashboard's query timings: 20 API keys, 50 intents,
-- three engines, a realistic mix of outcomes, a live backlog, idempotency keys on a tenth of
-- the jobs, callback deliveries on a fifth, each finished job's final audit event, SSH
-- activity, and the hourly rollups. Ids are UUIDv7 of the creation time, as the server makes.
-- Usage: psql -v ON_ERROR_STOP=1 -d <migrated database> -f seed.sql   (about 10 minutes)
\timing on
SET synchronous_commit = off;
SET maintenance_work_mem = '512MB';

CREATE FUNCTION pg_temp.uuid7(t timestamptz) RETURNS uuid LANGUAGE sql VOLATILE AS $$
    SELECT (lpad(to_hex((extract(epoch FROM t) * 1000)::bigint), 12, '0') || '7'
            || substr(md5(random()::text), 1, 3) || '8'
            || substr(md5(random()::text), 1, 15))::uuid
$$;

INSERT INTO api_keys (id, name, prefix, key_hash, scopes, created_at)
SELECT pg_temp.uuid7(now() - interval '31 days'), 'client-' || k, 'orch_c' || k,
       sha256(('bench-key-' || k)::bytea), ARRAY['*'], now() - interval '31 days'
FROM generate_series(0, 19) k;

CREATE TEMP TABLE keys AS SELECT row_number() OVER (ORDER BY name) - 1 AS k, id, name FROM api_keys;

-- The last 5,000 jobs are the live backlog (queued, running, awaiting a callback).
INSERT INTO jobs (id, intent, mode, requested_mode, status, max_attempts, attempt_timeout_ms,
                  inputs, result, error_code, error_message, attempts, run_at, created_at,
                  started_at, finished_at, duration_ms, api_key_id, principal, client_addr,
                  callback_url, lease_owner, lease_expires_at)
SELECT pg_temp.uuid7(created), intent, mode, 'auto', status, 3, 10000,
       jsonb_build_object('n', i), CASE WHEN status = 'succeeded' THEN '{"ok": true}'::jsonb END,
       CASE WHEN status IN ('failed', 'timed_out', 'cancelled') THEN status::text END,
       CASE WHEN status IN ('failed', 'timed_out', 'cancelled') THEN 'seeded' END,
       CASE WHEN status = 'queued' THEN 0 ELSE attempts END, created, created,
       CASE WHEN status <> 'queued' THEN created END,
       CASE WHEN status IN ('succeeded', 'failed', 'cancelled', 'timed_out')
            THEN created + make_interval(secs => dur / 1000.0) END,
       CASE WHEN status IN ('succeeded', 'failed', 'cancelled', 'timed_out') THEN dur END,
       k.id, k.name, '10.0.0.' || (i % 200),
       CASE WHEN i % 5 = 0 THEN 'https://hooks' || (i % 7) || '.example.com/results' END,
       CASE WHEN status = 'running' THEN '00000000-0000-7000-8000-000000000001'::uuid END,
       CASE WHEN status = 'running' THEN now() + interval '1 minute' END
FROM (
    SELECT i,
           CASE WHEN i % 5 = 4 THEN 'mcp.server' || (i % 8) || '.tool' || (i % 5)
                ELSE (ARRAY['memory.write','memory.search','memory.get','system.echo',
                            'ssh.exec.peek','ssh.exec','gmail.triage','slack.summarize',
                            'calendar.schedule','crm.sync'])[1 + i % 10] END AS intent,
           CASE WHEN i % 5 = 4 THEN 'mcp'
                WHEN i % 10 IN (6, 7, 8, 9) THEN 'flow' ELSE 'agent' END::job_mode AS mode,
           CASE WHEN i > 4995000 THEN (ARRAY['queued','queued','running','awaiting_callback'])
                                          [1 + i % 4]
                WHEN i % 50 = 0 THEN 'failed' WHEN i % 97 = 0 THEN 'timed_out'
                WHEN i % 211 = 0 THEN 'cancelled' ELSE 'succeeded' END::job_status AS status,
           CASE WHEN i % 13 = 0 THEN 2 WHEN i % 101 = 0 THEN 3 ELSE 1 END AS attempts,
           now() - interval '30 days' + make_interval(secs => i * 0.5184) AS created,
           (exp(ln(5) + random() * 6))::bigint AS dur,
           (i::bigint * 7919) % 20 AS key_no
    FROM generate_series(1, 5000000) i
) s JOIN keys k ON k.k = s.key_no;

INSERT INTO idempotency_keys (scope, key, request_hash, job_id, derived, created_at, expires_at)
SELECT replace(api_key_id::text, '-', ''), 'order-' || (inputs ->> 'n'),
       sha256((inputs ->> 'n')::bytea), id, false, created_at, created_at + interval '1 day'
FROM jobs WHERE (inputs ->> 'n')::bigint % 10 = 3;

-- Each finished job's final event, in time order (the trail is append-only).
INSERT INTO audit_events (at, kind, job_id, intent, mode, from_status, to_status, attempt,
                          duration_ms, actor_kind, detail)
SELECT finished_at, status::text, id, intent, mode, 'running', status, attempts, duration_ms,
       'instance',
       CASE WHEN error_code IS NOT NULL
            THEN jsonb_build_object('code', error_code, 'message', error_message) END
FROM jobs WHERE finished_at IS NOT NULL ORDER BY finished_at;

INSERT INTO callback_deliveries (job_id, url, webhook_id, status, attempts, next_attempt_at,
                                 last_status_code, created_at, finished_at)
SELECT id, callback_url, 'msg_' || replace(id::text, '-', ''),
       CASE WHEN (inputs ->> 'n')::bigint % 997 = 0 THEN 'exhausted'
            WHEN finished_at > now() - interval '2 minutes' THEN 'pending'
            ELSE 'delivered' END::delivery_status,
       1, finished_at, 200, finished_at,
       CASE WHEN finished_at <= now() - interval '2 minutes' THEN finished_at END
FROM jobs WHERE callback_url IS NOT NULL AND finished_at IS NOT NULL;

INSERT INTO audit_events (at, kind, outcome, target, attempt, actor_kind, detail)
SELECT now() - interval '30 days' + make_interval(secs => i * 51.84),
       CASE WHEN i % 40 = 0 THEN 'ssh.connect_failed' ELSE 'ssh.run' END,
       CASE WHEN i % 40 = 0 THEN 'refused' ELSE 'run' END,
       'web-' || (i % 20), 1, 'api_key',
       CASE WHEN i % 40 = 0 THEN '{"reason": "connection refused"}'::jsonb END
FROM generate_series(1, 50000) i;

INSERT INTO job_stats_hourly (hour, intent, mode, status, jobs, attempts, retried_jobs,
                              duration_ms_sum, duration_ms_max)
SELECT date_bin('1 hour', finished_at, TIMESTAMPTZ '2000-01-01'), intent, mode, status, count(*),
       sum(attempts), count(*) FILTER (WHERE attempts > 1), sum(duration_ms), max(duration_ms)
FROM jobs WHERE finished_at IS NOT NULL GROUP BY 1, 2, 3, 4;
-- Folded up to here, as a server whose rollups keep up leaves it.
UPDATE rollup_watermarks SET upto = (SELECT max(finished_at) FROM jobs) WHERE name = 'jobs';

VACUUM ANALYZE;
SELECT pg_size_pretty(pg_database_size(current_database())) AS database_size,
       (SELECT count(*) FROM jobs) AS jobs, (SELECT count(*) FROM audit_events) AS audit_events;

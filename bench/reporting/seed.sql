-- A million finished jobs over 30 days (10 intents, realistic mixes of status, attempts and
-- durations), their callback attempts and SSH decisions, and a live backlog.
-- Usage: psql -v ON_ERROR_STOP=1 -d <migrated database> -f seed.sql
\timing on
SET synchronous_commit = off;

INSERT INTO jobs (id, intent, mode, requested_mode, status, max_attempts, attempt_timeout_ms,
                  inputs, result, attempts, created_at, started_at, finished_at, duration_ms,
                  api_key_id, principal, client_addr, callback_url)
SELECT uuid_v7(created), intent, mode, 'auto', status, 3, 10000, '{"n": 1}'::jsonb,
       CASE WHEN status = 'succeeded' THEN '{"ok": true}'::jsonb END,
       attempts, created, created, created + make_interval(secs => dur / 1000.0), dur,
       NULL, 'anonymous', '10.0.0.1',
       CASE WHEN i % 5 = 0 THEN 'https://hooks' || (i % 7) || '.example.com/results' END
FROM (
    SELECT i,
           (ARRAY['memory.write','memory.search','memory.get','system.echo','ssh.exec.peek',
                  'ssh.exec','gmail.triage','slack.summarize','mcp.everything.echo',
                  'calendar.schedule'])[1 + i % 10] AS intent,
           (ARRAY['agent','agent','agent','agent','agent','agent','flow','flow','mcp','flow'])
               [1 + i % 10]::job_mode AS mode,
           CASE WHEN i % 50 = 0 THEN 'failed' WHEN i % 97 = 0 THEN 'timed_out'
                WHEN i % 211 = 0 THEN 'cancelled' ELSE 'succeeded' END::job_status AS status,
           CASE WHEN i % 13 = 0 THEN 2 WHEN i % 101 = 0 THEN 3 ELSE 1 END AS attempts,
           now() - interval '30 days' + make_interval(secs => i * 2.592) AS created,
           (exp(ln(5) + random() * 6))::bigint AS dur
    FROM generate_series(1, 1000000) i
) s;

-- Each job's final event, as the server records it (the rollups read these).
INSERT INTO audit_events (at, kind, job_id, intent, mode, from_status, to_status, attempt,
                          duration_ms, actor_kind)
SELECT finished_at, status::text, id, intent, mode, 'running', status, attempts, duration_ms,
       'instance'
FROM jobs WHERE finished_at IS NOT NULL ORDER BY finished_at;

INSERT INTO audit_events (at, kind, outcome, target, target_host, http_status, duration_ms,
                          attempt, actor_kind)
SELECT now() - interval '30 days' + make_interval(secs => i * 12.96), 'callback.out',
       CASE WHEN i % 20 = 0 THEN 'retry' WHEN i % 333 = 0 THEN 'exhausted' ELSE 'delivered' END,
       'https://hooks' || (i % 7) || '.example.com/results', 'hooks' || (i % 7) || '.example.com',
       CASE WHEN i % 20 = 0 THEN 503 ELSE 200 END, 20 + (i % 400), 1, 'instance'
FROM generate_series(1, 200000) i;

WITH decisions AS (
    SELECT i, gen_random_uuid() AS job,
           now() - interval '30 days' + make_interval(secs => i * 51.84) AS at,
           (ARRAY['alice','bob','chatgpt'])[1 + i % 3] AS who, 'web-' || (i % 20) AS host
    FROM generate_series(1, 50000) i
)
INSERT INTO audit_events (at, kind, outcome, actor_kind, actor_name, target, job_id, attempt,
                          detail)
SELECT at, CASE WHEN i % 10 = 0 THEN 'ssh.dry_run' ELSE 'ssh.run' END,
       CASE WHEN i % 10 = 0 THEN 'dry_run' ELSE 'run' END, 'api_key', who, host, job, 1,
       jsonb_build_object('host', host, 'command', 'df -h', 'argv', '["df","-h"]'::jsonb,
                          'decision', CASE WHEN i % 10 = 0 THEN 'dry_run' ELSE 'run' END)
FROM decisions
UNION ALL
SELECT at + interval '50 ms', 'ssh.exit', 'ran', 'api_key', who, host, job, 1,
       jsonb_build_object('host', host, 'command', 'df -h', 'decision', 'ran', 'exit_code', 0)
FROM decisions WHERE i % 10 <> 0;

-- The live backlog: queued, running (some past their lease), awaiting callbacks.
INSERT INTO jobs (id, intent, mode, requested_mode, status, max_attempts, attempt_timeout_ms,
                  inputs, attempts, created_at, run_at, lease_owner, lease_expires_at,
                  callback_deadline_at)
SELECT uuid_v7(), 'memory.write', 'agent', 'auto',
       (ARRAY['queued','running','awaiting_callback'])[1 + i % 3]::job_status, 3, 10000, '{}',
       CASE WHEN i % 3 = 0 THEN 0 ELSE 1 END, now() - make_interval(secs => i), now(),
       CASE WHEN i % 3 = 1 THEN gen_random_uuid() END,
       CASE WHEN i % 3 = 1 THEN now() + make_interval(secs => 30 - i % 60) END,
       CASE WHEN i % 3 = 2 THEN now() + make_interval(secs => 600 - i) END
FROM generate_series(1, 3000) i;

VACUUM ANALYZE jobs;
VACUUM ANALYZE audit_events;

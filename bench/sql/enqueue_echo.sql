-- Enqueues :n system.echo jobs in one batch, exactly as the intake files async jobs (a queued
-- job and its `created` event), tagged with request_id = :'tag', then wakes the workers.
-- Usage: psql -v n=100000 -v tag=drain-1 -f enqueue_echo.sql
WITH j AS (
    INSERT INTO jobs (id, intent, mode, requested_mode, status, priority, max_attempts,
                      attempt_timeout_ms, inputs, request_id, principal, client_addr)
    SELECT (lpad(to_hex((extract(epoch FROM clock_timestamp()) * 1000)::bigint), 12, '0')
            || '7' || substr(md5(random()::text || i), 1, 19))::uuid,
           'system.echo', 'agent', 'auto', 'queued', 0, 1, 5000,
           jsonb_build_object('n', i), :'tag', 'anonymous', '127.0.0.1'
    FROM generate_series(1, :n) i
    RETURNING id, request_id
)
INSERT INTO audit_events (job_id, kind, to_status, attempt, actor_kind, request_id)
SELECT id, 'created', 'queued', 0, 'anonymous', request_id FROM j;
SELECT pg_notify('orch_jobs', '');

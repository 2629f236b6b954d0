-- As enqueue_echo.sql, but due in :delay_s seconds (clients get ready meanwhile); prints the
-- first :watch job ids (`job_` + hex), the jobs the clients follow.
-- Usage: psql -At -v n=50000 -v tag=sse-1 -v delay_s=10 -v watch=1000 -f enqueue_echo_later.sql
WITH j AS (
    INSERT INTO jobs (id, intent, mode, requested_mode, status, priority, max_attempts,
                      attempt_timeout_ms, inputs, request_id, principal, client_addr, run_at)
    SELECT (lpad(to_hex((extract(epoch FROM clock_timestamp()) * 1000)::bigint), 12, '0')
            || '7' || substr(md5(random()::text || i), 1, 19))::uuid,
           'system.echo', 'agent', 'auto', 'queued', 0, 1, 5000,
           jsonb_build_object('n', i), :'tag', 'anonymous', '127.0.0.1',
           now() + make_interval(secs => :delay_s)
    FROM generate_series(1, :n) i
    RETURNING id, request_id
), e AS (
    INSERT INTO audit_events (job_id, kind, to_status, attempt, actor_kind, request_id)
    SELECT id, 'created', 'queued', 0, 'anonymous', request_id FROM j
    RETURNING job_id
)
SELECT 'job_' || replace(job_id::text, '-', '') FROM e ORDER BY random() LIMIT :watch;

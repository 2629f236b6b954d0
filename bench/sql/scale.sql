-- The "scale" data set: 5,000,000 finished jobs over 60 days and 1,000,000 memory items whose
-- words follow the vocabulary bench/wrk/memory_search.lua asks for.
\timing on
SET synchronous_commit = off;
SET maintenance_work_mem = '1GB';

INSERT INTO jobs (id, intent, mode, requested_mode, status, max_attempts, attempt_timeout_ms,
                  inputs, result, attempts, created_at, started_at, finished_at, duration_ms,
                  principal, client_addr)
SELECT (lpad(to_hex((extract(epoch FROM created) * 1000)::bigint), 12, '0')
        || '7' || substr(md5(i::text), 1, 19))::uuid,
       intent, mode, 'auto', status, 3, 10000, '{"n": 1}'::jsonb,
       CASE WHEN status = 'succeeded' THEN '{"ok": true}'::jsonb END, attempts, created, created,
       created + make_interval(secs => dur / 1000.0), dur, 'anonymous', '10.0.0.1'
FROM (
    SELECT i,
           (ARRAY['memory.write','memory.search','memory.get','system.echo','ssh.exec.peek',
                  'ssh.exec','gmail.triage','slack.summarize','mcp.everything.echo',
                  'calendar.schedule'])[1 + i % 10] AS intent,
           (ARRAY['agent','agent','agent','agent','agent','agent','flow','flow','mcp','flow'])
               [1 + i % 10]::job_mode AS mode,
           CASE WHEN i % 50 = 0 THEN 'failed' WHEN i % 97 = 0 THEN 'timed_out'
                ELSE 'succeeded' END::job_status AS status,
           CASE WHEN i % 13 = 0 THEN 2 ELSE 1 END AS attempts,
           now() - interval '60 days' + make_interval(secs => i * 1.0368) AS created,
           (exp(ln(5) + random() * 6))::bigint AS dur
    FROM generate_series(1, 5000000) i
) s;

-- Ids are UUIDv7 of the creation time, as the server makes them (memory.search walks the
-- newest items by id).
INSERT INTO memory_items (id, text, tags, metadata, created_at)
SELECT (lpad(to_hex((extract(epoch FROM at) * 1000)::bigint), 12, '0')
        || '7' || substr(md5(random()::text || g), 1, 3)
        || '8' || substr(md5(random()::text || g), 1, 15))::uuid,
       (SELECT string_agg('w' || floor(20000 * power(random(), 2))::int, ' ')
        FROM generate_series(1, 12 + (g % 3))),
       ARRAY['t' || (g % 50)], '{}', at
FROM (SELECT g, now() - make_interval(secs => g) AS at FROM generate_series(1, 1000000) g) s;

VACUUM ANALYZE jobs;
VACUUM ANALYZE memory_items;

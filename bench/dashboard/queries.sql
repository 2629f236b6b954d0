-- The dashboard's statements, prepared as the server's are (the text of src/store/*.rs), and
-- the values the pages pass them (\gset). explain.py includes this file, then executes and
-- explains each statement under a custom and a generic plan.
\set ECHO none
\pset pager off

\set cols 'id, intent, mode, requested_mode, status, priority, inputs, result, error_code, error_message, attempts, max_attempts, callback_url, request_id, run_at, cancel_requested_at, created_at, started_at, finished_at, duration_ms, api_key_id, principal, client_addr, payload_purged_at'

SELECT id AS key7 FROM api_keys WHERE name = 'client-7' \gset
SELECT id AS mid_job FROM jobs WHERE intent = 'gmail.triage' AND id < uuid_v7_floor(now() - interval '15 days') ORDER BY id DESC LIMIT 1 \gset
SELECT id AS failed_job FROM jobs WHERE status = 'failed' AND callback_url IS NOT NULL ORDER BY id DESC LIMIT 1 \gset

PREPARE gauges AS
SELECT (SELECT count(*) FROM jobs WHERE status = 'queued'),
       (SELECT count(*) FROM jobs WHERE status = 'running'),
       (SELECT count(*) FROM jobs WHERE status = 'awaiting_callback'),
       coalesce((SELECT extract(epoch FROM now() - min(run_at))::float8
                 FROM jobs WHERE status = 'queued' AND run_at <= now()), 0),
       (SELECT count(*) FROM callback_deliveries WHERE status = 'pending'),
       (SELECT count(*) FROM callback_deliveries WHERE status = 'exhausted');
PREPARE finished_since(float8) AS
WITH bounds AS (
    SELECT w.since,
           -- The first whole hour at or after the window's start.
           CASE WHEN finished_hour(w.since) = w.since THEN w.since
                ELSE finished_hour(w.since) + interval '1 hour' END AS whole_from,
           -- Hours before this one are folded whole (their rollups are complete).
           finished_hour(r.upto) AS whole_until
    FROM (SELECT now() - make_interval(secs => $1 * 3600) AS since) w,
         rollup_watermarks r
    WHERE r.name = 'jobs'
), counted AS (
    SELECT s.status, s.jobs AS n
    FROM job_stats_hourly s, bounds b
    WHERE s.hour >= b.whole_from AND s.hour < b.whole_until
    UNION ALL
    -- The same events the rollups fold (reporting.rs), outside those hours: before
    -- the first whole hour, and from the first hour not folded whole on (from the
    -- window's first whole hour when the rollups are further behind than that).
    SELECT e.to_status, 1
    FROM audit_events e, bounds b
    WHERE e.at >= b.since AND e.at < b.whole_from
      AND e.to_status IN ('succeeded', 'failed', 'cancelled', 'timed_out')
      AND e.job_id IS NOT NULL AND e.intent IS NOT NULL AND e.mode IS NOT NULL
    UNION ALL
    SELECT e.to_status, 1
    FROM audit_events e, bounds b
    WHERE e.at >= greatest(b.whole_from, b.whole_until)
      AND e.to_status IN ('succeeded', 'failed', 'cancelled', 'timed_out')
      AND e.job_id IS NOT NULL AND e.intent IS NOT NULL AND e.mode IS NOT NULL
)
SELECT status AS status, sum(n)::bigint AS n
FROM counted
GROUP BY status;
PREPARE hourly_outcomes(int) AS
SELECT h.hour, coalesce(sum(s.jobs) FILTER (WHERE s.status = 'succeeded'), 0)::bigint,
       coalesce(sum(s.jobs) FILTER (WHERE s.status IN ('failed', 'timed_out')), 0)::bigint
FROM generate_series(date_bin('1 hour', now() - make_interval(hours => $1 - 1), TIMESTAMPTZ '2000-01-01 00:00:00+00'),
                     date_bin('1 hour', now(), TIMESTAMPTZ '2000-01-01 00:00:00+00'), interval '1 hour') AS h(hour)
LEFT JOIN job_stats_hourly s ON s.hour = h.hour GROUP BY h.hour ORDER BY h.hour;
PREPARE ssh_activity(float8) AS
SELECT target, count(*) FILTER (WHERE kind = 'ssh.run'), count(*) FILTER (WHERE kind <> 'ssh.run'),
       max(at) FILTER (WHERE kind <> 'ssh.run'),
       (array_agg(detail ->> 'reason' ORDER BY at DESC) FILTER (WHERE kind <> 'ssh.run'))[1]
FROM audit_events
WHERE kind IN ('ssh.run', 'ssh.connect_failed', 'ssh.host_key_mismatch')
  AND at > now() - make_interval(secs => $1 * 3600) AND target IS NOT NULL
GROUP BY target ORDER BY target;
PREPARE list_all(uuid, uuid, uuid, bigint, job_mode) AS
SELECT :cols FROM jobs WHERE id >= $1 AND id < $2 AND id < $3 AND ($5::job_mode IS NULL OR mode = $5)
ORDER BY id DESC LIMIT $4;
PREPARE list_intent(uuid, uuid, uuid, bigint, job_mode, text) AS
SELECT :cols FROM jobs WHERE id >= $1 AND id < $2 AND id < $3 AND ($5::job_mode IS NULL OR mode = $5)
  AND intent = $6 ORDER BY id DESC LIMIT $4;
PREPARE list_status(uuid, uuid, uuid, bigint, job_mode, job_status) AS
SELECT :cols FROM jobs WHERE id >= $1 AND id < $2 AND id < $3 AND ($5::job_mode IS NULL OR mode = $5)
  AND status = $6 AND status <> 'succeeded' ORDER BY id DESC LIMIT $4;
-- Succeeded jobs are not in the status index: along the primary key.
PREPARE list_succeeded(uuid, uuid, uuid, bigint, job_mode) AS
SELECT :cols FROM jobs WHERE id >= $1 AND id < $2 AND id < $3 AND ($5::job_mode IS NULL OR mode = $5)
  AND status = 'succeeded' ORDER BY id DESC LIMIT $4;
PREPARE list_intent_succeeded(uuid, uuid, uuid, bigint, job_mode, text) AS
SELECT :cols FROM jobs WHERE id >= $1 AND id < $2 AND id < $3 AND ($5::job_mode IS NULL OR mode = $5)
  AND intent = $6 AND status = 'succeeded' ORDER BY id DESC LIMIT $4;
PREPARE list_key_succeeded(uuid, uuid, uuid, bigint, job_mode, uuid) AS
SELECT :cols FROM jobs WHERE id >= $1 AND id < $2 AND id < $3 AND ($5::job_mode IS NULL OR mode = $5)
  AND api_key_id = $6 AND status = 'succeeded' ORDER BY id DESC LIMIT $4;
PREPARE list_intent_status(uuid, uuid, uuid, bigint, job_mode, text, job_status) AS
SELECT :cols FROM jobs WHERE id >= $1 AND id < $2 AND id < $3 AND ($5::job_mode IS NULL OR mode = $5)
  AND intent = $6 AND status = $7 AND status <> 'succeeded' ORDER BY id DESC LIMIT $4;
PREPARE list_key(uuid, uuid, uuid, bigint, job_mode, uuid) AS
SELECT :cols FROM jobs WHERE id >= $1 AND id < $2 AND id < $3 AND ($5::job_mode IS NULL OR mode = $5)
  AND api_key_id = $6 ORDER BY id DESC LIMIT $4;
PREPARE list_key_status(uuid, uuid, uuid, bigint, job_mode, uuid, job_status) AS
SELECT :cols FROM jobs WHERE id >= $1 AND id < $2 AND id < $3 AND ($5::job_mode IS NULL OR mode = $5)
  AND api_key_id = $6 AND status = $7 AND status <> 'succeeded' ORDER BY id DESC LIMIT $4;
PREPARE by_idempotency_key(text, uuid) AS
SELECT job_id FROM idempotency_keys
WHERE key = $1 AND NOT derived
  AND scope = ANY(CASE WHEN $2::uuid IS NULL
                       THEN ARRAY(SELECT replace(id::text, '-', '') FROM api_keys) || ''::text
                       ELSE ARRAY[replace($2::uuid::text, '-', '')] END)
ORDER BY created_at DESC LIMIT 50;
PREPARE get_job(uuid) AS SELECT :cols FROM jobs WHERE id = $1;
PREPARE job_events(uuid) AS
SELECT id, at, kind, from_status, to_status, attempt, instance_id, actor_kind, actor_name, detail
FROM audit_events WHERE job_id = $1 AND kind NOT IN ('callback.out', 'callback.in') ORDER BY id;
PREPARE delivery_of(uuid) AS
SELECT url, webhook_id, status, attempts, next_attempt_at, last_status_code, last_error, created_at, finished_at
FROM callback_deliveries WHERE job_id = $1;
PREPARE callback_audits(uuid) AS
SELECT id, substring(kind FROM 10), target, attempt, webhook_id, http_status, excerpt, duration_ms, error,
       next_attempt_at, outcome, auth_method, at
FROM audit_events WHERE job_id = $1 AND kind IN ('callback.out', 'callback.in') ORDER BY id;
PREPARE open_deliveries(uuid, text, bigint) AS
SELECT d.job_id, d.url, coalesce(substring(d.url FROM '^[a-z]+://(?:[^@/]*@)?(\[[^]]*\]|[^:/?#]+)'), ''),
       d.status, d.attempts, d.manual_retries, d.next_attempt_at, d.last_status_code, d.last_error
FROM callback_deliveries d JOIN jobs j ON j.id = d.job_id
WHERE d.status IN ('pending', 'exhausted') AND ($1::uuid IS NULL OR j.api_key_id = $1)
  AND ($2::text IS NULL OR substring(d.url FROM '^[a-z]+://(?:[^@/]*@)?(\[[^]]*\]|[^:/?#]+)') = $2)
ORDER BY d.status DESC, d.next_attempt_at LIMIT $3;


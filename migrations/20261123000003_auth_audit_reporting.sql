-- API keys, one append-only audit trail (job history and callback attempts folded into it),
-- principals on jobs, payload retention, and the reporting views of docs/reporting.md.

----------------------------------------------------------------------------------------------
-- API keys: only a SHA-256 of the key is kept.
CREATE TABLE api_keys (
    id           uuid        PRIMARY KEY,
    name         text        NOT NULL,
    prefix       text        NOT NULL,   -- the key's first characters, to recognise it in lists
    key_hash     bytea       NOT NULL UNIQUE,
    scopes       text[]      NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    created_by   text,
    last_used_at timestamptz,
    expires_at   timestamptz,
    revoked_at   timestamptz
);
CREATE UNIQUE INDEX api_keys_active_name_idx ON api_keys (name) WHERE revoked_at IS NULL;

-- Who asked for each job.
ALTER TABLE jobs
    ADD COLUMN api_key_id        uuid,
    ADD COLUMN principal         text,          -- the key's name, or 'anonymous'
    ADD COLUMN client_addr       text,
    ADD COLUMN payload_purged_at timestamptz;   -- inputs/result dropped by retention
-- A client's own jobs, newest first (anonymous jobs stay out of it).
CREATE INDEX jobs_api_key_created_idx ON jobs (api_key_id, created_at)
    WHERE api_key_id IS NOT NULL;
-- Retention walks finished jobs by time (updates scatter row versions, so this BRIN is coarse;
-- retention is a rare, paged job).
CREATE INDEX jobs_finished_brin ON jobs USING brin (finished_at);

----------------------------------------------------------------------------------------------
-- The audit trail: who, what, when, outcome, request id. Append-only.
CREATE TABLE audit_events (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at              timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- Job state changes keep their short names (created, claimed, retry_scheduled, succeeded,
    -- failed, timed_out, cancel_requested, cancelled, rescued, released, awaiting_callback,
    -- callback_received); everything else is namespaced: ssh.*, callback.out, callback.in,
    -- auth.failed, key.created, key.revoked.
    kind            text        NOT NULL,
    outcome         text,
    actor_kind      text,        -- api_key | anonymous | instance | flow | operator
    actor_id        text,
    actor_name      text,
    request_id      text,
    client_addr     text,
    job_id          uuid,
    intent          text,        -- job events: the job's intent and engine
    mode            job_mode,
    from_status     job_status,
    to_status       job_status,
    attempt         integer,
    instance_id     uuid,
    target          text,        -- callback URL, SSH host
    target_host     text,
    http_status     integer,
    duration_ms     integer,
    webhook_id      text,
    delivery_id     uuid,
    auth_method     text,
    next_attempt_at timestamptz,
    error           text,
    excerpt         text,
    detail          jsonb
);

INSERT INTO audit_events (at, kind, actor_kind, actor_id, job_id, intent, mode, from_status,
                          to_status, attempt, instance_id, duration_ms, detail)
SELECT e.at, e.kind, 'instance', e.instance_id::text, e.job_id, j.intent, j.mode, e.from_status,
       e.to_status, e.attempt, e.instance_id,
       CASE WHEN e.to_status IN ('succeeded', 'failed', 'cancelled', 'timed_out')
            THEN j.duration_ms END,
       e.detail
FROM job_events e LEFT JOIN jobs j ON j.id = e.job_id ORDER BY e.id;

INSERT INTO audit_events (at, kind, outcome, job_id, target, target_host, attempt, webhook_id,
                          http_status, excerpt, duration_ms, error, next_attempt_at,
                          delivery_id, auth_method, client_addr)
SELECT created_at, 'callback.' || direction, outcome, job_id, url,
       substring(url FROM '^[a-z]+://(?:[^@/]*@)?(\[[^]]*\]|[^:/?#]+)'), attempt, webhook_id,
       status_code, response_excerpt, duration_ms, error, next_attempt_at, delivery_id,
       auth_method, remote_addr
FROM callback_audits ORDER BY id;

DROP TABLE job_events;
DROP TABLE callback_audits;

CREATE INDEX audit_events_job_idx ON audit_events (job_id, id) WHERE job_id IS NOT NULL;
-- The reports by kind and time read these kinds only; job state changes (most rows) stay out
-- of the index, so they cost one index write less. Add a kind here when a report needs it.
CREATE INDEX audit_events_kind_at_idx ON audit_events (kind, at)
    WHERE kind IN ('callback.out', 'callback.in', 'ssh.run', 'ssh.dry_run', 'ssh.refused',
                   'ssh.host_key_mismatch', 'ssh.connect_failed', 'auth.failed',
                   'key.created', 'key.revoked');
-- Append-only, so time follows the physical order: BRIN finds a period's events (the rollups
-- read every job's final event by time) at next to no write cost.
CREATE INDEX audit_events_at_brin ON audit_events USING brin (at);

CREATE FUNCTION refuse_audit_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_events_append_only
    BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION refuse_audit_change();
CREATE TRIGGER audit_events_no_truncate
    BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_audit_change();

-- The two former tables, as views over the trail (same names and columns).
CREATE VIEW job_events AS
SELECT id, job_id, at, kind, from_status, to_status, attempt, instance_id, detail,
       actor_kind, actor_id, actor_name, request_id
FROM audit_events
WHERE job_id IS NOT NULL AND kind NOT IN ('callback.out', 'callback.in');

CREATE VIEW callback_audits AS
SELECT id, job_id, substring(kind FROM 10) AS direction, target AS url, attempt, webhook_id,
       http_status AS status_code, excerpt AS response_excerpt, duration_ms, error,
       next_attempt_at, at AS created_at, delivery_id, outcome, auth_method,
       client_addr AS remote_addr
FROM audit_events
WHERE kind IN ('callback.out', 'callback.in');

----------------------------------------------------------------------------------------------
-- Rollups: finished jobs aggregated per hour by maintenance (from each job's final event in
-- the trail), so reports over any period read a few rows per hour instead of every job.
CREATE TABLE job_stats_hourly (
    hour            timestamptz NOT NULL,
    intent          text        NOT NULL,
    mode            job_mode    NOT NULL,
    status          job_status  NOT NULL,
    jobs            bigint      NOT NULL,
    attempts        bigint      NOT NULL,
    retried_jobs    bigint      NOT NULL,   -- finished after more than one attempt
    duration_ms_sum bigint      NOT NULL,
    duration_ms_max bigint      NOT NULL,
    PRIMARY KEY (hour, intent, mode, status)
);

-- Durations as a log-scale histogram per day: bucket b holds [1.1^(b-1), 1.1^b) ms (b = 0:
-- < 1 ms), so percentiles read from it are within ±5 % of the exact value, and a month of
-- history is a few thousand rows per intent.
CREATE TABLE job_duration_hist (
    day    date        NOT NULL,   -- UTC
    intent text        NOT NULL,
    status job_status  NOT NULL,
    bucket integer     NOT NULL,
    jobs   bigint      NOT NULL,
    PRIMARY KEY (day, intent, status, bucket)
);

CREATE FUNCTION duration_bucket(ms bigint) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN ms IS NULL OR ms < 1 THEN 0
                ELSE floor(ln(ms::float8) / ln(1.1))::integer + 1 END
$$;

-- The geometric middle of a bucket, in ms.
CREATE FUNCTION duration_bucket_ms(bucket integer) RETURNS float8
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN bucket = 0 THEN 0 ELSE power(1.1, bucket - 0.5) END
$$;

CREATE TABLE rollup_watermarks (
    name text        PRIMARY KEY,
    upto timestamptz NOT NULL
);
INSERT INTO rollup_watermarks VALUES ('jobs', '1970-01-01');

----------------------------------------------------------------------------------------------
-- Reporting views (documented in docs/reporting.md; filter them by day/hour and intent).

-- Jobs per intent, mode and status per day (UTC).
CREATE VIEW report_jobs_daily AS
SELECT date_trunc('day', hour AT TIME ZONE 'UTC')::date AS day, intent, mode, status,
       sum(jobs)::bigint AS jobs
FROM job_stats_hourly
GROUP BY 1, 2, 3, 4;

-- Failure and retry rates per intent per day.
CREATE VIEW report_failure_rates_daily AS
SELECT date_trunc('day', hour AT TIME ZONE 'UTC')::date AS day, intent,
       sum(jobs)::bigint AS jobs,
       (sum(jobs) FILTER (WHERE status = 'succeeded'))::bigint AS succeeded,
       (sum(jobs) FILTER (WHERE status IN ('failed', 'timed_out')))::bigint AS failed,
       (sum(jobs) FILTER (WHERE status = 'cancelled'))::bigint AS cancelled,
       round(coalesce(sum(jobs) FILTER (WHERE status IN ('failed', 'timed_out')), 0)::numeric
             / sum(jobs), 4) AS failure_rate,
       sum(retried_jobs)::bigint AS retried_jobs,
       round(sum(retried_jobs)::numeric / sum(jobs), 4) AS retry_rate,
       round(sum(attempts)::numeric / sum(jobs), 3) AS attempts_per_job
FROM job_stats_hourly
GROUP BY 1, 2;

-- p50/p95/p99 duration (created → finished) per intent, over the UTC days from `since` up to
-- (not including) `until`.
CREATE FUNCTION report_duration_percentiles(since timestamptz, until timestamptz)
RETURNS TABLE (intent text, jobs bigint, p50_ms bigint, p95_ms bigint, p99_ms bigint)
LANGUAGE sql STABLE AS $$
    WITH h AS (
        SELECT intent, bucket, sum(jobs) AS n
        FROM job_duration_hist
        WHERE day >= (since AT TIME ZONE 'UTC')::date AND day < (until AT TIME ZONE 'UTC')::date
        GROUP BY intent, bucket
    ), c AS (
        SELECT intent, bucket, n,
               sum(n) OVER (PARTITION BY intent ORDER BY bucket) AS running,
               sum(n) OVER (PARTITION BY intent) AS total
        FROM h
    )
    SELECT intent, max(total)::bigint,
           round(duration_bucket_ms(min(bucket) FILTER (WHERE running >= 0.50 * total)))::bigint,
           round(duration_bucket_ms(min(bucket) FILTER (WHERE running >= 0.95 * total)))::bigint,
           round(duration_bucket_ms(min(bucket) FILTER (WHERE running >= 0.99 * total)))::bigint
    FROM c
    GROUP BY intent
    ORDER BY intent
$$;

-- The same per day.
CREATE VIEW report_durations_daily AS
WITH h AS (
    SELECT day, intent, bucket, sum(jobs) AS n
    FROM job_duration_hist
    GROUP BY 1, 2, 3
), c AS (
    SELECT day, intent, bucket, n,
           sum(n) OVER (PARTITION BY day, intent ORDER BY bucket) AS running,
           sum(n) OVER (PARTITION BY day, intent) AS total
    FROM h
)
SELECT day, intent, max(total)::bigint AS jobs,
       round(duration_bucket_ms(min(bucket) FILTER (WHERE running >= 0.50 * total)))::bigint AS p50_ms,
       round(duration_bucket_ms(min(bucket) FILTER (WHERE running >= 0.95 * total)))::bigint AS p95_ms,
       round(duration_bucket_ms(min(bucket) FILTER (WHERE running >= 0.99 * total)))::bigint AS p99_ms
FROM c
GROUP BY day, intent;

-- Callback delivery success and latency per destination host per day.
CREATE VIEW report_callback_delivery_daily AS
SELECT date_trunc('day', at AT TIME ZONE 'UTC')::date AS day, target_host AS host,
       count(*) AS attempts,
       count(*) FILTER (WHERE outcome = 'delivered') AS delivered,
       count(*) FILTER (WHERE outcome IN ('exhausted', 'refused')) AS given_up,
       round(count(*) FILTER (WHERE outcome = 'delivered')::numeric / count(*), 4) AS success_rate,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms) AS p50_ms,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms) AS p95_ms
FROM audit_events
WHERE kind = 'callback.out'
GROUP BY 1, 2;

-- The same over [since, until), straight from the (kind, at) index.
CREATE FUNCTION report_callback_delivery(since timestamptz, until timestamptz)
RETURNS TABLE (host text, attempts bigint, delivered bigint, given_up bigint,
               success_rate numeric, p50_ms float8, p95_ms float8)
LANGUAGE sql STABLE AS $$
    SELECT target_host, count(*),
           count(*) FILTER (WHERE outcome = 'delivered'),
           count(*) FILTER (WHERE outcome IN ('exhausted', 'refused')),
           round(count(*) FILTER (WHERE outcome = 'delivered')::numeric / count(*), 4),
           percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms),
           percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms)
    FROM audit_events
    WHERE kind = 'callback.out' AND at >= since AND at < until
    GROUP BY target_host
    ORDER BY target_host
$$;

-- Who ran which SSH commands on which hosts (and what was refused or only dry-run): one row per
-- decision, with the command's exit code from the outcome recorded after it ran.
CREATE VIEW report_ssh_commands AS
SELECT a.at, a.actor_name AS principal, a.actor_id AS api_key_id, a.request_id, a.job_id,
       a.attempt, a.target AS host, a.detail ->> 'command' AS command, a.detail -> 'argv' AS argv,
       a.outcome AS decision,
       coalesce(a.detail ->> 'reason', a.detail -> 'reasons' ->> 0, x.detail ->> 'reason') AS reason,
       (x.detail ->> 'exit_code')::integer AS exit_code, x.outcome AS result, a.kind
FROM audit_events a
LEFT JOIN LATERAL (
    SELECT e.detail, e.outcome FROM audit_events e
    WHERE e.job_id = a.job_id AND e.attempt = a.attempt AND e.kind = 'ssh.exit'
    ORDER BY e.id LIMIT 1
) x ON a.kind = 'ssh.run'
WHERE a.kind IN ('ssh.run', 'ssh.dry_run', 'ssh.refused', 'ssh.host_key_mismatch',
                 'ssh.connect_failed');

-- Queued or stuck work by age: what waits, what runs past its lease, what awaits a callback
-- past its deadline.
CREATE VIEW report_backlog AS
SELECT status, intent,
       count(*) AS jobs,
       count(*) FILTER (WHERE (status = 'running' AND lease_expires_at < now())
                          OR (status = 'awaiting_callback' AND callback_deadline_at < now())
                          OR (status = 'queued' AND run_at < now() - interval '5 minutes')) AS stuck,
       min(created_at) AS oldest_created_at,
       now() - min(CASE WHEN status = 'queued' THEN run_at ELSE created_at END) AS oldest_age
FROM jobs
WHERE status IN ('queued', 'running', 'awaiting_callback')
GROUP BY status, intent;

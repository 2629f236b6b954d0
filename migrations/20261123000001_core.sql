-- Core schema: the job queue, its history, idempotency keys and memory items.
-- Column names are part of the SQL reporting surface (docs/reporting.md): rename with care.

CREATE TYPE job_status AS ENUM (
    'queued',             -- waiting for a worker (new, retry scheduled, rescued or released)
    'running',            -- claimed: a worker holds the lease
    'awaiting_callback',  -- a flow accepted the work and will call /callbacks/ingest
    'succeeded',
    'failed',
    'cancelled',
    'timed_out'
);

CREATE TYPE job_mode AS ENUM ('auto', 'flow', 'agent', 'mcp');

CREATE TABLE jobs (
    id                  uuid        PRIMARY KEY,            -- UUIDv7, shown as job_<hex>
    intent              text        NOT NULL,
    mode                job_mode    NOT NULL CHECK (mode <> 'auto'),  -- the engine that runs it
    requested_mode      job_mode    NOT NULL,               -- what the client asked for
    status              job_status  NOT NULL DEFAULT 'queued',
    priority            smallint    NOT NULL DEFAULT 0,     -- lower runs first
    run_at              timestamptz NOT NULL DEFAULT now(), -- not claimed before this
    attempts            integer     NOT NULL DEFAULT 0,     -- attempts started so far
    max_attempts        integer     NOT NULL CHECK (max_attempts >= 1),
    attempt_timeout_ms  integer     NOT NULL CHECK (attempt_timeout_ms > 0),
    inputs              jsonb       NOT NULL,
    result              jsonb,
    error_code          text,
    error_message       text,
    callback_url        text,
    request_id          text,
    lease_owner         uuid,                               -- instance holding the lease
    lease_expires_at    timestamptz,
    cancel_requested_at timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    started_at          timestamptz,                        -- first attempt began
    finished_at         timestamptz,
    duration_ms         bigint,                             -- finished_at - created_at
    CONSTRAINT jobs_lease_matches_status CHECK ((status = 'running') = (lease_owner IS NOT NULL)),
    CONSTRAINT jobs_finished_has_time CHECK (
        (status IN ('succeeded', 'failed', 'cancelled', 'timed_out')) = (finished_at IS NOT NULL))
);

-- Every index here is written on each state change (a status change is never a HOT update),
-- so there are only the ones the queue and the reports need. Listing all jobs by time uses the
-- primary key: ids are UUIDv7, ordered by creation.
-- The claim query: ORDER BY priority, run_at, id over queued rows only.
CREATE INDEX jobs_claim_idx ON jobs (priority, run_at, id) WHERE status = 'queued';
-- Lease rescue looks at running rows only. Keyed on the owner, not the expiry, so that the
-- heartbeat (which moves the expiry) can update in place (HOT).
CREATE INDEX jobs_running_idx ON jobs (lease_owner) WHERE status = 'running';
-- Reporting and GET /jobs filters, newest first.
CREATE INDEX jobs_intent_created_idx ON jobs (intent, created_at);
CREATE INDEX jobs_status_created_idx ON jobs (status, created_at);

-- Append-only history of every state change of a job. No foreign key: history outlives
-- payload retention, and a key check per event would cost every state change a lookup.
CREATE TABLE job_events (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id      uuid        NOT NULL,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    kind        text        NOT NULL,   -- created, claimed, retry_scheduled, succeeded, ...
    from_status job_status,
    to_status   job_status,
    attempt     integer     NOT NULL,
    instance_id uuid,
    detail      jsonb
);
CREATE INDEX job_events_job_idx ON job_events (job_id, id);

CREATE TABLE idempotency_keys (
    scope        text        NOT NULL,   -- '' until API keys exist; then the key id
    key          text        NOT NULL,
    request_hash bytea       NOT NULL,   -- SHA-256 of the canonical request
    job_id       uuid        NOT NULL,   -- inserted with it, in the same statement
    derived      boolean     NOT NULL,   -- derived from intent + inputs, not sent by the client
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    PRIMARY KEY (scope, key)
);
-- Keys expire in insertion order: a BRIN range serves the purge at next to no write cost.
CREATE INDEX idempotency_keys_expiry_brin ON idempotency_keys USING brin (expires_at);

CREATE TABLE memory_items (
    id            uuid        PRIMARY KEY,          -- UUIDv7, shown as mem_<hex>
    text          text        NOT NULL,
    tags          text[]      NOT NULL DEFAULT '{}',
    metadata      jsonb       NOT NULL DEFAULT '{}',
    source_job_id uuid        UNIQUE,                -- a re-run of the same job writes nothing new
    created_at    timestamptz NOT NULL DEFAULT now(),
    search_vector tsvector    GENERATED ALWAYS AS (to_tsvector('english', text)) STORED
);
-- One GIN index over both: a search filtered by tags intersects inside the index
-- (measured at 1M items: 10-30x faster than two indexes combined by BitmapAnd).
CREATE INDEX memory_items_search_idx ON memory_items USING gin (search_vector, tags);

-- Outbound and inbound callback attempts (filled in by the callbacks feature).
CREATE TABLE callback_audits (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id        uuid,
    direction     text        NOT NULL CHECK (direction IN ('in', 'out')),
    url           text,
    attempt       integer,
    webhook_id    text,
    status_code   integer,
    response_excerpt text,
    duration_ms   integer,
    error         text,
    next_attempt_at timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX callback_audits_job_idx ON callback_audits (job_id, id);
CREATE INDEX callback_audits_created_idx ON callback_audits (created_at);

-- Tells every instance which jobs finished (their waiters may be elsewhere). NOTIFY payloads
-- hold at most 8000 bytes: ids go out 200 to a notification. `origin` is the instance that made
-- the change (it has told its own waiters already); NULL for maintenance.
CREATE FUNCTION notify_jobs_done(origin uuid, ids uuid[]) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    total  integer := coalesce(array_length(ids, 1), 0);
    prefix text := coalesce(replace(origin::text, '-', ''), '') || ';';
    first  integer := 1;
BEGIN
    WHILE first <= total LOOP
        PERFORM pg_notify('orch_job_done', prefix || array_to_string(ARRAY(
            SELECT replace(id::text, '-', '') FROM unnest(ids[first:first + 199]) AS id), ','));
        first := first + 200;
    END LOOP;
    RETURN total;
END
$$;

-- Hot queue tables churn: vacuum them well before the default 20 % of dead rows.
ALTER TABLE jobs SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02,
                      fillfactor = 80);
ALTER TABLE idempotency_keys SET (autovacuum_vacuum_scale_factor = 0.05);

-- Callbacks: durable outbound deliveries, inbound verification, and flows that report later.

ALTER TABLE jobs
    ADD COLUMN callback_deadline_at   timestamptz,              -- awaiting_callback until then
    ADD COLUMN callback_token_hashes  bytea[] NOT NULL DEFAULT '{}';  -- SHA-256 of each attempt's token

-- Maintenance times out flows that never called back.
CREATE INDEX jobs_callback_deadline_idx ON jobs (callback_deadline_at)
    WHERE status = 'awaiting_callback';

CREATE TYPE delivery_status AS ENUM (
    'pending',    -- due at next_attempt_at (in flight while a lease is held)
    'delivered',  -- a 2xx answer
    'gone',       -- the receiver answered 410: stop
    'exhausted'   -- every scheduled attempt failed (POST /jobs/{id}/callbacks/retry sends it again)
);

-- One outbound message per job that ends with a callback_url.
CREATE TABLE callback_deliveries (
    id               uuid            PRIMARY KEY DEFAULT gen_random_uuid(),
    job_id           uuid            NOT NULL UNIQUE,
    url              text            NOT NULL,
    webhook_id       text            NOT NULL UNIQUE,  -- the same on every attempt
    status           delivery_status NOT NULL DEFAULT 'pending',
    attempts         integer         NOT NULL DEFAULT 0,
    manual_retries   integer         NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz     NOT NULL DEFAULT now(),
    lease_owner      uuid,
    lease_expires_at timestamptz,
    last_status_code integer,
    last_error       text,
    created_at       timestamptz     NOT NULL DEFAULT now(),
    finished_at      timestamptz
);
CREATE INDEX callback_deliveries_due_idx ON callback_deliveries (next_attempt_at)
    WHERE status = 'pending';

-- The delivery is written in the transaction that finishes the job, whichever path finishes
-- it (completion, rescue, cancel, ingest, deadline), so a crash right after loses nothing.
CREATE FUNCTION enqueue_callback_delivery() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO callback_deliveries (job_id, url, webhook_id)
    VALUES (NEW.id, NEW.callback_url, 'msg_' || replace(gen_random_uuid()::text, '-', ''))
    ON CONFLICT (job_id) DO NOTHING;
    PERFORM pg_notify('orch_deliveries', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_enqueue_callback_delivery
    AFTER UPDATE OF status ON jobs
    FOR EACH ROW
    WHEN (NEW.callback_url IS NOT NULL
          AND NEW.status IN ('succeeded', 'failed', 'cancelled', 'timed_out')
          AND OLD.status NOT IN ('succeeded', 'failed', 'cancelled', 'timed_out'))
    EXECUTE FUNCTION enqueue_callback_delivery();

-- What each audited attempt came to, and for inbound ones how the caller proved itself.
ALTER TABLE callback_audits
    ADD COLUMN delivery_id uuid,
    ADD COLUMN outcome     text,    -- out: delivered, retry, gone, exhausted, refused
                                    -- in: accepted, duplicate, rejected
    ADD COLUMN auth_method text,    -- in: signature | token
    ADD COLUMN remote_addr text;

-- Inbound webhook-ids already accepted (replays inside the tolerance window are no-ops).
CREATE TABLE ingest_seen (
    webhook_id  text        PRIMARY KEY,
    job_id      uuid,
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ingest_seen_received_idx ON ingest_seen (received_at);

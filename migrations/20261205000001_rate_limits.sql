-- Rate limits shared by every instance: one row per token bucket, kept as GCRA's theoretical
-- arrival time (`tat`): a bucket of rate r and burst b admits a request at t when
-- tat - t <= (b - 1) / r, and the request moves tat to max(tat, t) + 1 / r. One timestamp per
-- bucket, read and written under the row's lock, on the database's one clock. Requests take
-- tokens in one statement (`Store::take_rate_tokens`).
--
-- UNLOGGED: a write costs no WAL, and a crash that empties the table only means every bucket
-- starts full again, which a rate limit can afford.
CREATE UNLOGGED TABLE rate_buckets (
    bucket text PRIMARY KEY,
    tat timestamptz NOT NULL
);

-- Outbound limits (a flow's URL) do not refuse: a job over the rate reserves the next free slot
-- and waits in the queue until then. The reservation is the token it took, so when the job
-- comes back at its slot it runs without taking another (and each waiting job is put back once,
-- not once per slot that others took first).
CREATE TABLE rate_reservations (
    job_id uuid PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    slot timestamptz NOT NULL
);

-- Takes a token (or the slot the job reserved earlier) from `p_bucket` for job `p_job`: 0 when
-- it may run now, else the milliseconds until its reserved slot.
CREATE FUNCTION reserve_rate_slot(p_bucket text, p_interval_ms float8, p_tolerance_ms float8,
                                  p_job uuid, p_now timestamptz)
RETURNS float8
LANGUAGE plpgsql AS $$
DECLARE
    t timestamptz := coalesce(p_now, now());
    slot_at timestamptz;
    base timestamptz;
BEGIN
    DELETE FROM rate_reservations WHERE job_id = p_job RETURNING slot INTO slot_at;
    IF NOT FOUND THEN
        INSERT INTO rate_buckets (bucket, tat) VALUES (p_bucket, '-infinity')
        ON CONFLICT (bucket) DO NOTHING;
        SELECT greatest(tat, t) INTO base FROM rate_buckets WHERE bucket = p_bucket FOR UPDATE;
        UPDATE rate_buckets SET tat = base + make_interval(secs => p_interval_ms / 1000)
        WHERE bucket = p_bucket;
        slot_at := base - make_interval(secs => p_tolerance_ms / 1000);
    END IF;
    IF slot_at <= t THEN
        RETURN 0;
    END IF;
    INSERT INTO rate_reservations (job_id, slot) VALUES (p_job, slot_at);
    RETURN extract(epoch FROM slot_at - t) * 1000;
END
$$;

-- A job an engine put back in the queue without running it (its flow's rate), the attempt not
-- counted.
SELECT add_audit_kinds('deferred');
ALTER TABLE audit_events VALIDATE CONSTRAINT audit_events_kind_known;

-- Rate limits shared by every instance: one row per token bucket, kept as GCRA's theoretical
-- arrival time (`tat`): a bucket of rate r and burst b admits a request at t when
-- tat - t <= (b - 1) / r, and the request moves tat to max(tat, t) + 1 / r. One timestamp per
-- bucket, read and written under the row's lock, on the database's one clock.
--
-- UNLOGGED: a write costs no WAL, and a crash that empties the table only means every bucket
-- starts full again, which a rate limit can afford.
CREATE UNLOGGED TABLE rate_buckets (
    bucket text PRIMARY KEY,
    tat timestamptz NOT NULL
);

-- Takes one token from each of `p_buckets` (with their emission intervals and burst tolerances
-- in milliseconds), all or none: a request over any limit changes no bucket. Returns nothing
-- when taken, else the 1-based position of the bucket that is the longest to wait for and how
-- many milliseconds until it has a token. `p_now`: the clock (NULL: the database's), for tests.
CREATE FUNCTION take_rate_tokens(p_buckets text[], p_interval_ms float8[],
                                 p_tolerance_ms float8[], p_now timestamptz)
RETURNS TABLE (refused int, wait_ms float8)
LANGUAGE plpgsql AS $$
DECLARE
    t timestamptz := coalesce(p_now, now());
BEGIN
    INSERT INTO rate_buckets (bucket, tat)
    SELECT b, '-infinity' FROM unnest(p_buckets) AS b
    ON CONFLICT (bucket) DO NOTHING;
    -- Locked in one order, so requests that share buckets cannot deadlock.
    PERFORM 1 FROM rate_buckets WHERE bucket = ANY (p_buckets) ORDER BY bucket FOR UPDATE;
    RETURN QUERY
        SELECT w.i::int,
               extract(epoch FROM greatest(r.tat, t) - t) * 1000 - w.tolerance
        FROM unnest(p_buckets, p_tolerance_ms) WITH ORDINALITY AS w(bucket, tolerance, i)
        JOIN rate_buckets r ON r.bucket = w.bucket
        WHERE extract(epoch FROM greatest(r.tat, t) - t) * 1000 > w.tolerance
        ORDER BY 2 DESC
        LIMIT 1;
    IF NOT FOUND THEN
        UPDATE rate_buckets r
        SET tat = greatest(r.tat, t) + make_interval(secs => w.interval_ms / 1000)
        FROM unnest(p_buckets, p_interval_ms) AS w(bucket, interval_ms)
        WHERE r.bucket = w.bucket;
    END IF;
END
$$;

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

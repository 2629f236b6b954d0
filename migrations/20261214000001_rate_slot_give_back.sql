-- A job cancelled while it waits for its flow's rate slot gives the slot back. Until now its
-- reservation stayed, and so did the bucket's theoretical arrival time (`tat`) it had moved:
-- cancelling a backlog of 100 waiting jobs of a flow limited to 10 a minute left the next job
-- waiting ten minutes behind slots nobody would use.
--
-- A reservation now keeps what it did to its bucket: the `tat` it found (`base`) and the one it
-- left (`tat_after`). Slots handed out later were computed from `tat_after` and are promised to
-- their jobs, so a slot can be taken back exactly only from the end of the bucket's line: when
-- the bucket's `tat` is still the cancelled reservation's `tat_after`, it goes back to `base`.
-- A reservation cancelled from the middle of the line is marked `given_up` instead, and goes
-- with the first cancellation behind it that reaches the end: cancelling a whole backlog, in
-- any order, brings the bucket back to where it was before the first of them.
-- Rows reserved before this migration have no bucket and give nothing back.
ALTER TABLE rate_reservations
    ADD COLUMN bucket text,
    ADD COLUMN base timestamptz,
    ADD COLUMN tat_after timestamptz,
    ADD COLUMN given_up boolean NOT NULL DEFAULT false;

-- The end of a bucket's line, read backwards while given up.
CREATE INDEX rate_reservations_line ON rate_reservations (bucket, tat_after);

CREATE OR REPLACE FUNCTION reserve_rate_slot(p_bucket text, p_interval_ms float8,
                                             p_tolerance_ms float8, p_job uuid,
                                             p_now timestamptz)
RETURNS float8
LANGUAGE plpgsql AS $$
DECLARE
    t timestamptz;
    slot_at timestamptz;
    tat_now timestamptz;
    base timestamptz;
    tat_next timestamptz;
BEGIN
    -- A job back before its slot keeps its place in the line.
    DELETE FROM rate_reservations WHERE job_id = p_job
    RETURNING slot, rate_reservations.base, tat_after INTO slot_at, base, tat_next;
    IF NOT FOUND THEN
        INSERT INTO rate_buckets (bucket, tat) VALUES (p_bucket, '-infinity')
        ON CONFLICT (bucket) DO NOTHING;
        SELECT tat INTO tat_now FROM rate_buckets WHERE bucket = p_bucket FOR UPDATE;
        t := coalesce(p_now, clock_timestamp());
        base := greatest(tat_now, t);
        tat_next := base + make_interval(secs => p_interval_ms / 1000);
        UPDATE rate_buckets SET tat = tat_next WHERE bucket = p_bucket;
        slot_at := base - make_interval(secs => p_tolerance_ms / 1000);
    ELSE
        t := coalesce(p_now, clock_timestamp());
    END IF;
    IF slot_at <= t THEN
        RETURN 0;
    END IF;
    INSERT INTO rate_reservations (job_id, slot, bucket, base, tat_after)
    VALUES (p_job, slot_at, p_bucket, base, tat_next);
    RETURN extract(epoch FROM slot_at - t) * 1000;
END
$$;

-- Gives back the slot job `p_job` reserved, if it has one (it was cancelled before it ran).
CREATE FUNCTION give_back_rate_slot(p_job uuid)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    line text;
    back_to timestamptz;
    r record;
BEGIN
    UPDATE rate_reservations SET given_up = true
    WHERE job_id = p_job AND bucket IS NOT NULL
    RETURNING bucket INTO line;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    -- The bucket's lock orders this against reservations being made (which hold it until they
    -- commit), and each statement below sees those committed before it was granted.
    PERFORM 1 FROM rate_buckets WHERE bucket = line FOR UPDATE;
    FOR r IN
        SELECT job_id, base, tat_after, given_up FROM rate_reservations
        WHERE bucket = line ORDER BY tat_after DESC
    LOOP
        EXIT WHEN NOT r.given_up;
        -- Only from the bucket's own end, and only back along an unbroken line: a token taken
        -- at once (not reserved, so not in this table) after a slot had passed made the
        -- bucket's time its own, and what came before it stays.
        IF back_to IS NULL THEN
            EXIT WHEN NOT EXISTS (SELECT 1 FROM rate_buckets
                                  WHERE bucket = line AND tat = r.tat_after);
        ELSE
            EXIT WHEN r.tat_after <> back_to;
        END IF;
        back_to := r.base;
        DELETE FROM rate_reservations WHERE job_id = r.job_id;
    END LOOP;
    IF back_to IS NOT NULL THEN
        UPDATE rate_buckets SET tat = back_to WHERE bucket = line;
    END IF;
END
$$;

-- An outbound bucket reads its clock once its row is locked, as the key limit's statement does
-- since this release (src/store/rate_limits.rs): a reading taken at the statement's start can
-- be behind slots reserved while this call waited for the row, and the slot it reserves was
-- then judged later than it is (the job waited longer than the rate asks). The function is
-- otherwise the one of 20261205000001.
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
BEGIN
    DELETE FROM rate_reservations WHERE job_id = p_job RETURNING slot INTO slot_at;
    IF NOT FOUND THEN
        INSERT INTO rate_buckets (bucket, tat) VALUES (p_bucket, '-infinity')
        ON CONFLICT (bucket) DO NOTHING;
        SELECT tat INTO tat_now FROM rate_buckets WHERE bucket = p_bucket FOR UPDATE;
        t := coalesce(p_now, clock_timestamp());
        base := greatest(tat_now, t);
        UPDATE rate_buckets SET tat = base + make_interval(secs => p_interval_ms / 1000)
        WHERE bucket = p_bucket;
        slot_at := base - make_interval(secs => p_tolerance_ms / 1000);
    ELSE
        t := coalesce(p_now, clock_timestamp());
    END IF;
    IF slot_at <= t THEN
        RETURN 0;
    END IF;
    INSERT INTO rate_reservations (job_id, slot) VALUES (p_job, slot_at);
    RETURN extract(epoch FROM slot_at - t) * 1000;
END
$$;

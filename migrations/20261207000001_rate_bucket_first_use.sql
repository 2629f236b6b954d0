-- Two requests that use a bucket for the first time at once both find no row to lock, and both
-- insert it. Until now the loser's conflict moved the bucket on without checking it, so a burst
-- on a new bucket could pass more requests than the burst allows (CI caught 4 of a burst of 3
-- passing). The loser now fails its whole statement (all or none, nothing taken) with a
-- serialization failure, and `Store::take_rate_tokens` runs it again: the row is there by then,
-- so the second run locks and checks it like any other.
CREATE FUNCTION rate_bucket_created_concurrently(p_bucket text)
RETURNS timestamptz
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'rate bucket % was created by a concurrent request; retry', p_bucket
        USING ERRCODE = 'serialization_failure';
END
$$;

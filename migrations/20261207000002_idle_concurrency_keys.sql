-- The concurrency keys no job uses any more: every place free, and no job of the key left to
-- run. Maintenance looks for them without a lock and deletes their places under one
-- (`Store::purge_idle_concurrency_keys`); one definition for both.
CREATE FUNCTION idle_concurrency_keys() RETURNS SETOF text
LANGUAGE sql STABLE AS $$
    SELECT s.key FROM concurrency_slots s
    GROUP BY s.key
    HAVING bool_and(s.job_id IS NULL)
       AND NOT EXISTS (SELECT 1 FROM jobs j
                       WHERE j.concurrency_key = s.key
                         AND j.status NOT IN ('succeeded', 'failed', 'cancelled', 'timed_out'))
$$;

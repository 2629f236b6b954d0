-- The finished-at BRIN summarizes the hour a job finished in, not the instant (issue 16,
-- target 4).
--
-- A BRIN entry is rewritten only when a new row's value falls outside its range's summary.
-- On a table that has run for a while, vacuum leaves free space in old, already summarized
-- page ranges, and a finishing job's new version often lands there: with the instant as the
-- key, every such version is later than anything in the summary, so every one rewrote it
-- (72 bytes of WAL a drained job at 5M jobs, one BRIN record a job: docs/scaling.md). Keyed by
-- the hour, a range's summary widens once an hour at most; the versions after that fall inside.
--
-- Every reader keeps its exact condition on `finished_at` and adds the same condition on the
-- hour, which is what lets it use this index (the hour is lossy, the instant is exact): the
-- dashboard's "finished in the last 24 h", payload retention, and the retention checks of a
-- `jobs` partition (before it is listed as expired, and again after DETACH, under its lock).
--
-- Built under CREATE INDEX's SHARE lock on `jobs` (writes wait; one scan of the table: a few
-- seconds per million jobs, docs/scaling.md). A larger database can build it ahead with
-- CREATE INDEX CONCURRENTLY per partition and attach each to an index made ON ONLY jobs.

-- IMMUTABLE: date_bin of a timestamptz works on the absolute instant, never the time zone.
CREATE FUNCTION finished_hour(finished_at timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT date_bin('1 hour', finished_at, TIMESTAMPTZ '2000-01-01 00:00:00+00') $$;

DROP INDEX IF EXISTS jobs_finished_brin;
CREATE INDEX jobs_finished_hour_brin ON jobs USING brin (finished_hour(finished_at));

-- As in 20261209000001, but the late-finish check after DETACH reads the index above.
CREATE OR REPLACE FUNCTION drop_history_partition(partition_name text, jobs_cutoff timestamptz)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    p    history_partitions;
    lo   uuid;
    hi   uuid;
    busy boolean;
BEGIN
    SELECT * INTO STRICT p FROM history_partitions WHERE name = partition_name;
    lo := coalesce(uuid_v7_floor(p.from_at), '00000000-0000-0000-0000-000000000000');
    hi := uuid_v7_floor(p.until_at);
    IF p.parent = 'jobs' THEN
        -- Before detaching: the foreign key refuses to let a referenced job go.
        DELETE FROM rate_reservations WHERE job_id >= lo AND job_id < hi;
    END IF;
    EXECUTE format('ALTER TABLE %I DETACH PARTITION %I', p.parent, p.name);
    IF p.parent = 'jobs' THEN
        -- Under DETACH's lock on `jobs`: each check by an index of the partition, never a scan.
        EXECUTE format('SELECT EXISTS (SELECT 1 FROM %1$I WHERE status IN '
                       '(''scheduled'', ''queued'', ''running'', ''awaiting_callback'')) '
                       'OR EXISTS (SELECT 1 FROM %1$I WHERE finished_hour(finished_at) '
                       '>= finished_hour($1) AND finished_at >= $1)', p.name)
            INTO busy USING jobs_cutoff;
        busy := busy OR EXISTS (SELECT 1 FROM callback_deliveries
                                WHERE job_id >= lo AND job_id < hi AND status = 'pending');
        IF busy THEN
            RAISE EXCEPTION 'partition % holds jobs not yet past retention', p.name
                USING ERRCODE = 'object_in_use';
        END IF;
        DELETE FROM callback_deliveries WHERE job_id >= lo AND job_id < hi;
    END IF;
    EXECUTE format('DROP TABLE %I', p.name);
    DELETE FROM history_partitions WHERE name = p.name;
END
$$;

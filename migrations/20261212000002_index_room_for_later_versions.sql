-- Room in the leaves of the indexes a job's later writes go back to (issue 16, target 4).
--
-- A job's row is written at intake and again when it finishes (and when it is claimed, on the
-- lease path): each new version is a new entry in every index of `jobs`, next to the entry of
-- the version before, and its events join its `created` event in `audit_events_job_idx`. Those
-- entries were appended at intake to leaves filled to B-tree's default 90 %, so the later ones
-- split the leaves they land in (a split writes half a page to the WAL). Leaves filled to 50 %
-- at intake take them without splitting. `bench/wal` (20,000 jobs finished during their claim,
-- per job): 1,385 bytes before, 1,342 after: the primary key 116 → 101, the intent index
-- 148 → 133, the events' job index 195 → 182; the splits' 115 bytes are gone, though the bench's
-- checkpoint before the drain puts a full-page image of each of the now twice as many leaves it
-- touches in the WAL (without a checkpoint in between, as in steady running, the saving is the
-- splits'). The price: those three indexes keep leaves about half full once vacuum has removed
-- the old versions' entries, so they take about twice the space: per million jobs the primary
-- key 30 → 55 MB and the intent index 47 → 86 MB (built both ways on 1M UUIDv7 rows), about
-- 70 bytes a job with the events' index.
--
-- Storage settings belong to each partition's index (a partitioned index cannot hold them):
-- set here on every partition's, and copied by `ensure_history_partitions` from the newest
-- partition's indexes to the ones it makes, as it already copied the table's settings. Leaves
-- already written keep their fill; new ones get 50 %.

DO $$
DECLARE
    idx regclass;
BEGIN
    FOR idx IN
        SELECT i.inhrelid::regclass
        FROM pg_inherits i
        WHERE i.inhparent IN ('jobs_pkey'::regclass, 'jobs_intent_id_idx'::regclass,
                              'audit_events_job_idx'::regclass)
    LOOP
        EXECUTE format('ALTER INDEX %s SET (fillfactor = 50)', idx);
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION ensure_history_partitions(days integer, now timestamptz, upto timestamptz)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    tbl      text;
    newest   history_partitions;
    part     text;
    options  text[];
    idx      record;
    until    timestamptz;
    made     integer := 0;
BEGIN
    IF days < 1 THEN
        RAISE EXCEPTION 'partitions must be at least a day long, not % days', days;
    END IF;
    -- One instance at a time; the others find the partitions made when they get the lock.
    PERFORM pg_advisory_xact_lock(215129411740161);
    FOREACH tbl IN ARRAY ARRAY['jobs', 'audit_events'] LOOP
        LOOP
            SELECT * INTO STRICT newest FROM history_partitions
            WHERE parent = tbl ORDER BY until_at DESC LIMIT 1;
            EXIT WHEN newest.until_at > upto;
            until := newest.until_at + make_interval(days => days);
            IF until < now THEN
                until := date_trunc('day', now AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
            END IF;
            part := tbl || '_p' || to_char(newest.until_at AT TIME ZONE 'UTC', 'YYYYMMDD');
            -- Storage settings (fillfactor, autovacuum) follow the newest partition's.
            SELECT reloptions INTO options FROM pg_class
            WHERE oid = format('%I', newest.name)::regclass;
            -- Made on its own and then attached: CREATE TABLE … PARTITION OF would take the
            -- parent exclusively (waiting for every statement on it and holding every new one
            -- back meanwhile); ATTACH takes a lock that reads and writes pass. The parent's
            -- indexes and row triggers are made on it as it is attached.
            EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS '
                           'INCLUDING STORAGE INCLUDING COMMENTS)%s',
                part, tbl,
                CASE WHEN options IS NULL THEN ''
                     ELSE format(' WITH (%s)', array_to_string(options, ', ')) END);
            EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                tbl, part,
                CASE tbl WHEN 'jobs' THEN uuid_v7_floor(newest.until_at)::text
                         ELSE newest.until_at::text END,
                CASE tbl WHEN 'jobs' THEN uuid_v7_floor(until)::text ELSE until::text END);
            -- So do its indexes' (the attach made them from the parent's indexes, which as
            -- partitioned indexes cannot hold storage settings).
            FOR idx IN
                SELECT made_index.inhrelid::regclass AS name, newest_index.reloptions AS options
                FROM pg_inherits newest_inh
                JOIN pg_class newest_index ON newest_index.oid = newest_inh.inhrelid
                JOIN pg_index ni ON ni.indexrelid = newest_inh.inhrelid
                JOIN pg_inherits made_index ON made_index.inhparent = newest_inh.inhparent
                JOIN pg_index mi ON mi.indexrelid = made_index.inhrelid
                WHERE ni.indrelid = format('%I', newest.name)::regclass
                  AND mi.indrelid = format('%I', part)::regclass
                  AND newest_index.reloptions IS NOT NULL
            LOOP
                EXECUTE format('ALTER INDEX %s SET (%s)', idx.name,
                               array_to_string(idx.options, ', '));
            END LOOP;
            IF tbl = 'audit_events' THEN
                EXECUTE format('CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON %I '
                               'FOR EACH STATEMENT EXECUTE FUNCTION refuse_audit_change()', part);
            END IF;
            INSERT INTO history_partitions (name, parent, from_at, until_at)
            VALUES (part, tbl, newest.until_at, until);
            made := made + 1;
        END LOOP;
    END LOOP;
    RETURN made;
END
$$;


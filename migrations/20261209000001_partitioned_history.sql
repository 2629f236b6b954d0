-- Job history and the audit trail become partitioned by time, so that history can leave by
-- whole partitions (`retention.jobs_days`, `retention.audit_days`): dropping a partition is
-- the only way audit rows ever leave, and each drop is itself recorded in the trail.
--
-- * `jobs` is partitioned by range of `id`. Job ids are UUIDv7, whose first 48 bits are the
--   creation time in milliseconds, so a range of ids is a range of creation times: `id` stays
--   the primary key alone, a lookup by id reads one partition, and `rate_reservations` keeps
--   its foreign key.
-- * `audit_events` is partitioned by range of `at`; its primary key becomes `(id, at)` (a
--   partitioned table's unique keys must hold the partition key). Its ids still come from one
--   identity sequence, so streams keep reading by id.
--
-- The existing tables are not copied: each is attached whole as its table's first partition
-- (holding everything up to the next UTC midnight), so the conversion costs one scan of `jobs`
-- (checking the new partition bound) and re-created views; the new key of `audit_events` was
-- built by the previous migration without holding writes back. `history_partitions` lists
-- every partition with its time range; the server creates the coming ones ahead
-- (`ensure_history_partitions`) and drops expired ones (`drop_history_partition`).

-- The first 48 bits of a UUIDv7 for a time, the rest zero: the lowest id created at `at`.
CREATE FUNCTION uuid_v7_floor(at timestamptz) RETURNS uuid
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT encode(substring(int8send(floor(extract(epoch FROM at) * 1000)::bigint) FROM 3)
                  || '\x00000000000000000000'::bytea, 'hex')::uuid
$$;

-- A random UUIDv7 for a time (PostgreSQL 15 has none built in): for seeds and scripts that
-- insert jobs by hand, whose ids must fall into the partition of their time.
CREATE FUNCTION uuid_v7(at timestamptz DEFAULT clock_timestamp()) RETURNS uuid
LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
    SELECT encode(set_bit(set_bit(
        overlay(uuid_send(gen_random_uuid())
                PLACING substring(int8send(floor(extract(epoch FROM at) * 1000)::bigint) FROM 3)
                FROM 1 FOR 6),
        52, 1), 53, 1), 'hex')::uuid
$$;

CREATE TABLE history_partitions (
    name       text        PRIMARY KEY,
    parent     text        NOT NULL CHECK (parent IN ('jobs', 'audit_events')),
    -- NULL: the partition that holds everything from before the conversion.
    from_at    timestamptz,
    until_at   timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (parent, until_at),
    CHECK (from_at IS NULL OR from_at < until_at)
);

COMMENT ON TABLE history_partitions IS
    'Partitions of jobs (by id: UUIDv7 creation time) and audit_events (by at), with their time ranges';

-- Views read their tables by identity, so the ones over `jobs` and `audit_events` are saved by
-- their text (which names the tables) and re-created over the new partitioned tables below.
CREATE TEMP TABLE saved_views ON COMMIT DROP AS
SELECT DISTINCT v.oid::regclass::text AS name, pg_get_viewdef(v.oid) AS body
FROM pg_depend d
JOIN pg_rewrite r ON r.oid = d.objid
JOIN pg_class v ON v.oid = r.ev_class
WHERE d.classid = 'pg_rewrite'::regclass
  AND d.refobjid IN ('jobs'::regclass, 'audit_events'::regclass)
  AND v.relkind = 'v';

-- Index definitions, to be made on the partitioned tables under the same names (each attaches
-- the identical index the old table already has instead of building one).
CREATE TEMP TABLE saved_indexes ON COMMIT DROP AS
SELECT t.relname::text AS tbl, i.relname::text AS name, pg_get_indexdef(i.oid) AS def
FROM pg_index x
JOIN pg_class i ON i.oid = x.indexrelid
JOIN pg_class t ON t.oid = x.indrelid
WHERE t.relname IN ('jobs', 'audit_events') AND t.relnamespace = 'public'::regnamespace
  AND NOT x.indisprimary AND i.relname <> 'audit_events_id_at_key';

DO $$
DECLARE
    -- The old tables hold everything until the next UTC midnight; daily-aligned partitions
    -- follow from there.
    boundary  timestamptz := date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
                             + interval '1 day';
    jobs_upto timestamptz;
    audit_upto timestamptz;
    newest    uuid;
    next_id   bigint;
    ix        record;
BEGIN
    -- An id that is not a UUIDv7 of the past (a hand-made one) would lie past the bound: the
    -- old partition then reaches past it, and all new ids up to there go to it too (correct,
    -- only not partitioned until then).
    SELECT id INTO newest FROM jobs ORDER BY id DESC LIMIT 1;
    jobs_upto := boundary;
    IF newest >= uuid_v7_floor(boundary) THEN
        jobs_upto := to_timestamp((('x' || substr(replace(newest::text, '-', ''), 1, 12))::bit(48)::bigint + 1)
                                  / 1000.0);
        jobs_upto := date_trunc('day', jobs_upto AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' + interval '1 day';
    END IF;
    SELECT greatest(boundary, date_trunc('day', max(at) AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' + interval '1 day')
    INTO audit_upto FROM audit_events;
    audit_upto := coalesce(audit_upto, boundary);

    -- jobs ----------------------------------------------------------------------------------
    ALTER TABLE jobs RENAME TO jobs_p_initial;
    FOR ix IN SELECT name FROM saved_indexes WHERE tbl = 'jobs' LOOP
        EXECUTE format('ALTER INDEX %I RENAME TO %I', ix.name,
                       'jobs_p_initial' || substr(ix.name, 5));
    END LOOP;
    ALTER INDEX jobs_pkey RENAME TO jobs_p_initial_pkey;
    DROP TRIGGER jobs_enqueue_callback_delivery ON jobs_p_initial;
    DROP TRIGGER jobs_free_concurrency_slot ON jobs_p_initial;
    ALTER TABLE rate_reservations DROP CONSTRAINT rate_reservations_job_id_fkey;

    CREATE TABLE jobs (LIKE jobs_p_initial INCLUDING DEFAULTS INCLUDING CONSTRAINTS
                       INCLUDING STORAGE INCLUDING COMMENTS)
        PARTITION BY RANGE (id);
    EXECUTE format('ALTER TABLE jobs ATTACH PARTITION jobs_p_initial FOR VALUES FROM (MINVALUE) TO (%L)',
                   uuid_v7_floor(jobs_upto));
    ALTER TABLE jobs ADD CONSTRAINT jobs_pkey PRIMARY KEY (id);
    FOR ix IN SELECT def FROM saved_indexes WHERE tbl = 'jobs' LOOP
        EXECUTE ix.def;
    END LOOP;
    INSERT INTO history_partitions (name, parent, from_at, until_at)
    VALUES ('jobs_p_initial', 'jobs', NULL, jobs_upto);

    -- audit_events ---------------------------------------------------------------------------
    SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END INTO next_id
    FROM audit_events_id_seq;
    ALTER TABLE audit_events RENAME TO audit_events_p_initial;
    FOR ix IN SELECT name FROM saved_indexes WHERE tbl = 'audit_events' LOOP
        EXECUTE format('ALTER INDEX %I RENAME TO %I', ix.name,
                       'audit_events_p_initial' || substr(ix.name, 13));
    END LOOP;
    DROP TRIGGER audit_events_append_only ON audit_events_p_initial;
    DROP TRIGGER audit_events_notify ON audit_events_p_initial;
    -- Its own TRUNCATE guard stays: statement triggers of the parent do not reach partitions.
    ALTER TABLE audit_events_p_initial DROP CONSTRAINT audit_events_pkey;
    ALTER TABLE audit_events_p_initial ALTER COLUMN id DROP IDENTITY;
    -- The new key, built by the previous migration without holding writes back; built here,
    -- under the lock, only if that build did not complete.
    IF EXISTS (SELECT 1 FROM pg_index
               WHERE indexrelid = to_regclass('audit_events_id_at_key') AND indisvalid) THEN
        ALTER TABLE audit_events_p_initial ADD CONSTRAINT audit_events_p_initial_pkey
            PRIMARY KEY USING INDEX audit_events_id_at_key;
    ELSE
        DROP INDEX IF EXISTS audit_events_id_at_key;
        ALTER TABLE audit_events_p_initial ADD CONSTRAINT audit_events_p_initial_pkey
            PRIMARY KEY (id, at);
    END IF;

    CREATE TABLE audit_events (LIKE audit_events_p_initial INCLUDING DEFAULTS INCLUDING CONSTRAINTS
                               INCLUDING STORAGE INCLUDING COMMENTS)
        PARTITION BY RANGE (at);
    EXECUTE format('ALTER TABLE audit_events ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY '
                   '(START WITH %s)', next_id);
    EXECUTE format('ALTER TABLE audit_events ATTACH PARTITION audit_events_p_initial '
                   'FOR VALUES FROM (MINVALUE) TO (%L)', audit_upto);
    ALTER TABLE audit_events ADD CONSTRAINT audit_events_pkey PRIMARY KEY (id, at);
    FOR ix IN SELECT def FROM saved_indexes WHERE tbl = 'audit_events' LOOP
        EXECUTE ix.def;
    END LOOP;
    INSERT INTO history_partitions (name, parent, from_at, until_at)
    VALUES ('audit_events_p_initial', 'audit_events', NULL, audit_upto);
END
$$;

-- Row triggers on a partitioned table are cloned onto every partition, present and future.
CREATE TRIGGER jobs_enqueue_callback_delivery
    AFTER UPDATE OF status ON jobs
    FOR EACH ROW
    WHEN (NEW.callback_url IS NOT NULL
          AND NEW.status IN ('succeeded', 'failed', 'cancelled', 'timed_out')
          AND OLD.status NOT IN ('succeeded', 'failed', 'cancelled', 'timed_out'))
    EXECUTE FUNCTION enqueue_callback_delivery();

CREATE TRIGGER jobs_free_concurrency_slot
    AFTER UPDATE OF status ON jobs
    FOR EACH ROW
    WHEN (OLD.status = 'running' AND NEW.status <> 'running' AND NEW.concurrency_key IS NOT NULL)
    EXECUTE FUNCTION free_concurrency_slot();

ALTER TABLE rate_reservations ADD CONSTRAINT rate_reservations_job_id_fkey
    FOREIGN KEY (job_id) REFERENCES jobs (id) ON DELETE CASCADE;

CREATE TRIGGER audit_events_append_only
    BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION refuse_audit_change();

CREATE TRIGGER audit_events_no_truncate
    BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_audit_change();

CREATE TRIGGER audit_events_notify
    AFTER INSERT ON audit_events
    REFERENCING NEW TABLE AS written
    FOR EACH STATEMENT EXECUTE FUNCTION notify_audit_events();

DO $$
DECLARE
    v record;
BEGIN
    FOR v IN SELECT name, body FROM saved_views LOOP
        EXECUTE format('CREATE OR REPLACE VIEW %s AS %s', v.name, v.body);
    END LOOP;
END
$$;

-- Creates the partitions of both tables that follow the newest one, `days` long each, until
-- one reaches past `upto`. Returns how many it made. Callers run it ahead of time (the server
-- at start and in every maintenance pass): a row whose time has no partition is refused.
-- After a pause longer than a partition (a database left unused), the days between the newest
-- partition and `now` get one partition, not one per `days`.
CREATE FUNCTION ensure_history_partitions(days integer, now timestamptz, upto timestamptz)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    tbl      text;
    newest   history_partitions;
    part     text;
    options  text[];
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

-- Detaches and drops one partition of history. The caller has checked that it may go and
-- recorded the drop in the audit trail in the same transaction. A `jobs` partition is checked
-- again once detached (nothing can change it then): a job in it sent back to the queue, or
-- finished after `jobs_cutoff`, keeps it (SQLSTATE 55006, the caller tries again later). Rows
-- that only point into its jobs leave with it: their rate reservations and callback deliveries.
CREATE FUNCTION drop_history_partition(partition_name text, jobs_cutoff timestamptz)
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
        EXECUTE format('SELECT EXISTS (SELECT 1 FROM %1$I WHERE status IN '
                       '(''scheduled'', ''queued'', ''running'', ''awaiting_callback'')) '
                       'OR EXISTS (SELECT 1 FROM %1$I WHERE finished_at >= $1)', p.name)
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

-- The first month after the conversion (`retention.partition_days`' default); the server
-- keeps making them ahead from here.
SELECT ensure_history_partitions(30, now(), now() + interval '1 day');

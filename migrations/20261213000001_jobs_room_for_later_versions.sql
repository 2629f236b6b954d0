-- Room in the pages of `jobs` for a job's later versions (issue 16, target 4).
--
-- A job queued at intake is written again when it finishes (and when it is claimed, on the
-- lease path). At the default fill factor its page is full by then, so the new version goes to
-- another page: one more row-lock record for the move, an update record that cannot share the
-- old version's bytes, and, when that page is one vacuum freed earlier (a table that has run
-- for a while is full of them), a full-page image of it on its first write since the last
-- checkpoint, plus an update of the finished-at BRIN range that page belongs to. Pages filled
-- to 60 % at intake keep most new versions on their own page, which the intake has already
-- written since the checkpoint.
--
-- `bench/wal AS_RUN=1 DRAIN_JOBS=100000 CLAIM_BATCH=1024` (bytes a drained job):
--   on a database of 5M jobs after load runs had left vacuumed space (bench/run's 5M phase):
--     1,332 → 1,058 (full-page images 220 → 0 B, row locks 88 → 64, BRIN 72 → 53)
--   on a fresh database: 1,064 → 1,047
--   (fill factor 70: 1,135, images 67 B; 50: 1,031)
-- The price: jobs written final at intake (synchronous requests finished inline) are never
-- updated, so their pages stay 60 % full: the heap of such jobs takes up to 1/0.6 of the
-- space. Jobs that are updated fill the rest with their final versions.
--
-- Storage settings belong to each partition (a partitioned table cannot hold them): set here
-- on every partition of `jobs`; `ensure_history_partitions` copies the newest partition's
-- settings to the ones it makes. Pages already written keep their fill; new ones get 60 %.
-- SET (fillfactor) takes a SHARE UPDATE EXCLUSIVE lock: reads and writes go on.

DO $$
DECLARE
    part regclass;
BEGIN
    FOR part IN SELECT inhrelid::regclass FROM pg_inherits WHERE inhparent = 'jobs'::regclass LOOP
        EXECUTE format('ALTER TABLE %s SET (fillfactor = 60)', part);
    END LOOP;
END
$$;

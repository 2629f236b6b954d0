-- Payload retention remembers how far it has walked (issue 16: nothing may grow with history
-- on the hot or the periodic path).
--
-- Until now every maintenance pass (every 5 s) looked for finished jobs with payloads to drop
-- from the oldest job on, reading past every job it had already purged: a cost that grew with
-- the history kept (for ever when `retention.jobs_days` is 0). Now the purge walks `jobs` once,
-- in id order (the primary key), and remembers the last id it walked. A job the walk passes that
-- may not be purged yet (still running, or finished less than `payload_days` ago: a job that ran
-- for a long time, or was retried late) is set aside in `payload_purge_deferred` and purged
-- from there once it is due. The walk stays an hour of creation time behind the retention cut,
-- so at its front almost every job has long finished and little is set aside.

CREATE TABLE payload_purge_progress (
    only_row  boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    -- The highest job id the walk has passed (every job up to it is purged or set aside).
    walked_to uuid NOT NULL
);
INSERT INTO payload_purge_progress (walked_to) VALUES ('00000000-0000-0000-0000-000000000000');

-- Jobs the walk passed before they were due; each leaves once purged or gone.
CREATE TABLE payload_purge_deferred (
    job_id uuid PRIMARY KEY
);

-- Less written per job (issue 16, target 4). Measured with bench/wal (20,000 jobs finished
-- during their claims, per job, full-page images included): 1,735 bytes before, the lines
-- below each say what they take off. What the trail records is unchanged: every event, every
-- column that says something.
--
-- The indexes are rebuilt under the SHARE lock CREATE INDEX takes (reads go on, writes wait):
-- on a database of 1M jobs and 3M events this migration held writes for the time
-- docs/scaling.md reports; a larger one can build the new indexes ahead, per partition,
-- with CREATE INDEX CONCURRENTLY under the same definitions (this file then only swaps them).

-- 1. The trail's B-tree key (id, at) goes (-144 bytes: two entries a job). Nothing looks an
--    event up by id alone, ids come from an identity column that refuses ids supplied by
--    hand (GENERATED ALWAYS), and rows are never updated, so no key is needed to keep them
--    unique or to address them; and a key on a time-partitioned table could only be (id, at),
--    which never promised a unique id anyway. Ids follow the physical order of an append-only
--    table, so a BRIN finds one at next to no write cost.
ALTER TABLE audit_events DROP CONSTRAINT IF EXISTS audit_events_pkey;
CREATE INDEX IF NOT EXISTS audit_events_id_brin ON audit_events USING brin (id);

-- 2. A job's events by the job alone (-55 bytes): a job's events are few and read together
--    (its history, its stream's page, its final position), sorted after they are found; with
--    one key per job the second event joins the first's posting list instead of adding an
--    entry of its own.
DROP INDEX IF EXISTS audit_events_job_idx;
CREATE INDEX audit_events_job_idx ON audit_events (job_id) WHERE job_id IS NOT NULL;

-- 3. Succeeded jobs leave the status index (-98 bytes: every state change of a job is a
--    non-HOT update, which adds the new version to every index whose predicate it meets).
--    They are most of the table, so listing them newest first walks the primary key (UUIDv7
--    ids are in creation order) and finds a page at once; the index keeps every other status,
--    including the rare ones (failed, cancelled) a listing could not find by walking.
DROP INDEX IF EXISTS jobs_status_created_id_idx;
CREATE INDEX jobs_status_created_id_idx ON jobs (status, created_at, id)
    WHERE status <> 'succeeded';

-- 4. No empty array in every job row (-28 bytes: 16 in each version, and more rows to a page):
--    NULL now means no callback token was issued. Existing rows keep their '{}'.
ALTER TABLE jobs ALTER COLUMN callback_token_hashes DROP NOT NULL,
                 ALTER COLUMN callback_token_hashes DROP DEFAULT;

-- 5. Events an instance writes name it once, in `instance_id` (-76 bytes: the same UUID as
--    text in `actor_id` on both of a drained job's events); the server writes them so from
--    this version on. Older rows keep their copy.
COMMENT ON COLUMN audit_events.actor_id IS
    'api_key: the key id; oauth/ui: the client or user; instance: NULL (the instance is instance_id)';
-- The compatibility view still names the instance in `actor_id`, as it always did.
CREATE OR REPLACE VIEW job_events AS
SELECT id, job_id, at, kind, from_status, to_status, attempt, instance_id, detail,
       actor_kind,
       coalesce(actor_id, CASE WHEN actor_kind = 'instance' THEN instance_id::text END) AS actor_id,
       actor_name, request_id
FROM audit_events
WHERE job_id IS NOT NULL AND kind NOT IN ('callback.out', 'callback.in');

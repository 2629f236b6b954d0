-- Every listing of jobs in one order: newest first by id (UUIDv7, so creation order as the
-- instance that accepted the job saw it, to the millisecond, and then its random bits).
--
-- Until now some listings walked indexes ordered by `created_at` and others (all jobs,
-- `succeeded` jobs, which left the status index in 20261211000001) walked the primary key in
-- id order. `created_at` is the database's time of the intake's commit and an id is the
-- instance's time of the request, so the two orders differ by a few milliseconds here and
-- there: a listing that merged pages of both (`status=succeeded,failed`) could skip or repeat
-- a job at a page boundary. With one order every page of every listing joins the next
-- exactly, whichever index serves it, and a cursor is just the last id.
--
-- The indexes keep their columns but `created_at` gives way to `id`. Entries of the status
-- index are 8 bytes narrower; those of the intent and key indexes 8 bytes wider (a UUID instead
-- of a timestamp), and they now end in a unique column, so equal keys never pile up.
-- Rebuilt under CREATE INDEX's SHARE lock as the previous migration did (docs/scaling.md has
-- its time on 1M jobs; a larger database can build these ahead with CREATE INDEX CONCURRENTLY
-- per partition under the same definitions).

DROP INDEX IF EXISTS jobs_status_created_id_idx;
CREATE INDEX jobs_status_id_idx ON jobs (status, id) WHERE status <> 'succeeded';

DROP INDEX IF EXISTS jobs_intent_created_idx;
CREATE INDEX jobs_intent_id_idx ON jobs (intent, id);

DROP INDEX IF EXISTS jobs_api_key_created_idx;
CREATE INDEX jobs_api_key_id_idx ON jobs (api_key_id, id) WHERE api_key_id IS NOT NULL;

DROP INDEX IF EXISTS jobs_schedule_created_idx;
CREATE INDEX jobs_schedule_id_idx ON jobs (schedule_id, id) WHERE schedule_id IS NOT NULL;

-- Concurrency keys: jobs sharing a key run at most `limit` at a time across every instance.
-- One row per key and place (`slot` 1..limit), created when a job with that key is filed; the
-- claim takes a free place with the job (SKIP LOCKED, so two instances never take the same
-- one) and the job gives it back when it stops running, whatever ends the attempt.
ALTER TABLE jobs
    ADD COLUMN concurrency_key   text,
    ADD COLUMN concurrency_limit integer CHECK (concurrency_limit >= 1);

CREATE TABLE concurrency_slots (
    key    text    NOT NULL,
    slot   integer NOT NULL,
    job_id uuid,               -- the running job holding it; NULL: free
    PRIMARY KEY (key, slot)
);
CREATE INDEX concurrency_slots_job_idx ON concurrency_slots (job_id) WHERE job_id IS NOT NULL;
ALTER TABLE concurrency_slots SET (autovacuum_vacuum_scale_factor = 0.02, fillfactor = 70);

-- Every way out of `running` (completion, retry, rescue, release, cancel, a flow accepting the
-- work) frees the place, in the same transaction, and wakes the workers: a job that waited for
-- it is claimable now.
CREATE FUNCTION free_concurrency_slot() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE concurrency_slots SET job_id = NULL WHERE job_id = NEW.id;
    PERFORM pg_notify('orch_jobs', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_free_concurrency_slot
    AFTER UPDATE OF status ON jobs
    FOR EACH ROW
    WHEN (OLD.status = 'running' AND NEW.status <> 'running'
          AND NEW.concurrency_key IS NOT NULL)
    EXECUTE FUNCTION free_concurrency_slot();

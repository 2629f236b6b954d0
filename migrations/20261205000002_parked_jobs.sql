-- Jobs waiting for a concurrency place leave the claim's index. Before this, the claim passed
-- over every job whose key had no free place, one place lookup each: 147 ms per claim with
-- 100,000 such jobs ahead of the rest (bench/claim). Now a job is `parked` (still `queued`:
-- callers see no difference) when the claim finds no place for it, or at intake when its key's
-- places are all taken; parked jobs are outside `jobs_claim_idx`, so the claim reads only jobs
-- it can take. A job leaving a place unparks the next job of its key in the same transaction;
-- the scheduler's sweep (Store::unpark_jobs) unparks jobs whose key has places free that no
-- trigger saw (a place freed while the claim parking its job had not committed yet).
ALTER TABLE jobs ADD COLUMN parked boolean NOT NULL DEFAULT false;

DROP INDEX jobs_claim_idx;
CREATE INDEX jobs_claim_idx ON jobs (priority, run_at, id) WHERE status = 'queued' AND NOT parked;
-- The next parked job of a key, in claim order (the trigger and the sweep).
CREATE INDEX jobs_parked_idx ON jobs (concurrency_key, priority, run_at, id)
    WHERE status = 'queued' AND parked;

CREATE OR REPLACE FUNCTION free_concurrency_slot() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE concurrency_slots SET job_id = NULL WHERE job_id = NEW.id;
    IF FOUND THEN
        UPDATE jobs SET parked = false
        WHERE id = (SELECT id FROM jobs
                    WHERE concurrency_key = NEW.concurrency_key
                      AND status = 'queued' AND parked
                    ORDER BY priority, run_at, id
                    LIMIT 1
                    FOR UPDATE SKIP LOCKED);
    END IF;
    PERFORM pg_notify('orch_jobs', '');
    RETURN NULL;
END
$$;

-- Jobs filed for later (`run_at`, `delay_ms`, schedules) wait as `scheduled` until due. A
-- status of their own keeps them out of the claim index: the claim walks due work only,
-- however many jobs wait for tomorrow. (Its own migration: a new enum value cannot be used in
-- the transaction that adds it.)
ALTER TYPE job_status ADD VALUE IF NOT EXISTS 'scheduled' BEFORE 'queued';

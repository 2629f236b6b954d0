-- The dashboard's listings of jobs that ended without success, by API key or by intent.
--
-- `status = failed` with a key (or an intent) that has no failed jobs walked every failed job
-- through the status index and filtered each by key: 538 ms warm, 4.8 s cold on 5M jobs with
-- 99,900 failed (bench/dashboard). These indexes answer such a page at once. They hold only
-- jobs that ended `failed`, `cancelled` or `timed_out`, so the hot path (queued → running →
-- succeeded) never writes to them: a job adds one entry to each only when it ends without
-- success. The listing statements take a page's ids from these indexes in a subquery of their
-- own and repeat the predicate (`status IN (…)`), so that any plan, custom or generic, uses
-- them (`Store::list_page` says why).
--
-- Built under CREATE INDEX's SHARE lock as the listing indexes were (one scan of `jobs`; a
-- larger database can build them ahead with CREATE INDEX CONCURRENTLY per partition under the
-- same definitions and attach them to indexes made ON ONLY jobs).

CREATE INDEX jobs_api_key_unsuccessful_idx ON jobs (api_key_id, status, id)
    WHERE api_key_id IS NOT NULL AND status IN ('failed', 'cancelled', 'timed_out');

CREATE INDEX jobs_intent_unsuccessful_idx ON jobs (intent, status, id)
    WHERE status IN ('failed', 'cancelled', 'timed_out');

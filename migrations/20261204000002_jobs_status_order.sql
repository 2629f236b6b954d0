-- Listing jobs of one status newest first (the dashboard's and GET /jobs's status filter):
-- with `id` in the index a page is a backward index scan from the cursor, where the old
-- (status, created_at) index made PostgreSQL sort every job of the status (0.9 s at 5M jobs,
-- bench/dashboard). Same number of indexes, so a state change writes no more than before.
CREATE INDEX jobs_status_created_id_idx ON jobs (status, created_at, id);
DROP INDEX jobs_status_created_idx;

-- Intent and status are correlated (some intents never fail, flows wait for callbacks): with
-- their joint frequencies the planner sees that "intent X, status Y" is rare and walks the
-- status index instead of every job of the intent.
CREATE STATISTICS jobs_intent_status (mcv) ON intent, status FROM jobs;
CREATE STATISTICS jobs_key_status (mcv) ON api_key_id, status FROM jobs;

-- The dashboard's callbacks page: open deliveries (pending and exhausted), exhausted first.
-- Only open rows are in it (a small set however many were delivered); it replaces a scan of
-- every delivery ever made (90 ms at 1M deliveries).
CREATE INDEX callback_deliveries_open_idx ON callback_deliveries (status DESC, next_attempt_at)
    WHERE status IN ('pending', 'exhausted');

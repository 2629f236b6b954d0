-- The claim with a million jobs for later: as `scheduled` (outside the claim's partial index)
-- against the same million as `queued` with a future `run_at` (how they would wait without the
-- status), 100,000 due jobs behind them at a lower priority. Explains the claim's `next` step
-- (the statement of Store::claim_jobs) in a transaction that is rolled back.
-- Usage: bench/claim/run
\timing on
SET synchronous_commit = off;
INSERT INTO jobs (id, intent, mode, requested_mode, status, priority, max_attempts,
                  attempt_timeout_ms, inputs, run_at, created_at)
SELECT gen_random_uuid(), 'gmail.triage', 'flow', 'auto', 'scheduled', 0, 3, 10000, '{}',
       now() + make_interval(secs => i * 2.6), now()
FROM generate_series(1, 1000000) i;
INSERT INTO jobs (id, intent, mode, requested_mode, status, priority, max_attempts,
                  attempt_timeout_ms, inputs, run_at, created_at)
SELECT gen_random_uuid(), 'system.echo', 'agent', 'auto', 'queued', 1, 3, 10000, '{}',
       now() - make_interval(secs => i * 0.01), now()
FROM generate_series(1, 100000) i;
VACUUM ANALYZE jobs;

\echo '### claim 512 with the million scheduled'
BEGIN;
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT id FROM jobs WHERE status = 'queued' AND run_at <= now()
ORDER BY priority, run_at, id LIMIT 512 FOR UPDATE SKIP LOCKED;
ROLLBACK;

\echo '### the scheduler: due scheduled jobs, and when the next one is due'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT id FROM jobs WHERE status = 'scheduled' AND run_at <= now() ORDER BY run_at LIMIT 1000;
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT min(run_at) FROM jobs WHERE status = 'scheduled';

-- The same million as queued jobs with a future run_at, ahead of the due ones by priority.
UPDATE jobs SET status = 'queued' WHERE status = 'scheduled';
VACUUM ANALYZE jobs;
\echo '### claim 512 with the million queued for later (no scheduled status)'
BEGIN;
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT id FROM jobs WHERE status = 'queued' AND run_at <= now()
ORDER BY priority, run_at, id LIMIT 512 FOR UPDATE SKIP LOCKED;
ROLLBACK;

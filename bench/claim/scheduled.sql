-- The claim with a million jobs for later: as `scheduled` (outside the claim's partial index)
-- against the same million as `queued` with a future `run_at` (how they would wait without the
-- status), 100,000 due jobs behind them at a lower priority. Explains the claim's `next` step
-- (the statement of Store::claim_jobs) in a transaction that is rolled back.
-- Usage: bench/claim/run
\timing on
SET synchronous_commit = off;
INSERT INTO jobs (id, intent, mode, requested_mode, status, priority, max_attempts,
                  attempt_timeout_ms, inputs, run_at, created_at)
SELECT uuid_v7(), 'gmail.triage', 'flow', 'auto', 'scheduled', 0, 3, 10000, '{}',
       now() + make_interval(secs => i * 2.6), now()
FROM generate_series(1, 1000000) i;
INSERT INTO jobs (id, intent, mode, requested_mode, status, priority, max_attempts,
                  attempt_timeout_ms, inputs, run_at, created_at)
SELECT uuid_v7(), 'system.echo', 'agent', 'auto', 'queued', 1, 3, 10000, '{}',
       now() - make_interval(secs => i * 0.01), now()
FROM generate_series(1, 100000) i;
VACUUM ANALYZE jobs;

\echo '### claim 512 with the million scheduled'
BEGIN;
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT id FROM jobs WHERE status = 'queued' AND NOT parked AND run_at <= now()
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
SELECT id FROM jobs WHERE status = 'queued' AND NOT parked AND run_at <= now()
ORDER BY priority, run_at, id LIMIT 512 FOR UPDATE SKIP LOCKED;
ROLLBACK;

-- 100,000 due jobs of one concurrency key whose only place is taken, ahead (by priority) of the
-- 100,000 due jobs without a key. Filed while the place is taken they are parked at intake; filed
-- before (or promoted from `scheduled`) the first claims park them, 512 at a time.
DELETE FROM jobs WHERE status = 'queued' AND run_at > now();
INSERT INTO concurrency_slots (key, slot, job_id) VALUES ('ssh:web-1', 1, gen_random_uuid());
INSERT INTO jobs (id, intent, mode, requested_mode, status, priority, max_attempts,
                  attempt_timeout_ms, inputs, run_at, created_at, concurrency_key,
                  concurrency_limit)
SELECT uuid_v7(), 'ssh.exec', 'agent', 'auto', 'queued', 0, 3, 10000, '{}',
       now() - make_interval(secs => i * 0.01), now(), 'ssh:web-1', 1
FROM generate_series(1, 100000) i;
VACUUM ANALYZE jobs;
\echo '### a claim that meets 512 unparked jobs of the full key: it parks them'
BEGIN;
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
UPDATE jobs SET parked = true
WHERE id IN (SELECT id FROM jobs
             WHERE status = 'queued' AND NOT parked AND run_at <= now()
               AND concurrency_key IS NOT NULL
             ORDER BY priority, run_at, id LIMIT 512 FOR UPDATE SKIP LOCKED);
ROLLBACK;

UPDATE jobs SET parked = true WHERE concurrency_key = 'ssh:web-1';
VACUUM ANALYZE jobs;
\echo '### claim 512 with the 100,000 parked'
BEGIN;
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT id, concurrency_key, concurrency_limit FROM jobs
WHERE status = 'queued' AND NOT parked AND run_at <= now()
ORDER BY priority, run_at, id LIMIT 512 FOR UPDATE SKIP LOCKED;
ROLLBACK;

\echo '### a freed place unparks the key''s next job (the trigger)'
BEGIN;
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
UPDATE jobs SET parked = false
WHERE id = (SELECT id FROM jobs
            WHERE concurrency_key = 'ssh:web-1' AND status = 'queued' AND parked
            ORDER BY priority, run_at, id LIMIT 1 FOR UPDATE SKIP LOCKED);
ROLLBACK;

INSERT INTO concurrency_slots (key, slot) SELECT 'idle:' || i, 1 FROM generate_series(1, 10000) i;
ANALYZE concurrency_slots;
\echo '### the sweep with the 100,000 parked and 10,000 idle keys (keys with parked jobs, their free places)'
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
WITH RECURSIVE parked_keys (key, n) AS (
    (SELECT concurrency_key, 1 FROM jobs
     WHERE status = 'queued' AND parked
     ORDER BY concurrency_key LIMIT 1)
    UNION ALL
    SELECT (SELECT j.concurrency_key FROM jobs j
            WHERE j.status = 'queued' AND j.parked AND j.concurrency_key > p.key
            ORDER BY j.concurrency_key LIMIT 1),
           p.n + 1
    FROM parked_keys p WHERE p.key IS NOT NULL AND p.n < 1000
)
SELECT k.key, f.places FROM parked_keys k CROSS JOIN LATERAL (
    SELECT count(*) AS places FROM concurrency_slots s
    WHERE s.key = k.key AND s.job_id IS NULL) f
WHERE k.key IS NOT NULL AND f.places > 0;

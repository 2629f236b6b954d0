-- The reporting questions of docs/reporting.md, timed with EXPLAIN ANALYZE.
-- Usage: psql -d <database> -f queries.sql
\echo 1. jobs per intent, mode and status per day (last 7 days)
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, SUMMARY ON)
SELECT * FROM report_jobs_daily WHERE day >= current_date - 7 ORDER BY day, intent, mode, status;
\echo 2. p50/p95/p99 duration per intent over the last 7 days
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, SUMMARY ON)
SELECT * FROM report_duration_percentiles(now() - interval '7 days', now());
\echo 2b. the same over all 30 days
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, SUMMARY ON)
SELECT * FROM report_duration_percentiles(now() - interval '30 days', now());
\echo 3. failure and retry rates per intent per day (last 7 days)
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, SUMMARY ON)
SELECT * FROM report_failure_rates_daily WHERE day >= current_date - 7 ORDER BY failure_rate DESC;
\echo 4. callback delivery success and latency per destination host (last 7 days)
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, SUMMARY ON)
SELECT * FROM report_callback_delivery(now() - interval '7 days', now());
\echo 5. who ran which SSH commands on which hosts (last day)
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, SUMMARY ON)
SELECT at, principal, host, command, decision, exit_code FROM report_ssh_commands
WHERE at >= now() - interval '1 day' ORDER BY at DESC LIMIT 100;
\echo 6. queued or stuck work by age
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, SUMMARY ON)
SELECT * FROM report_backlog ORDER BY status, intent;

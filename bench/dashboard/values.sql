-- The values the dashboard's pages pass its statements (\gset), from the seeded data.
-- explain.py includes this file and the statements themselves, which bench/dashboard/gen.py
-- writes from the server's query cache, then executes and explains each statement under a
-- custom and a generic plan.
\set ECHO none
\pset pager off

SELECT id AS key7 FROM api_keys WHERE name = 'client-7' \gset
SELECT api_key_id AS key_failing FROM jobs WHERE status = 'failed' GROUP BY 1 ORDER BY count(*) DESC LIMIT 1 \gset
SELECT id AS mid_job FROM jobs WHERE intent = 'gmail.triage' AND id < uuid_v7_floor(now() - interval '15 days') ORDER BY id DESC LIMIT 1 \gset
SELECT id AS failed_job FROM jobs WHERE status = 'failed' AND callback_url IS NOT NULL ORDER BY id DESC LIMIT 1 \gset

-- Delayed jobs and schedules.

-- Due scheduled jobs are moved to `queued` by whichever instance looks first (SKIP LOCKED).
CREATE INDEX jobs_scheduled_idx ON jobs (run_at) WHERE status = 'scheduled';

-- The schedule that filed a job (GET /jobs?schedule=…); few jobs have one, so the index is
-- partial and costs other jobs nothing.
ALTER TABLE jobs ADD COLUMN schedule_id uuid;
CREATE INDEX jobs_schedule_created_idx ON jobs (schedule_id, created_at, id)
    WHERE schedule_id IS NOT NULL;

-- The backlog report counts scheduled jobs too (stuck: due for 5 minutes and not queued).
CREATE OR REPLACE VIEW report_backlog AS
SELECT status, intent,
       count(*) AS jobs,
       count(*) FILTER (WHERE (status = 'running' AND lease_expires_at < now())
                          OR (status = 'awaiting_callback' AND callback_deadline_at < now())
                          OR (status IN ('queued', 'scheduled')
                              AND run_at < now() - interval '5 minutes')) AS stuck,
       min(created_at) AS oldest_created_at,
       now() - min(CASE WHEN status = 'queued' THEN run_at ELSE created_at END) AS oldest_age
FROM jobs
WHERE status IN ('scheduled', 'queued', 'running', 'awaiting_callback')
GROUP BY status, intent;

CREATE TABLE schedules (
    id            uuid        PRIMARY KEY,
    name          text        NOT NULL UNIQUE,
    intent        text        NOT NULL,
    mode          job_mode    NOT NULL DEFAULT 'auto',
    inputs        jsonb       NOT NULL DEFAULT '{}',   -- strings may use {{ fire_time }} …
    cron          text        NOT NULL,               -- seconds optional
    timezone      text        NOT NULL DEFAULT 'UTC', -- IANA name
    overlap       text        NOT NULL CHECK (overlap IN ('skip', 'allow', 'queue_one')),
    catch_up      text        NOT NULL CHECK (catch_up IN ('none', 'latest', 'all')),
    catch_up_max  integer     NOT NULL DEFAULT 10 CHECK (catch_up_max BETWEEN 1 AND 1000),
    paused        boolean     NOT NULL DEFAULT false,
    source        text        NOT NULL CHECK (source IN ('config', 'api')),
    next_fire_at  timestamptz,                        -- NULL: the expression never fires again
    last_fire_at  timestamptz,
    -- Who made it: the jobs it files are theirs (config schedules: nobody's key).
    api_key_id    uuid,
    principal     text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX schedules_due_idx ON schedules (next_fire_at) WHERE NOT paused;

-- One row per schedule and fire time: however many instances look at a due schedule, the
-- first insert wins and the fire files exactly one job (or is recorded as skipped).
CREATE TABLE schedule_fires (
    schedule_id uuid        NOT NULL REFERENCES schedules (id) ON DELETE CASCADE,
    fire_time   timestamptz NOT NULL,
    job_id      uuid,                                  -- NULL when skipped
    outcome     text        NOT NULL CHECK (outcome IN ('fired', 'skipped', 'triggered')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (schedule_id, fire_time)
);

SELECT add_audit_kinds('due', 'schedule.created', 'schedule.changed', 'schedule.deleted',
                       'schedule.fired', 'schedule.skipped');
ALTER TABLE audit_events VALIDATE CONSTRAINT audit_events_kind_known;

-- The live streams' NOTIFY (orch_events, from the trigger of migration event_stream), cheaper:
--
-- 1. A statement-level trigger fires even when its INSERT wrote no row, and the claim, the
--    completion, the rescue and the deferral all carry an `INSERT INTO audit_events … FROM <cte>`
--    that is empty most of the time: every empty claim (each worker poll) notified, woke every
--    instance's live reader and, worse, took the lock below. Now only statements that wrote
--    events notify (the rows come in a transition table).
-- 2. A transaction that runs NOTIFY holds PostgreSQL's notification-queue lock while it
--    commits, so concurrent committers that notify commit one after another and lose group
--    commit: the one-commit intake (store::InlineTx) measured 2,000 commits/s at 64 clients with
--    this NOTIFY and 4,670 without. Such a transaction says it will have the streams told after
--    its commit (`orch.events_notify = 'deferred'`, local to it); the trigger then stays silent
--    and the instance sends one NOTIFY for a burst of these commits.
CREATE OR REPLACE FUNCTION notify_audit_events() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('orch.events_notify', true) IS DISTINCT FROM 'deferred'
       AND EXISTS (SELECT 1 FROM written) THEN
        PERFORM pg_notify('orch_events', '');
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER audit_events_notify ON audit_events;
CREATE TRIGGER audit_events_notify
    AFTER INSERT ON audit_events
    REFERENCING NEW TABLE AS written
    FOR EACH STATEMENT EXECUTE FUNCTION notify_audit_events();

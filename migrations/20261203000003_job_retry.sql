-- Retrying a finished job: the same row goes back to `queued` (audited as `retried`), and when
-- it finishes again its callback is a new message. Until now a job reached a final state once,
-- so the delivery trigger could ignore a second one.

CREATE OR REPLACE FUNCTION enqueue_callback_delivery() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- A conflict means the job ran again after a retry: the earlier delivery (whatever became
    -- of it) is replaced by a new message with a new webhook-id, and any lease on the old one is
    -- dropped so its in-flight attempt cannot record an outcome.
    INSERT INTO callback_deliveries (job_id, url, webhook_id)
    VALUES (NEW.id, NEW.callback_url, 'msg_' || replace(gen_random_uuid()::text, '-', ''))
    ON CONFLICT (job_id) DO UPDATE
        SET url = EXCLUDED.url, webhook_id = EXCLUDED.webhook_id, status = 'pending',
            attempts = 0, manual_retries = 0, next_attempt_at = now(), lease_owner = NULL,
            lease_expires_at = NULL, last_status_code = NULL, last_error = NULL,
            created_at = now(), finished_at = NULL;
    PERFORM pg_notify('orch_deliveries', '');
    RETURN NULL;
END
$$;

-- Adds kinds to the audit vocabulary: to whatever the list holds now rather than restating it,
-- so that migrations adding kinds compose in any order.
CREATE FUNCTION add_audit_kinds(VARIADIC new_kinds text[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    kinds text;
BEGIN
    SELECT string_agg(quote_literal(kind), ', ' ORDER BY kind) INTO kinds
    FROM (
        SELECT m[1] AS kind
        FROM pg_constraint c,
             regexp_matches(pg_get_constraintdef(c.oid), '''([^'']+)''', 'g') AS m
        WHERE c.conname = 'audit_events_kind_known'
          AND c.conrelid = 'audit_events'::regclass
        UNION
        SELECT unnest(new_kinds)
    ) known;
    ALTER TABLE audit_events DROP CONSTRAINT audit_events_kind_known;
    EXECUTE format('ALTER TABLE audit_events ADD CONSTRAINT audit_events_kind_known '
                   'CHECK (kind IN (%s)) NOT VALID', kinds);
END
$$;

SELECT add_audit_kinds('retried');
ALTER TABLE audit_events VALIDATE CONSTRAINT audit_events_kind_known;

-- The audit trail's fixed vocabularies, one list each (the Rust enums AuditKind, ActorKind and
-- Outcome in src/model.rs; a test checks both lists are the same). Added NOT VALID and then
-- validated, so the table is scanned once without blocking writers for long.

ALTER TABLE audit_events ADD CONSTRAINT audit_events_kind_known CHECK (kind IN (
    'created', 'claimed', 'retry_scheduled', 'succeeded', 'failed', 'timed_out',
    'cancel_requested', 'cancelled', 'rescued', 'released', 'awaiting_callback',
    'callback_received',
    'ssh.run', 'ssh.exit', 'ssh.dry_run', 'ssh.refused', 'ssh.host_key_mismatch',
    'ssh.connect_failed',
    'callback.out', 'callback.in',
    'auth.failed', 'key.created', 'key.revoked',
    'callbacks.secret_generated', 'callbacks.secret_read'
)) NOT VALID;

ALTER TABLE audit_events ADD CONSTRAINT audit_events_actor_kind_known CHECK (actor_kind IN (
    'api_key', 'anonymous', 'instance', 'maintenance', 'flow', 'operator'
)) NOT VALID;

ALTER TABLE audit_events ADD CONSTRAINT audit_events_outcome_known CHECK (outcome IN (
    'ok', 'rejected', 'accepted', 'duplicate',
    'delivered', 'retry', 'gone', 'exhausted', 'refused',
    'dry_run', 'run', 'run_confirmed', 'ran', 'timed_out', 'cancelled', 'refused_by_host',
    'connection_lost'
)) NOT VALID;

ALTER TABLE audit_events VALIDATE CONSTRAINT audit_events_kind_known;
ALTER TABLE audit_events VALIDATE CONSTRAINT audit_events_actor_kind_known;
ALTER TABLE audit_events VALIDATE CONSTRAINT audit_events_outcome_known;

COMMENT ON COLUMN audit_events.actor_kind IS
    'api_key | anonymous | instance | maintenance | flow | operator';

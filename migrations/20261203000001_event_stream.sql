-- Live event streams (SSE) read the audit trail in commit order.
--
-- `id` is allocated when a row is inserted, not when its transaction commits, so a reader that
-- resumed "after id N" could miss a row with a smaller id committed later. Each row also keeps
-- its transaction's id (`xact`); every row of a transaction older than the oldest transaction
-- still running (`pg_snapshot_xmin`) is final, and no row can ever join them. Streams deliver
-- in (xact, id) order up to that horizon: none lost, none twice, whatever the commit order.
--
-- The default is stable, so existing rows share the migration's transaction id (they are all
-- committed and keep their id order) and the column is added without rewriting the table.
ALTER TABLE audit_events
    ADD COLUMN xact bigint NOT NULL DEFAULT (pg_current_xact_id()::text::bigint);

-- Append-only rows arrive in about xact order: a BRIN finds the recent tail for the global
-- stream at next to no write cost (a B-tree here would be one more index write per event).
CREATE INDEX audit_events_xact_brin ON audit_events USING brin (xact);

-- One wake-up per transaction that wrote events (NOTIFY folds identical notifications of a
-- transaction into one); each instance's listener hands it to its event hub.
CREATE FUNCTION notify_audit_events() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('orch_events', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER audit_events_notify
    AFTER INSERT ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION notify_audit_events();

-- The oldest transaction still running, as the `xact` column counts (the stream's horizon).
CREATE FUNCTION audit_horizon() RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint
$$;

-- Engines report progress into the trail (MCP progress notifications, SSH output chunks).
ALTER TABLE audit_events DROP CONSTRAINT audit_events_kind_known;
ALTER TABLE audit_events ADD CONSTRAINT audit_events_kind_known CHECK (kind IN (
    'created', 'claimed', 'retry_scheduled', 'succeeded', 'failed', 'timed_out',
    'cancel_requested', 'cancelled', 'rescued', 'released', 'awaiting_callback',
    'callback_received', 'progress',
    'ssh.run', 'ssh.exit', 'ssh.dry_run', 'ssh.refused', 'ssh.host_key_mismatch',
    'ssh.connect_failed',
    'callback.out', 'callback.in',
    'auth.failed', 'key.created', 'key.revoked',
    'callbacks.secret_generated', 'callbacks.secret_read',
    'oauth.client_registered', 'oauth.grant', 'oauth.token_issued', 'oauth.token_refreshed',
    'oauth.token_revoked', 'oauth.grant_revoked', 'oauth.refused'
)) NOT VALID;
ALTER TABLE audit_events VALIDATE CONSTRAINT audit_events_kind_known;

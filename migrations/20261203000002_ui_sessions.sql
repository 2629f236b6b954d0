-- Dashboard sessions: a person signs in with an API key and gets a session cookie. Only the
-- SHA-256 of the cookie's token is kept; the session acts as its key (scopes, revocation and
-- expiry included) and ends with it.
CREATE TABLE ui_sessions (
    token_hash  bytea       PRIMARY KEY,
    api_key_id  uuid        NOT NULL REFERENCES api_keys (id),
    -- The form token every state-changing request of the session must carry.
    csrf        text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX ui_sessions_expires_idx ON ui_sessions (expires_at);

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
    'oauth.token_revoked', 'oauth.grant_revoked', 'oauth.refused',
    'ui.signed_in', 'ui.signed_out'
)) NOT VALID;
ALTER TABLE audit_events VALIDATE CONSTRAINT audit_events_kind_known;

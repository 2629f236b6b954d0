-- OAuth 2.1 for /mcp (the built-in authorization server): registered clients, the grants a
-- person approved with an API key, one-time authorization codes, and tokens. Codes and tokens
-- are stored as SHA-256 only.

CREATE TABLE oauth_clients (
    -- `oc_…` for clients registered with RFC 7591; the HTTPS URL for Client ID Metadata
    -- Documents.
    client_id       text        PRIMARY KEY,
    registration    text        NOT NULL CHECK (registration IN ('dynamic', 'metadata_document')),
    client_name     text        NOT NULL,
    redirect_uris   text[]      NOT NULL,
    -- `none` (public clients, PKCE only), `client_secret_basic` or `client_secret_post`.
    auth_method     text        NOT NULL DEFAULT 'none'
                    CHECK (auth_method IN ('none', 'client_secret_basic', 'client_secret_post')),
    secret_hash     bytea,
    metadata        jsonb       NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- Metadata documents: when the document was last fetched.
    fetched_at      timestamptz
);

CREATE TABLE oauth_grants (
    id              uuid        PRIMARY KEY,
    client_id       text        NOT NULL REFERENCES oauth_clients ON DELETE CASCADE,
    -- The key the person signed in with: revoking or expiring it ends the grant.
    api_key_id      uuid        NOT NULL REFERENCES api_keys,
    scopes          text[]      NOT NULL,
    -- The resource (RFC 8707) tokens of this grant are for.
    resource        text        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    revoked_at      timestamptz,
    revoked_reason  text
);
CREATE INDEX oauth_grants_key_idx ON oauth_grants (api_key_id);
CREATE INDEX oauth_grants_client_idx ON oauth_grants (client_id);

CREATE TABLE oauth_codes (
    code_hash       bytea       PRIMARY KEY,
    grant_id        uuid        NOT NULL REFERENCES oauth_grants ON DELETE CASCADE,
    redirect_uri    text        NOT NULL,
    code_challenge  text        NOT NULL,
    expires_at      timestamptz NOT NULL,
    used_at         timestamptz
);
CREATE INDEX oauth_codes_grant_idx ON oauth_codes (grant_id);

CREATE TABLE oauth_tokens (
    token_hash      bytea       PRIMARY KEY,
    grant_id        uuid        NOT NULL REFERENCES oauth_grants ON DELETE CASCADE,
    kind            text        NOT NULL CHECK (kind IN ('access', 'refresh')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    -- Refresh tokens: when it was exchanged (a second use is a reuse: the grant is revoked).
    used_at         timestamptz,
    revoked_at      timestamptz
);
CREATE INDEX oauth_tokens_grant_idx ON oauth_tokens (grant_id);
CREATE INDEX oauth_tokens_expires_idx ON oauth_tokens (expires_at);

-- The audit vocabulary gains the OAuth events, the OAuth client as an actor, and `denied`.
ALTER TABLE audit_events DROP CONSTRAINT audit_events_kind_known;
ALTER TABLE audit_events ADD CONSTRAINT audit_events_kind_known CHECK (kind IN (
    'created', 'claimed', 'retry_scheduled', 'succeeded', 'failed', 'timed_out',
    'cancel_requested', 'cancelled', 'rescued', 'released', 'awaiting_callback',
    'callback_received',
    'ssh.run', 'ssh.exit', 'ssh.dry_run', 'ssh.refused', 'ssh.host_key_mismatch',
    'ssh.connect_failed',
    'callback.out', 'callback.in',
    'auth.failed', 'key.created', 'key.revoked',
    'callbacks.secret_generated', 'callbacks.secret_read',
    'oauth.client_registered', 'oauth.grant', 'oauth.token_issued', 'oauth.token_refreshed',
    'oauth.token_revoked', 'oauth.grant_revoked', 'oauth.refused'
)) NOT VALID;

ALTER TABLE audit_events DROP CONSTRAINT audit_events_actor_kind_known;
ALTER TABLE audit_events ADD CONSTRAINT audit_events_actor_kind_known CHECK (actor_kind IN (
    'api_key', 'anonymous', 'instance', 'maintenance', 'flow', 'operator', 'oauth_client'
)) NOT VALID;

ALTER TABLE audit_events DROP CONSTRAINT audit_events_outcome_known;
ALTER TABLE audit_events ADD CONSTRAINT audit_events_outcome_known CHECK (outcome IN (
    'ok', 'rejected', 'accepted', 'duplicate',
    'delivered', 'retry', 'gone', 'exhausted', 'refused',
    'dry_run', 'run', 'run_confirmed', 'ran', 'timed_out', 'cancelled', 'refused_by_host',
    'connection_lost', 'approved', 'denied'
)) NOT VALID;

ALTER TABLE audit_events VALIDATE CONSTRAINT audit_events_kind_known;
ALTER TABLE audit_events VALIDATE CONSTRAINT audit_events_actor_kind_known;
ALTER TABLE audit_events VALIDATE CONSTRAINT audit_events_outcome_known;

COMMENT ON COLUMN audit_events.actor_kind IS
    'api_key | anonymous | instance | maintenance | flow | operator | oauth_client';

-- MCP sessions (protocol revisions before 2026-07-28) outlive the instance that opened them:
-- another instance behind the load balancer restores one from here (the client's
-- `initialize` parameters) instead of answering 404 and making the client start over.
-- The id is the session id the server handed out (a UUID; no secret rides on it: every
-- request still carries its own token).
CREATE TABLE mcp_sessions (
    id                text PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 128),
    initialize_params jsonb NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    last_used_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX mcp_sessions_last_used ON mcp_sessions (last_used_at);

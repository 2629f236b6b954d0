-- Settings every instance shares and nobody takes back: whether API keys are required (set
-- for good when the first key is created) and the generated callback signing secret.
-- Rows are only ever inserted: triggers refuse UPDATE, DELETE and TRUNCATE, so a revoked or
-- expired last key cannot reopen the API, and a signing secret receivers trust cannot be
-- swapped behind their back.

CREATE TABLE server_settings (
    name   text        PRIMARY KEY CHECK (name IN ('auth.keys_required',
                                                   'callbacks.signing_secret')),
    value  text        NOT NULL,
    set_at timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION refuse_server_settings_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'server_settings rows are permanent: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER server_settings_permanent
    BEFORE UPDATE OR DELETE ON server_settings
    FOR EACH ROW EXECUTE FUNCTION refuse_server_settings_change();
CREATE TRIGGER server_settings_no_truncate
    BEFORE TRUNCATE ON server_settings
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_server_settings_change();

-- Creating a key, by whatever path, closes the API for good.
CREATE FUNCTION close_api_on_first_key() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO server_settings (name, value)
    VALUES ('auth.keys_required', 'since the first API key was created')
    ON CONFLICT (name) DO NOTHING;
    RETURN NULL;
END
$$;
-- Per row: an INSERT … ON CONFLICT DO NOTHING that created no key closes nothing.
CREATE TRIGGER api_keys_close_api
    AFTER INSERT ON api_keys
    FOR EACH ROW EXECUTE FUNCTION close_api_on_first_key();

-- A database that already had keys (even revoked or expired ones) is closed already.
INSERT INTO server_settings (name, value, set_at)
SELECT 'auth.keys_required', 'since the first API key was created', min(created_at)
FROM api_keys
HAVING count(*) > 0;

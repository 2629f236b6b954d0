-- The fs tools audit every write and delete (and every refusal of one): two more kinds.
--
-- Added to whatever the list holds now rather than restating it, so that migrations adding
-- other kinds on other branches compose in either order (restating would drop theirs).
DO $$
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
        SELECT unnest(ARRAY['fs.write', 'fs.delete'])
    ) known;
    ALTER TABLE audit_events DROP CONSTRAINT audit_events_kind_known;
    EXECUTE format(
        'ALTER TABLE audit_events ADD CONSTRAINT audit_events_kind_known '
        'CHECK (kind IN (%s)) NOT VALID',
        kinds
    );
END
$$;
ALTER TABLE audit_events VALIDATE CONSTRAINT audit_events_kind_known;

-- The fs tools audit every write and delete (and every refusal of one): two more kinds.
SELECT add_audit_kinds('fs.write', 'fs.delete');
ALTER TABLE audit_events VALIDATE CONSTRAINT audit_events_kind_known;

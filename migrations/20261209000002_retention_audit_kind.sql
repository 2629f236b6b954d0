-- Retention records each partition it drops in the trail. The constraint is re-made NOT VALID
-- here (a brief lock, no scan) and validated by the next migration, outside this transaction:
-- validating scans the whole trail, which holds writes back only while the constraint is being
-- replaced, not while it is checked.
SELECT add_audit_kinds('retention.dropped');

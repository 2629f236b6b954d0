-- no-transaction
-- Checks the rows already in the trail against the constraint the previous migration re-made,
-- while reads and writes go on (VALIDATE takes a SHARE UPDATE EXCLUSIVE lock).
ALTER TABLE audit_events VALIDATE CONSTRAINT audit_events_kind_known;

-- no-transaction
-- The key the next migration gives `audit_events` once it is partitioned by time, `(id, at)`,
-- built here without holding back writes (CONCURRENTLY, so outside a transaction; one
-- statement per file). On a large trail this is most of the conversion's work; the next
-- migration adopts the index, or builds it under its lock if this build did not complete.
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS audit_events_id_at_key ON audit_events (id, at);

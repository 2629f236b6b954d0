-- Exhausted callback deliveries are few and wanted (a gauge to alert on, a list to retry from):
-- a partial index finds them without reading the delivered ones, which pile up for ever.
CREATE INDEX callback_deliveries_exhausted_idx ON callback_deliveries (finished_at)
    WHERE status = 'exhausted';

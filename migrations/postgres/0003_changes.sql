-- The relay drains unsent outbox rows in (namespace, seq) order: index that
-- order over unsent rows only (sent rows stay until journal compaction).
DROP INDEX outbox_unsent;
CREATE INDEX outbox_unsent ON outbox (namespace_id, seq) WHERE sent_at_ms IS NULL;

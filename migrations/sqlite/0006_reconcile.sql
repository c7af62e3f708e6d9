-- The reconciliation job (DESIGN.md "Reconciliation").
--
-- A pack retired by compaction (or found dead) is marked 'deleted' at
-- deleted_at_ms; its object stays until every presigned URL that may name
-- it has expired, then the job deletes it. Pack ids are random and global,
-- so the object listing is matched back to rows by id alone.
ALTER TABLE packs ADD COLUMN deleted_at_ms BIGINT;
CREATE INDEX packs_by_id ON packs (id);

-- One row per reconcile run: what it found and changed (the JSON report),
-- for metrics and for the operator reading back what happened.
CREATE TABLE reconcile_runs (
    started_at_ms BIGINT NOT NULL PRIMARY KEY,
    duration_ms   BIGINT NOT NULL,
    dry_run       BIGINT NOT NULL,
    found         BIGINT NOT NULL,            -- drift found, every kind
    repaired      BIGINT NOT NULL,
    unrepaired    BIGINT NOT NULL,
    report        TEXT NOT NULL
);

-- Chunk rows by pack alone: pack ids are global, so every per-pack query
-- (the verifier's, compaction's, and the job's "does any row still name
-- this object?") is served without knowing the folder.
DROP INDEX chunks_pack;
CREATE INDEX chunks_by_pack ON chunks (pack_id);

-- driftless metadata schema (PostgreSQL).
--
-- Every table that belongs to a folder carries namespace_id first in its
-- primary key, so the schema distributes by namespace (Citus) without redesign.
-- Integers are BIGINT and flags 0/1 BIGINT so that one set of queries runs on
-- PostgreSQL and SQLite through sqlx's Any driver. Times are ms since the epoch.
-- The SQLite twin of this file is ../sqlite/0001_init.sql: keep them in step.

CREATE TABLE users (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    password_hash TEXT,                       -- argon2id PHC string; NULL: no password login
    created_at_ms BIGINT NOT NULL
);

CREATE TABLE devices (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id       BIGINT NOT NULL REFERENCES users (id),
    name          TEXT NOT NULL,
    token_hash    BYTEA NOT NULL UNIQUE,      -- BLAKE3 of the 256-bit bearer token
    created_at_ms BIGINT NOT NULL,
    revoked_at_ms BIGINT
);
CREATE INDEX devices_user ON devices (user_id);

CREATE TABLE namespaces (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name          TEXT NOT NULL,
    is_home       BIGINT NOT NULL,            -- 1: a user's home folder
    owner_id      BIGINT NOT NULL REFERENCES users (id),
    head_seq      BIGINT NOT NULL DEFAULT 0,  -- last journal seq assigned (the commit lock row)
    compacted_seq BIGINT NOT NULL DEFAULT 0,  -- journal entries <= this are gone
    created_at_ms BIGINT NOT NULL
);
CREATE UNIQUE INDEX namespaces_one_home ON namespaces (owner_id) WHERE is_home = 1;

CREATE TABLE memberships (
    namespace_id BIGINT NOT NULL REFERENCES namespaces (id),
    user_id      BIGINT NOT NULL REFERENCES users (id),
    role         TEXT NOT NULL CHECK (role IN ('owner', 'editor', 'viewer')),
    PRIMARY KEY (namespace_id, user_id)
);
CREATE INDEX memberships_user ON memberships (user_id);

-- One S3 object `packs/<id>`, written by one multipart upload.
CREATE TABLE packs (
    namespace_id  BIGINT NOT NULL,
    id            TEXT NOT NULL,
    upload_id     TEXT NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('uploading', 'complete', 'deleted')),
    total_bytes   BIGINT NOT NULL DEFAULT 0,
    live_bytes    BIGINT NOT NULL DEFAULT 0,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (namespace_id, id)
);

-- A chunk's bytes: where they are stored and whether they were re-hashed.
CREATE TABLE chunks (
    namespace_id  BIGINT NOT NULL,
    hash          BYTEA NOT NULL,
    raw_len       BIGINT NOT NULL,
    pack_id       TEXT NOT NULL,
    pack_offset   BIGINT NOT NULL,
    stored_len    BIGINT NOT NULL,
    codec         BIGINT NOT NULL,            -- 0 none, 1 zstd
    state         BIGINT NOT NULL,            -- 0 pending, 1 verified, 2 corrupt
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (namespace_id, hash)
);
CREATE INDEX chunks_pack ON chunks (namespace_id, pack_id);

-- Every version of every path; a tombstone is a version with deleted = 1.
CREATE TABLE versions (
    namespace_id    BIGINT NOT NULL,
    path            TEXT NOT NULL,
    rev             BIGINT NOT NULL,          -- the journal seq that created it
    deleted         BIGINT NOT NULL,
    size            BIGINT NOT NULL,
    content_hash    BYTEA,
    mtime_ms        BIGINT NOT NULL,
    chunk_min       BIGINT NOT NULL,
    chunk_avg       BIGINT NOT NULL,
    chunk_max       BIGINT NOT NULL,
    manifest        BYTEA NOT NULL,           -- per chunk: 32-byte hash + u32 LE length
    moved_from      TEXT,
    device_id       BIGINT,
    committed_at_ms BIGINT NOT NULL,
    PRIMARY KEY (namespace_id, path, rev)
);

-- The head of each path: what the snapshot lists and what base_rev is checked against.
CREATE TABLE files (
    namespace_id  BIGINT NOT NULL,
    path          TEXT NOT NULL,
    collision_key TEXT NOT NULL,              -- NFD + case fold: case/normalization twins conflict
    rev           BIGINT NOT NULL,
    deleted       BIGINT NOT NULL,
    PRIMARY KEY (namespace_id, path)
);
CREATE UNIQUE INDEX files_live_collision ON files (namespace_id, collision_key) WHERE deleted = 0;

-- One entry per committed change; seq is gap-free per namespace, assigned by
-- incrementing namespaces.head_seq inside the commit transaction.
CREATE TABLE journal (
    namespace_id    BIGINT NOT NULL,
    seq             BIGINT NOT NULL,
    path            TEXT NOT NULL,
    rev             BIGINT NOT NULL,
    kind            BIGINT NOT NULL,          -- 0 put, 1 delete, 2 move
    moved_from      TEXT,
    device_id       BIGINT,
    committed_at_ms BIGINT NOT NULL,
    PRIMARY KEY (namespace_id, seq)
);

-- Written in the commit transaction, drained to Kafka by the relay.
CREATE TABLE outbox (
    namespace_id  BIGINT NOT NULL,
    seq           BIGINT NOT NULL,
    payload       TEXT NOT NULL,              -- JSON JournalEvent
    created_at_ms BIGINT NOT NULL,
    sent_at_ms    BIGINT,
    PRIMARY KEY (namespace_id, seq)
);
CREATE INDEX outbox_unsent ON outbox (created_at_ms) WHERE sent_at_ms IS NULL;

-- Client operation ids: a retried operation returns its first result.
CREATE TABLE ops (
    namespace_id BIGINT NOT NULL,
    op_id        TEXT NOT NULL,
    digest       BYTEA NOT NULL,              -- BLAKE3 of the operation as first sent
    result       TEXT NOT NULL,               -- JSON Outcome
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (namespace_id, op_id)
);

CREATE TABLE upload_sessions (
    namespace_id  BIGINT NOT NULL,
    id            TEXT NOT NULL,
    user_id       BIGINT NOT NULL,
    device_id     BIGINT NOT NULL,
    pack_id       TEXT NOT NULL,
    s3_upload_id  TEXT,                       -- NULL until the first part is registered
    state         TEXT NOT NULL CHECK (state IN ('open', 'committed', 'aborted', 'expired')),
    request       TEXT NOT NULL,              -- JSON of the pending operations
    results       TEXT,                       -- JSON CommitResponse once committed
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    PRIMARY KEY (namespace_id, id)
);
CREATE INDEX upload_sessions_expiry ON upload_sessions (expires_at_ms) WHERE state = 'open';

CREATE TABLE upload_parts (
    namespace_id  BIGINT NOT NULL,
    upload_id     TEXT NOT NULL,
    part_number   BIGINT NOT NULL,
    size          BIGINT NOT NULL,
    checksum      TEXT NOT NULL,              -- base64 CRC32C, as signed into the URL
    chunks        BYTEA NOT NULL,             -- per chunk: hash, raw_len, stored_len, codec
    PRIMARY KEY (namespace_id, upload_id, part_number)
);

-- The cursor each device has applied, for journal compaction and lag.
CREATE TABLE device_cursors (
    namespace_id  BIGINT NOT NULL,
    device_id     BIGINT NOT NULL,
    seq           BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (namespace_id, device_id)
);

-- Access (issue 14): whose home a folder is, invitations, device activity
-- and expiry, commit leases with a fencing token, and the chunks each
-- upload session may hold.

-- A home is a property of the membership, not of the folder: a folder
-- shared with someone is never their home, whoever owns it.
ALTER TABLE memberships ADD COLUMN is_home BIGINT NOT NULL DEFAULT 0;
UPDATE memberships SET is_home = 1 WHERE EXISTS (
    SELECT 1 FROM namespaces n
    WHERE n.id = memberships.namespace_id AND n.is_home = 1 AND n.owner_id = memberships.user_id);
CREATE UNIQUE INDEX memberships_one_home ON memberships (user_id) WHERE is_home = 1;

-- A share is an invitation until the invitee accepts it.
CREATE TABLE invitations (
    namespace_id  BIGINT NOT NULL,
    user_id       BIGINT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('owner', 'editor', 'viewer')),
    invited_by    BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (namespace_id, user_id)
);
CREATE INDEX invitations_user ON invitations (user_id);

-- When each device was last seen, and when its token stops working (NULL:
-- never; with a token lifetime set, each use moves it on).
ALTER TABLE devices ADD COLUMN last_seen_at_ms BIGINT;
ALTER TABLE devices ADD COLUMN expires_at_ms BIGINT;

-- The commit holding a session's lease (renewed while it runs): only the
-- holder of this token may finish the session.
ALTER TABLE upload_sessions ADD COLUMN commit_token TEXT;

-- The chunks a session's files name (so a part registration looks up only
-- its own chunks), and the part each was registered in (a chunk goes in
-- one part only).
CREATE TABLE upload_chunks (
    namespace_id BIGINT NOT NULL,
    upload_id    TEXT NOT NULL,
    hash         BLOB NOT NULL,
    raw_len      BIGINT NOT NULL,
    part_number  BIGINT,
    PRIMARY KEY (namespace_id, upload_id, hash)
);
-- A part registered again first frees the chunks it held: found by index,
-- not by a scan of the session's (up to millions of) chunks.
CREATE INDEX upload_chunks_by_part ON upload_chunks (namespace_id, upload_id, part_number);


-- A session's pending operations (up to 16 MiB of JSON) live apart from
-- its row: every part registration reads the row, only the commit reads
-- the operations, and a large value in the row made each read cost its
-- size (SQLite walks the overflow pages to reach the columns after it).
CREATE TABLE upload_requests (
    namespace_id BIGINT NOT NULL,
    upload_id    TEXT NOT NULL,
    request      TEXT NOT NULL,
    PRIMARY KEY (namespace_id, upload_id)
);
INSERT INTO upload_requests (namespace_id, upload_id, request)
    SELECT namespace_id, id, request FROM upload_sessions;
ALTER TABLE upload_sessions DROP COLUMN request;

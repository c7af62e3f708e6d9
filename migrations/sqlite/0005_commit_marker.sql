-- A commit in progress: until this time (ms since the epoch) no other
-- commit, part registration or resume may act on the session as if it were
-- merely open. A commit that dies leaves it to expire; a retry takes over.
ALTER TABLE upload_sessions ADD COLUMN committing_until_ms BIGINT;

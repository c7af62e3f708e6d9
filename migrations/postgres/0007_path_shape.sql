-- Path shape (a file under a file, a file over a folder, one folder spelled
-- two ways): the commit looks up the live files under a folder by a range
-- of collision keys, which must compare byte by byte whatever the
-- database's collation.
CREATE INDEX files_live_key_c ON files (namespace_id, collision_key COLLATE "C") WHERE deleted = 0;

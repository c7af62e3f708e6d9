-- Path shape (a file under a file, a file over a folder, one folder spelled
-- two ways): the commit looks up the live files under a folder by a range
-- of collision keys. SQLite compares TEXT byte by byte, so the unique
-- index files_live_collision (namespace_id, collision_key) WHERE deleted = 0
-- already serves the range; this step only keeps the two histories in step.
SELECT 1;

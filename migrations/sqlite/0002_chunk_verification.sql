-- Chunk verification (DESIGN.md "Upload", step 6).
--
-- Only verified chunks are offered for deduplication to other devices; a
-- device may reuse the chunks it uploaded itself while they await the
-- verifier. A pack records the device whose session wrote it, and the
-- verifier finds its work through the pending-chunks index.

ALTER TABLE packs ADD COLUMN device_id BIGINT;

CREATE INDEX chunks_pending ON chunks (namespace_id, pack_id) WHERE state = 0;

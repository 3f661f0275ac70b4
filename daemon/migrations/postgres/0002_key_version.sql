-- Key versions. `keys.version` (since 0001) now guards every write of an existing key:
-- `UPDATE … SET …, version = version + 1 WHERE id = $1 AND version = $read`, so a replica
-- editing from a stale copy is refused (and re-reads the key) instead of overwriting a newer
-- change, such as another replica's revocation.
--
-- The change feed carries the version a key change committed, so that a replica whose table
-- already holds it (its own change, echoed back) skips reading the row again. NULL for the
-- other kinds of change, and for changes written by a gatewayd older than this migration
-- (a rolling upgrade): the follower then reads the row, as before.
ALTER TABLE changes ADD COLUMN version BIGINT CHECK (version >= 1);

-- Which key a rotation made from which (SPEC §4: rotate). While the old secret is in its
-- grace period the two keys are one budget: at start-up the daemon loads each pair into one
-- shared ledger and rate window, so a restart during the grace period cannot hand the key a
-- second budget. Rotations made before this table existed are read back from the audit log.
CREATE TABLE key_rotations (
    successor_id   TEXT PRIMARY KEY,
    predecessor_id TEXT NOT NULL
) STRICT, WITHOUT ROWID;

INSERT OR IGNORE INTO key_rotations (successor_id, predecessor_id)
SELECT key_id, json_extract(details, '$.rotated_from')
FROM audit
WHERE action = 'key.create'
  AND key_id IS NOT NULL
  AND CASE WHEN json_valid(details) THEN json_type(details, '$.rotated_from') END = 'text';

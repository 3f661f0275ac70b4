-- Replicas seen recently (SPEC §9: `gwctl cluster status`). A single server has one row, its
-- own, so that the status reads the same on both backends. Times are Unix milliseconds, UTC.
CREATE TABLE replicas (
    id            TEXT PRIMARY KEY,
    host          TEXT NOT NULL,
    version       TEXT NOT NULL,
    started_at_ms INTEGER NOT NULL,
    last_seen_ms  INTEGER NOT NULL,
    requests      INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

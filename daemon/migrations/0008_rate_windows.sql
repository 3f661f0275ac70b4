-- Rate-limit windows across a restart (SPEC §4: at most N requests in any rolling 60 s).
-- Windows live in memory; a graceful shutdown writes the admissions still in them here, one
-- row per key, and the next start reads them back and empties the table. `runs` is a JSON
-- array of [age in ms at saved_at_ms, count], oldest first.
CREATE TABLE rate_windows (
    key_id      TEXT PRIMARY KEY,
    saved_at_ms INTEGER NOT NULL,  -- Unix milliseconds, UTC
    runs        TEXT NOT NULL
) STRICT, WITHOUT ROWID;

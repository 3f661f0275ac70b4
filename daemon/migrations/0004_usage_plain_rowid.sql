-- The usage table without AUTOINCREMENT: rows are never deleted, so plain rowids never
-- repeat, and AUTOINCREMENT cost an extra sqlite_sequence write per inserted row on the
-- busiest statement the daemon runs (profiled in bench/README.md).
CREATE TABLE usage_v2 (
    id                 INTEGER PRIMARY KEY,
    key_id             TEXT NOT NULL,
    at                 TEXT NOT NULL,
    day                TEXT NOT NULL,
    provider           TEXT NOT NULL,
    model              TEXT NOT NULL,
    status             INTEGER NOT NULL,
    input_tokens       INTEGER NOT NULL,
    output_tokens      INTEGER NOT NULL,
    cache_read_tokens  INTEGER NOT NULL,
    cache_write_tokens INTEGER NOT NULL,
    cost_nanos         INTEGER NOT NULL,
    latency_ms         INTEGER NOT NULL,
    -- reported: the provider's own counts; estimated: usage never arrived (disconnect, cut,
    -- stall), cost from what was sent and streamed; unpriced: no price for the model.
    source             TEXT NOT NULL CHECK (source IN ('reported', 'estimated', 'unpriced'))
) STRICT;

INSERT INTO usage_v2 SELECT * FROM usage;
DROP TABLE usage;
ALTER TABLE usage_v2 RENAME TO usage;
DELETE FROM sqlite_sequence WHERE name = 'usage';
CREATE INDEX usage_by_key_day ON usage (key_id, day);

-- The same usage table with its `source` check written as comparisons. SQLite evaluates a
-- CHECK with `IN (list)` by building a temporary index of the list for every inserted row
-- (a fresh page cache and a zeroed 4 KiB page each time): measured with callgrind, that was
-- the largest single cost of the usage writer, which inserts one row per proxied request.
CREATE TABLE usage_v3 (
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
    source             TEXT NOT NULL
        CHECK (source = 'reported' OR source = 'estimated' OR source = 'unpriced')
) STRICT;

INSERT INTO usage_v3 SELECT * FROM usage;
DROP TABLE usage;
ALTER TABLE usage_v3 RENAME TO usage;
CREATE INDEX usage_by_key_day ON usage (key_id, day);

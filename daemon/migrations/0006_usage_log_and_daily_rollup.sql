-- Usage becomes an append-only log plus a per-day rollup.
--
-- Every proxied request still leaves its row (SPEC §5), but the writer inserts tens of
-- thousands of them a second, and each row paid for a second B-tree (the (key_id, day) index)
-- and for two timestamps formatted as text. Reports are per key, per UTC day, per model: the
-- writer now keeps those sums in `usage_daily`, one upsert per (key, day, provider, model) per
-- batch, and the reports read only the rollup. The log keeps an integer timestamp (Unix
-- milliseconds, UTC) and no index: appending to it touches the last page only.
CREATE TABLE usage_daily (
    key_id             TEXT NOT NULL,
    day                TEXT NOT NULL,   -- UTC date, YYYY-MM-DD
    provider           TEXT NOT NULL,
    model              TEXT NOT NULL,
    requests           INTEGER NOT NULL,
    input_tokens       INTEGER NOT NULL,
    output_tokens      INTEGER NOT NULL,
    cache_read_tokens  INTEGER NOT NULL,
    cache_write_tokens INTEGER NOT NULL,
    cost_nanos         INTEGER NOT NULL,
    estimated_requests INTEGER NOT NULL,
    unpriced_requests  INTEGER NOT NULL,
    PRIMARY KEY (key_id, day, provider, model)
) STRICT, WITHOUT ROWID;

INSERT INTO usage_daily
SELECT key_id, day, provider, model, COUNT(*), SUM(input_tokens), SUM(output_tokens),
       SUM(cache_read_tokens), SUM(cache_write_tokens), SUM(cost_nanos),
       SUM(source = 'estimated'), SUM(source = 'unpriced')
FROM usage
GROUP BY key_id, day, provider, model;

CREATE TABLE usage_v4 (
    id                 INTEGER PRIMARY KEY,
    key_id             TEXT NOT NULL,
    at_ms              INTEGER NOT NULL,  -- Unix milliseconds, UTC
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

INSERT INTO usage_v4
SELECT id, key_id, CAST(round(unixepoch(at, 'subsec') * 1000) AS INTEGER), provider, model,
       status, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cost_nanos,
       latency_ms, source
FROM usage;
DROP TABLE usage;
ALTER TABLE usage_v4 RENAME TO usage;

-- One row per proxied request: who, when, what, how much. Written in batches by the usage
-- writer; `day` (UTC, YYYY-MM-DD) makes per-day reports an index range scan.
CREATE TABLE usage (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
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

CREATE INDEX usage_by_key_day ON usage (key_id, day);

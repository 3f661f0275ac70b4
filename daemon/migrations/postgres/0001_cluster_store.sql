-- The cluster's durable store (SPEC §9): what one server keeps in SQLite, shared by every
-- replica. Values are stored as SQLite stores them (lifecycle times as RFC 3339 text, usage
-- times as Unix milliseconds, rollup days as 'YYYY-MM-DD', money as integer nano-dollars,
-- lists as JSON text), so a key reads back exactly as written on every replica and
-- `gatewayd migrate-store` copies values as they are.

-- Proxy keys: settings and lifecycle; only the secret's SHA-256 (hex). No spend columns:
-- spend is derived from the usage rows (`key_spend`, `usage_daily`), which every replica
-- adds to; an absolute per-key state written by each replica would overwrite the others'.
-- `version` counts committed changes (part 2 checks it at admission).
CREATE TABLE keys (
    id                TEXT PRIMARY KEY,
    hash              TEXT NOT NULL UNIQUE,
    prefix            TEXT NOT NULL,
    name              TEXT NOT NULL,
    allowed_providers TEXT NOT NULL,   -- JSON array of provider names
    allowed_models    TEXT NOT NULL,   -- JSON array of globs
    allowed_ips       TEXT NOT NULL,   -- JSON array of addresses / CIDRs
    rate_limit_rpm    BIGINT,
    spend_limit_nanos BIGINT,
    spend_reset       TEXT,
    expires_at        TEXT,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL,
    revoked_at        TEXT,
    version           BIGINT NOT NULL DEFAULT 1
);

-- Which key a rotation made from which.
CREATE TABLE key_rotations (
    successor_id   TEXT PRIMARY KEY,
    predecessor_id TEXT NOT NULL
);

-- Admin tokens for the HTTPS management listener (hash and display prefix only).
CREATE TABLE admin_tokens (
    id           TEXT PRIMARY KEY,
    hash         TEXT NOT NULL UNIQUE,
    prefix       TEXT NOT NULL,
    name         TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    revoked_at   TEXT,
    last_used_at TEXT
);

-- Who changed what, when: written in the transaction of the change.
CREATE TABLE audit (
    id      BIGSERIAL PRIMARY KEY,
    at      TEXT NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    key_id  TEXT,
    details TEXT NOT NULL            -- JSON object, never a secret
);
CREATE INDEX audit_by_key ON audit (key_id, id);

-- One row per proxied request. (instance, seq) is the record id the usage writer assigned:
-- a batch delivered twice inserts nothing the second time (ON CONFLICT DO NOTHING), and the
-- rollups below are added to only from the rows actually inserted.
CREATE TABLE usage (
    instance           BIGINT NOT NULL,  -- the writer's random u64, stored as its i64 bits
    seq                BIGINT NOT NULL,
    key_id             TEXT NOT NULL,
    at_ms              BIGINT NOT NULL,  -- Unix milliseconds, UTC
    provider           TEXT NOT NULL,
    model              TEXT NOT NULL,
    status             INTEGER NOT NULL,
    input_tokens       BIGINT NOT NULL,
    output_tokens      BIGINT NOT NULL,
    cache_read_tokens  BIGINT NOT NULL,
    cache_write_tokens BIGINT NOT NULL,
    cost_nanos         BIGINT NOT NULL,
    latency_ms         BIGINT NOT NULL,
    source             TEXT NOT NULL CHECK (source IN ('reported', 'estimated', 'unpriced')),
    over_allowed       BOOLEAN NOT NULL,
    PRIMARY KEY (instance, seq)
);

-- Per key, UTC day, provider and model: what the reports and the period spend read.
CREATE TABLE usage_daily (
    key_id             TEXT NOT NULL,
    day                TEXT NOT NULL,    -- UTC date, YYYY-MM-DD
    provider           TEXT NOT NULL,
    model              TEXT NOT NULL,
    requests           BIGINT NOT NULL,
    input_tokens       BIGINT NOT NULL,
    output_tokens      BIGINT NOT NULL,
    cache_read_tokens  BIGINT NOT NULL,
    cache_write_tokens BIGINT NOT NULL,
    cost_nanos         BIGINT NOT NULL,
    estimated_requests BIGINT NOT NULL,
    unpriced_requests  BIGINT NOT NULL,
    PRIMARY KEY (key_id, day, provider, model)
);

-- Per key, in all: what a key loads with (its lifetime spend, requests, last use).
CREATE TABLE key_spend (
    key_id            TEXT PRIMARY KEY,
    spend_total_nanos BIGINT NOT NULL,
    request_count     BIGINT NOT NULL,
    last_used_ms      BIGINT NOT NULL
);

-- Open holds journaled by each usage writer (instance), deleted with their request's usage
-- row. Charging the rows of a replica that died is part 2's lease sweeper (SPEC §9.4); until
-- then they stay here, never dropped and never charged twice.
CREATE TABLE holds (
    instance      BIGINT NOT NULL,
    id            BIGINT NOT NULL,
    key_id        TEXT NOT NULL,
    at_ms         BIGINT NOT NULL,
    provider      TEXT NOT NULL,
    model         TEXT NOT NULL,
    input_tokens  BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    cost_nanos    BIGINT NOT NULL,
    unpriced      BOOLEAN NOT NULL,
    PRIMARY KEY (instance, id)
);

-- Every committed key / admin-token change, in commit order (writers take one advisory lock
-- before appending, so a later seq never commits before an earlier one). Replicas follow it:
-- NOTIFY gatewayd_changes '<seq>' wakes them, and after a reconnect they read what they
-- missed from here (a notification is never replayed).
CREATE TABLE changes (
    seq  BIGSERIAL PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('key', 'admin_token', 'rotation')),
    id   TEXT NOT NULL
);

-- Replicas seen recently (`gwctl cluster status`). Times are Unix milliseconds, UTC.
CREATE TABLE replicas (
    id            TEXT PRIMARY KEY,
    host          TEXT NOT NULL,
    version       TEXT NOT NULL,
    started_at_ms BIGINT NOT NULL,
    last_seen_ms  BIGINT NOT NULL,
    requests      BIGINT NOT NULL
);

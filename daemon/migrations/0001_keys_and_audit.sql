-- Proxy keys: settings, lifecycle timestamps and spend counters. Never the raw key: only its
-- SHA-256 (hex) and display prefix. Timestamps are RFC 3339 text, money integer nano-dollars.
CREATE TABLE keys (
    id                 TEXT PRIMARY KEY,
    hash               TEXT NOT NULL UNIQUE,
    prefix             TEXT NOT NULL,
    name               TEXT NOT NULL,
    allowed_providers  TEXT NOT NULL,   -- JSON array of provider names
    allowed_models     TEXT NOT NULL,   -- JSON array of globs
    allowed_ips        TEXT NOT NULL,   -- JSON array of addresses / CIDRs
    rate_limit_rpm     INTEGER,
    spend_limit_nanos  INTEGER,
    spend_reset        TEXT,
    expires_at         TEXT,
    created_at         TEXT NOT NULL,
    updated_at         TEXT NOT NULL,
    revoked_at         TEXT,
    last_used_at       TEXT,
    spend_total_nanos  INTEGER NOT NULL DEFAULT 0,
    spend_period_nanos INTEGER NOT NULL DEFAULT 0,
    period_resets_at   TEXT,
    request_count      INTEGER NOT NULL DEFAULT 0
) STRICT;

-- Who changed what, when. Written in the same transaction as the change it describes.
CREATE TABLE audit (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      TEXT NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    key_id  TEXT,
    details TEXT NOT NULL            -- JSON object, never a secret
) STRICT;

CREATE INDEX audit_by_key ON audit (key_id, id);

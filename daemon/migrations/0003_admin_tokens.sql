-- Admin tokens for the HTTPS management listener. Like proxy keys: only the SHA-256 (hex)
-- of the secret and its display prefix are stored.
CREATE TABLE admin_tokens (
    id           TEXT PRIMARY KEY,
    hash         TEXT NOT NULL UNIQUE,
    prefix       TEXT NOT NULL,
    name         TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    revoked_at   TEXT,
    last_used_at TEXT
) STRICT;

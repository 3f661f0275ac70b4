-- Key versions: every committed change of a key's settings or lifecycle adds one, and every
-- write of an existing key is conditional on the version it was read at, so an edit made
-- from a stale copy is refused rather than undoing a newer change (a revocation above all).
-- One server has one writer and never conflicts; the column keeps the two backends alike
-- and `gatewayd migrate-store` copies it as it is. Existing keys start at 1.
ALTER TABLE keys ADD COLUMN version INTEGER NOT NULL DEFAULT 1 CHECK (version >= 1);

-- Open holds that survive a crash (SPEC §9.4's rule on one server: an open hold of a daemon
-- that vanished is charged its estimate). The usage writer inserts a row for each hold still
-- open at a batch that was already open at the one before, in the same transaction as the
-- batch's usage rows, and deletes it in the transaction that writes its request's usage row:
-- after a crash either the usage row or the hold row is on disk, never both. The next start
-- turns every row left here into an `estimated` usage row charged `cost_nanos`, adds it to
-- its key's spend, and deletes it, in one transaction, before serving.
CREATE TABLE holds (
    id            INTEGER PRIMARY KEY,  -- unique within one run of the daemon
    key_id        TEXT NOT NULL,
    at_ms         INTEGER NOT NULL,     -- Unix milliseconds, UTC: when it was journaled
    provider      TEXT NOT NULL,
    model         TEXT NOT NULL,
    input_tokens  INTEGER NOT NULL,     -- the reservation's input bound
    output_tokens INTEGER NOT NULL,     -- the reservation's output tokens
    cost_nanos    INTEGER NOT NULL,     -- the reservation: what a crash charges
    unpriced      INTEGER NOT NULL      -- 1: the model has no price (recorded as unpriced)
) STRICT;

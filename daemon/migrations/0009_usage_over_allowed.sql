-- A usage row whose provider reported more output than the request allowed (its output
-- limit, or the model's, times the answers asked for). Billing what the provider reports is
-- right, but such a request can pass a key's hard cap (SPEC §5's documented bound): the row
-- says so, so an operator can find the provider and model that did it.
ALTER TABLE usage ADD COLUMN over_allowed INTEGER NOT NULL DEFAULT 0;

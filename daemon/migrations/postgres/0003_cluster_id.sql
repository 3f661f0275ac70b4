-- The cluster's identity: one row, a random id made when the schema is created (or migrated
-- up to this version). Each replica remembers the id in `data_dir/cluster-id` when it first
-- joins and refuses to start against a database with another id: a fresh or emptied database
-- (a wrong URL, a server restored empty) would otherwise be migrated, load no keys, and be
-- served as if all were well while the other replicas serve the real ones.
CREATE TABLE cluster (
    singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    id        TEXT NOT NULL
);
INSERT INTO cluster (id) VALUES (gen_random_uuid()::text);

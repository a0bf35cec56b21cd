-- One sweep per scope across every replica that shares the database.
--
-- `sweeps` holds the sweeps running now: the subscription, the resource group (NULL for the
-- whole subscription), who started it and when (unix milliseconds), and its lease as on
-- operations: the replica running it (`owner`) renews `heartbeat_ms` while it sweeps; a row whose
-- heartbeat is older than the lease belongs to a replica that died and is deleted by the next
-- claim. The `*_key` columns are the names in ASCII lower case (ARM names ignore case); the
-- others keep the spelling shown to people.
--
-- `sweep_gates` has one row per subscription, written first by every claim of a scope in it, so
-- that concurrent claims of one subscription take turns (see `store::sweeps`).
CREATE TABLE sweep_gates (
    subscription_key TEXT    PRIMARY KEY,
    claimed_ms       INTEGER NOT NULL
);

CREATE TABLE sweeps (
    id               TEXT    PRIMARY KEY,
    subscription_id  TEXT    NOT NULL,
    subscription_key TEXT    NOT NULL,
    resource_group   TEXT,
    group_key        TEXT,
    started_by       TEXT    NOT NULL,
    started_ms       INTEGER NOT NULL,
    owner            TEXT    NOT NULL,
    heartbeat_ms     INTEGER NOT NULL
);
CREATE INDEX sweeps_subscription ON sweeps (subscription_key);

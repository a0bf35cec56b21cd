-- Leases on running operations: the replica following an operation (`owner`, random per process)
-- renews `heartbeat_ms` (unix milliseconds) while it follows; another replica takes over an
-- operation whose heartbeat is older than the lease with one conditional UPDATE, so exactly one
-- wins. Operations from before this migration have neither (NULL): any replica may take them.
ALTER TABLE operations ADD COLUMN owner TEXT;
ALTER TABLE operations ADD COLUMN heartbeat_ms INTEGER;

-- A sweep's buttons work on every replica.
--
-- `sweeps.handle` is the front end's name for a running sweep (the nonce in its Discord
-- buttons), unique while it runs; `requester` the identity of who started it (only they may
-- cancel it); `cancel_requested_ms` when they asked, on whichever replica their click reached.
-- The replica running the sweep (`owner`) reads it every second and stops the sweep.
--
-- `swept` keeps a finished sweep's rows for its details menu, on whichever replica a choice
-- reaches: the VMs worst first (a JSON array of `{"id", "name"}`: the scope comes from the id),
-- the address its checks tested 3389 from (NULL: the whole Internet), and when it finished (unix
-- milliseconds); rows older than an hour are deleted as new ones are kept.
ALTER TABLE sweeps ADD COLUMN handle TEXT;
ALTER TABLE sweeps ADD COLUMN requester TEXT;
ALTER TABLE sweeps ADD COLUMN cancel_requested_ms INTEGER;
CREATE UNIQUE INDEX sweeps_handle ON sweeps (handle);

CREATE TABLE swept (
    handle       TEXT    PRIMARY KEY,
    requester    TEXT    NOT NULL,
    from_address TEXT,
    vms          TEXT    NOT NULL,
    finished_ms  INTEGER NOT NULL
);
CREATE INDEX swept_finished ON swept (finished_ms);

-- Watches and the VMs' check history.
--
-- `watches`: a VM re-checked on a schedule for a person, posting in the Discord channel it was
-- started in when the verdict or a finding changes. One per VM and channel (`vm_key`: the VM id
-- in ASCII lower case; a second `/rdp watch` there extends the first). The person is kept as the
-- door names them (id, display name, role ids comma-separated, guild), so each re-check is
-- authorised again. `next_ms` is when it is due, `expires_ms` when it ends; `last_json` the
-- previous check's verdict and findings, to compare the next with. A watch is run by one replica
-- at a time, with a lease as on operations: its `owner` renews `heartbeat_ms`; a watch without an
-- owner, or whose owner's heartbeat is older than the lease, is claimed by the next replica that
-- finds it due.
--
-- `check_history`: every check report kept, per VM over time (`snapshots` keeps only the
-- newest), pruned past the retention; `source` says what ran it (`check`, `watch`, `fix`).
CREATE TABLE watches (
    id           TEXT    PRIMARY KEY,
    vm_key       TEXT    NOT NULL,
    vm_id        TEXT    NOT NULL,
    vm_name      TEXT    NOT NULL,
    channel      TEXT    NOT NULL,
    guild        TEXT,
    actor        TEXT    NOT NULL,
    actor_name   TEXT    NOT NULL,
    actor_roles  TEXT    NOT NULL,
    started_ms   INTEGER NOT NULL,
    interval_ms  INTEGER NOT NULL,
    next_ms      INTEGER NOT NULL,
    expires_ms   INTEGER NOT NULL,
    last_json    TEXT,
    owner        TEXT,
    heartbeat_ms INTEGER NOT NULL
);
CREATE UNIQUE INDEX watches_vm_channel ON watches (vm_key, channel);
CREATE INDEX watches_due ON watches (next_ms);

CREATE TABLE check_history (
    id          INTEGER PRIMARY KEY,
    vm_key      TEXT    NOT NULL,
    vm_id       TEXT    NOT NULL,
    taken_ms    INTEGER NOT NULL,
    source      TEXT    NOT NULL,
    report_json TEXT    NOT NULL
);
CREATE INDEX check_history_vm ON check_history (vm_key, taken_ms);
CREATE INDEX check_history_taken ON check_history (taken_ms);

-- rdp-doctor's database: audit log, confirmations, operations (with the per-VM lock), snapshots.
--
-- PostgreSQL's dialect of migrations/sqlite/0001_init.sql (whose text must never change: sqlx
-- checks applied migrations by checksum): the same tables, columns, constraints
-- and indexes. Differences: INTEGER there is BIGINT here (PostgreSQL's INTEGER is 32 bits, too
-- small for unix milliseconds), and ids are `BIGINT GENERATED ALWAYS AS IDENTITY`.
--
-- No column holds a secret: passwords, tokens and SAS URLs never reach the database (the store
-- refuses them before writing).

-- Append-only: the store has no statement that updates or deletes a row.
CREATE TABLE audit (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at_ms       BIGINT  NOT NULL,
    actor       TEXT    NOT NULL,
    actor_name  TEXT    NOT NULL,
    channel     TEXT,
    command     TEXT    NOT NULL,
    vm_id       TEXT,
    vm_name     TEXT,
    result      TEXT    NOT NULL
);
CREATE INDEX audit_at ON audit (at_ms);
-- `recent_audit` filters on lower(vm_id) or lower(vm_name); expression indexes exist in both.
CREATE INDEX audit_vm_id ON audit (lower(vm_id));
CREATE INDEX audit_vm_name ON audit (lower(vm_name));

-- A confirmation is single-use: it leaves 'pending' exactly once, to 'confirmed' or 'cancelled'.
-- "Expired" is not stored; it is 'pending' with expires_ms <= now.
CREATE TABLE confirmations (
    id              TEXT    PRIMARY KEY,
    action          TEXT    NOT NULL,
    vm_id           TEXT    NOT NULL,
    vm_name         TEXT    NOT NULL,
    requester       TEXT    NOT NULL,
    requester_name  TEXT    NOT NULL,
    channel         TEXT,
    params_json     TEXT    NOT NULL,
    summary         TEXT    NOT NULL,
    created_ms      BIGINT  NOT NULL,
    expires_ms      BIGINT  NOT NULL,
    state           TEXT    NOT NULL CHECK (state IN ('pending', 'confirmed', 'cancelled')),
    decided_by      TEXT,
    decided_by_name TEXT,
    decided_ms      BIGINT
);

-- vm_key is the VM's resource id in ASCII lower case: ARM ids are case-insensitive, and the lock
-- must not be dodged by spelling the resource group differently.
CREATE TABLE operations (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    action          TEXT    NOT NULL,
    vm_id           TEXT    NOT NULL,
    vm_key          TEXT    NOT NULL,
    vm_name         TEXT    NOT NULL,
    requester       TEXT    NOT NULL,
    requester_name  TEXT    NOT NULL,
    confirmation_id TEXT,
    started_ms      BIGINT  NOT NULL,
    azure_url       TEXT,
    channel         TEXT,
    message         TEXT,
    state           TEXT    NOT NULL CHECK (state IN ('running', 'succeeded', 'failed')),
    error_code      TEXT,
    error_message   TEXT,
    finished_ms     BIGINT
);
-- The per-VM lock: at most one running operation per VM, enforced by the database.
CREATE UNIQUE INDEX operations_one_running_per_vm ON operations (vm_key) WHERE state = 'running';
-- A confirmation starts at most one operation (NULLs are distinct in both databases).
CREATE UNIQUE INDEX operations_confirmation ON operations (confirmation_id);

-- The latest check report per VM, to show what changed after a fix.
CREATE TABLE snapshots (
    vm_key      TEXT    PRIMARY KEY,
    vm_id       TEXT    NOT NULL,
    taken_ms    BIGINT  NOT NULL,
    report_json TEXT    NOT NULL
);

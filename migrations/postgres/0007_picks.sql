-- PostgreSQL's dialect of migrations/sqlite/0007_picks.sql (BIGINT for unix milliseconds).
--
-- "Which VM?" menus on every replica.
--
-- `picks` holds an ambiguous name waiting for its requester to pick one of the candidates, for
-- the menu's lifetime: the menu's nonce, the identity of who asked (nobody else may pick), what
-- to run once the VM is known (`kind`: the front end's words, e.g. `check` or
-- `fix open-rdp 198.51.100.7 3389`), the address checks test 3389 from (NULL: the whole
-- Internet), the candidates (a JSON array of `{"id", "name"}`: the scope comes from the id), and
-- when it was asked (unix milliseconds). A pick is taken once: the replica the choice reaches
-- deletes the row as it reads it; rows past the menu's lifetime are deleted as new ones are kept.
CREATE TABLE picks (
    nonce        TEXT    PRIMARY KEY,
    requester    TEXT    NOT NULL,
    kind         TEXT    NOT NULL,
    from_address TEXT,
    candidates   TEXT    NOT NULL,
    created_ms   BIGINT  NOT NULL
);
CREATE INDEX picks_created ON picks (created_ms);

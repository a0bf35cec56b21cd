-- PostgreSQL's dialect of migrations/sqlite/0004_alerts.sql (BIGINT for unix milliseconds).
--
-- Azure Monitor alerts posted in the war room: one row per alert (its alertId) and VM.
--
-- `alert_key` is the alertId and the VM id in ASCII lower case. The message the alert's report
-- was posted as (`channel_id`, `message_id`) is edited by a refire and by the resolution.
-- `wanted` is the newest notification received (JSON), `done` the one last posted (and when,
-- `done_ms`); while a replica posts or edits, it holds the row (`owner`, renewing
-- `heartbeat_ms`), so two replicas receiving the same notification post once, and a row whose
-- owner stopped renewing is taken by the next notification.
CREATE TABLE alerts (
    alert_key    TEXT    PRIMARY KEY,
    alert_id     TEXT    NOT NULL,
    vm_id        TEXT    NOT NULL,
    channel_id   TEXT    NOT NULL,
    message_id   TEXT,
    wanted       TEXT    NOT NULL,
    done         TEXT,
    done_ms      BIGINT,
    owner        TEXT,
    heartbeat_ms BIGINT,
    created_ms   BIGINT  NOT NULL
);

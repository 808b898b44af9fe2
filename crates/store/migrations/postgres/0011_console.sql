-- The console's alert acknowledgements: who took an alert into hand, and when.
-- An alert is acknowledged at most once; the audit log keeps the full story.
-- Mirrors the embedded 0011_console.

CREATE TABLE alert_acks (
    alert_id   TEXT COLLATE "C" PRIMARY KEY,
    actor      TEXT NOT NULL,
    at         BIGINT NOT NULL,
    note       TEXT NOT NULL DEFAULT ''
);

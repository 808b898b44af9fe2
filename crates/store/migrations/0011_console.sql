-- The console's alert acknowledgements: who took an alert into hand, and when.
-- An alert is acknowledged at most once; the audit log keeps the full story.

CREATE TABLE alert_acks (
    alert_id   TEXT PRIMARY KEY NOT NULL,
    actor      TEXT NOT NULL,
    at         INTEGER NOT NULL,
    note       TEXT NOT NULL DEFAULT ''
) WITHOUT ROWID;

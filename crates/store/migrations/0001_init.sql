-- The initial schema: devices, events, alerts and API tokens.
-- Filterable fields have their own columns; `body` holds the full JSON document.

CREATE TABLE devices (
    id      TEXT PRIMARY KEY NOT NULL,
    sector  TEXT NOT NULL,
    class   TEXT NOT NULL,
    zone    TEXT NOT NULL,
    status  TEXT NOT NULL,
    body    TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE events (
    id        INTEGER PRIMARY KEY,
    ts        INTEGER NOT NULL,
    device_id TEXT,
    kind      TEXT NOT NULL,
    sector    TEXT,
    body      TEXT NOT NULL
);
CREATE INDEX events_device_ts ON events (device_id, ts);
CREATE INDEX events_ts ON events (ts);

CREATE TABLE alerts (
    id        TEXT PRIMARY KEY NOT NULL,
    ts        INTEGER NOT NULL,
    rule      TEXT NOT NULL,
    severity  TEXT NOT NULL,
    device_id TEXT,
    body      TEXT NOT NULL
);
CREATE INDEX alerts_ts ON alerts (ts);
CREATE INDEX alerts_device_ts ON alerts (device_id, ts);
CREATE INDEX alerts_rule_ts ON alerts (rule, ts);

CREATE TABLE api_tokens (
    sha256     TEXT PRIMARY KEY NOT NULL,
    name       TEXT NOT NULL,
    role       TEXT NOT NULL,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;

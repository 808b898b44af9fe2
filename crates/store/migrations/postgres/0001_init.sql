-- The initial schema on PostgreSQL: devices, events, alerts and API tokens (mirrors the
-- embedded 0001_init). Filterable fields have their own columns; `body` holds the full
-- JSON document as text, exactly as the embedded store keeps it.
-- Keys compare bytewise (COLLATE "C"), as in SQLite, so pages and orders are the same
-- whatever the database locale.

CREATE TABLE devices (
    id      TEXT COLLATE "C" PRIMARY KEY,
    sector  TEXT NOT NULL,
    class   TEXT NOT NULL,
    zone    TEXT NOT NULL,
    status  TEXT NOT NULL,
    body    TEXT NOT NULL
);

CREATE TABLE events (
    id        BIGSERIAL PRIMARY KEY,
    ts        BIGINT NOT NULL,
    device_id TEXT,
    kind      TEXT NOT NULL,
    sector    TEXT,
    body      TEXT NOT NULL,
    -- SHA-256 of `body`: an event delivered twice (an at-least-once bus redelivers after a
    -- crash) is stored once.
    digest    BYTEA NOT NULL
);
CREATE UNIQUE INDEX events_digest ON events (digest);
CREATE INDEX events_device_ts ON events (device_id, ts);
CREATE INDEX events_ts ON events (ts);

CREATE TABLE alerts (
    id        TEXT COLLATE "C" PRIMARY KEY,
    ts        BIGINT NOT NULL,
    rule      TEXT NOT NULL,
    severity  TEXT NOT NULL,
    device_id TEXT,
    body      TEXT NOT NULL
);
CREATE INDEX alerts_ts ON alerts (ts);
CREATE INDEX alerts_device_ts ON alerts (device_id, ts);
CREATE INDEX alerts_rule_ts ON alerts (rule, ts);

CREATE TABLE api_tokens (
    sha256     TEXT COLLATE "C" PRIMARY KEY,
    name       TEXT NOT NULL,
    role       TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

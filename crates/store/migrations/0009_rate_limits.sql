-- Per-device rate limits at the broker (incident response's rate_limit action), kept so a
-- restart applies them again until they lapse.

CREATE TABLE device_rate_limits (
    device_id  TEXT PRIMARY KEY NOT NULL,
    until_ms   INTEGER NOT NULL,
    body       TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX device_rate_limits_until ON device_rate_limits (until_ms);

-- Per-device rate limits at the broker (incident response's rate_limit action), kept so a
-- restart applies them again until they lapse. Mirrors the embedded 0009_rate_limits.

CREATE TABLE device_rate_limits (
    device_id  TEXT COLLATE "C" PRIMARY KEY,
    until_ms   BIGINT NOT NULL,
    body       TEXT NOT NULL
);
CREATE INDEX device_rate_limits_until ON device_rate_limits (until_ms);

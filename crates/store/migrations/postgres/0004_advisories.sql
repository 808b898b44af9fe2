-- Public advisories (CAP), citizen reports and the readiness index history (mirrors the
-- embedded 0004_advisories).

CREATE TABLE advisories (
    id         TEXT COLLATE "C" PRIMARY KEY,
    version    BIGINT NOT NULL,
    state      TEXT NOT NULL,
    drafted_at BIGINT NOT NULL,
    issued_at  BIGINT,
    body       TEXT NOT NULL
);
CREATE INDEX advisories_issued ON advisories (issued_at) WHERE issued_at IS NOT NULL;
CREATE INDEX advisories_drafted ON advisories (drafted_at);

CREATE TABLE citizen_reports (
    id       TEXT COLLATE "C" PRIMARY KEY,
    ts       BIGINT NOT NULL,
    category TEXT NOT NULL,
    body     TEXT NOT NULL
);
CREATE INDEX citizen_reports_ts ON citizen_reports (ts);

CREATE TABLE readiness_history (
    id    BIGSERIAL PRIMARY KEY,
    ts    BIGINT NOT NULL,
    score DOUBLE PRECISION,
    body  TEXT NOT NULL
);
CREATE INDEX readiness_history_ts ON readiness_history (ts);

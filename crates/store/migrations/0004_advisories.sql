-- Public advisories (CAP), citizen reports and the readiness index history.
-- Filterable fields have their own columns; `body` holds the full JSON document.

CREATE TABLE advisories (
    id         TEXT PRIMARY KEY NOT NULL,
    version    INTEGER NOT NULL,
    state      TEXT NOT NULL,
    drafted_at INTEGER NOT NULL,
    issued_at  INTEGER,
    body       TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX advisories_issued ON advisories (issued_at) WHERE issued_at IS NOT NULL;
CREATE INDEX advisories_drafted ON advisories (drafted_at);

CREATE TABLE citizen_reports (
    id       TEXT PRIMARY KEY NOT NULL,
    ts       INTEGER NOT NULL,
    category TEXT NOT NULL,
    body     TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX citizen_reports_ts ON citizen_reports (ts);

CREATE TABLE readiness_history (
    id    INTEGER PRIMARY KEY,
    ts    INTEGER NOT NULL,
    score REAL,
    body  TEXT NOT NULL
);
CREATE INDEX readiness_history_ts ON readiness_history (ts);

-- Detection state that must survive a restart: the analysts' learns and mutes, and the
-- threat indicators the city wrote itself (partners' indicators live with TAXII).

CREATE TABLE detect_suppressions (
    rule       TEXT NOT NULL,
    key        TEXT NOT NULL,
    body       TEXT NOT NULL,
    PRIMARY KEY (rule, key)
) WITHOUT ROWID;

CREATE TABLE local_indicators (
    id         TEXT PRIMARY KEY NOT NULL,
    created_at INTEGER NOT NULL,
    body       TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX local_indicators_created ON local_indicators (created_at, id);

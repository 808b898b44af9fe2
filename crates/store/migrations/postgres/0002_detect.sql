-- Detection state that must survive a restart (mirrors the embedded 0002_detect): the
-- analysts' learns and mutes, and the threat indicators the city wrote itself.

CREATE TABLE detect_suppressions (
    rule TEXT COLLATE "C" NOT NULL,
    key  TEXT COLLATE "C" NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (rule, key)
);

CREATE TABLE local_indicators (
    id         TEXT COLLATE "C" PRIMARY KEY,
    created_at BIGINT NOT NULL,
    body       TEXT NOT NULL
);
CREATE INDEX local_indicators_created ON local_indicators (created_at, id);

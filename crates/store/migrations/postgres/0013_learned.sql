-- What each detection engine has learned (mirrors the embedded 0013_learned): one row per
-- shard, replaced at each save. The body is large (a partition's devices); PostgreSQL
-- keeps it out of line, compressed (TOAST).

CREATE TABLE detect_learned (
    shard    TEXT COLLATE "C" PRIMARY KEY,
    taken_at BIGINT NOT NULL,
    body     TEXT NOT NULL
);

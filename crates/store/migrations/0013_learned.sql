-- What each detection engine has learned (baselines, known destinations, flow models),
-- saved by its owner now and then so that a restart or a partition moving to another
-- worker does not start learning again. One row per shard, replaced at each save.

CREATE TABLE detect_learned (
    shard    TEXT PRIMARY KEY NOT NULL,
    taken_at INTEGER NOT NULL,
    body     TEXT NOT NULL
) WITHOUT ROWID;

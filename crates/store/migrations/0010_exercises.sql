-- The results of exercises (drills) posted by `citysec exercise run --api`, scored by the
-- readiness index. One row per run; the body is the JSON `model::ExerciseRecord`.

CREATE TABLE exercises (
    id          TEXT PRIMARY KEY NOT NULL,
    finished_ms INTEGER NOT NULL,
    recorded_ms INTEGER NOT NULL,
    body        TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX exercises_finished ON exercises (finished_ms);

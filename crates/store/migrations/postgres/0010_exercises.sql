-- The results of exercises (drills) posted by `citysec exercise run --api`, scored by the
-- readiness index. One row per run; the body is the JSON `model::ExerciseRecord`.
-- Mirrors the embedded 0010_exercises.

CREATE TABLE exercises (
    id          TEXT COLLATE "C" PRIMARY KEY,
    finished_ms BIGINT NOT NULL,
    recorded_ms BIGINT NOT NULL,
    body        TEXT NOT NULL
);
CREATE INDEX exercises_finished ON exercises (finished_ms);

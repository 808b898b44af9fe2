//! `/api/v1/exercises`: the results of exercises (drills of the attack catalogue against the
//! live platform, `citysec exercise run --api`), kept so the readiness index can score them
//! ("exercises run and their scores"). `POST` checks a result and stores it with who posted
//! it; `GET` lists them, newest first. A result that does not hold together (times out of
//! order, a detected scenario without its time to detect, oversized lists) is refused
//! whole with the reason, and nothing is stored.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use model::{ExerciseRecord, ExerciseResult, Timestamp};
use serde::Deserialize;

use crate::Shared;
use crate::auth::Principal;
use crate::error::{ApiError, Json, Query};

/// The most scenarios one result may hold.
pub const MAX_SCENARIOS: usize = 1_000;
/// The most entries of each list of a scenario, and the longest entry.
const MAX_LIST: usize = 100;
const MAX_ENTRY: usize = 500;
/// The longest an exercise may last.
const MAX_DURATION_MS: i64 = 7 * 86_400_000;
/// How far in the future a result may end (clock skew between machines).
const MAX_SKEW_MS: i64 = 5 * 60_000;
/// The longest time to detect accepted, in seconds.
const MAX_TIME_TO_DETECT_S: f64 = 7.0 * 86_400.0;

/// Checks a posted result against the clock `now`; the error says what is wrong.
pub fn check(result: &ExerciseResult, now: Timestamp) -> Result<(), String> {
    let (started, finished) = (result.started.as_millis(), result.finished.as_millis());
    if finished < started {
        return Err("finished is before started".into());
    }
    if finished - started > MAX_DURATION_MS {
        return Err("an exercise lasts at most 7 days".into());
    }
    if finished > now.as_millis() + MAX_SKEW_MS {
        return Err("finished is in the future".into());
    }
    if result.scenarios.is_empty() {
        return Err("an exercise needs at least one scenario".into());
    }
    if result.scenarios.len() > MAX_SCENARIOS {
        return Err(format!("at most {MAX_SCENARIOS} scenarios"));
    }
    for (i, s) in result.scenarios.iter().enumerate() {
        let at = || format!("scenarios[{i}] ({})", s.scenario);
        let name_ok = !s.scenario.is_empty()
            && s.scenario.len() <= 64
            && s.scenario
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !name_ok {
            return Err(format!(
                "scenarios[{i}]: the scenario name must be 1 to 64 letters, digits, '-', '_' or '.'"
            ));
        }
        match (s.detected, s.time_to_detect_s) {
            (true, None) => return Err(format!("{}: detected without time_to_detect_s", at())),
            (false, Some(_)) => {
                return Err(format!("{}: time_to_detect_s given but not detected", at()));
            }
            (true, Some(t)) if !(t.is_finite() && (0.0..=MAX_TIME_TO_DETECT_S).contains(&t)) => {
                return Err(format!(
                    "{}: time_to_detect_s must be 0 to {MAX_TIME_TO_DETECT_S} seconds",
                    at()
                ));
            }
            _ => {}
        }
        for (what, list) in [
            ("rules_fired", &s.rules_fired),
            ("rules_missing", &s.rules_missing),
            ("problems", &s.problems),
        ] {
            if list.len() > MAX_LIST || list.iter().any(|e| e.chars().count() > MAX_ENTRY) {
                return Err(format!(
                    "{}: {what} holds at most {MAX_LIST} entries of at most {MAX_ENTRY} characters",
                    at()
                ));
            }
        }
    }
    Ok(())
}

fn new_id(now: Timestamp) -> Result<String, ApiError> {
    let mut bytes = [0u8; 5];
    getrandom::fill(&mut bytes).map_err(|e| ApiError::internal(format!("no randomness: {e}")))?;
    Ok(format!("ex-{}-{}", now.as_millis(), hex::encode(bytes)))
}

pub(crate) async fn record(
    State(s): State<Arc<Shared>>,
    Extension(by): Extension<Principal>,
    Json(result): Json<ExerciseResult>,
) -> Result<Response, ApiError> {
    let now = Timestamp::now();
    check(&result, now).map_err(|e| ApiError::invalid(format!("invalid exercise result: {e}")))?;
    let record = ExerciseRecord {
        id: new_id(now)?,
        recorded_at: now,
        recorded_by: by.name.clone(),
        result,
    };
    s.api.store.insert_exercise(&record).await?;
    tracing::info!(
        exercise = %record.id,
        by = %by.name,
        scenarios = record.result.scenarios.len(),
        detected = record.result.detected(),
        "exercise result recorded"
    );
    Ok((StatusCode::CREATED, axum::Json(record)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListParams {
    #[serde(default)]
    since: Option<Timestamp>,
    #[serde(default)]
    limit: Option<usize>,
}

pub(crate) async fn list(
    State(s): State<Arc<Shared>>,
    Query(params): Query<ListParams>,
) -> Result<axum::Json<Vec<ExerciseRecord>>, ApiError> {
    let limit = params.limit.unwrap_or(crate::api::DEFAULT_LIMIT);
    if limit == 0 || limit > crate::api::MAX_LIMIT {
        return Err(ApiError::invalid(format!(
            "limit must be 1..={}",
            crate::api::MAX_LIMIT
        )));
    }
    Ok(axum::Json(
        s.api.store.list_exercises(params.since, limit).await?,
    ))
}

//! Detection routes: `learn` and `mute` on alerts, the list of suppressions, the city's own
//! threat indicators, and the engine's status (rules loaded, rule-file diagnostics).

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use model::{AlertId, Timestamp};
use serde::{Deserialize, Serialize};

use crate::auth::Principal;
use crate::error::{ApiError, Json, Path, Query};
use crate::{Shared, api};

type AppState = State<Arc<Shared>>;

const MAX_REASON_LEN: usize = 1000;
/// The longest mute: a year.
const MAX_MUTE_S: u64 = 366 * 86_400;

/// What a `learn` or `mute` request carries.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SuppressRequest {
    reason: String,
    /// For mutes: how long; none mutes until lifted.
    #[serde(default)]
    duration_s: Option<u64>,
}

/// Which suppression to lift.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LiftRequest {
    rule: String,
    key: String,
}

/// What `POST /api/v1/indicators` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndicatorReport {
    pub accepted: u64,
    pub refused: Vec<IndicatorRefusal>,
}

/// One indicator that was not accepted, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndicatorRefusal {
    /// The object's id, or its position in the request when it has none.
    pub id: String,
    pub message: String,
}

/// The detection engine as `GET /api/v1/detect` shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DetectStatus {
    /// Rules by kind: `reading`, `totals`, `threshold`, and the built-in rule ids.
    pub builtin_rules: Vec<String>,
    pub reading_rules: u64,
    pub totals_rules: u64,
    pub threshold_rules: u64,
    pub disabled_rules: Vec<String>,
    /// Problems with rule files and the zone plan (each rule or zone skipped).
    pub diagnostics: Vec<String>,
    pub zones: u64,
    pub conduits: u64,
    pub indicators: u64,
    pub events_processed: u64,
    pub alerts_suppressed: u64,
}

fn check_reason(reason: &str) -> Result<&str, ApiError> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(ApiError::invalid("reason must not be empty"));
    }
    if reason.chars().count() > MAX_REASON_LEN || reason.chars().any(char::is_control) {
        return Err(ApiError::invalid(format!(
            "reason must be at most {MAX_REASON_LEN} characters without control characters"
        )));
    }
    Ok(reason)
}

async fn alert_of(s: &Shared, id: &str) -> Result<model::Alert, ApiError> {
    if id.is_empty() || id.len() > 128 {
        return Err(ApiError::invalid("alert id must be 1 to 128 characters"));
    }
    s.api
        .store
        .get_alert(&AlertId(id.to_owned()))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("alert {id} not found")))
}

pub(crate) async fn learn(
    State(s): AppState,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    Json(body): Json<SuppressRequest>,
) -> Result<Response, ApiError> {
    let reason = check_reason(&body.reason)?;
    if body.duration_s.is_some() {
        return Err(ApiError::invalid(
            "learn takes no duration (it is for good); mute takes one",
        ));
    }
    let alert = alert_of(&s, &id).await?;
    let suppression = s
        .api
        .platform
        .learn_alert(&alert, &who.name, reason)
        .await?;
    Ok(axum::Json(suppression).into_response())
}

pub(crate) async fn mute(
    State(s): AppState,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    Json(body): Json<SuppressRequest>,
) -> Result<Response, ApiError> {
    let reason = check_reason(&body.reason)?;
    if body.duration_s.is_some_and(|d| d == 0 || d > MAX_MUTE_S) {
        return Err(ApiError::invalid(format!(
            "duration_s must be between 1 and {MAX_MUTE_S}"
        )));
    }
    let alert = alert_of(&s, &id).await?;
    let until = body
        .duration_s
        .map(|d| Timestamp::now().saturating_add_ms(d as i64 * 1000));
    let suppression = s
        .api
        .platform
        .mute_alert(&alert, until, &who.name, reason)
        .await?;
    Ok(axum::Json(suppression).into_response())
}

pub(crate) async fn list_suppressions(State(s): AppState) -> Result<Response, ApiError> {
    let all = s.api.store.list_suppressions().await?;
    Ok(axum::Json(serde_json::json!({ "suppressions": all })).into_response())
}

pub(crate) async fn lift(
    State(s): AppState,
    Extension(who): Extension<Principal>,
    Json(body): Json<LiftRequest>,
) -> Result<Response, ApiError> {
    if body.rule.len() > 128 || body.key.len() > 512 {
        return Err(ApiError::invalid("rule or key is too long"));
    }
    s.api
        .platform
        .lift_suppression(&body.rule, &body.key, &who.name)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct IndicatorQuery {
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
}

pub(crate) async fn list_indicators(
    State(s): AppState,
    Query(q): Query<IndicatorQuery>,
) -> Result<Response, ApiError> {
    let limit = q.limit.unwrap_or(api::DEFAULT_LIMIT);
    if limit == 0 || limit > api::MAX_LIMIT {
        return Err(ApiError::invalid(format!(
            "limit must be between 1 and {}",
            api::MAX_LIMIT
        )));
    }
    let page = s
        .api
        .store
        .list_indicators(q.after.as_deref(), limit)
        .await?;
    let next = (page.len() == limit)
        .then(|| page.last().map(|i| i.id.clone()))
        .flatten();
    Ok(axum::Json(serde_json::json!({ "indicators": page, "next": next })).into_response())
}

pub(crate) async fn add_indicators(
    State(s): AppState,
    Extension(who): Extension<Principal>,
    Json(body): Json<serde_json::Value>,
) -> Result<Response, ApiError> {
    let report = s.api.platform.add_indicators(body, &who.name).await?;
    let status = if report.accepted > 0 || report.refused.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    Ok((status, axum::Json(report)).into_response())
}

pub(crate) async fn status(State(s): AppState) -> axum::Json<DetectStatus> {
    axum::Json(s.api.platform.detect_status())
}

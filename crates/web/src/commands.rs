//! `/api/v1/commands` (the command gateway) and `/api/v1/audit` (the audit log).
//!
//! Creating and approving go through [`crate::Platform`] on behalf of the caller's
//! [`Principal`]: the gateway decides (and audits refusals), so these routes only need a
//! valid token. Listing reads the store; showing asks the platform for the live copy.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use model::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use store::audit::{ChainReport, CommandQuery, StoredAudit};

use crate::Shared;
use crate::api::{Items, MAX_LIMIT};
use crate::auth::Principal;
use crate::error::{ApiError, Json, Path, Query};

type AppState = State<Arc<Shared>>;

const MAX_ID_LEN: usize = 128;
const STATES: [&str; 7] = [
    "pending_approval",
    "approved",
    "delivered",
    "acked",
    "refused",
    "expired",
    "timed_out",
];

fn check_id(id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(ApiError::invalid(format!(
            "command id must be 1 to {MAX_ID_LEN} bytes"
        )));
    }
    Ok(())
}

pub(crate) async fn create(
    State(s): AppState,
    Extension(principal): Extension<Principal>,
    Json(body): Json<Value>,
) -> Result<(axum::http::StatusCode, axum::Json<Value>), ApiError> {
    let command = s.api.platform.submit_command(&principal, body).await?;
    let status = if command["state"] == "pending_approval" {
        axum::http::StatusCode::ACCEPTED
    } else {
        axum::http::StatusCode::CREATED
    };
    Ok((status, axum::Json(command)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ApproveBody {
    /// The SHA-256 of the command's canonical payload, as the approver computed it.
    payload_sha256: String,
}

pub(crate) async fn approve(
    State(s): AppState,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    Json(body): Json<ApproveBody>,
) -> Result<axum::Json<Value>, ApiError> {
    check_id(&id)?;
    let sha = &body.payload_sha256;
    if !(sha.len() == 64 && sha.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))) {
        return Err(ApiError::invalid(
            "payload_sha256 must be 64 lowercase hex digits",
        ));
    }
    let command = s.api.platform.approve_command(&principal, &id, sha).await?;
    Ok(axum::Json(command))
}

pub(crate) async fn show(
    State(s): AppState,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    check_id(&id)?;
    let command = s
        .api
        .platform
        .get_command(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("command {id} not found")))?;
    Ok(axum::Json(command))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListParams {
    device_id: Option<String>,
    state: Option<String>,
    before: Option<String>,
    limit: Option<String>,
}

pub(crate) async fn list(
    State(s): AppState,
    Query(p): Query<ListParams>,
) -> Result<axum::Json<Items<Value>>, ApiError> {
    let state = p.state.filter(|v| !v.is_empty());
    if let Some(state) = &state
        && !STATES.contains(&state.as_str())
    {
        return Err(ApiError::invalid(format!(
            "state must be one of {}",
            STATES.join(", ")
        )));
    }
    let before = p
        .before
        .filter(|v| !v.is_empty())
        .map(|t| {
            Timestamp::parse_rfc3339(&t)
                .ok_or_else(|| ApiError::invalid(format!("before: {t:?} is not an RFC 3339 time")))
        })
        .transpose()?;
    let limit = parse_limit(p.limit)?;
    let device_id = p
        .device_id
        .filter(|v| !v.is_empty())
        .map(|d| {
            model::DeviceId::new(&d)
                .map(|d| d.as_str().to_owned())
                .map_err(|e| ApiError::invalid(format!("device_id: {e}")))
        })
        .transpose()?;
    let items = s
        .api
        .store
        .list_commands(&CommandQuery {
            state,
            device_id,
            before,
            limit,
        })
        .await?
        .into_iter()
        .map(|c| c.body)
        .collect();
    Ok(axum::Json(Items { items }))
}

fn parse_limit(value: Option<String>) -> Result<usize, ApiError> {
    match value.filter(|v| !v.is_empty()) {
        None => Ok(crate::api::DEFAULT_LIMIT),
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            _ => Err(ApiError::invalid(format!(
                "limit must be a whole number from 1 to {MAX_LIMIT}, not {text:?}"
            ))),
        },
    }
}

/// `GET /api/v1/audit/verify`.
pub(crate) async fn verify(State(s): AppState) -> Result<axum::Json<ChainReport>, ApiError> {
    Ok(axum::Json(s.api.store.verify_audit().await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditParams {
    after: Option<String>,
    limit: Option<String>,
}

/// One page of the log as stored: each record's `body` is the exact canonical JSON its hash
/// covers, so an export can be verified with SHA-256 alone.
#[derive(Debug, Serialize)]
pub(crate) struct AuditPage {
    items: Vec<StoredAudit>,
    /// Pass as `after` for the next page; absent at the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_after: Option<u64>,
}

/// `GET /api/v1/audit`: the log in order, for export.
pub(crate) async fn list_audit(
    State(s): AppState,
    Query(p): Query<AuditParams>,
) -> Result<axum::Json<AuditPage>, ApiError> {
    let after = match p.after.filter(|v| !v.is_empty()) {
        None => 0,
        Some(text) => text.parse::<u64>().map_err(|_| {
            ApiError::invalid(format!("after must be a sequence number, not {text:?}"))
        })?,
    };
    let limit = parse_limit(p.limit)?;
    let rows = s.api.store.list_audit(after, limit).await?;
    let next_after = (rows.len() == limit)
        .then(|| rows.last().map(|r| r.seq))
        .flatten();
    Ok(axum::Json(AuditPage {
        items: rows,
        next_after,
    }))
}

//! `GET /api/v1/readiness`: the readiness index computed now from live data, with its
//! history and trend. The computation is the `readiness` crate's, driven by `app`.

use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::State;
use serde::Deserialize;

use crate::Shared;
use crate::error::{ApiError, Query};
use crate::platform::PlatformError;

/// The platform's side of the readiness index.
#[async_trait]
pub trait Readiness: Send + Sync + 'static {
    /// Computes the index now (and records it in the history); `history` past values are
    /// included, newest first.
    async fn compute(&self, history: usize) -> Result<serde_json::Value, PlatformError>;
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Params {
    #[serde(default)]
    history: Option<usize>,
}

pub(crate) async fn get(
    State(s): State<Arc<Shared>>,
    Query(params): Query<Params>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let history = params.history.unwrap_or(30);
    if history > crate::api::MAX_LIMIT {
        return Err(ApiError::invalid(format!(
            "history must be at most {}",
            crate::api::MAX_LIMIT
        )));
    }
    Ok(axum::Json(s.api.readiness.compute(history).await?))
}

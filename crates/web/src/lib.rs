//! The citysec HTTP API: JSON under `/api/v1/` with an OpenAPI 3.1 document at
//! `/api/v1/openapi.json`, plus `/healthz`, `/readyz` and `/metrics`, and the security
//! operations console at `/` ([`console`]).
//!
//! [`router`] builds an `axum::Router` from [`ApiState`]: the store (read paths), a
//! [`Platform`] that `app` implements (write paths that need the running platform), a metrics
//! renderer and a readiness flag. Every route is listed once in [`routes::ROUTES`], from which
//! the router is built and against which the OpenAPI document is tested.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};

pub mod accounts;
mod advisories;
mod api;
mod auth;
mod commands;
pub mod console;
pub mod detect;
mod error;
pub mod exercises;
mod incidents;
mod platform;
mod readiness;
mod reports;
pub mod routes;

pub use crate::advisories::{Advisories, DraftRequest, FromAlertRequest, FromIncidentRequest};
pub use crate::auth::{Principal, Role, token_sha256};
pub use crate::console::session::ServedOverTls;
pub use crate::error::{ApiError, status_for};
pub use crate::incidents::{IncidentRequest, IncidentUpdate};
pub use crate::platform::{
    FlowLineError, FlowReport, ImportFormat, ImportReport, ImportRowError, NewDevice, Platform,
    PlatformError, Status,
};
pub use crate::readiness::Readiness;
pub use crate::reports::{
    NewReport, REPORT_BODY_LIMIT, ReportLimits, Reports, clean_text, html_escape,
};

/// The OpenAPI 3.1 document served at `/api/v1/openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("openapi.json");

/// Request bodies larger than this are refused with 413 (imports have their own limit).
pub const BODY_LIMIT: usize = 1024 * 1024;
/// The body limit of `POST /api/v1/devices/import`.
pub const IMPORT_BODY_LIMIT: usize = 16 * 1024 * 1024;
/// The body limit of `POST /api/v1/flows` (JSON lines).
pub const FLOWS_BODY_LIMIT: usize = 16 * 1024 * 1024;

/// Everything the API needs from the rest of the platform.
#[derive(Clone)]
pub struct ApiState {
    pub store: Arc<dyn store::Store>,
    pub platform: Arc<dyn Platform>,
    /// Renders the Prometheus text exposition.
    pub metrics: Arc<dyn Fn() -> String + Send + Sync>,
    /// Whether `/readyz` answers 200.
    pub ready: Arc<AtomicBool>,
    /// Whether `/metrics` may be read without a token (default: no).
    pub metrics_public: bool,
    /// Public advisories (the `/api/v1/advisories` lifecycle and the `/cap/` feed).
    pub advisories: Arc<dyn Advisories>,
    /// Where accepted citizen reports go.
    pub reports: Arc<dyn Reports>,
    /// The limits of the public report intake.
    pub report_limits: ReportLimits,
    /// The readiness index.
    pub readiness: Arc<dyn Readiness>,
}

/// The state handlers share: the caller's [`ApiState`] and the token cache.
pub(crate) struct Shared {
    pub api: ApiState,
    pub tokens: auth::TokenCache,
    pub report_limiter: reports::Limiter,
    pub logins: accounts::LoginLimiter,
    pub console: console::ConsoleState,
}

/// Builds the API router.
pub fn router(state: ApiState) -> Router {
    finish(routes::build(shared(state)))
}

/// Only `/healthz`, `/readyz` and `/metrics` (with the same access rules as in
/// [`router`]): what a process without the API role serves.
pub fn ops_router(state: ApiState) -> Router {
    finish(routes::build_only(shared(state), |r| {
        routes::OPS_PATHS.contains(&r.path)
    }))
}

fn shared(state: ApiState) -> Arc<Shared> {
    Arc::new(Shared {
        report_limiter: reports::Limiter::new(state.report_limits.clone()),
        api: state,
        tokens: auth::TokenCache::new(),
        logins: accounts::LoginLimiter::new(),
        console: console::ConsoleState::new(),
    })
}

fn finish(router: Router) -> Router {
    router
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn(harden))
}

/// Outermost middleware: security headers on every response, and the one log line for a
/// server-side failure.
async fn harden(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let mut response = next.run(req).await.into_response();
    if let Some(detail) = response.extensions_mut().remove::<error::FailureDetail>() {
        tracing::error!(%method, %path, status = response.status().as_u16(), error = %detail.0, "request failed");
    }
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // A route may set a policy of its own (the report page allows its inline style).
    headers
        .entry(HeaderName::from_static("content-security-policy"))
        .or_insert(HeaderValue::from_static(
            "default-src 'none'; frame-ancestors 'none'",
        ));
    response
}

#[cfg(test)]
mod tests;

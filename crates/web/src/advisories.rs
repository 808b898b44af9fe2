//! Public advisories: the authenticated lifecycle under `/api/v1/advisories` (draft,
//! approve, issue, cancel, draft from an alert, and `/api/v1/incidents/{id}/advisory`:
//! draft from an incident) and the public CAP feed under `/cap/`
//! (Atom index, each issued document, its detached Ed25519 signature, the public key).
//!
//! The rules (who may approve, what issuing does) live in the [`Advisories`] implementation
//! that `app` provides; this module maps HTTP to it. The public routes show only issued
//! documents, byte for byte as signed, and answer the same 404 for a draft as for nothing.

use std::sync::Arc;

use async_trait::async_trait;
use axum::Extension;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use model::{
    Advisory, AdvisoryContent, AdvisoryMsgType, AdvisoryOrigin, AdvisoryState, AdvisoryStatus,
};
use serde::Deserialize;
use store::AdvisoryQuery;

use crate::Shared;
use crate::auth::Principal;
use crate::error::{ApiError, Json, Path, Query};
use crate::platform::PlatformError;

type AppState = State<Arc<Shared>>;

/// The advisory operations the platform provides.
#[async_trait]
pub trait Advisories: Send + Sync + 'static {
    /// Stores a new draft (`Alert` or `Update`); the content is checked against CAP now, so
    /// a draft that could not be issued is refused at once.
    async fn draft(&self, by: &Principal, request: DraftRequest)
    -> Result<Advisory, PlatformError>;
    /// Drafts an advisory from a detection alert (for example "the sirens you heard were
    /// not a real warning" from an uncommanded siren).
    async fn draft_from_alert(
        &self,
        by: &Principal,
        alert_id: &str,
        request: FromAlertRequest,
    ) -> Result<Advisory, PlatformError>;
    /// Drafts an advisory from an incident, with the template that fits what the incident
    /// is about and an area around its devices; the draft's origin names the incident.
    async fn draft_from_incident(
        &self,
        by: &Principal,
        incident_id: &str,
        request: FromIncidentRequest,
    ) -> Result<Advisory, PlatformError>;
    /// Drafts an advisory from a CAP 1.2 document (from a partner agency, or written by
    /// hand); a malformed or unsupported document is refused with the reason.
    async fn import(&self, by: &Principal, document: &str) -> Result<Advisory, PlatformError>;
    /// Approves a draft; the approver must be another person than the drafter.
    async fn approve(&self, by: &Principal, id: &str) -> Result<Advisory, PlatformError>;
    /// Issues a draft or approved advisory: renders, signs and publishes its CAP document
    /// and prepares its cancel. `Actual` warnings need an approval first.
    async fn issue(&self, by: &Principal, id: &str) -> Result<Advisory, PlatformError>;
    /// Issues the prepared cancel of an issued advisory; returns the cancel.
    async fn cancel(
        &self,
        by: &Principal,
        id: &str,
        note: Option<String>,
    ) -> Result<Advisory, PlatformError>;
    /// The Atom index of issued CAP documents.
    async fn feed(&self) -> Result<String, PlatformError>;
    /// The key that verifies the signatures, as a PEM `PUBLIC KEY` (SubjectPublicKeyInfo).
    fn public_key_pem(&self) -> String;
}

/// The body of `POST /api/v1/advisories`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DraftRequest {
    pub status: AdvisoryStatus,
    /// `Alert` (default) or `Update` (then `references` names the issued advisory it
    /// replaces). Cancels are made with `POST /api/v1/advisories/{id}/cancel`.
    #[serde(default)]
    pub msg_type: Option<AdvisoryMsgType>,
    #[serde(default)]
    pub references: Option<String>,
    pub content: AdvisoryContent,
    /// What the advisory responds to (an alert or an incident id).
    #[serde(default)]
    pub origin: Option<AdvisoryOrigin>,
}

/// The body of `POST /api/v1/advisories/from-alert/{id}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FromAlertRequest {
    pub status: AdvisoryStatus,
    /// Radius of the affected area around the device, in kilometres (default 2).
    #[serde(default)]
    pub radius_km: Option<f64>,
}

/// The body of `POST /api/v1/incidents/{id}/advisory`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FromIncidentRequest {
    /// Actual, Exercise or Test.
    pub status: AdvisoryStatus,
    /// A template id; by default the first template that fits the incident.
    #[serde(default)]
    pub template: Option<String>,
    /// How far around each device the area reaches, in kilometres (default 2).
    #[serde(default)]
    pub radius_km: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListParams {
    #[serde(default)]
    state: Option<AdvisoryState>,
    #[serde(default)]
    limit: Option<usize>,
    /// The id of the last advisory of the previous page.
    #[serde(default)]
    after: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CancelBody {
    #[serde(default)]
    note: Option<String>,
}

const MAX_ID_LEN: usize = 128;

fn check_id(id: &str) -> Result<(), ApiError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::not_found("no such advisory"))
    }
}

pub(crate) async fn list(
    State(s): AppState,
    Query(params): Query<ListParams>,
) -> Result<axum::Json<Vec<Advisory>>, ApiError> {
    let limit = params.limit.unwrap_or(crate::api::DEFAULT_LIMIT);
    if limit == 0 || limit > crate::api::MAX_LIMIT {
        return Err(ApiError::invalid(format!(
            "limit must be 1..={}",
            crate::api::MAX_LIMIT
        )));
    }
    // Keyset paging: the next page starts after the last advisory the client saw, so pages
    // stay stable while new drafts arrive and no server state is kept.
    let after = match params.after {
        Some(id) => {
            check_id(&id)?;
            let last = s.api.store.get_advisory(&id).await?.ok_or_else(|| {
                ApiError::invalid(format!("after: no advisory {id} to page after"))
            })?;
            Some((last.drafted_at, last.id))
        }
        None => None,
    };
    let list = s
        .api
        .store
        .list_advisories(&AdvisoryQuery {
            state: params.state,
            issued: false,
            limit,
            after,
        })
        .await?;
    Ok(axum::Json(list))
}

pub(crate) async fn get(
    State(s): AppState,
    Path(id): Path<String>,
) -> Result<axum::Json<Advisory>, ApiError> {
    check_id(&id)?;
    let advisory = s
        .api
        .store
        .get_advisory(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no advisory {id}")))?;
    Ok(axum::Json(advisory))
}

pub(crate) async fn draft(
    State(s): AppState,
    Extension(by): Extension<Principal>,
    Json(request): Json<DraftRequest>,
) -> Result<Response, ApiError> {
    let advisory = s.api.advisories.draft(&by, request).await?;
    Ok((StatusCode::CREATED, axum::Json(advisory)).into_response())
}

pub(crate) async fn draft_from_alert(
    State(s): AppState,
    Extension(by): Extension<Principal>,
    Path(alert_id): Path<String>,
    Json(request): Json<FromAlertRequest>,
) -> Result<Response, ApiError> {
    let advisory = s
        .api
        .advisories
        .draft_from_alert(&by, &alert_id, request)
        .await?;
    Ok((StatusCode::CREATED, axum::Json(advisory)).into_response())
}

pub(crate) async fn draft_from_incident(
    State(s): AppState,
    Extension(by): Extension<Principal>,
    Path(incident_id): Path<String>,
    Json(request): Json<FromIncidentRequest>,
) -> Result<Response, ApiError> {
    if incident_id.is_empty() || incident_id.len() > MAX_ID_LEN {
        return Err(ApiError::not_found(format!("no incident {incident_id}")));
    }
    let advisory = s
        .api
        .advisories
        .draft_from_incident(&by, &incident_id, request)
        .await?;
    // The incident's timeline names the advisory, as the advisory's origin names the
    // incident. The draft stands even if the note cannot be added (a closed incident).
    let note = format!(
        "public advisory {} drafted from this incident ({:?}: {})",
        advisory.id, advisory.status, advisory.content.event
    );
    if let Err(err) = s
        .api
        .platform
        .update_incident(
            &model::IncidentId(incident_id.clone()),
            crate::IncidentRequest::Note(note),
            &by,
        )
        .await
    {
        tracing::warn!(incident_id = %incident_id, advisory = %advisory.id, error = %err, "the incident's timeline does not name its advisory");
    }
    Ok((StatusCode::CREATED, axum::Json(advisory)).into_response())
}

pub(crate) async fn import(
    State(s): AppState,
    Extension(by): Extension<Principal>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if !matches!(
        essence,
        "application/cap+xml" | "application/xml" | "text/xml"
    ) {
        return Err(ApiError::UnsupportedMediaType(
            "expected content-type application/cap+xml".into(),
        ));
    }
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::invalid("the CAP document is not UTF-8"))?;
    let advisory = s.api.advisories.import(&by, text).await?;
    Ok((StatusCode::CREATED, axum::Json(advisory)).into_response())
}

pub(crate) async fn approve(
    State(s): AppState,
    Extension(by): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<axum::Json<Advisory>, ApiError> {
    check_id(&id)?;
    Ok(axum::Json(s.api.advisories.approve(&by, &id).await?))
}

pub(crate) async fn issue(
    State(s): AppState,
    Extension(by): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<axum::Json<Advisory>, ApiError> {
    check_id(&id)?;
    Ok(axum::Json(s.api.advisories.issue(&by, &id).await?))
}

pub(crate) async fn cancel(
    State(s): AppState,
    Extension(by): Extension<Principal>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<axum::Json<Advisory>, ApiError> {
    check_id(&id)?;
    let note = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        serde_json::from_slice::<CancelBody>(&body)
            .map_err(|e| ApiError::invalid(format!("invalid request body: {e}")))?
            .note
    };
    if note.as_ref().is_some_and(|n| n.chars().count() > 1000) {
        return Err(ApiError::invalid("note is longer than 1000 characters"));
    }
    Ok(axum::Json(s.api.advisories.cancel(&by, &id, note).await?))
}

// --- the public CAP feed ---

pub(crate) async fn feed(State(s): AppState) -> Result<Response, ApiError> {
    let xml = s.api.advisories.feed().await?;
    Ok((
        [(header::CONTENT_TYPE, "application/atom+xml; charset=utf-8")],
        xml,
    )
        .into_response())
}

pub(crate) async fn public_key(State(s): AppState) -> Response {
    (
        [(header::CONTENT_TYPE, "application/x-pem-file")],
        s.api.advisories.public_key_pem(),
    )
        .into_response()
}

/// An issued advisory, or the one 404 for anything else (drafts are not revealed).
async fn issued(s: &Shared, id: &str) -> Result<Advisory, ApiError> {
    let missing = || ApiError::not_found("no such CAP document");
    check_id(id).map_err(|_| missing())?;
    let advisory = s.api.store.get_advisory(id).await?.ok_or_else(missing)?;
    if !advisory.state.was_issued() || advisory.document.is_none() {
        return Err(missing());
    }
    Ok(advisory)
}

pub(crate) async fn document(
    State(s): AppState,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let advisory = issued(&s, &id).await?;
    let document = advisory.document.unwrap_or_default();
    Ok((
        [(header::CONTENT_TYPE, "application/cap+xml; charset=utf-8")],
        document,
    )
        .into_response())
}

pub(crate) async fn signature(
    State(s): AppState,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let advisory = issued(&s, &id).await?;
    let raw = advisory
        .signature
        .as_deref()
        .and_then(|sig| base64::engine::general_purpose::STANDARD.decode(sig).ok())
        .ok_or_else(|| ApiError::internal(format!("advisory {id} has no usable signature")))?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], raw).into_response())
}

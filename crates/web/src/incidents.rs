//! `/api/v1/incidents`: list (filters, paging), show (with timeline), change state or owner,
//! add notes, ask for response actions and approve or reject them. Reads come from the
//! store; changes go through [`Platform::update_incident`](crate::Platform::update_incident)
//! because the running correlator owns open incidents.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use model::{
    ActionKind, ActionStatus, DeviceId, Incident, IncidentDurations, IncidentId, IncidentState,
    IncidentTimes, Severity, Timestamp,
};
use serde::{Deserialize, Serialize};
use store::IncidentQuery;

use crate::Shared;
use crate::auth::{Principal, Role};
use crate::error::{ApiError, Json, Path, Query};

type AppState = State<Arc<Shared>>;

/// A change to an incident, as the API asks the platform for it.
#[derive(Debug, Clone, PartialEq)]
pub enum IncidentRequest {
    Transition(IncidentState),
    Assign(String),
    Note(String),
    /// The TLP level of what the incident shares once confirmed.
    SetTlp(model::Tlp),
    /// A response action; `execute_now` when the caller may act without approval
    /// (supervisors and admins), else it waits for a supervisor.
    Action {
        kind: ActionKind,
        device_id: Option<DeviceId>,
        execute_now: bool,
        /// The limit of a `rate_limit` action (default: `RateLimitParams::default()`).
        rate_limit: Option<model::RateLimitParams>,
    },
    Decide {
        action_id: String,
        approve: bool,
    },
}

/// What a change produced.
#[derive(Debug, Clone, PartialEq)]
pub struct IncidentUpdate {
    pub incident: Incident,
    /// A rotated device secret, shown once in this reply and never stored in clear.
    pub secret: Option<String>,
}

/// An incident with its response times.
#[derive(Serialize)]
struct IncidentView<'a> {
    #[serde(flatten)]
    incident: &'a Incident,
    durations: IncidentDurations,
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
}

/// An incident in a list: no timeline, alert and action counts.
#[derive(Serialize)]
struct IncidentSummary<'a> {
    id: &'a IncidentId,
    title: &'a str,
    state: IncidentState,
    severity: Severity,
    tlp: model::Tlp,
    owner: Option<&'a str>,
    devices: &'a [DeviceId],
    zones: &'a [String],
    sources: &'a [String],
    indicators: &'a [String],
    alerts: usize,
    pending_actions: usize,
    times: &'a IncidentTimes,
    durations: IncidentDurations,
    created_at: Timestamp,
    updated_at: Timestamp,
}

impl<'a> IncidentSummary<'a> {
    fn new(i: &'a Incident) -> IncidentSummary<'a> {
        IncidentSummary {
            id: &i.id,
            title: &i.title,
            state: i.state,
            severity: i.severity,
            tlp: i.tlp,
            owner: i.owner.as_deref(),
            devices: &i.devices,
            zones: &i.zones,
            sources: &i.sources,
            indicators: &i.indicators,
            alerts: i.alerts.len(),
            pending_actions: i
                .actions
                .iter()
                .filter(|a| a.status == ActionStatus::Pending)
                .count(),
            times: &i.times,
            durations: i.durations(),
            created_at: i.created_at,
            updated_at: i.updated_at,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListParams {
    state: Option<String>,
    /// The least severity listed.
    severity: Option<String>,
    owner: Option<String>,
    device_id: Option<String>,
    /// The `next` of the previous page.
    before: Option<String>,
    limit: Option<String>,
}

fn present(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty())
}

fn parse_severity(text: &str) -> Result<Severity, ApiError> {
    Ok(match text {
        "info" => Severity::Info,
        "low" => Severity::Low,
        "medium" => Severity::Medium,
        "high" => Severity::High,
        "critical" => Severity::Critical,
        _ => {
            return Err(ApiError::invalid(format!(
                "unknown severity {text:?} (expected one of: info, low, medium, high, critical)"
            )));
        }
    })
}

fn parse_incident_id(text: &str) -> Result<IncidentId, ApiError> {
    let id = IncidentId(text.to_owned());
    if id.seq().is_none() || text.len() > 32 {
        return Err(ApiError::invalid(format!(
            "incident id must look like INC-000042, not {text:?}"
        )));
    }
    Ok(id)
}

#[derive(Serialize)]
struct Page<'a> {
    items: Vec<IncidentSummary<'a>>,
    /// Pass as `before` for the next page; `null` on the last page.
    next: Option<&'a IncidentId>,
}

pub(crate) async fn list(
    State(s): AppState,
    Query(p): Query<ListParams>,
) -> Result<Response, ApiError> {
    let limit = crate::api::parse_limit(p.limit)?;
    let owner = present(p.owner);
    if owner.as_ref().is_some_and(|o| o.chars().count() > 256) {
        return Err(ApiError::invalid("owner is longer than 256 characters"));
    }
    let query = IncidentQuery {
        state: present(p.state)
            .map(|t| t.parse::<IncidentState>())
            .transpose()
            .map_err(ApiError::invalid)?,
        min_severity: present(p.severity)
            .map(|t| parse_severity(&t))
            .transpose()?,
        owner,
        device_id: present(p.device_id)
            .map(|t| DeviceId::new(t).map_err(|e| ApiError::invalid(format!("device_id: {e}"))))
            .transpose()?,
        before_seq: present(p.before)
            .map(|t| parse_incident_id(&t).map(|id| id.seq().unwrap_or(0)))
            .transpose()?,
        limit: limit + 1,
    };
    let mut incidents = s.api.store.list_incidents(&query).await?;
    let more = incidents.len() > limit;
    incidents.truncate(limit);
    let page = Page {
        items: incidents.iter().map(IncidentSummary::new).collect(),
        next: if more {
            incidents.last().map(|i| &i.id)
        } else {
            None
        },
    };
    Ok(axum::Json(page).into_response())
}

pub(crate) async fn show(State(s): AppState, Path(id): Path<String>) -> Result<Response, ApiError> {
    let id = parse_incident_id(&id)?;
    let incident = s
        .api
        .store
        .get_incident(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("incident {id} not found")))?;
    Ok(axum::Json(IncidentView {
        durations: incident.durations(),
        incident: &incident,
        secret: None,
    })
    .into_response())
}

async fn update(
    s: &Shared,
    id: &str,
    requests: Vec<IncidentRequest>,
    principal: &Principal,
    status: StatusCode,
) -> Result<Response, ApiError> {
    let id = parse_incident_id(id)?;
    let mut last = None;
    for request in requests {
        last = Some(
            s.api
                .platform
                .update_incident(&id, request, principal)
                .await?,
        );
    }
    let update = last.ok_or_else(|| ApiError::invalid("nothing to change"))?;
    Ok((
        status,
        axum::Json(IncidentView {
            durations: update.incident.durations(),
            incident: &update.incident,
            secret: update.secret,
        }),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PatchRequest {
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    owner: Option<String>,
    /// clear, green, amber, amber+strict or red.
    #[serde(default)]
    tlp: Option<String>,
}

pub(crate) async fn patch(
    State(s): AppState,
    axum::Extension(principal): axum::Extension<Principal>,
    Path(id): Path<String>,
    Json(body): Json<PatchRequest>,
) -> Result<Response, ApiError> {
    let mut requests = Vec::new();
    if let Some(owner) = body.owner {
        requests.push(IncidentRequest::Assign(owner));
    }
    // The TLP first, so a confirmation in the same request shares with it.
    if let Some(tlp) = body.tlp {
        let tlp = tlp.parse::<model::Tlp>().map_err(ApiError::invalid)?;
        requests.push(IncidentRequest::SetTlp(tlp));
    }
    if let Some(state) = body.state {
        let state = state.parse::<IncidentState>().map_err(ApiError::invalid)?;
        requests.push(IncidentRequest::Transition(state));
    }
    if requests.is_empty() {
        return Err(ApiError::invalid("give state, owner, tlp or a combination"));
    }
    update(&s, &id, requests, &principal, StatusCode::OK).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NoteRequest {
    text: String,
}

pub(crate) async fn add_note(
    State(s): AppState,
    axum::Extension(principal): axum::Extension<Principal>,
    Path(id): Path<String>,
    Json(body): Json<NoteRequest>,
) -> Result<Response, ApiError> {
    update(
        &s,
        &id,
        vec![IncidentRequest::Note(body.text)],
        &principal,
        StatusCode::CREATED,
    )
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ActionRequest {
    action: String,
    /// Default: the incident's first device.
    #[serde(default)]
    device_id: Option<String>,
    /// For `rate_limit`: `{"messages_per_s", "burst", "duration_s"}`.
    #[serde(default)]
    rate_limit: Option<model::RateLimitParams>,
}

pub(crate) async fn request_action(
    State(s): AppState,
    axum::Extension(principal): axum::Extension<Principal>,
    Path(id): Path<String>,
    Json(body): Json<ActionRequest>,
) -> Result<Response, ApiError> {
    let kind = body
        .action
        .parse::<ActionKind>()
        .map_err(ApiError::invalid)?;
    let device_id = body
        .device_id
        .map(|d| DeviceId::new(d).map_err(|e| ApiError::invalid(format!("device_id: {e}"))))
        .transpose()?;
    if let Some(params) = &body.rate_limit {
        if kind != ActionKind::RateLimit {
            return Err(ApiError::invalid(format!(
                "rate_limit parameters belong to action rate_limit, not {kind}"
            )));
        }
        params
            .validate()
            .map_err(|e| ApiError::invalid(format!("rate_limit: {e}")))?;
    }
    let request = IncidentRequest::Action {
        kind,
        device_id,
        execute_now: principal.role >= Role::Supervisor,
        rate_limit: body.rate_limit,
    };
    update(&s, &id, vec![request], &principal, StatusCode::CREATED).await
}

pub(crate) async fn approve_action(
    State(s): AppState,
    axum::Extension(principal): axum::Extension<Principal>,
    Path((id, action_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    decide(&s, &id, action_id, true, &principal).await
}

pub(crate) async fn reject_action(
    State(s): AppState,
    axum::Extension(principal): axum::Extension<Principal>,
    Path((id, action_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    decide(&s, &id, action_id, false, &principal).await
}

async fn decide(
    s: &Shared,
    id: &str,
    action_id: String,
    approve: bool,
    principal: &Principal,
) -> Result<Response, ApiError> {
    if action_id.is_empty() || action_id.len() > 16 {
        return Err(ApiError::invalid("action id must look like A1"));
    }
    update(
        s,
        id,
        vec![IncidentRequest::Decide { action_id, approve }],
        principal,
        StatusCode::OK,
    )
    .await
}

/// `GET /api/v1/integrations/status`: what the SIEM forwarders delivered and could not.
pub(crate) async fn integrations_status(State(s): AppState) -> Result<Response, ApiError> {
    let status = s.api.platform.integrations_status().ok_or_else(|| {
        ApiError::new(
            model::ErrorCode::Unavailable,
            "integrations are not run by this platform",
        )
    })?;
    Ok(axum::Json(status).into_response())
}

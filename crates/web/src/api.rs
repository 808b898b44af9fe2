//! Route handlers and the JSON views they answer with.
//!
//! Devices leave through [`DeviceView`], which drops secret hashes (`{"type": "secret"}`) and
//! keeps certificate fingerprints; nothing else in the API carries credentials.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use model::{
    Alert, AlertId, Credential, Device, DeviceClass, DeviceId, DeviceStatus, Event, Location,
    Sector, Timestamp,
};
use serde::{Deserialize, Serialize};
use store::{AlertQuery, DeviceQuery, EventQuery};

use crate::error::{ApiError, Json, Path, Query};
use crate::platform::{FlowReport, ImportFormat, ImportReport, NewDevice, Status};
use crate::{OPENAPI_JSON, Shared};

type AppState = State<Arc<Shared>>;

/// Page size when the request names none.
pub(crate) const DEFAULT_LIMIT: usize = 100;
/// The largest page a request may ask for.
pub(crate) const MAX_LIMIT: usize = 1000;
const MAX_REASON_LEN: usize = 1000;
const MAX_FILTER_LEN: usize = 256;

pub(crate) async fn healthz() -> &'static str {
    "ok"
}

pub(crate) async fn readyz(State(s): AppState) -> Response {
    if !s.api.ready.load(Ordering::Acquire) {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response();
    }
    let down = s.api.platform.unavailable();
    if down.is_empty() {
        (StatusCode::OK, "ready").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "5")],
            axum::Json(serde_json::json!({"ready": false, "unavailable": down})),
        )
            .into_response()
    }
}

pub(crate) async fn metrics(State(s): AppState) -> Response {
    let text = (s.api.metrics)();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

pub(crate) async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON).into_response()
}

pub(crate) async fn status(State(s): AppState) -> axum::Json<Status> {
    axum::Json(s.api.platform.status())
}

/// A device as the API shows it: credentials without secret hashes.
#[derive(Debug, Serialize)]
pub(crate) struct DeviceView<'a> {
    id: &'a DeviceId,
    sector: Sector,
    class: DeviceClass,
    zone: &'a str,
    owner: &'a str,
    vendor: &'a str,
    model: &'a str,
    firmware: &'a str,
    location: Option<Location>,
    credentials: Vec<CredentialView<'a>>,
    status: DeviceStatus,
    created_at: Timestamp,
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum CredentialView<'a> {
    Secret,
    Certificate { sha256: &'a str },
}

impl<'a> DeviceView<'a> {
    pub(crate) fn new(d: &'a Device) -> DeviceView<'a> {
        DeviceView {
            id: &d.id,
            sector: d.sector,
            class: d.class,
            zone: &d.zone,
            owner: &d.owner,
            vendor: &d.vendor,
            model: &d.model,
            firmware: &d.firmware,
            location: d.location,
            credentials: d
                .credentials
                .iter()
                .map(|c| match c {
                    Credential::Secret { .. } => CredentialView::Secret,
                    Credential::Certificate { sha256 } => CredentialView::Certificate { sha256 },
                })
                .collect(),
            status: d.status,
            created_at: d.created_at,
        }
    }
}

/// Treats `?x=` like an absent parameter.
pub(crate) fn present(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty())
}

pub(crate) fn parse_limit(value: Option<String>) -> Result<usize, ApiError> {
    let Some(text) = present(value) else {
        return Ok(DEFAULT_LIMIT);
    };
    match text.parse::<usize>() {
        Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        _ => Err(ApiError::invalid(format!(
            "limit must be a whole number from 1 to {MAX_LIMIT}, not {text:?}"
        ))),
    }
}

pub(crate) fn parse_device_id(name: &str, value: &str) -> Result<DeviceId, ApiError> {
    DeviceId::new(value).map_err(|e| ApiError::invalid(format!("{name}: {e}")))
}

pub(crate) fn parse_ts(name: &str, value: Option<String>) -> Result<Option<Timestamp>, ApiError> {
    present(value)
        .map(|text| {
            Timestamp::parse_rfc3339(&text).ok_or_else(|| {
                ApiError::invalid(format!(
                    "{name} must be an rfc 3339 timestamp, not {text:?}"
                ))
            })
        })
        .transpose()
}

pub(crate) fn parse_filter(name: &str, value: Option<String>) -> Result<Option<String>, ApiError> {
    match present(value) {
        Some(text) if text.chars().count() > MAX_FILTER_LEN => Err(ApiError::invalid(format!(
            "{name} is longer than {MAX_FILTER_LEN} characters"
        ))),
        other => Ok(other),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeviceParams {
    sector: Option<String>,
    class: Option<String>,
    zone: Option<String>,
    status: Option<String>,
    after: Option<String>,
    limit: Option<String>,
}

#[derive(Serialize)]
struct DevicePage<'a> {
    items: Vec<DeviceView<'a>>,
    /// The id to pass as `after` for the next page; `null` on the last page.
    next: Option<&'a DeviceId>,
}

pub(crate) async fn list_devices(
    State(s): AppState,
    Query(p): Query<DeviceParams>,
) -> Result<Response, ApiError> {
    let limit = parse_limit(p.limit)?;
    let query = DeviceQuery {
        sector: present(p.sector)
            .map(|t| t.parse::<Sector>())
            .transpose()
            .map_err(ApiError::invalid)?,
        class: present(p.class)
            .map(|t| t.parse::<DeviceClass>())
            .transpose()
            .map_err(ApiError::invalid)?,
        zone: parse_filter("zone", p.zone)?,
        status: present(p.status)
            .map(|t| match t.as_str() {
                "active" => Ok(DeviceStatus::Active),
                "revoked" => Ok(DeviceStatus::Revoked),
                _ => Err(ApiError::invalid(format!(
                    "unknown device status {t:?} (expected one of: active, revoked)"
                ))),
            })
            .transpose()?,
        after: present(p.after)
            .map(|t| parse_device_id("after", &t))
            .transpose()?,
        // One more than asked, to know whether there is a next page.
        limit: limit + 1,
    };
    let mut devices = s.api.store.list_devices(&query).await?;
    let more = devices.len() > limit;
    devices.truncate(limit);
    let page = DevicePage {
        items: devices.iter().map(DeviceView::new).collect(),
        next: if more {
            devices.last().map(|d| &d.id)
        } else {
            None
        },
    };
    Ok(axum::Json(page).into_response())
}

#[derive(Serialize)]
struct Created<'a> {
    device: DeviceView<'a>,
    /// The generated secret, shown only in this response.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
}

pub(crate) async fn create_device(
    State(s): AppState,
    Json(request): Json<NewDevice>,
) -> Result<Response, ApiError> {
    request.validate().map_err(ApiError::invalid)?;
    let (device, secret) = s.api.platform.add_device(request).await?;
    let body = Created {
        device: DeviceView::new(&device),
        secret,
    };
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
}

pub(crate) async fn get_device(
    State(s): AppState,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_device_id("device id", &id)?;
    let device = s
        .api
        .store
        .get_device(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("device {id} not found")))?;
    Ok(axum::Json(DeviceView::new(&device)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RevokeRequest {
    reason: String,
}

pub(crate) async fn revoke_device(
    State(s): AppState,
    Path(id): Path<String>,
    Json(body): Json<RevokeRequest>,
) -> Result<Response, ApiError> {
    let id = parse_device_id("device id", &id)?;
    let reason = body.reason.trim();
    if reason.is_empty() {
        return Err(ApiError::invalid("reason must not be empty"));
    }
    if reason.chars().count() > MAX_REASON_LEN {
        return Err(ApiError::invalid(format!(
            "reason is longer than {MAX_REASON_LEN} characters"
        )));
    }
    let device = s.api.platform.revoke_device(&id, reason).await?;
    Ok(axum::Json(DeviceView::new(&device)).into_response())
}

pub(crate) async fn import_devices(State(s): AppState, req: Request) -> Result<Response, ApiError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    let format = match content_type.as_str() {
        "application/json" => ImportFormat::Json,
        "text/csv" => ImportFormat::Csv,
        _ => {
            return Err(ApiError::UnsupportedMediaType(
                "import needs content-type application/json or text/csv".into(),
            ));
        }
    };
    let body = Bytes::from_request(req, &()).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge("import body is too large".into())
        } else {
            ApiError::invalid("could not read the request body")
        }
    })?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid("import body is empty"));
    }
    let report: ImportReport = s.api.platform.import_devices(&body, format).await?;
    Ok(axum::Json(report).into_response())
}

pub(crate) async fn ingest_flows(State(s): AppState, req: Request) -> Result<Response, ApiError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    if !matches!(
        content_type.as_str(),
        "application/x-ndjson" | "application/jsonl" | "application/json"
    ) {
        return Err(ApiError::UnsupportedMediaType(
            "flows need content-type application/x-ndjson, application/jsonl or application/json"
                .into(),
        ));
    }
    let body = Bytes::from_request(req, &()).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge("flow body is too large".into())
        } else {
            ApiError::invalid("could not read the request body")
        }
    })?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid("flow body is empty"));
    }
    let report: FlowReport = s.api.platform.ingest_flows(&body).await?;
    Ok(axum::Json(report).into_response())
}

#[derive(Serialize)]
pub(crate) struct Items<T> {
    pub(crate) items: Vec<T>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AlertParams {
    device_id: Option<String>,
    rule: Option<String>,
    since: Option<String>,
    before: Option<String>,
    limit: Option<String>,
}

pub(crate) async fn list_alerts(
    State(s): AppState,
    Query(p): Query<AlertParams>,
) -> Result<axum::Json<Items<Alert>>, ApiError> {
    let query = AlertQuery {
        device_id: present(p.device_id)
            .map(|t| parse_device_id("device_id", &t))
            .transpose()?,
        rule: parse_filter("rule", p.rule)?,
        since: parse_ts("since", p.since)?,
        before: parse_ts("before", p.before)?,
        limit: parse_limit(p.limit)?,
    };
    let items = s.api.store.list_alerts(&query).await?;
    Ok(axum::Json(Items { items }))
}

pub(crate) async fn get_alert(
    State(s): AppState,
    Path(id): Path<String>,
) -> Result<axum::Json<Alert>, ApiError> {
    if id.is_empty() || id.chars().count() > MAX_FILTER_LEN {
        return Err(ApiError::invalid(format!(
            "alert id must be 1 to {MAX_FILTER_LEN} characters"
        )));
    }
    let alert = s
        .api
        .store
        .get_alert(&AlertId(id))
        .await?
        .ok_or_else(|| ApiError::not_found("alert not found"))?;
    Ok(axum::Json(alert))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventParams {
    device_id: Option<String>,
    kind: Option<String>,
    since: Option<String>,
    before: Option<String>,
    limit: Option<String>,
}

const EVENT_KINDS: [&str; 6] = [
    "telemetry",
    "state",
    "security",
    "command",
    "flow",
    "report",
];

pub(crate) async fn list_events(
    State(s): AppState,
    Query(p): Query<EventParams>,
) -> Result<axum::Json<Items<Event>>, ApiError> {
    let kind = present(p.kind);
    if let Some(kind) = &kind
        && !EVENT_KINDS.contains(&kind.as_str())
    {
        return Err(ApiError::invalid(format!(
            "unknown event kind {kind:?} (expected one of: {})",
            EVENT_KINDS.join(", ")
        )));
    }
    let query = EventQuery {
        device_id: present(p.device_id)
            .map(|t| parse_device_id("device_id", &t))
            .transpose()?,
        kind,
        since: parse_ts("since", p.since)?,
        before: parse_ts("before", p.before)?,
        limit: parse_limit(p.limit)?,
    };
    let items = s.api.store.list_events(&query).await?;
    Ok(axum::Json(Items { items }))
}

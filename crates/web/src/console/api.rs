//! The console's endpoints under `/api/v1/console/`: sign-in with a cookie, the map
//! summary, the alert queue with acknowledgements, a device's page and threat sharing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Extension;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use model::{Alert, AlertId, DeviceId, DeviceStatus, Sector, Severity, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use store::audit::{AuditEntry, CommandQuery};
use store::{AlertAck, AlertQuery, DeviceQuery, EventQuery};

use crate::Shared;
use crate::accounts::{self, LoginRequest, SESSION_TTL};
use crate::api::{DeviceView, parse_device_id, parse_filter, parse_limit, parse_ts, present};
use crate::auth::{Principal, token_sha256};
use crate::console::session::{self, ServedOverTls};
use crate::error::{ApiError, Json, Path, Query};

type AppState = State<Arc<Shared>>;

/// How long a map summary is reused (it is a full pass over the registry).
const MAP_TTL: Duration = Duration::from_secs(5);
/// How far back the map looks for a device's alerts.
const MAP_ALERT_WINDOW_MS: i64 = 24 * 3600 * 1000;
const MAX_NOTE_LEN: usize = 500;

/// The zone plan the map draws: zone names and the conduits between them, as the
/// detection config has them (`[[detect.zones]]`, `[[detect.conduits]]`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ZonePlan {
    pub zones: Vec<String>,
    pub conduits: Vec<ConduitLink>,
}

/// One allowed flow between zones (`*` any zone, `internet` outside every zone).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ConduitLink {
    pub name: String,
    pub from: String,
    pub to: String,
    pub protocol: String,
    pub ports: Vec<u16>,
}

fn tls(req_extensions: &axum::http::Extensions) -> bool {
    req_extensions.get::<ServedOverTls>().is_some()
}

#[derive(Serialize)]
struct SessionView {
    user: String,
    role: crate::Role,
    /// The token to send as `X-CSRF-Token` with every request that changes something;
    /// absent when the request was made with a bearer token.
    #[serde(skip_serializing_if = "Option::is_none")]
    csrf: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<Timestamp>,
}

/// `POST /api/v1/console/login`: the password check of `/api/v1/auth/login`, answered
/// with the session in an `HttpOnly` cookie instead of a token in the body.
pub(crate) async fn login(State(s): AppState, req: Request) -> Result<Response, ApiError> {
    let source = accounts::source_of(&req);
    let over_tls = tls(req.extensions());
    let Json(body) = Json::<LoginRequest>::from_request(req, &()).await?;
    let reply = accounts::open_session(&s, &source, body).await?;
    let view = SessionView {
        user: reply.user,
        role: reply.role,
        csrf: Some(session::csrf_of(&reply.token)),
        expires_at: Some(reply.expires_at),
    };
    let cookie = session::set_cookie(&reply.token, SESSION_TTL.as_secs(), over_tls);
    Ok(([(header::SET_COOKIE, cookie)], axum::Json(view)).into_response())
}

/// `POST /api/v1/console/logout`: ends the cookie's session on the server and in the
/// browser.
pub(crate) async fn logout(
    State(s): AppState,
    Extension(principal): Extension<Principal>,
    req: Request,
) -> Result<Response, ApiError> {
    let over_tls = tls(req.extensions());
    let token = session::session_token(req.headers())
        .ok_or_else(|| ApiError::invalid("no console session on this request"))?;
    let sha256 = token_sha256(token);
    s.api.store.delete_user_token(&sha256).await?;
    s.tokens.remove(&sha256);
    s.tokens.remove(&format!("session:{sha256}"));
    tracing::info!(actor = %principal.name, "console logout");
    Ok((
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, session::clear_cookie(over_tls))],
    )
        .into_response())
}

/// `GET /api/v1/console/session`: who is signed in, and the session's CSRF token.
pub(crate) async fn current(
    State(s): AppState,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let token = if headers.contains_key(header::AUTHORIZATION) {
        None
    } else {
        session::session_token(&headers)
    };
    let expires_at = match token {
        Some(t) => s
            .api
            .store
            .find_user_token(&token_sha256(t))
            .await?
            .and_then(|t| t.expires_at),
        None => None,
    };
    Ok(axum::Json(SessionView {
        user: principal.name,
        role: principal.role,
        csrf: token.map(session::csrf_of),
        expires_at,
    })
    .into_response())
}

fn sector_name(sector: Sector) -> String {
    serde_json::to_value(sector)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn severity_rank(severity: Severity) -> u8 {
    match severity {
        Severity::Info => 1,
        Severity::Low => 2,
        Severity::Medium => 3,
        Severity::High => 4,
        Severity::Critical => 5,
    }
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

/// Interns strings into a column of small integers.
#[derive(Default)]
struct Dictionary {
    names: Vec<String>,
    index: HashMap<String, u32>,
}

impl Dictionary {
    fn of(&mut self, name: &str) -> u32 {
        if let Some(i) = self.index.get(name) {
            return *i;
        }
        let i = self.names.len() as u32;
        self.names.push(name.to_owned());
        self.index.insert(name.to_owned(), i);
        i
    }
}

/// Coordinates rounded to about a metre: smaller JSON, same picture.
fn round5(x: f64) -> f64 {
    (x * 1e5).round() / 1e5
}

/// Builds the map summary: every placed device as columns (ids, coordinates and small
/// integers into the sector, class, zone and status dictionaries, plus the highest
/// severity of its alerts in the last 24 hours), per-zone extents and counts, and the
/// conduit plan. Columns keep 50,000 devices at about 2 MB of JSON that the page turns
/// into typed arrays once.
async fn build_map(s: &Shared) -> Result<String, ApiError> {
    let since = Timestamp::now().saturating_add_ms(-MAP_ALERT_WINDOW_MS);
    let alerts = s
        .api
        .store
        .list_alerts(&AlertQuery {
            since: Some(since),
            limit: store::MAX_LIMIT,
            ..AlertQuery::default()
        })
        .await?;
    let mut worst: HashMap<String, u8> = HashMap::new();
    for alert in &alerts {
        if let Some(d) = &alert.device_id {
            let rank = severity_rank(alert.severity);
            let e = worst.entry(d.as_str().to_owned()).or_insert(0);
            *e = (*e).max(rank);
        }
    }
    let (mut sectors, mut classes, mut zones) = (
        Dictionary::default(),
        Dictionary::default(),
        Dictionary::default(),
    );
    for sector in Sector::ALL {
        sectors.of(&sector_name(sector));
    }
    let statuses = ["active", "revoked", "quarantined"];
    let (mut ids, mut lat, mut lon) = (Vec::new(), Vec::new(), Vec::new());
    let (mut sec, mut cls, mut zon, mut sta, mut alr) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // zone index -> [min_lat, min_lon, max_lat, max_lon, count, sum_lat, sum_lon]
    let mut extents: Vec<[f64; 7]> = Vec::new();
    let mut unplaced = 0u64;
    let mut totals_status = [0u64; 3];
    let mut after: Option<DeviceId> = None;
    loop {
        let page = s
            .api
            .store
            .list_devices(&DeviceQuery {
                after: after.clone(),
                limit: store::MAX_LIMIT,
                ..DeviceQuery::default()
            })
            .await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        let full = page.len() >= store::MAX_LIMIT;
        for d in &page {
            let status = match d.status {
                DeviceStatus::Active => 0u8,
                DeviceStatus::Revoked => 1,
                DeviceStatus::Quarantined => 2,
            };
            totals_status[status as usize] += 1;
            let Some(loc) = d
                .location
                .filter(|l| l.lat.is_finite() && l.lon.is_finite())
            else {
                unplaced += 1;
                continue;
            };
            let z = zones.of(&d.zone);
            if z as usize >= extents.len() {
                extents.push([f64::MAX, f64::MAX, f64::MIN, f64::MIN, 0.0, 0.0, 0.0]);
            }
            let e = &mut extents[z as usize];
            e[0] = e[0].min(loc.lat);
            e[1] = e[1].min(loc.lon);
            e[2] = e[2].max(loc.lat);
            e[3] = e[3].max(loc.lon);
            e[4] += 1.0;
            e[5] += loc.lat;
            e[6] += loc.lon;
            ids.push(d.id.as_str().to_owned());
            lat.push(round5(loc.lat));
            lon.push(round5(loc.lon));
            sec.push(sectors.of(&sector_name(d.sector)));
            cls.push(classes.of(d.class.as_str()));
            zon.push(z);
            sta.push(status);
            alr.push(worst.get(d.id.as_str()).copied().unwrap_or(0));
        }
        if !full {
            break;
        }
    }
    let plan = s.api.platform.zone_plan();
    let zone_list: Vec<Value> = zones
        .names
        .iter()
        .zip(&extents)
        .map(|(name, e)| {
            json!({
                "name": name,
                "devices": e[4] as u64,
                "bbox": [e[0], e[1], e[2], e[3]],
                "center": [e[5] / e[4], e[6] / e[4]],
            })
        })
        .collect();
    let body = json!({
        "generated_at": Timestamp::now(),
        "sectors": sectors.names,
        "classes": classes.names,
        "statuses": statuses,
        "zones": zone_list,
        "planned_zones": plan.zones,
        "conduits": plan.conduits,
        "unplaced": unplaced,
        "by_status": {
            "active": totals_status[0],
            "revoked": totals_status[1],
            "quarantined": totals_status[2],
        },
        "alerting": worst.len(),
        "devices": {
            "id": ids,
            "lat": lat,
            "lon": lon,
            "sector": sec,
            "class": cls,
            "zone": zon,
            "status": sta,
            "alert": alr,
        },
    });
    serde_json::to_string(&body).map_err(|e| ApiError::internal(e.to_string()))
}

/// `GET /api/v1/console/map`: the map summary (reused for a few seconds).
pub(crate) async fn map(State(s): AppState) -> Result<Response, ApiError> {
    let cached = {
        let slot = s.console.map.lock().unwrap_or_else(|e| e.into_inner());
        slot.as_ref()
            .filter(|(at, _)| at.elapsed() < MAP_TTL)
            .map(|(_, body)| body.clone())
    };
    let body = match cached {
        Some(body) => body,
        None => {
            let body = Arc::new(build_map(&s).await?);
            *s.console.map.lock().unwrap_or_else(|e| e.into_inner()) =
                Some((Instant::now(), body.clone()));
            body
        }
    };
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        body.as_str().to_owned(),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct QueueParams {
    rule: Option<String>,
    device_id: Option<String>,
    min_severity: Option<String>,
    /// `open` (not acknowledged), `acked`, or `all` (default).
    state: Option<String>,
    before: Option<String>,
    limit: Option<String>,
}

/// An alert with its acknowledgement, as the queue shows it.
pub(crate) fn alert_with_ack(alert: &Alert, ack: Option<&AlertAck>) -> Value {
    let mut v = serde_json::to_value(alert).unwrap_or(Value::Null);
    if let (Some(ack), Some(obj)) = (ack, v.as_object_mut()) {
        obj.insert(
            "ack".to_owned(),
            json!({ "by": ack.actor, "at": ack.at, "note": ack.note }),
        );
    }
    v
}

/// `GET /api/v1/console/alerts`: the alert queue, newest first, paged on the server
/// (`before` = the `next_before` of the previous page), filtered by rule, device, least
/// severity and acknowledgement.
pub(crate) async fn queue(
    State(s): AppState,
    Query(p): Query<QueueParams>,
) -> Result<Response, ApiError> {
    let limit = parse_limit(p.limit)?;
    let min = present(p.min_severity)
        .map(|t| parse_severity(&t))
        .transpose()?
        .map_or(0, severity_rank);
    let state = present(p.state).unwrap_or_else(|| "all".to_owned());
    if !matches!(state.as_str(), "all" | "open" | "acked") {
        return Err(ApiError::invalid(format!(
            "state must be one of: all, open, acked, not {state:?}"
        )));
    }
    let mut query = AlertQuery {
        device_id: present(p.device_id)
            .map(|t| parse_device_id("device_id", &t))
            .transpose()?,
        rule: parse_filter("rule", p.rule)?,
        since: None,
        before: parse_ts("before", p.before)?,
        limit: 500,
    };
    let mut items = Vec::new();
    let mut next_before = None;
    // Filters the store cannot apply are applied here, a bounded number of store pages
    // at a time; `next_before` says where the next call continues.
    for _ in 0..20 {
        let batch = s.api.store.list_alerts(&query).await?;
        let ids: Vec<String> = batch.iter().map(|a| a.id.0.clone()).collect();
        let acks = s.api.store.alert_acks(&ids).await?;
        let acks: HashMap<&str, &AlertAck> =
            acks.iter().map(|a| (a.alert_id.as_str(), a)).collect();
        let exhausted = batch.len() < query.limit;
        for alert in &batch {
            next_before = Some(alert.ts);
            let ack = acks.get(alert.id.0.as_str()).copied();
            let keep = severity_rank(alert.severity) >= min
                && match state.as_str() {
                    "open" => ack.is_none(),
                    "acked" => ack.is_some(),
                    _ => true,
                };
            if keep {
                items.push(alert_with_ack(alert, ack));
                if items.len() >= limit {
                    break;
                }
            }
        }
        if items.len() >= limit || exhausted {
            if exhausted && items.len() < limit {
                next_before = None;
            }
            break;
        }
        query.before = next_before;
    }
    Ok(axum::Json(json!({ "items": items, "next_before": next_before })).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AckBody {
    #[serde(default)]
    note: String,
}

/// `POST /api/v1/console/alerts/{id}/ack`: an analyst takes the alert into hand (once;
/// recorded in the audit log).
pub(crate) async fn ack(
    State(s): AppState,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    Json(body): Json<AckBody>,
) -> Result<Response, ApiError> {
    if id.is_empty() || id.len() > 256 {
        return Err(ApiError::invalid("alert id must be 1 to 256 bytes"));
    }
    let note = body.note.trim();
    if note.chars().count() > MAX_NOTE_LEN || note.chars().any(char::is_control) {
        return Err(ApiError::invalid(format!(
            "note must be at most {MAX_NOTE_LEN} characters without control characters"
        )));
    }
    let alert = s
        .api
        .store
        .get_alert(&AlertId(id.clone()))
        .await?
        .ok_or_else(|| ApiError::not_found("alert not found"))?;
    let ack = AlertAck {
        alert_id: alert.id.0.clone(),
        actor: principal.name.clone(),
        at: Timestamp::now(),
        note: note.to_owned(),
    };
    s.api.store.ack_alert(&ack).await?;
    let entry = AuditEntry {
        ts: ack.at,
        actor: principal.name.clone(),
        action: "alert.ack".to_owned(),
        subject: Some(alert.id.0.clone()),
        outcome: "ok".to_owned(),
        detail: json!({ "rule": alert.rule, "note": ack.note }),
    };
    s.api.store.append_audit(&[entry]).await?;
    Ok(axum::Json(alert_with_ack(&alert, Some(&ack))).into_response())
}

/// `GET /api/v1/console/devices/{id}`: a device's page in one call: identity and
/// posture, its recent telemetry, its alerts and the commands sent to it.
pub(crate) async fn device(
    State(s): AppState,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_device_id("id", &id)?;
    let device = s
        .api
        .store
        .get_device(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("device {id} not found")))?;
    let telemetry = s
        .api
        .store
        .list_events(&EventQuery {
            device_id: Some(id.clone()),
            kind: Some("telemetry".to_owned()),
            limit: 500,
            ..EventQuery::default()
        })
        .await?;
    let last_event = s
        .api
        .store
        .list_events(&EventQuery {
            device_id: Some(id.clone()),
            limit: 1,
            ..EventQuery::default()
        })
        .await?;
    let alerts = s
        .api
        .store
        .list_alerts(&AlertQuery {
            device_id: Some(id.clone()),
            limit: 100,
            ..AlertQuery::default()
        })
        .await?;
    let ids: Vec<String> = alerts.iter().map(|a| a.id.0.clone()).collect();
    let acks = s.api.store.alert_acks(&ids).await?;
    let alerts: Vec<Value> = alerts
        .iter()
        .map(|a| alert_with_ack(a, acks.iter().find(|k| k.alert_id == a.id.0)))
        .collect();
    // The device's newest 50 commands, through the store's index of the devices each
    // command names.
    let commands: Vec<Value> = s
        .api
        .store
        .list_commands(&CommandQuery {
            device_id: Some(id.as_str().to_owned()),
            limit: 50,
            ..CommandQuery::default()
        })
        .await?
        .into_iter()
        .map(|c| c.body)
        .collect();
    let secrets = device
        .credentials
        .iter()
        .filter(|c| matches!(c, model::Credential::Secret { .. }))
        .count();
    let certificates = device.credentials.len() - secrets;
    let posture = json!({
        "credentials": device.credentials.len(),
        "secrets": secrets,
        "certificates": certificates,
        "status": device.status,
        "firmware": device.firmware,
        "last_event": last_event.first().map(|e| e.ts),
        "open_alerts": alerts.iter().filter(|a| a.get("ack").is_none()).count(),
    });
    Ok(axum::Json(json!({
        "device": DeviceView::new(&device),
        "posture": posture,
        "telemetry": telemetry,
        "alerts": alerts,
        "commands": commands,
    }))
    .into_response())
}

/// `GET /api/v1/console/sharing`: partners, collections and feeds (from the platform),
/// the indicators detection holds, and the alerts indicators raised, by indicator.
pub(crate) async fn sharing(State(s): AppState) -> Result<Response, ApiError> {
    let config = s.api.platform.sharing().await?;
    let status = s.api.platform.detect_status();
    let hits = s
        .api
        .store
        .list_alerts(&AlertQuery {
            rule: Some("intel.indicator".to_owned()),
            limit: 1000,
            ..AlertQuery::default()
        })
        .await?;
    let mut by_indicator: Vec<(String, u64, u64, Timestamp, Vec<String>)> = Vec::new();
    for alert in &hits {
        let indicator = alert.key.split('/').next().unwrap_or("").to_owned();
        let device = alert.device_id.as_ref().map(|d| d.as_str().to_owned());
        match by_indicator.iter_mut().find(|e| e.0 == indicator) {
            Some(e) => {
                e.1 += 1;
                e.2 += u64::from(alert.count);
                e.3 = e.3.max(alert.last_ts);
                if let Some(d) = device
                    && e.4.len() < 20
                    && !e.4.contains(&d)
                {
                    e.4.push(d);
                }
            }
            None => by_indicator.push((
                indicator,
                1,
                u64::from(alert.count),
                alert.last_ts,
                device.into_iter().collect(),
            )),
        }
    }
    let local = s.api.store.list_indicators(None, 1000).await?;
    let hits: Vec<Value> = by_indicator
        .into_iter()
        .map(|(id, alerts, count, last, devices)| {
            let title = hits
                .iter()
                .find(|a| a.key.starts_with(&id))
                .map(|a| a.title.clone())
                .unwrap_or_default();
            json!({ "indicator": id, "alerts": alerts, "sightings": count, "last_seen": last, "devices": devices, "title": title })
        })
        .collect();
    Ok(axum::Json(json!({
        "config": config,
        "indicators_loaded": status.indicators,
        "city_indicators": local.len(),
        "hits": hits,
    }))
    .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReportParams {
    before: Option<String>,
    limit: Option<String>,
}

/// `GET /api/v1/console/reports`: residents' reports, newest first, paged by `before`.
/// Their text is whatever a resident typed: the console shows it as text only.
pub(crate) async fn reports(
    State(s): AppState,
    Query(p): Query<ReportParams>,
) -> Result<Response, ApiError> {
    let limit = parse_limit(p.limit)?;
    let items = s
        .api
        .store
        .list_reports(&store::ReportQuery {
            before: parse_ts("before", p.before)?,
            limit,
            ..store::ReportQuery::default()
        })
        .await?;
    let next_before = (items.len() >= limit)
        .then(|| items.last().map(|r| r.ts))
        .flatten();
    Ok(axum::Json(json!({ "items": items, "next_before": next_before })).into_response())
}

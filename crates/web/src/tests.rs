//! Tests of the HTTP API: the router against a real `EmbeddedStore` in a temporary directory
//! and a small in-test `Platform` double that writes through to the same store.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use model::{
    Alert, AlertId, Credential, Device, DeviceClass, DeviceId, DeviceStatus, Event, EventKind,
    FlowRecord, Reading, Severity, Timestamp, Value,
};
use serde_json::{Value as Json, json};
use store::{ApiToken, DetectStore, EmbeddedStore, Store};
use tower::ServiceExt;

mod accounts;
mod console;

use crate::routes::{Access, ROUTES, Verb};
use crate::{
    ApiState, FlowLineError, FlowReport, ImportFormat, ImportReport, ImportRowError, NewDevice,
    Platform, PlatformError, Status, router, token_sha256,
};

/// The clear text of the test tokens, one per role.
const VIEWER: &str = "viewer-token-0123456789";
const ANALYST: &str = "analyst-token-0123456789";
const OPERATOR: &str = "operator-token-0123456789";
const ADMIN: &str = "admin-token-0123456789";
/// A token whose stored role is not one the API knows.
const ODD: &str = "odd-token-0123456789";

const STORED_SECRET_HASH: &str = "$sha256$c2VjcmV0LWhhc2gtbWFya2Vy";
const GENERATED_SECRET: &str = "generated-secret-abcdefghijklmnop";
const CERT: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

/// A platform double: registers into the real store, hashes nothing (it records a marker
/// hash), and remembers revocation reasons.
struct FakePlatform {
    store: Arc<dyn Store>,
    revoked: std::sync::Mutex<Vec<(DeviceId, String)>>,
}

fn device_from(request: NewDevice) -> (Device, Option<String>) {
    let mut credentials = Vec::new();
    let mut generated = None;
    if request.generate_secret {
        generated = Some(GENERATED_SECRET.to_owned());
    }
    if request.generate_secret || request.secret.is_some() {
        credentials.push(Credential::Secret {
            hash: STORED_SECRET_HASH.into(),
        });
    }
    if let Some(sha256) = request.cert_sha256.clone() {
        credentials.push(Credential::Certificate { sha256 });
    }
    let device = Device {
        id: request.id.clone(),
        sector: request.sector(),
        class: request.class,
        zone: request.zone,
        owner: request.owner,
        vendor: request.vendor,
        model: request.model,
        firmware: request.firmware,
        addresses: Vec::new(),
        location: request.location,
        credentials,
        status: DeviceStatus::Active,
        created_at: Timestamp::from_millis(1_795_000_000_000),
    };
    (device, generated)
}

#[async_trait]
impl Platform for FakePlatform {
    async fn add_device(
        &self,
        request: NewDevice,
    ) -> Result<(Device, Option<String>), PlatformError> {
        request.validate().map_err(PlatformError::invalid)?;
        let (device, secret) = device_from(request);
        self.store.insert_device(&device).await?;
        Ok((device, secret))
    }

    async fn import_devices(
        &self,
        body: &[u8],
        format: ImportFormat,
    ) -> Result<ImportReport, PlatformError> {
        if format != ImportFormat::Json {
            return Err(PlatformError::invalid("the fake imports json only"));
        }
        let rows: Vec<Json> = serde_json::from_slice(body)
            .map_err(|e| PlatformError::invalid(format!("not a json array: {e}")))?;
        let mut report = ImportReport::default();
        let mut devices = Vec::new();
        for (i, row) in rows.into_iter().enumerate() {
            let parsed = serde_json::from_value::<NewDevice>(row)
                .map_err(|e| e.to_string())
                .and_then(|r| r.validate().map(|()| r));
            match parsed {
                Ok(request) => devices.push(device_from(request).0),
                Err(message) => report.errors.push(ImportRowError {
                    row: i as u64 + 1,
                    message,
                }),
            }
        }
        self.store.upsert_devices(&devices).await?;
        report.imported = devices.len() as u64;
        Ok(report)
    }

    async fn revoke_device(&self, id: &DeviceId, reason: &str) -> Result<Device, PlatformError> {
        self.store
            .set_device_status(id, DeviceStatus::Revoked)
            .await?;
        self.revoked
            .lock()
            .unwrap()
            .push((id.clone(), reason.to_owned()));
        self.store
            .get_device(id)
            .await?
            .ok_or_else(|| PlatformError::not_found(format!("device {id} not found")))
    }

    async fn ingest_flows(&self, body: &[u8]) -> Result<FlowReport, PlatformError> {
        // The double takes the canonical shape only; the real decoder lives in ingest.
        let mut report = FlowReport::default();
        let mut events = Vec::new();
        for (i, line) in body.split(|b| *b == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match serde_json::from_slice::<FlowRecord>(line) {
                Ok(record) => events.push(Event {
                    ts: record.end,
                    device_id: None,
                    sector: None,
                    kind: EventKind::Flow(record),
                }),
                Err(e) => {
                    *report
                        .refused_by_reason
                        .entry("json_invalid".into())
                        .or_default() += 1;
                    report.errors.push(FlowLineError {
                        line: i as u64 + 1,
                        reason: "json_invalid".into(),
                        message: e.to_string(),
                    });
                }
            }
        }
        report.accepted = events.len() as u64;
        report.refused = report.errors.len() as u64;
        self.store.append_events(&events).await?;
        Ok(report)
    }

    async fn learn_alert(
        &self,
        alert: &Alert,
        actor: &str,
        reason: &str,
    ) -> Result<store::Suppression, PlatformError> {
        let s = suppression(alert, "learned", None, actor, reason);
        self.store.put_suppression(&s).await?;
        Ok(s)
    }

    async fn mute_alert(
        &self,
        alert: &Alert,
        until: Option<Timestamp>,
        actor: &str,
        reason: &str,
    ) -> Result<store::Suppression, PlatformError> {
        let s = suppression(alert, "muted", until, actor, reason);
        self.store.put_suppression(&s).await?;
        Ok(s)
    }

    async fn lift_suppression(
        &self,
        rule: &str,
        key: &str,
        _actor: &str,
    ) -> Result<(), PlatformError> {
        Ok(self.store.delete_suppression(rule, key).await?)
    }

    async fn add_indicators(
        &self,
        body: Json,
        actor: &str,
    ) -> Result<crate::detect::IndicatorReport, PlatformError> {
        let objects = body
            .get("objects")
            .and_then(Json::as_array)
            .cloned()
            .ok_or_else(|| PlatformError::invalid("the fake takes bundles only"))?;
        let mut report = crate::detect::IndicatorReport {
            accepted: 0,
            refused: Vec::new(),
        };
        for object in objects {
            let id = object["id"].as_str().unwrap_or("").to_owned();
            match object["pattern"].as_str() {
                Some(pattern) => {
                    self.store
                        .put_indicators(&[store::LocalIndicator {
                            id,
                            name: String::new(),
                            pattern: pattern.to_owned(),
                            valid_until: None,
                            object: object.clone(),
                            actor: actor.to_owned(),
                            created_at: Timestamp::from_millis(1),
                        }])
                        .await?;
                    report.accepted += 1;
                }
                None => report.refused.push(crate::detect::IndicatorRefusal {
                    id,
                    message: "no pattern".into(),
                }),
            }
        }
        Ok(report)
    }

    fn detect_status(&self) -> crate::detect::DetectStatus {
        crate::detect::DetectStatus {
            builtin_rules: vec!["policy.conduit".into()],
            indicators: 1,
            ..Default::default()
        }
    }

    fn status(&self) -> Status {
        Status {
            devices_registered: 3,
            devices_online: 2,
            messages_per_s: 12.5,
            alerts_total: 1,
            uptime_s: 60,
            bus_up: true,
            store_up: true,
            events_buffered: 0,
            events_refused: 0,
        }
    }
}

fn suppression(
    alert: &Alert,
    kind: &str,
    until: Option<Timestamp>,
    actor: &str,
    reason: &str,
) -> store::Suppression {
    store::Suppression {
        rule: alert.rule.clone(),
        key: alert.key.clone(),
        kind: kind.to_owned(),
        until,
        actor: actor.to_owned(),
        reason: reason.to_owned(),
        alert_id: Some(alert.id.0.clone()),
        created_at: Timestamp::from_millis(1),
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    platform: Arc<FakePlatform>,
    ready: Arc<AtomicBool>,
    metrics_public: bool,
    civic: Arc<civic::FakeCivic>,
    report_limits: crate::ReportLimits,
}

fn id(s: &str) -> DeviceId {
    DeviceId::new(s).unwrap()
}

fn seeded_device(name: &str, class: DeviceClass, zone: &str) -> Device {
    Device {
        id: id(name),
        sector: class.sector(),
        class,
        zone: zone.into(),
        owner: "water dept".into(),
        vendor: "acme".into(),
        model: "m1".into(),
        firmware: "1.0.0".into(),
        addresses: Vec::new(),
        location: None,
        credentials: vec![
            Credential::Secret {
                hash: STORED_SECRET_HASH.into(),
            },
            Credential::Certificate {
                sha256: CERT.into(),
            },
        ],
        status: DeviceStatus::Active,
        created_at: Timestamp::from_millis(1_795_000_000_000),
    }
}

fn alert(n: i64, device: &str, rule: &str) -> Alert {
    Alert {
        id: AlertId(format!("alert-{n}")),
        rule: rule.into(),
        key: String::new(),
        severity: Severity::High,
        ts: Timestamp::from_millis(1_795_000_000_000 + n * 1000),
        last_ts: Timestamp::from_millis(1_795_000_000_000 + n * 1000),
        count: 1,
        device_id: Some(id(device)),
        zone: None,
        source: None,
        title: format!("alert {n}"),
        explanation: "test".into(),
        evidence: vec![],
    }
}

fn event(n: i64, device: &str, kind: EventKind) -> Event {
    Event {
        ts: Timestamp::from_millis(1_795_000_000_000 + n * 1000),
        device_id: Some(id(device)),
        sector: None,
        kind,
    }
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(EmbeddedStore::open(&dir.path().join("citysec.db")).unwrap());
    for (token, role) in [
        (VIEWER, "viewer"),
        (ANALYST, "analyst"),
        (OPERATOR, "operator"),
        (ADMIN, "admin"),
        (ODD, "superuser"),
    ] {
        store
            .insert_token(&ApiToken {
                sha256: token_sha256(token),
                name: format!("{role} token"),
                role: role.into(),
                created_at: Timestamp::from_millis(0),
            })
            .await
            .unwrap();
    }
    store
        .upsert_devices(&[
            seeded_device("pump-1", DeviceClass::Pump, "ot-water"),
            seeded_device("pump-2", DeviceClass::Pump, "ot-water"),
            seeded_device("siren-1", DeviceClass::Siren, "ot-safety"),
        ])
        .await
        .unwrap();
    store
        .upsert_alerts(&[
            alert(1, "pump-1", "auth.brute_force.device"),
            alert(2, "siren-1", "actuation.uncommanded"),
            alert(3, "pump-1", "auth.brute_force.device"),
        ])
        .await
        .unwrap();
    let reading = Reading {
        name: "temp_c".into(),
        value: Value::Number(21.5),
        unit: None,
    };
    store
        .append_events(&[
            event(
                1,
                "pump-1",
                EventKind::Telemetry {
                    readings: vec![reading.clone()],
                },
            ),
            event(
                2,
                "siren-1",
                EventKind::State {
                    readings: vec![reading],
                },
            ),
            event(
                3,
                "pump-1",
                EventKind::Command {
                    action: "stop".into(),
                    actor: "ops".into(),
                },
            ),
        ])
        .await
        .unwrap();
    let platform = Arc::new(FakePlatform {
        store: store.clone(),
        revoked: Default::default(),
    });
    let civic_store = store.clone();
    Fixture {
        _dir: dir,
        store,
        platform,
        ready: Arc::new(AtomicBool::new(true)),
        metrics_public: false,
        civic: Arc::new(civic::FakeCivic { store: civic_store }),
        report_limits: crate::ReportLimits::default(),
    }
}

impl Fixture {
    fn app(&self) -> Router {
        router(ApiState {
            store: self.store.clone(),
            platform: self.platform.clone(),
            metrics: Arc::new(|| "# TYPE citysec_up gauge\ncitysec_up 1\n".to_owned()),
            ready: self.ready.clone(),
            metrics_public: self.metrics_public,
            advisories: self.civic.clone(),
            reports: self.civic.clone(),
            report_limits: self.report_limits.clone(),
            readiness: self.civic.clone(),
        })
    }

    /// Sends one request; `body` is `(content type, text)`.
    async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<(&str, String)>,
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let req = match body {
            Some((content_type, text)) => req
                .header(header::CONTENT_TYPE, content_type)
                .body(Body::from(text))
                .unwrap(),
            None => req.body(Body::empty()).unwrap(),
        };
        let response = self.app().oneshot(req).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        Reply {
            status,
            headers,
            text: String::from_utf8(bytes.to_vec()).unwrap(),
        }
    }

    async fn get(&self, path: &str, token: &str) -> Reply {
        self.send(Method::GET, path, Some(token), None).await
    }

    async fn post_json(&self, path: &str, token: &str, body: Json) -> Reply {
        self.send(
            Method::POST,
            path,
            Some(token),
            Some(("application/json", body.to_string())),
        )
        .await
    }
}

#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
}

impl Reply {
    fn json(&self) -> Json {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not json ({e}): {} {}", self.status, self.text))
    }

    /// Asserts an error response: status, JSON body with this code.
    fn assert_error(&self, status: StatusCode, code: &str) -> String {
        assert_eq!(self.status, status, "{}", self.text);
        assert_eq!(
            self.headers.get(header::CONTENT_TYPE).unwrap(),
            "application/json",
            "{}",
            self.text
        );
        let body = self.json();
        assert_eq!(body["error"]["code"], code, "{}", self.text);
        body["error"]["message"].as_str().unwrap().to_owned()
    }
}

fn new_device_body(name: &str) -> Json {
    json!({
        "id": name, "class": "valve", "zone": "ot-water", "owner": "water dept",
        "vendor": "acme", "model": "v2", "firmware": "2.1", "generate_secret": true
    })
}

/// (method, path, token, body as (content type, text), expected status)
type Case<'a> = (
    Method,
    &'a str,
    Option<&'a str>,
    Option<(&'a str, String)>,
    StatusCode,
);

#[tokio::test]
async fn access_table() {
    let f = fixture().await;
    let revoke = || json!({"reason": "lost"}).to_string();
    let import = || json!([new_device_body("valve-9")]).to_string();
    let json_ct = "application/json";
    // (method, path, token, body, expected status)
    let cases: Vec<Case> = vec![
        (Method::GET, "/healthz", None, None, StatusCode::OK),
        (Method::GET, "/readyz", None, None, StatusCode::OK),
        (
            Method::GET,
            "/api/v1/openapi.json",
            None,
            None,
            StatusCode::OK,
        ),
        (
            Method::GET,
            "/metrics",
            None,
            None,
            StatusCode::UNAUTHORIZED,
        ),
        (
            Method::GET,
            "/metrics",
            Some("nope"),
            None,
            StatusCode::UNAUTHORIZED,
        ),
        (Method::GET, "/metrics", Some(VIEWER), None, StatusCode::OK),
        (
            Method::GET,
            "/api/v1/status",
            None,
            None,
            StatusCode::UNAUTHORIZED,
        ),
        (
            Method::GET,
            "/api/v1/status",
            Some("nope"),
            None,
            StatusCode::UNAUTHORIZED,
        ),
        (
            Method::GET,
            "/api/v1/status",
            Some(ODD),
            None,
            StatusCode::FORBIDDEN,
        ),
        (
            Method::GET,
            "/api/v1/status",
            Some(VIEWER),
            None,
            StatusCode::OK,
        ),
        (
            Method::GET,
            "/api/v1/devices",
            None,
            None,
            StatusCode::UNAUTHORIZED,
        ),
        (
            Method::GET,
            "/api/v1/devices",
            Some(VIEWER),
            None,
            StatusCode::OK,
        ),
        (
            Method::GET,
            "/api/v1/devices/pump-1",
            None,
            None,
            StatusCode::UNAUTHORIZED,
        ),
        (
            Method::GET,
            "/api/v1/devices/pump-1",
            Some(VIEWER),
            None,
            StatusCode::OK,
        ),
        (
            Method::GET,
            "/api/v1/alerts",
            Some("nope"),
            None,
            StatusCode::UNAUTHORIZED,
        ),
        (
            Method::GET,
            "/api/v1/alerts",
            Some(VIEWER),
            None,
            StatusCode::OK,
        ),
        (
            Method::GET,
            "/api/v1/alerts/alert-1",
            None,
            None,
            StatusCode::UNAUTHORIZED,
        ),
        (
            Method::GET,
            "/api/v1/alerts/alert-1",
            Some(VIEWER),
            None,
            StatusCode::OK,
        ),
        (
            Method::GET,
            "/api/v1/events",
            None,
            None,
            StatusCode::UNAUTHORIZED,
        ),
        (
            Method::GET,
            "/api/v1/events",
            Some(ANALYST),
            None,
            StatusCode::OK,
        ),
        // Writes need admin; the body is not even read before the role check.
        (
            Method::POST,
            "/api/v1/devices",
            None,
            None,
            StatusCode::UNAUTHORIZED,
        ),
        (
            Method::POST,
            "/api/v1/devices",
            Some(VIEWER),
            Some((json_ct, new_device_body("valve-1").to_string())),
            StatusCode::FORBIDDEN,
        ),
        (
            Method::POST,
            "/api/v1/devices",
            Some(OPERATOR),
            Some((json_ct, new_device_body("valve-1").to_string())),
            StatusCode::FORBIDDEN,
        ),
        (
            Method::POST,
            "/api/v1/devices",
            Some(ADMIN),
            Some((json_ct, new_device_body("valve-1").to_string())),
            StatusCode::CREATED,
        ),
        (
            Method::POST,
            "/api/v1/devices/pump-2/revoke",
            None,
            Some((json_ct, revoke())),
            StatusCode::UNAUTHORIZED,
        ),
        (
            Method::POST,
            "/api/v1/devices/pump-2/revoke",
            Some(ANALYST),
            Some((json_ct, revoke())),
            StatusCode::FORBIDDEN,
        ),
        (
            Method::POST,
            "/api/v1/devices/pump-2/revoke",
            Some(ADMIN),
            Some((json_ct, revoke())),
            StatusCode::OK,
        ),
        (
            Method::POST,
            "/api/v1/devices/import",
            Some("nope"),
            Some((json_ct, import())),
            StatusCode::UNAUTHORIZED,
        ),
        (
            Method::POST,
            "/api/v1/devices/import",
            Some(OPERATOR),
            Some((json_ct, import())),
            StatusCode::FORBIDDEN,
        ),
        (
            Method::POST,
            "/api/v1/devices/import",
            Some(ADMIN),
            Some((json_ct, import())),
            StatusCode::OK,
        ),
        (
            Method::POST,
            "/api/v1/devices/import",
            Some(ADMIN),
            Some(("text/plain", import())),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        // Flows need an operator (a collector's token), not admin.
        (
            Method::POST,
            "/api/v1/flows",
            None,
            Some((NDJSON, flow_lines())),
            StatusCode::UNAUTHORIZED,
        ),
        (
            Method::POST,
            "/api/v1/flows",
            Some(ANALYST),
            Some((NDJSON, flow_lines())),
            StatusCode::FORBIDDEN,
        ),
        (
            Method::POST,
            "/api/v1/flows",
            Some(OPERATOR),
            Some((NDJSON, flow_lines())),
            StatusCode::OK,
        ),
        (
            Method::POST,
            "/api/v1/flows",
            Some(OPERATOR),
            Some(("text/csv", flow_lines())),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
    ];
    for (method, path, token, body, expected) in cases {
        let label = format!("{method} {path} as {token:?}");
        let reply = f.send(method, path, token, body).await;
        assert_eq!(reply.status, expected, "{label}: {}", reply.text);
        if expected == StatusCode::UNAUTHORIZED {
            assert_eq!(
                reply.headers.get(header::WWW_AUTHENTICATE).unwrap(),
                "Bearer",
                "{label}"
            );
            reply.assert_error(expected, "unauthorized");
        }
        if expected == StatusCode::FORBIDDEN {
            reply.assert_error(expected, "forbidden");
        }
        assert_eq!(
            reply.headers.get(header::X_CONTENT_TYPE_OPTIONS).unwrap(),
            "nosniff",
            "{label}"
        );
        assert_eq!(
            reply.headers.get(header::CACHE_CONTROL).unwrap(),
            "no-store",
            "{label}"
        );
    }
}

#[tokio::test]
async fn malformed_authorization_is_401() {
    let f = fixture().await;
    for value in ["Basic dXNlcjpwYXNz", "Bearer", "Bearer ", VIEWER] {
        let req = Request::get("/api/v1/status")
            .header(header::AUTHORIZATION, value)
            .body(Body::empty())
            .unwrap();
        let response = f.app().oneshot(req).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{value:?}");
    }
}

#[tokio::test]
async fn health_and_readiness() {
    let f = fixture().await;
    let reply = f.send(Method::GET, "/healthz", None, None).await;
    assert_eq!((reply.status, reply.text.as_str()), (StatusCode::OK, "ok"));
    f.ready.store(false, Ordering::Release);
    let reply = f.send(Method::GET, "/readyz", None, None).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    f.ready.store(true, Ordering::Release);
    let reply = f.send(Method::GET, "/readyz", None, None).await;
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn metrics_text_and_public_switch() {
    let mut f = fixture().await;
    let reply = f.get("/metrics", VIEWER).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.headers.get(header::CONTENT_TYPE).unwrap(),
        "text/plain; version=0.0.4; charset=utf-8"
    );
    assert!(reply.text.contains("citysec_up 1"), "{}", reply.text);
    f.metrics_public = true;
    let reply = f.send(Method::GET, "/metrics", None, None).await;
    assert_eq!(reply.status, StatusCode::OK);
    // Only metrics become public.
    let reply = f.send(Method::GET, "/api/v1/status", None, None).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn status_comes_from_the_platform() {
    let f = fixture().await;
    let reply = f.get("/api/v1/status", VIEWER).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.json(),
        json!({"devices_registered": 3, "devices_online": 2, "messages_per_s": 12.5,
               "alerts_total": 1, "uptime_s": 60, "bus_up": true, "store_up": true,
               "events_buffered": 0, "events_refused": 0})
    );
}

fn ids(body: &Json) -> Vec<String> {
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn list_devices_filters_and_pages() {
    let f = fixture().await;
    let body = f.get("/api/v1/devices", VIEWER).await.json();
    assert_eq!(ids(&body), ["pump-1", "pump-2", "siren-1"]);
    assert_eq!(body["next"], Json::Null);

    let body = f.get("/api/v1/devices?sector=water", VIEWER).await.json();
    assert_eq!(ids(&body), ["pump-1", "pump-2"]);
    let body = f
        .get("/api/v1/devices?class=siren&zone=ot-safety", VIEWER)
        .await
        .json();
    assert_eq!(ids(&body), ["siren-1"]);
    let body = f.get("/api/v1/devices?zone=nowhere", VIEWER).await.json();
    assert_eq!(ids(&body), Vec::<String>::new());

    // Pages of two: the first names where to continue, the last has no next.
    let body = f.get("/api/v1/devices?limit=2", VIEWER).await.json();
    assert_eq!(ids(&body), ["pump-1", "pump-2"]);
    assert_eq!(body["next"], "pump-2");
    let body = f
        .get("/api/v1/devices?limit=2&after=pump-2", VIEWER)
        .await
        .json();
    assert_eq!(ids(&body), ["siren-1"]);
    assert_eq!(body["next"], Json::Null);

    f.store
        .set_device_status(&id("pump-2"), DeviceStatus::Revoked)
        .await
        .unwrap();
    let body = f.get("/api/v1/devices?status=revoked", VIEWER).await.json();
    assert_eq!(ids(&body), ["pump-2"]);
}

#[tokio::test]
async fn device_json_redacts_secret_hashes() {
    let f = fixture().await;
    let reply = f.get("/api/v1/devices/pump-1", VIEWER).await;
    assert_eq!(reply.status, StatusCode::OK);
    let body = reply.json();
    assert_eq!(body["id"], "pump-1");
    assert_eq!(body["sector"], "water");
    assert_eq!(body["status"], "active");
    assert_eq!(
        body["credentials"],
        json!([{"type": "secret"}, {"type": "certificate", "sha256": CERT}])
    );
    let list = f.get("/api/v1/devices", VIEWER).await;
    for text in [&reply.text, &list.text] {
        assert!(!text.contains(STORED_SECRET_HASH), "{text}");
        assert!(!text.contains("hash"), "{text}");
    }
}

#[tokio::test]
async fn get_missing_device_is_404() {
    let f = fixture().await;
    let msg = f
        .get("/api/v1/devices/pump-404", VIEWER)
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    assert_eq!(msg, "device pump-404 not found");
    f.get("/api/v1/devices/bad%2Fid", VIEWER)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid");
}

#[tokio::test]
async fn create_device_returns_generated_secret_once() {
    let f = fixture().await;
    let reply = f
        .post_json("/api/v1/devices", ADMIN, new_device_body("valve-7"))
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let body = reply.json();
    assert_eq!(body["secret"], GENERATED_SECRET);
    assert_eq!(body["device"]["id"], "valve-7");
    assert_eq!(body["device"]["sector"], "water");
    assert_eq!(body["device"]["credentials"], json!([{"type": "secret"}]));
    assert!(!reply.text.contains(STORED_SECRET_HASH));
    // Stored for real, and never shown again.
    let reply = f.get("/api/v1/devices/valve-7", VIEWER).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(!reply.text.contains(GENERATED_SECRET));
    // Registering it twice is a conflict.
    f.post_json("/api/v1/devices", ADMIN, new_device_body("valve-7"))
        .await
        .assert_error(StatusCode::CONFLICT, "conflict");
}

#[tokio::test]
async fn chosen_secret_is_never_echoed() {
    let f = fixture().await;
    let secret = "my-own-secret-0123456789";
    let mut body = new_device_body("valve-8");
    body["generate_secret"] = json!(false);
    body["secret"] = json!(secret);
    let reply = f.post_json("/api/v1/devices", ADMIN, body).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    assert!(!reply.text.contains(secret), "{}", reply.text);
    assert_eq!(reply.json().get("secret"), None);
    // Nor in validation errors.
    let mut body = new_device_body("valve-9");
    body["secret"] = json!(secret);
    let reply = f.post_json("/api/v1/devices", ADMIN, body).await;
    reply.assert_error(StatusCode::BAD_REQUEST, "invalid");
    assert!(!reply.text.contains(secret), "{}", reply.text);
}

#[tokio::test]
async fn create_device_validation() {
    let f = fixture().await;
    let with = |key: &str, value: Json| {
        let mut body = new_device_body("valve-1");
        body[key] = value;
        body
    };
    let cases = [
        (with("sector", json!("energy")), "does not match class"),
        (with("sector", json!("sewage")), "unknown variant"),
        (with("class", json!("toaster")), "unknown variant"),
        (with("id", json!("no/slash")), "device id contains '/'"),
        (with("zone", json!("")), "zone must not be empty"),
        (with("generate_secret", json!(false)), "needs a credential"),
        (with("cert_sha256", json!("ABC")), "cert_sha256"),
        (with("colour", json!("red")), "unknown field"),
        (
            with("location", json!({"lat": 91.0, "lon": 0.0})),
            "location",
        ),
    ];
    for (body, expected) in cases {
        let msg = f
            .post_json("/api/v1/devices", ADMIN, body.clone())
            .await
            .assert_error(StatusCode::BAD_REQUEST, "invalid");
        assert!(msg.contains(expected), "{body}: {msg}");
    }
    let list = f.get("/api/v1/devices", VIEWER).await.json();
    assert_eq!(ids(&list).len(), 3, "nothing was registered");
}

#[tokio::test]
async fn bad_bodies_are_json_errors() {
    let f = fixture().await;
    let post = |ct: &'static str, text: &'static str| {
        f.send(
            Method::POST,
            "/api/v1/devices",
            Some(ADMIN),
            Some((ct, text.to_owned())),
        )
    };
    let msg = post("application/json", "{\"id\": ")
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid");
    assert!(msg.starts_with("request body is not valid json"), "{msg}");
    post("application/json", "[1,2]")
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid");
    post("text/plain", "{}")
        .await
        .assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    let reply = f
        .send(
            Method::POST,
            "/api/v1/devices/pump-1/revoke",
            Some(ADMIN),
            Some(("application/json", "{}".into())),
        )
        .await;
    let msg = reply.assert_error(StatusCode::BAD_REQUEST, "invalid");
    assert!(msg.contains("missing field `reason`"), "{msg}");
    f.post_json(
        "/api/v1/devices/pump-1/revoke",
        ADMIN,
        json!({"reason": "  "}),
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST, "invalid");
}

#[tokio::test]
async fn body_limits() {
    let f = fixture().await;
    let big = format!("{{\"id\": \"{}\"}}", "x".repeat(crate::BODY_LIMIT));
    let reply = f
        .send(
            Method::POST,
            "/api/v1/devices",
            Some(ADMIN),
            Some(("application/json", big)),
        )
        .await;
    reply.assert_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");

    // An import may be larger than 1 MiB...
    let mut rows: Vec<Json> = (0..6000)
        .map(|i| new_device_body(&format!("valve-{i}")))
        .collect();
    for row in &mut rows {
        row["firmware"] = json!("f".repeat(200));
    }
    let text = Json::Array(rows).to_string();
    assert!(text.len() > crate::BODY_LIMIT);
    let reply = f
        .send(
            Method::POST,
            "/api/v1/devices/import",
            Some(ADMIN),
            Some(("application/json", text)),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json()["imported"], 6000);
    // ...but not larger than its own limit.
    let huge = " ".repeat(crate::IMPORT_BODY_LIMIT + 1);
    let reply = f
        .send(
            Method::POST,
            "/api/v1/devices/import",
            Some(ADMIN),
            Some(("text/csv", huge)),
        )
        .await;
    reply.assert_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
}

#[tokio::test]
async fn import_reports_rows() {
    let f = fixture().await;
    let mut bad = new_device_body("valve-3");
    bad["sector"] = json!("energy");
    let body = json!([new_device_body("valve-2"), bad]);
    let reply = f.post_json("/api/v1/devices/import", ADMIN, body).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let report: ImportReport = serde_json::from_str(&reply.text).unwrap();
    assert_eq!(report.imported, 1);
    assert_eq!(report.errors.len(), 1);
    assert_eq!(report.errors[0].row, 2);
    assert!(report.errors[0].message.contains("does not match class"));
    assert_eq!(
        f.get("/api/v1/devices/valve-2", VIEWER).await.status,
        StatusCode::OK
    );
    assert_eq!(
        f.get("/api/v1/devices/valve-3", VIEWER).await.status,
        StatusCode::NOT_FOUND
    );

    // Content types decide the format; parameters and case do not matter.
    let reply = f
        .send(
            Method::POST,
            "/api/v1/devices/import",
            Some(ADMIN),
            Some(("Text/CSV; charset=utf-8", "id\n".into())),
        )
        .await;
    // The fake refuses CSV with an `invalid` error: it was handed the csv format.
    assert!(
        reply
            .assert_error(StatusCode::BAD_REQUEST, "invalid")
            .contains("json only")
    );
    f.send(Method::POST, "/api/v1/devices/import", Some(ADMIN), None)
        .await
        .assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    f.send(
        Method::POST,
        "/api/v1/devices/import",
        Some(ADMIN),
        Some(("application/json", " \n".into())),
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST, "invalid");
}

const NDJSON: &str = "application/x-ndjson";

fn flow_lines() -> String {
    [
        r#"{"src":"10.0.0.7","dst":"203.0.113.5","src_port":51234,"dst_port":23,"protocol":6,"bytes":180,"packets":3,"tcp_flags":2,"start":"2026-11-18T11:06:40.000Z","end":"2026-11-18T11:06:41.000Z"}"#,
        "",
        "not json",
        r#"{"src":"10.0.0.8","dst":"10.0.0.9","protocol":17,"start":"2026-11-18T11:06:42.000Z","end":"2026-11-18T11:06:42.000Z"}"#,
    ]
    .join("\n")
}

#[tokio::test]
async fn flows_go_through_the_platform_and_report_counts() {
    let f = fixture().await;
    for content_type in [
        NDJSON,
        "application/jsonl",
        "Application/JSON; charset=utf-8",
    ] {
        let reply = f
            .send(
                Method::POST,
                "/api/v1/flows",
                Some(OPERATOR),
                Some((content_type, flow_lines())),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        let report: FlowReport = serde_json::from_str(&reply.text).unwrap();
        assert_eq!((report.accepted, report.refused), (2, 1));
        assert_eq!(report.refused_by_reason["json_invalid"], 1);
        assert_eq!(report.errors[0].line, 3);
    }
    let events = f.get("/api/v1/events?kind=flow", VIEWER).await;
    assert_eq!(events.status, StatusCode::OK, "{}", events.text);
    let items = events.json()["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 6);
    assert_eq!(items[0]["kind"], "flow");
    assert_eq!(items[0]["src"], "10.0.0.8");
    // Empty bodies and oversized ones are refused before the platform sees them.
    f.send(
        Method::POST,
        "/api/v1/flows",
        Some(OPERATOR),
        Some((NDJSON, "\n \n".into())),
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST, "invalid");
    let huge = " ".repeat(crate::FLOWS_BODY_LIMIT + 1);
    f.send(
        Method::POST,
        "/api/v1/flows",
        Some(OPERATOR),
        Some((NDJSON, huge)),
    )
    .await
    .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
}

#[tokio::test]
async fn revoke_goes_through_the_platform() {
    let f = fixture().await;
    let reply = f
        .post_json(
            "/api/v1/devices/pump-2/revoke",
            ADMIN,
            json!({"reason": "stolen"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json()["status"], "revoked");
    assert!(!reply.text.contains(STORED_SECRET_HASH));
    assert_eq!(
        *f.platform.revoked.lock().unwrap(),
        [(id("pump-2"), "stolen".to_owned())]
    );
    f.post_json(
        "/api/v1/devices/pump-404/revoke",
        ADMIN,
        json!({"reason": "x"}),
    )
    .await
    .assert_error(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn alerts_newest_first_with_filters() {
    let f = fixture().await;
    let ids_of = |body: Json| -> Vec<String> {
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let body = f.get("/api/v1/alerts", VIEWER).await.json();
    assert_eq!(ids_of(body), ["alert-3", "alert-2", "alert-1"]);
    let body = f
        .get("/api/v1/alerts?device_id=pump-1", VIEWER)
        .await
        .json();
    assert_eq!(ids_of(body), ["alert-3", "alert-1"]);
    let body = f
        .get("/api/v1/alerts?rule=actuation.uncommanded", VIEWER)
        .await
        .json();
    assert_eq!(ids_of(body), ["alert-2"]);
    let body = f.get("/api/v1/alerts?limit=1", VIEWER).await.json();
    assert_eq!(ids_of(body), ["alert-3"]);
    let since = Timestamp::from_millis(1_795_000_002_000).to_rfc3339();
    let body = f
        .get(&format!("/api/v1/alerts?since={since}"), VIEWER)
        .await
        .json();
    assert_eq!(ids_of(body), ["alert-3", "alert-2"]);
    let body = f
        .get(&format!("/api/v1/alerts?before={since}"), VIEWER)
        .await
        .json();
    assert_eq!(ids_of(body), ["alert-1"]);

    let reply = f.get("/api/v1/alerts/alert-2", VIEWER).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["rule"], "actuation.uncommanded");
    f.get("/api/v1/alerts/alert-404", VIEWER)
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn events_newest_first_with_filters() {
    let f = fixture().await;
    let kinds = |body: Json| -> Vec<String> {
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["kind"].as_str().unwrap().to_owned())
            .collect()
    };
    let body = f.get("/api/v1/events", VIEWER).await.json();
    assert_eq!(kinds(body), ["command", "state", "telemetry"]);
    let body = f
        .get("/api/v1/events?device_id=pump-1", VIEWER)
        .await
        .json();
    assert_eq!(kinds(body), ["command", "telemetry"]);
    let body = f.get("/api/v1/events?kind=state", VIEWER).await.json();
    assert_eq!(kinds(body), ["state"]);
    let body = f.get("/api/v1/events?limit=2", VIEWER).await.json();
    assert_eq!(kinds(body), ["command", "state"]);
}

#[tokio::test]
async fn bad_query_parameters_are_400() {
    let f = fixture().await;
    let cases = [
        ("/api/v1/devices?limit=0", "limit must be"),
        ("/api/v1/devices?limit=1001", "limit must be"),
        ("/api/v1/devices?limit=ten", "limit must be"),
        ("/api/v1/devices?sector=sewage", "unknown sector"),
        ("/api/v1/devices?class=toaster", "unknown device class"),
        ("/api/v1/devices?status=lost", "unknown device status"),
        ("/api/v1/devices?after=a/b", "after: device id"),
        ("/api/v1/devices?colour=red", "unknown field"),
        (
            "/api/v1/alerts?since=yesterday",
            "since must be an rfc 3339",
        ),
        ("/api/v1/alerts?limit=-1", "limit must be"),
        ("/api/v1/alerts?device_id=%23", "device_id"),
        ("/api/v1/events?kind=flood", "unknown event kind"),
        ("/api/v1/events?before=2026-13-01", "before must be"),
    ];
    for (path, expected) in cases {
        let msg = f
            .get(path, VIEWER)
            .await
            .assert_error(StatusCode::BAD_REQUEST, "invalid");
        assert!(msg.contains(expected), "{path}: {msg}");
    }
    // Empty values mean "no filter".
    assert_eq!(
        f.get("/api/v1/devices?sector=&limit=", VIEWER).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn unknown_routes_and_methods_are_json() {
    let f = fixture().await;
    let msg = f
        .get("/api/v1/nothing", VIEWER)
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    assert_eq!(msg, "no such route");
    // `/` is the console; other paths outside the API are not found.
    f.send(Method::GET, "/nothing-here", None, None)
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    let reply = f
        .send(Method::DELETE, "/api/v1/devices", Some(ADMIN), None)
        .await;
    reply.assert_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    assert_eq!(
        reply.headers.get(header::X_CONTENT_TYPE_OPTIONS).unwrap(),
        "nosniff"
    );
}

/// A store whose every call fails, to check that internal errors are generic.
struct BrokenStore;

fn on_fire<T>() -> store::Result<T> {
    Err(store::Error::Internal(
        "disk on fire at /secret/path".into(),
    ))
}

#[async_trait]
impl DetectStore for BrokenStore {
    async fn put_suppression(&self, _: &store::Suppression) -> store::Result<()> {
        on_fire()
    }
    async fn delete_suppression(&self, _: &str, _: &str) -> store::Result<()> {
        on_fire()
    }
    async fn list_suppressions(&self) -> store::Result<Vec<store::Suppression>> {
        on_fire()
    }
    async fn put_indicators(&self, _: &[store::LocalIndicator]) -> store::Result<()> {
        on_fire()
    }
    async fn delete_indicator(&self, _: &str) -> store::Result<()> {
        on_fire()
    }
    async fn list_indicators(
        &self,
        _: Option<&str>,
        _: usize,
    ) -> store::Result<Vec<store::LocalIndicator>> {
        on_fire()
    }
    async fn put_learned(&self, _: &store::LearnedState) -> store::Result<bool> {
        on_fire()
    }
    async fn get_learned(&self, _: &str) -> store::Result<Option<store::LearnedState>> {
        on_fire()
    }
}

#[async_trait]
impl store::IntelStore for BrokenStore {
    async fn intel_add(
        &self,
        _: &str,
        _: &[store::intel::IntelObject],
        _: i64,
    ) -> store::Result<Vec<store::intel::IntelAdded>> {
        on_fire()
    }
    async fn intel_query(
        &self,
        _: &store::intel::IntelQuery,
    ) -> store::Result<Vec<store::intel::IntelRecord>> {
        on_fire()
    }
    async fn intel_count(&self, _: &str, _: i64) -> store::Result<u64> {
        on_fire()
    }
    async fn intel_delete(&self, _: &store::intel::IntelQuery) -> store::Result<u64> {
        on_fire()
    }
    async fn intel_put_status(&self, _: &store::intel::IntelStatus) -> store::Result<()> {
        on_fire()
    }
    async fn intel_get_status(
        &self,
        _: &str,
        _: &str,
    ) -> store::Result<Option<store::intel::IntelStatus>> {
        on_fire()
    }
    async fn intel_prune_statuses(&self, _: i64) -> store::Result<u64> {
        on_fire()
    }
    async fn intel_bookmark(&self, _: &str) -> store::Result<Option<String>> {
        on_fire()
    }
    async fn intel_set_bookmark(&self, _: &str, _: &str) -> store::Result<()> {
        on_fire()
    }
}

#[async_trait]
impl store::RateLimitStore for BrokenStore {
    async fn put_rate_limit(&self, _: &store::RateLimit) -> store::Result<()> {
        on_fire()
    }
    async fn delete_rate_limit(&self, _: &DeviceId) -> store::Result<bool> {
        on_fire()
    }
    async fn list_rate_limits(&self, _: model::Timestamp) -> store::Result<Vec<store::RateLimit>> {
        on_fire()
    }
}

#[async_trait]
impl store::ConsoleStore for BrokenStore {
    async fn ack_alert(&self, _: &store::AlertAck) -> store::Result<()> {
        on_fire()
    }
    async fn alert_acks(&self, _: &[String]) -> store::Result<Vec<store::AlertAck>> {
        on_fire()
    }
}

#[async_trait]
impl Store for BrokenStore {
    async fn insert_device(&self, _: &Device) -> store::Result<()> {
        Err(store::Error::Internal(
            "disk on fire at /secret/path".into(),
        ))
    }
    async fn upsert_devices(&self, _: &[Device]) -> store::Result<()> {
        Err(store::Error::Internal(
            "disk on fire at /secret/path".into(),
        ))
    }
    async fn get_device(&self, _: &DeviceId) -> store::Result<Option<Device>> {
        Err(store::Error::Internal(
            "disk on fire at /secret/path".into(),
        ))
    }
    async fn list_devices(&self, _: &store::DeviceQuery) -> store::Result<Vec<Device>> {
        Err(store::Error::Internal(
            "disk on fire at /secret/path".into(),
        ))
    }
    async fn set_device_status(&self, _: &DeviceId, _: DeviceStatus) -> store::Result<()> {
        Err(store::Error::Internal(
            "disk on fire at /secret/path".into(),
        ))
    }
    async fn append_events(&self, _: &[Event]) -> store::Result<()> {
        Err(store::Error::Internal(
            "disk on fire at /secret/path".into(),
        ))
    }
    async fn list_events(&self, _: &store::EventQuery) -> store::Result<Vec<Event>> {
        Err(store::Error::Unavailable(
            "database locked at /secret/path".into(),
        ))
    }
    async fn prune_events(&self, _: Timestamp) -> store::Result<u64> {
        Err(store::Error::Internal(
            "disk on fire at /secret/path".into(),
        ))
    }
    async fn upsert_alerts(&self, _: &[Alert]) -> store::Result<()> {
        Err(store::Error::Internal(
            "disk on fire at /secret/path".into(),
        ))
    }
    async fn get_alert(&self, _: &AlertId) -> store::Result<Option<Alert>> {
        Err(store::Error::Internal(
            "disk on fire at /secret/path".into(),
        ))
    }
    async fn list_alerts(&self, _: &store::AlertQuery) -> store::Result<Vec<Alert>> {
        Err(store::Error::Internal(
            "disk on fire at /secret/path".into(),
        ))
    }
    async fn insert_token(&self, _: &ApiToken) -> store::Result<()> {
        Err(store::Error::Internal(
            "disk on fire at /secret/path".into(),
        ))
    }
    async fn find_token(&self, sha256: &str) -> store::Result<Option<ApiToken>> {
        Ok((sha256 == token_sha256(VIEWER)).then(|| ApiToken {
            sha256: sha256.into(),
            name: "viewer".into(),
            role: "viewer".into(),
            created_at: Timestamp::from_millis(0),
        }))
    }
    async fn stats(&self) -> store::Result<store::StoreStats> {
        Err(store::Error::Internal(
            "disk on fire at /secret/path".into(),
        ))
    }
    async fn close(&self) -> store::Result<()> {
        Ok(())
    }
}

#[async_trait]
impl store::AuditStore for BrokenStore {
    async fn append_audit(
        &self,
        _: &[store::audit::AuditEntry],
    ) -> store::Result<Vec<store::audit::AuditRecord>> {
        Err(store::Error::Internal(
            "disk on fire at /secret/path".into(),
        ))
    }
    async fn list_audit(&self, _: u64, _: usize) -> store::Result<Vec<store::audit::StoredAudit>> {
        Err(store::Error::Internal(
            "disk on fire at /secret/path".into(),
        ))
    }
}

#[async_trait]
impl store::GatewayStore for BrokenStore {
    async fn next_command_counters(&self, _: &[DeviceId], _: u64) -> store::Result<Vec<u64>> {
        Err(store::Error::Internal(
            "disk on fire at /secret/path".into(),
        ))
    }
    async fn put_command(&self, _: &store::audit::CommandRecord) -> store::Result<()> {
        Err(store::Error::Internal(
            "disk on fire at /secret/path".into(),
        ))
    }
    async fn get_command(&self, _: &str) -> store::Result<Option<store::audit::CommandRecord>> {
        Err(store::Error::Internal(
            "disk on fire at /secret/path".into(),
        ))
    }
    async fn list_commands(
        &self,
        _: &store::audit::CommandQuery,
    ) -> store::Result<Vec<store::audit::CommandRecord>> {
        Err(store::Error::Internal(
            "disk on fire at /secret/path".into(),
        ))
    }
}

civic::broken_civic_stores!(BrokenStore);

#[tokio::test]
async fn internal_failures_are_generic() {
    let mut f = fixture().await;
    f.store = Arc::new(BrokenStore);
    let reply = f.get("/api/v1/devices", VIEWER).await;
    assert_eq!(
        reply.assert_error(StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        "internal error"
    );
    assert!(!reply.text.contains("/secret/path"));
    let reply = f.get("/api/v1/events", VIEWER).await;
    assert_eq!(
        reply.assert_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        "the store is unavailable; retry later",
        "names the dependency (issue 9), never the error's text"
    );
    assert!(!reply.text.contains("/secret/path"));
}

/// Fills `{param}` segments of a route path with a value that exists in the fixture.
fn concrete(path: &str) -> String {
    path.replace("/devices/{id}", "/devices/pump-1")
        .replace("/alerts/{id}", "/alerts/alert-1")
        .replace("/commands/{id}", "/commands/cmd-1")
        .replace("/advisories/{id}", "/advisories/adv-1")
        .replace("/incidents/{id}", "/incidents/INC-000001")
        .replace("/users/{name}", "/users/alice")
        .replace("/actions/{action_id}", "/actions/A1")
}

#[test]
fn openapi_document_matches_the_routes() {
    let doc: Json = serde_json::from_str(crate::OPENAPI_JSON).expect("openapi.json parses");
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    for schema in [
        "Device",
        "Alert",
        "Event",
        "Status",
        "Error",
        "NewDevice",
        "ImportReport",
        "FlowReport",
    ] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "schema {schema} missing"
        );
    }
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            documented.insert((method.clone(), path.clone()));
            // Public routes say so; the others inherit the document's bearer requirement.
            let route = ROUTES
                .iter()
                .find(|r| r.path == path && r.verb.as_str() == method)
                .unwrap_or_else(|| panic!("{method} {path} is documented but not served"));
            let public = op.get("security") == Some(&json!([]));
            assert_eq!(
                public,
                route.access == Access::Public,
                "{method} {path}: security"
            );
            // Every path parameter is declared.
            let declared = op["parameters"].as_array().map(Vec::len).unwrap_or(0);
            assert!(
                path.matches('{').count() <= declared,
                "{method} {path}: parameters"
            );
        }
    }
    let served: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|r| (r.verb.as_str().to_owned(), r.path.to_owned()))
        .collect();
    assert_eq!(documented, served);
    // Every $ref resolves.
    let text = crate::OPENAPI_JSON;
    for piece in text.split("\"$ref\": \"#/").skip(1) {
        let pointer = format!("/{}", &piece[..piece.find('"').unwrap()]);
        assert!(doc.pointer(&pointer).is_some(), "dangling $ref {pointer}");
    }
}

#[tokio::test]
async fn router_serves_every_route_in_the_table() {
    let f = fixture().await;
    for route in ROUTES {
        let method = match route.verb {
            Verb::Get => Method::GET,
            Verb::Post => Method::POST,
            Verb::Patch => Method::PATCH,
        };
        if route.path.ends_with("/stream") {
            // An event stream never ends: its status is checked, its body not read.
            let req = Request::builder()
                .uri(route.path)
                .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"))
                .body(Body::empty())
                .unwrap();
            assert_eq!(f.app().oneshot(req).await.unwrap().status(), StatusCode::OK);
            continue;
        }
        let reply = f
            .send(method, &concrete(route.path), Some(ADMIN), None)
            .await;
        assert_ne!(
            reply.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{:?} {}",
            route.verb,
            route.path
        );
        if reply.status == StatusCode::NOT_FOUND {
            assert_ne!(
                reply.json()["error"]["message"],
                "no such route",
                "{}",
                route.path
            );
        }
    }
    let reply = f
        .send(Method::GET, "/api/v1/openapi.json", None, None)
        .await;
    assert_eq!(
        reply.headers.get(header::CONTENT_TYPE).unwrap(),
        "application/json"
    );
    assert_eq!(reply.json()["info"]["title"], "citysec API");
}

#[test]
fn token_cache_is_bounded() {
    use crate::auth::{Principal, Role, TokenCache};
    let cache = TokenCache::new();
    let principal = Principal {
        name: "t".into(),
        role: Role::Viewer,
    };
    for i in 0..TokenCache::MAX_ENTRIES * 3 {
        cache.put(format!("{i:064x}"), principal.clone());
        assert!(cache.len() <= TokenCache::MAX_ENTRIES);
    }
    let last = format!("{:064x}", TokenCache::MAX_ENTRIES * 3 - 1);
    assert_eq!(cache.get(&last), Some(principal));
    assert_eq!(cache.get("unknown"), None);
}

#[test]
fn token_sha256_is_lowercase_hex() {
    assert_eq!(
        token_sha256("abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

/// The command and audit routes: what the web layer itself checks (the gateway's
/// decisions are tested in `gateway` and, end to end, in `app`).
#[tokio::test]
async fn command_and_audit_routes() {
    let f = fixture().await;
    // Without a gateway behind the platform, creating is unavailable (and says nothing more).
    let reply = f
        .post_json(
            "/api/v1/commands",
            OPERATOR,
            json!({"devices": ["siren-1"], "action": "silence"}),
        )
        .await;
    reply.assert_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    let reply = f
        .post_json(
            "/api/v1/commands/cmd-1/approve",
            ADMIN,
            json!({"payload_sha256": "ab"}),
        )
        .await;
    assert_eq!(
        reply.assert_error(StatusCode::BAD_REQUEST, "invalid"),
        "payload_sha256 must be 64 lowercase hex digits"
    );
    let reply = f
        .post_json(
            "/api/v1/commands/cmd-1/approve",
            ADMIN,
            json!({"sha": "ab"}),
        )
        .await;
    reply.assert_error(StatusCode::BAD_REQUEST, "invalid");
    let reply = f.get("/api/v1/commands?state=lost", VIEWER).await;
    assert!(
        reply
            .assert_error(StatusCode::BAD_REQUEST, "invalid")
            .starts_with("state must be one of")
    );

    // Listing reads the store.
    f.store
        .put_command(&store::audit::CommandRecord {
            id: "cmd-1".into(),
            created_at: Timestamp::from_millis(1_795_000_000_000),
            state: "acked".into(),
            body: json!({"id": "cmd-1", "state": "acked"}),
        })
        .await
        .unwrap();
    let reply = f.get("/api/v1/commands?state=acked&limit=5", VIEWER).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json()["items"][0]["id"], "cmd-1");

    // The audit log: export needs admin, verification analyst.
    f.store
        .append_audit(&[store::audit::AuditEntry {
            ts: Timestamp::from_millis(1),
            actor: "alice".into(),
            action: "login".into(),
            subject: None,
            outcome: "ok".into(),
            detail: json!({}),
        }])
        .await
        .unwrap();
    f.get("/api/v1/audit", OPERATOR)
        .await
        .assert_error(StatusCode::FORBIDDEN, "forbidden");
    let reply = f.get("/api/v1/audit?after=0", ADMIN).await;
    let body: Json =
        serde_json::from_str(reply.json()["items"][0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["actor"], "alice");
    assert_eq!(reply.json()["items"][0]["seq"], 1);
    f.get("/api/v1/audit/verify", VIEWER)
        .await
        .assert_error(StatusCode::FORBIDDEN, "forbidden");
    let reply = f.get("/api/v1/audit/verify", ANALYST).await;
    assert_eq!(reply.json()["records"], 1);
    assert_eq!(reply.json()["broken"], Json::Null);
}

#[tokio::test]
async fn learn_and_mute_are_attributed_and_listed() {
    let f = fixture().await;
    let reply = f
        .post_json(
            "/api/v1/alerts/alert-2/learn",
            ANALYST,
            json!({"reason": "the siren test every first Monday"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json()["kind"], "learned");
    assert_eq!(reply.json()["actor"], "analyst token");
    assert_eq!(reply.json()["rule"], "actuation.uncommanded");
    let reply = f
        .post_json(
            "/api/v1/alerts/alert-1/mute",
            ANALYST,
            json!({"reason": "pen test this week", "duration_s": 3600}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json()["kind"], "muted");
    assert!(reply.json()["until"].is_string());
    let listed = f
        .send(Method::GET, "/api/v1/suppressions", Some(VIEWER), None)
        .await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.json()["suppressions"].as_array().unwrap().len(), 2);
    // lifting
    let lift = f
        .post_json(
            "/api/v1/suppressions/lift",
            ANALYST,
            json!({"rule": "actuation.uncommanded", "key": ""}),
        )
        .await;
    assert_eq!(lift.status, StatusCode::NO_CONTENT, "{}", lift.text);
    f.post_json(
        "/api/v1/suppressions/lift",
        ANALYST,
        json!({"rule": "actuation.uncommanded", "key": ""}),
    )
    .await
    .assert_error(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn learn_and_mute_refuse_bad_requests() {
    let f = fixture().await;
    for (path, body) in [
        ("/api/v1/alerts/alert-1/learn", json!({"reason": "  "})),
        (
            "/api/v1/alerts/alert-1/learn",
            json!({"reason": "x", "duration_s": 60}),
        ),
        (
            "/api/v1/alerts/alert-1/mute",
            json!({"reason": "x", "duration_s": 0}),
        ),
        (
            "/api/v1/alerts/alert-1/mute",
            json!({"reason": "x", "duration_s": 999_999_999u64}),
        ),
        (
            "/api/v1/alerts/alert-1/mute",
            json!({"reason": "x", "extra": 1}),
        ),
        (
            "/api/v1/alerts/alert-1/mute",
            json!({"reason": "bad\u{7}bell"}),
        ),
    ] {
        let reply = f.post_json(path, ANALYST, body.clone()).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{path} {body}: {}",
            reply.text
        );
    }
    f.post_json(
        "/api/v1/alerts/alert-404/learn",
        ANALYST,
        json!({"reason": "x"}),
    )
    .await
    .assert_error(StatusCode::NOT_FOUND, "not_found");
    // nothing was stored by the refused requests
    assert!(f.store.list_suppressions().await.unwrap().is_empty());
}

#[tokio::test]
async fn indicators_are_added_per_object_and_paged() {
    let f = fixture().await;
    let bundle = json!({"type": "bundle", "id": "bundle--1", "objects": [
        {"type": "indicator", "id": "indicator--1", "pattern": "[ipv4-addr:value = '203.0.113.5']"},
        {"type": "indicator", "id": "indicator--2", "pattern": "[ipv4-addr:value = '203.0.113.6']"},
        {"type": "indicator", "id": "indicator--3"},
    ]});
    let reply = f.post_json("/api/v1/indicators", ANALYST, bundle).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json()["accepted"], 2);
    assert_eq!(reply.json()["refused"][0]["id"], "indicator--3");
    let page = f
        .send(
            Method::GET,
            "/api/v1/indicators?limit=1",
            Some(VIEWER),
            None,
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    assert_eq!(page.json()["indicators"].as_array().unwrap().len(), 1);
    let next = page.json()["next"].as_str().unwrap().to_owned();
    let rest = f
        .send(
            Method::GET,
            &format!("/api/v1/indicators?after={next}&limit=10"),
            Some(VIEWER),
            None,
        )
        .await;
    assert_eq!(rest.json()["indicators"].as_array().unwrap().len(), 1);
    assert!(rest.json()["next"].is_null());
    let status = f
        .send(Method::GET, "/api/v1/detect", Some(VIEWER), None)
        .await;
    assert_eq!(status.json()["builtin_rules"][0], "policy.conduit");
}
mod civic;

//! Tests of the public-facing routes: the citizen report intake (JSON and HTML form, limits,
//! cleaning, escaping, rate limits), the public CAP document routes (issued only, bytes as
//! signed), and the roles of the advisory routes. The advisory rules themselves are tested
//! in `app`, where they live, against a running platform.

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, StatusCode, header};
use model::{Advisory, CitizenReport, ReportCategory};
use serde_json::{Value as Json, json};
use store::{ReportQuery, Store};
use tower::ServiceExt;

use super::{ADMIN, ANALYST, OPERATOR, VIEWER, fixture};
use crate::{
    Advisories, DraftRequest, FromAlertRequest, FromIncidentRequest, PlatformError, Principal,
    Readiness, Reports, clean_text, html_escape,
};

/// Reports go to the real store; advisories are not wired here (their rules are `app`'s);
/// readiness answers with the stored history.
pub(super) struct FakeCivic {
    pub store: Arc<dyn Store>,
}

fn not_here() -> PlatformError {
    PlatformError::new(
        model::ErrorCode::Unavailable,
        "advisories are implemented by app",
    )
}

#[async_trait]
impl Advisories for FakeCivic {
    async fn draft(&self, _: &Principal, _: DraftRequest) -> Result<Advisory, PlatformError> {
        Err(not_here())
    }
    async fn draft_from_alert(
        &self,
        _: &Principal,
        _: &str,
        _: FromAlertRequest,
    ) -> Result<Advisory, PlatformError> {
        Err(not_here())
    }
    async fn draft_from_incident(
        &self,
        _: &Principal,
        _: &str,
        _: FromIncidentRequest,
    ) -> Result<Advisory, PlatformError> {
        Err(not_here())
    }
    async fn import(&self, _: &Principal, _: &str) -> Result<Advisory, PlatformError> {
        Err(not_here())
    }
    async fn approve(&self, _: &Principal, _: &str) -> Result<Advisory, PlatformError> {
        Err(not_here())
    }
    async fn issue(&self, _: &Principal, _: &str) -> Result<Advisory, PlatformError> {
        Err(not_here())
    }
    async fn cancel(
        &self,
        _: &Principal,
        _: &str,
        _: Option<String>,
    ) -> Result<Advisory, PlatformError> {
        Err(not_here())
    }
    async fn feed(&self) -> Result<String, PlatformError> {
        Err(not_here())
    }
    fn public_key_pem(&self) -> String {
        String::new()
    }
}

#[async_trait]
impl Reports for FakeCivic {
    async fn submit(&self, report: CitizenReport) -> Result<(), PlatformError> {
        Ok(self.store.insert_report(&report).await?)
    }
}

#[async_trait]
impl Readiness for FakeCivic {
    async fn compute(&self, history: usize) -> Result<Json, PlatformError> {
        let records = self.store.list_readiness(None, history).await?;
        Ok(json!({ "history": records.len() }))
    }
}

/// Implements the advisory and readiness stores for a store type whose every call fails.
macro_rules! broken_civic_stores {
    ($ty:ty) => {
        #[async_trait::async_trait]
        impl store::AdvisoryStore for $ty {
            async fn write_advisories(&self, _: &[model::Advisory]) -> store::Result<()> {
                Err(store::Error::Internal(
                    "disk on fire at /secret/path".into(),
                ))
            }
            async fn get_advisory(&self, _: &str) -> store::Result<Option<model::Advisory>> {
                Err(store::Error::Internal(
                    "disk on fire at /secret/path".into(),
                ))
            }
            async fn list_advisories(
                &self,
                _: &store::AdvisoryQuery,
            ) -> store::Result<Vec<model::Advisory>> {
                Err(store::Error::Internal(
                    "disk on fire at /secret/path".into(),
                ))
            }
            async fn insert_report(&self, _: &model::CitizenReport) -> store::Result<()> {
                Err(store::Error::Internal(
                    "disk on fire at /secret/path".into(),
                ))
            }
            async fn list_reports(
                &self,
                _: &store::ReportQuery,
            ) -> store::Result<Vec<model::CitizenReport>> {
                Err(store::Error::Internal(
                    "disk on fire at /secret/path".into(),
                ))
            }
        }
        #[async_trait::async_trait]
        impl store::ReadinessStore for $ty {
            async fn append_readiness(&self, _: &store::ReadinessRecord) -> store::Result<()> {
                Err(store::Error::Internal(
                    "disk on fire at /secret/path".into(),
                ))
            }
            async fn list_readiness(
                &self,
                _: Option<model::Timestamp>,
                _: usize,
            ) -> store::Result<Vec<store::ReadinessRecord>> {
                Err(store::Error::Internal(
                    "disk on fire at /secret/path".into(),
                ))
            }
            async fn insert_exercise(&self, _: &model::ExerciseRecord) -> store::Result<()> {
                Err(store::Error::Internal(
                    "disk on fire at /secret/path".into(),
                ))
            }
            async fn list_exercises(
                &self,
                _: Option<model::Timestamp>,
                _: usize,
            ) -> store::Result<Vec<model::ExerciseRecord>> {
                Err(store::Error::Internal(
                    "disk on fire at /secret/path".into(),
                ))
            }
        }
    };
}
pub(super) use broken_civic_stores;

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn json(&self) -> Json {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.text()))
    }
}

/// Sends one request to a long-lived router (so rate limits carry over), from `peer`.
async fn call(
    app: &Router,
    method: Method,
    path: &str,
    peer: &str,
    body: Option<(&str, String)>,
    token: Option<&str>,
) -> Answer {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(token) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let mut req = match body {
        Some((ct, text)) => req.header(header::CONTENT_TYPE, ct).body(Body::from(text)),
        None => req.body(Body::empty()),
    }
    .unwrap();
    let addr: SocketAddr = peer.parse().unwrap();
    req.extensions_mut().insert(ConnectInfo(addr));
    let response = app.clone().oneshot(req).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap()
        .to_vec();
    Answer {
        status,
        headers,
        body,
    }
}

fn report(text: &str) -> (&'static str, String) {
    (
        "application/json",
        json!({"category": "siren_no_storm", "text": text, "location": {"lat": 45.52, "lon": -122.68}})
            .to_string(),
    )
}

#[test]
fn text_cleaning_rules() {
    let cases: &[(&str, Result<&str, &str>)] = &[
        ("siren on 5th street", Ok("siren on 5th street")),
        ("  lots   of\t\tspace  ", Ok("lots of space")),
        ("a\r\nb\rc", Ok("a\nb\nc")),
        ("one\n\n\n\n\ntwo", Ok("one\n\ntwo")),
        ("bell\u{7} and nul\u{0}", Ok("bell and nul")),
        ("abc\u{202E}gnp.exe\u{200B}", Ok("abcgnp.exe")),
        ("<script>alert(1)</script>", Ok("<script>alert(1)</script>")),
        ("   \n\t ", Err("text is empty")),
        ("\u{200B}\u{FEFF}", Err("text is empty")),
    ];
    for (input, expected) in cases {
        let got = clean_text(input, 1000).map(|(t, _)| t);
        assert_eq!(
            got.as_deref().map_err(String::as_str),
            *expected,
            "{input:?}"
        );
    }
    let (_, notes) = clean_text("x\u{7}\u{202E}", 1000).unwrap();
    assert_eq!(
        notes,
        [
            "removed 1 control characters",
            "removed 1 invisible or direction-changing characters"
        ]
    );
    assert_eq!(
        clean_text(&"é".repeat(11), 10).unwrap_err(),
        "text is 11 characters long; at most 10 are accepted"
    );
    assert_eq!(
        html_escape("<a href=\"x\" onclick='y'>&</a>"),
        "&lt;a href=&quot;x&quot; onclick=&#39;y&#39;&gt;&amp;&lt;/a&gt;"
    );
}

#[tokio::test]
async fn reports_are_accepted_cleaned_and_stored_without_the_sender() {
    let f = fixture().await;
    let app = f.app();
    let answer = call(
        &app,
        Method::POST,
        "/api/v1/reports",
        "198.51.100.7:5000",
        Some(report("siren\u{7} sounding,   sky clear")),
        None,
    )
    .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.text());
    let receipt = answer.json();
    assert_eq!(receipt["status"], "received");
    assert_eq!(receipt["cleaned"][0], "removed 1 control characters");
    let stored = f.store.list_reports(&ReportQuery::default()).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].id, receipt["id"].as_str().unwrap());
    assert_eq!(stored[0].text, "siren sounding, sky clear");
    assert_eq!(stored[0].category, ReportCategory::SirenNoStorm);
    let row = serde_json::to_string(&stored[0]).unwrap();
    assert!(!row.contains("198.51.100.7"), "{row}");
}

#[tokio::test]
async fn bad_reports_are_refused_with_a_reason() {
    let f = fixture().await;
    let app = f.app();
    let cases: Vec<((&str, String), StatusCode, &str)> = vec![
        (report(&"x".repeat(1001)), StatusCode::BAD_REQUEST, "text is 1001 characters long; at most 1000 are accepted"),
        (report(" \u{200B} "), StatusCode::BAD_REQUEST, "text is empty"),
        (
            ("application/json", json!({"category": "ufo", "text": "x", "location": {"lat": 1, "lon": 1}}).to_string()),
            StatusCode::BAD_REQUEST,
            "invalid request body: category: unknown variant `ufo`, expected one of `siren_no_storm`, `traffic_signal_stuck`, `strange_display`, `other` at line 1 column 17",
        ),
        (
            ("application/json", json!({"category": "other", "text": "x", "location": {"lat": 91, "lon": 1}}).to_string()),
            StatusCode::BAD_REQUEST,
            "location must be WGS 84 coordinates (lat -90..90, lon -180..180)",
        ),
        (
            ("application/json", json!({"category": "other", "text": "x", "location": {"lat": 1, "lon": 1}, "ip": "1.2.3.4"}).to_string()),
            StatusCode::BAD_REQUEST,
            "invalid request body: ip: unknown field `ip`, expected one of `category`, `text`, `location` at line 1 column 24",
        ),
        (("application/json", "{".into()), StatusCode::BAD_REQUEST, "request body is not valid json: EOF while parsing an object at line 1 column 1"),
    ];
    for (i, (body, status, message)) in cases.into_iter().enumerate() {
        // A different source each time, so the rate limit stays out of the way.
        let peer = format!("203.0.113.{}:4000", i + 1);
        let answer = call(
            &app,
            Method::POST,
            "/api/v1/reports",
            &peer,
            Some(body),
            None,
        )
        .await;
        assert_eq!(answer.status, status, "{}", answer.text());
        assert_eq!(answer.json()["error"]["message"], message);
    }
    // Over the body limit: refused before parsing.
    let huge = report(&"y".repeat(20_000));
    let answer = call(
        &app,
        Method::POST,
        "/api/v1/reports",
        "203.0.113.99:1",
        Some(huge),
        None,
    )
    .await;
    assert_eq!(
        answer.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        answer.text()
    );
    assert!(
        f.store
            .list_reports(&ReportQuery::default())
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn floods_from_one_source_are_limited() {
    let mut f = fixture().await;
    f.report_limits.per_source_burst = 3;
    f.report_limits.per_source_per_hour = 1;
    let app = f.app();
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let a = call(
            &app,
            Method::POST,
            "/api/v1/reports",
            "192.0.2.10:1111",
            Some(report("siren")),
            None,
        )
        .await;
        statuses.push(a.status.as_u16());
        if a.status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(a.headers.get(header::RETRY_AFTER).unwrap(), "60");
            assert_eq!(a.json()["error"]["code"], "rate_limited");
        }
    }
    assert_eq!(statuses, [202, 202, 202, 429, 429, 429]);
    // Another port of the same address is the same source; another address is not; IPv6
    // hosts of one /64 share a bucket.
    let same = call(
        &app,
        Method::POST,
        "/api/v1/reports",
        "192.0.2.10:2222",
        Some(report("x")),
        None,
    )
    .await;
    assert_eq!(same.status, StatusCode::TOO_MANY_REQUESTS);
    let other = call(
        &app,
        Method::POST,
        "/api/v1/reports",
        "192.0.2.11:1111",
        Some(report("x")),
        None,
    )
    .await;
    assert_eq!(other.status, StatusCode::ACCEPTED);
    for host in 1..=4 {
        let peer = format!("[2001:db8:1:2::{host}]:443");
        let a = call(
            &app,
            Method::POST,
            "/api/v1/reports",
            &peer,
            Some(report("x")),
            None,
        )
        .await;
        let expected = if host <= 3 { 202 } else { 429 };
        assert_eq!(a.status.as_u16(), expected, "{peer}");
    }
    assert_eq!(
        f.store
            .list_reports(&ReportQuery::default())
            .await
            .unwrap()
            .len(),
        7
    );
}

#[tokio::test]
async fn a_flood_from_many_sources_hits_the_global_limit() {
    let mut f = fixture().await;
    f.report_limits.global_per_minute = 5;
    let app = f.app();
    let mut accepted = 0;
    for i in 0..10 {
        let peer = format!("10.1.0.{i}:80");
        let a = call(
            &app,
            Method::POST,
            "/api/v1/reports",
            &peer,
            Some(report("x")),
            None,
        )
        .await;
        if a.status == StatusCode::ACCEPTED {
            accepted += 1;
        } else {
            assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(
                a.json()["error"]["message"],
                "the report service is busy; please try again in a minute"
            );
        }
    }
    assert_eq!(accepted, 5);
}

#[tokio::test]
async fn the_report_page_and_form_escape_what_they_echo() {
    let f = fixture().await;
    let app = f.app();
    let page = call(&app, Method::GET, "/report", "192.0.2.1:1", None, None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(
        page.headers.get(header::CONTENT_TYPE).unwrap(),
        "text/html; charset=utf-8"
    );
    let csp = page
        .headers
        .get("content-security-policy")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("form-action 'self'"),
        "{csp}"
    );
    let html = page.text();
    assert!(html.contains("<form method=\"post\" action=\"/report\">"));
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no external assets"
    );

    let form =
        "category=strange_display&text=%3Cscript%3Ealert(1)%3C%2Fscript%3E&lat=45.5&lon=-122.6";
    let ok = call(
        &app,
        Method::POST,
        "/report",
        "192.0.2.1:1",
        Some(("application/x-www-form-urlencoded", form.into())),
        None,
    )
    .await;
    assert_eq!(ok.status, StatusCode::ACCEPTED, "{}", ok.text());
    assert!(ok.text().contains("Thank you"));
    let stored = f.store.list_reports(&ReportQuery::default()).await.unwrap();
    assert_eq!(stored[0].text, "<script>alert(1)</script>");

    let bad = "category=%3Cimg%20src%3Dx%3E&text=x&lat=1&lon=1";
    let refused = call(
        &app,
        Method::POST,
        "/report",
        "192.0.2.1:1",
        Some(("application/x-www-form-urlencoded", bad.into())),
        None,
    )
    .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    let text = refused.text();
    assert!(
        text.contains("unknown category &quot;&lt;img src=x&gt;&quot;"),
        "{text}"
    );
    assert!(!text.contains("<img src=x>"));
    let nan = "category=other&text=x&lat=NaN&lon=1";
    let refused = call(
        &app,
        Method::POST,
        "/report",
        "192.0.2.1:1",
        Some(("application/x-www-form-urlencoded", nan.into())),
        None,
    )
    .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(
        refused
            .text()
            .contains("location must be WGS 84 coordinates")
    );
}

fn issued(id: &str, state: model::AdvisoryState) -> Advisory {
    let mut a = store::testsuite::advisory(id, 1_000);
    a.state = state;
    if state.was_issued() {
        a.issued_at = Some(model::Timestamp::from_millis(2_000));
        a.document = Some("<?xml version=\"1.0\"?>\n<alert/>\n".into());
        a.signature = Some("AAECAw==".into());
    }
    a
}

#[tokio::test]
async fn the_public_cap_routes_show_issued_documents_only() {
    let f = fixture().await;
    f.store
        .write_advisories(&[
            issued("adv-issued", model::AdvisoryState::Issued),
            issued("adv-draft", model::AdvisoryState::Draft),
        ])
        .await
        .unwrap();
    let app = f.app();
    let doc = call(
        &app,
        Method::GET,
        "/cap/alerts/adv-issued",
        "192.0.2.1:1",
        None,
        None,
    )
    .await;
    assert_eq!(doc.status, StatusCode::OK);
    assert_eq!(
        doc.headers.get(header::CONTENT_TYPE).unwrap(),
        "application/cap+xml; charset=utf-8"
    );
    assert_eq!(doc.text(), "<?xml version=\"1.0\"?>\n<alert/>\n");
    let sig = call(
        &app,
        Method::GET,
        "/cap/alerts/adv-issued/signature",
        "192.0.2.1:1",
        None,
        None,
    )
    .await;
    assert_eq!(sig.status, StatusCode::OK);
    assert_eq!(sig.body, [0, 1, 2, 3]);
    for path in [
        "/cap/alerts/adv-draft",
        "/cap/alerts/adv-draft/signature",
        "/cap/alerts/nope",
        "/cap/alerts/..%2Fetc",
    ] {
        let a = call(&app, Method::GET, path, "192.0.2.1:1", None, None).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(
            a.json()["error"]["message"],
            "no such CAP document",
            "{path}"
        );
    }
}

#[tokio::test]
async fn the_advisory_list_pages_on_the_server_after_the_last_id_seen() {
    let f = fixture().await;
    let advisories: Vec<Advisory> = (0..5)
        .map(|i| store::testsuite::advisory(&format!("adv-{i}"), 1_000 + (i / 2) * 10))
        .collect();
    f.store.write_advisories(&advisories).await.unwrap();
    let app = f.app();
    let mut seen = Vec::new();
    let mut after = String::new();
    loop {
        let path = if after.is_empty() {
            "/api/v1/advisories?limit=2".to_owned()
        } else {
            format!("/api/v1/advisories?limit=2&after={after}")
        };
        let page = call(&app, Method::GET, &path, "192.0.2.1:1", None, Some(VIEWER)).await;
        assert_eq!(page.status, StatusCode::OK);
        let ids: Vec<String> = page
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["id"].as_str().unwrap().to_owned())
            .collect();
        let Some(last) = ids.last() else { break };
        after = last.clone();
        seen.extend(ids);
    }
    // Newest draft first; two drafted in the same millisecond are neither lost nor repeated.
    assert_eq!(seen, ["adv-4", "adv-3", "adv-2", "adv-1", "adv-0"]);
    let bad = call(
        &app,
        Method::GET,
        "/api/v1/advisories?after=adv-nope",
        "192.0.2.1:1",
        None,
        Some(VIEWER),
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        bad.json()["error"]["message"],
        "after: no advisory adv-nope to page after"
    );
}

#[tokio::test]
async fn advisory_routes_need_their_roles() {
    let f = fixture().await;
    let app = f.app();
    let draft = || Some(("application/json", json!({}).to_string()));
    let cases: Vec<(Method, &str, Option<&str>, u16)> = vec![
        (Method::GET, "/api/v1/advisories", None, 401),
        (Method::GET, "/api/v1/advisories", Some(VIEWER), 200),
        (Method::POST, "/api/v1/advisories", Some(VIEWER), 403),
        (Method::POST, "/api/v1/advisories", Some(ANALYST), 400),
        (
            Method::POST,
            "/api/v1/advisories/from-alert/al-1",
            Some(VIEWER),
            403,
        ),
        (
            Method::POST,
            "/api/v1/advisories/adv-1/approve",
            Some(ANALYST),
            403,
        ),
        (
            Method::POST,
            "/api/v1/advisories/adv-1/approve",
            Some(OPERATOR),
            503,
        ),
        (
            Method::POST,
            "/api/v1/advisories/adv-1/issue",
            Some(ANALYST),
            403,
        ),
        (
            Method::POST,
            "/api/v1/advisories/adv-1/cancel",
            Some(ANALYST),
            403,
        ),
        (
            Method::POST,
            "/api/v1/advisories/adv-1/cancel",
            Some(ADMIN),
            503,
        ),
        (Method::GET, "/api/v1/advisories/adv-1", Some(VIEWER), 404),
        (
            Method::POST,
            "/api/v1/incidents/INC-000001/advisory",
            Some(VIEWER),
            403,
        ),
        (
            Method::POST,
            "/api/v1/incidents/INC-000001/advisory",
            Some(ANALYST),
            400,
        ),
        (Method::GET, "/api/v1/readiness", None, 401),
        (Method::GET, "/api/v1/readiness", Some(VIEWER), 200),
        (Method::GET, "/api/v1/exercises", None, 401),
        (Method::GET, "/api/v1/exercises", Some(VIEWER), 200),
        (Method::POST, "/api/v1/exercises", Some(VIEWER), 403),
        (Method::POST, "/api/v1/exercises", Some(ANALYST), 403),
        (Method::POST, "/api/v1/exercises", Some(OPERATOR), 400),
        (Method::GET, "/cap/key.pem", None, 200),
    ];
    for (method, path, token, status) in cases {
        let body = if method == Method::POST {
            draft()
        } else {
            None
        };
        let a = call(&app, method.clone(), path, "192.0.2.1:1", body, token).await;
        assert_eq!(a.status.as_u16(), status, "{method} {path}: {}", a.text());
    }
}

#[tokio::test]
async fn exercise_results_are_checked_then_stored_with_who_posted_them() {
    let f = fixture().await;
    let app = f.app();
    let now = model::Timestamp::now();
    let result = |scenarios: Json| {
        json!({
            "started": now.saturating_sub_ms(60_000),
            "finished": now,
            "seed": 1,
            "devices": 63,
            "scenarios": scenarios,
            "false_alerts": 2,
        })
    };
    let post = |body: Json| {
        let app = app.clone();
        async move {
            call(
                &app,
                Method::POST,
                "/api/v1/exercises",
                "192.0.2.1:1",
                Some(("application/json", body.to_string())),
                Some(OPERATOR),
            )
            .await
        }
    };
    let good = json!([
        {"scenario": "siren-replay", "detected": true, "time_to_detect_s": 0.5,
         "rules_fired": ["actuation.uncommanded"]},
        {"scenario": "mirai-camera", "detected": false, "rules_missing": ["flow.scan"]},
    ]);
    // Each refusal says why, and nothing is stored.
    let mut late = result(good.clone());
    late["finished"] = json!(now.saturating_add_ms(3_600_000));
    let mut reversed = result(good.clone());
    reversed["started"] = json!(now.saturating_add_ms(1_000));
    let mut unknown = result(good.clone());
    unknown["benign_device_hours"] = json!(5.0);
    for (body, message) in [
        (
            result(json!([])),
            "invalid exercise result: an exercise needs at least one scenario",
        ),
        (
            result(json!([{"scenario": "siren-replay", "detected": true}])),
            "invalid exercise result: scenarios[0] (siren-replay): detected without time_to_detect_s",
        ),
        (
            result(json!([{"scenario": "x", "detected": false, "time_to_detect_s": 1.0}])),
            "invalid exercise result: scenarios[0] (x): time_to_detect_s given but not detected",
        ),
        (
            result(json!([{"scenario": "x", "detected": true, "time_to_detect_s": -1.0}])),
            "invalid exercise result: scenarios[0] (x): time_to_detect_s must be 0 to 604800 seconds",
        ),
        (
            result(json!([{"scenario": "<script>", "detected": false}])),
            "invalid exercise result: scenarios[0]: the scenario name must be 1 to 64 letters, digits, '-', '_' or '.'",
        ),
        (late, "invalid exercise result: finished is in the future"),
        (
            reversed,
            "invalid exercise result: finished is before started",
        ),
    ] {
        let a = post(body).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.text());
        assert_eq!(a.json()["error"]["message"], message);
    }
    let a = post(unknown).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.text());
    assert!(a.text().contains("benign_device_hours"), "{}", a.text());
    assert!(f.store.list_exercises(None, 0).await.unwrap().is_empty());

    let a = post(result(good)).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text());
    let stored = a.json();
    assert_eq!(stored["recorded_by"], "operator token");
    assert!(stored["id"].as_str().unwrap().starts_with("ex-"));
    let listed = call(
        &app,
        Method::GET,
        "/api/v1/exercises",
        "192.0.2.1:1",
        None,
        Some(VIEWER),
    )
    .await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.json(), json!([stored]));
    assert_eq!(
        listed.json()[0]["result"]["scenarios"][1]["rules_missing"],
        json!(["flow.scan"])
    );
}

//! The console's server side: the embedded page and assets under a strict policy, the
//! cookie session (attributes, CSRF, expiry, logout), the queue with acknowledgements,
//! the map summary, the live stream, the device page, reports and sharing.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use futures_util::StreamExt;
use model::{Alert, AlertId, CitizenReport, Location, ReportCategory, Severity, Timestamp};
use serde_json::{Value as Json, json};
use store::{UserToken, UserTokenKind};
use tower::ServiceExt;

use super::{ADMIN, ANALYST, Reply, VIEWER, fixture, id, seeded_device};
use crate::console::session::{COOKIE, csrf_of};
use crate::console::{ASSETS, CONTENT_SECURITY_POLICY};
use crate::{Role, ServedOverTls};

const PASSWORD: &str = "a-long-enough-password";

struct Call<'a> {
    method: Method,
    path: &'a str,
    cookie: Option<&'a str>,
    csrf: Option<&'a str>,
    origin: Option<&'a str>,
    bearer: Option<&'a str>,
    body: Option<Json>,
    tls: bool,
}

impl<'a> Call<'a> {
    fn new(method: Method, path: &'a str) -> Call<'a> {
        Call {
            method,
            path,
            cookie: None,
            csrf: None,
            origin: None,
            bearer: None,
            body: None,
            tls: false,
        }
    }
}

async fn call(app: &Router, c: Call<'_>) -> Reply {
    let mut req = Request::builder()
        .method(c.method)
        .uri(c.path)
        .header(header::HOST, "console.test");
    if let Some(token) = c.cookie {
        req = req.header(header::COOKIE, format!("theme=dark; {COOKIE}={token}"));
    }
    if let Some(csrf) = c.csrf {
        req = req.header("x-csrf-token", csrf);
    }
    if let Some(origin) = c.origin {
        req = req.header(header::ORIGIN, origin);
    }
    if let Some(token) = c.bearer {
        req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let mut req = match c.body {
        Some(body) => req
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap(),
        None => req.body(Body::empty()).unwrap(),
    };
    if c.tls {
        req.extensions_mut().insert(ServedOverTls);
    }
    let response = app.clone().oneshot(req).await.unwrap();
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

async fn add_user(store: &dyn store::Store, name: &str, role: Role) {
    let user = crate::accounts::new_user(name, role, PASSWORD, Timestamp::now()).unwrap();
    store.insert_user(&user).await.unwrap();
}

/// Signs in through the console's login; returns the session token from the cookie and
/// the CSRF token from the body.
async fn sign_in(app: &Router, name: &str, tls: bool) -> (String, String, String) {
    let mut c = Call::new(Method::POST, "/api/v1/console/login");
    c.body = Some(json!({ "user": name, "password": PASSWORD }));
    c.tls = tls;
    let reply = call(app, c).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let cookie = reply
        .headers
        .get(header::SET_COOKIE)
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let token = cookie
        .strip_prefix(&format!("{COOKIE}="))
        .and_then(|rest| rest.split(';').next())
        .unwrap()
        .to_owned();
    let body = reply.json();
    assert_eq!(body["user"], name);
    assert!(body.get("token").is_none(), "the token stays in the cookie");
    (token, body["csrf"].as_str().unwrap().to_owned(), cookie)
}

fn now_alert(n: u32, device: &str, rule: &str, severity: Severity) -> Alert {
    let ts = Timestamp::now();
    Alert {
        id: AlertId(format!("live-{n}")),
        rule: rule.into(),
        key: format!("indicator--{n}/{device}"),
        severity,
        ts,
        last_ts: ts,
        count: 1,
        device_id: Some(id(device)),
        zone: None,
        source: None,
        title: format!("live alert {n}"),
        explanation: "test".into(),
        evidence: vec![],
    }
}

#[tokio::test]
async fn the_page_and_every_asset_are_embedded_under_a_strict_policy() {
    let f = fixture().await;
    let app = f.app();
    let page = call(&app, Call::new(Method::GET, "/")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(
        page.headers[header::CONTENT_TYPE],
        "text/html; charset=utf-8"
    );
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert_eq!(csp, CONTENT_SECURITY_POLICY);
    for directive in [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{directive}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(page.headers[header::X_FRAME_OPTIONS], "DENY");
    // No inline script or style in the page: every script and style sheet is a file.
    assert!(
        page.text
            .contains(r#"<script type="module" src="/console/app.js"></script>"#)
    );
    assert!(!page.text.contains("<style"));
    assert!(!page.text.contains(" style="));
    assert_eq!(page.text.matches("<script").count(), 1);
    for (name, content_type, body) in ASSETS {
        let reply = call(&app, Call::new(Method::GET, &format!("/console/{name}"))).await;
        assert_eq!(reply.status, StatusCode::OK, "{name}");
        assert_eq!(reply.headers[header::CONTENT_TYPE], *content_type, "{name}");
        assert_eq!(
            reply.headers["content-security-policy"],
            CONTENT_SECURITY_POLICY
        );
        assert_eq!(reply.text, *body);
    }
    let missing = call(&app, Call::new(Method::GET, "/console/../lib.rs")).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let missing = call(&app, Call::new(Method::GET, "/console/nothing.js")).await;
    missing.assert_error(StatusCode::NOT_FOUND, "not_found");
}

#[test]
fn assets_load_nothing_from_elsewhere_and_never_parse_data_as_html() {
    let mut imported = Vec::new();
    for (name, _, body) in ASSETS {
        for forbidden in ["http://", "https://", "//cdn", "@import", "url("] {
            assert!(
                !body.contains(forbidden) || (*name == "icon.svg" && forbidden == "http://"),
                "{name} refers to {forbidden}"
            );
        }
        if name.ends_with(".js") {
            for sink in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
                "new Function",
                "setAttribute('on",
                "srcdoc",
            ] {
                assert!(!body.contains(sink), "{name} uses {sink}");
            }
            for line in body.lines().filter(|l| l.starts_with("import ")) {
                let file = line.rsplit("'./").next().unwrap().trim_end_matches("';");
                imported.push(file.to_owned());
            }
        }
    }
    // Every module imported is embedded.
    for file in imported {
        assert!(
            ASSETS.iter().any(|(n, _, _)| *n == file),
            "{file} is not embedded"
        );
    }
}

#[tokio::test]
async fn a_cookie_session_needs_its_csrf_token_for_every_change_and_ends_at_logout() {
    let f = fixture().await;
    add_user(f.store.as_ref(), "ana", Role::Analyst).await;
    let app = f.app();
    let (token, csrf, cookie) = sign_in(&app, "ana", false).await;
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    assert!(cookie.contains("Path=/"), "{cookie}");
    assert!(cookie.contains("Max-Age=28800"), "{cookie}");
    assert!(!cookie.contains("Secure"), "plain http: {cookie}");
    assert_eq!(csrf, csrf_of(&token));
    assert_ne!(csrf, token);

    let mut c = Call::new(Method::GET, "/api/v1/console/session");
    c.cookie = Some(&token);
    let me = call(&app, c).await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.text);
    assert_eq!(me.json()["user"], "ana");
    assert_eq!(me.json()["role"], "analyst");
    assert_eq!(me.json()["csrf"], csrf.as_str());

    // Reads need no CSRF token; changes do, and it must be this session's.
    let mut c = Call::new(Method::GET, "/api/v1/console/alerts");
    c.cookie = Some(&token);
    assert_eq!(call(&app, c).await.status, StatusCode::OK);
    for (csrf_sent, origin) in [
        (None, None),
        (Some("0".repeat(64)), None),
        (Some(csrf_of("another session")), None),
        (Some(csrf.clone()), Some("https://evil.example")),
    ] {
        let mut c = Call::new(Method::POST, "/api/v1/console/alerts/alert-1/ack");
        c.cookie = Some(&token);
        c.csrf = csrf_sent.as_deref();
        c.origin = origin;
        c.body = Some(json!({}));
        call(&app, c)
            .await
            .assert_error(StatusCode::FORBIDDEN, "forbidden");
    }
    assert!(
        f.store
            .alert_acks(&["alert-1".into()])
            .await
            .unwrap()
            .is_empty()
    );
    let mut c = Call::new(Method::POST, "/api/v1/console/alerts/alert-1/ack");
    c.cookie = Some(&token);
    c.csrf = Some(&csrf);
    c.origin = Some("http://console.test");
    c.body = Some(json!({ "note": "on it" }));
    let acked = call(&app, c).await;
    assert_eq!(acked.status, StatusCode::OK, "{}", acked.text);
    assert_eq!(acked.json()["ack"]["by"], "ana");
    assert_eq!(acked.json()["ack"]["note"], "on it");
    let audit = f.store.list_audit(0, 100).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|r| r.body.contains("\"alert.ack\"") && r.body.contains("alert-1")),
        "the acknowledgement is audited"
    );
    // The first acknowledgement stands.
    let mut c = Call::new(Method::POST, "/api/v1/console/alerts/alert-1/ack");
    c.cookie = Some(&token);
    c.csrf = Some(&csrf);
    c.body = Some(json!({}));
    call(&app, c)
        .await
        .assert_error(StatusCode::CONFLICT, "conflict");

    // Logout needs the CSRF token too, ends the session on the server and in the browser.
    let mut c = Call::new(Method::POST, "/api/v1/console/logout");
    c.cookie = Some(&token);
    call(&app, c)
        .await
        .assert_error(StatusCode::FORBIDDEN, "forbidden");
    let mut c = Call::new(Method::POST, "/api/v1/console/logout");
    c.cookie = Some(&token);
    c.csrf = Some(&csrf);
    let out = call(&app, c).await;
    assert_eq!(out.status, StatusCode::NO_CONTENT, "{}", out.text);
    assert!(
        out.headers[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let mut c = Call::new(Method::GET, "/api/v1/console/session");
    c.cookie = Some(&token);
    call(&app, c)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test]
async fn sessions_are_secure_over_tls_expire_and_are_never_platform_tokens() {
    let f = fixture().await;
    add_user(f.store.as_ref(), "ana", Role::Analyst).await;
    let app = f.app();
    let (_, _, cookie) = sign_in(&app, "ana", true).await;
    assert!(cookie.ends_with("; Secure"), "{cookie}");

    // A platform API token in the cookie is not a session.
    let mut c = Call::new(Method::GET, "/api/v1/console/session");
    c.cookie = Some(ADMIN);
    call(&app, c)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    // An expired session is refused.
    let expired = "cs_u_expired-session-token";
    f.store
        .insert_user_token(&UserToken {
            sha256: crate::token_sha256(expired),
            user: "ana".into(),
            kind: UserTokenKind::Session,
            label: "test".into(),
            created_at: Timestamp::from_millis(0),
            expires_at: Some(Timestamp::from_millis(1)),
        })
        .await
        .unwrap();
    let mut c = Call::new(Method::GET, "/api/v1/console/session");
    c.cookie = Some(expired);
    call(&app, c)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    // A wrong password sets no cookie.
    let mut c = Call::new(Method::POST, "/api/v1/console/login");
    c.body = Some(json!({ "user": "ana", "password": "not the password" }));
    let refused = call(&app, c).await;
    refused.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(refused.headers.get(header::SET_COOKIE).is_none());
}

#[tokio::test]
async fn bearer_tokens_need_no_csrf_token_and_roles_still_apply() {
    let f = fixture().await;
    let app = f.app();
    let mut c = Call::new(Method::POST, "/api/v1/console/alerts/alert-3/ack");
    c.bearer = Some(VIEWER);
    c.body = Some(json!({}));
    call(&app, c)
        .await
        .assert_error(StatusCode::FORBIDDEN, "forbidden");
    let mut c = Call::new(Method::POST, "/api/v1/console/alerts/alert-3/ack");
    c.bearer = Some(ANALYST);
    c.body = Some(json!({}));
    assert_eq!(call(&app, c).await.status, StatusCode::OK);
    let mut c = Call::new(Method::POST, "/api/v1/console/alerts/nope/ack");
    c.bearer = Some(ANALYST);
    c.body = Some(json!({}));
    call(&app, c)
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    let mut c = Call::new(Method::POST, "/api/v1/console/alerts/alert-2/ack");
    c.bearer = Some(ANALYST);
    c.body = Some(json!({ "note": "bad\u{7}note" }));
    call(&app, c)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid");
    // Without any credential the console's API answers 401.
    call(&app, Call::new(Method::GET, "/api/v1/console/map"))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test]
async fn the_queue_filters_and_pages_on_the_server() {
    let f = fixture().await;
    let app = f.app();
    let page = f.get("/api/v1/console/alerts?limit=2", VIEWER).await.json();
    let ids: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["alert-3", "alert-2"]);
    let next = page["next_before"].as_str().unwrap();
    let rest = f
        .get(
            &format!("/api/v1/console/alerts?limit=2&before={next}"),
            VIEWER,
        )
        .await
        .json();
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    assert_eq!(rest["items"][0]["id"], "alert-1");
    assert!(rest["next_before"].is_null());
    let pumps = f
        .get("/api/v1/console/alerts?device_id=pump-1", VIEWER)
        .await
        .json();
    assert_eq!(pumps["items"].as_array().unwrap().len(), 2);
    let critical = f
        .get("/api/v1/console/alerts?min_severity=critical", VIEWER)
        .await
        .json();
    assert!(critical["items"].as_array().unwrap().is_empty());
    let mut c = Call::new(Method::POST, "/api/v1/console/alerts/alert-2/ack");
    c.bearer = Some(ANALYST);
    c.body = Some(json!({}));
    assert_eq!(call(&app, c).await.status, StatusCode::OK);
    let acked = f
        .get("/api/v1/console/alerts?state=acked", VIEWER)
        .await
        .json();
    assert_eq!(acked["items"].as_array().unwrap().len(), 1);
    assert_eq!(acked["items"][0]["ack"]["by"], "analyst token");
    let open = f
        .get("/api/v1/console/alerts?state=open", VIEWER)
        .await
        .json();
    assert_eq!(open["items"].as_array().unwrap().len(), 2);
    for bad in [
        "state=closed",
        "min_severity=huge",
        "limit=0",
        "before=yesterday",
    ] {
        f.get(&format!("/api/v1/console/alerts?{bad}"), VIEWER)
            .await
            .assert_error(StatusCode::BAD_REQUEST, "invalid");
    }
}

#[tokio::test]
async fn the_map_summary_has_one_column_entry_per_placed_device() {
    let f = fixture().await;
    let mut placed = seeded_device("valve-9", model::DeviceClass::Valve, "ot-water");
    placed.location = Some(Location {
        lat: 52.371234567,
        lon: 4.9,
    });
    let mut quarantined = seeded_device("camera-9", model::DeviceClass::Camera, "ps-field");
    quarantined.location = Some(Location {
        lat: 52.4,
        lon: 4.8,
    });
    quarantined.status = model::DeviceStatus::Quarantined;
    f.store
        .upsert_devices(&[placed, quarantined])
        .await
        .unwrap();
    f.store
        .upsert_alerts(&[now_alert(
            1,
            "valve-9",
            "auth.brute_force.device",
            Severity::Critical,
        )])
        .await
        .unwrap();
    let map = f.get("/api/v1/console/map", VIEWER).await.json();
    let d = &map["devices"];
    assert_eq!(d["id"], json!(["camera-9", "valve-9"]));
    for column in ["lat", "lon", "sector", "class", "zone", "status", "alert"] {
        assert_eq!(d[column].as_array().unwrap().len(), 2, "{column}");
    }
    assert_eq!(d["lat"][1], 52.37123);
    assert_eq!(d["alert"], json!([0, 5]));
    assert_eq!(
        map["statuses"][d["status"][0].as_u64().unwrap() as usize],
        "quarantined"
    );
    assert_eq!(
        map["sectors"][d["sector"][1].as_u64().unwrap() as usize],
        "water"
    );
    assert_eq!(
        map["zones"][d["zone"][1].as_u64().unwrap() as usize]["name"],
        "ot-water"
    );
    assert_eq!(map["unplaced"], 3);
    assert_eq!(map["by_status"]["quarantined"], 1);
    assert_eq!(map["conduits"], json!([]));
}

#[tokio::test]
async fn the_stream_pushes_a_new_alert_to_an_open_console() {
    let f = fixture().await;
    let app = f.app();
    let req = Request::builder()
        .uri("/api/v1/console/alerts/stream")
        .header(header::AUTHORIZATION, format!("Bearer {VIEWER}"))
        .body(Body::empty())
        .unwrap();
    let response = app.oneshot(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/event-stream"
    );
    let mut body = response.into_body().into_data_stream();
    let mut alert = now_alert(7, "pump-2", "intel.indicator", Severity::High);
    f.store.upsert_alerts(&[alert.clone()]).await.unwrap();
    let mut text = String::new();
    // A repeat (a higher count) is pushed too, so an alert stored before the stream's
    // first look is still seen once it repeats.
    for round in 0..20 {
        if let Ok(Some(Ok(chunk))) =
            tokio::time::timeout(Duration::from_millis(500), body.next()).await
        {
            text.push_str(&String::from_utf8_lossy(&chunk));
            if text.contains("live-7") {
                break;
            }
        } else {
            alert.count = round + 2;
            f.store.upsert_alerts(&[alert.clone()]).await.unwrap();
        }
    }
    assert!(text.contains("event: alert"), "{text}");
    let data = text
        .lines()
        .find(|l| l.starts_with("data: ") && l.contains("live-7"))
        .unwrap();
    let pushed: Json = serde_json::from_str(&data["data: ".len()..]).unwrap();
    assert_eq!(pushed["rule"], "intel.indicator");
    assert_eq!(pushed["device_id"], "pump-2");
    // At shutdown the platform stops being ready, and open streams end (so a graceful
    // shutdown does not wait for browsers).
    f.ready.store(false, std::sync::atomic::Ordering::Release);
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(chunk) = body.next().await {
            chunk.unwrap();
        }
    })
    .await;
    assert!(end.is_ok(), "the stream ended");
}

#[tokio::test]
async fn the_device_page_has_identity_posture_telemetry_alerts_and_commands() {
    let f = fixture().await;
    let page = f.get("/api/v1/console/devices/pump-1", VIEWER).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    let page = page.json();
    assert_eq!(page["device"]["id"], "pump-1");
    assert!(
        page["device"]["credentials"][0].get("hash").is_none(),
        "no secret hash"
    );
    assert_eq!(page["posture"]["secrets"], 1);
    assert_eq!(page["posture"]["certificates"], 1);
    assert_eq!(page["telemetry"].as_array().unwrap().len(), 1);
    assert_eq!(page["telemetry"][0]["readings"][0]["name"], "temp_c");
    assert_eq!(page["alerts"].as_array().unwrap().len(), 2);
    assert_eq!(page["posture"]["open_alerts"], 2);
    assert!(page["commands"].as_array().unwrap().is_empty());
    // A device's commands are found by index, however many commands to other devices
    // came after them.
    let command = |id: String, at: i64, device: &str| store::audit::CommandRecord {
        body: json!({"id": id, "devices": [device], "state": "acked"}),
        id,
        created_at: Timestamp::from_millis(1_795_000_000_000 + at),
        state: "acked".into(),
    };
    f.store
        .put_command(&command("cmd-pump".into(), 0, "pump-1"))
        .await
        .unwrap();
    for i in 0..1_100 {
        f.store
            .put_command(&command(format!("cmd-other-{i}"), 1 + i, "valve-9"))
            .await
            .unwrap();
    }
    let page = f.get("/api/v1/console/devices/pump-1", VIEWER).await.json();
    let ids: Vec<&str> = page["commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["cmd-pump"]);
    let listed = f
        .get("/api/v1/commands?device_id=pump-1", VIEWER)
        .await
        .json();
    assert_eq!(listed["items"][0]["id"], "cmd-pump");
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    let bad = f.get("/api/v1/commands?device_id=bad%20id", VIEWER).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    f.get("/api/v1/console/devices/nobody", VIEWER)
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    f.get("/api/v1/console/devices/bad%20id", VIEWER)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid");
}

#[tokio::test]
async fn reports_and_sharing_pages() {
    let f = fixture().await;
    for n in 0..3 {
        f.store
            .insert_report(&CitizenReport {
                id: format!("rep-{n}"),
                ts: Timestamp::from_millis(1_795_000_000_000 + n),
                category: ReportCategory::SirenNoStorm,
                text: format!("<script>alert({n})</script>"),
                location: Location {
                    lat: 52.0,
                    lon: 4.0,
                },
            })
            .await
            .unwrap();
    }
    let first = f
        .get("/api/v1/console/reports?limit=2", VIEWER)
        .await
        .json();
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    assert_eq!(first["items"][0]["text"], "<script>alert(2)</script>");
    let next = first["next_before"].as_str().unwrap();
    let rest = f
        .get(
            &format!("/api/v1/console/reports?limit=2&before={next}"),
            VIEWER,
        )
        .await
        .json();
    assert_eq!(rest["items"][0]["id"], "rep-0");
    assert!(rest["next_before"].is_null());

    f.store
        .upsert_alerts(&[
            now_alert(1, "pump-1", "intel.indicator", Severity::High),
            now_alert(2, "pump-2", "intel.indicator", Severity::High),
        ])
        .await
        .unwrap();
    let sharing = f.get("/api/v1/console/sharing", VIEWER).await.json();
    assert!(
        sharing["config"].is_null(),
        "the test platform shares nothing"
    );
    let hits = sharing["hits"].as_array().unwrap();
    assert_eq!(hits.len(), 2);
    assert!(
        hits.iter()
            .any(|h| h["indicator"] == "indicator--1" && h["devices"] == json!(["pump-1"]))
    );
}

//! Operator accounts (login, logout, personal tokens, user management, rate limits) and the
//! incident read routes, against one router so the login limiter persists across requests.

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use model::{IncidentState, Severity};
use serde_json::{Value as Json, json};
use tower::ServiceExt;

use super::{ADMIN, ANALYST, Reply, VIEWER, fixture};

async fn send(
    app: &Router,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Json>,
) -> Reply {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(token) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let req = match body {
        Some(body) => req
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap(),
        None => req.body(Body::empty()).unwrap(),
    };
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

async fn login(app: &Router, user: &str, password: &str) -> Reply {
    send(
        app,
        Method::POST,
        "/api/v1/auth/login",
        None,
        Some(json!({"user": user, "password": password})),
    )
    .await
}

#[tokio::test]
async fn an_admin_creates_a_user_who_logs_in_and_out() {
    let f = fixture().await;
    let app = f.app();
    // No password given: one is generated and shown once.
    let created = send(
        &app,
        Method::POST,
        "/api/v1/users",
        Some(ADMIN),
        Some(json!({"name": "alice", "role": "supervisor"})),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let password = created.json()["password"].as_str().unwrap().to_owned();
    assert!(password.len() >= 24);
    assert!(!created.text.contains("argon2"), "no hash leaves the api");
    let stored = f.store.get_user("alice").await.unwrap().unwrap();
    assert!(stored.password_hash.starts_with("$argon2id$"));

    let session = login(&app, "alice", &password).await;
    assert_eq!(session.status, StatusCode::OK, "{}", session.text);
    let token = session.json()["token"].as_str().unwrap().to_owned();
    assert_eq!(session.json()["role"], "supervisor");
    assert!(session.json()["expires_at"].is_string());

    let me = send(&app, Method::GET, "/api/v1/auth/me", Some(&token), None).await;
    assert_eq!(me.json(), json!({"user": "alice", "role": "supervisor"}));
    // A supervisor is below admin.
    let users = send(&app, Method::GET, "/api/v1/users", Some(&token), None).await;
    users.assert_error(StatusCode::FORBIDDEN, "forbidden");

    // A personal API token acts as the same person.
    let personal = send(
        &app,
        Method::POST,
        "/api/v1/auth/tokens",
        Some(&token),
        Some(json!({"label": "nightly export", "ttl_days": 7})),
    )
    .await;
    assert_eq!(personal.status, StatusCode::CREATED, "{}", personal.text);
    let api_token = personal.json()["token"].as_str().unwrap().to_owned();
    let me = send(&app, Method::GET, "/api/v1/auth/me", Some(&api_token), None).await;
    assert_eq!(me.json()["user"], "alice");

    let out = send(
        &app,
        Method::POST,
        "/api/v1/auth/logout",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT, "{}", out.text);
    let me = send(&app, Method::GET, "/api/v1/auth/me", Some(&token), None).await;
    me.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    // Platform tokens cannot log out.
    let out = send(&app, Method::POST, "/api/v1/auth/logout", Some(ADMIN), None).await;
    out.assert_error(StatusCode::BAD_REQUEST, "invalid");
    // The admin token is not an operator account.
    let personal = send(
        &app,
        Method::POST,
        "/api/v1/auth/tokens",
        Some(ADMIN),
        Some(json!({"label": "x"})),
    )
    .await;
    personal.assert_error(StatusCode::BAD_REQUEST, "invalid");

    // Disabling ends every session and token at once.
    let disabled = send(
        &app,
        Method::PATCH,
        "/api/v1/users/alice",
        Some(ADMIN),
        Some(json!({"disabled": true})),
    )
    .await;
    assert_eq!(disabled.status, StatusCode::OK, "{}", disabled.text);
    assert_eq!(disabled.json()["disabled"], true);
    let me = send(&app, Method::GET, "/api/v1/auth/me", Some(&api_token), None).await;
    me.assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    login(&app, "alice", &password)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test]
async fn bad_user_requests_are_refused_and_change_nothing() {
    let f = fixture().await;
    let app = f.app();
    for (body, needle) in [
        (json!({"name": "Alice", "role": "viewer"}), "user name"),
        (json!({"name": "bob", "role": "root"}), "unknown role"),
        (
            json!({"name": "bob", "role": "viewer", "password": "short"}),
            "at least 12",
        ),
        (
            json!({"name": "bob", "role": "viewer", "extra": 1}),
            "unknown field",
        ),
    ] {
        let reply = send(&app, Method::POST, "/api/v1/users", Some(ADMIN), Some(body)).await;
        let message = reply.assert_error(StatusCode::BAD_REQUEST, "invalid");
        assert!(message.contains(needle), "{message}");
    }
    assert!(f.store.list_users().await.unwrap().is_empty());
    let reply = send(
        &app,
        Method::POST,
        "/api/v1/users",
        Some(ANALYST),
        Some(json!({"name": "bob", "role": "admin"})),
    )
    .await;
    reply.assert_error(StatusCode::FORBIDDEN, "forbidden");
    let reply = send(
        &app,
        Method::PATCH,
        "/api/v1/users/ghost",
        Some(ADMIN),
        Some(json!({"role": "viewer"})),
    )
    .await;
    reply.assert_error(StatusCode::NOT_FOUND, "not_found");
    let reply = send(
        &app,
        Method::PATCH,
        "/api/v1/users/ghost",
        Some(ADMIN),
        Some(json!({})),
    )
    .await;
    reply.assert_error(StatusCode::BAD_REQUEST, "invalid");
}

#[tokio::test]
async fn failed_logins_are_rate_limited_per_user() {
    let f = fixture().await;
    let app = f.app();
    let created = send(
        &app,
        Method::POST,
        "/api/v1/users",
        Some(ADMIN),
        Some(json!({"name": "carol", "role": "analyst", "password": "correct horse battery"})),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert!(created.json().get("password").is_none());
    for _ in 0..5 {
        login(&app, "carol", "wrong password!!")
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    // Even the right password is refused until the window passes.
    let limited = login(&app, "carol", "correct horse battery").await;
    limited.assert_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    assert!(limited.headers.get(header::RETRY_AFTER).is_some());
    // Other users are not locked out by carol's failures (the source limit is higher).
    login(&app, "nobody", "whatever-password")
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    // Every attempt is in the hash-chained audit log, failures and refusals included.
    let logins: Vec<(String, String)> = f
        .store
        .list_audit(0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.record().unwrap().entry)
        .filter(|e| e.action == "login")
        .map(|e| (e.actor, e.outcome))
        .collect();
    let expected: Vec<(String, String)> =
        std::iter::repeat_n(("carol".to_owned(), "failed".to_owned()), 5)
            .chain([
                ("carol".to_owned(), "refused".to_owned()),
                ("nobody".to_owned(), "failed".to_owned()),
            ])
            .collect();
    assert_eq!(logins, expected);
}

#[tokio::test]
async fn failed_logins_are_rate_limited_per_source() {
    let f = fixture().await;
    let app = f.app();
    // Twenty failures spread over many user names from one source.
    for i in 0..20 {
        login(&app, &format!("user{i}"), "wrong password!!")
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    login(&app, "user99", "wrong password!!")
        .await
        .assert_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
}

#[tokio::test]
async fn incidents_are_listed_filtered_paged_and_shown() {
    let f = fixture().await;
    let app = f.app();
    for (seq, state, severity, device) in [
        (1, IncidentState::New, Severity::High, "pump-1"),
        (2, IncidentState::Contained, Severity::Critical, "siren-1"),
        (3, IncidentState::New, Severity::Low, "pump-2"),
    ] {
        f.store
            .upsert_incident(&store::testsuite_users::incident(
                seq, state, severity, device,
            ))
            .await
            .unwrap();
    }
    let ids = |reply: &Reply| {
        reply.json()["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let all = send(&app, Method::GET, "/api/v1/incidents", Some(VIEWER), None).await;
    assert_eq!(ids(&all), ["INC-000003", "INC-000002", "INC-000001"]);
    assert!(all.json()["items"][0].get("timeline").is_none());
    let page = send(
        &app,
        Method::GET,
        "/api/v1/incidents?limit=2",
        Some(VIEWER),
        None,
    )
    .await;
    assert_eq!(ids(&page), ["INC-000003", "INC-000002"]);
    assert_eq!(page.json()["next"], "INC-000002");
    let next = send(
        &app,
        Method::GET,
        "/api/v1/incidents?limit=2&before=INC-000002",
        Some(VIEWER),
        None,
    )
    .await;
    assert_eq!(ids(&next), ["INC-000001"]);
    assert_eq!(next.json()["next"], Json::Null);
    let new = send(
        &app,
        Method::GET,
        "/api/v1/incidents?state=new&severity=high",
        Some(VIEWER),
        None,
    )
    .await;
    assert_eq!(ids(&new), ["INC-000001"]);
    let siren = send(
        &app,
        Method::GET,
        "/api/v1/incidents?device_id=siren-1",
        Some(VIEWER),
        None,
    )
    .await;
    assert_eq!(ids(&siren), ["INC-000002"]);
    for bad in [
        "state=open",
        "severity=huge",
        "before=42",
        "limit=0",
        "colour=red",
    ] {
        send(
            &app,
            Method::GET,
            &format!("/api/v1/incidents?{bad}"),
            Some(VIEWER),
            None,
        )
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid");
    }
    let one = send(
        &app,
        Method::GET,
        "/api/v1/incidents/INC-000002",
        Some(VIEWER),
        None,
    )
    .await;
    assert_eq!(one.json()["state"], "contained");
    assert!(one.json()["timeline"].is_array());
    assert!(one.json()["durations"]["time_to_detect_ms"].is_number());
    send(
        &app,
        Method::GET,
        "/api/v1/incidents/INC-000009",
        Some(VIEWER),
        None,
    )
    .await
    .assert_error(StatusCode::NOT_FOUND, "not_found");
    send(
        &app,
        Method::GET,
        "/api/v1/incidents/nope",
        Some(VIEWER),
        None,
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST, "invalid");
    // Changes need an analyst, and a platform that runs incidents.
    send(
        &app,
        Method::PATCH,
        "/api/v1/incidents/INC-000001",
        Some(VIEWER),
        Some(json!({"state": "triaged"})),
    )
    .await
    .assert_error(StatusCode::FORBIDDEN, "forbidden");
    send(
        &app,
        Method::PATCH,
        "/api/v1/incidents/INC-000001",
        Some(ANALYST),
        Some(json!({"state": "sideways"})),
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST, "invalid");
    send(
        &app,
        Method::PATCH,
        "/api/v1/incidents/INC-000001",
        Some(ANALYST),
        Some(json!({"state": "triaged"})),
    )
    .await
    .assert_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    send(
        &app,
        Method::POST,
        "/api/v1/incidents/INC-000001/actions/A1/approve",
        Some(ANALYST),
        None,
    )
    .await
    .assert_error(StatusCode::FORBIDDEN, "forbidden");
}

fn broken<T>() -> store::Result<T> {
    Err(store::Error::Internal(
        "disk on fire at /secret/path".into(),
    ))
}

#[async_trait::async_trait]
impl store::UserStore for super::BrokenStore {
    async fn insert_user(&self, _: &store::User) -> store::Result<()> {
        broken()
    }
    async fn update_user(&self, _: &store::User) -> store::Result<()> {
        broken()
    }
    async fn get_user(&self, _: &str) -> store::Result<Option<store::User>> {
        broken()
    }
    async fn list_users(&self) -> store::Result<Vec<store::User>> {
        broken()
    }
    async fn insert_user_token(&self, _: &store::UserToken) -> store::Result<()> {
        broken()
    }
    async fn find_user_token(&self, _: &str) -> store::Result<Option<store::UserToken>> {
        broken()
    }
    async fn delete_user_token(&self, _: &str) -> store::Result<bool> {
        broken()
    }
    async fn delete_user_tokens(&self, _: &str) -> store::Result<u64> {
        broken()
    }
    async fn prune_user_tokens(&self, _: model::Timestamp) -> store::Result<u64> {
        broken()
    }
}

#[async_trait::async_trait]
impl store::IncidentStore for super::BrokenStore {
    async fn upsert_incident(&self, _: &model::Incident) -> store::Result<()> {
        broken()
    }
    async fn get_incident(&self, _: &model::IncidentId) -> store::Result<Option<model::Incident>> {
        broken()
    }
    async fn list_incidents(
        &self,
        _: &store::IncidentQuery,
    ) -> store::Result<Vec<model::Incident>> {
        broken()
    }
    async fn open_incidents(&self, _: usize) -> store::Result<Vec<model::Incident>> {
        broken()
    }
    async fn max_incident_seq(&self) -> store::Result<u64> {
        broken()
    }
}

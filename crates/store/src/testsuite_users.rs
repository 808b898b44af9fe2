//! The conformance suite of [`UserStore`](crate::UserStore) and
//! [`IncidentStore`](crate::IncidentStore), invoked like [`testsuite!`](crate::testsuite!):
//!
//! ```ignore
//! store::users_testsuite!(async { MyBackend::new().await });
//! ```

use model::{
    DeviceId, ErrorCode, Incident, IncidentId, IncidentState, IncidentTimes, Severity, Timestamp,
};

use crate::testsuite::Backend;
use crate::{IncidentQuery, User, UserToken, UserTokenKind};

/// Expands to one `#[tokio::test]` per check of this module.
#[macro_export]
macro_rules! users_testsuite {
    // `optional EXPR`: EXPR yields an `Option` of a backend; `None` (a peer that is not
    // installed, and not required) makes every check return at once.
    (optional $backend:expr) => {
        $crate::users_testsuite!(@names $backend);
    };
    ($backend:expr) => {
        $crate::users_testsuite!(@names async { ::std::option::Option::Some($backend.await) });
    };
    (@names $backend:expr) => {
        $crate::users_testsuite!(@tests $backend;
            users_insert_get_update,
            user_tokens_lifecycle,
            incidents_upsert_and_get,
            incidents_list_filters_and_paging,
            incidents_open_and_max_seq,
        );
    };
    (@tests $backend:expr; $($name:ident),* $(,)?) => {
        $(
            #[::tokio::test]
            async fn $name() {
                let ::std::option::Option::Some(backend) = $backend.await else {
                    return;
                };
                $crate::testsuite_users::$name(&backend).await;
            }
        )*
    };
}

/// A user for tests.
pub fn user(name: &str, role: &str) -> User {
    User {
        name: name.to_owned(),
        role: role.to_owned(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_owned(),
        disabled: false,
        created_at: Timestamp::from_millis(1),
        updated_at: Timestamp::from_millis(1),
    }
}

fn token(sha: &str, user: &str, expires: Option<i64>) -> UserToken {
    UserToken {
        sha256: sha.repeat(64 / sha.len()),
        user: user.to_owned(),
        kind: UserTokenKind::Session,
        label: "test".into(),
        created_at: Timestamp::from_millis(1),
        expires_at: expires.map(Timestamp::from_millis),
    }
}

/// An incident for tests.
pub fn incident(seq: u64, state: IncidentState, severity: Severity, device: &str) -> Incident {
    Incident {
        id: IncidentId::from_seq(seq),
        title: format!("incident {seq}"),
        state,
        severity,
        tlp: model::Tlp::Amber,
        owner: None,
        devices: vec![DeviceId::new(device).unwrap()],
        zones: Vec::new(),
        sources: Vec::new(),
        indicators: Vec::new(),
        alerts: Vec::new(),
        actions: Vec::new(),
        times: IncidentTimes::default(),
        created_at: Timestamp::from_millis(seq as i64),
        updated_at: Timestamp::from_millis(seq as i64),
        timeline: Vec::new(),
        timeline_dropped: 0,
    }
}

pub async fn users_insert_get_update(backend: &dyn Backend) {
    let store = backend.open().await;
    store.insert_user(&user("alice", "analyst")).await.unwrap();
    store.insert_user(&user("bob", "admin")).await.unwrap();
    let err = store
        .insert_user(&user("alice", "viewer"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Conflict);
    assert_eq!(
        store.get_user("alice").await.unwrap(),
        Some(user("alice", "analyst"))
    );
    assert_eq!(store.get_user("nobody").await.unwrap(), None);
    let mut alice = user("alice", "supervisor");
    alice.disabled = true;
    store.update_user(&alice).await.unwrap();
    assert_eq!(store.get_user("alice").await.unwrap(), Some(alice));
    let err = store
        .update_user(&user("carol", "viewer"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotFound);
    let names: Vec<String> = store
        .list_users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(names, ["alice", "bob"]);
    store.close().await.unwrap();
}

pub async fn user_tokens_lifecycle(backend: &dyn Backend) {
    let store = backend.open().await;
    store.insert_user(&user("alice", "analyst")).await.unwrap();
    let err = store
        .insert_user_token(&token("a", "ghost", None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotFound);
    store
        .insert_user_token(&token("a", "alice", Some(100)))
        .await
        .unwrap();
    store
        .insert_user_token(&token("b", "alice", Some(1000)))
        .await
        .unwrap();
    store
        .insert_user_token(&token("c", "alice", None))
        .await
        .unwrap();
    assert_eq!(
        store.find_user_token(&"a".repeat(64)).await.unwrap(),
        Some(token("a", "alice", Some(100)))
    );
    assert_eq!(
        store
            .prune_user_tokens(Timestamp::from_millis(500))
            .await
            .unwrap(),
        1
    );
    assert_eq!(store.find_user_token(&"a".repeat(64)).await.unwrap(), None);
    assert!(store.delete_user_token(&"b".repeat(64)).await.unwrap());
    assert!(!store.delete_user_token(&"b".repeat(64)).await.unwrap());
    assert_eq!(store.delete_user_tokens("alice").await.unwrap(), 1);
    assert_eq!(store.find_user_token(&"c".repeat(64)).await.unwrap(), None);
    store.close().await.unwrap();
}

pub async fn incidents_upsert_and_get(backend: &dyn Backend) {
    let store = backend.open().await;
    let mut inc = incident(1, IncidentState::New, Severity::High, "siren-1");
    store.upsert_incident(&inc).await.unwrap();
    inc.state = IncidentState::Triaged;
    inc.owner = Some("alice".into());
    store.upsert_incident(&inc).await.unwrap();
    assert_eq!(
        store.get_incident(&IncidentId::from_seq(1)).await.unwrap(),
        Some(inc)
    );
    assert_eq!(
        store
            .get_incident(&IncidentId("INC-9".into()))
            .await
            .unwrap(),
        None
    );
    let mut bad = incident(2, IncidentState::New, Severity::Low, "x");
    bad.id = IncidentId("not-an-incident".into());
    assert_eq!(
        store.upsert_incident(&bad).await.unwrap_err().code(),
        ErrorCode::Invalid
    );
    store.close().await.unwrap();
    // Survives a restart.
    let store = backend.open().await;
    assert_eq!(store.max_incident_seq().await.unwrap(), 1);
    store.close().await.unwrap();
}

pub async fn incidents_list_filters_and_paging(backend: &dyn Backend) {
    let store = backend.open().await;
    for (seq, state, severity, device) in [
        (1, IncidentState::New, Severity::Low, "meter-1"),
        (2, IncidentState::Triaged, Severity::High, "siren-1"),
        (3, IncidentState::Closed, Severity::Critical, "siren-1"),
        (4, IncidentState::New, Severity::Medium, "siren-10"),
    ] {
        let mut inc = incident(seq, state, severity, device);
        if seq == 2 {
            inc.owner = Some("alice".into());
        }
        store.upsert_incident(&inc).await.unwrap();
    }
    let ids = |list: Vec<Incident>| list.into_iter().map(|i| i.id.0).collect::<Vec<_>>();
    let all = store
        .list_incidents(&IncidentQuery::default())
        .await
        .unwrap();
    assert_eq!(
        ids(all),
        ["INC-000004", "INC-000003", "INC-000002", "INC-000001"]
    );
    let query = |f: fn(&mut IncidentQuery)| {
        let mut q = IncidentQuery::default();
        f(&mut q);
        q
    };
    let new = store
        .list_incidents(&query(|q| q.state = Some(IncidentState::New)))
        .await
        .unwrap();
    assert_eq!(ids(new), ["INC-000004", "INC-000001"]);
    let severe = store
        .list_incidents(&query(|q| q.min_severity = Some(Severity::High)))
        .await
        .unwrap();
    assert_eq!(ids(severe), ["INC-000003", "INC-000002"]);
    let siren = store
        .list_incidents(&query(|q| {
            q.device_id = Some(DeviceId::new("siren-1").unwrap())
        }))
        .await
        .unwrap();
    assert_eq!(ids(siren), ["INC-000003", "INC-000002"]);
    let owned = store
        .list_incidents(&query(|q| q.owner = Some("alice".into())))
        .await
        .unwrap();
    assert_eq!(ids(owned), ["INC-000002"]);
    let page = store
        .list_incidents(&query(|q| {
            q.before_seq = Some(3);
            q.limit = 1;
        }))
        .await
        .unwrap();
    assert_eq!(ids(page), ["INC-000002"]);
    store.close().await.unwrap();
}

pub async fn incidents_open_and_max_seq(backend: &dyn Backend) {
    let store = backend.open().await;
    assert_eq!(store.max_incident_seq().await.unwrap(), 0);
    for (seq, state) in [
        (5, IncidentState::Resolved),
        (7, IncidentState::Contained),
        (9, IncidentState::New),
        (11, IncidentState::Closed),
    ] {
        store
            .upsert_incident(&incident(seq, state, Severity::Low, "d"))
            .await
            .unwrap();
    }
    let open: Vec<String> = store
        .open_incidents(100)
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.id.0)
        .collect();
    assert_eq!(open, ["INC-000007", "INC-000009"]);
    assert_eq!(store.max_incident_seq().await.unwrap(), 11);
    store.close().await.unwrap();
}

//! The conformance suite every [`Store`] backend must pass.
//!
//! A backend's tests implement [`Backend`] and invoke the macro:
//!
//! ```ignore
//! store::testsuite!(async { MyBackend::new().await });
//! ```
//!
//! which expands to one `#[tokio::test]` per function of this module.

use std::sync::Arc;

use async_trait::async_trait;
use model::{
    Alert, AlertId, Device, DeviceClass, DeviceId, DeviceStatus, ErrorCode, Event, EventKind,
    Reading, SecurityEvent, SecurityEventKind, Severity, Timestamp, Value,
};

use crate::{AlertQuery, ApiToken, DeviceQuery, EventQuery, Store, StoreStats};

mod gateway;
pub mod intel;
#[cfg(feature = "postgres")]
pub mod server;
pub use self::gateway::{
    audit_appends_chain_and_verify, audit_survives_reopen, command_counters_increase,
    commands_put_get_list,
};

/// A fresh, empty database for one test.
#[async_trait]
pub trait Backend: Send + Sync {
    /// Opens the database. After `close`, a second call opens the same database again, so the
    /// suite can check that data survives a restart.
    async fn open(&self) -> Arc<dyn Store>;
}

/// Expands to one `#[tokio::test]` per conformance check. The argument is an async
/// expression yielding a [`testsuite::Backend`](crate::testsuite::Backend); it is evaluated
/// once per test.
#[macro_export]
macro_rules! testsuite {
    // `optional EXPR`: EXPR yields an `Option` of a backend; `None` (a peer that is not
    // installed, and not required) makes every check return at once.
    (optional $backend:expr) => {
        $crate::testsuite!(@names $backend);
    };
    ($backend:expr) => {
        $crate::testsuite!(@names async { ::std::option::Option::Some($backend.await) });
    };
    (@names $backend:expr) => {
        $crate::testsuite!(@tests $backend;
            insert_and_get_device,
            insert_device_conflict,
            upsert_devices_replaces,
            list_devices_filters,
            list_devices_paging,
            list_devices_limit_is_capped,
            set_device_status,
            append_and_list_events,
            list_events_filters,
            prune_events,
            upsert_alerts_merges,
            list_alerts_filters,
            tokens,
            stats,
            close_and_reopen_persists,
            audit_appends_chain_and_verify,
            audit_survives_reopen,
            command_counters_increase,
            commands_put_get_list,
            advisories_insert_and_versioned_update,
            advisories_write_is_all_or_nothing,
            advisories_list_drafts_and_issued,
            reports_insert_and_list,
            readiness_history_newest_first,
            exercises_insert_and_list,
            detect_suppressions,
            detect_local_indicators,
            detect_learned_state,
            rate_limits_replace_lift_lapse_and_persist,
            console_acks_first_stands_and_persist,
        );
    };
    (@tests $backend:expr; $($name:ident),* $(,)?) => {
        $(
            #[::tokio::test]
            async fn $name() {
                let ::std::option::Option::Some(backend) = $backend.await else {
                    return;
                };
                $crate::testsuite::$name(&backend).await;
            }
        )*
    };
}

/// A device for tests.
pub fn device(id: &str, class: DeviceClass, zone: &str) -> Device {
    Device {
        id: DeviceId::new(id).expect("test device id is valid"),
        sector: class.sector(),
        class,
        zone: zone.to_owned(),
        owner: "water dept".to_owned(),
        vendor: "acme".to_owned(),
        model: "x1".to_owned(),
        firmware: "1.0.0".to_owned(),
        addresses: Vec::new(),
        location: None,
        credentials: vec![model::Credential::Certificate {
            sha256: "ab".repeat(32),
        }],
        status: DeviceStatus::Active,
        created_at: Timestamp::from_millis(1_700_000_000_000),
    }
}

/// A telemetry event at `ts` ms from `device`.
pub fn telemetry(ts: i64, device: &str, value: f64) -> Event {
    Event {
        ts: Timestamp::from_millis(ts),
        device_id: Some(DeviceId::new(device).expect("test device id is valid")),
        sector: Some(model::Sector::Water),
        kind: EventKind::Telemetry {
            readings: vec![Reading {
                name: "level_m".to_owned(),
                value: Value::Number(value),
                unit: Some("m".to_owned()),
            }],
        },
    }
}

/// A broker security event at `ts` ms with no device.
pub fn security(ts: i64) -> Event {
    Event {
        ts: Timestamp::from_millis(ts),
        device_id: None,
        sector: None,
        kind: EventKind::Security(SecurityEvent {
            action: SecurityEventKind::AuthFailure,
            client_id: Some("intruder".to_owned()),
            username: None,
            peer: Some("10.0.0.7:51234".to_owned()),
            topic: None,
            reason: Some("bad password".to_owned()),
        }),
    }
}

/// An alert for tests.
pub fn alert(id: &str, rule: &str, ts: i64, device: Option<&str>) -> Alert {
    Alert {
        id: AlertId(id.to_owned()),
        rule: rule.to_owned(),
        key: String::new(),
        severity: Severity::High,
        ts: Timestamp::from_millis(ts),
        last_ts: Timestamp::from_millis(ts),
        count: 1,
        device_id: device.map(|d| DeviceId::new(d).expect("test device id is valid")),
        zone: None,
        source: None,
        title: format!("{rule} fired"),
        explanation: "because".to_owned(),
        evidence: vec![],
    }
}

fn ids(devices: &[Device]) -> Vec<&str> {
    devices.iter().map(|d| d.id.as_str()).collect()
}

fn event_ts(events: &[Event]) -> Vec<i64> {
    events.iter().map(|e| e.ts.as_millis()).collect()
}

fn alert_ids(alerts: &[Alert]) -> Vec<&str> {
    alerts.iter().map(|a| a.id.0.as_str()).collect()
}

fn did(id: &str) -> DeviceId {
    DeviceId::new(id).expect("test device id is valid")
}

pub async fn insert_and_get_device(backend: &dyn Backend) {
    let store = backend.open().await;
    let pump = device("pump-7", DeviceClass::Pump, "ot-water");
    store.insert_device(&pump).await.unwrap();
    assert_eq!(store.get_device(&pump.id).await.unwrap(), Some(pump));
    assert_eq!(store.get_device(&did("nope")).await.unwrap(), None);
}

pub async fn insert_device_conflict(backend: &dyn Backend) {
    let store = backend.open().await;
    let pump = device("pump-7", DeviceClass::Pump, "ot-water");
    store.insert_device(&pump).await.unwrap();
    let mut other = pump.clone();
    other.zone = "elsewhere".to_owned();
    let err = store.insert_device(&other).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Conflict, "{err}");
    assert_eq!(store.get_device(&pump.id).await.unwrap(), Some(pump));
}

pub async fn upsert_devices_replaces(backend: &dyn Backend) {
    let store = backend.open().await;
    let a = device("a-1", DeviceClass::Pump, "z1");
    let b = device("b-1", DeviceClass::Siren, "z2");
    store.upsert_devices(&[a.clone(), b.clone()]).await.unwrap();
    let mut a2 = a.clone();
    a2.firmware = "2.0.0".to_owned();
    a2.zone = "z9".to_owned();
    store.upsert_devices(&[a2.clone()]).await.unwrap();
    store.upsert_devices(&[]).await.unwrap();
    assert_eq!(store.get_device(&a.id).await.unwrap(), Some(a2.clone()));
    assert_eq!(store.get_device(&b.id).await.unwrap(), Some(b));
    let all = store.list_devices(&DeviceQuery::default()).await.unwrap();
    assert_eq!(ids(&all), ["a-1", "b-1"]);
    let z9 = DeviceQuery {
        zone: Some("z9".to_owned()),
        ..DeviceQuery::default()
    };
    assert_eq!(store.list_devices(&z9).await.unwrap(), vec![a2]);
}

pub async fn list_devices_filters(backend: &dyn Backend) {
    let store = backend.open().await;
    let mut revoked = device("siren-2", DeviceClass::Siren, "ot-safety");
    revoked.status = DeviceStatus::Revoked;
    store
        .upsert_devices(&[
            device("pump-1", DeviceClass::Pump, "ot-water"),
            device("valve-1", DeviceClass::Valve, "ot-water"),
            device("siren-1", DeviceClass::Siren, "ot-safety"),
            revoked,
            device("meter-1", DeviceClass::SmartMeter, "ami"),
        ])
        .await
        .unwrap();
    let list = |q: DeviceQuery| {
        let store = store.clone();
        async move { ids(&store.list_devices(&q).await.unwrap()).join(",") }
    };
    assert_eq!(
        list(DeviceQuery::default()).await,
        "meter-1,pump-1,siren-1,siren-2,valve-1"
    );
    let q = DeviceQuery {
        sector: Some(model::Sector::Water),
        ..Default::default()
    };
    assert_eq!(list(q).await, "pump-1,valve-1");
    let q = DeviceQuery {
        class: Some(DeviceClass::Siren),
        ..Default::default()
    };
    assert_eq!(list(q).await, "siren-1,siren-2");
    let q = DeviceQuery {
        zone: Some("ami".to_owned()),
        ..Default::default()
    };
    assert_eq!(list(q).await, "meter-1");
    let q = DeviceQuery {
        status: Some(DeviceStatus::Revoked),
        ..Default::default()
    };
    assert_eq!(list(q).await, "siren-2");
    let q = DeviceQuery {
        class: Some(DeviceClass::Siren),
        status: Some(DeviceStatus::Active),
        ..Default::default()
    };
    assert_eq!(list(q).await, "siren-1");
    let q = DeviceQuery {
        sector: Some(model::Sector::Transport),
        ..Default::default()
    };
    assert_eq!(list(q).await, "");
}

pub async fn list_devices_paging(backend: &dyn Backend) {
    let store = backend.open().await;
    let devices: Vec<Device> = (0..25)
        .rev()
        .map(|i| device(&format!("pump-{i:03}"), DeviceClass::Pump, "z"))
        .collect();
    store.upsert_devices(&devices).await.unwrap();
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_devices(&DeviceQuery {
                after: after.clone(),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(page.len() <= 10);
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        seen.extend(page.iter().map(|d| d.id.as_str().to_owned()));
    }
    let expected: Vec<String> = (0..25).map(|i| format!("pump-{i:03}")).collect();
    assert_eq!(seen, expected);
}

pub async fn list_devices_limit_is_capped(backend: &dyn Backend) {
    let store = backend.open().await;
    let devices: Vec<Device> = (0..10_005)
        .map(|i| device(&format!("m-{i:05}"), DeviceClass::SmartMeter, "ami"))
        .collect();
    store.upsert_devices(&devices).await.unwrap();
    let q = DeviceQuery {
        limit: 50_000,
        ..Default::default()
    };
    assert_eq!(store.list_devices(&q).await.unwrap().len(), 10_000);
    let q = DeviceQuery {
        limit: 3,
        ..Default::default()
    };
    assert_eq!(
        ids(&store.list_devices(&q).await.unwrap()),
        ["m-00000", "m-00001", "m-00002"]
    );
}

pub async fn set_device_status(backend: &dyn Backend) {
    let store = backend.open().await;
    let siren = device("siren-1", DeviceClass::Siren, "ot-safety");
    store.insert_device(&siren).await.unwrap();
    store
        .set_device_status(&siren.id, DeviceStatus::Revoked)
        .await
        .unwrap();
    let got = store.get_device(&siren.id).await.unwrap().unwrap();
    assert_eq!(got.status, DeviceStatus::Revoked);
    assert_eq!(got.credentials, siren.credentials);
    let q = DeviceQuery {
        status: Some(DeviceStatus::Revoked),
        ..Default::default()
    };
    assert_eq!(ids(&store.list_devices(&q).await.unwrap()), ["siren-1"]);
    let err = store
        .set_device_status(&did("ghost"), DeviceStatus::Revoked)
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotFound, "{err}");
}

pub async fn append_and_list_events(backend: &dyn Backend) {
    let store = backend.open().await;
    store.append_events(&[]).await.unwrap();
    let events = vec![
        telemetry(1_000, "pump-1", 1.0),
        security(2_000),
        telemetry(3_000, "pump-2", 3.0),
    ];
    store.append_events(&events).await.unwrap();
    let listed = store.list_events(&EventQuery::default()).await.unwrap();
    let expected: Vec<Event> = events.iter().rev().cloned().collect();
    assert_eq!(listed, expected);
}

pub async fn list_events_filters(backend: &dyn Backend) {
    let store = backend.open().await;
    let mut events = Vec::new();
    for i in 0..20 {
        let device = if i % 2 == 0 { "pump-1" } else { "pump-2" };
        events.push(telemetry(i * 1_000, device, i as f64));
    }
    events.push(security(5_500));
    store.append_events(&events[..10]).await.unwrap();
    store.append_events(&events[10..]).await.unwrap();
    let list = |q: EventQuery| {
        let store = store.clone();
        async move { event_ts(&store.list_events(&q).await.unwrap()) }
    };
    let q = EventQuery {
        device_id: Some(did("pump-2")),
        limit: 3,
        ..Default::default()
    };
    assert_eq!(list(q).await, [19_000, 17_000, 15_000]);
    let q = EventQuery {
        kind: Some("security".to_owned()),
        ..Default::default()
    };
    assert_eq!(list(q).await, [5_500]);
    let q = EventQuery {
        since: Some(Timestamp::from_millis(17_000)),
        ..Default::default()
    };
    assert_eq!(list(q).await, [19_000, 18_000, 17_000]);
    let q = EventQuery {
        before: Some(Timestamp::from_millis(2_000)),
        ..Default::default()
    };
    assert_eq!(list(q).await, [1_000, 0]);
    let q = EventQuery {
        device_id: Some(did("pump-1")),
        kind: Some("telemetry".to_owned()),
        since: Some(Timestamp::from_millis(4_000)),
        before: Some(Timestamp::from_millis(10_000)),
        limit: 100,
    };
    assert_eq!(list(q).await, [8_000, 6_000, 4_000]);
    let q = EventQuery {
        kind: Some("command".to_owned()),
        ..Default::default()
    };
    assert_eq!(list(q).await, Vec::<i64>::new());
}

pub async fn prune_events(backend: &dyn Backend) {
    let store = backend.open().await;
    // More than one prune chunk, so chunking is exercised.
    let events: Vec<Event> = (0..12_000)
        .map(|i| telemetry(i, "pump-1", i as f64))
        .collect();
    for batch in events.chunks(1_000) {
        store.append_events(batch).await.unwrap();
    }
    let deleted = store
        .prune_events(Timestamp::from_millis(11_990))
        .await
        .unwrap();
    assert_eq!(deleted, 11_990);
    let left = store.list_events(&EventQuery::default()).await.unwrap();
    assert_eq!(event_ts(&left), (11_990..12_000).rev().collect::<Vec<_>>());
    assert_eq!(
        store.prune_events(Timestamp::from_millis(0)).await.unwrap(),
        0
    );
    assert_eq!(store.stats().await.unwrap().events, 10);
}

pub async fn upsert_alerts_merges(backend: &dyn Backend) {
    let store = backend.open().await;
    let first = alert("a-1", "auth.brute_force.device", 1_000, Some("pump-1"));
    store
        .upsert_alerts(std::slice::from_ref(&first))
        .await
        .unwrap();
    assert_eq!(
        store.get_alert(&first.id).await.unwrap(),
        Some(first.clone())
    );
    let mut merged = first.clone();
    merged.count = 3;
    merged.last_ts = Timestamp::from_millis(9_000);
    merged.severity = Severity::Critical;
    merged.evidence.push(model::Evidence {
        ts: Timestamp::from_millis(9_000),
        device_id: Some(did("pump-1")),
        summary: "auth_failure from 10.0.0.7:51234 (bad password)".to_owned(),
    });
    store.upsert_alerts(&[merged.clone()]).await.unwrap();
    store.upsert_alerts(&[]).await.unwrap();
    assert_eq!(
        store.get_alert(&first.id).await.unwrap(),
        Some(merged.clone())
    );
    assert_eq!(
        store.list_alerts(&AlertQuery::default()).await.unwrap(),
        vec![merged.clone()]
    );
    // A detection worker rebuilding its state after a partition moved raises the same alert
    // (the same id) from fewer events: that never lowers its count or last time.
    let rebuilt = Alert {
        count: 2,
        last_ts: Timestamp::from_millis(5_000),
        ..merged.clone()
    };
    store.upsert_alerts(&[rebuilt]).await.unwrap();
    assert_eq!(
        store.get_alert(&first.id).await.unwrap(),
        Some(merged.clone())
    );
    assert_eq!(
        store.get_alert(&AlertId("nope".into())).await.unwrap(),
        None
    );
}

pub async fn list_alerts_filters(backend: &dyn Backend) {
    let store = backend.open().await;
    store
        .upsert_alerts(&[
            alert("a-1", "auth.brute_force.device", 1_000, Some("pump-1")),
            alert("a-2", "siren.uncommanded", 2_000, Some("siren-1")),
            alert("a-3", "auth.brute_force.device", 3_000, Some("pump-2")),
            alert("a-4", "flow.scan", 4_000, None),
        ])
        .await
        .unwrap();
    let list = |q: AlertQuery| {
        let store = store.clone();
        async move { alert_ids(&store.list_alerts(&q).await.unwrap()).join(",") }
    };
    assert_eq!(list(AlertQuery::default()).await, "a-4,a-3,a-2,a-1");
    let q = AlertQuery {
        device_id: Some(did("siren-1")),
        ..Default::default()
    };
    assert_eq!(list(q).await, "a-2");
    let q = AlertQuery {
        rule: Some("auth.brute_force.device".to_owned()),
        ..Default::default()
    };
    assert_eq!(list(q).await, "a-3,a-1");
    let q = AlertQuery {
        since: Some(Timestamp::from_millis(2_000)),
        before: Some(Timestamp::from_millis(4_000)),
        ..Default::default()
    };
    assert_eq!(list(q).await, "a-3,a-2");
    let q = AlertQuery {
        limit: 1,
        ..Default::default()
    };
    assert_eq!(list(q).await, "a-4");
}

pub async fn tokens(backend: &dyn Backend) {
    let store = backend.open().await;
    let token = ApiToken {
        sha256: "0f".repeat(32),
        name: "ops console".to_owned(),
        role: "operator".to_owned(),
        created_at: Timestamp::from_millis(1_700_000_000_123),
    };
    store.insert_token(&token).await.unwrap();
    assert_eq!(
        store.find_token(&token.sha256).await.unwrap(),
        Some(token.clone())
    );
    assert_eq!(store.find_token(&"00".repeat(32)).await.unwrap(), None);
    let err = store.insert_token(&token).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Conflict, "{err}");
}

pub async fn stats(backend: &dyn Backend) {
    let store = backend.open().await;
    assert_eq!(store.stats().await.unwrap(), StoreStats::default());
    store
        .upsert_devices(&[
            device("pump-1", DeviceClass::Pump, "z"),
            device("pump-2", DeviceClass::Pump, "z"),
        ])
        .await
        .unwrap();
    store
        .append_events(&[telemetry(1, "pump-1", 1.0), security(2), security(3)])
        .await
        .unwrap();
    store
        .upsert_alerts(&[alert("a-1", "r", 1, None)])
        .await
        .unwrap();
    assert_eq!(
        store.stats().await.unwrap(),
        StoreStats {
            devices: 2,
            events: 3,
            alerts: 1
        }
    );
}

pub async fn close_and_reopen_persists(backend: &dyn Backend) {
    let store = backend.open().await;
    let pump = device("pump-1", DeviceClass::Pump, "z");
    let events = vec![telemetry(1, "pump-1", 1.0), security(2)];
    let alert = alert("a-1", "r", 1, Some("pump-1"));
    let token = ApiToken {
        sha256: "aa".repeat(32),
        name: "t".to_owned(),
        role: "viewer".to_owned(),
        created_at: Timestamp::from_millis(5),
    };
    store.insert_device(&pump).await.unwrap();
    store.append_events(&events).await.unwrap();
    store
        .upsert_alerts(std::slice::from_ref(&alert))
        .await
        .unwrap();
    store.insert_token(&token).await.unwrap();
    store.close().await.unwrap();
    drop(store);

    let store = backend.open().await;
    assert_eq!(store.get_device(&pump.id).await.unwrap(), Some(pump));
    let listed = store.list_events(&EventQuery::default()).await.unwrap();
    assert_eq!(listed, events.into_iter().rev().collect::<Vec<_>>());
    assert_eq!(store.get_alert(&alert.id).await.unwrap(), Some(alert));
    assert_eq!(store.find_token(&token.sha256).await.unwrap(), Some(token));
    store.close().await.unwrap();
}

// --- advisories, citizen reports, readiness history (`AdvisoryStore`, `ReadinessStore`) ---

/// A draft advisory for tests.
pub fn advisory(id: &str, drafted_at: i64) -> model::Advisory {
    model::Advisory {
        id: id.to_owned(),
        version: 1,
        state: model::AdvisoryState::Draft,
        status: model::AdvisoryStatus::Exercise,
        msg_type: model::AdvisoryMsgType::Alert,
        references: None,
        content: model::AdvisoryContent {
            event: "siren test".to_owned(),
            categories: vec!["Safety".to_owned()],
            urgency: "Immediate".to_owned(),
            severity: "Minor".to_owned(),
            certainty: "Observed".to_owned(),
            response_types: vec![],
            texts: vec![model::AdvisoryText {
                language: "en-US".to_owned(),
                headline: "sirens will be tested".to_owned(),
                description: String::new(),
                instruction: String::new(),
            }],
            areas: vec![],
            resources: vec![],
            expires: None,
            web: None,
            contact: None,
            note: None,
        },
        origin: None,
        drafted_by: "ana".to_owned(),
        drafted_at: Timestamp::from_millis(drafted_at),
        approved_by: None,
        approved_at: None,
        issued_by: None,
        issued_at: None,
        cancel_id: None,
        cap_identifier: None,
        document: None,
        signature: None,
    }
}

pub async fn advisories_insert_and_versioned_update(backend: &dyn Backend) {
    let store = backend.open().await;
    let draft = advisory("adv-1", 1_000);
    store
        .write_advisories(std::slice::from_ref(&draft))
        .await
        .unwrap();
    assert_eq!(
        store.get_advisory("adv-1").await.unwrap(),
        Some(draft.clone())
    );
    assert_eq!(store.get_advisory("adv-2").await.unwrap(), None);
    let err = store
        .write_advisories(std::slice::from_ref(&draft))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Conflict, "{err}");

    let mut approved = draft.clone();
    approved.version = 2;
    approved.state = model::AdvisoryState::Approved;
    approved.approved_by = Some("ben".to_owned());
    store
        .write_advisories(std::slice::from_ref(&approved))
        .await
        .unwrap();
    assert_eq!(
        store.get_advisory("adv-1").await.unwrap(),
        Some(approved.clone())
    );
    // A second writer that also read version 1 loses.
    let err = store
        .write_advisories(std::slice::from_ref(&approved))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Conflict, "{err}");
    let mut ghost = advisory("adv-9", 1_000);
    ghost.version = 2;
    let err = store.write_advisories(&[ghost]).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotFound, "{err}");
    let mut zero = advisory("adv-0", 1_000);
    zero.version = 0;
    let err = store.write_advisories(&[zero]).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Invalid, "{err}");
}

pub async fn advisories_write_is_all_or_nothing(backend: &dyn Backend) {
    let store = backend.open().await;
    store
        .write_advisories(&[advisory("adv-1", 1_000)])
        .await
        .unwrap();
    let mut stale = advisory("adv-1", 1_000);
    stale.version = 3; // the stored one is 1, not 2
    let err = store
        .write_advisories(&[advisory("adv-2", 2_000), stale])
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Conflict, "{err}");
    assert_eq!(store.get_advisory("adv-2").await.unwrap(), None);
}

pub async fn advisories_list_drafts_and_issued(backend: &dyn Backend) {
    let store = backend.open().await;
    let mut issued_early = advisory("adv-a", 1_000);
    issued_early.state = model::AdvisoryState::Issued;
    issued_early.issued_at = Some(Timestamp::from_millis(5_000));
    let mut issued_late = advisory("adv-b", 2_000);
    issued_late.state = model::AdvisoryState::Cancelled;
    issued_late.issued_at = Some(Timestamp::from_millis(6_000));
    let draft = advisory("adv-c", 3_000);
    store
        .write_advisories(&[issued_early, issued_late, draft])
        .await
        .unwrap();
    let ids = |list: Vec<model::Advisory>| list.into_iter().map(|a| a.id).collect::<Vec<_>>();
    let all = store
        .list_advisories(&crate::AdvisoryQuery::default())
        .await
        .unwrap();
    assert_eq!(ids(all), ["adv-c", "adv-b", "adv-a"]);
    let issued = store
        .list_advisories(&crate::AdvisoryQuery {
            issued: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(issued), ["adv-b", "adv-a"]);
    // Keyset pages: each continues strictly after the previous page's last advisory, in
    // either order, including two advisories drafted in the same millisecond.
    store
        .write_advisories(&[advisory("adv-d", 3_000)])
        .await
        .unwrap();
    let mut pages = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_advisories(&crate::AdvisoryQuery {
                limit: 1,
                after: after.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = Some((last.drafted_at, last.id.clone()));
        pages.extend(ids(page));
    }
    assert_eq!(pages, ["adv-d", "adv-c", "adv-b", "adv-a"]);
    let issued_after = store
        .list_advisories(&crate::AdvisoryQuery {
            issued: true,
            after: Some((Timestamp::from_millis(6_000), "adv-b".into())),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(issued_after), ["adv-a"]);
    let drafts = store
        .list_advisories(&crate::AdvisoryQuery {
            state: Some(model::AdvisoryState::Draft),
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(drafts), ["adv-d"]);
}

pub async fn reports_insert_and_list(backend: &dyn Backend) {
    let store = backend.open().await;
    let report = |id: &str, ts: i64, category| model::CitizenReport {
        id: id.to_owned(),
        ts: Timestamp::from_millis(ts),
        category,
        text: "siren sounding, sky is clear".to_owned(),
        location: model::Location {
            lat: 45.5,
            lon: -122.6,
        },
    };
    let r1 = report("r1", 1_000, model::ReportCategory::SirenNoStorm);
    let r2 = report("r2", 2_000, model::ReportCategory::Other);
    let r3 = report("r3", 3_000, model::ReportCategory::SirenNoStorm);
    for r in [&r1, &r2, &r3] {
        store.insert_report(r).await.unwrap();
    }
    let err = store.insert_report(&r1).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Conflict, "{err}");
    let all = store
        .list_reports(&crate::ReportQuery::default())
        .await
        .unwrap();
    assert_eq!(all, [r3.clone(), r2.clone(), r1.clone()]);
    let sirens = store
        .list_reports(&crate::ReportQuery {
            category: Some(model::ReportCategory::SirenNoStorm),
            since: Some(Timestamp::from_millis(1_500)),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(sirens, [r3]);
    let older = store
        .list_reports(&crate::ReportQuery {
            before: Some(Timestamp::from_millis(2_000)),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(older, [r1]);
}

pub async fn readiness_history_newest_first(backend: &dyn Backend) {
    let store = backend.open().await;
    for (ts, score) in [(1_000, Some(40.0)), (2_000, None), (3_000, Some(55.5))] {
        store
            .append_readiness(&crate::ReadinessRecord {
                ts: Timestamp::from_millis(ts),
                score,
                body: serde_json::json!({ "ts": ts }),
            })
            .await
            .unwrap();
    }
    let all = store.list_readiness(None, 0).await.unwrap();
    let seen: Vec<(i64, Option<f64>)> = all.iter().map(|r| (r.ts.as_millis(), r.score)).collect();
    assert_eq!(
        seen,
        [(3_000, Some(55.5)), (2_000, None), (1_000, Some(40.0))]
    );
    assert_eq!(all[0].body, serde_json::json!({ "ts": 3_000 }));
    let recent = store
        .list_readiness(Some(Timestamp::from_millis(2_000)), 1)
        .await
        .unwrap();
    assert_eq!(recent.len(), 1);
    assert_eq!(recent[0].ts.as_millis(), 3_000);
}

pub async fn exercises_insert_and_list(backend: &dyn Backend) {
    let store = backend.open().await;
    let record = |id: &str, finished: i64, detected: bool| model::ExerciseRecord {
        id: id.to_owned(),
        recorded_at: Timestamp::from_millis(finished + 5),
        recorded_by: "ana".to_owned(),
        result: model::ExerciseResult {
            started: Timestamp::from_millis(finished - 1_000),
            finished: Timestamp::from_millis(finished),
            seed: Some(7),
            devices: Some(63),
            scenarios: vec![model::ExerciseScenario {
                scenario: "siren-replay".to_owned(),
                detected,
                time_to_detect_s: detected.then_some(0.5),
                rules_fired: vec!["actuation.uncommanded".to_owned()],
                rules_missing: vec![],
                problems: vec![],
            }],
            false_alerts: 1,
        },
    };
    for (id, finished, detected) in [
        ("ex-a", 3_000, true),
        ("ex-b", 1_000, false),
        ("ex-c", 2_000, true),
    ] {
        store
            .insert_exercise(&record(id, finished, detected))
            .await
            .unwrap();
    }
    let err = store
        .insert_exercise(&record("ex-a", 9_000, false))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Conflict, "{err}");
    let all = store.list_exercises(None, 0).await.unwrap();
    let ids: Vec<&str> = all.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["ex-a", "ex-c", "ex-b"]);
    assert_eq!(
        all[0],
        record("ex-a", 3_000, true),
        "the record reads back whole"
    );
    let recent = store
        .list_exercises(Some(Timestamp::from_millis(2_000)), 0)
        .await
        .unwrap();
    assert_eq!(recent.len(), 2);
    assert_eq!(store.list_exercises(None, 1).await.unwrap()[0].id, "ex-a");
}

pub async fn detect_suppressions(backend: &dyn Backend) {
    let store = backend.open().await;
    let suppression = |rule: &str, key: &str, kind: &str| crate::Suppression {
        rule: rule.to_owned(),
        key: key.to_owned(),
        kind: kind.to_owned(),
        until: (kind == "muted").then(|| Timestamp::from_millis(9_000)),
        actor: "ana".to_owned(),
        reason: "maintenance".to_owned(),
        alert_id: Some("al-1".to_owned()),
        created_at: Timestamp::from_millis(1),
    };
    store
        .put_suppression(&suppression("policy.conduit", "a->b tcp/22", "learned"))
        .await
        .unwrap();
    store
        .put_suppression(&suppression("mqtt.topic_abuse", "cam/wildcard", "muted"))
        .await
        .unwrap();
    // the same (rule, key) replaces
    store
        .put_suppression(&suppression("policy.conduit", "a->b tcp/22", "muted"))
        .await
        .unwrap();
    let listed = store.list_suppressions().await.unwrap();
    assert_eq!(
        listed,
        vec![
            suppression("mqtt.topic_abuse", "cam/wildcard", "muted"),
            suppression("policy.conduit", "a->b tcp/22", "muted"),
        ]
    );
    store
        .delete_suppression("policy.conduit", "a->b tcp/22")
        .await
        .unwrap();
    let err = store
        .delete_suppression("policy.conduit", "a->b tcp/22")
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotFound);
    assert_eq!(store.list_suppressions().await.unwrap().len(), 1);
    store.close().await.unwrap();
}

pub async fn detect_learned_state(backend: &dyn Backend) {
    let store = backend.open().await;
    let state = |shard: &str, at: i64, body: String| crate::LearnedState {
        shard: shard.to_owned(),
        taken_at: Timestamp::from_millis(at),
        body,
    };
    assert_eq!(store.get_learned("16/3").await.unwrap(), None);
    assert!(
        store
            .put_learned(&state("16/3", 1_000, "{\"a\":1}".into()))
            .await
            .unwrap()
    );
    assert!(
        store
            .put_learned(&state("16/global", 1_000, "{}".into()))
            .await
            .unwrap()
    );
    // a later save replaces; an earlier one (a slow writer) does not undo it
    let big = format!("{{\"devices\":\"{}\"}}", "é".repeat(3 << 20));
    assert!(
        store
            .put_learned(&state("16/3", 2_000, big.clone()))
            .await
            .unwrap()
    );
    assert!(
        !store
            .put_learned(&state("16/3", 1_500, "{}".into()))
            .await
            .unwrap()
    );
    assert_eq!(
        store.get_learned("16/3").await.unwrap(),
        Some(state("16/3", 2_000, big.clone()))
    );
    assert_eq!(
        store.get_learned("16/global").await.unwrap(),
        Some(state("16/global", 1_000, "{}".into()))
    );
    store.close().await.unwrap();
    let store = backend.open().await;
    assert_eq!(
        store.get_learned("16/3").await.unwrap(),
        Some(state("16/3", 2_000, big))
    );
    store.close().await.unwrap();
}

pub async fn detect_local_indicators(backend: &dyn Backend) {
    let store = backend.open().await;
    let indicator = |n: i64| crate::LocalIndicator {
        id: format!("indicator--00000000-0000-4000-8000-{n:012}"),
        name: format!("c2 {n}"),
        pattern: format!("[ipv4-addr:value = '203.0.113.{n}']"),
        valid_until: None,
        object: serde_json::json!({"type": "indicator", "n": n}),
        actor: "ana".to_owned(),
        created_at: Timestamp::from_millis(n / 2),
    };
    let all: Vec<_> = (1..=5).map(indicator).collect();
    store.put_indicators(&all).await.unwrap();
    let first = store.list_indicators(None, 2).await.unwrap();
    assert_eq!(first, all[..2].to_vec());
    let rest = store.list_indicators(Some(&first[1].id), 10).await.unwrap();
    assert_eq!(rest, all[2..].to_vec());
    store.delete_indicator(&all[0].id).await.unwrap();
    assert_eq!(
        store.delete_indicator(&all[0].id).await.unwrap_err().code(),
        ErrorCode::NotFound
    );
    assert_eq!(store.list_indicators(None, 0).await.unwrap().len(), 4);
    store.close().await.unwrap();
}

// --- per-device rate limits (`RateLimitStore`) ---

pub async fn rate_limits_replace_lift_lapse_and_persist(backend: &dyn Backend) {
    let store = backend.open().await;
    let limit = |device: &str, rate: f64, until: i64| crate::RateLimit {
        device_id: did(device),
        messages_per_s: rate,
        burst: 5,
        until: Timestamp::from_millis(until),
        set_by: "playbook:flood".to_owned(),
        reason: "INC-000001".to_owned(),
        set_at: Timestamp::from_millis(1),
    };
    let now = Timestamp::from_millis(1_000);
    store
        .put_rate_limit(&limit("meter-1", 1.0, 5_000))
        .await
        .unwrap();
    store
        .put_rate_limit(&limit("meter-1", 0.5, 9_000))
        .await
        .unwrap();
    store
        .put_rate_limit(&limit("meter-2", 2.0, 9_000))
        .await
        .unwrap();
    store
        .put_rate_limit(&limit("meter-3", 2.0, 900))
        .await
        .unwrap();
    // Replaced, not added; the lapsed one is gone.
    assert_eq!(
        store.list_rate_limits(now).await.unwrap(),
        vec![limit("meter-1", 0.5, 9_000), limit("meter-2", 2.0, 9_000)]
    );
    assert!(store.delete_rate_limit(&did("meter-2")).await.unwrap());
    assert!(!store.delete_rate_limit(&did("meter-2")).await.unwrap());
    store.close().await.unwrap();
    drop(store);

    let store = backend.open().await;
    assert_eq!(
        store.list_rate_limits(now).await.unwrap(),
        vec![limit("meter-1", 0.5, 9_000)]
    );
    assert_eq!(
        store
            .list_rate_limits(Timestamp::from_millis(9_000))
            .await
            .unwrap(),
        vec![]
    );
    store.close().await.unwrap();
}

// --- the console's alert acknowledgements (`ConsoleStore`) ---

pub async fn console_acks_first_stands_and_persist(backend: &dyn Backend) {
    use crate::AlertAck;
    let ack = |id: &str, actor: &str| AlertAck {
        alert_id: id.into(),
        actor: actor.into(),
        at: Timestamp::from_millis(1_000),
        note: "taken".into(),
    };
    let store = backend.open().await;
    store.ack_alert(&ack("al-1", "ana")).await.unwrap();
    store.ack_alert(&ack("al-2", "bob")).await.unwrap();
    // An alert is acknowledged once: the second person is refused, the first stands.
    assert!(matches!(
        store.ack_alert(&ack("al-1", "bob")).await,
        Err(crate::Error::Conflict { .. })
    ));
    // Asking for many ids at once (more than one statement's worth on some backends).
    let ids: Vec<String> = (0..1_200)
        .map(|i| format!("x{i}"))
        .chain(["al-1".to_owned()])
        .collect();
    assert_eq!(
        store.alert_acks(&ids).await.unwrap(),
        vec![ack("al-1", "ana")]
    );
    assert!(store.alert_acks(&[]).await.unwrap().is_empty());
    store.close().await.unwrap();
    drop(store);

    let store = backend.open().await;
    let mut found = store
        .alert_acks(&["al-1".to_owned(), "al-2".to_owned(), "al-3".to_owned()])
        .await
        .unwrap();
    found.sort_by(|a, b| a.alert_id.cmp(&b.alert_id));
    assert_eq!(found, vec![ack("al-1", "ana"), ack("al-2", "bob")]);
    store.close().await.unwrap();
}

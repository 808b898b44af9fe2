//! Conformance checks for [`AuditStore`](crate::AuditStore) and
//! [`GatewayStore`](crate::GatewayStore).

use model::{DeviceId, Timestamp};
use serde_json::json;

use super::Backend;
use crate::audit::{AuditEntry, CommandQuery, CommandRecord, GENESIS_HASH, chain_hash};

fn entry(i: i64, action: &str) -> AuditEntry {
    AuditEntry {
        ts: Timestamp::from_millis(1_790_000_000_000 + i),
        actor: "alice".to_owned(),
        action: action.to_owned(),
        subject: Some(format!("cmd-{i}")),
        outcome: "ok".to_owned(),
        detail: json!({"z": 1, "a": {"y": [2, 1], "b": "x"}}),
    }
}

pub async fn audit_appends_chain_and_verify(backend: &dyn Backend) {
    let store = backend.open().await;
    let report = store.verify_audit().await.unwrap();
    assert_eq!((report.records, report.broken), (0, None));
    assert_eq!(report.last_hash, GENESIS_HASH);

    let first = store
        .append_audit(&[entry(1, "command.requested"), entry(2, "command.refused")])
        .await
        .unwrap();
    let second = store.append_audit(&[entry(3, "login")]).await.unwrap();
    assert!(store.append_audit(&[]).await.unwrap().is_empty());
    let records: Vec<_> = first.iter().chain(&second).collect();
    assert_eq!(
        records.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(records[0].prev_hash, GENESIS_HASH);
    assert_eq!(records[1].prev_hash, records[0].hash);
    assert_eq!(records[2].prev_hash, records[1].hash);

    let stored = store.list_audit(0, 10).await.unwrap();
    assert_eq!(stored.len(), 3);
    for (row, record) in stored.iter().zip(&records) {
        assert_eq!(row.hash, chain_hash(&row.prev_hash, &row.body));
        assert_eq!(&row.record().unwrap(), *record);
    }
    // Keys are sorted at every level, so the body is the canonical form.
    assert!(
        stored[0]
            .body
            .starts_with(r#"{"action":"command.requested","actor":"alice","detail":{"a":{"b":"x","y":[2,1]},"z":1}"#),
        "{}",
        stored[0].body
    );
    assert_eq!(store.list_audit(2, 10).await.unwrap().len(), 1);
    let report = store.verify_audit().await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(
        (report.records, report.last_hash.as_str()),
        (3, records[2].hash.as_str())
    );
}

pub async fn audit_survives_reopen(backend: &dyn Backend) {
    let store = backend.open().await;
    store.append_audit(&[entry(1, "login")]).await.unwrap();
    store.close().await.unwrap();
    let store = backend.open().await;
    let more = store.append_audit(&[entry(2, "login")]).await.unwrap();
    assert_eq!(more[0].seq, 2);
    let report = store.verify_audit().await.unwrap();
    assert!(report.is_intact() && report.records == 2, "{report:?}");
}

pub async fn command_counters_increase(backend: &dyn Backend) {
    let store = backend.open().await;
    let a = DeviceId::new("siren-1").unwrap();
    let b = DeviceId::new("valve-1").unwrap();
    assert_eq!(
        store
            .next_command_counters(&[a.clone(), b.clone()], 0)
            .await
            .unwrap(),
        vec![1, 1]
    );
    assert_eq!(
        store
            .next_command_counters(&[a.clone(), a.clone()], 0)
            .await
            .unwrap(),
        vec![2, 3]
    );
    store.close().await.unwrap();
    let store = backend.open().await;
    assert_eq!(
        store
            .next_command_counters(std::slice::from_ref(&a), 0)
            .await
            .unwrap(),
        vec![4]
    );
    assert_eq!(store.next_command_counters(&[b], 0).await.unwrap(), vec![2]);
    // A floor moves the counter up, never down.
    assert_eq!(
        store
            .next_command_counters(std::slice::from_ref(&a), 1_000)
            .await
            .unwrap(),
        vec![1_000]
    );
    assert_eq!(
        store
            .next_command_counters(std::slice::from_ref(&a), 10)
            .await
            .unwrap(),
        vec![1_001]
    );
    assert_eq!(
        store
            .next_command_counters(&[a.clone(), a], 2_000)
            .await
            .unwrap(),
        vec![2_000, 2_001]
    );
}

pub async fn commands_put_get_list(backend: &dyn Backend) {
    let store = backend.open().await;
    for (i, state) in ["pending_approval", "delivered", "acked"]
        .iter()
        .enumerate()
    {
        store
            .put_command(&CommandRecord {
                id: format!("cmd-{i}"),
                created_at: Timestamp::from_millis(1_000 + i as i64),
                state: (*state).to_owned(),
                body: json!({"n": i}),
            })
            .await
            .unwrap();
    }
    // Replacing keeps the creation time and changes state and body.
    store
        .put_command(&CommandRecord {
            id: "cmd-0".to_owned(),
            created_at: Timestamp::from_millis(1_000),
            state: "approved".to_owned(),
            body: json!({"n": 0, "approved": true}),
        })
        .await
        .unwrap();
    let got = store.get_command("cmd-0").await.unwrap().unwrap();
    assert_eq!(got.state, "approved");
    assert_eq!(got.body["approved"], json!(true));
    assert_eq!(store.get_command("nope").await.unwrap(), None);

    let all = store.list_commands(&CommandQuery::default()).await.unwrap();
    let ids: Vec<_> = all.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["cmd-2", "cmd-1", "cmd-0"]);
    let delivered = store
        .list_commands(&CommandQuery {
            state: Some("delivered".to_owned()),
            ..CommandQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(delivered.len(), 1);
    let older = store
        .list_commands(&CommandQuery {
            before: Some(Timestamp::from_millis(1_002)),
            limit: 1,
            ..CommandQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(older[0].id, "cmd-1");

    // A device's commands, by index: only those naming it, newest first, however many
    // other commands came after; state changes (a second put) index nothing twice.
    let named = |id: &str, at: i64, devices: &[&str]| CommandRecord {
        id: id.to_owned(),
        created_at: Timestamp::from_millis(at),
        state: "delivered".to_owned(),
        body: json!({"devices": devices}),
    };
    store
        .put_command(&named("cmd-s1", 2_000, &["siren-1", "siren-2"]))
        .await
        .unwrap();
    for i in 0..20 {
        store
            .put_command(&named(&format!("cmd-v{i}"), 2_001 + i, &["valve-1"]))
            .await
            .unwrap();
    }
    store
        .put_command(&named("cmd-s2", 3_000, &["siren-1", "siren-1"]))
        .await
        .unwrap();
    let mut acked = named("cmd-s2", 3_000, &["siren-1"]);
    acked.state = "acked".to_owned();
    store.put_command(&acked).await.unwrap();
    let of = |device: &str, state: Option<&str>, limit: usize| CommandQuery {
        device_id: Some(device.to_owned()),
        state: state.map(str::to_owned),
        limit,
        ..CommandQuery::default()
    };
    let ids = |list: Vec<CommandRecord>| list.into_iter().map(|c| c.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.list_commands(&of("siren-1", None, 0)).await.unwrap()),
        ["cmd-s2", "cmd-s1"]
    );
    assert_eq!(
        ids(store.list_commands(&of("siren-2", None, 0)).await.unwrap()),
        ["cmd-s1"]
    );
    assert_eq!(
        ids(store
            .list_commands(&of("siren-1", Some("acked"), 0))
            .await
            .unwrap()),
        ["cmd-s2"]
    );
    assert_eq!(
        store
            .list_commands(&of("valve-1", None, 5))
            .await
            .unwrap()
            .len(),
        5
    );
    assert!(
        store
            .list_commands(&of("pump-9", None, 0))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .put_command(&CommandRecord {
                id: String::new(),
                created_at: Timestamp::from_millis(1),
                state: "x".to_owned(),
                body: json!({}),
            })
            .await
            .is_err()
    );
}

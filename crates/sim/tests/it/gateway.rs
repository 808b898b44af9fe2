//! The command gateway end to end over real MQTT: an uncommanded siren is answered with a
//! signed all-clear that the device verifies, replays are refused by the device, commands to
//! the simulator's actuators are acknowledged and tracked, two-person approval gates a valve,
//! siren activations without an authorised warning are refused, and the audit chain holds.
//! Also: the simulator's actuators against Mosquitto refuse replayed, tampered and stale
//! commands and acknowledge each refusal.

use std::sync::Arc;
use std::time::Duration;

use gateway::{CommandRequest, CommandState, Principal};
use model::{DeviceClass, Timestamp};
use serde_json::Value;
use sim::attacks::AttackConfig;
use sim::population::Population;
use sim::{SimConfig, SimStats};

use crate::harness::{City, Siren};

async fn settled(city: &City, id: &str) -> gateway::Command {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let command = city.platform.gateway().get(id).await.unwrap();
        if command.state.is_final() || tokio::time::Instant::now() > deadline {
            return command;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncommanded_siren_is_silenced_and_commands_are_tracked() {
    let city = City::start(7, 60).await.unwrap();
    let gw = city.platform.gateway();
    let store = city.platform.store();
    let mut siren = Siren::connect(city.platform.mqtt_addr(), &city.siren, gw.public_key())
        .await
        .unwrap();
    siren.report(false).await.unwrap();

    // Twice, as on the night the sirens sounded again and again.
    let mut last = Vec::new();
    for k in 1..=2 {
        siren.report(true).await.unwrap();
        let (_, payload) = siren.next_command(Duration::from_secs(5)).await.unwrap();
        // The audit record was durable before the command left.
        let body: Value = serde_json::from_slice(&payload).unwrap();
        let id = body["id"].as_str().unwrap().to_owned();
        let audit = store.list_audit(0, 10_000).await.unwrap();
        assert!(
            audit
                .iter()
                .any(|r| r.body.contains("\"command.authorised\"") && r.body.contains(&id)),
            "no audit record for {id} before delivery"
        );
        let body = siren
            .verify_and_ack(&payload)
            .await
            .unwrap()
            .expect("signed by the gateway");
        assert_eq!(body["action"], "silence");
        assert_eq!(body["device"], city.siren.id.as_str());
        city.alert_stored(&city.siren.id, k, Duration::from_secs(5))
            .await
            .unwrap();
        siren.report(false).await.unwrap();
        let command = settled(&city, &id).await;
        assert_eq!(command.state, CommandState::Acked, "{command:?}");
        // The gateway's reconciliation; the incident playbook finds it and sends no second.
        assert_eq!(command.requested_by, "citysec");
        last = payload;
    }

    // A replay of the last all-clear: the device refuses it and says why.
    let refused = siren.verify_and_ack(&last).await.unwrap().unwrap_err();
    assert!(
        matches!(refused, verifier::Refusal::Replayed { .. }),
        "{refused}"
    );

    // An operator's one-step command to a simulated street light: signed, verified by the
    // simulator's device, acknowledged.
    let alice = Principal::new("alice", "operator");
    let light = city
        .population
        .of_class(DeviceClass::StreetLight)
        .next()
        .unwrap()
        .id
        .clone();
    let request = |devices: Vec<String>, action: &str| CommandRequest {
        devices,
        action: action.to_owned(),
        params: serde_json::Map::new(),
        advisory: None,
        reason: Some("integration test".into()),
    };
    let sent = gw
        .submit(
            &alice,
            request(vec![light.to_string()], "on"),
            Timestamp::now(),
        )
        .await
        .unwrap();
    let command = settled(&city, &sent.id).await;
    assert_eq!(command.state, CommandState::Acked, "{command:?}");

    // A valve needs a second, different person; then the simulator's valve acts on it.
    let valve = city
        .population
        .of_class(DeviceClass::Valve)
        .next()
        .unwrap()
        .id
        .clone();
    let pending = gw
        .submit(
            &alice,
            request(vec![valve.to_string()], "close"),
            Timestamp::now(),
        )
        .await
        .unwrap();
    assert_eq!(pending.state, CommandState::PendingApproval);
    let err = gw
        .approve(
            &Principal::new("alice", "admin"),
            &pending.id,
            &pending.payload_sha256,
            Timestamp::now(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.refusal().unwrap().kind(), "same_person");
    gw.approve(
        &Principal::new("carol", "admin"),
        &pending.id,
        &pending.payload_sha256,
        Timestamp::now(),
    )
    .await
    .unwrap();
    let command = settled(&city, &pending.id).await;
    assert_eq!(command.state, CommandState::Acked, "{command:?}");
    assert_eq!(command.approvals[0].by, "carol");

    // No advisory store yet: a siren activation is refused, nothing reaches the siren.
    let mut sound = request(vec![city.siren.id.to_string()], "sound");
    sound.advisory = Some("adv-2026-001".into());
    let err = gw
        .submit(&alice, sound, Timestamp::now())
        .await
        .unwrap_err();
    assert_eq!(err.refusal().unwrap().kind(), "warning_not_authorised");
    assert!(
        siren
            .next_command(Duration::from_millis(300))
            .await
            .is_err()
    );

    // Every simulated device verified what it received; none refused.
    let snap = city.stats.snapshot();
    assert_eq!((snap.cmds_received, snap.cmds_refused), (2, 0), "{snap:?}");

    let report = store.verify_audit().await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    let actions: Vec<String> = store
        .list_audit(0, 10_000)
        .await
        .unwrap()
        .iter()
        .map(|r| r.record().unwrap().entry.action)
        .collect();
    for wanted in [
        "config.loaded",
        "command.authorised",
        "command.acked",
        "approval.refused",
        "command.approved",
        "command.refused",
        "device.refused_command",
    ] {
        assert!(
            actions.iter().any(|a| a == wanted),
            "{wanted} not in {actions:?}"
        );
    }
    drop(siren);
    city.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_actuators_refuse_replayed_tampered_and_stale_commands() {
    if !crate::peers_available(&[
        "stdbuf",
        "mosquitto",
        "mosquitto_sub",
        "mosquitto_pub",
        "mosquitto_passwd",
    ]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let population = Arc::new(Population::generate(20, 5));
    let (_broker, addr) = crate::start_mosquitto(dir.path(), &population);
    let (_observer, lines) = crate::start_observer(addr);
    let signer = gateway::Signer::from_seed(&[3u8; 32]);

    let mut config = SimConfig::new(addr, population.clone());
    config.attacks = AttackConfig::disabled();
    config.rate = Some(20.0);
    config.gateway_key = Some(signer.public_key());
    let stats = Arc::new(SimStats::default());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let run = tokio::spawn(sim::run(config, stats.clone(), stop_rx));
    crate::wait_for("20 devices", &stats, |s| s.devices_connected == 20).await;

    let valve = population
        .of_class(DeviceClass::Valve)
        .next()
        .unwrap()
        .id
        .clone();
    let now = Timestamp::now();
    let params = serde_json::Map::new();
    let sign = |id: &str, counter: u64, expires_ms: i64| {
        let bytes = signer.encode(&gateway::Envelope {
            device: &valve,
            counter,
            expires_at: now.saturating_add_ms(expires_ms),
            issued_at: now,
            command_id: id,
            action: "close",
            params: &params,
        });
        String::from_utf8(bytes).unwrap()
    };
    let good = sign("c-1", 10, 60_000);
    let tampered = sign("c-2", 11, 60_000).replace("\"close\"", "\"open!\"");
    let stale = sign("c-3", 12, -1);
    let topic = format!("city/water/{valve}/cmd");
    for payload in [&good, &good, &tampered, &stale] {
        let (topic, payload) = (topic.clone(), payload.clone());
        tokio::task::spawn_blocking(move || crate::publish_command(addr, &topic, &payload))
            .await
            .unwrap();
    }
    crate::wait_for("4 commands", &stats, |s| s.cmds_received == 4).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let acks: Vec<Value> = lines
        .try_iter()
        .filter_map(|l| {
            let (t, p) = l.split_once(' ')?;
            (t == format!("city/water/{valve}/ack")).then(|| serde_json::from_str(p).ok())?
        })
        .collect();
    let verdicts: Vec<(Option<&str>, Option<bool>, String)> = acks
        .iter()
        .map(|a| {
            let error = a["error"]
                .as_str()
                .unwrap_or("")
                .split(':')
                .next()
                .unwrap()
                .to_owned();
            (a["id"].as_str(), a["ok"].as_bool(), error)
        })
        .collect();
    assert_eq!(
        verdicts,
        [
            (Some("c-1"), Some(true), String::new()),
            (Some("c-1"), Some(false), "replayed command".to_owned()),
            (Some("c-2"), Some(false), "bad signature".to_owned()),
            (Some("c-3"), Some(false), "stale command".to_owned()),
        ]
    );
    assert_eq!(stats.snapshot().cmds_refused, 3);
    stop_tx.send(true).unwrap();
    run.await.unwrap().unwrap();
}

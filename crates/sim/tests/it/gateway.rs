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

/// A small tmpfs mounted for the test (unmounted on drop), so the embedded store's disk can
/// really fill up.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    /// `None` (with a message) when this process may not mount (not root); with
    /// `CITYSEC_REQUIRE_PEERS=1` that fails the test instead.
    fn mount(path: &std::path::Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(path).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            assert!(
                std::env::var("CITYSEC_REQUIRE_PEERS").as_deref() != Ok("1"),
                "cannot mount a tmpfs (the test runs as root in CI)"
            );
            eprintln!("skipping: cannot mount a tmpfs (needs root)");
            return None;
        }
        Some(Tmpfs(path.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Fills the file system under `path` with a file until it is full; returns the file.
fn fill(dir: &std::path::Path) -> std::path::PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while file.write_all(&chunk).is_ok() {}
    // The last partial chunk, byte by byte is too slow: smaller pieces until nothing fits.
    for size in [4096, 512, 1] {
        while file.write_all(&chunk[..size]).is_ok() {}
    }
    let _ = file.sync_all();
    path
}

fn api(city: &City, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into();
    let url = format!("http://{}{path}", city.platform.http_addr());
    let auth = format!("Bearer {}", city.platform.admin_token());
    let mut response = match (method, body) {
        ("GET", _) => agent.get(&url).header("Authorization", &auth).call(),
        (_, Some(body)) => agent
            .post(&url)
            .header("Authorization", &auth)
            .send_json(body),
        (_, None) => agent.post(&url).header("Authorization", &auth).send_empty(),
    }
    .unwrap();
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// The real embedded store runs out of disk (its data directory is a small tmpfs the test
/// fills): siren activations are refused with the reason and nothing reaches the siren,
/// while an all-clear still does (the siren's own verifier accepts it), even with the bus
/// full behind the stuck store writer and the siren's own connection waiting on it. Once
/// the disk has room again, the refusals and the all-clear are in the audit log, whose
/// chain holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_store_out_of_disk_activations_are_refused_and_cancels_reach_the_siren() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let Some(_tmpfs) = Tmpfs::mount(&data, "24m") else {
        return;
    };
    let city = City::start_with(11, 40, Some(&data), |config| {
        // A small bus, so that the stuck store writer fills its group within the test (a
        // city of tens of thousands of devices fills the default 65,536 in seconds).
        config.bus = app::config::BusConfig::InProcess { capacity: 256 };
        config.gateway.ack_timeout_s = 60;
    })
    .await
    .unwrap();
    let gw = city.platform.gateway();
    let store = city.platform.store();
    let mut siren = Siren::connect(city.platform.mqtt_addr(), &city.siren, gw.public_key())
        .await
        .unwrap();
    siren.report(false).await.unwrap();

    // An issued (exercise) warning, so that a siren activation is authorised by policy.
    let city_ref = &city;
    let (status, draft) = tokio::task::block_in_place(|| {
        api(
            city_ref,
            "POST",
            "/api/v1/advisories",
            Some(serde_json::json!({
                "status": "Exercise",
                "content": {
                    "event": "Siren drill",
                    "categories": ["Safety"],
                    "urgency": "Expected",
                    "severity": "Minor",
                    "certainty": "Observed",
                    "response_types": ["None"],
                    "texts": [{"language": "en-US", "headline": "Exercise: sirens", "description": "A drill."}],
                    "areas": [{"description": "the city", "circles": [{"center": {"lat": 45.5, "lon": -122.6}, "radius_km": 20.0}]}]
                }
            })),
        )
    });
    assert_eq!(status, 201, "{draft}");
    let advisory = draft["id"].as_str().unwrap().to_owned();
    let (status, issued) = tokio::task::block_in_place(|| {
        api(
            city_ref,
            "POST",
            &format!("/api/v1/advisories/{advisory}/issue"),
            None,
        )
    });
    assert_eq!(status, 200, "{issued}");

    let alice = Principal::new("alice", "operator");
    let bob = Principal::new("bob", "supervisor");
    let sound = || CommandRequest {
        devices: vec![city.siren.id.to_string()],
        action: "sound".to_owned(),
        params: serde_json::Map::new(),
        advisory: Some(advisory.clone()),
        reason: Some("drill".into()),
    };
    // With the store up, the activation is accepted for a second person's approval.
    let pending = gw.submit(&alice, sound(), Timestamp::now()).await.unwrap();
    assert_eq!(pending.state, CommandState::PendingApproval, "{pending:?}");

    // The disk fills; writes fail until the store's own slack is used up.
    let filler = fill(&data);
    let mut failed = None;
    for i in 0..2000 {
        let batch: Vec<model::Event> = (0..50)
            .map(|j| model::Event {
                ts: Timestamp::now(),
                device_id: Some(city.siren.id.clone()),
                sector: Some(city.siren.sector),
                kind: model::EventKind::Telemetry {
                    readings: vec![model::Reading {
                        name: format!("filler_{i}_{j}_{}", "x".repeat(200)),
                        value: model::Value::Number(1.0),
                        unit: None,
                    }],
                },
            })
            .collect();
        if let Err(err) = store.append_events(&batch).await {
            failed = Some(err);
            break;
        }
    }
    let failed = failed.expect("the store kept taking writes on a full disk");
    assert_eq!(failed.code(), model::ErrorCode::Unavailable, "{failed}");

    // The siren's connection now waits on a full bus behind the stuck store writer.
    siren.telemetry_burst(400).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A new activation is refused with the reason; so is the approval of the pending one.
    let err = gw
        .submit(&alice, sound(), Timestamp::now())
        .await
        .unwrap_err();
    let gateway::GatewayError::Refused { id: refused_id, .. } = &err else {
        panic!("not a refusal: {err}");
    };
    let refused_id = refused_id.clone();
    let refusal = err.refusal().expect("a refusal").clone();
    assert_eq!(refusal.kind(), "unavailable", "{err}");
    assert!(
        err.to_string().contains("audit log unavailable") && err.to_string().contains("full"),
        "{err}"
    );
    let err = gw
        .approve(&bob, &pending.id, &pending.payload_sha256, Timestamp::now())
        .await
        .unwrap_err();
    assert_eq!(
        err.refusal().map(|r| r.kind()),
        Some("unavailable"),
        "{err}"
    );
    assert!(
        siren
            .next_command(Duration::from_millis(500))
            .await
            .is_err(),
        "nothing reaches the siren"
    );

    // The all-clear goes out all the same and the siren's verifier accepts it.
    let started = std::time::Instant::now();
    let cancel = tokio::time::timeout(Duration::from_secs(5), gateway_all_clear(&city))
        .await
        .expect("the all-clear waited on the store")
        .unwrap();
    assert_eq!(cancel.state, CommandState::Delivered, "{cancel:?}");
    let (_, payload) = siren.next_command(Duration::from_secs(5)).await.unwrap();
    let body = siren
        .verify_and_ack(&payload)
        .await
        .unwrap()
        .expect("the device accepts the all-clear");
    assert_eq!(body["action"], "silence");
    assert_eq!(body["id"], cancel.id.as_str());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(
        gw.stats
            .audit_backlog
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 3,
        "the entries the log could not take are held for it"
    );

    // Room again: the bus drains, the ack arrives, the backlog is written in order.
    std::fs::remove_file(filler).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let done = gw.get(&cancel.id).await.map(|c| c.state);
        if done.as_ref().is_ok_and(|s| *s == CommandState::Acked)
            && gw
                .stats
                .audit_backlog
                .load(std::sync::atomic::Ordering::Relaxed)
                == 0
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not settled after the store came back: {done:?}, backlog {}",
            gw.stats
                .audit_backlog
                .load(std::sync::atomic::Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let records: Vec<(String, String, String)> = store
        .list_audit(0, 100_000)
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let e = r.record().unwrap().entry;
            (
                e.action,
                e.subject.unwrap_or_default(),
                e.detail.to_string(),
            )
        })
        .collect();
    let has = |action: &str, subject: &str, detail: &str| {
        records
            .iter()
            .any(|(a, s, d)| a == action && s == subject && d.contains(detail))
    };
    assert!(
        has("command.refused", &refused_id, "audit log unavailable"),
        "the refused activation is audited: {records:#?}"
    );
    assert!(
        has("command.refused", &pending.id, "audit log unavailable"),
        "the refused approval is audited"
    );
    assert!(
        has("command.authorised", &cancel.id, "silence"),
        "the cancel is audited"
    );
    assert!(
        has("command.acked", &cancel.id, ""),
        "its acknowledgement too"
    );
    let report = store.verify_audit().await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    drop(siren);
    city.stop().await.unwrap();
}

async fn gateway_all_clear(city: &City) -> Result<gateway::Command, gateway::GatewayError> {
    city.platform
        .gateway()
        .all_clear(
            &city.siren.id,
            &Principal::new("carol", "operator"),
            "drill over",
            Timestamp::now(),
        )
        .await
}

//! Issue 9 ("Bad input"): NATS and PostgreSQL going away and coming back under a running
//! platform (ingest, detection and the API in one process) with the embedded broker, and
//! devices publishing QoS 1 through `mosquitto_pub`; NATS stopped by SIGTERM and then
//! SIGKILL, PostgreSQL by a fast and then an immediate shutdown, each started again on the
//! same port and storage. Every publish the broker acknowledged
//! ends up stored exactly once; past the buffer's bound MQTT 5 publishes are refused with
//! 0x97; `/readyz` answers 503 naming the dependency during the outage and 200 after.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use bus::testsuite::server::TestNats;
use model::{Credential, Device, DeviceClass, DeviceId, DeviceStatus, Timestamp};
use store::testsuite::server::TestPostgres;

use crate::{City, have, start_with};

const SECRET: &str = "0123456789abcdef0123456789abcdef";

fn pump(id: &str) -> Device {
    Device {
        id: DeviceId::new(id).unwrap(),
        sector: model::Sector::Water,
        class: DeviceClass::Pump,
        zone: "water-plant".into(),
        owner: "water".into(),
        vendor: "acme".into(),
        model: "p1".into(),
        firmware: "1.0".into(),
        addresses: vec![],
        location: None,
        credentials: vec![Credential::Secret {
            hash: ingest::credentials::hash_secret(SECRET),
        }],
        status: DeviceStatus::Active,
        created_at: Timestamp::now(),
    }
}

/// What one QoS 1 publish got from the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Acked,
    /// A negative PUBACK (MQTT 5) or a closed connection (3.1.1).
    Refused,
}

/// One QoS 1 publish of `{"seq": N}` by `pump-1`, in its own `mosquitto_pub` process.
async fn publish(port: u16, seq: u64, v5: bool) -> (Outcome, String) {
    tokio::task::spawn_blocking(move || {
        let out = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(["-i", "pump-1", "-u", "pump-1", "-P", SECRET])
            .args(["-V", if v5 { "mqttv5" } else { "mqttv311" }])
            .args(["-q", "1", "-t", "city/water/pump-1/telemetry"])
            .args(["-m", &format!("{{\"seq\": {seq}}}")])
            .output()
            .expect("run mosquitto_pub");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // mosquitto_pub prints a warning for a negative acknowledgement.
        let acked = out.status.success() && !text.contains("failed");
        (
            if acked {
                Outcome::Acked
            } else {
                Outcome::Refused
            },
            text,
        )
    })
    .await
    .unwrap()
}

/// `/readyz`: (status, body, Retry-After).
async fn readyz(city: &City) -> (u16, String) {
    let (status, body) = city.call("GET", "/readyz", None, None).await;
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn wait_ready(city: &City, want: u16, naming: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = readyz(city).await;
        if status == want && body.contains(naming) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz is {status} {body}, want {want} naming {naming:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The `seq` of every telemetry event of `pump-1` in the database, with how often it is
/// stored.
async fn stored(pg: &TestPostgres, db: &str) -> BTreeMap<u64, usize> {
    use store::Store;
    let store = store::PgStore::connect(&pg.config(db)).await.unwrap();
    let events = store
        .list_events(&store::EventQuery {
            device_id: Some(DeviceId::new("pump-1").unwrap()),
            kind: Some("telemetry".into()),
            limit: 10_000,
            ..Default::default()
        })
        .await
        .unwrap();
    store.close().await.unwrap();
    let mut seqs = BTreeMap::new();
    for e in events {
        if let model::EventKind::Telemetry { readings } = &e.kind
            && let Some(r) = readings.iter().find(|r| r.name == "seq")
            && let model::Value::Number(n) = r.value
        {
            *seqs.entry(n as u64).or_insert(0) += 1;
        }
    }
    seqs
}

async fn wait_stored(pg: &TestPostgres, db: &str, acked: &[u64]) -> BTreeMap<u64, usize> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let seqs = stored(pg, db).await;
        if acked.iter().all(|s| seqs.contains_key(s)) {
            return seqs;
        }
        if Instant::now() > deadline {
            let missing: Vec<_> = acked.iter().filter(|s| !seqs.contains_key(s)).collect();
            panic!("acknowledged publishes not stored: {missing:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A POST whose status, Retry-After and body we need (citizen reports need no token).
async fn post_report(city: &City) -> (u16, Option<String>, String) {
    let url = format!("{}/api/v1/reports", city.base);
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut response = agent
            .post(&url)
            .send_json(serde_json::json!({"category": "siren_no_storm", "text": "siren, clear sky", "location": {"lat": 45.4, "lon": -122.6}}))
            .unwrap();
        let retry = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let body = response.body_mut().read_to_string().unwrap();
        (response.status().as_u16(), retry, body)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_nats_and_postgres_outages() {
    if !have("mosquitto_pub", "--help") {
        return;
    }
    let Some(binary) = bus::testsuite::server::binary() else {
        assert!(!crate::require(), "nats-server is required");
        println!("skipping: nats-server is not installed");
        return;
    };
    let Some(mut pg) = TestPostgres::start(false) else {
        return;
    };
    let mut nats = TestNats::try_start(&binary, None).unwrap();
    let db = pg.create_database().await;
    let (url, password) = (pg.url(&db), pg.password().to_owned());
    let nats_config = bus::NatsConfig {
        publish_timeout_ms: 1_500,
        ack_wait_ms: 5_000,
        buffer_messages: 10,
        ..nats.config(4)
    };
    let city = start_with(move |config, dir| {
        config.store = crate::postgres_store(dir, url, &password);
        config.bus = app::config::BusConfig::Nats(nats_config);
    })
    .await;
    let platform = city.platform.as_ref().unwrap();
    platform
        .register_devices(vec![pump("pump-1")])
        .await
        .unwrap();
    let port = platform.mqtt_addr().port();
    wait_ready(&city, 200, "ready").await;

    let mut acked = Vec::new();
    for seq in 0..3 {
        let (outcome, text) = publish(port, seq, true).await;
        assert_eq!(outcome, Outcome::Acked, "{text}");
        acked.push(seq);
    }

    let mut all_refused = Vec::new();
    for (round, hard) in [false, true].into_iter().enumerate() {
        let base = round as u64 * 1_000;
        // NATS stops (SIGTERM, then SIGKILL): the broker keeps acknowledging into the
        // buffer, up to its bound, then refuses.
        nats = tokio::task::spawn_blocking(move || {
            nats.halt(hard);
            nats
        })
        .await
        .unwrap();
        wait_ready(&city, 503, "bus").await;
        let (status, retry, body) = post_report(&city).await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(retry.as_deref(), Some("5"));
        assert!(body.contains("event bus is unavailable"), "{body}");
        let mut refused_v5 = Vec::new();
        for seq in base + 100..base + 125 {
            match publish(port, seq, true).await {
                (Outcome::Acked, _) => acked.push(seq),
                (Outcome::Refused, text) => refused_v5.push((seq, text)),
            }
        }
        // Each `mosquitto_pub` is a connect, a publish and a disconnect: three events for a
        // buffer of ten.
        assert!(
            acked.iter().filter(|s| **s >= base + 100).count() >= 3,
            "the buffer took publishes up to its bound: {acked:?}"
        );
        assert!(
            !refused_v5.is_empty(),
            "past the bound publishes are refused"
        );
        assert!(
            refused_v5[0].1.to_lowercase().contains("quota"),
            "MQTT 5 is told quota exceeded (0x97): {}",
            refused_v5[0].1
        );
        // 3.1.1 has no negative acknowledgement: the connection is closed, nothing acked.
        let (outcome, text) = publish(port, base + 200, false).await;
        assert_eq!(outcome, Outcome::Refused, "{text}");
        let status = platform.status();
        assert!(!status.bus_up && status.store_up, "{status:?}");
        assert!(status.events_buffered >= 10, "{status:?}");
        assert!(
            status.events_refused >= refused_v5.len() as u64,
            "{status:?}"
        );
        all_refused.extend(refused_v5.iter().map(|(s, _)| *s));

        nats = tokio::task::spawn_blocking(move || {
            nats.restart();
            nats
        })
        .await
        .unwrap();
        wait_ready(&city, 200, "ready").await;
        let seqs = wait_stored(&pg, &db, &acked).await;
        assert!(seqs.values().all(|n| *n == 1), "stored once each: {seqs:?}");
        assert_eq!(platform.status().events_buffered, 0);

        // PostgreSQL stops (fast, then immediate shutdown): the bus (JetStream) holds the
        // events, devices are still acknowledged, and nothing is acknowledged on the bus
        // before it is stored.
        pg = tokio::task::spawn_blocking(move || {
            pg.halt(hard);
            pg
        })
        .await
        .unwrap();
        for seq in base + 300..base + 310 {
            let (outcome, text) = publish(port, seq, true).await;
            assert_eq!(outcome, Outcome::Acked, "the bus takes them: {text}");
            acked.push(seq);
        }
        wait_ready(&city, 503, "store").await;
        assert!(!platform.status().store_up);
        pg = tokio::task::spawn_blocking(move || {
            pg.restart();
            pg
        })
        .await
        .unwrap();
        wait_ready(&city, 200, "ready").await;
        let seqs = wait_stored(&pg, &db, &acked).await;
        assert!(seqs.values().all(|n| *n == 1), "stored once each: {seqs:?}");
        assert!(
            all_refused.iter().all(|s| !seqs.contains_key(s)),
            "a refused publish was not taken"
        );
    }
    city.stop().await;
    drop(nats);
    drop(pg);
}

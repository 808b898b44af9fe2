//! Tests for configuration loading and inventory import.

use std::collections::HashMap;
use std::time::Duration;

use model::{Credential, DeviceClass, Sector, Timestamp};

use crate::config::{Config, interpolate};
use crate::inventory::{self, Format};

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn the_default_config_parses() {
    let config = Config::load(crate::config::DEFAULT_CONFIG, &env(&[])).unwrap();
    assert_eq!(config.data_dir.to_str(), Some("./citysec-data"));
    assert_eq!(config.http.listen, "127.0.0.1:8080");
    assert_eq!(config.ingest.mqtt.listen, "127.0.0.1:1883");
    assert_eq!(config.detect, detect::DetectConfig::default());
    assert_eq!(config.gateway, gateway::GatewayConfig::default());
    assert_eq!(config.incidents, incident::CorrelatorConfig::default());
    assert_eq!(config.playbooks.len(), 3);
    let flood = &config.playbooks[2].actions[0];
    assert_eq!(flood.rate_limit.map(|p| p.burst), Some(20));
    assert_eq!(
        config.integrations,
        crate::integrations::IntegrationsConfig::default()
    );
    assert!(!config.http.metrics_public);
    assert_eq!(
        config.store.telemetry(),
        crate::config::TelemetryStorage::All
    );
}

#[test]
fn telemetry_storage_can_be_turned_off() {
    let config = Config::load(
        "version = 1\ndata_dir = 'x'\n[store]\ntype = 'embedded'\ntelemetry = 'none'",
        &env(&[]),
    )
    .unwrap();
    assert_eq!(
        config.store.telemetry(),
        crate::config::TelemetryStorage::None
    );
    assert!(
        Config::load(
            "version = 1\ndata_dir = 'x'\n[store]\ntype = 'embedded'\ntelemetry = 'some'",
            &env(&[])
        )
        .is_err()
    );
}

#[test]
fn the_environment_fills_in_values() {
    let config = Config::load(
        crate::config::DEFAULT_CONFIG,
        &env(&[("CITYSEC_DATA_DIR", "/srv/city")]),
    )
    .unwrap();
    assert_eq!(config.data_dir.to_str(), Some("/srv/city"));
}

#[test]
fn interpolation_rules() {
    let e = env(&[("A", "1"), ("EMPTY", "")]);
    assert_eq!(interpolate("x${A}y", &e).unwrap(), "x1y");
    assert_eq!(interpolate("${B:-two}", &e).unwrap(), "two");
    assert_eq!(interpolate("${EMPTY:-d}", &e).unwrap(), "d");
    assert_eq!(interpolate("$$A", &e).unwrap(), "$A");
    assert_eq!(interpolate("cost $5", &e).unwrap(), "cost $5");
    assert!(
        interpolate("${B}", &e)
            .unwrap_err()
            .to_string()
            .contains("B is not set")
    );
    assert!(interpolate("${A", &e).is_err());
    assert!(interpolate("${A B}", &e).is_err());
}

#[test]
fn bad_configs_are_refused_with_a_reason() {
    let cases = [
        ("data_dir = 'x'", "version = 1"),
        (
            "version = 2\ndata_dir = 'x'",
            "unsupported config version 2",
        ),
        (
            "version = 1\ndata_dir = 'x'\n[http]\nlisten = 'nowhere'",
            "http.listen",
        ),
        (
            "version = 1\ndata_dir = 'x'\n[http]\nlistn = '127.0.0.1:1'",
            "unknown field",
        ),
        (
            "version = 1\ndata_dir = 'x'\n[http]\ntls_cert = 'a.pem'",
            "set together",
        ),
        (
            "version = 1\ndata_dir = 'x'\n[ingest.mqtt]\ntls_listen = '127.0.0.1:8883'\ntls_cert = 'a.pem'",
            "set together",
        ),
        (
            "version = 1\ndata_dir = 'x'\n[store]\ntype = 'cloud'",
            "unknown variant",
        ),
        (
            "version = 1\ndata_dir = 'x'\n[store]\ntype = 'postgres'",
            "missing field `url`",
        ),
        ("version = 1\ndata_dir = 'x'\nroles = []", "at least one"),
        (
            "version = 1\ndata_dir = 'x'\nroles = ['web']",
            "unknown variant",
        ),
        (
            "version = 1\ndata_dir = 'x'\nroles = ['api']",
            "needs [bus] type = \"nats\"",
        ),
        (
            "version = 1\ndata_dir = 'x'\nroles = ['ingest', 'detect']\n[bus]\ntype = 'nats'",
            "needs [store] type = \"postgres\"",
        ),
        (
            "version = 1\ndata_dir = 'x'\n[store]\ntype = 'postgres'\nurl = ' '",
            "store.url",
        ),
        (
            "version = 1\ndata_dir = 'x'\n[store]\ntype = 'postgres'\nurl = 'postgres://c@db/c'\npassword_file = 'p'\npassword_env = 'P'",
            "exclusive",
        ),
        (
            "version = 1\ndata_dir = 'x'\n[store]\ntype = 'postgres'\nurl = 'postgres://c@db/c'\npool_size = 0",
            "store.pool_size",
        ),
        ("version = 1\ndata_dir = '${NOPE}'", "NOPE is not set"),
        ("version = [", "invalid TOML"),
        (
            "version = 1\ndata_dir = 'x'\n[[playbooks]]\nname = 'p'\nrules = ['auth.*']\nactions = [{ action = 'rotate_credentials', mode = 'auto' }]",
            "rotate_credentials must be mode",
        ),
        (
            "version = 1\ndata_dir = 'x'\n[[playbooks]]\nname = 'p'\nrules = ['a*b']\nactions = [{ action = 'quarantine' }]",
            "may only end in",
        ),
        (
            "version = 1\ndata_dir = 'x'\n[[playbooks]]\nname = 'p'\nrules = ['x']\nactions = [{ action = 'explode' }]",
            "unknown variant",
        ),
        (
            "version = 1\ndata_dir = 'x'\n[[integrations.webhooks]]\nname = 'w'\nurl = 'https://x'\nsecret = 'short'",
            "at least 16",
        ),
    ];
    for (text, want) in cases {
        let err = format!("{:#}", Config::load(text, &env(&[])).unwrap_err());
        assert!(err.contains(want), "{text:?}: {err}");
    }
}

#[test]
fn json_inventory_imports_good_rows_and_reports_bad_ones() {
    let json = br#"{"version": 1, "devices": [
        {"id": "siren-0001", "sector": "public_safety", "class": "siren", "zone": "ps-field",
         "owner": "emergency management", "vendor": "Acme", "model": "S-100", "firmware": "2.1.0",
         "location": {"lat": 52.37, "lon": 4.89}, "secret": "0123456789abcdef0123456789abcdef"},
        {"id": "pump/7", "class": "pump"},
        {"id": "pump-0007", "class": "pump", "sector": "energy"},
        {"id": "meter-1", "class": "smart_meter", "cert_sha256": "AB:CD"},
        {"id": "valve-1", "class": "valve", "secret": "short"},
        {"id": "meter-2", "class": "smart_meter", "surprise": 1}
    ]}"#;
    let (devices, errors) =
        inventory::parse(json, Format::Json, Timestamp::from_millis(0)).unwrap();
    assert_eq!(devices.len(), 1);
    let siren = &devices[0];
    assert_eq!(siren.class, DeviceClass::Siren);
    assert_eq!(siren.sector, Sector::PublicSafety);
    let Credential::Secret { hash } = &siren.credentials[0] else {
        panic!("no secret")
    };
    assert!(hash.starts_with("$sha256$"), "{hash}");
    assert!(ingest::credentials::verify(
        hash,
        "0123456789abcdef0123456789abcdef"
    ));
    let rows: Vec<(usize, &str)> = errors.iter().map(|e| (e.row, e.message.as_str())).collect();
    assert_eq!(rows.len(), 5, "{rows:?}");
    assert!(rows[0].1.contains("'/'"), "{rows:?}");
    assert!(rows[1].1.contains("belongs to sector water"), "{rows:?}");
    assert!(rows[2].1.contains("not a SHA-256"), "{rows:?}");
    assert!(rows[3].1.contains("at least 16"), "{rows:?}");
    assert!(rows[4].1.contains("surprise"), "{rows:?}");
    assert_eq!(
        rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![2, 3, 4, 5, 6]
    );
}

#[test]
fn csv_inventory() {
    let csv = "id,class,zone,owner,vendor,model,firmware,lat,lon,secret,cert_sha256\n\
               pump-0001,pump,water-ot,water dept,Grundfos,CR 10,4.2,52.1,4.3,0123456789abcdef0123456789abcdef,\n\
               cam-0001,camera,,police,Axis,P1375,10.12,,,,AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99\n\
               bad,toaster,,,,,,,,,\n";
    let (devices, errors) =
        inventory::parse(csv.as_bytes(), Format::Csv, Timestamp::from_millis(0)).unwrap();
    assert_eq!(devices.len(), 2, "{errors:?}");
    assert_eq!(devices[0].location.unwrap().lat, 52.1);
    assert_eq!(devices[1].zone, "public_safety-default");
    assert_eq!(
        devices[1].credentials,
        vec![Credential::Certificate {
            sha256: "aabbccddeeff00112233445566778899aabbccddeeff00112233445566778899".into()
        }]
    );
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].row, 3);
    assert!(errors[0].message.contains("toaster"));
}

#[test]
fn garbage_is_not_an_inventory() {
    assert!(inventory::parse(b"\x00\x01", Format::Json, Timestamp::from_millis(0)).is_err());
    assert!(
        inventory::parse(
            b"{\"version\": 9, \"devices\": []}",
            Format::Json,
            Timestamp::from_millis(0)
        )
        .is_err()
    );
}

#[test]
fn the_postgres_password_comes_from_a_file_or_the_environment() {
    let text = "version = 1\ndata_dir = 'x'\n[store]\ntype = 'postgres'\n\
                url = 'postgres://citysec@db.city:5432/citysec'\npassword_env = 'PGPASS'";
    let config = Config::load(text, &env(&[])).unwrap();
    let err = format!("{:#}", config.store.postgres(&env(&[])).unwrap_err());
    assert!(err.contains("$PGPASS is not set"), "{err}");
    let pg = config
        .store
        .postgres(&env(&[("PGPASS", "s3cret")]))
        .unwrap()
        .unwrap();
    assert_eq!(pg.password.as_deref(), Some("s3cret"));
    assert_eq!(pg.url, "postgres://citysec@db.city:5432/citysec");
    assert_eq!(pg.pool_size, 8);
    // Debug output never shows it.
    assert!(!format!("{pg:?}").contains("s3cret"));

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pw");
    std::fs::write(&file, "from-file\nignored\n").unwrap();
    let text = format!(
        "version = 1\ndata_dir = 'x'\n[store]\ntype = 'postgres'\nurl = 'postgres://c@db/c'\n\
         password_file = '{}'",
        file.display()
    );
    let config = Config::load(&text, &env(&[])).unwrap();
    let pg = config.store.postgres(&env(&[])).unwrap().unwrap();
    assert_eq!(pg.password.as_deref(), Some("from-file"));
    std::fs::write(&file, "").unwrap();
    let err = format!("{:#}", config.store.postgres(&env(&[])).unwrap_err());
    assert!(err.contains("is empty"), "{err}");
    // The embedded store has no connection settings.
    let config = Config::load(app_default(), &env(&[("CITYSEC_DATA_DIR", "/d")])).unwrap();
    assert!(config.store.postgres(&env(&[])).unwrap().is_none());
}

fn app_default() -> &'static str {
    crate::config::DEFAULT_CONFIG
}

/// At-least-once end to end: a store writer takes a batch from NATS, writes it to
/// PostgreSQL and dies before acknowledging it; the batch is delivered again to the
/// surviving writer, which writes it again; every event is stored exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_redelivered_after_a_crash_is_stored_once() {
    use bus::testsuite::server::TestNats;
    use store::testsuite::server::TestPostgres;
    let (Some(nats), Some(pg)) = (TestNats::shared(), TestPostgres::shared()) else {
        return;
    };
    let bus = bus::NatsBus::connect(bus::NatsConfig {
        ack_wait_ms: 1_000,
        ..nats.config(4)
    })
    .await
    .unwrap();
    let (_db, store) = pg.fresh_store().await;
    let store: std::sync::Arc<dyn store::Store> = std::sync::Arc::new(store);
    use bus::Bus;
    let mut crashing = bus.subscribe("obs.*", "store").await.unwrap();
    let events: Vec<model::Event> = (0..200)
        .map(|i| store::testsuite::telemetry(1_000 + i, &format!("pump-{}", i % 7), i as f64))
        .collect();
    bus.publish(events.iter().cloned().map(bus::Message::Event).collect())
        .await
        .unwrap();
    // Like the store writer: each batch is stored, then the next one asked for (which
    // acknowledges the one before).
    let mut taken = 0;
    let mut last = 0;
    while taken < events.len() {
        let batch = tokio::time::timeout(Duration::from_secs(20), crashing.next_batch(500))
            .await
            .unwrap()
            .unwrap();
        let batch: Vec<model::Event> = batch
            .iter()
            .filter_map(|m| match m.as_ref() {
                bus::Message::Event(e) => Some(e.clone()),
                bus::Message::Alert(_) => None,
            })
            .collect();
        store.append_events(&batch).await.unwrap();
        taken += batch.len();
        last = batch.len();
    }
    drop(crashing); // dies: its last batch stored, never acknowledged

    let survivor = bus.subscribe("obs.*", "store").await.unwrap();
    let counters = std::sync::Arc::new(crate::platform::Counters::default());
    let writer = tokio::spawn(crate::platform::store_writer(
        survivor,
        store.clone(),
        crate::config::TelemetryStorage::All,
        counters.clone(),
    ));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while counters
        .events_stored
        .load(std::sync::atomic::Ordering::Relaxed)
        < last as u64
    {
        assert!(std::time::Instant::now() < deadline, "no redelivery");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bus.close().await;
    writer.await.unwrap();
    // The survivor wrote the unacknowledged batch again; the store holds each event once.
    assert!(last > 0);
    assert_eq!(
        counters
            .events_stored
            .load(std::sync::atomic::Ordering::Relaxed),
        last as u64
    );
    let stored = store
        .list_events(&store::EventQuery {
            limit: 1_000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(stored.len(), 200);
    assert_eq!(store.stats().await.unwrap().events, 200);
}

#[test]
fn the_nats_bus_is_configured_and_checked() {
    let text = "version = 1\ndata_dir = 'x'\n[bus]\ntype = 'nats'\nurl = 'nats://nats.city:4222'\npartitions = 32";
    let config = Config::load(text, &env(&[])).unwrap();
    let crate::config::BusConfig::Nats(nats) = &config.bus else {
        panic!("not nats: {:?}", config.bus)
    };
    assert_eq!(nats.partitions, 32);
    assert_eq!(nats.stream, "CITYSEC");
    for (text, want) in [
        ("[bus]\ntype = 'nats'\npartitions = 0", "bus.partitions"),
        ("[bus]\ntype = 'nats'\nstream = 'a.b'", "bus.stream"),
        ("[bus]\ntype = 'nats'\nack_wait_ms = 1", "bus.ack_wait_ms"),
        ("[bus]\ntype = 'nats'\nlease_ms = 10", "bus.lease_ms"),
        ("[bus]\ntype = 'nats'\nsurprise = 1", "unknown field"),
    ] {
        let text = format!("version = 1\ndata_dir = 'x'\n{text}");
        let err = format!("{:#}", Config::load(&text, &env(&[])).unwrap_err());
        assert!(err.contains(want), "{text:?}: {err}");
    }
}

/// A failed authentication of `device` from one address, at `ts`.
fn auth_failure(device: &str, ts: i64) -> model::Event {
    model::Event {
        ts: Timestamp::from_millis(ts),
        device_id: Some(model::DeviceId::new(device).unwrap()),
        sector: Some(Sector::Water),
        kind: model::EventKind::Security(model::SecurityEvent {
            action: model::SecurityEventKind::AuthFailure,
            client_id: Some(device.to_owned()),
            username: Some(device.to_owned()),
            peer: Some(format!("203.0.113.{}:4000", ts % 200)),
            topic: None,
            reason: Some("bad password".to_owned()),
        }),
    }
}

/// One detect-role process of the partition test: its own NATS connection, its
/// detection worker and its store writer.
struct DetectProcess {
    counters: std::sync::Arc<crate::platform::Counters>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

async fn detect_process(
    nats: bus::NatsConfig,
    store: std::sync::Arc<dyn store::Store>,
    member: &str,
) -> DetectProcess {
    detect_process_with(nats, store, member, &[], true, |_| {}).await
}

/// [`detect_process`] with registered devices and a config of its own.
async fn detect_process_with(
    nats: bus::NatsConfig,
    store: std::sync::Arc<dyn store::Store>,
    member: &str,
    devices: &[model::Device],
    writer: bool,
    tweak: impl FnOnce(&mut Config),
) -> DetectProcess {
    use bus::Bus;
    let bus: std::sync::Arc<dyn Bus> =
        std::sync::Arc::new(bus::NatsBus::connect(nats).await.unwrap());
    let mut config = Config::load(app_default(), &env(&[])).unwrap();
    config.detect.rebuild_window_s = Some(600);
    tweak(&mut config);
    let directory = std::sync::Arc::new(crate::directory::Directory::new());
    for device in devices {
        directory.put(device.clone());
    }
    let counters = std::sync::Arc::new(crate::platform::Counters::default());
    let ownership = bus
        .join(
            crate::partitions::DETECT_GROUP,
            member,
            crate::partitions::shards(bus.partitions()),
        )
        .await
        .unwrap();
    let worker = crate::partitions::Worker {
        config: config.clone(),
        bus: bus.clone(),
        store: store.clone(),
        directory,
        counters: counters.clone(),
        status: Default::default(),
        diagnostics: Vec::new(),
    };
    let (_control_tx, control_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = vec![tokio::spawn(async move {
        let _keep = _control_tx;
        worker.run(ownership, control_rx).await
    })];
    if writer {
        let writer = bus.subscribe("obs.*", "store").await.unwrap();
        tasks.push(tokio::spawn(crate::platform::store_writer(
            writer,
            store,
            crate::config::TelemetryStorage::All,
            counters.clone(),
        )));
    }
    DetectProcess { counters, tasks }
}

/// The peers of the partition tests: a NATS configuration of 4 partitions with a 1 s
/// lease, and a fresh PostgreSQL store; `None` when the peers are missing (and not required).
async fn partition_peers() -> Option<(bus::NatsConfig, std::sync::Arc<dyn store::Store>)> {
    use bus::testsuite::server::TestNats;
    use store::testsuite::server::TestPostgres;
    let (nats, pg) = (TestNats::shared()?, TestPostgres::shared()?);
    let config = bus::NatsConfig {
        lease_ms: 1_000,
        ..nats.config(4)
    };
    let (_db, store) = pg.fresh_store().await;
    Some((config, std::sync::Arc::new(store)))
}

fn processed(p: &DetectProcess) -> u64 {
    p.counters
        .detect_events
        .load(std::sync::atomic::Ordering::Relaxed)
}

async fn eventually(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !done().await {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Issue 9: two detect-role processes on one NATS and one PostgreSQL own the partitions
/// between them, so each device's events are processed by one worker; when one dies
/// abruptly (its tasks aborted: no lease released, nothing acknowledged) the other takes
/// its partitions over, rebuilds the devices' state from the store, and raises the brute
/// force whose evidence began before the move, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_moves_to_the_surviving_detection_worker_with_its_state() {
    use bus::Bus;
    let Some((nats_config, store)) = partition_peers().await else {
        return;
    };
    let a = detect_process(nats_config.clone(), store.clone(), "worker-a").await;
    let b = detect_process(nats_config.clone(), store.clone(), "worker-b").await;
    let ingest = bus::NatsBus::connect(nats_config.clone()).await.unwrap();
    // Let them balance (each owns about half), then check every event is processed once.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let now = Timestamp::now().as_millis();
    let devices: Vec<String> = (0..16).map(|i| format!("meter-{i}")).collect();
    let spread: Vec<bus::Message> = devices
        .iter()
        .enumerate()
        .map(|(i, d)| bus::Message::Event(store::testsuite::telemetry(now + i as i64, d, 1.0)))
        .collect();
    ingest.publish(spread.clone()).await.unwrap();
    eventually("both workers process the spread", async || {
        processed(&a) + processed(&b) >= spread.len() as u64
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        processed(&a) + processed(&b),
        spread.len() as u64,
        "each event once"
    );
    assert!(
        processed(&a) > 0 && processed(&b) > 0,
        "both own partitions"
    );

    // Which worker owns pump-7's partition: the one that processes its first failure.
    let target = "pump-7";
    let (a0, b0) = (processed(&a), processed(&b));
    let start = now + 1_000;
    ingest
        .publish(vec![bus::Message::Event(auth_failure(target, start))])
        .await
        .unwrap();
    eventually("the owner processes it", async || {
        processed(&a) + processed(&b) > a0 + b0
    })
    .await;
    let (owner, survivor) = if processed(&a) > a0 { (a, b) } else { (b, a) };
    // Six more, below the threshold of ten; the owner processes them and the store holds them.
    let before = processed(&owner);
    ingest
        .publish(
            (1..7)
                .map(|i| bus::Message::Event(auth_failure(target, start + i * 100)))
                .collect(),
        )
        .await
        .unwrap();
    eventually("stored and processed", async || {
        store.stats().await.unwrap().events >= spread.len() as u64 + 7
            && processed(&owner) >= before + 6
    })
    .await;
    assert!(
        store
            .list_alerts(&store::AlertQuery::default())
            .await
            .unwrap()
            .is_empty(),
        "below the threshold"
    );
    // The owner dies without a word.
    let killed = std::time::Instant::now();
    for task in &owner.tasks {
        task.abort();
    }
    // Three more failures: only with the seven before the move do they make a brute force.
    ingest
        .publish(
            (7..10)
                .map(|i| bus::Message::Event(auth_failure(target, start + i * 100)))
                .collect(),
        )
        .await
        .unwrap();
    eventually("the survivor raises the brute force", async || {
        !store
            .list_alerts(&store::AlertQuery {
                rule: Some("auth.brute_force.device".to_owned()),
                ..Default::default()
            })
            .await
            .unwrap()
            .is_empty()
    })
    .await;
    eprintln!(
        "brute force raised by the new owner {:?} after the kill",
        killed.elapsed()
    );
    // Redeliveries and the replay settle; the alert is there once, from the evidence before
    // and after the move.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let alerts = store
        .list_alerts(&store::AlertQuery::default())
        .await
        .unwrap();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let alert = &alerts[0];
    assert_eq!(alert.rule, "auth.brute_force.device");
    assert_eq!(alert.device_id.as_ref().map(|d| d.as_str()), Some(target));
    assert_eq!(alert.count, 1, "raised once, not again by a replay");
    assert!(alert.explanation.contains("10"), "{}", alert.explanation);
    // The survivor stored the events it got; each event is in the store once.
    assert_eq!(
        store.stats().await.unwrap().events,
        spread.len() as u64 + 10
    );
    ingest.close().await;
    for task in &survivor.tasks {
        task.abort();
    }
}

/// A flow of `bytes` from the camera at 10.1.0.11 to `dst`, ending at `ts`, as ingest
/// publishes it (its device is the one owning the source).
fn camera_flow(ts: i64, dst: &str, bytes: u64) -> model::Event {
    let end = Timestamp::from_millis(ts);
    model::Event {
        ts: end,
        device_id: Some(model::DeviceId::new("camera-0001").unwrap()),
        sector: Some(Sector::PublicSafety),
        kind: model::EventKind::Flow(model::FlowRecord {
            src: "10.1.0.11".parse().unwrap(),
            dst: dst.parse().unwrap(),
            src_port: 40_000,
            dst_port: 443,
            protocol: model::proto::TCP,
            bytes,
            packets: bytes / 1_000,
            tcp_flags: 0,
            start: end.saturating_sub_ms(1_000),
            end,
            exporter: None,
            peer_device: None,
        }),
    }
}

/// Issue 9: what a detection worker learned moves with its partition. The camera learns
/// its destination for ten minutes, twenty minutes ago (older than the rebuild window, so
/// the replay cannot bring it back); its owner dies; the new owner loads the learned state
/// the dead owner saved, so it knows the camera is past learning and that 203.0.113.9 is a
/// known destination, and the first upload to somewhere new is an alert. A worker starting
/// from nothing would take the camera for a new device still learning and stay quiet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitions_learned_state_moves_with_it() {
    use bus::Bus;
    let Some((nats_config, store)) = partition_peers().await else {
        return;
    };
    let mut camera =
        store::testsuite::device("camera-0001", model::DeviceClass::Camera, "ps-field");
    camera.addresses = vec!["10.1.0.11".parse().unwrap()];
    let devices = vec![camera];
    let tweak = |config: &mut Config| {
        config.detect.learned_save_s = 1;
        config.detect.baseline.learning_s = 600;
        config.detect.rebuild_window_s = Some(300);
    };
    let a = detect_process_with(
        nats_config.clone(),
        store.clone(),
        "worker-a",
        &devices,
        true,
        tweak,
    )
    .await;
    let b = detect_process_with(
        nats_config.clone(),
        store.clone(),
        "worker-b",
        &devices,
        true,
        tweak,
    )
    .await;
    let ingest = bus::NatsBus::connect(nats_config.clone()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;

    let now = Timestamp::now().as_millis();
    let learning: Vec<bus::Message> = (0..20)
        .map(|i| {
            bus::Message::Event(camera_flow(
                now - 20 * 60_000 + i * 30_000,
                "203.0.113.9",
                200_000,
            ))
        })
        .collect();
    ingest.publish(learning.clone()).await.unwrap();
    eventually("the owner processes the learning period", async || {
        processed(&a) + processed(&b) >= learning.len() as u64
    })
    .await;
    let (owner, survivor) = if processed(&a) > 0 { (a, b) } else { (b, a) };
    // The owner saves within a second or two; its save names the camera.
    let partitions = nats_config.partitions;
    let shard = bus::partition_of("camera-0001", partitions).to_string();
    let key = crate::detect::learned_key(Some(partitions), &shard);
    eventually("the owner saves what it learned", async || {
        store
            .get_learned(&key)
            .await
            .unwrap()
            .is_some_and(|s| s.body.contains("camera-0001") && s.body.contains("first_seen"))
    })
    .await;
    for task in &owner.tasks {
        task.abort();
    }
    // Uploads to a new destination, now: past the camera's learning period.
    ingest
        .publish(
            (0..3)
                .map(|i| {
                    bus::Message::Event(camera_flow(now + i * 1_000, "198.51.100.200", 400_000))
                })
                .collect(),
        )
        .await
        .unwrap();
    eventually("the new owner raises the new destination", async || {
        !store
            .list_alerts(&store::AlertQuery {
                rule: Some("baseline.flow".to_owned()),
                ..Default::default()
            })
            .await
            .unwrap()
            .is_empty()
    })
    .await;
    let alerts = store
        .list_alerts(&store::AlertQuery {
            rule: Some("baseline.flow".to_owned()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].key, "camera-0001->198.51.100.200");
    assert!(
        processed(&survivor) >= 3,
        "the survivor processed the uploads"
    );
    ingest.close().await;
    for task in &survivor.tasks {
        task.abort();
    }
}

/// Issue 9: events the dead owner had processed (and acknowledged) but the store's group
/// had not written yet are not lost to the new owner's rebuild: the bus still holds them
/// for the store's group, and the rebuild replays them. Here the store writer lags for the
/// whole run (its consumer exists and reads nothing), so the store holds none of the
/// failures; the brute force after the move still counts all ten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_owner_replays_what_the_store_had_not_written_yet() {
    use bus::Bus;
    let Some((nats_config, store)) = partition_peers().await else {
        return;
    };
    let ingest = bus::NatsBus::connect(nats_config.clone()).await.unwrap();
    let _lagging_writer = ingest.subscribe("obs.*", "store").await.unwrap();
    let a = detect_process_with(
        nats_config.clone(),
        store.clone(),
        "worker-a",
        &[],
        false,
        |_| {},
    )
    .await;
    let b = detect_process_with(
        nats_config.clone(),
        store.clone(),
        "worker-b",
        &[],
        false,
        |_| {},
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let target = "pump-7";
    let start = Timestamp::now().as_millis();
    ingest
        .publish(
            (0..7)
                .map(|i| bus::Message::Event(auth_failure(target, start + i * 100)))
                .collect(),
        )
        .await
        .unwrap();
    eventually("the owner processes seven failures", async || {
        processed(&a) + processed(&b) >= 7
    })
    .await;
    let (owner, survivor) = if processed(&a) > 0 { (a, b) } else { (b, a) };
    // Processed and acknowledged by the owner's detection consumer, not written anywhere.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(store.stats().await.unwrap().events, 0);
    for task in &owner.tasks {
        task.abort();
    }
    ingest
        .publish(
            (7..10)
                .map(|i| bus::Message::Event(auth_failure(target, start + i * 100)))
                .collect(),
        )
        .await
        .unwrap();
    eventually("the survivor raises the brute force", async || {
        !store
            .list_alerts(&store::AlertQuery::default())
            .await
            .unwrap()
            .is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let alerts = store
        .list_alerts(&store::AlertQuery::default())
        .await
        .unwrap();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].rule, "auth.brute_force.device");
    assert_eq!(alerts[0].count, 1);
    assert!(
        alerts[0].explanation.contains("10"),
        "{}",
        alerts[0].explanation
    );
    ingest.close().await;
    for task in &survivor.tasks {
        task.abort();
    }
}

/// Issue 9: an alert the dead owner stored in its last moments but had not published (it
/// died between the two) is published by the new owner, so correlation and the gateway
/// see it; the store keeps it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_stored_but_not_published_by_the_dead_owner_is_published_by_the_next() {
    use bus::Bus;
    let Some((nats_config, store)) = partition_peers().await else {
        return;
    };
    // What the dead owner left: ten failures in the store, and the brute force they raised,
    // stored and never published.
    let start = Timestamp::now().as_millis() - 2_000;
    let failures: Vec<model::Event> = (0..10)
        .map(|i| auth_failure("pump-7", start + i * 100))
        .collect();
    store.append_events(&failures).await.unwrap();
    let config = Config::load(app_default(), &env(&[])).unwrap();
    let (mut engine, _) = crate::detect::build_engine(&config);
    engine.set_scope(detect::Scope::Local);
    let mut raised = Vec::new();
    for event in &failures {
        engine.process(event, &mut raised);
    }
    assert_eq!(raised.len(), 1, "{raised:?}");
    store.upsert_alerts(&raised).await.unwrap();
    // Correlation's view of the bus.
    let listener = bus::NatsBus::connect(nats_config.clone()).await.unwrap();
    let mut alerts = listener.subscribe("alerts", "incidents").await.unwrap();
    let next = detect_process(nats_config.clone(), store.clone(), "worker-next").await;
    let got = tokio::time::timeout(Duration::from_secs(20), alerts.next_batch(10))
        .await
        .expect("the alert is published")
        .expect("open");
    let ids: Vec<String> = got
        .iter()
        .filter_map(|m| match m.as_ref() {
            bus::Message::Alert(a) => Some(a.id.0.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(ids, vec![raised[0].id.0.clone()]);
    let stored = store
        .list_alerts(&store::AlertQuery::default())
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].count, 1);
    listener.close().await;
    for task in &next.tasks {
        task.abort();
    }
}

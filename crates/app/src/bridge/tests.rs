//! The platform in bridge mode against a real Mosquitto (started here on a free loopback
//! port with a password file, an ACL and `log_dest topic`), on the in-process bus and the
//! embedded store: failed logins at Mosquitto become auth failures and a brute-force alert,
//! device telemetry is stored, a gateway command reaches the siren's `cmd` topic, and the
//! broker-side response actions say they cannot hold.
//!
//! Skips with a message when mosquitto is missing, unless `CITYSEC_REQUIRE_PEERS=1`.

use std::collections::HashMap;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Stdio;
use std::time::{Duration, Instant};

use ingest::bridge::SecuritySignals;
use model::{Credential, Device, DeviceClass, DeviceId, DeviceStatus, Timestamp};

const BRIDGE: (&str, &str) = ("citysec", "bridge-secret-1");
const SECRET: &str = "device-secret-1";

fn have_mosquitto() -> bool {
    let found = [
        "mosquitto",
        "mosquitto_pub",
        "mosquitto_sub",
        "mosquitto_passwd",
    ]
    .iter()
    .all(|p| std::process::Command::new(p).arg("--help").output().is_ok());
    if !found {
        assert!(
            std::env::var("CITYSEC_REQUIRE_PEERS").as_deref() != Ok("1"),
            "mosquitto is required (CITYSEC_REQUIRE_PEERS=1) but not installed"
        );
        eprintln!(
            "skipping: mosquitto not installed (apt-get install mosquitto mosquitto-clients)"
        );
    }
    found
}

struct Mosquitto(std::process::Child, SocketAddr);

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn chmod(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mosquitto(dir: &std::path::Path) -> Mosquitto {
    chmod(dir, 0o755);
    let passwd = dir.join("passwd");
    let mut f = std::fs::File::create(&passwd).unwrap();
    writeln!(f, "{}:{}", BRIDGE.0, BRIDGE.1).unwrap();
    writeln!(f, "pump-7:{SECRET}\nsiren-1:{SECRET}").unwrap();
    drop(f);
    assert!(
        std::process::Command::new("mosquitto_passwd")
            .arg("-U")
            .arg(&passwd)
            .status()
            .unwrap()
            .success()
    );
    let acl = dir.join("acl");
    std::fs::write(
        &acl,
        format!(
            "user {}\ntopic read city/#\ntopic write city/+/+/cmd\ntopic read $SYS/#\n\n\
             pattern write city/+/%u/telemetry\npattern write city/+/%u/state\n\
             pattern write city/+/%u/ack\npattern read city/+/%u/cmd\n",
            BRIDGE.0
        ),
    )
    .unwrap();
    chmod(&passwd, 0o644);
    chmod(&acl, 0o644);
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\nacl_file {}\n\
             persistence false\nlog_dest stderr\nlog_dest topic\nlog_type error\n\
             log_type warning\nlog_type notice\nlog_type information\nconnection_messages true\n",
            passwd.display(),
            acl.display()
        ),
    )
    .unwrap();
    let child = std::process::Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("mosquitto.log")).unwrap())
        .spawn()
        .unwrap();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "mosquitto did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    Mosquitto(child, addr)
}

fn device(id: &str, class: DeviceClass) -> Device {
    Device {
        id: DeviceId::new(id).unwrap(),
        sector: class.sector(),
        class,
        zone: "z".into(),
        owner: "o".into(),
        vendor: "v".into(),
        model: "m".into(),
        firmware: "1".into(),
        location: None,
        addresses: Vec::new(),
        // The city's broker checks passwords in bridge mode; the registry's hash is unused.
        credentials: vec![Credential::Secret {
            hash: ingest::credentials::hash_secret(SECRET),
        }],
        status: DeviceStatus::Active,
        created_at: Timestamp::from_millis(0),
    }
}

async fn mosquitto_pub(port: u16, user: &str, password: &str, topic: &str, msg: &str) -> bool {
    let out = tokio::process::Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
        .args([
            "-i", user, "-u", user, "-P", password, "-t", topic, "-m", msg,
        ])
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(10), out)
        .await
        .unwrap()
        .unwrap()
        .status
        .success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_platform_in_bridge_mode_sees_mosquitto_logins_and_commands_through_it() {
    if !have_mosquitto() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let broker = mosquitto(dir.path());
    let port = broker.1.port();
    let password_file = dir.path().join("bridge.pass");
    std::fs::write(&password_file, format!("{}\n", BRIDGE.1)).unwrap();
    let env: HashMap<String, String> = [(
        "CITYSEC_DATA_DIR".to_owned(),
        dir.path().join("data").display().to_string(),
    )]
    .into();
    let text = format!(
        "{}\n[ingest.bridge]\nbrokers = [\"mqtt://127.0.0.1:{port}\"]\nclient_id = \"citysec-it\"\n\
         username = \"{}\"\npassword_file = \"{}\"\ngroup = \"citysec\"\n\
         security_signals = \"mosquitto_log\"\n",
        crate::config::DEFAULT_CONFIG,
        BRIDGE.0,
        password_file.display()
    );
    let mut config = crate::Config::load(&text, &env).unwrap();
    config.http.listen = "127.0.0.1:0".into();
    config.ingest.flow.listen = "127.0.0.1:0".into();
    assert_eq!(
        config.ingest.bridge.as_ref().map(|b| b.security_signals),
        Some(SecuritySignals::MosquittoLog)
    );
    let platform = crate::Platform::start(config).await.unwrap();
    assert!(
        platform.try_mqtt_addr().is_none(),
        "no embedded broker in bridge mode"
    );
    platform
        .register_devices(vec![
            device("pump-7", DeviceClass::Pump),
            device("siren-1", DeviceClass::Siren),
        ])
        .await
        .unwrap();
    let bridge = platform.bridge().expect("bridge running");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !bridge.connected() {
        assert!(Instant::now() < deadline, "bridge did not connect");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Telemetry through Mosquitto is stored as the device's event.
    let ts = Timestamp::now().to_rfc3339();
    assert!(
        mosquitto_pub(
            port,
            "pump-7",
            SECRET,
            "city/water/pump-7/telemetry",
            &format!("{{\"ts\":\"{ts}\",\"flow_lps\":3.5}}")
        )
        .await
    );
    // Twelve guesses from one address, at several device ids: brute force from the source.
    for i in 0..12 {
        let user = ["pump-7", "siren-1", "pump-8"][i % 3];
        assert!(!mosquitto_pub(port, user, "guess", "city/water/pump-7/telemetry", "{}").await);
    }
    let store = platform.store();
    let deadline = Instant::now() + Duration::from_secs(20);
    let alert = loop {
        let alerts = store
            .list_alerts(&store::AlertQuery {
                rule: Some("auth.brute_force.source".into()),
                limit: 10,
                ..store::AlertQuery::default()
            })
            .await
            .unwrap();
        if let Some(a) = alerts.into_iter().next() {
            break a;
        }
        assert!(Instant::now() < deadline, "no brute-force alert");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(alert.source.as_deref(), Some("127.0.0.1"));
    let events = store
        .list_events(&store::EventQuery {
            device_id: Some(DeviceId::new("pump-7").unwrap()),
            limit: 100,
            ..store::EventQuery::default()
        })
        .await
        .unwrap();
    assert!(
        events
            .iter()
            .any(|e| matches!(&e.kind, model::EventKind::Telemetry { .. })),
        "telemetry stored: {events:?}"
    );

    // The gateway's all-clear reaches the siren's cmd topic through Mosquitto.
    let sub = tokio::process::Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-q",
            "1",
            "-C",
            "1",
            "-W",
            "10",
        ])
        .args(["-i", "siren-1", "-u", "siren-1", "-P", SECRET, "-c"])
        .args(["-t", "city/public_safety/siren-1/cmd"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // A persistent session (-c) subscribed before the command is sent: wait for Mosquitto
    // to log the subscriber in.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let gateway = platform.gateway();
    let command = crate::gateway::all_clear(
        &gateway,
        &DeviceId::new("siren-1").unwrap(),
        "it",
        "bridge test",
    )
    .await
    .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(15), sub.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let received = String::from_utf8_lossy(&out.stdout);
    assert!(
        received.contains("siren-1"),
        "command {} state {}: siren got {received:?}",
        command.id,
        command.state
    );

    // Broker-side response actions say why they cannot hold here.
    let incidents = store
        .list_incidents(&store::IncidentQuery {
            limit: 10,
            ..store::IncidentQuery::default()
        })
        .await
        .unwrap();
    let incident = incidents
        .first()
        .expect("the brute force opened an incident");
    let supervisor = web::Principal {
        name: "sam".into(),
        role: web::Role::Supervisor,
    };
    let mut outcomes = Vec::new();
    for kind in [model::ActionKind::RateLimit, model::ActionKind::Quarantine] {
        let request = web::IncidentRequest::Action {
            kind,
            device_id: Some(DeviceId::new("pump-7").unwrap()),
            execute_now: true,
            rate_limit: None,
        };
        let update = platform
            .incidents()
            .update(&incident.id, request, &supervisor)
            .await
            .unwrap();
        let action = update.incident.actions.last().unwrap();
        outcomes.push(format!(
            "{} {:?}: {}",
            action.kind.as_str(),
            action.status,
            action.outcome.as_deref().unwrap_or("")
        ));
    }
    expect_test::expect![[r#"
        rate_limit Failed: cannot rate-limit pump-7: bridge mode: citysec consumes the city's broker and does not hold device connections, so this is not enforced at the broker; do it in the broker's own configuration (its password file, ACL or management API) (Mosquitto has no per-client publish rate limit; EMQX has per-client message rate limits)
        quarantine Done: quarantined in citysec's registry and detection, quarantine event sent; the device can still connect (bridge mode: citysec consumes the city's broker and does not hold device connections, so this is not enforced at the broker; do it in the broker's own configuration (its password file, ACL or management API))"#]].assert_eq(&outcomes.join("\n"));

    platform.shutdown().await.unwrap();
    drop(broker);
}

/// Which brokers each of two ingest processes reads the log of, as `share_log_reading`
/// sets them.
type Reading = std::sync::Arc<parking_lot::Mutex<[[bool; 2]; 2]>>;

fn reading_of(reading: &Reading, member: usize) -> impl Fn(usize, bool) + Send + 'static {
    let reading = reading.clone();
    move |broker, on| reading.lock()[member][broker] = on
}

/// Waits until `want` holds of the reading (at most 20 s).
async fn wait_reading(reading: &Reading, want: impl Fn(&[[bool; 2]; 2]) -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !want(&reading.lock()) {
        assert!(Instant::now() < deadline, "{what}: {:?}", reading.lock());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Two ingest processes on NATS: each broker's log is read by exactly one of them, and
/// when that one stops (leaving) or dies (its task aborted, its lease left to expire), the
/// other reads every log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_broker_log_has_one_reader_and_a_dead_readers_logs_move() {
    use bus::testsuite::server::TestNats;
    let Some(nats) = TestNats::shared() else {
        return;
    };
    let config = nats.config(4);
    let brokers = vec![
        "mqtt://10.0.0.1:1883".to_owned(),
        "mqtt://10.0.0.2:1883".to_owned(),
    ];
    let one_reader_each = |r: &[[bool; 2]; 2]| (0..2).all(|b| r[0][b] != r[1][b]);
    for crash in [false, true] {
        let reading: Reading = Default::default();
        let mut tasks = Vec::new();
        let mut stops = Vec::new();
        for member in 0..2 {
            let bus: std::sync::Arc<dyn bus::Bus> =
                std::sync::Arc::new(bus::NatsBus::connect(config.clone()).await.unwrap());
            let (stop, shutdown) = tokio::sync::watch::channel(false);
            stops.push(stop);
            tasks.push(tokio::spawn(crate::bridge::share_log_reading(
                bus,
                format!("ingest-{member}-{crash}"),
                reading_of(&reading, member),
                brokers.clone(),
                shutdown,
            )));
        }
        wait_reading(&reading, one_reader_each, "one reader per broker").await;
        // Never two readers of one log (a lease has one holder; under load a renewal may
        // fail and leave a log unread until it is taken again, never read twice).
        for _ in 0..30 {
            let r = *reading.lock();
            assert!((0..2).all(|b| !(r[0][b] && r[1][b])), "{r:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if crash {
            tasks.remove(0).abort();
        } else {
            stops[0].send(true).unwrap();
            tasks.remove(0).await.unwrap();
            assert_eq!(
                reading.lock()[0],
                [false, false],
                "a stopped process reads nothing"
            );
        }
        wait_reading(
            &reading,
            |r| r[1] == [true, true],
            "the survivor reads every log",
        )
        .await;
        stops[1].send(true).unwrap();
        tasks.remove(0).await.unwrap();
    }
}

/// The bridge's sink on NATS returns only once the bus took the events (the bridge then
/// acknowledges the broker): while NATS is down it waits, with nothing lost, and it answers
/// `SinkClosed` only when the bus is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bridge_sink_waits_for_nats_and_gives_up_only_when_closed() {
    use bus::Bus as _;
    use bus::testsuite::server::TestNats;
    use ingest::mqtt::EventSink as _;
    let Some(binary) = bus::testsuite::server::binary() else {
        assert!(
            std::env::var("CITYSEC_REQUIRE_PEERS").as_deref() != Ok("1"),
            "nats-server is required"
        );
        return;
    };
    let mut nats = TestNats::try_start(&binary, None).unwrap();
    let bus = std::sync::Arc::new(
        bus::NatsBus::connect(bus::NatsConfig {
            publish_timeout_ms: 500,
            ..nats.config(4)
        })
        .await
        .unwrap(),
    );
    let mut sub = bus.subscribe("obs.*", "store").await.unwrap();
    let counters = std::sync::Arc::new(crate::platform::Counters::default());
    let sink = std::sync::Arc::new(crate::outage::BridgeSink {
        bus: bus.clone(),
        counters: counters.clone(),
    });
    let event = |seq: u64| match bus::testsuite::telemetry("pump-1", seq) {
        bus::Message::Event(e) => e,
        bus::Message::Alert(_) => unreachable!(),
    };
    sink.send(vec![event(1)]).await.unwrap();
    nats = tokio::task::spawn_blocking(move || {
        nats.halt(false);
        nats
    })
    .await
    .unwrap();
    let sending = {
        let sink = sink.clone();
        tokio::spawn(async move { sink.send(vec![event(2)]).await })
    };
    // Well past the bus's publish timeout: still waiting, not failed.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !sending.is_finished(),
        "the sink gave up while NATS was down"
    );
    nats = tokio::task::spawn_blocking(move || {
        nats.restart();
        nats
    })
    .await
    .unwrap();
    tokio::time::timeout(Duration::from_secs(30), sending)
        .await
        .expect("the sink returned once NATS was back")
        .unwrap()
        .expect("taken");
    assert_eq!(
        counters
            .events_published
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 2 {
        let batch = tokio::time::timeout(Duration::from_secs(20), sub.next_batch(10))
            .await
            .expect("delivered")
            .expect("open");
        for m in batch {
            if let bus::Message::Event(e) = m.as_ref() {
                seen.insert(e.ts.as_millis());
            }
        }
    }
    assert_eq!(seen, [1, 2].into_iter().collect());
    bus.close().await;
    assert!(sink.send(vec![event(3)]).await.is_err(), "closed is final");
    drop(nats);
}

//! Bridge mode against a real Mosquitto started here on a free loopback port (temporary
//! directory, password file, ACL, `log_dest topic`): shared subscriptions split QoS 1
//! messages exactly once, an abruptly stopped consumer loses nothing, failed logins become
//! auth-failure events, and commands reach a device's `cmd` topic.
//!
//! Skips with a message when `mosquitto` is missing, unless `CITYSEC_REQUIRE_PEERS=1`.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ingest::bridge::{Bridge, BridgeConfig, BridgeHandle, SecuritySignals};
use ingest::mqtt::{EventSink, SinkClosed};
use model::{Event, EventKind, SecurityEventKind, Timestamp, Value};
use parking_lot::Mutex;

use super::{SECRET, directory, run, text};

/// The bridge's own account at the broker.
pub const BRIDGE_USER: (&str, &str) = ("citysec", "bridge-secret-1");

fn have_mosquitto_broker() -> bool {
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
            "mosquitto not installed and CITYSEC_REQUIRE_PEERS=1"
        );
        eprintln!(
            "skipping: mosquitto not installed (apt-get install mosquitto mosquitto-clients)"
        );
    }
    found
}

/// A Mosquitto process, killed when dropped.
pub struct Mosquitto {
    child: std::process::Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The broker lines bridge mode needs (also documented in `docs/bridge.md`).
pub const MOSQUITTO_BRIDGE_LINES: &str = "\
log_dest topic
log_type error
log_type warning
log_type notice
log_type information
connection_messages true
max_queued_messages 100000
max_inflight_messages 100
max_packet_size 262144
";

impl Mosquitto {
    pub fn start() -> Mosquitto {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Mosquitto::start_on(port)
    }

    pub fn start_on(port: u16) -> Mosquitto {
        let dir = tempfile::tempdir().unwrap();
        set_mode(dir.path(), 0o755);
        let passwd = dir.path().join("passwd");
        let acl = dir.path().join("acl");
        let mut pw = std::fs::File::create(&passwd).unwrap();
        writeln!(pw, "{}:{}", BRIDGE_USER.0, BRIDGE_USER.1).unwrap();
        for id in ["pump-7", "siren-1"] {
            writeln!(pw, "{id}:{SECRET}").unwrap();
        }
        drop(pw);
        let out = std::process::Command::new("mosquitto_passwd")
            .arg("-U")
            .arg(&passwd)
            .output()
            .unwrap();
        assert!(out.status.success(), "mosquitto_passwd -U failed");
        std::fs::write(
            &acl,
            format!(
                "user {}\ntopic read city/#\ntopic write city/+/+/cmd\ntopic read $SYS/#\n\n\
                 pattern write city/+/%u/telemetry\npattern write city/+/%u/state\n\
                 pattern write city/+/%u/ack\npattern read city/+/%u/cmd\n",
                BRIDGE_USER.0
            ),
        )
        .unwrap();
        set_mode(&passwd, 0o644);
        set_mode(&acl, 0o644);
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\nacl_file {}\n\
                 persistence false\nlog_dest stderr\n{MOSQUITTO_BRIDGE_LINES}",
                passwd.display(),
                acl.display()
            ),
        )
        .unwrap();
        let child = std::process::Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("mosquitto.log")).unwrap())
            .spawn()
            .expect("start mosquitto");
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "mosquitto did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Mosquitto {
            child,
            addr,
            _dir: dir,
        }
    }

    fn port(&self) -> String {
        self.addr.port().to_string()
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A sink that keeps everything, optionally slowly (to be stopped with messages in hand).
#[derive(Default)]
struct Collect {
    events: Mutex<Vec<Event>>,
    delay_ms: u64,
}

#[async_trait::async_trait]
impl EventSink for Collect {
    async fn send(&self, events: Vec<Event>) -> Result<(), SinkClosed> {
        // Taken first, then slow: a consumer killed in the delay has handed the events on
        // (as to the bus) without acknowledging them to the broker.
        self.events.lock().extend(events);
        if self.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.delay_ms)).await;
        }
        Ok(())
    }
}

fn config(m: &Mosquitto) -> BridgeConfig {
    BridgeConfig {
        brokers: vec![format!("mqtt://{}", m.addr)],
        username: Some(BRIDGE_USER.0.to_owned()),
        group: "citysec".to_owned(),
        ..BridgeConfig::default()
    }
}

fn start_bridge(config: &BridgeConfig, id: &str, sink: &Arc<Collect>) -> BridgeHandle {
    Bridge::start(
        config,
        id,
        Some(BRIDGE_USER.1.to_owned()),
        directory(),
        Arc::clone(sink) as Arc<dyn EventSink>,
    )
    .unwrap()
}

async fn wait_connected(bridges: &[&BridgeHandle]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !bridges.iter().all(|b| b.connected()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "bridge did not connect"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The SUBACK follows the CONNACK.
    tokio::time::sleep(Duration::from_millis(300)).await;
}

/// Publishes `range` as pump-7 at QoS 1, one message per line (`mosquitto_pub -l`), each
/// with its own timestamp and sequence number; `slow` feeds the lines in small chunks.
async fn publish_seq(broker: SocketAddr, range: std::ops::Range<u64>, slow: bool) {
    let base = Timestamp::now().as_millis();
    let mut lines = String::new();
    for i in range {
        lines.push_str(&format!("{{\"ts\":{},\"seq\":{i}}}\n", base + i as i64));
    }
    let mut child = tokio::process::Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &broker.port().to_string(),
            "-q",
            "1",
            "-l",
        ])
        .args(["-i", "pump-7", "-u", "pump-7", "-P", SECRET])
        .args(["-t", "city/water/pump-7/telemetry"])
        .stdin(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().unwrap();
        let chunk = if slow { 2048 } else { lines.len().max(1) };
        for part in lines.as_bytes().chunks(chunk) {
            stdin.write_all(part).await.unwrap();
            if slow {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("mosquitto_pub timed out")
        .unwrap();
    assert!(status.success());
}

fn seq_of(e: &Event) -> Option<u64> {
    match &e.kind {
        EventKind::Telemetry { readings } => readings.iter().find_map(|r| match r.value {
            Value::Number(n) if r.name == "seq" => Some(n as u64),
            _ => None,
        }),
        _ => None,
    }
}

/// Sequence numbers seen (with how often) across sinks.
fn seqs(sinks: &[&Arc<Collect>]) -> BTreeMap<u64, usize> {
    let mut map = BTreeMap::new();
    for s in sinks {
        for e in s.events.lock().iter() {
            if let Some(n) = seq_of(e) {
                *map.entry(n).or_default() += 1;
            }
        }
    }
    map
}

async fn wait_all(sinks: &[&Arc<Collect>], n: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let seen = seqs(sinks);
        if (0..n).all(|i| seen.contains_key(&i)) {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            let missing: Vec<u64> = (0..n).filter(|i| !seen.contains_key(i)).collect();
            panic!("missing {} of {n}: {missing:?}", missing.len());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_consumers_in_one_group_get_each_message_once() {
    if !have_mosquitto_broker() {
        return;
    }
    let m = Mosquitto::start();
    let cfg = config(&m);
    let (sa, sb) = (Arc::new(Collect::default()), Arc::new(Collect::default()));
    let a = start_bridge(&cfg, "ingest-a", &sa);
    let b = start_bridge(&cfg, "ingest-b", &sb);
    wait_connected(&[&a, &b]).await;
    const N: u64 = 400;
    publish_seq(m.addr, 0..N, false).await;
    wait_all(&[&sa, &sb], N).await;
    // Let any duplicate arrive before judging.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = seqs(&[&sa, &sb]);
    let dups: Vec<_> = seen.iter().filter(|(_, c)| **c > 1).collect();
    assert!(dups.is_empty(), "delivered more than once: {dups:?}");
    let (na, nb) = (sa.events.lock().len(), sb.events.lock().len());
    assert_eq!(na + nb, N as usize);
    assert!(na > 0 && nb > 0, "the group split nothing: {na} / {nb}");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_stopped_abruptly_loses_nothing() {
    if !have_mosquitto_broker() {
        return;
    }
    let m = Mosquitto::start();
    let cfg = config(&m);
    // A is slow, so it holds unacknowledged messages when it dies.
    let sa = Arc::new(Collect {
        delay_ms: 50,
        ..Collect::default()
    });
    let sb = Arc::new(Collect::default());
    let a = start_bridge(&cfg, "ingest-a", &sa);
    let b = start_bridge(&cfg, "ingest-b", &sb);
    wait_connected(&[&a, &b]).await;
    const N: u64 = 600;
    let publisher = tokio::spawn(publish_seq(m.addr, 0..N, true));
    // Kill A once it took some of the stream.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while sa.events.lock().len() < 20 {
        assert!(tokio::time::Instant::now() < deadline, "a received nothing");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    a.abort();
    drop(a);
    let before_restart = sa.events.lock().len();
    publisher.await.unwrap();
    // Mosquitto queues the dead member's share in its session: the restarted A gets it.
    let sa2 = Arc::new(Collect::default());
    let a2 = start_bridge(&cfg, "ingest-a", &sa2);
    wait_all(&[&sa, &sb, &sa2], N).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Duplicates are redeliveries of messages A had not acknowledged: identical events,
    // which the store keeps once (PgStore: digest of the document).
    let mut docs = HashSet::new();
    let mut total = 0;
    for s in [&sa, &sb, &sa2] {
        for e in s.events.lock().iter() {
            total += 1;
            docs.insert(serde_json::to_string(e).unwrap());
        }
    }
    assert_eq!(docs.len(), N as usize, "distinct events after dedup");
    assert!(
        total > docs.len(),
        "a died holding a taken, unacknowledged batch: it is redelivered"
    );
    eprintln!(
        "a took {before_restart} before it died, b {}, restarted a {}; {} redelivered duplicates",
        sb.events.lock().len(),
        sa2.events.lock().len(),
        total - docs.len()
    );
    a2.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bridge_reconnects_after_the_broker_restarts() {
    if !have_mosquitto_broker() {
        return;
    }
    let m = Mosquitto::start();
    let port = m.addr.port();
    let cfg = BridgeConfig {
        reconnect_max_ms: 500,
        ..config(&m)
    };
    let sink = Arc::new(Collect::default());
    let bridge = start_bridge(&cfg, "ingest-r", &sink);
    wait_connected(&[&bridge]).await;
    publish_seq(m.addr, 0..10, false).await;
    wait_all(&[&sink], 10).await;
    drop(m);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while bridge.connected() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the bridge did not notice"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The same port again (no persistence: the session is new, the bridge subscribes again).
    let m = Mosquitto::start_on(port);
    wait_connected(&[&bridge]).await;
    publish_seq(m.addr, 10..20, false).await;
    wait_all(&[&sink], 20).await;
    let metrics = bridge.metrics();
    assert!(metrics.connects.load(std::sync::atomic::Ordering::Relaxed) >= 2);
    assert!(
        metrics
            .connection_errors
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_at_mosquitto_become_auth_failures() {
    if !have_mosquitto_broker() {
        return;
    }
    let m = Mosquitto::start();
    let cfg = BridgeConfig {
        security_signals: SecuritySignals::MosquittoLog,
        ..config(&m)
    };
    let sink = Arc::new(Collect::default());
    let bridge = start_bridge(&cfg, "ingest-log", &sink);
    wait_connected(&[&bridge]).await;
    let port = m.port();
    for _ in 0..3 {
        let out = run(
            "mosquitto_pub",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-i",
                "pump-7",
                "-u",
                "pump-7",
                "-P",
                "guess",
                "-t",
                "city/water/pump-7/telemetry",
                "-m",
                "{}",
            ],
        )
        .await;
        assert!(!out.status.success(), "{}", text(&out));
    }
    let out = run(
        "mosquitto_pub",
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-i",
            "pump-7",
            "-u",
            "pump-7",
            "-P",
            SECRET,
            "-t",
            "city/water/pump-7/telemetry",
            "-m",
            "{\"temp_c\":1}",
            "-q",
            "1",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let rendered = loop {
        let rendered: Vec<String> = sink
            .events
            .lock()
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::Security(s) if s.client_id.as_deref() != Some("ingest-log") => {
                    Some(format!(
                        "{} device={} client={} user={} peer={} {}",
                        s.action,
                        e.device_id.as_ref().map_or("-", |d| d.as_str()),
                        s.client_id.as_deref().unwrap_or("-"),
                        s.username.as_deref().unwrap_or("-"),
                        s.peer
                            .as_deref()
                            .map_or("-", |p| if p.starts_with("127.0.0.1:") {
                                "127.0.0.1:*"
                            } else {
                                p
                            }),
                        s.reason.as_deref().unwrap_or("")
                    ))
                }
                _ => None,
            })
            .collect();
        if rendered.len() >= 5 || tokio::time::Instant::now() > deadline {
            break rendered;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    expect_test::expect![[r#"
        auth_failure device=- client=- user=- peer=127.0.0.1:* not authorised (mosquitto logs no username for a refused login)
        auth_failure device=- client=- user=- peer=127.0.0.1:* not authorised (mosquitto logs no username for a refused login)
        auth_failure device=- client=- user=- peer=127.0.0.1:* not authorised (mosquitto logs no username for a refused login)
        connect_accepted device=pump-7 client=pump-7 user=pump-7 peer=127.0.0.1:* mqtt 3.1.1 (mosquitto log)
        disconnect device=pump-7 client=pump-7 user=pump-7 peer=127.0.0.1:* client disconnect"#]]
    .assert_eq(&rendered.join("\n"));
    let kinds: Vec<SecurityEventKind> = sink
        .events
        .lock()
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Security(s) => Some(s.action),
            _ => None,
        })
        .collect();
    assert!(kinds.contains(&SecurityEventKind::AuthFailure));
    bridge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_reaches_the_device_cmd_topic_through_mosquitto() {
    if !have_mosquitto_broker() {
        return;
    }
    let m = Mosquitto::start();
    let sink = Arc::new(Collect::default());
    let bridge = start_bridge(&config(&m), "ingest-cmd", &sink);
    wait_connected(&[&bridge]).await;
    let sub = tokio::process::Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &m.port(),
            "-q",
            "1",
            "-C",
            "1",
            "-W",
            "10",
        ])
        .args(["-i", "siren-1", "-u", "siren-1", "-P", SECRET])
        .args(["-t", "city/public_safety/siren-1/cmd", "-v"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Publish until the subscriber is in (no retained commands).
    let publisher = bridge.publisher();
    let waiter = tokio::spawn(async move { sub.wait_with_output().await.unwrap() });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !waiter.is_finished() {
        assert!(tokio::time::Instant::now() < deadline, "no command arrived");
        assert_eq!(
            publisher.publish(
                "city/public_safety/siren-1/cmd",
                &b"{\"action\":\"test\"}"[..],
                1
            ),
            1
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let out = waiter.await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "city/public_safety/siren-1/cmd {\"action\":\"test\"}"
    );
    // The platform's own command, seen again on city/#, is no event.
    assert!(sink.events.lock().is_empty());
    assert!(
        bridge
            .metrics()
            .command_topic
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
    bridge.shutdown().await;
}

/// Counts events (standing in for the bus: the figure is what the bridge delivers to its
/// sink).
#[derive(Default)]
struct Count(std::sync::atomic::AtomicU64);

#[async_trait::async_trait]
impl EventSink for Count {
    async fn send(&self, events: Vec<Event>) -> Result<(), SinkClosed> {
        self.0
            .fetch_add(events.len() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}

/// Publishes `per_device` QoS 1 messages from each of pump-7 and siren-1 with rumqttc
/// (100 in flight each); returns when every PUBACK came back.
async fn blast(broker: SocketAddr, per_device: u64) {
    let mut tasks = Vec::new();
    for (id, topic) in [
        ("pump-7", "city/water/pump-7/telemetry"),
        ("siren-1", "city/public_safety/siren-1/telemetry"),
    ] {
        tasks.push(tokio::spawn(async move {
            let mut options = rumqttc::MqttOptions::new(id, "127.0.0.1", broker.port());
            options.set_credentials(id, SECRET).set_inflight(100);
            let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 1024);
            let sender = tokio::spawn(async move {
                let base = Timestamp::now().as_millis();
                for i in 0..per_device {
                    let payload = format!("{{\"ts\":{},\"seq\":{i},\"v\":1.5}}", base + i as i64);
                    client
                        .publish(topic, rumqttc::QoS::AtLeastOnce, false, payload)
                        .await
                        .unwrap();
                }
                client
            });
            let mut acked = 0;
            while acked < per_device {
                if let rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)) =
                    eventloop.poll().await.unwrap()
                {
                    acked += 1;
                }
            }
            let client = sender.await.unwrap();
            let _ = client.disconnect().await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// `RUN_SLOW_BENCHES=1`: QoS 1 messages per second from Mosquitto into the bridge's sink,
/// with one and with two consumers in the group (figures in
/// `bench/results/2026-12-02-vm/bridge.md`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn benchmark_bridge_throughput() {
    if std::env::var("RUN_SLOW_BENCHES").as_deref() != Ok("1") || !have_mosquitto_broker() {
        eprintln!("skipping: set RUN_SLOW_BENCHES=1");
        return;
    }
    const PER_DEVICE: u64 = 25_000;
    let total = 2 * PER_DEVICE;
    // Publishing alone (nobody subscribed): what the publishers and Mosquitto manage.
    {
        let m = Mosquitto::start();
        let t0 = Instant::now();
        blast(m.addr, PER_DEVICE).await;
        let s = t0.elapsed().as_secs_f64();
        eprintln!(
            "publish only: {total} msgs in {s:.2}s = {:.0} msg/s",
            total as f64 / s
        );
    }
    for consumers in [1usize, 2] {
        let m = Mosquitto::start();
        let cfg = config(&m);
        let sink = Arc::new(Count::default());
        let bridges: Vec<BridgeHandle> = (0..consumers)
            .map(|i| {
                Bridge::start(
                    &cfg,
                    &format!("bench-{i}"),
                    Some(BRIDGE_USER.1.to_owned()),
                    directory(),
                    Arc::clone(&sink) as Arc<dyn EventSink>,
                )
                .unwrap()
            })
            .collect();
        wait_connected(&bridges.iter().collect::<Vec<_>>()).await;
        let t0 = Instant::now();
        blast(m.addr, PER_DEVICE).await;
        let published = t0.elapsed().as_secs_f64();
        let deadline = Instant::now() + Duration::from_secs(300);
        while sink.0.load(std::sync::atomic::Ordering::Relaxed) < total {
            assert!(Instant::now() < deadline, "bridge fell behind");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let s = t0.elapsed().as_secs_f64();
        eprintln!(
            "{consumers} consumer(s): {total} msgs into the sink in {s:.2}s = {:.0} msg/s (publishers done after {published:.2}s)",
            total as f64 / s
        );
        for b in &bridges {
            b.shutdown().await;
        }
    }
}

//! End-to-end: the simulator against a real Mosquitto started with the population's
//! passwd and ACL files. Skips (with a message) when `mosquitto` is not installed, unless
//! `CITYSEC_REQUIRE_PEERS=1`.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use model::DeviceClass;
use serde_json::Value;
use sim::attacks::{AttackConfig, AttackKind, plan_cycle};
use sim::mqtt::Version;
use sim::population::Population;
use sim::{SimConfig, SimStats};

mod flow;
mod gateway;
mod harness;

const OBSERVER: (&str, &str) = ("observer", "observer-secret-1");

/// Whether the external programs exist; panics instead when peers are required.
fn peers_available(programs: &[&str]) -> bool {
    let missing: Vec<&str> = programs
        .iter()
        .copied()
        .filter(|p| Command::new(p).arg("--help").output().is_err())
        .collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var("CITYSEC_REQUIRE_PEERS").as_deref() == Ok("1") {
        panic!(
            "CITYSEC_REQUIRE_PEERS=1 but {missing:?} not found (apt-get install mosquitto mosquitto-clients)"
        );
    }
    eprintln!("skipping: {missing:?} not installed (apt-get install mosquitto mosquitto-clients)");
    false
}

/// Kills the child when dropped, so a failing test leaves no broker behind.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_mosquitto(dir: &Path, population: &Population) -> (Killed, SocketAddr) {
    start_mosquitto_on(dir, population, free_port())
}

fn start_mosquitto_on(dir: &Path, population: &Population, port: u16) -> (Killed, SocketAddr) {
    let files = population.write_mosquitto(dir, Some(OBSERVER)).unwrap();
    assert!(
        files.hashed,
        "mosquitto_passwd is installed, so the passwd file must be hashed"
    );
    let conf = dir.join("mosquitto.conf");
    let log = dir.join("mosquitto.log");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\nacl_file {}\n\
             persistence false\nlog_dest stderr\nlog_type all\n",
            files.passwd.display(),
            files.acl.display(),
        ),
    )
    .unwrap();
    let child = Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        // Mosquitto drops root privileges, so it could not open a log file in our temp dir.
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start mosquitto");
    let broker = Killed(child);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "mosquitto did not listen on {addr}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (broker, addr)
}

/// Starts `mosquitto_sub` on `city/#` and returns once its subscription is acknowledged,
/// with a channel of `topic payload` lines.
fn start_observer(addr: SocketAddr) -> (Killed, mpsc::Receiver<String>) {
    // stdbuf: mosquitto_sub block-buffers a piped stdout.
    let mut child = Command::new("stdbuf")
        .args(["-oL", "mosquitto_sub"])
        .args(["-h", "127.0.0.1", "-p", &addr.port().to_string()])
        .args(["-u", OBSERVER.0, "-P", OBSERVER.1, "-i", "it-observer"])
        .args(["-t", "city/#", "-v", "-d"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start stdbuf mosquitto_sub");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let child = Killed(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let line = rx.recv_timeout(deadline.saturating_duration_since(Instant::now()));
        match line {
            Ok(line) if line.contains("received SUBACK") => break,
            Ok(_) => {}
            Err(_) => panic!("mosquitto_sub did not subscribe"),
        }
    }
    (child, rx)
}

fn publish_command(addr: SocketAddr, topic: &str, payload: &str) {
    let out = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &addr.port().to_string()])
        .args(["-u", OBSERVER.0, "-P", OBSERVER.1, "-i", "it-operator"])
        .args(["-t", topic, "-m", payload, "-q", "1"])
        .output()
        .expect("run mosquitto_pub");
    assert!(
        out.status.success(),
        "mosquitto_pub: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn city_against_mosquitto() {
    if !peers_available(&[
        "stdbuf",
        "mosquitto",
        "mosquitto_sub",
        "mosquitto_pub",
        "mosquitto_passwd",
    ]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let population = Arc::new(Population::generate(50, 21));
    let (_broker, addr) = start_mosquitto(dir.path(), &population);
    let (_observer, lines) = start_observer(addr);

    let attacks = AttackConfig {
        enabled: true,
        first_after: Duration::from_millis(200),
        repeat_every: Duration::from_secs(600),
        spacing: Duration::from_millis(900),
        brute_force_attempts: 12,
        brute_force_window: Duration::from_millis(600),
        spray_targets: 6,
        siren_hold: Duration::from_millis(500),
    };
    let plan = plan_cycle(&population, &attacks, 9, 0);
    let siren = plan
        .iter()
        .find_map(|a| match &a.kind {
            AttackKind::UncommandedSiren { siren } => Some(siren.clone()),
            _ => None,
        })
        .expect("a siren in the plan");

    // Both protocol versions are in play.
    let v5 = (0..50)
        .filter(|&i| sim::device_version(9, i, 0.2) == Version::V5)
        .count();
    assert!((1..50).contains(&v5), "{v5} of 50 devices speak mqtt 5");

    let mut config = SimConfig::new(addr, population.clone());
    config.rate = Some(250.0); // 5 msg/s per device, so every device reports within the run
    config.duration = Some(Duration::from_secs(3));
    config.attacks = attacks;
    config.seed = 9;
    config.connect_concurrency = 16;
    let stats = Arc::new(SimStats::default());
    let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let run = tokio::spawn(sim::run(config, stats.clone(), stop_rx));

    // Once every device is online, the operator closes a valve.
    let deadline = Instant::now() + Duration::from_secs(3);
    while stats.snapshot().devices_connected < 50 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        stats.snapshot().devices_connected,
        50,
        "{:?}",
        stats.snapshot()
    );
    let valve = population
        .of_class(DeviceClass::Valve)
        .next()
        .unwrap()
        .id
        .clone();
    let cmd_topic = format!("city/water/{valve}/cmd");
    tokio::task::spawn_blocking(move || {
        publish_command(addr, &cmd_topic, r#"{"action":"close","id":"it-1"}"#)
    })
    .await
    .unwrap();

    run.await.unwrap().unwrap();
    let snap = stats.snapshot();
    // Let the last publishes reach the observer.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let received: Vec<(String, String)> = lines
        .try_iter()
        .filter_map(|l| {
            l.split_once(' ')
                .map(|(t, p)| (t.to_string(), p.to_string()))
        })
        .filter(|(t, _)| t.starts_with("city/"))
        .collect();

    // Every device connected with its own credentials, none failed.
    assert_eq!(snap.connects, 50, "{snap:?}");
    assert_eq!(snap.connect_failures, 0, "{snap:?}");
    assert!(snap.messages_sent >= 400, "{snap:?}");

    // Telemetry from many classes arrived on each device's own topic.
    let mut classes = std::collections::BTreeSet::new();
    for (topic, payload) in &received {
        let parts: Vec<&str> = topic.split('/').collect();
        assert_eq!(parts.len(), 4, "{topic}");
        let device = population
            .get(parts[2])
            .unwrap_or_else(|| panic!("unknown device in {topic}"));
        assert_eq!(parts[1], device.sector.as_str(), "{topic}");
        let json: Value = serde_json::from_str(payload).unwrap_or_else(|e| panic!("{topic}: {e}"));
        if parts[3] == "telemetry" && json["firmware"].is_string() {
            // The firmware report every device sends on connect.
            assert_eq!(json["firmware"], device.firmware.as_str(), "{payload}");
        } else if parts[3] == "telemetry" {
            classes.insert(device.class);
            if device.class == DeviceClass::SmartMeter {
                assert!(json.is_array() && json[0]["bn"].is_string(), "{payload}");
            } else {
                assert!(json["ts"].is_string(), "{payload}");
            }
        }
    }
    assert_eq!(classes.len(), 15, "telemetry from every class: {classes:?}");
    let mqtt_messages = received
        .iter()
        .filter(|(t, _)| !t.ends_with("/cmd"))
        .count() as u64;
    assert!(
        mqtt_messages * 10 >= snap.messages_sent * 9,
        "observer saw {mqtt_messages} of {} messages",
        snap.messages_sent
    );

    // Brute force and spraying were refused by the broker, every attempt.
    assert_eq!(snap.attacks_launched, 3, "{snap:?}");
    assert_eq!(snap.attack_attempts, 12 + 6, "{snap:?}");
    assert_eq!(snap.attack_refused, snap.attack_attempts, "{snap:?}");
    assert_eq!(snap.attack_accepted, 0, "{snap:?}");
    let log = std::fs::read_to_string(dir.path().join("mosquitto.log")).unwrap();
    let refusals = log.matches("not authorised").count();
    assert!(
        refusals >= 18,
        "mosquitto logged {refusals} refusals:\n{log}"
    );

    // The siren sounded without a command, then stopped.
    let siren_states: Vec<bool> = received
        .iter()
        .filter(|(t, _)| *t == format!("city/public_safety/{siren}/state"))
        .filter_map(|(_, p)| serde_json::from_str::<Value>(p).ok()?["sounding"].as_bool())
        .collect();
    assert_eq!(siren_states, [false, true, false], "{siren}");

    // The valve acted on the command: ack and new state.
    assert_eq!(snap.cmds_received, 1, "{snap:?}");
    let ack = received
        .iter()
        .find(|(t, _)| *t == format!("city/water/{valve}/ack"))
        .expect("valve ack");
    let ack: Value = serde_json::from_str(&ack.1).unwrap();
    assert_eq!(
        (
            ack["action"].as_str(),
            ack["ok"].as_bool(),
            ack["id"].as_str()
        ),
        (Some("close"), Some(true), Some("it-1"))
    );
    let last_state = received
        .iter()
        .rfind(|(t, _)| *t == format!("city/water/{valve}/state"))
        .expect("valve state");
    assert_eq!(
        serde_json::from_str::<Value>(&last_state.1).unwrap()["position_pct"],
        0.0
    );
}

async fn wait_for(what: &str, stats: &SimStats, done: impl Fn(&sim::SimSnapshot) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done(&stats.snapshot()) {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {:?}",
            stats.snapshot()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_reconnect_after_broker_restart_and_stop_on_signal() {
    if !peers_available(&["mosquitto", "mosquitto_passwd"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let population = Arc::new(Population::generate(20, 4));
    let (broker, addr) = start_mosquitto(dir.path(), &population);

    let mut config = SimConfig::new(addr, population.clone());
    config.attacks = AttackConfig::disabled();
    config.rate = Some(100.0);
    let stats = Arc::new(SimStats::default());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let run = tokio::spawn(sim::run(config, stats.clone(), stop_rx));
    wait_for("20 devices", &stats, |s| s.devices_connected == 20).await;

    drop(broker);
    wait_for("devices to notice the broker is gone", &stats, |s| {
        s.devices_connected == 0
    })
    .await;
    let (_restarted, _) = start_mosquitto_on(dir.path(), &population, addr.port());
    wait_for("reconnects", &stats, |s| {
        s.devices_connected == 20 && s.connects == 40
    })
    .await;
    let sent = stats.snapshot().messages_sent;
    wait_for("publishing again", &stats, |s| s.messages_sent > sent + 20).await;

    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(6), run)
        .await
        .expect("run stops on signal")
        .unwrap()
        .unwrap();
    assert_eq!(stats.snapshot().devices_connected, 0);
}

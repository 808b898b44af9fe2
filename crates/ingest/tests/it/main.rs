//! Integration tests: a real [`Broker`] on loopback, driven by Debian's `mosquitto_pub` and
//! `mosquitto_sub` over MQTT 3.1.1 and 5.0, plain and mutual TLS.
//!
//! Without the mosquitto clients these tests print "skipping: ..." and pass, unless
//! `CITYSEC_REQUIRE_PEERS=1`.

use std::collections::HashMap;
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use ingest::credentials;
use ingest::mqtt::{Broker, BrokerHandle, DeviceDirectory, EventSink, MqttConfig, SinkClosed};
use model::{
    Credential, Device, DeviceClass, DeviceId, DeviceStatus, Event, EventKind, SecurityEventKind,
    Timestamp,
};
use parking_lot::Mutex;
use tokio::process::Command;

mod bridge;

const SECRET: &str = "s3cret-for-tests";

struct MemDirectory(Mutex<HashMap<String, Arc<Device>>>);

impl DeviceDirectory for MemDirectory {
    fn get(&self, id: &str) -> Option<Arc<Device>> {
        self.0.lock().get(id).cloned()
    }
}

#[derive(Default)]
struct MemSink {
    events: Mutex<Vec<Event>>,
    notify: tokio::sync::Notify,
}

#[async_trait::async_trait]
impl EventSink for MemSink {
    async fn send(&self, events: Vec<Event>) -> Result<(), SinkClosed> {
        self.events.lock().extend(events);
        self.notify.notify_waiters();
        Ok(())
    }
}

impl MemSink {
    /// Waits (up to 5 s) for an event matching `pred` and returns it.
    async fn wait_for(&self, what: &str, pred: impl Fn(&Event) -> bool) -> Event {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let notified = self.notify.notified();
            if let Some(e) = self.events.lock().iter().find(|e| pred(e)) {
                return e.clone();
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let seen: Vec<String> = self.events.lock().iter().map(render).collect();
                panic!("no event {what}; seen: {seen:#?}");
            }
        }
    }
}

fn render(e: &Event) -> String {
    match &e.kind {
        EventKind::Security(s) => format!(
            "{} {} {}",
            s.action,
            s.reason.as_deref().unwrap_or(""),
            s.topic.as_deref().unwrap_or("")
        ),
        other => format!("{other:?}"),
    }
}

fn security(kind: SecurityEventKind, reason: &'static str) -> impl Fn(&Event) -> bool {
    move |e| matches!(&e.kind, EventKind::Security(s) if s.action == kind && s.reason.as_deref().is_some_and(|r| r.contains(reason)))
}

fn device(id: &str, class: DeviceClass, credentials: Vec<Credential>) -> Arc<Device> {
    Arc::new(Device {
        id: DeviceId::new(id).unwrap(),
        sector: class.sector(),
        class,
        zone: "z".into(),
        owner: "o".into(),
        vendor: "v".into(),
        model: "m".into(),
        firmware: "1".into(),
        addresses: Vec::new(),
        location: None,
        credentials,
        status: DeviceStatus::Active,
        created_at: Timestamp::from_millis(0),
    })
}

struct Fixture {
    broker: BrokerHandle,
    sink: Arc<MemSink>,
}

fn directory() -> Arc<MemDirectory> {
    let secret = Credential::Secret {
        hash: credentials::hash_secret(SECRET),
    };
    let mut map = HashMap::new();
    for d in [
        device("pump-7", DeviceClass::Pump, vec![secret.clone()]),
        device("siren-1", DeviceClass::Siren, vec![secret.clone()]),
        device("cam-1", DeviceClass::Camera, vec![]),
    ] {
        map.insert(d.id.as_str().to_owned(), d);
    }
    Arc::new(MemDirectory(Mutex::new(map)))
}

fn start(config: MqttConfig, dir: Arc<MemDirectory>) -> Fixture {
    let sink = Arc::new(MemSink::default());
    let broker = Broker::start(config, dir, Arc::clone(&sink) as Arc<dyn EventSink>).unwrap();
    Fixture { broker, sink }
}

fn local_config() -> MqttConfig {
    MqttConfig {
        listen: "127.0.0.1:0".into(),
        ..MqttConfig::default()
    }
}

/// Whether the mosquitto clients are installed; fails instead when peers are required.
fn have_mosquitto() -> bool {
    let found = std::process::Command::new("mosquitto_pub")
        .arg("--help")
        .output()
        .is_ok();
    if !found {
        assert!(
            std::env::var("CITYSEC_REQUIRE_PEERS").as_deref() != Ok("1"),
            "mosquitto_pub not installed and CITYSEC_REQUIRE_PEERS=1"
        );
        eprintln!(
            "skipping: mosquitto_pub/mosquitto_sub not installed (apt-get install mosquitto-clients)"
        );
    }
    found
}

async fn run(bin: &str, args: &[&str]) -> Output {
    let child = Command::new(bin).args(args).kill_on_drop(true).output();
    tokio::time::timeout(Duration::from_secs(10), child)
        .await
        .unwrap_or_else(|_| panic!("{bin} {args:?} timed out"))
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn pub_args<'a>(
    port: &'a str,
    v: &'a str,
    id: &'a str,
    pw: &'a str,
    topic: &'a str,
    msg: &'a str,
) -> Vec<&'a str> {
    vec![
        "-d",
        "-h",
        "127.0.0.1",
        "-p",
        port,
        "-V",
        v,
        "-i",
        id,
        "-u",
        id,
        "-P",
        pw,
        "-t",
        topic,
        "-m",
        msg,
        "-q",
        "1",
    ]
}

#[tokio::test]
async fn telemetry_is_accepted_over_both_versions() {
    if !have_mosquitto() {
        return;
    }
    let f = start(local_config(), directory());
    let port = f.broker.local_addr().port().to_string();
    for v in ["mqttv311", "mqttv5"] {
        let msg = format!(r#"{{"temp_c":21.5,"version":"{v}"}}"#);
        let out = run(
            "mosquitto_pub",
            &pub_args(
                &port,
                v,
                "pump-7",
                SECRET,
                "city/water/pump-7/telemetry",
                &msg,
            ),
        )
        .await;
        assert!(out.status.success(), "{v}: {}", text(&out));
        assert!(
            text(&out).to_lowercase().contains("received puback"),
            "{v}: {}",
            text(&out)
        );
        let want = v.to_owned();
        f.sink
            .wait_for("telemetry", move |e| {
                matches!(&e.kind, EventKind::Telemetry { readings } if readings.iter().any(|r| r.value == model::Value::Text(want.clone())))
                    && e.device_id.as_ref().is_some_and(|d| d.as_str() == "pump-7")
            })
            .await;
    }
    f.sink
        .wait_for(
            "connect accepted",
            security(SecurityEventKind::ConnectAccepted, "mqtt 5.0 password"),
        )
        .await;
    f.sink
        .wait_for(
            "clean disconnect",
            security(SecurityEventKind::Disconnect, "client disconnect (clean)"),
        )
        .await;
    let m = f.broker.metrics().snapshot();
    assert_eq!(m.messages_received, 2);
    assert_eq!(m.connects_accepted, 2);
    f.broker.shutdown().await;
}

#[tokio::test]
async fn bad_password_is_refused_and_reported() {
    if !have_mosquitto() {
        return;
    }
    let f = start(local_config(), directory());
    let port = f.broker.local_addr().port().to_string();
    for v in ["mqttv311", "mqttv5"] {
        let out = run(
            "mosquitto_pub",
            &pub_args(
                &port,
                v,
                "pump-7",
                "wrong",
                "city/water/pump-7/telemetry",
                "{}",
            ),
        )
        .await;
        assert!(!out.status.success(), "{v}: {}", text(&out));
        let t = text(&out).to_lowercase();
        assert!(
            t.contains("bad user name or password") || t.contains("not authorized"),
            "{v}: {t}"
        );
    }
    let ev = f
        .sink
        .wait_for(
            "auth failure",
            security(SecurityEventKind::AuthFailure, "bad password"),
        )
        .await;
    let EventKind::Security(s) = &ev.kind else {
        unreachable!()
    };
    assert_eq!(s.client_id.as_deref(), Some("pump-7"));
    assert!(
        s.peer
            .as_deref()
            .is_some_and(|p| p.starts_with("127.0.0.1:"))
    );
    assert_eq!(f.broker.metrics().snapshot().auth_failures, 2);
    f.broker.shutdown().await;
}

#[tokio::test]
async fn publish_outside_namespace_is_denied() {
    if !have_mosquitto() {
        return;
    }
    let f = start(local_config(), directory());
    let port = f.broker.local_addr().port().to_string();
    // MQTT 5: mosquitto_pub exits 0 but -d shows the PUBACK reason code 135 (not authorized).
    let out = run(
        "mosquitto_pub",
        &pub_args(
            &port,
            "mqttv5",
            "pump-7",
            SECRET,
            "city/water/pump-8/telemetry",
            "{}",
        ),
    )
    .await;
    let t = text(&out);
    assert!(
        t.to_lowercase().contains("received puback") && t.contains("135"),
        "{t}"
    );
    f.sink
        .wait_for(
            "publish denied",
            security(
                SecurityEventKind::PublishDenied,
                "topic outside device namespace",
            ),
        )
        .await;
    // MQTT 3.1.1 can only drop it: the PUBACK arrives, no telemetry event does.
    let out = run(
        "mosquitto_pub",
        &pub_args(
            &port,
            "mqttv311",
            "pump-7",
            SECRET,
            "city/public_safety/siren-1/cmd",
            "{}",
        ),
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    f.sink
        .wait_for(
            "publish to cmd denied",
            security(SecurityEventKind::PublishDenied, "publish to cmd topic"),
        )
        .await;
    assert!(
        !f.sink
            .events
            .lock()
            .iter()
            .any(|e| matches!(e.kind, EventKind::Telemetry { .. }))
    );
    assert_eq!(f.broker.metrics().snapshot().publish_denied, 2);
    f.broker.shutdown().await;
}

#[tokio::test]
async fn wildcard_subscription_is_refused() {
    if !have_mosquitto() {
        return;
    }
    let f = start(local_config(), directory());
    let port = f.broker.local_addr().port().to_string();
    for (v, code) in [("mqttv311", "128"), ("mqttv5", "135")] {
        let args = [
            "-d",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-V",
            v,
            "-i",
            "pump-7",
            "-u",
            "pump-7",
            "-P",
            SECRET,
            "-t",
            "city/#",
            "-C",
            "1",
            "-W",
            "2",
        ];
        let out = run("mosquitto_sub", &args).await;
        let t = text(&out);
        assert!(t.to_lowercase().contains("received suback"), "{v}: {t}");
        assert!(t.contains(code), "{v}: expected granted code {code}: {t}");
    }
    f.sink
        .wait_for(
            "subscribe denied",
            security(SecurityEventKind::SubscribeDenied, "wildcard subscription"),
        )
        .await;
    assert_eq!(f.broker.metrics().snapshot().subscribe_denied, 2);
    f.broker.shutdown().await;
}

#[tokio::test]
async fn cmd_is_delivered_to_the_subscribed_device() {
    if !have_mosquitto() {
        return;
    }
    let f = start(local_config(), directory());
    let port = f.broker.local_addr().port().to_string();
    for v in ["mqttv311", "mqttv5"] {
        let topic = "city/public_safety/siren-1/cmd";
        let args = vec![
            "-h".to_owned(),
            "127.0.0.1".into(),
            "-p".into(),
            port.clone(),
            "-V".into(),
            v.into(),
            "-i".into(),
            "siren-1".into(),
            "-u".into(),
            "siren-1".into(),
            "-P".into(),
            SECRET.into(),
            "-t".into(),
            topic.into(),
            "-q".into(),
            "1".into(),
            "-C".into(),
            "1".into(),
            "-W".into(),
            "8".into(),
        ];
        let sub = Command::new("mosquitto_sub")
            .args(&args)
            .kill_on_drop(true)
            .output();
        let sub = tokio::spawn(sub);
        // Publish once the subscription is routed.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let payload = format!(r#"{{"action":"sound","v":"{v}"}}"#);
        while f.broker.publish(topic, payload.clone().into_bytes(), 1) == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "subscription never routed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let out = sub.await.unwrap().unwrap();
        assert!(out.status.success(), "{}", text(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), payload);
    }
    f.broker.shutdown().await;
}

#[tokio::test]
async fn revoked_device_is_disconnected() {
    if !have_mosquitto() {
        return;
    }
    let dir = directory();
    let f = start(local_config(), Arc::clone(&dir));
    let port = f.broker.local_addr().port().to_string();
    let args = [
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-V",
        "mqttv5",
        "-i",
        "siren-1",
        "-u",
        "siren-1",
        "-P",
        SECRET,
        "-t",
        "city/public_safety/siren-1/cmd",
        "-W",
        "8",
    ];
    let sub = tokio::spawn(
        Command::new("mosquitto_sub")
            .args(args)
            .kill_on_drop(true)
            .output(),
    );
    f.sink
        .wait_for(
            "connected",
            security(SecurityEventKind::ConnectAccepted, "mqtt"),
        )
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !f.broker.disconnect_device("siren-1", "credentials revoked") {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f.sink
        .wait_for(
            "disconnect",
            security(SecurityEventKind::Disconnect, "credentials revoked"),
        )
        .await;
    let out = sub.await.unwrap().unwrap();
    assert!(!text(&out).contains("Timed out"), "{}", text(&out));
    f.broker.shutdown().await;
}

#[tokio::test]
async fn mutual_tls_authenticates_by_certificate() {
    if !have_mosquitto() {
        return;
    }
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };
    let dir_tmp = tempfile::tempdir().unwrap();
    let path = |n: &str| dir_tmp.path().join(n);

    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "citysec test ca");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate().unwrap();
    let server_params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    let server_cert = server_params.signed_by(&server_key, &issuer).unwrap();

    let client_key = KeyPair::generate().unwrap();
    let mut client_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    client_params
        .distinguished_name
        .push(DnType::CommonName, "cam-1");
    client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_cert = client_params.signed_by(&client_key, &issuer).unwrap();

    std::fs::write(path("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(path("server.pem"), server_cert.pem()).unwrap();
    std::fs::write(path("server.key"), server_key.serialize_pem()).unwrap();
    std::fs::write(path("client.pem"), client_cert.pem()).unwrap();
    std::fs::write(path("client.key"), client_key.serialize_pem()).unwrap();

    // Pin the client certificate on the device record.
    let dir = directory();
    let sha: String = {
        use sha2::Digest;
        sha2::Sha256::digest(client_cert.der())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    dir.0.lock().insert(
        "cam-1".into(),
        device(
            "cam-1",
            DeviceClass::Camera,
            vec![Credential::Certificate { sha256: sha }],
        ),
    );

    let config = MqttConfig {
        tls_listen: Some("127.0.0.1:0".into()),
        tls_cert: Some(path("server.pem")),
        tls_key: Some(path("server.key")),
        client_ca: Some(path("ca.pem")),
        ..local_config()
    };
    let f = start(config, dir);
    let port = f.broker.tls_local_addr().unwrap().port().to_string();
    let (ca, cert, key) = (path("ca.pem"), path("client.pem"), path("client.key"));
    let (ca, cert, key) = (
        ca.to_str().unwrap(),
        cert.to_str().unwrap(),
        key.to_str().unwrap(),
    );
    for v in ["mqttv311", "mqttv5"] {
        let args = [
            "-d",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-V",
            v,
            "--cafile",
            ca,
            "--cert",
            cert,
            "--key",
            key,
            "-i",
            "cam-1",
            "-t",
            "city/public_safety/cam-1/telemetry",
            "-m",
            r#"{"motion":true}"#,
            "-q",
            "1",
        ];
        let out = run("mosquitto_pub", &args).await;
        assert!(
            out.status.success() && text(&out).to_lowercase().contains("received puback"),
            "{v}: {}",
            text(&out)
        );
    }
    f.sink
        .wait_for(
            "cert connect",
            security(SecurityEventKind::ConnectAccepted, "certificate"),
        )
        .await;
    f.sink
        .wait_for("camera telemetry", |e| {
            matches!(e.kind, EventKind::Telemetry { .. })
                && e.device_id.as_ref().is_some_and(|d| d.as_str() == "cam-1")
        })
        .await;
    // A password device on the TLS listener without a client certificate.
    let mut args = pub_args(
        &port,
        "mqttv311",
        "pump-7",
        SECRET,
        "city/water/pump-7/telemetry",
        "{\"x\":1}",
    );
    args.extend(["--cafile", ca]);
    let out = run("mosquitto_pub", &args).await;
    assert!(out.status.success(), "{}", text(&out));
    f.sink
        .wait_for("password over tls", |e| {
            matches!(e.kind, EventKind::Telemetry { .. })
                && e.device_id.as_ref().is_some_and(|d| d.as_str() == "pump-7")
        })
        .await;
    // A certificate naming a device, used with another device's username: refused.
    let args = [
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-V",
        "mqttv311",
        "--cafile",
        ca,
        "--cert",
        cert,
        "--key",
        key,
        "-i",
        "cam-1",
        "-u",
        "pump-7",
        "-t",
        "x",
        "-m",
        "x",
    ];
    let out = run("mosquitto_pub", &args).await;
    assert!(!out.status.success(), "{}", text(&out));
    f.sink
        .wait_for(
            "cn mismatch",
            security(
                SecurityEventKind::AuthFailure,
                "username does not match certificate cn",
            ),
        )
        .await;
    f.broker.shutdown().await;
}

#[tokio::test]
async fn connect_floods_are_limited_and_summarised() {
    let config = MqttConfig {
        connect_rate_per_ip: 5,
        ..local_config()
    };
    let f = start(config, directory());
    let addr = f.broker.local_addr();
    let mut conns = Vec::new();
    for _ in 0..40 {
        // Plain TCP connects that never send CONNECT.
        conns.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    let refused = security(
        SecurityEventKind::ConnectRefused,
        "connect rate per ip exceeded",
    );
    f.sink.wait_for("rate limited", &refused).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while f.broker.metrics().snapshot().connects_refused < 30 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            f.broker.metrics().snapshot()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Burst of 2 x rate admitted; the rest refused, but only a bounded number of events.
    let m = f.broker.metrics().snapshot();
    assert_eq!(m.connects_refused, 30, "{m:?}");
    let events = f.sink.events.lock().iter().filter(|e| refused(e)).count();
    assert!(events <= 20, "{events} refusal events");
    f.sink
        .wait_for(
            "summary",
            security(
                SecurityEventKind::ConnectRefused,
                "further refused connects suppressed",
            ),
        )
        .await;
    drop(conns);
    f.broker.shutdown().await;
}

#[tokio::test]
async fn silent_connections_time_out() {
    use tokio::io::AsyncReadExt;
    let config = MqttConfig {
        connect_timeout_ms: 200,
        ..local_config()
    };
    let f = start(config, directory());
    let mut s = tokio::net::TcpStream::connect(f.broker.local_addr())
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        n, 0,
        "the broker closes a connection that never sent CONNECT"
    );
    f.sink
        .wait_for(
            "timeout event",
            security(SecurityEventKind::ConnectRefused, "connect timeout"),
        )
        .await;
    f.broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn argon2_secret_device_connects() {
    if !have_mosquitto() {
        return;
    }
    let dir = directory();
    let hash = credentials::hash_password("a human chose this");
    dir.0.lock().insert(
        "valve-3".into(),
        device(
            "valve-3",
            DeviceClass::Valve,
            vec![Credential::Secret { hash }],
        ),
    );
    let f = start(local_config(), dir);
    let port = f.broker.local_addr().port().to_string();
    let out = run(
        "mosquitto_pub",
        &pub_args(
            &port,
            "mqttv5",
            "valve-3",
            "a human chose this",
            "city/water/valve-3/state",
            r#"{"open":false}"#,
        ),
    )
    .await;
    assert!(
        out.status.success() && text(&out).to_lowercase().contains("received puback"),
        "{}",
        text(&out)
    );
    f.sink
        .wait_for("valve state", |e| matches!(e.kind, EventKind::State { .. }))
        .await;
    f.broker.shutdown().await;
}

/// Connects a raw 3.1.1 client from `source` and returns the stream and the CONNACK code.
async fn raw_connect(
    broker: std::net::SocketAddr,
    source: &str,
    id: &str,
) -> (tokio::net::TcpStream, u8) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let mut s = socket.connect(broker).await.unwrap();
    let mut c = rumqttc::mqttbytes::v4::Connect::new(id);
    c.set_login(id, SECRET);
    let mut buf = bytes::BytesMut::new();
    c.write(&mut buf).unwrap();
    s.write_all(&buf).await.unwrap();
    let mut ack = [0u8; 4];
    s.read_exact(&mut ack).await.unwrap();
    (s, ack[3])
}

#[tokio::test]
async fn client_id_conflicts_are_refused_or_replaced_and_reported() {
    use tokio::io::AsyncReadExt;
    let f = start(local_config(), directory());
    let addr = f.broker.local_addr();
    let (mut first, code) = raw_connect(addr, "127.0.0.1", "pump-7").await;
    assert_eq!(code, 0);
    // Another address while the first is alive: refused (identifier rejected).
    let (_, code) = raw_connect(addr, "127.0.0.2", "pump-7").await;
    assert_eq!(code, 2);
    f.sink
        .wait_for(
            "refused takeover",
            security(
                SecurityEventKind::ClientIdTakeover,
                "client id in use from another address",
            ),
        )
        .await;
    // The same address: the new connection replaces the old one, which is closed.
    let (_second, code) = raw_connect(addr, "127.0.0.1", "pump-7").await;
    assert_eq!(code, 0);
    f.sink
        .wait_for(
            "replaced",
            security(
                SecurityEventKind::ClientIdTakeover,
                "replaced live session from the same address",
            ),
        )
        .await;
    let mut buf = [0u8; 8];
    let n = tokio::time::timeout(Duration::from_secs(5), first.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "the replaced session is closed");
    f.sink
        .wait_for(
            "old session closed",
            security(
                SecurityEventKind::Disconnect,
                "session taken over by 127.0.0.1",
            ),
        )
        .await;
    f.broker.shutdown().await;
}

/// Telemetry events of `device` the sink received.
fn telemetry_of(f: &Fixture, device: &str) -> usize {
    f.sink
        .events
        .lock()
        .iter()
        .filter(|e| {
            matches!(e.kind, EventKind::Telemetry { .. })
                && e.device_id.as_ref().is_some_and(|d| d.as_str() == device)
        })
        .count()
}

/// A `mosquitto_pub -l` session: each line written to its stdin is one publish.
struct LinePublisher {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
}

impl LinePublisher {
    fn start(port: &str, version: &str, id: &str, topic: &str) -> LinePublisher {
        let mut child = Command::new("mosquitto_pub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                port,
                "-V",
                version,
                "-i",
                id,
                "-u",
                id,
                "-P",
                SECRET,
                "-t",
                topic,
                "-l",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        LinePublisher { child, stdin }
    }

    /// Publishes `n` readings `gap` apart; returns how long it took.
    async fn paced(&mut self, n: usize, gap: Duration) -> Duration {
        use tokio::io::AsyncWriteExt;
        let started = tokio::time::Instant::now();
        for i in 0..n {
            self.stdin
                .write_all(format!("{{\"flow_lps\": {i}}}\n").as_bytes())
                .await
                .unwrap();
            self.stdin.flush().await.unwrap();
            tokio::time::sleep(gap).await;
        }
        started.elapsed()
    }

    async fn finish(self) -> Output {
        drop(self.stdin);
        tokio::time::timeout(Duration::from_secs(10), self.child.wait_with_output())
            .await
            .expect("mosquitto_pub did not exit")
            .unwrap()
    }
}

/// Waits until the sink has `n` telemetry events of `device` (or 5 s have passed).
async fn settle(f: &Fixture, device: &str, n: usize) -> usize {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let got = telemetry_of(f, device);
        if got >= n || tokio::time::Instant::now() > deadline {
            // Give stragglers a moment, then count.
            tokio::time::sleep(Duration::from_millis(200)).await;
            return telemetry_of(f, device);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_hold_per_device_on_live_and_later_sessions_and_lift() {
    if !have_mosquitto() {
        return;
    }
    let f = start(local_config(), directory());
    let port = f.broker.local_addr().port().to_string();
    let limit = ingest::mqtt::DeviceLimit {
        messages_per_s: 5.0,
        burst: 5,
        until: Timestamp::now().saturating_add_ms(120_000),
    };
    // Set before the device connects: its next connection is held to it.
    assert!(!f.broker.set_rate_limit("pump-7", limit));
    let mut pump = LinePublisher::start(&port, "mqttv5", "pump-7", "city/water/pump-7/telemetry");
    let mut siren = LinePublisher::start(
        &port,
        "mqttv311",
        "siren-1",
        "city/public_safety/siren-1/telemetry",
    );
    // 25 readings a second each, for 1.2 s.
    let gap = Duration::from_millis(40);
    let (took, _) = tokio::join!(pump.paced(30, gap), siren.paced(30, gap));
    let allowed = |took: Duration| 5 + (took.as_secs_f64() * 5.0).ceil() as usize + 1;
    assert_eq!(
        settle(&f, "siren-1", 30).await,
        30,
        "the other device is untouched"
    );
    let held = telemetry_of(&f, "pump-7");
    assert!(
        (5..=allowed(took)).contains(&held),
        "{held} of 30 passed, at most {} allowed",
        allowed(took)
    );
    assert_eq!(
        f.broker.metrics().snapshot().rate_limited,
        30 - held as u64,
        "every dropped publish is counted"
    );
    f.sink
        .wait_for(
            "rate limit applied",
            security(
                SecurityEventKind::RateLimitChanged,
                "rate limit applied (5 msg/s, burst 5",
            ),
        )
        .await;
    let dropped = f
        .sink
        .wait_for(
            "drops reported",
            security(
                SecurityEventKind::RateLimited,
                "over the rate limit (5 msg/s",
            ),
        )
        .await;
    assert_eq!(dropped.device_id.unwrap().as_str(), "pump-7");

    // Lifted while the session is live: the rate is back at once.
    assert_eq!(f.broker.lift_rate_limit("pump-7"), Some(limit));
    pump.paced(30, gap).await;
    assert_eq!(settle(&f, "pump-7", held + 30).await, held + 30);

    // Applied to the live session at once.
    let before = telemetry_of(&f, "pump-7");
    assert!(
        f.broker.set_rate_limit("pump-7", limit),
        "the live session took it"
    );
    let took = pump.paced(30, gap).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let passed = telemetry_of(&f, "pump-7") - before;
    assert!(
        (5..=allowed(took)).contains(&passed),
        "{passed} of 30 passed on the live session, at most {} allowed",
        allowed(took)
    );
    assert_eq!(f.broker.rate_limits(), vec![("pump-7".to_owned(), limit)]);
    let out = pump.finish().await;
    assert!(out.status.success(), "{}", text(&out));
    siren.finish().await;
    f.broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_limit_qos1_is_refused_and_floods_get_0x96() {
    if !have_mosquitto() {
        return;
    }
    let f = start(local_config(), directory());
    let port = f.broker.local_addr().port().to_string();
    let limit = ingest::mqtt::DeviceLimit {
        messages_per_s: 0.1,
        burst: 1,
        until: Timestamp::now().saturating_add_ms(120_000),
    };
    f.broker.set_rate_limit("pump-7", limit);
    let topic = "city/water/pump-7/telemetry";
    // MQTT 5, QoS 1: the first takes the burst; the next connection of the same device
    // finds the bucket empty (reconnecting does not refill it) and gets PUBACK 0x97.
    let first = run(
        "mosquitto_pub",
        &pub_args(
            &port,
            "mqttv5",
            "pump-7",
            SECRET,
            topic,
            "{\"flow_lps\": 1}",
        ),
    )
    .await;
    assert!(
        text(&first).to_lowercase().contains("received puback"),
        "{}",
        text(&first)
    );
    assert!(!text(&first).contains("151"), "{}", text(&first));
    let second = run(
        "mosquitto_pub",
        &pub_args(
            &port,
            "mqttv5",
            "pump-7",
            SECRET,
            topic,
            "{\"flow_lps\": 2}",
        ),
    )
    .await;
    let t = text(&second);
    assert!(
        t.to_lowercase().contains("received puback") && t.contains("151"),
        "{t}"
    );
    assert_eq!(
        settle(&f, "pump-7", 1).await,
        1,
        "the refused one was not taken"
    );

    // MQTT 3.1.1 cannot refuse a QoS 1 publish: the broker closes instead of acknowledging.
    let old = run(
        "mosquitto_pub",
        &pub_args(
            &port,
            "mqttv311",
            "pump-7",
            SECRET,
            topic,
            "{\"flow_lps\": 3}",
        ),
    )
    .await;
    let t = text(&old);
    assert!(!t.to_lowercase().contains("received puback"), "{t}");
    f.sink
        .wait_for(
            "3.1.1 closed",
            security(
                SecurityEventKind::Disconnect,
                "qos 1/2 publish over the rate limit",
            ),
        )
        .await;

    // A flood far over the limit: MQTT 5 DISCONNECT with 0x96 (message rate too high).
    let mut args = vec![
        "-d",
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-V",
        "mqttv5",
        "-i",
        "pump-7",
        "-u",
        "pump-7",
        "-P",
        SECRET,
        "-t",
        topic,
        "-l",
    ];
    args.push("-q");
    args.push("0");
    let mut child = Command::new("mosquitto_pub")
        .args(&args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().unwrap();
        let lines: String = (0..200)
            .map(|i| format!("{{\"flow_lps\": {i}}}\n"))
            .collect();
        let _ = stdin.write_all(lines.as_bytes()).await;
        // Keep stdin open so that the client is still there to read the broker's answer.
        tokio::time::sleep(Duration::from_millis(800)).await;
    }
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let t = text(&out);
    f.sink
        .wait_for(
            "flood disconnect",
            security(
                SecurityEventKind::RateLimited,
                "disconnected: publishing more than ten times",
            ),
        )
        .await;
    // mosquitto_pub -d prints the broker's DISCONNECT reason code: 150 = 0x96.
    assert!(t.contains("Received DISCONNECT (150)"), "{t}");
    assert!(
        telemetry_of(&f, "pump-7") <= 2,
        "the flood did not get through"
    );
    f.broker.shutdown().await;
}

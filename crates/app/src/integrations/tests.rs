//! The forwarders against real receivers on loopback: Debian's `rsyslogd` (started by each
//! test with its own config on a free port, over TCP and over TLS with the gtls driver,
//! writing the fields it parsed to a file the test reads), and a small HTTP receiver for
//! webhooks. Tests needing rsyslogd skip when it is missing unless
//! `CITYSEC_REQUIRE_PEERS=1`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use expect_test::expect;
use hmac::{KeyInit, Mac};
use model::{
    Alert, AlertId, Correlation, DeviceId, Evidence, Incident, IncidentAlert, IncidentId,
    IncidentState, IncidentTimes, Severity, TimelineEntry, TimelineKind, Timestamp,
};
use proptest::prelude::*;

use crate::integrations::{
    Forwarder, IntegrationsConfig, Record, SyslogConfig, Transport, WebhookConfig, cef, syslog,
    webhook,
};

fn rsyslogd() -> Option<PathBuf> {
    for candidate in ["/usr/sbin/rsyslogd", "/sbin/rsyslogd"] {
        if Path::new(candidate).exists() {
            return Some(candidate.into());
        }
    }
    assert!(
        std::env::var("CITYSEC_REQUIRE_PEERS").as_deref() != Ok("1"),
        "rsyslogd is required (CITYSEC_REQUIRE_PEERS=1) but not installed (apt-get install rsyslog rsyslog-gnutls)"
    );
    eprintln!("skipping: rsyslogd not installed (apt-get install rsyslog rsyslog-gnutls)");
    None
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running rsyslogd with its own config, work directory and output file.
struct Rsyslog {
    child: Child,
    out: PathBuf,
    port: u16,
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The fields rsyslog parsed from each RFC 5424 message, one line per message.
const TEMPLATE: &str =
    "%pri% %protocol-version% %hostname% %app-name% %msgid% %structured-data% %msg%\\n";

fn start_rsyslog(
    bin: &Path,
    dir: &Path,
    port: u16,
    tls: Option<&pki::Issued>,
    ca: Option<&Path>,
) -> Rsyslog {
    let out = dir.join("received.log");
    let (global_tls, module) = match (tls, ca) {
        (Some(server), Some(ca)) => {
            let cert = dir.join("server.pem");
            let key = dir.join("server.key");
            std::fs::write(&cert, &server.cert_pem).unwrap();
            std::fs::write(&key, &server.key_pem).unwrap();
            (
                format!(
                    " defaultNetstreamDriver=\"gtls\" defaultNetstreamDriverCAFile=\"{}\" defaultNetstreamDriverCertFile=\"{}\" defaultNetstreamDriverKeyFile=\"{}\"",
                    ca.display(),
                    cert.display(),
                    key.display()
                ),
                "module(load=\"imtcp\" streamDriver.name=\"gtls\" streamDriver.mode=\"1\" streamDriver.authMode=\"anon\")",
            )
        }
        _ => (String::new(), "module(load=\"imtcp\")"),
    };
    let config = format!(
        "global(workDirectory=\"{dir}\"{global_tls})\n{module}\n\
         template(name=\"fields\" type=\"string\" string=\"{TEMPLATE}\")\n\
         ruleset(name=\"siem\") {{ action(type=\"omfile\" file=\"{out}\" template=\"fields\") }}\n\
         input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{port}\" ruleset=\"siem\")\n",
        dir = dir.display(),
        out = out.display(),
    );
    let conf = dir.join("rsyslog.conf");
    std::fs::write(&conf, config).unwrap();
    let child = Command::new(bin)
        .arg("-n")
        .arg("-f")
        .arg(&conf)
        .arg("-i")
        .arg(dir.join("rsyslogd.pid"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start rsyslogd");
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "rsyslogd did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Rsyslog { child, out, port }
}

async fn wait_for_lines(path: &Path, n: usize) -> Vec<String> {
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "rsyslog received {} of {n} messages: {text}",
            lines.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_until(what: &str, f: impl Fn() -> bool) {
    let started = Instant::now();
    while !f() {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn test_alert() -> Alert {
    Alert {
        id: AlertId("al-0001".into()),
        rule: "auth.brute_force.device".into(),
        key: "camera-0001".into(),
        severity: Severity::High,
        ts: Timestamp::from_millis(1_795_000_000_000),
        last_ts: Timestamp::from_millis(1_795_000_005_000),
        count: 3,
        device_id: Some(DeviceId::new("camera-0001").unwrap()),
        zone: Some("ps-field".into()),
        source: Some("10.0.0.9".into()),
        title: "credential brute force | against camera-0001".into(),
        explanation: "10 failures in 60 s; key=value\nsecond line \\ backslash".into(),
        evidence: vec![Evidence {
            ts: Timestamp::from_millis(1_794_999_990_000),
            device_id: None,
            summary: "auth_failure".into(),
        }],
    }
}

fn test_incident() -> Incident {
    let alert = test_alert();
    Incident {
        id: IncidentId::from_seq(7),
        title: alert.title.clone(),
        state: IncidentState::Contained,
        severity: Severity::Critical,
        tlp: model::Tlp::Amber,
        owner: Some("alice".into()),
        devices: vec![DeviceId::new("camera-0001").unwrap()],
        zones: vec!["ps-field".into()],
        sources: vec!["10.0.0.9".into()],
        indicators: Vec::new(),
        alerts: vec![IncidentAlert {
            id: alert.id.clone(),
            rule: alert.rule.clone(),
            severity: alert.severity,
            ts: alert.ts,
            last_ts: alert.last_ts,
            count: 3,
            device_id: alert.device_id.clone(),
            source: alert.source.clone(),
            title: alert.title.clone(),
            correlation: Correlation::Opened,
            indicator: None,
        }],
        actions: Vec::new(),
        times: IncidentTimes {
            first_evidence: Timestamp::from_millis(1_794_999_990_000),
            first_alert: alert.ts,
            acknowledged: Some(Timestamp::from_millis(1_795_000_060_000)),
            contained: Some(Timestamp::from_millis(1_795_000_120_000)),
            ..IncidentTimes::default()
        },
        created_at: alert.ts,
        updated_at: Timestamp::from_millis(1_795_000_120_000),
        timeline: vec![TimelineEntry {
            ts: Timestamp::from_millis(1_795_000_120_000),
            actor: "bob".into(),
            what: TimelineKind::StateChanged {
                from: IncidentState::Triaged,
                to: IncidentState::Contained,
            },
        }],
        timeline_dropped: 0,
    }
}

fn syslog_sink(name: &str, port: u16, transport: Transport, ca: Option<PathBuf>) -> SyslogConfig {
    SyslogConfig {
        name: name.into(),
        address: format!("127.0.0.1:{port}"),
        transport,
        ca_file: ca,
        server_name: None,
        facility: 10,
        hostname: "citysec-test".into(),
    }
}

fn config(syslog: Vec<SyslogConfig>, webhooks: Vec<WebhookConfig>) -> IntegrationsConfig {
    IntegrationsConfig {
        syslog,
        webhooks,
        retry_base_ms: 20,
        retry_max_ms: 200,
        ..IntegrationsConfig::default()
    }
}

#[test]
fn messages_are_rfc5424_with_cef_bodies() {
    let now = Timestamp::from_millis(1_795_000_200_000);
    let alert = syslog::format_message(10, "citysec", 42, &Record::Alert(test_alert()), now);
    let incident = syslog::format_message(
        16,
        "citysec",
        42,
        &Record::Incident(test_incident(), "incident.state_changed"),
        now,
    );
    expect![[r#"
        <83>1 2026-11-18T11:10:00.000Z citysec citysec 42 alert - CEF:0|citysec|citysec|0.0.0|auth.brute_force.device|credential brute force \| against camera-0001|8|rt=1795000000000 end=1795000005000 externalId=al-0001 cat=auth.brute_force.device cnt=3 deviceExternalId=camera-0001 src=10.0.0.9 cs1Label=zone cs1=ps-field msg=10 failures in 60 s; key\=value\nsecond line \\ backslash
        <130>1 2026-11-18T11:10:00.000Z citysec citysec 42 incident - CEF:0|citysec|citysec|0.0.0|incident.state_changed|INC-000007 credential brute force \| against camera-0001|10|rt=1795000120000 externalId=INC-000007 cat=incident.state_changed cnt=1 suser=bob duser=alice cs1Label=state cs1=contained cs2Label=devices cs2=camera-0001 msg=state triaged -> contained
    "#]]
    .assert_eq(&format!("{alert}\n{incident}\n"));
    let framed = syslog::frame("<83>1 é");
    assert_eq!(framed, "8 <83>1 é".as_bytes());
}

fn unescape_value(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('r') => out.push('\r'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

proptest! {
    // Extension values round-trip and never contain a bare '=' or a line break, so a SIEM
    // cannot be fed forged key=value pairs or extra lines.
    #[test]
    fn cef_values_are_escaped(text in "\\PC{0,64}|[=\\\\\n\r|a ]{0,32}") {
        let escaped = cef::escape_value(&text);
        prop_assert_eq!(unescape_value(&escaped), text.clone());
        prop_assert!(!escaped.contains('\n') && !escaped.contains('\r'));
        let bare_equals = escaped
            .char_indices()
            .filter(|(_, c)| *c == '=')
            .any(|(i, _)| escaped[..i].chars().rev().take_while(|c| *c == '\\').count() % 2 == 0);
        prop_assert!(!bare_equals, "{}", escaped);
        let header = cef::escape_header(&text);
        prop_assert!(!header.contains('\n'));
    }
}

#[tokio::test]
async fn syslog_over_tcp_reaches_rsyslog() {
    let Some(bin) = rsyslogd() else { return };
    let dir = tempfile::tempdir().unwrap();
    let rsyslog = start_rsyslog(&bin, dir.path(), free_port(), None, None);
    let forwarder = Forwarder::start(config(
        vec![syslog_sink("siem", rsyslog.port, Transport::Tcp, None)],
        Vec::new(),
    ))
    .unwrap();
    forwarder.forward(Record::Alert(test_alert()));
    forwarder.forward(Record::Incident(test_incident(), "incident.state_changed"));
    let lines = wait_for_lines(&rsyslog.out, 2).await;
    // rsyslog parsed PRI, version, hostname, app-name and msgid from our RFC 5424 header,
    // and split the octet-counted frames (the CEF body keeps its escapes).
    assert!(
        lines[0].starts_with("83 1 citysec-test citysec alert - CEF:0|citysec|citysec|"),
        "{}",
        lines[0]
    );
    assert!(lines[0].contains("externalId=al-0001"), "{}", lines[0]);
    assert!(lines[0].contains("key\\=value"), "{}", lines[0]);
    assert!(
        lines[1].starts_with("82 1 citysec-test citysec incident - CEF:0|"),
        "{}",
        lines[1]
    );
    assert!(lines[1].contains("cs1=contained"), "{}", lines[1]);
    forwarder.shutdown(Duration::from_secs(2)).await;
    let status = forwarder.status();
    assert_eq!(status["sinks"][0]["delivered"], 2, "{status}");
    assert_eq!(status["sinks"][0]["failed"], 0, "{status}");
}

#[tokio::test]
async fn syslog_over_tls_reaches_rsyslog() {
    let Some(bin) = rsyslogd() else { return };
    let dir = tempfile::tempdir().unwrap();
    let ca = pki::Ca::create("citysec test ca").unwrap();
    let server = ca
        .issue_server(&["localhost".into()], &["127.0.0.1".parse().unwrap()], 30)
        .unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.cert_pem()).unwrap();
    let rsyslog = start_rsyslog(&bin, dir.path(), free_port(), Some(&server), Some(&ca_file));
    let forwarder = Forwarder::start(config(
        vec![syslog_sink(
            "siem-tls",
            rsyslog.port,
            Transport::Tls,
            Some(ca_file.clone()),
        )],
        Vec::new(),
    ))
    .unwrap();
    forwarder.forward(Record::Alert(test_alert()));
    let lines = wait_for_lines(&rsyslog.out, 1).await;
    assert!(
        lines[0].starts_with("83 1 citysec-test citysec alert - CEF:0|citysec|"),
        "{}",
        lines[0]
    );
    forwarder.shutdown(Duration::from_secs(2)).await;

    // A receiver whose certificate our CA did not sign is refused, retried, then reported.
    let other = pki::Ca::create("someone else").unwrap();
    let other_file = dir.path().join("other.pem");
    std::fs::write(&other_file, other.cert_pem()).unwrap();
    let forwarder = Forwarder::start(IntegrationsConfig {
        max_attempts: 2,
        ..config(
            vec![syslog_sink(
                "siem-bad-ca",
                rsyslog.port,
                Transport::Tls,
                Some(other_file),
            )],
            Vec::new(),
        )
    })
    .unwrap();
    forwarder.forward(Record::Alert(test_alert()));
    let stats = forwarder.stats()[0].clone();
    wait_until("the tls failure", || {
        stats.failed.load(Ordering::Relaxed) == 1
    })
    .await;
    let status = forwarder.status();
    let reason = status["sinks"][0]["undelivered"][0]["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        reason.contains("tls handshake") && reason.contains("after 2 attempts"),
        "{reason}"
    );
    forwarder.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_receiver_that_comes_up_late_gets_the_record_after_retries() {
    let Some(bin) = rsyslogd() else { return };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let forwarder = Forwarder::start(IntegrationsConfig {
        max_attempts: 100,
        ..config(
            vec![syslog_sink("late", port, Transport::Tcp, None)],
            Vec::new(),
        )
    })
    .unwrap();
    forwarder.forward(Record::Alert(test_alert()));
    let stats = forwarder.stats()[0].clone();
    wait_until("a failed attempt", || {
        stats.retries.load(Ordering::Relaxed) >= 2
    })
    .await;
    assert!(
        forwarder.status()["sinks"][0]["last_error"]
            .as_str()
            .unwrap()
            .contains("connect to 127.0.0.1")
    );
    let rsyslog = start_rsyslog(&bin, dir.path(), port, None, None);
    let lines = wait_for_lines(&rsyslog.out, 1).await;
    assert!(lines[0].contains("externalId=al-0001"));
    wait_until("delivery", || stats.delivered.load(Ordering::Relaxed) == 1).await;
    assert_eq!(stats.failed.load(Ordering::Relaxed), 0);
    forwarder.shutdown(Duration::from_secs(2)).await;
}

/// A webhook receiver: answers each request with the next status of `plan` (then 200),
/// optionally after a delay, and keeps what it received.
struct Receiver {
    url: String,
    received: Arc<Mutex<Vec<(HeaderMap, String)>>>,
    _task: tokio::task::JoinHandle<()>,
}

async fn receiver(plan: Vec<u16>, delay: Duration) -> Receiver {
    let received = Arc::new(Mutex::new(Vec::new()));
    let calls = Arc::new(AtomicUsize::new(0));
    let app = {
        let received = received.clone();
        axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: String| {
                let (received, calls, plan) = (received.clone(), calls.clone(), plan.clone());
                async move {
                    tokio::time::sleep(delay).await;
                    let n = calls.fetch_add(1, Ordering::SeqCst);
                    received.lock().unwrap().push((headers, body));
                    StatusCode::from_u16(plan.get(n).copied().unwrap_or(200)).unwrap()
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Receiver {
        url,
        received,
        _task: task,
    }
}

const SECRET: &str = "a shared webhook secret";

fn hook(name: &str, url: &str) -> WebhookConfig {
    WebhookConfig {
        name: name.into(),
        url: url.into(),
        secret: SECRET.into(),
        timeout_ms: 2000,
        ca_file: None,
    }
}

#[tokio::test]
async fn webhooks_are_signed_and_retried_with_backoff() {
    let rx = receiver(vec![503, 500], Duration::ZERO).await;
    let forwarder = Forwarder::start(config(Vec::new(), vec![hook("soar", &rx.url)])).unwrap();
    forwarder.forward(Record::Alert(test_alert()));
    forwarder.forward(Record::Incident(test_incident(), "incident.state_changed"));
    let stats = forwarder.stats()[0].clone();
    wait_until("two deliveries", || {
        stats.delivered.load(Ordering::Relaxed) == 2
    })
    .await;
    assert_eq!(stats.retries.load(Ordering::Relaxed), 2);
    assert_eq!(stats.failed.load(Ordering::Relaxed), 0);
    let received = rx.received.lock().unwrap().clone();
    assert_eq!(
        received.len(),
        4,
        "two refused attempts, then two deliveries"
    );
    for (headers, body) in &received {
        let ts = headers["x-citysec-timestamp"].to_str().unwrap();
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(format!("{ts}.{body}").as_bytes());
        let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(headers["x-citysec-signature"].to_str().unwrap(), expected);
        assert_eq!(headers["content-type"], "application/json");
    }
    let alert: serde_json::Value = serde_json::from_str(&received[2].1).unwrap();
    assert_eq!(alert["type"], "alert");
    assert_eq!(alert["alert"]["id"], "al-0001");
    let incident: serde_json::Value = serde_json::from_str(&received[3].1).unwrap();
    assert_eq!(incident["type"], "incident");
    assert_eq!(incident["change"], "incident.state_changed");
    assert_eq!(incident["incident"]["state"], "contained");
    assert_eq!(
        incident["incident"]["durations"]["time_to_contain_ms"],
        120_000
    );
    // A tampered body does not verify.
    assert_ne!(
        webhook::signature(SECRET, 1, "{\"type\":\"alert\"}"),
        webhook::signature(SECRET, 1, "{\"type\":\"alerts\"}")
    );
    forwarder.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_refusing_webhook_is_not_retried_and_is_reported() {
    let rx = receiver(vec![401], Duration::ZERO).await;
    let forwarder = Forwarder::start(config(Vec::new(), vec![hook("soar", &rx.url)])).unwrap();
    forwarder.forward(Record::Alert(test_alert()));
    let stats = forwarder.stats()[0].clone();
    wait_until("the refusal", || stats.failed.load(Ordering::Relaxed) == 1).await;
    assert_eq!(stats.retries.load(Ordering::Relaxed), 0);
    let status = forwarder.status();
    let undelivered = &status["sinks"][0]["undelivered"][0];
    assert_eq!(
        undelivered["record"],
        "alert al-0001 (auth.brute_force.device)"
    );
    assert!(
        undelivered["reason"].as_str().unwrap().contains("401"),
        "{status}"
    );
    let metrics = crate::integrations::render_metrics(&forwarder);
    assert!(
        metrics.contains("integrations_failed_total{sink=\"soar\",kind=\"webhook\"} 1"),
        "{metrics}"
    );
    forwarder.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_what_it_could_not_take() {
    let rx = receiver(Vec::new(), Duration::from_millis(300)).await;
    let forwarder = Forwarder::start(IntegrationsConfig {
        queue_capacity: 2,
        ..config(Vec::new(), vec![hook("slow", &rx.url)])
    })
    .unwrap();
    for _ in 0..10 {
        forwarder.forward(Record::Alert(test_alert()));
    }
    let stats = forwarder.stats()[0].clone();
    // One in flight at most, two queued: at least seven dropped at once.
    assert!(stats.dropped.load(Ordering::Relaxed) >= 7);
    let status = forwarder.status();
    assert_eq!(status["sinks"][0]["undelivered"][0]["reason"], "queue full");
    let dropped = stats.dropped.load(Ordering::Relaxed);
    wait_until("the queued ones", || {
        stats.delivered.load(Ordering::Relaxed) + dropped == 10
    })
    .await;
    forwarder.shutdown(Duration::from_secs(1)).await;
}

#[test]
fn bad_integration_configs_are_refused() {
    let mut bad_hook = hook("h", "ftp://x");
    let cases: Vec<(IntegrationsConfig, &str)> = vec![
        (config(Vec::new(), vec![bad_hook.clone()]), "https://"),
        (
            {
                bad_hook.url = "https://x".into();
                bad_hook.secret = "short".into();
                config(Vec::new(), vec![bad_hook.clone()])
            },
            "at least 16",
        ),
        (
            config(vec![syslog_sink("s", 1, Transport::Tls, None)], Vec::new()),
            "needs ca_file",
        ),
        (
            config(
                vec![
                    syslog_sink("s", 1, Transport::Tcp, None),
                    syslog_sink("s", 2, Transport::Tcp, None),
                ],
                Vec::new(),
            ),
            "used twice",
        ),
        (
            IntegrationsConfig {
                queue_capacity: 0,
                ..IntegrationsConfig::default()
            },
            "queue_capacity",
        ),
    ];
    for (config, want) in cases {
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains(want), "{err}");
    }
    let mut facility = syslog_sink("s", 1, Transport::Tcp, None);
    facility.facility = 24;
    assert!(facility.validate().is_err());
    facility.facility = 1;
    facility.address = "no-port".into();
    assert!(facility.validate().is_err());
}

#[tokio::test]
async fn an_https_webhook_is_trusted_through_the_configured_ca_only() {
    let dir = tempfile::tempdir().unwrap();
    let ca = pki::Ca::create("city ca").unwrap();
    let server = ca
        .issue_server(&["localhost".into()], &["127.0.0.1".parse().unwrap()], 30)
        .unwrap();
    let (cert, key, ca_file) = (
        dir.path().join("server.pem"),
        dir.path().join("server.key"),
        dir.path().join("ca.pem"),
    );
    std::fs::write(&cert, &server.cert_pem).unwrap();
    std::fs::write(&key, &server.key_pem).unwrap();
    std::fs::write(&ca_file, ca.cert_pem()).unwrap();
    let received = Arc::new(AtomicUsize::new(0));
    let app = {
        let received = received.clone();
        axum::Router::new().route(
            "/hook",
            axum::routing::post(move || {
                let received = received.clone();
                async move {
                    received.fetch_add(1, Ordering::SeqCst);
                    "ok"
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}/hook", listener.local_addr().unwrap());
    let tls =
        crate::tls::TlsListener::new(listener, crate::tls::server_config(&cert, &key).unwrap())
            .unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(tls, app).await;
    });

    let trusted = WebhookConfig {
        ca_file: Some(ca_file),
        ..hook("city-soar", &url)
    };
    let forwarder = Forwarder::start(config(Vec::new(), vec![trusted])).unwrap();
    forwarder.forward(Record::Alert(test_alert()));
    let stats = forwarder.stats()[0].clone();
    wait_until("the https delivery", || {
        stats.delivered.load(Ordering::Relaxed) == 1
    })
    .await;
    assert_eq!(received.load(Ordering::SeqCst), 1);
    forwarder.shutdown(Duration::from_secs(1)).await;

    // Without the city's CA the receiver's certificate is not trusted.
    let forwarder = Forwarder::start(IntegrationsConfig {
        max_attempts: 2,
        ..config(Vec::new(), vec![hook("untrusted", &url)])
    })
    .unwrap();
    forwarder.forward(Record::Alert(test_alert()));
    let stats = forwarder.stats()[0].clone();
    wait_until("the refusal", || stats.failed.load(Ordering::Relaxed) == 1).await;
    assert_eq!(
        received.load(Ordering::SeqCst),
        1,
        "nothing reached the receiver"
    );
    forwarder.shutdown(Duration::from_secs(1)).await;
}

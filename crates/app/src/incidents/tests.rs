//! The incident service end to end in a running platform: a siren sounds with no command
//! (published over real MQTT to the embedded broker), detection raises an alert, the
//! correlator opens an incident, the playbook runs its automatic action and proposes one
//! for approval; people with accounts work the incident through the HTTP API; the quarantine
//! refuses the device's credentials; every change reaches a signed webhook.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{Config, Platform};

/// A minimal MQTT 3.1.1 client: CONNECT with a password, then PUBLISH at QoS 0.
struct Mqtt(TcpStream);

fn remaining_length(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if n == 0 {
            break;
        }
    }
}

fn string(s: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

impl Mqtt {
    /// Connects; returns the CONNACK return code (0 = accepted).
    fn connect(addr: SocketAddr, id: &str, password: &str) -> (Mqtt, u8) {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut body = Vec::new();
        string("MQTT", &mut body);
        body.extend_from_slice(&[4, 0xC2, 0, 60]);
        string(id, &mut body);
        string(id, &mut body);
        string(password, &mut body);
        let mut packet = vec![0x10];
        remaining_length(body.len(), &mut packet);
        packet.extend_from_slice(&body);
        stream.write_all(&packet).unwrap();
        let mut connack = [0u8; 4];
        stream.read_exact(&mut connack).unwrap();
        assert_eq!(connack[0], 0x20, "expected CONNACK");
        (Mqtt(stream), connack[3])
    }

    fn publish(&mut self, topic: &str, payload: &str) {
        let mut body = Vec::new();
        string(topic, &mut body);
        body.extend_from_slice(payload.as_bytes());
        let mut packet = vec![0x30];
        remaining_length(body.len(), &mut packet);
        packet.extend_from_slice(&body);
        self.0.write_all(&packet).unwrap();
    }
}

async fn http(
    method: &'static str,
    url: String,
    token: Option<String>,
    body: Option<Value>,
) -> (u16, Value) {
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut response = match method {
            "GET" => {
                let mut req = agent.get(&url);
                if let Some(auth) = &auth {
                    req = req.header("Authorization", auth);
                }
                req.call()
            }
            _ => {
                let mut req = match method {
                    "PATCH" => agent.patch(&url),
                    _ => agent.post(&url),
                };
                if let Some(auth) = &auth {
                    req = req.header("Authorization", auth);
                }
                match body {
                    Some(body) => req.send_json(body),
                    None => req.send_empty(),
                }
            }
        }
        .unwrap();
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    })
    .await
    .unwrap()
}

async fn eventually<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = f().await {
            return value;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A webhook receiver keeping every body it got.
async fn receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    let received = Arc::new(Mutex::new(Vec::new()));
    let app = {
        let received = received.clone();
        axum::Router::new().route(
            "/hook",
            axum::routing::post(move |body: String| {
                let received = received.clone();
                async move {
                    received
                        .lock()
                        .unwrap()
                        .push(serde_json::from_str::<Value>(&body).unwrap());
                    "ok"
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, received)
}

fn actions(incident: &Value) -> Vec<String> {
    incident["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            format!(
                "{} {} {} {}",
                a["id"].as_str().unwrap(),
                a["kind"].as_str().unwrap(),
                a["status"].as_str().unwrap(),
                a["outcome"].as_str().unwrap_or("-")
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uncommanded_siren_becomes_an_incident_people_work_to_closure() {
    let dir = tempfile::tempdir().unwrap();
    let (hook_url, hooks) = receiver().await;
    let text = format!(
        r#"
version = 1
data_dir = "{data}"
[http]
listen = "127.0.0.1:0"
[ingest.mqtt]
listen = "127.0.0.1:0"
[[playbooks]]
name = "uncommanded-siren"
rules = ["actuation.uncommanded"]
actions = [{{ action = "silence_siren", mode = "auto" }}, {{ action = "quarantine", mode = "approval" }}]
[[integrations.webhooks]]
name = "soar"
url = "{hook_url}"
secret = "${{HOOK_SECRET}}"
"#,
        data = dir.path().display()
    );
    let env = [(
        "HOOK_SECRET".to_owned(),
        "0123456789abcdef-secret".to_owned(),
    )]
    .into_iter()
    .collect();
    let config = Config::load(&text, &env).unwrap();
    let platform = Platform::start(config).await.unwrap();
    let base = format!("http://{}", platform.http_addr());
    let admin = Some(platform.admin_token().to_owned());

    let request: web::NewDevice = serde_json::from_value(json!({
        "id": "siren-1", "class": "siren", "zone": "north", "owner": "emergency management",
        "generate_secret": true
    }))
    .unwrap();
    let (device, secret) = crate::platform::new_device(request, model::Timestamp::now()).unwrap();
    let secret = secret.unwrap();
    platform.register_devices(vec![device]).await.unwrap();

    // People: a supervisor and an operator, created by the admin, who log in.
    let mut tokens = std::collections::HashMap::new();
    for (name, role) in [("sue", "supervisor"), ("olly", "operator")] {
        let (status, _) = http(
            "POST",
            format!("{base}/api/v1/users"),
            admin.clone(),
            Some(json!({"name": name, "role": role, "password": "a long enough password"})),
        )
        .await;
        assert_eq!(status, 201);
        let (status, session) = http(
            "POST",
            format!("{base}/api/v1/auth/login"),
            None,
            Some(json!({"user": name, "password": "a long enough password"})),
        )
        .await;
        assert_eq!(status, 200, "{session}");
        tokens.insert(name, Some(session["token"].as_str().unwrap().to_owned()));
    }
    // Sessions know where the login came from (the per-source login limit keys on it).
    let session = platform
        .store()
        .find_user_token(&web::token_sha256(tokens["sue"].as_deref().unwrap()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(session.label, "login from 127.0.0.1");
    assert_eq!(session.user, "sue");

    // The siren sounds with no command.
    let (mut mqtt, rc) = Mqtt::connect(platform.mqtt_addr(), "siren-1", &secret);
    assert_eq!(rc, 0);
    mqtt.publish("city/public_safety/siren-1/state", r#"{"sounding": true}"#);

    let id = eventually("an incident", async || {
        let (_, page) = http(
            "GET",
            format!("{base}/api/v1/incidents"),
            tokens["olly"].clone(),
            None,
        )
        .await;
        page["items"][0]["id"].as_str().map(str::to_owned)
    })
    .await;
    let incident = eventually("the playbook's actions", async || {
        let (_, incident) = http(
            "GET",
            format!("{base}/api/v1/incidents/{id}"),
            tokens["olly"].clone(),
            None,
        )
        .await;
        (incident["actions"].as_array().map(Vec::len) == Some(2)
            && incident["actions"][0]["status"] != "approved")
            .then_some(incident)
    })
    .await;
    assert_eq!(incident["severity"], "critical");
    assert_eq!(incident["alerts"][0]["rule"], "actuation.uncommanded");
    // The gateway answered the uncommanded actuation itself; the playbook's silence_siren
    // finds that all-clear instead of sending a second one.
    let listed = actions(&incident);
    assert!(
        listed[0].starts_with("A1 silence_siren done all-clear sent through the gateway: "),
        "{listed:?}"
    );
    assert_eq!(listed[1], "A2 quarantine pending -");

    // Approval needs a supervisor.
    let approve = format!("{base}/api/v1/incidents/{id}/actions/A2/approve");
    let (status, _) = http("POST", approve.clone(), tokens["olly"].clone(), None).await;
    assert_eq!(status, 403);
    let (status, incident) = http("POST", approve.clone(), tokens["sue"].clone(), None).await;
    assert_eq!(status, 200, "{incident}");
    assert!(
        actions(&incident)[1].starts_with("A2 quarantine done quarantined"),
        "{incident}"
    );
    assert_eq!(incident["state"], "contained");
    assert_eq!(incident["owner"], "sue");
    assert!(
        incident["durations"]["time_to_contain_ms"]
            .as_i64()
            .unwrap()
            >= 0
    );
    let (status, again) = http("POST", approve, tokens["sue"].clone(), None).await;
    assert_eq!(status, 409, "{again}");

    // The quarantine refuses the device's credentials.
    let (_, device) = http(
        "GET",
        format!("{base}/api/v1/devices/siren-1"),
        admin.clone(),
        None,
    )
    .await;
    assert_eq!(device["status"], "quarantined");
    let (_, rc) = Mqtt::connect(platform.mqtt_addr(), "siren-1", &secret);
    assert_eq!(rc, 5, "not authorised");
    // The quarantine event is in the event store; the response actions are in the
    // hash-chained audit log.
    eventually("the quarantine event", async || {
        let (_, events) = http(
            "GET",
            format!("{base}/api/v1/events?device_id=siren-1&kind=security&limit=100"),
            admin.clone(),
            None,
        )
        .await;
        let items = events["items"].as_array()?.clone();
        items
            .iter()
            .any(|e| e["action"] == "quarantined")
            .then_some(())
    })
    .await;
    let audit = eventually("the audit records", async || {
        let (_, page) = http(
            "GET",
            format!("{base}/api/v1/audit?limit=1000"),
            admin.clone(),
            None,
        )
        .await;
        let records: Vec<serde_json::Value> = page["items"]
            .as_array()?
            .iter()
            .filter_map(|r| serde_json::from_str(r["body"].as_str()?).ok())
            .filter(|r: &serde_json::Value| r["subject"] == "siren-1")
            .collect();
        let has = |action: &str, outcome: &str| {
            records.iter().any(|r| {
                r["action"] == action
                    && r["outcome"]
                        .as_str()
                        .is_some_and(|o| o.starts_with(outcome))
            })
        };
        (has("response.quarantine", "approved") && has("response.silence_siren", "done"))
            .then_some(records)
    })
    .await;
    assert!(!audit.is_empty());
    let (_, chain) = http(
        "GET",
        format!("{base}/api/v1/audit/verify"),
        admin.clone(),
        None,
    )
    .await;
    assert_eq!(chain["broken"], serde_json::Value::Null, "{chain}");

    // An operator asks for a rotation; it waits for the supervisor, whose reply carries the
    // new secret once.
    let (status, incident) = http(
        "POST",
        format!("{base}/api/v1/incidents/{id}/actions"),
        tokens["olly"].clone(),
        Some(json!({"action": "rotate_credentials"})),
    )
    .await;
    assert_eq!(status, 201, "{incident}");
    assert_eq!(actions(&incident)[2], "A3 rotate_credentials pending -");
    let (status, incident) = http(
        "POST",
        format!("{base}/api/v1/incidents/{id}/actions/A3/approve"),
        tokens["sue"].clone(),
        None,
    )
    .await;
    assert_eq!(status, 200, "{incident}");
    let new_secret = incident["secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, secret);
    let (_, shown) = http(
        "GET",
        format!("{base}/api/v1/incidents/{id}"),
        tokens["olly"].clone(),
        None,
    )
    .await;
    assert!(
        !shown.to_string().contains(&new_secret),
        "the secret is shown once only"
    );
    let (status, reply) = http(
        "POST",
        format!("{base}/api/v1/incidents/{id}/actions"),
        tokens["sue"].clone(),
        Some(json!({"action": "rate_limit", "rate_limit": {"messages_per_s": 0.5, "burst": 2, "duration_s": 600}})),
    )
    .await;
    assert_eq!(status, 201);
    assert!(
        actions(&reply)[3]
            .starts_with("A4 rate_limit done rate limit 0.5 msg/s, burst 2, for 600 s (until ")
            && actions(&reply)[3]
                .ends_with("applied at the broker to 0 live session(s) and its later connections"),
        "{reply}"
    );
    // Bad parameters are refused and change nothing.
    for body in [
        json!({"action": "rate_limit", "rate_limit": {"messages_per_s": 0, "burst": 2, "duration_s": 600}}),
        json!({"action": "rate_limit", "rate_limit": {"messages_per_s": 1, "burst": 2, "duration_s": 0}}),
        json!({"action": "quarantine", "rate_limit": {"messages_per_s": 1, "burst": 2, "duration_s": 60}}),
        json!({"action": "rate_limit", "rate_limit": {"messages_per_s": 1, "burst": 2}}),
    ] {
        let (status, error) = http(
            "POST",
            format!("{base}/api/v1/incidents/{id}/actions"),
            tokens["sue"].clone(),
            Some(body.clone()),
        )
        .await;
        assert!(status == 400 || status == 422, "{body}: {status} {error}");
    }
    let (_, unchanged) = http(
        "GET",
        format!("{base}/api/v1/incidents/{id}"),
        tokens["olly"].clone(),
        None,
    )
    .await;
    assert_eq!(actions(&unchanged).len(), 4, "{unchanged}");

    // Once the siren is fixed a supervisor releases it and it may connect again.
    let (status, reply) = http(
        "POST",
        format!("{base}/api/v1/incidents/{id}/actions"),
        tokens["sue"].clone(),
        Some(json!({"action": "release"})),
    )
    .await;
    assert_eq!(status, 201);
    assert!(
        actions(&reply)[4].starts_with("A5 release done released: was quarantined"),
        "{reply}"
    );
    let (_, rc) = Mqtt::connect(platform.mqtt_addr(), "siren-1", &new_secret);
    assert_eq!(rc, 0, "the rotated secret works after the release");
    let (_, rc) = Mqtt::connect(platform.mqtt_addr(), "siren-1", &secret);
    assert_eq!(rc, 4, "the old secret does not");

    // Notes, resolution and closure, each attributed.
    let (status, _) = http(
        "POST",
        format!("{base}/api/v1/incidents/{id}/notes"),
        tokens["olly"].clone(),
        Some(json!({"text": "siren controller replaced"})),
    )
    .await;
    assert_eq!(status, 201);
    for state in ["resolved", "closed"] {
        let (status, reply) = http(
            "PATCH",
            format!("{base}/api/v1/incidents/{id}"),
            tokens["olly"].clone(),
            Some(json!({"state": state})),
        )
        .await;
        assert_eq!(status, 200, "{reply}");
    }
    let (status, reply) = http(
        "POST",
        format!("{base}/api/v1/incidents/{id}/notes"),
        tokens["olly"].clone(),
        Some(json!({"text": "too late"})),
    )
    .await;
    assert_eq!(status, 409, "{reply}");
    let (_, closed) = http(
        "GET",
        format!("{base}/api/v1/incidents/{id}"),
        tokens["olly"].clone(),
        None,
    )
    .await;
    assert_eq!(closed["state"], "closed");
    let timeline: Vec<String> = closed["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["actor"].as_str().unwrap(),
                e["type"].as_str().unwrap()
            )
        })
        .collect();
    for expected in [
        "correlator alert_added",
        "playbook:uncommanded-siren action",
        "sue action",
        "sue state_changed",
        "olly note",
        "olly state_changed",
    ] {
        assert!(
            timeline.iter().any(|t| t == expected),
            "{expected} missing from {timeline:?}"
        );
    }
    for key in [
        "time_to_detect_ms",
        "time_to_acknowledge_ms",
        "time_to_contain_ms",
        "time_to_resolve_ms",
    ] {
        assert!(closed["durations"][key].is_number(), "{key}: {closed}");
    }

    // The SIEM webhook saw the alert and the incident's changes.
    let received = eventually("webhook deliveries", async || {
        let got = hooks.lock().unwrap().clone();
        got.iter()
            .any(|b| b["type"] == "incident" && b["incident"]["state"] == "closed")
            .then_some(got)
    })
    .await;
    assert!(
        received
            .iter()
            .any(|b| b["type"] == "alert" && b["alert"]["rule"] == "actuation.uncommanded")
    );
    assert!(received.iter().any(|b| b["change"] == "incident.opened"));
    let (status, status_doc) = http(
        "GET",
        format!("{base}/api/v1/integrations/status"),
        admin.clone(),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(status_doc["sinks"][0]["name"], "soar");
    assert_eq!(status_doc["sinks"][0]["failed"], 0);

    platform.shutdown().await.unwrap();

    // After a restart the closed incident is still there and numbering continues.
    let config = Config::load(&text, &env).unwrap();
    let platform = Platform::start(config).await.unwrap();
    let incident = platform
        .store()
        .get_incident(&model::IncidentId(id.clone()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(incident.state, model::IncidentState::Closed);
    assert_eq!(platform.store().max_incident_seq().await.unwrap(), 1);
    platform.shutdown().await.unwrap();
}

fn count_telemetry(events: &[model::Event]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e.kind, model::EventKind::Telemetry { .. }))
        .count()
}

async fn stored_telemetry(platform: &Platform, device: &str, since: model::Timestamp) -> usize {
    let events = platform
        .store()
        .list_events(&store::EventQuery {
            device_id: Some(model::DeviceId::new(device).unwrap()),
            kind: Some("telemetry".into()),
            since: Some(since),
            limit: 10_000,
            ..store::EventQuery::default()
        })
        .await
        .unwrap();
    count_telemetry(&events)
}

/// Publishes `n` readings `gap` apart from a blocking thread; returns how long it took.
async fn publish_paced(mut mqtt: Mqtt, topic: String, n: usize, gap: Duration) -> (Mqtt, Duration) {
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        for i in 0..n {
            mqtt.publish(&topic, &format!(r#"{{"energy_kwh": {i}}}"#));
            std::thread::sleep(gap);
        }
        (mqtt, started.elapsed())
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_meter_is_rate_limited_by_playbook_across_a_restart_until_lifted() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"
version = 1
data_dir = "{data}"
[http]
listen = "127.0.0.1:0"
[ingest.mqtt]
listen = "127.0.0.1:0"
[detect.rate]
messages_per_device = 25
message_window_s = 10
[[playbooks]]
name = "message-flood"
rules = ["rate.message_flood"]
actions = [{{ action = "rate_limit", mode = "auto", rate_limit = {{ messages_per_s = 2.0, burst = 4, duration_s = 600 }} }}]
"#,
        data = dir.path().display()
    );
    let env = std::collections::HashMap::new();
    let platform = Platform::start(Config::load(&text, &env).unwrap())
        .await
        .unwrap();
    let base = format!("http://{}", platform.http_addr());
    let admin = Some(platform.admin_token().to_owned());
    let mut secrets = std::collections::HashMap::new();
    for id in ["meter-1", "meter-2"] {
        let request: web::NewDevice = serde_json::from_value(json!({
            "id": id, "class": "smart_meter", "zone": "east", "owner": "energy", "generate_secret": true
        }))
        .unwrap();
        let (device, secret) =
            crate::platform::new_device(request, model::Timestamp::now()).unwrap();
        secrets.insert(id, secret.unwrap());
        platform.register_devices(vec![device]).await.unwrap();
    }
    let topic = |id: &str| format!("city/energy/{id}/telemetry");

    // meter-1 floods; detection sees it and the playbook limits its live session at once.
    let (meter1, rc) = Mqtt::connect(platform.mqtt_addr(), "meter-1", &secrets["meter-1"]);
    assert_eq!(rc, 0);
    let (meter2, rc) = Mqtt::connect(platform.mqtt_addr(), "meter-2", &secrets["meter-2"]);
    assert_eq!(rc, 0);
    let (meter1, _) = publish_paced(meter1, topic("meter-1"), 30, Duration::from_millis(2)).await;
    let incident = eventually("the rate limit applied", async || {
        let (_, page) = http(
            "GET",
            format!("{base}/api/v1/incidents"),
            admin.clone(),
            None,
        )
        .await;
        let id = page["items"][0]["id"].as_str()?.to_owned();
        let (_, incident) = http(
            "GET",
            format!("{base}/api/v1/incidents/{id}"),
            admin.clone(),
            None,
        )
        .await;
        (incident["actions"][0]["status"] == "done").then_some(incident)
    })
    .await;
    let id = incident["id"].as_str().unwrap().to_owned();
    let listed = actions(&incident);
    assert!(
        listed[0].starts_with("A1 rate_limit done rate limit 2 msg/s, burst 4, for 600 s")
            && listed[0].contains("to 1 live session(s)"),
        "{listed:?}"
    );
    assert_eq!(incident["actions"][0]["rate_limit"]["burst"], 4);

    // The limit holds on meter-1's session (20 a second sent, at most 2 a second and the
    // burst pass); meter-2, sending the same (below the flood threshold), is untouched.
    let since = model::Timestamp::now();
    let (sent1, sent2) = tokio::join!(
        publish_paced(meter1, topic("meter-1"), 20, Duration::from_millis(50)),
        publish_paced(meter2, topic("meter-2"), 20, Duration::from_millis(50)),
    );
    let (meter1, took) = sent1;
    let (meter2, _) = sent2;
    eventually("meter-2's 20 readings stored", async || {
        (stored_telemetry(&platform, "meter-2", since).await == 20).then_some(())
    })
    .await;
    let allowed = 4 + (took.as_secs_f64() * 2.0).ceil() as usize + 1;
    let passed = stored_telemetry(&platform, "meter-1", since).await;
    let security: Vec<String> = platform
        .store()
        .list_events(&store::EventQuery {
            device_id: Some(model::DeviceId::new("meter-1").unwrap()),
            kind: Some("security".into()),
            limit: 100,
            ..store::EventQuery::default()
        })
        .await
        .unwrap()
        .iter()
        .map(|e| format!("{:?}", e.kind))
        .collect();
    assert!(
        passed >= 1 && passed <= allowed,
        "meter-1: {passed} of 20 passed, at most {allowed} allowed; {security:#?}"
    );
    let (_, metrics) = http("GET", format!("{base}/metrics"), admin.clone(), None).await;
    let dropped: u64 = metrics
        .as_str()
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("mqtt_rate_limited_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        dropped >= (20 - passed) as u64,
        "{dropped} dropped, {passed} passed"
    );

    // The drops are events detection reads: an alert on the same device joins the incident.
    eventually("the rate-limited alert on the timeline", async || {
        let (_, incident) = http(
            "GET",
            format!("{base}/api/v1/incidents/{id}"),
            admin.clone(),
            None,
        )
        .await;
        incident["timeline"]
            .as_array()?
            .iter()
            .any(|e| e["type"] == "alert_added" && e["rule"] == "mqtt.rate_limited")
            .then_some(())
    })
    .await;
    drop((meter1, meter2));

    // After a restart the limit holds on meter-1's next connection.
    platform.shutdown().await.unwrap();
    let platform = Platform::start(Config::load(&text, &env).unwrap())
        .await
        .unwrap();
    let base = format!("http://{}", platform.http_addr());
    let admin = Some(platform.admin_token().to_owned());
    let (meter1, rc) = Mqtt::connect(platform.mqtt_addr(), "meter-1", &secrets["meter-1"]);
    assert_eq!(rc, 0);
    let since = model::Timestamp::now();
    let (meter1, took) =
        publish_paced(meter1, topic("meter-1"), 20, Duration::from_millis(50)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let passed = stored_telemetry(&platform, "meter-1", since).await;
    let allowed = 4 + (took.as_secs_f64() * 2.0).ceil() as usize + 1;
    assert!(
        passed <= allowed,
        "after the restart {passed} of 20 passed, at most {allowed} allowed"
    );

    // A supervisor (here the admin) lifts it: every reading passes again.
    let (status, reply) = http(
        "POST",
        format!("{base}/api/v1/incidents/{id}/actions"),
        admin.clone(),
        Some(json!({"action": "lift_rate_limit", "device_id": "meter-1"})),
    )
    .await;
    assert_eq!(status, 201, "{reply}");
    let listed = actions(&reply);
    assert!(
        listed
            .last()
            .unwrap()
            .contains("lift_rate_limit done rate limit lifted (was 2 msg/s, burst 4"),
        "{listed:?}"
    );
    let since = model::Timestamp::now();
    let (_meter1, _) = publish_paced(meter1, topic("meter-1"), 20, Duration::from_millis(50)).await;
    eventually("all 20 readings stored after the lift", async || {
        (stored_telemetry(&platform, "meter-1", since).await == 20).then_some(())
    })
    .await;
    // Nothing left to lift.
    let (_, reply) = http(
        "POST",
        format!("{base}/api/v1/incidents/{id}/actions"),
        admin.clone(),
        Some(json!({"action": "lift_rate_limit", "device_id": "meter-1"})),
    )
    .await;
    assert!(
        actions(&reply)
            .last()
            .unwrap()
            .contains("failed meter-1 has no rate limit to lift"),
        "{reply}"
    );
    platform.shutdown().await.unwrap();
}

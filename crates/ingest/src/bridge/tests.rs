//! Bridge mode, pure parts: config validation, broker URLs, the message -> event mapping
//! (same as the embedded broker, identical on redelivery) and Mosquitto's log lines.

use std::fmt::Write;

use expect_test::{Expect, expect};
use model::{Credential, Device, DeviceClass, DeviceId, DeviceStatus, EventKind, Timestamp};
use proptest::prelude::*;

use super::map::{Skip, to_event};
use super::mosquitto::{LogCorrelator, parse_line};
use super::{BridgeConfig, BrokerUrl};

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
        addresses: Vec::new(),
        location: None,
        credentials: vec![Credential::Secret { hash: "x".into() }],
        status: DeviceStatus::Active,
        created_at: Timestamp::from_millis(0),
    }
}

#[test]
fn config_is_validated() {
    let check = |toml_text: &str, expect: Expect| {
        let result = toml_from(toml_text).and_then(|c: BridgeConfig| c.validate());
        expect.assert_eq(&match result {
            Ok(()) => "ok".to_owned(),
            Err(e) => e,
        });
    };
    check("", expect!["ok"]);
    check(
        r#"brokers = []"#,
        expect!["ingest.bridge.brokers must name at least one broker"],
    );
    check(
        r#"brokers = ["tcp://h:1"]"#,
        expect![[r#"ingest.bridge.brokers: "tcp://h:1" must start with mqtt:// or mqtts://"#]],
    );
    check(
        r#"brokers = ["mqtt://u:p@h:1"]"#,
        expect![[
            r#"ingest.bridge.brokers: "mqtt://u:p@h:1" must be scheme://host[:port] (no user, path or query; the password comes from password_file or password_env)"#
        ]],
    );
    check(
        r#"brokers = ["mqtts://broker.city:8883"]"#,
        expect![
            "ingest.bridge.ca_file is required for mqtts://broker.city:8883 (the CA the broker's certificate chains to)"
        ],
    );
    check(
        r#"brokers = ["mqtts://a", "mqtt://b:1884"]
           ca_file = "/etc/ca.pem""#,
        expect!["ok"],
    );
    check(
        r#"password_env = "X""#,
        expect!["ingest.bridge.username is required with a password"],
    );
    check(
        r#"username = "u"
           password_env = "X"
           password_file = "/f""#,
        expect!["ingest.bridge.password_file and ingest.bridge.password_env are exclusive"],
    );
    check(
        r#"qos = 0"#,
        expect![
            "ingest.bridge.qos must be 1 (at-least-once, acknowledged after the bus took the event)"
        ],
    );
    check(
        r#"group = "a/b""#,
        expect!["ingest.bridge.group must not contain + # /"],
    );
    check(
        r#"topics = ["city/#/x"]"#,
        expect![[
            r#"ingest.bridge.topics: "city/#/x" is not a device topic filter (e.g. city/# or city/water/#)"#
        ]],
    );
    check(
        r#"topics = ["$SYS/#"]"#,
        expect![[
            r#"ingest.bridge.topics: "$SYS/#" is not a device topic filter (e.g. city/# or city/water/#)"#
        ]],
    );
    check(
        r#"client_id = "a/b""#,
        expect!["ingest.bridge.client_id must be 1 to 200 characters without + # /"],
    );
    check(
        r#"password = "inline""#,
        expect![[
            r#"unknown field `password`, expected one of `brokers`, `ca_file`, `client_id`, `username`, `password_file`, `password_env`, `group`, `topics`, `qos`, `security_signals`, `keep_alive_s`, `reconnect_max_ms`, `max_packet_bytes`, `batch_max`"#
        ]],
    );
}

fn toml_from(text: &str) -> Result<BridgeConfig, String> {
    serde_json::to_value(toml_table(text)?)
        .and_then(serde_json::from_value)
        .map_err(|e| e.to_string())
}

/// A tiny TOML subset (key = string | number | array of strings) so this crate needs no toml.
fn toml_table(text: &str) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    let mut map = serde_json::Map::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (k, v) = line.split_once(" = ").ok_or("bad line")?;
        let v: serde_json::Value = serde_json::from_str(v).map_err(|e| e.to_string())?;
        map.insert(k.to_owned(), v);
    }
    Ok(map)
}

#[test]
fn broker_urls() {
    let check = |url: &str, expect: Expect| {
        expect.assert_eq(&format!("{:?}", BrokerUrl::parse(url)));
    };
    check(
        "mqtt://127.0.0.1:1883",
        expect![[r#"Ok(BrokerUrl { tls: false, host: "127.0.0.1", port: 1883 })"#]],
    );
    check(
        "mqtt://broker",
        expect![[r#"Ok(BrokerUrl { tls: false, host: "broker", port: 1883 })"#]],
    );
    check(
        "mqtts://broker/",
        expect![[r#"Ok(BrokerUrl { tls: true, host: "broker", port: 8883 })"#]],
    );
    check(
        "mqtts://[::1]:8884",
        expect![[r#"Ok(BrokerUrl { tls: true, host: "::1", port: 8884 })"#]],
    );
    check(
        "mqtt://h:0",
        expect![[r#"Err("\"mqtt://h:0\": missing host or port")"#]],
    );
    check(
        "mqtt://h:x",
        expect![[r#"Err("\"mqtt://h:x\": bad port")"#]],
    );
    check(
        "mqtt://h/p",
        expect![[
            r#"Err("\"mqtt://h/p\" must be scheme://host[:port] (no user, path or query; the password comes from password_file or password_env)")"#
        ]],
    );
}

#[test]
fn subscriptions_are_shared_unless_the_group_is_empty() {
    let mut c = BridgeConfig {
        topics: vec!["city/#".into(), "city/water/+/telemetry".into()],
        ..BridgeConfig::default()
    };
    expect![[r#"["$share/citysec/city/#", "$share/citysec/city/water/+/telemetry"]"#]]
        .assert_eq(&format!("{:?}", c.subscriptions()));
    c.group.clear();
    expect![[r#"["city/#", "city/water/+/telemetry"]"#]]
        .assert_eq(&format!("{:?}", c.subscriptions()));
}

#[test]
fn messages_map_like_the_embedded_broker() {
    let pump = device("pump-7", DeviceClass::Pump);
    let siren = device("siren-1", DeviceClass::Siren);
    let received = Timestamp::parse_rfc3339("2026-12-02T10:00:00Z").unwrap();
    let check = |topic: &str, payload: &str, expect: Expect| {
        let dev = super::map::device_of(topic)
            .and_then(|id| [&pump, &siren].into_iter().find(|d| d.id.as_str() == id));
        let out = match to_event(topic, payload.as_bytes(), dev, received) {
            Ok(e) => serde_json::to_string(&e).unwrap(),
            Err(skip) => format!("skip: {skip}"),
        };
        expect.assert_eq(&out);
    };
    check(
        "city/water/pump-7/telemetry",
        r#"{"ts":"2026-12-02T09:59:58Z","flow_lps":3.5,"running":true}"#,
        expect![[
            r#"{"ts":"2026-12-02T09:59:58.000Z","device_id":"pump-7","sector":"water","kind":"telemetry","readings":[{"name":"flow_lps","value":3.5},{"name":"running","value":true}]}"#
        ]],
    );
    check(
        "city/public_safety/siren-1/state",
        r#"{"sounding":false}"#,
        expect![[
            r#"{"ts":"2026-12-02T10:00:00.000Z","device_id":"siren-1","sector":"public_safety","kind":"state","readings":[{"name":"sounding","value":false}]}"#
        ]],
    );
    check(
        "city/public_safety/siren-1/ack",
        r#"{"id":"cmd-1","ok":true}"#,
        expect![[
            r#"{"ts":"2026-12-02T10:00:00.000Z","device_id":"siren-1","sector":"public_safety","kind":"state","readings":[{"name":"ack.id","value":"cmd-1"},{"name":"ack.ok","value":true}]}"#
        ]],
    );
    check(
        "city/public_safety/siren-1/cmd",
        "{}",
        expect!["skip: command topic"],
    );
    check(
        "city/water/pump-9/telemetry",
        "{}",
        expect!["skip: unknown device"],
    );
    check(
        "city/energy/pump-7/telemetry",
        "{}",
        expect!["skip: device registered in another sector"],
    );
    check(
        "city/water/pump-7/telemetry",
        "not json",
        expect!["skip: payload invalid: payload is not json"],
    );
    check(
        "city/water/pump-7/other",
        "{}",
        expect!["skip: not a device topic"],
    );
    check("building/7/hvac", "{}", expect!["skip: not a device topic"]);
}

/// A broker redelivery (after an ingest process died before its PUBACK) arrives later: the
/// event must be the same document, or the store would keep it twice.
#[test]
fn a_redelivered_message_is_the_identical_event() {
    let pump = device("pump-7", DeviceClass::Pump);
    let first = Timestamp::parse_rfc3339("2026-12-02T10:00:00Z").unwrap();
    let later = first.saturating_add_ms(45_000);
    let same = |payload: &str| {
        let a = to_event(
            "city/water/pump-7/telemetry",
            payload.as_bytes(),
            Some(&pump),
            first,
        );
        let b = to_event(
            "city/water/pump-7/telemetry",
            payload.as_bytes(),
            Some(&pump),
            later,
        );
        serde_json::to_string(&a.unwrap()).unwrap() == serde_json::to_string(&b.unwrap()).unwrap()
    };
    // The simulator's JSON (RFC 3339 or epoch milliseconds) and SenML with an absolute time.
    assert!(same(r#"{"ts":"2026-12-02T09:59:59.250Z","flow_lps":3.5}"#));
    assert!(same(r#"{"ts":1796205599250,"flow_lps":3.5}"#));
    assert!(same(
        r#"[{"bn":"urn:dev:id:pump-7:","bt":1796205599.25,"n":"energy","u":"kWh","v":1.5}]"#
    ));
    // FIXME(documented limit, docs/bridge.md): without a device time the event takes the
    // receive time, so a redelivery is a second event.
    assert!(!same(r#"{"flow_lps":3.5}"#));
    assert!(!same(r#"[{"n":"energy","v":1.5,"t":-1}]"#));
}

#[test]
fn unknown_device_and_payload_never_panic() {
    let pump = device("pump-7", DeviceClass::Pump);
    for payload in ["", "[", "[1]", "null", "{\"a\":[[[[[]]]]]}"] {
        let r = to_event(
            "city/water/pump-7/telemetry",
            payload.as_bytes(),
            Some(&pump),
            Timestamp::from_millis(0),
        );
        assert!(
            matches!(r, Ok(_) | Err(Skip::Payload(_))),
            "{payload}: {r:?}"
        );
    }
}

/// Real lines: Debian's mosquitto 2.0.11 with `log_dest topic` (run for this test's table,
/// 2026-12-02), and formats from Mosquitto's `loop.c`/`handle_connect.c` (1.6 and 2.0).
const LOG: &str = "\
1796204168: New connection from 127.0.0.1:39370 on port 18831.
1796204168: Client <unknown> disconnected, not authorised.
1796204168: New connection from 127.0.0.1:39402 on port 18831.
1796204168: New client connected from 127.0.0.1:39402 as pump-7 (p2, c1, k60, u'pump-7').
1796204168: Client pump-7 disconnected.
1796204169: New connection from 10.1.2.3:50000 on port 1883.
1796204169: New connection from 10.9.9.9:40000 on port 1883.
1796204169: New client connected from 10.9.9.9:40000 as sensor 9 (x) (p5, c0, k30, u'sensor-9').
1796204169: Client <unknown> disconnected, not authorised.
1796204170: New connection from 127.0.0.1:39254 on port 18831.
1796204170: Client <unknown> disconnected due to protocol error.
1796204171: Client pump-7 already connected, closing old connection.
1796204171: New client connected from [::1]:41000 as anon-1 (p2, c1, k60).
1796204172: Client anon-1 has exceeded timeout, disconnecting.
1796204172: Client sensor 9 (x) disconnected due to malformed packet.
1796204173: Client x closed its connection.
1796204173: Socket error on client y, disconnecting.
1796204173: Client z disconnected: Connection reset by peer.
1796204173: Bad socket read/write on client w: Connection lost
1796204173: Client v disconnected due to oversize payload.
1796204173: Client u been disconnected by administrative action.
1796204150: New connection from 192.0.2.66:1000 on port 1883.
1796204173: New connection from 10.7.7.7:7000 on port 1883.
1796204173: Client <unknown> disconnected, not authorised.
1796204174: mosquitto version 2.0.11 running
1796204174: Saving in-memory database to /var/lib/mosquitto/mosquitto.db.
Client t disconnected, not authorised.
";

#[test]
fn mosquitto_log_lines_become_security_events() {
    let received = Timestamp::from_millis(1_796_204_170_000);
    let mut log = LogCorrelator::new();
    let mut out = String::new();
    for line in LOG.lines() {
        match log.on_line(line, received) {
            Some(signal) => {
                let EventKind::Security(s) = &signal.event.kind else {
                    unreachable!()
                };
                let _ = writeln!(
                    out,
                    "{} {} claimed={} client={} user={} peer={} | {}",
                    signal.event.ts.to_rfc3339(),
                    s.action,
                    signal.claimed.as_deref().unwrap_or("-"),
                    s.client_id.as_deref().unwrap_or("-"),
                    s.username.as_deref().unwrap_or("-"),
                    s.peer.as_deref().unwrap_or("-"),
                    s.reason.as_deref().unwrap_or("")
                );
            }
            None if parse_line(line).is_none() => {
                let _ = writeln!(out, "(not a connection message) {line}");
            }
            None => {}
        }
    }
    let _ = writeln!(out, "unrecognised: {}", log.unrecognised);
    expect![[r#"
        2026-12-02T09:36:08.000Z auth_failure claimed=- client=- user=- peer=127.0.0.1:39370 | not authorised (mosquitto logs no username for a refused login)
        2026-12-02T09:36:08.000Z connect_accepted claimed=pump-7 client=pump-7 user=pump-7 peer=127.0.0.1:39402 | mqtt 3.1.1 (mosquitto log)
        2026-12-02T09:36:08.000Z disconnect claimed=pump-7 client=pump-7 user=pump-7 peer=127.0.0.1:39402 | client disconnect
        2026-12-02T09:36:09.000Z connect_accepted claimed=sensor-9 client=sensor 9 (x) user=sensor-9 peer=10.9.9.9:40000 | mqtt 5.0 (mosquitto log)
        2026-12-02T09:36:09.000Z auth_failure claimed=- client=- user=- peer=10.1.2.3:50000 | not authorised (mosquitto logs no username for a refused login)
        2026-12-02T09:36:10.000Z malformed_packet claimed=- client=- user=- peer=127.0.0.1:39254 | Client <unknown> disconnected due to protocol error.
        2026-12-02T09:36:11.000Z client_id_takeover claimed=pump-7 client=pump-7 user=- peer=- | replaced live session (mosquitto: already connected, closing old connection)
        2026-12-02T09:36:11.000Z connect_accepted claimed=anon-1 client=anon-1 user=- peer=[::1]:41000 | mqtt 3.1.1 (mosquitto log)
        2026-12-02T09:36:12.000Z disconnect claimed=anon-1 client=anon-1 user=- peer=[::1]:41000 | keep-alive timeout
        2026-12-02T09:36:12.000Z malformed_packet claimed=sensor-9 client=sensor 9 (x) user=sensor-9 peer=10.9.9.9:40000 | Client sensor 9 (x) disconnected due to malformed packet.
        2026-12-02T09:36:13.000Z disconnect claimed=x client=x user=- peer=- | connection closed by peer
        2026-12-02T09:36:13.000Z disconnect claimed=y client=y user=- peer=- | Socket error on client y, disconnecting.
        2026-12-02T09:36:13.000Z disconnect claimed=z client=z user=- peer=- | Client z disconnected: Connection reset by peer.
        2026-12-02T09:36:13.000Z disconnect claimed=w client=w user=- peer=- | Bad socket read/write on client w: Connection lost
        2026-12-02T09:36:13.000Z oversized_payload claimed=v client=v user=- peer=- | Client v disconnected due to oversize payload.
        2026-12-02T09:36:13.000Z disconnect claimed=u client=u user=- peer=- | disconnected by administrative action
        2026-12-02T09:36:13.000Z auth_failure claimed=- client=- user=- peer=10.7.7.7:7000 | not authorised (mosquitto logs no username for a refused login)
        (not a connection message) 1796204174: mosquitto version 2.0.11 running
        (not a connection message) 1796204174: Saving in-memory database to /var/lib/mosquitto/mosquitto.db.
        2026-12-02T09:36:10.000Z auth_failure claimed=t client=t user=- peer=- | not authorised (mosquitto logs no username for a refused login)
        unrecognised: 2
    "#]]
    .assert_eq(&out);
}

#[test]
fn a_log_line_timestamp_far_from_now_is_not_believed() {
    let received = Timestamp::from_millis(1_796_204_170_000);
    let mut log = LogCorrelator::new();
    let s = log.on_line("12: Client a disconnected.", received).unwrap();
    assert_eq!(s.event.ts, received);
}

proptest! {
    #[test]
    fn arbitrary_log_lines_never_panic(line in ".{0,200}") {
        let mut log = LogCorrelator::new();
        let _ = log.on_line(&line, Timestamp::from_millis(0));
        let _ = parse_line(&line);
    }

    #[test]
    fn near_miss_log_lines_never_panic(
        prefix in prop::sample::select(vec![
            "New connection from ", "New client connected from ", "Client ",
            "Socket error on client ", "Bad socket read/write on client ", "1: ", "",
        ]),
        middle in "[ -~]{0,40}",
        suffix in prop::sample::select(vec![
            " as ", " (p2, c1, k60, u'", "').", " (p", ", u'", " on port ", " disconnected.",
            " disconnected due to ", " disconnected: ", ", disconnecting.", ": ", "",
        ]),
        tail in "[ -~]{0,20}",
    ) {
        let line = format!("{prefix}{middle}{suffix}{tail}");
        let mut log = LogCorrelator::new();
        for _ in 0..2 {
            let _ = log.on_line(&line, Timestamp::from_millis(0));
        }
    }
}

//! Data-driven tests: a timeline of events goes in, the rendered alerts come out.
//!
//! Fixture lines (time is `@HH:MM:SS` from the epoch):
//! - `device <id> <class> <zone>` registers a device;
//! - `@t auth_failure <device> from <ip:port>` a bad secret for a known device;
//! - `@t unknown <claimed-id> from <ip:port>` a connect naming no registered device;
//! - `@t state <device> <name>=<value>` actuator state;
//! - `@t command <device> <action>` an authorised command;
//! - `@t tick` advances time (evicts idle state).

use expect_test::{Expect, expect};
use model::{
    DeviceClass, DeviceId, Event, EventKind, Reading, SecurityEvent, SecurityEventKind, Timestamp,
    Value,
};

use crate::{DetectConfig, DeviceMeta, Engine};

fn parse_time(t: &str) -> Timestamp {
    let t = t.trim_start_matches('@');
    let parts: Vec<i64> = t.split(':').map(|p| p.parse().expect("time")).collect();
    Timestamp::from_millis((parts[0] * 3600 + parts[1] * 60 + parts[2]) * 1000)
}

fn security(action: SecurityEventKind, device: Option<&str>, user: &str, peer: &str) -> EventKind {
    let _ = device;
    EventKind::Security(SecurityEvent {
        action,
        client_id: Some(user.to_owned()),
        username: Some(user.to_owned()),
        peer: Some(peer.to_owned()),
        topic: None,
        reason: Some(
            match action {
                SecurityEventKind::AuthFailure => "bad secret",
                _ => "unknown device",
            }
            .to_owned(),
        ),
    })
}

fn value(v: &str) -> Value {
    match v {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        other => other
            .parse::<f64>()
            .map(Value::Number)
            .unwrap_or_else(|_| Value::Text(other.to_owned())),
    }
}

fn readings(words: &[&str]) -> Vec<Reading> {
    words
        .iter()
        .map(|w| {
            let (name, v) = w.split_once('=').expect("name=value");
            Reading {
                name: name.to_owned(),
                value: value(v),
                unit: None,
            }
        })
        .collect()
}

fn endpoint(s: &str) -> (std::net::IpAddr, u16) {
    let (ip, port) = s.rsplit_once(':').expect("ip:port");
    (ip.parse().expect("ip"), port.parse().expect("port"))
}

fn device_event(ts: Timestamp, device: &str, kind: EventKind) -> Event {
    Event {
        ts,
        device_id: Some(DeviceId::new(device).unwrap()),
        sector: None,
        kind,
    }
}

/// One event line (after its time) into an event; `None` for control verbs it applied.
fn event_of(engine: &mut Engine, ts: Timestamp, words: &[&str]) -> Option<Event> {
    Some(match words[0] {
        "tick" => {
            engine.tick(ts);
            return None;
        }
        "learn" => {
            engine.learn(words[1], words[2]);
            return None;
        }
        "mute" => {
            engine.mute(words[1], words[2], None);
            return None;
        }
        "auth_failure" => device_event(
            ts,
            words[1],
            security(
                SecurityEventKind::AuthFailure,
                Some(words[1]),
                words[1],
                words[3],
            ),
        ),
        "unknown" => Event {
            ts,
            device_id: None,
            sector: None,
            kind: security(SecurityEventKind::ConnectRefused, None, words[1], words[3]),
        },
        "state" => device_event(
            ts,
            words[1],
            EventKind::State {
                readings: readings(&words[2..]),
            },
        ),
        "telemetry" => device_event(
            ts,
            words[1],
            EventKind::Telemetry {
                readings: readings(&words[2..]),
            },
        ),
        "command" => device_event(
            ts,
            words[1],
            EventKind::Command {
                action: words[2].to_owned(),
                actor: "test".to_owned(),
            },
        ),
        // sec <action> <device|-> from <peer> [topic=...] [reason=words_with_underscores]
        "sec" => {
            let action: SecurityEventKind =
                serde_json::from_value(serde_json::Value::String(words[1].to_owned()))
                    .expect("action");
            let mut topic = None;
            let mut reason = None;
            for w in &words[5..] {
                if let Some(t) = w.strip_prefix("topic=") {
                    topic = Some(t.to_owned());
                } else if let Some(r) = w.strip_prefix("reason=") {
                    reason = Some(r.replace('_', " "));
                }
            }
            Event {
                ts,
                device_id: (words[2] != "-").then(|| DeviceId::new(words[2]).unwrap()),
                sector: None,
                kind: EventKind::Security(SecurityEvent {
                    action,
                    client_id: Some(words[2].to_owned()),
                    username: Some(words[2].to_owned()),
                    peer: Some(words[4].to_owned()),
                    topic,
                    reason,
                }),
            }
        }
        // flow <src:port> > <dst:port> <tcp|udp|icmp> [bytes=N] [packets=N]
        "flow" => {
            let (src, src_port) = endpoint(words[1]);
            let (dst, dst_port) = endpoint(words[3]);
            let protocol = match words[4] {
                "tcp" => model::proto::TCP,
                "udp" => model::proto::UDP,
                _ => model::proto::ICMP,
            };
            let mut bytes = 1_000;
            let mut packets = 10;
            for w in &words[5..] {
                if let Some(b) = w.strip_prefix("bytes=") {
                    bytes = b.parse().unwrap();
                } else if let Some(p) = w.strip_prefix("packets=") {
                    packets = p.parse().unwrap();
                }
            }
            Event {
                ts,
                device_id: None,
                sector: None,
                kind: EventKind::Flow(model::FlowRecord {
                    src,
                    dst,
                    src_port,
                    dst_port,
                    protocol,
                    bytes,
                    packets,
                    tcp_flags: 0,
                    start: ts.saturating_sub_ms(1_000),
                    end: ts,
                    exporter: None,
                    peer_device: None,
                }),
            }
        }
        other => panic!("unknown fixture verb {other}"),
    })
}

/// Runs a fixture. Header lines configure the engine before the first event:
/// - `config <toml>` a line of the `[detect]` section, e.g. `config baseline.learning_s = 60`;
/// - `zone <name> <cidr,...> [allow_unregistered]`, `conduit <from> <to> <proto> <port,...|any>`,
///   `update_server <cidr>`;
/// - `device <id> <class> <zone> [ip=a,b] [fw=x] [cred=y]`;
/// - `indicator <id> <source> <pattern...>`.
///
/// Event lines are `@HH:MM:SS <verb> ...`, or `@HH:MM:SS repeat <n> <step_s> <verb> ...`
/// where `{i}` in the verb line is the repetition's index.
fn run(config: DetectConfig, fixture: &str) -> String {
    let mut tweaks = String::new();
    let mut zones = Vec::new();
    let mut conduits = Vec::new();
    let mut update_servers = Vec::new();
    let mut engine: Option<Engine> = None;
    let mut built: Option<DetectConfig> = None;
    let mut registrations: Vec<String> = Vec::new();
    let mut rendered = String::new();
    for line in fixture.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let words: Vec<&str> = line.split_whitespace().collect();
        if !words[0].starts_with('@') && engine.is_none() {
            match words[0] {
                "config" => {
                    tweaks.push_str(line.trim_start_matches("config").trim());
                    tweaks.push('\n');
                    continue;
                }
                "zone" => {
                    zones.push(crate::ZoneConfig {
                        name: words[1].to_owned(),
                        cidrs: words[2].split(',').map(str::to_owned).collect(),
                        allow_unregistered: words.get(3) == Some(&"allow_unregistered"),
                    });
                    continue;
                }
                "conduit" => {
                    conduits.push(crate::ConduitConfig {
                        name: String::new(),
                        from: words[1].to_owned(),
                        to: words[2].to_owned(),
                        protocol: words[3].to_owned(),
                        ports: if words[4] == "any" {
                            Vec::new()
                        } else {
                            words[4].split(',').map(|p| p.parse().unwrap()).collect()
                        },
                    });
                    continue;
                }
                "update_server" => {
                    update_servers.push(words[1].to_owned());
                    continue;
                }
                _ => {}
            }
        }
        let engine = engine.get_or_insert_with(|| {
            let tweaks: toml::Table = toml::from_str(&tweaks).expect("config lines");
            let mut value = toml::Value::try_from(&config).unwrap();
            merge(&mut value, toml::Value::Table(tweaks));
            let mut config: DetectConfig = value.try_into().expect("config tweaks");
            config.zones = zones.clone();
            config.conduits = conduits.clone();
            config.firmware.update_servers = update_servers.clone();
            built = Some(config.clone());
            let engine = Engine::new(config);
            assert!(
                engine.diagnostics().is_empty(),
                "{:?}",
                engine.diagnostics()
            );
            engine
        });
        if words[0] == "device" || words[0] == "indicator" {
            setup(engine, &words, &mut rendered);
            registrations.push(line.to_owned());
            continue;
        }
        // `@t handover`: another engine (same config and registrations) takes over from
        // the learned state this one leaves (through its JSON form); `@t restart`: another
        // engine starts from nothing.
        if matches!(words.get(1), Some(&"handover") | Some(&"restart")) {
            let mut next = Engine::new(built.clone().expect("built"));
            for line in &registrations {
                let ws: Vec<&str> = line.split_whitespace().collect();
                setup(&mut next, &ws, &mut rendered);
            }
            if words[1] == "handover" {
                let json = serde_json::to_string(&engine.learned(|_| true)).unwrap();
                let learned: crate::Learned = serde_json::from_str(&json).unwrap();
                let restored = next.restore_learned(&learned, |_| true).unwrap();
                rendered.push_str(&format!(
                    "{} handover: {} devices, {} class baselines, {} totals, {} flow models ({} bytes)\n",
                    words[0],
                    restored.devices,
                    restored.class_baselines,
                    restored.totals,
                    restored.flow_models,
                    json.len()
                ));
            } else {
                rendered.push_str(&format!("{} restart\n", words[0]));
            }
            *engine = next;
            continue;
        }
        let ts = parse_time(words[0]);
        let mut events = Vec::new();
        if words[1] == "repeat" {
            let n: i64 = words[2].parse().unwrap();
            let step: f64 = words[3].parse().unwrap();
            let rest = words[4..].join(" ");
            for i in 0..n {
                let line = rest.replace("{i}", &i.to_string());
                let ws: Vec<&str> = line.split_whitespace().collect();
                let at = ts.saturating_add_ms((i as f64 * step * 1000.0) as i64);
                if let Some(e) = event_of(engine, at, &ws) {
                    events.push(e);
                }
            }
        } else if let Some(e) = event_of(engine, ts, &words[1..]) {
            events.push(e);
        }
        for event in events {
            let mut out = Vec::new();
            engine.process(&event, &mut out);
            let ms = event.ts.as_millis();
            for alert in out {
                rendered.push_str(&format!(
                    "@{:02}:{:02}:{:02} {} {} count={} device={} source={} zone={} key={} :: {}\n",
                    ms / 3_600_000,
                    ms / 60_000 % 60,
                    ms / 1000 % 60,
                    alert.rule,
                    alert.severity,
                    alert.count,
                    alert.device_id.as_ref().map_or("-", |d| d.as_str()),
                    alert.source.as_deref().unwrap_or("-"),
                    alert.zone.as_deref().unwrap_or("-"),
                    alert.key,
                    alert.title,
                ));
            }
        }
    }
    rendered
}

/// A `device` or `indicator` fixture line, applied to `engine`.
fn setup(engine: &mut Engine, words: &[&str], rendered: &mut String) {
    if words[0] == "device" {
        let class: DeviceClass = words[2].parse().unwrap();
        let mut meta = DeviceMeta::new(class, words[3]);
        for w in &words[4..] {
            if let Some(ips) = w.strip_prefix("ip=") {
                meta.addresses = ips.split(',').map(|ip| ip.parse().unwrap()).collect();
            } else if let Some(fw) = w.strip_prefix("fw=") {
                meta.firmware = fw.to_owned();
            } else if let Some(c) = w.strip_prefix("cred=") {
                meta.credentials = vec![c.to_owned()];
            }
        }
        engine.register_device(DeviceId::new(words[1]).unwrap(), meta);
        return;
    }
    let pattern = words[3..].join(" ");
    let refused = engine.upsert_indicators(vec![crate::Indicator {
        id: words[1].to_owned(),
        pattern,
        name: words[1].to_owned(),
        source: words[2].to_owned(),
        valid_until: None,
    }]);
    for r in refused {
        rendered.push_str(&format!("refused {}: {}\n", r.id, r.message));
    }
}

fn merge(base: &mut toml::Value, tweaks: toml::Value) {
    match (base, tweaks) {
        (toml::Value::Table(b), toml::Value::Table(t)) => {
            for (k, v) in t {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

fn check(fixture: &str, expect: Expect) {
    expect.assert_eq(&run(DetectConfig::default(), fixture));
}

fn repeat(n: usize, f: impl Fn(usize) -> String) -> String {
    (0..n).map(f).collect::<Vec<_>>().join("\n")
}

#[test]
fn brute_force_against_one_device() {
    let fixture = format!(
        "device camera-0001 camera ps-field\n{}",
        repeat(11, |i| format!(
            "@00:00:{i:02} auth_failure camera-0001 from 10.0.0.9:{}",
            5000 + i
        ))
    );
    check(
        &fixture,
        expect![[r#"
            @00:00:09 auth.brute_force.device high count=1 device=camera-0001 source=10.0.0.9 zone=ps-field key=camera-0001 :: credential brute force against camera-0001
            @00:00:09 auth.brute_force.source high count=1 device=- source=10.0.0.9 zone=- key=10.0.0.9 :: credential brute force from 10.0.0.9
            @00:00:10 auth.brute_force.device high count=2 device=camera-0001 source=10.0.0.9 zone=ps-field key=camera-0001 :: credential brute force against camera-0001
            @00:00:10 auth.brute_force.source high count=2 device=- source=10.0.0.9 zone=- key=10.0.0.9 :: credential brute force from 10.0.0.9
        "#]],
    );
}

#[test]
fn failures_spread_beyond_the_window_do_not_alert() {
    // Ten failures, but seven seconds apart: never ten within 60 s.
    let fixture = repeat(10, |i| {
        let t = i * 7;
        format!(
            "@00:{:02}:{:02} auth_failure camera-0001 from 10.0.0.9:5000",
            t / 60,
            t % 60
        )
    });
    check(&fixture, expect![[""]]);
}

#[test]
fn password_spraying_from_one_source() {
    let fixture = repeat(10, |i| {
        format!("@00:00:{i:02} unknown meter-{i:04} from 203.0.113.5:4000")
    });
    check(
        &fixture,
        expect![[r#"
            @00:00:09 auth.brute_force.source high count=1 device=- source=203.0.113.5 zone=- key=203.0.113.5 :: password spraying from 203.0.113.5
        "#]],
    );
}

#[test]
fn uncommanded_siren_actuation() {
    check(
        "device siren-0001 siren ps-field
         @00:00:01 state siren-0001 sounding=false
         @00:00:05 state siren-0001 sounding=true
         @00:00:06 state siren-0001 sounding=true
         @00:00:30 state siren-0001 sounding=false",
        expect![[r#"
            @00:00:05 actuation.uncommanded critical count=1 device=siren-0001 source=- zone=ps-field key=siren-0001 :: uncommanded siren actuation: siren-0001 reports sounding
        "#]],
    );
}

#[test]
fn commanded_siren_actuation_is_quiet() {
    check(
        "device siren-0001 siren ps-field
         @00:00:01 command siren-0001 activate
         @00:00:02 state siren-0001 sounding=true
         @00:00:40 state siren-0001 sounding=false",
        expect![[""]],
    );
}

#[test]
fn a_stale_command_does_not_explain_an_actuation() {
    check(
        "device siren-0001 siren ps-field
         @00:00:01 command siren-0001 activate
         @00:10:00 tick
         @00:10:01 state siren-0001 sounding=true",
        expect![[r#"
            @00:10:01 actuation.uncommanded critical count=1 device=siren-0001 source=- zone=ps-field key=siren-0001 :: uncommanded siren actuation: siren-0001 reports sounding
        "#]],
    );
}

#[test]
fn an_all_clear_does_not_explain_the_next_actuation() {
    check(
        "device siren-0001 siren ps-field
         @00:00:01 state siren-0001 sounding=true
         @00:00:02 command siren-0001 silence
         @00:00:03 state siren-0001 sounding=false
         @00:00:10 state siren-0001 sounding=true",
        expect![[r#"
            @00:00:01 actuation.uncommanded critical count=1 device=siren-0001 source=- zone=ps-field key=siren-0001 :: uncommanded siren actuation: siren-0001 reports sounding
            @00:00:10 actuation.uncommanded critical count=2 device=siren-0001 source=- zone=ps-field key=siren-0001 :: uncommanded siren actuation: siren-0001 reports sounding
        "#]],
    );
}

#[test]
fn repeated_actuations_merge_into_one_alert() {
    // The Dallas night: the same siren, again and again.
    check(
        "device siren-0001 siren ps-field
         @00:00:01 state siren-0001 sounding=true
         @00:01:00 state siren-0001 sounding=false
         @00:02:00 state siren-0001 sounding=true
         @00:03:00 state siren-0001 sounding=false
         @00:30:00 tick
         @00:30:01 state siren-0001 sounding=true",
        expect![[r#"
            @00:00:01 actuation.uncommanded critical count=1 device=siren-0001 source=- zone=ps-field key=siren-0001 :: uncommanded siren actuation: siren-0001 reports sounding
            @00:02:00 actuation.uncommanded critical count=2 device=siren-0001 source=- zone=ps-field key=siren-0001 :: uncommanded siren actuation: siren-0001 reports sounding
            @00:30:01 actuation.uncommanded critical count=1 device=siren-0001 source=- zone=ps-field key=siren-0001 :: uncommanded siren actuation: siren-0001 reports sounding
        "#]],
    );
}

#[test]
fn state_from_unknown_devices_is_counted_not_fatal() {
    let mut engine = Engine::new(DetectConfig::default());
    let mut out = Vec::new();
    let event = Event {
        ts: Timestamp::from_millis(1),
        device_id: Some(DeviceId::new("ghost").unwrap()),
        sector: None,
        kind: EventKind::State {
            readings: vec![Reading {
                name: "sounding".into(),
                value: Value::Bool(true),
                unit: None,
            }],
        },
    };
    engine.process(&event, &mut out);
    assert!(out.is_empty());
    assert_eq!(engine.stats().skipped, 1);
}

#[test]
fn state_is_bounded_and_evicted() {
    let mut engine = Engine::new(DetectConfig::default());
    let mut out = Vec::new();
    for i in 0..5_000 {
        let event = Event {
            ts: Timestamp::from_millis(i),
            device_id: None,
            sector: None,
            kind: security(
                SecurityEventKind::ConnectRefused,
                None,
                "x",
                &format!("10.1.{}.{}:1", i / 256, i % 256),
            ),
        };
        engine.process(&event, &mut out);
    }
    assert_eq!(engine.stats().tracked_keys, 5_000);
    engine.tick(Timestamp::from_millis(3_600_000));
    assert_eq!(engine.stats().tracked_keys, 0);
}

#[test]
fn alert_ids_are_deterministic() {
    let fixture = "device siren-0001 siren ps-field\n@00:00:05 state siren-0001 sounding=true";
    let ids = |_: ()| {
        let mut engine = Engine::new(DetectConfig::default());
        engine.register_device(
            DeviceId::new("siren-0001").unwrap(),
            DeviceMeta::new(DeviceClass::Siren, "ps-field"),
        );
        let mut out = Vec::new();
        engine.process(
            &Event {
                ts: Timestamp::from_millis(5000),
                device_id: Some(DeviceId::new("siren-0001").unwrap()),
                sector: None,
                kind: EventKind::State {
                    readings: vec![Reading {
                        name: "sounding".into(),
                        value: Value::Bool(true),
                        unit: None,
                    }],
                },
            },
            &mut out,
        );
        out[0].id.clone()
    };
    assert_eq!(ids(()), ids(()));
    assert!(!run(DetectConfig::default(), fixture).is_empty());
}

#[test]
fn peer_addresses() {
    assert_eq!(crate::peer_ip("10.0.0.7:5000"), "10.0.0.7");
    assert_eq!(crate::peer_ip("[::1]:5000"), "::1");
    assert_eq!(crate::peer_ip("garbage"), "garbage");
}

/// The zone plan most flow tests use: cameras, the VMS, IT, and the vendor's update server.
const CITY: &str = "
    zone ps-field 10.1.0.0/16
    zone ps-vms 10.2.0.0/24
    zone it 10.9.0.0/16
    zone maint 10.250.0.0/24 allow_unregistered
    conduit ps-field ps-vms tcp 554,443
    conduit ps-field internet tcp 443
    conduit maint * tcp 22,443
    update_server 198.51.100.0/28
    device camera-0001 camera ps-field ip=10.1.0.11 fw=2.1.0
    device camera-0002 camera ps-field ip=10.1.0.12 fw=2.1.0
    device vms-01 camera ps-vms ip=10.2.0.5
";

#[test]
fn flows_inside_conduits_are_quiet_and_others_alert() {
    check(
        &format!(
            "{CITY}
             @00:00:01 flow 10.1.0.11:40000 > 10.2.0.5:554 tcp
             @00:00:02 flow 10.2.0.5:554 > 10.1.0.11:40000 tcp
             @00:00:03 flow 10.1.0.11:40001 > 203.0.113.9:443 tcp
             @00:00:04 flow 10.1.0.12:40002 > 10.1.0.11:80 tcp
             @00:00:05 flow 10.250.0.7:50000 > 10.1.0.11:22 tcp
             @00:00:06 flow 10.1.0.11:40003 > 10.9.0.20:445 tcp
             @00:00:07 flow 10.1.0.12:40004 > 10.9.0.21:445 tcp
             @00:00:08 flow 10.1.0.11:40005 > 203.0.113.9:23 tcp"
        ),
        expect![[r#"
            @00:00:06 policy.conduit high count=1 device=camera-0001 source=10.1.0.11 zone=ps-field key=ps-field->it tcp/445 :: flow from ps-field to it (tcp/445) outside every conduit
            @00:00:07 policy.conduit high count=2 device=camera-0001 source=10.1.0.11 zone=ps-field key=ps-field->it tcp/445 :: flow from ps-field to it (tcp/445) outside every conduit
            @00:00:08 policy.conduit high count=1 device=camera-0001 source=10.1.0.11 zone=ps-field key=ps-field->internet tcp/23 :: flow from ps-field to internet (tcp/23) outside every conduit
        "#]],
    );
}

#[test]
fn unregistered_addresses_in_city_zones_alert() {
    check(
        &format!(
            "{CITY}
             @00:00:01 flow 10.1.0.99:40000 > 10.2.0.5:554 tcp
             @00:00:02 flow 10.250.0.8:40000 > 10.1.0.11:443 tcp
             @00:00:03 flow 203.0.113.50:443 > 10.1.0.11:40001 tcp"
        ),
        expect![[r#"
            @00:00:01 policy.new_device medium count=1 device=- source=10.1.0.99 zone=ps-field key=10.1.0.99 :: unregistered device 10.1.0.99 in zone ps-field
        "#]],
    );
}

#[test]
fn mirai_takeover_login_brute_force_then_scan_then_flood() {
    check(
        &format!(
            "conduit internet ps-field tcp 23
             conduit ps-field internet tcp 23
             conduit ps-field internet udp any
             {CITY}
             @00:00:00 repeat 25 1 flow 198.18.0.66:3{{i}}00 > 10.1.0.11:23 tcp bytes=300 packets=6
             @00:01:00 repeat 60 0.5 flow 10.1.0.11:5{{i}}00 > 198.19.1.{{i}}:23 tcp bytes=60 packets=1
             @00:02:00 repeat 12 1 flow 10.1.0.11:6000 > 203.0.113.80:80 udp bytes=1400000 packets=1000"
        ),
        expect![[r#"
            @00:00:19 flow.brute_force high count=1 device=camera-0001 source=198.18.0.66 zone=ps-field key=camera-0001/198.18.0.66 :: remote-login brute force against camera-0001 from 198.18.0.66
            @00:01:25 flow.scan high count=1 device=camera-0001 source=198.19.1.50 zone=ps-field key=camera-0001/hosts :: camera-0001 is scanning: 50 hosts in 60s
            @00:02:07 flow.flood high count=1 device=camera-0001 source=203.0.113.80 zone=ps-field key=camera-0001->203.0.113.80 :: camera-0001 is flooding 203.0.113.80
            @00:02:09 flow.flood high count=2 device=camera-0001 source=203.0.113.80 zone=ps-field key=camera-0001->203.0.113.80 :: camera-0001 is flooding 203.0.113.80
        "#]],
    );
}

#[test]
fn exfiltration_to_a_new_destination_after_learning() {
    check(
        &format!(
            "config baseline.learning_s = 600
             {CITY}
             @00:00:00 repeat 20 30 flow 10.1.0.11:40000 > 203.0.113.9:443 tcp bytes=200000 packets=200
             @00:20:00 repeat 3 1 flow 10.1.0.11:40000 > 203.0.113.9:443 tcp bytes=900000 packets=800
             @00:21:00 repeat 3 1 flow 10.1.0.11:40010 > 198.51.100.200:443 tcp bytes=400000 packets=400
             @00:22:00 repeat 3 1 flow 10.1.0.11:40011 > 198.51.100.3:443 tcp bytes=900000 packets=700"
        ),
        expect![[r#"
            @00:21:02 baseline.flow high count=1 device=camera-0001 source=198.51.100.200 zone=ps-field key=camera-0001->198.51.100.200 :: camera-0001 sends data to a destination it never used: 198.51.100.200
        "#]],
    );
}

#[test]
fn firmware_changes_outside_vendor_updates_alert() {
    check(
        &format!(
            "{CITY}
             @00:00:01 telemetry camera-0001 firmware=2.1.0 fps=25
             @00:10:00 flow 10.1.0.11:40000 > 198.51.100.3:443 tcp bytes=9000000 packets=7000
             @00:12:00 telemetry camera-0001 firmware=2.2.0 fps=25
             @00:13:00 telemetry camera-0002 firmware=2.1.0-patched fps=25"
        ),
        expect![[r#"
            @00:13:00 policy.firmware_change high count=1 device=camera-0002 source=- zone=ps-field key=camera-0002 :: firmware of camera-0002 changed from 2.1.0 to 2.1.0-patched outside a vendor update
        "#]],
    );
}

#[test]
fn topic_abuse_identity_spoofing_and_reconnect_storms() {
    check(
        "device camera-0001 camera ps-field
         device siren-0001 siren ps-field
         @00:00:01 sec subscribe_denied camera-0001 from 10.1.0.11:4000 topic=# reason=wildcard_subscription
         @00:00:02 sec subscribe_denied camera-0001 from 10.1.0.11:4000 topic=$SYS/broker/clients reason=system_topic
         @00:00:03 sec publish_denied camera-0001 from 10.1.0.11:4000 topic=city/public_safety/siren-0001/cmd reason=topic_outside_device_namespace
         @00:00:04 sec client_id_takeover siren-0001 from 10.7.7.7:5000 reason=client_id_in_use_from_another_address
         @00:00:05 sec connect_refused siren-0001 from 10.7.7.8:5000 reason=certificate_not_registered_for_device
         @00:01:00 repeat 25 1 sec connect_accepted camera-0001 from 10.1.0.11:4000",
        expect![[r#"
            @00:00:01 mqtt.topic_abuse high count=1 device=camera-0001 source=10.1.0.11 zone=ps-field key=camera-0001/wildcard :: camera-0001 tried to subscribe to #
            @00:00:02 mqtt.topic_abuse high count=1 device=camera-0001 source=10.1.0.11 zone=ps-field key=camera-0001/system :: camera-0001 tried to subscribe to $SYS/broker/clients
            @00:00:03 mqtt.topic_abuse high count=1 device=camera-0001 source=10.1.0.11 zone=ps-field key=camera-0001/command :: camera-0001 tried to publish to city/public_safety/siren-0001/cmd
            @00:00:04 identity.client_id_takeover high count=1 device=siren-0001 source=10.7.7.7 zone=ps-field key=siren-0001 :: second client claims to be siren-0001
            @00:00:05 identity.certificate_mismatch high count=1 device=siren-0001 source=10.7.7.8 zone=ps-field key=siren-0001 :: certificate does not match the registry for siren-0001
            @00:01:19 rate.connect_flood medium count=1 device=camera-0001 source=10.1.0.11 zone=ps-field key=camera-0001 :: reconnect storm from camera-0001
            @00:01:20 rate.connect_flood medium count=2 device=camera-0001 source=10.1.0.11 zone=ps-field key=camera-0001 :: reconnect storm from camera-0001
            @00:01:21 rate.connect_flood medium count=3 device=camera-0001 source=10.1.0.11 zone=ps-field key=camera-0001 :: reconnect storm from camera-0001
            @00:01:22 rate.connect_flood medium count=4 device=camera-0001 source=10.1.0.11 zone=ps-field key=camera-0001 :: reconnect storm from camera-0001
            @00:01:23 rate.connect_flood medium count=5 device=camera-0001 source=10.1.0.11 zone=ps-field key=camera-0001 :: reconnect storm from camera-0001
            @00:01:24 rate.connect_flood medium count=6 device=camera-0001 source=10.1.0.11 zone=ps-field key=camera-0001 :: reconnect storm from camera-0001
        "#]],
    );
}

#[test]
fn plausibility_range_rate_and_counters() {
    check(
        "device meter-0001 smart_meter energy-ami
         device level-0001 level_sensor water-ot
         @00:00:00 telemetry meter-0001 power=1.2 voltage=231 energy=5000.0
         @00:00:30 telemetry meter-0001 power=1.3 voltage=229 energy=5000.01
         @00:01:00 telemetry meter-0001 power=-4 voltage=300 energy=4000
         @00:00:00 telemetry level-0001 level_m=2.00
         @00:00:10 telemetry level-0001 level_m=2.01
         @00:00:20 telemetry level-0001 level_m=0.40",
        expect![[r#"
            @00:01:00 plausibility.range high count=1 device=meter-0001 source=- zone=energy-ami key=meter-0001/power :: implausible power from meter-0001
            @00:01:00 plausibility.range high count=1 device=meter-0001 source=- zone=energy-ami key=meter-0001/voltage :: implausible voltage from meter-0001
            @00:01:00 plausibility.rate_of_change high count=1 device=meter-0001 source=- zone=energy-ami key=meter-0001/energy :: physically impossible change of energy at meter-0001
            @00:00:20 plausibility.rate_of_change high count=1 device=level-0001 source=- zone=water-ot key=level-0001/level_m :: physically impossible change of level_m at level-0001
        "#]],
    );
}

#[test]
fn a_sensor_that_leaves_its_neighbours_alerts_after_three_readings() {
    let mut fixture = String::from(
        "device level-0001 level_sensor water-ot
         device level-0002 level_sensor water-ot
         device level-0003 level_sensor water-ot
         device level-0004 level_sensor water-ot\n",
    );
    // 40 rounds of agreeing sensors (each with its own offset), then level-0004 drifts away
    // slowly (too slowly for the rate-of-change rule) while the others stay.
    for round in 0..46 {
        let base = 2.0 + 0.001 * f64::from(round);
        let t = round * 10;
        let drift = if round >= 40 {
            0.2 * f64::from(round - 39)
        } else {
            0.0
        };
        for (i, offset) in [0.0, 0.3, -0.2, 0.5].iter().enumerate() {
            let v = base + offset + if i == 3 { drift } else { 0.0 };
            fixture.push_str(&format!(
                "@00:{:02}:{:02} telemetry level-000{} level_m={v:.3}\n",
                t / 60,
                t % 60,
                i + 1
            ));
        }
    }
    check(
        &format!("config rate.messages_per_device = 1000\n{fixture}"),
        expect![[r#"
            @00:07:10 plausibility.neighbours high count=1 device=level-0004 source=- zone=water-ot key=level-0004/level_m :: level-0004 disagrees with its neighbours on level_m
            @00:07:20 plausibility.neighbours high count=2 device=level-0004 source=- zone=water-ot key=level-0004/level_m :: level-0004 disagrees with its neighbours on level_m
            @00:07:30 plausibility.neighbours high count=3 device=level-0004 source=- zone=water-ot key=level-0004/level_m :: level-0004 disagrees with its neighbours on level_m
        "#]],
    );
}

#[test]
fn baselines_learn_then_judge_and_learn_absorbs() {
    let mut fixture = String::from(
        "config baseline.learning_s = 600
         config baseline.min_samples = 30
         device pump-0001 pump water-ot\n",
    );
    // An hour of normal pressure (3.5..4.5 bar, a slow daily drift), then a jump to 12 bar.
    for i in 0..120 {
        let t = i * 30;
        let v = 4.0 + 0.4 * ((f64::from(i) / 10.0).sin());
        fixture.push_str(&format!(
            "@{:02}:{:02}:{:02} telemetry pump-0001 pressure_bar={v:.3}\n",
            t / 3600,
            t / 60 % 60,
            t % 60
        ));
    }
    fixture.push_str(
        "@01:00:30 telemetry pump-0001 pressure_bar=12.0
         @01:01:00 learn baseline.telemetry pump-0001/pressure_bar
         @01:01:30 telemetry pump-0001 pressure_bar=12.5
         @01:02:00 command pump-0001 stop
         @01:02:30 telemetry pump-0001 pressure_bar=1.2",
    );
    check(
        &fixture,
        expect![[r#"
        @01:00:30 baseline.telemetry medium count=1 device=pump-0001 source=- zone=water-ot key=pump-0001/pressure_bar :: pressure_bar of pump-0001 outside its learned baseline
    "#]],
    );
}

#[test]
fn bursts_of_actuations_across_one_class() {
    check(
        "device breaker-00 feeder_breaker energy-ot
         device breaker-01 feeder_breaker energy-ot
         device breaker-02 feeder_breaker energy-ot
         device breaker-03 feeder_breaker energy-ot
         device breaker-04 feeder_breaker energy-ot
         device light-00 street_light energy-field
         device light-01 street_light energy-field
         @00:00:00 repeat 5 1 telemetry breaker-0{i} closed=true current_a=300
         @00:01:00 command breaker-00 open
         @00:01:01 state breaker-00 closed=false
         @00:01:10 state breaker-01 closed=false
         @00:01:12 state breaker-02 closed=false
         @00:01:14 state breaker-03 closed=false
         @00:01:16 state breaker-04 closed=false
         @00:05:00 repeat 2 1 command light-0{i} off
         @00:05:00 repeat 2 1 telemetry light-0{i} on=false",
        expect![[r#"
            @00:01:10 actuation.uncommanded critical count=1 device=breaker-01 source=- zone=energy-ot key=breaker-01 :: uncommanded feeder_breaker actuation: breaker-01 changed closed=false
            @00:01:12 actuation.uncommanded critical count=1 device=breaker-02 source=- zone=energy-ot key=breaker-02 :: uncommanded feeder_breaker actuation: breaker-02 changed closed=false
            @00:01:14 actuation.uncommanded critical count=1 device=breaker-03 source=- zone=energy-ot key=breaker-03 :: uncommanded feeder_breaker actuation: breaker-03 changed closed=false
            @00:01:16 rate.actuation_burst critical count=1 device=breaker-04 source=- zone=energy-ot key=feeder_breaker :: 5 feeder_breaker actuators switched within 60s
            @00:01:16 actuation.uncommanded critical count=1 device=breaker-04 source=- zone=energy-ot key=breaker-04 :: uncommanded feeder_breaker actuation: breaker-04 changed closed=false
        "#]],
    );
}

#[test]
fn message_floods_alert_once_per_hundred() {
    check(
        "device meter-0001 smart_meter energy-ami
         @00:00:00 repeat 250 0.02 telemetry meter-0001 power=1.0",
        expect![[r#"
            @00:00:02 rate.message_flood medium count=1 device=meter-0001 source=- zone=energy-ami key=meter-0001 :: message flood from meter-0001
            @00:00:04 rate.message_flood medium count=2 device=meter-0001 source=- zone=energy-ami key=meter-0001 :: message flood from meter-0001
        "#]],
    );
}

#[test]
fn partner_indicators_match_flows_and_clients() {
    check(
        &format!(
            "conduit ps-field internet any any
             {CITY}
             indicator indicator--a1 isac [ipv4-addr:value = '203.0.113.66' OR ipv4-addr:value = '203.0.113.67']
             indicator indicator--b2 cert-nl [network-traffic:dst_port = 6667 AND network-traffic:protocols[*] = 'tcp']
             indicator indicator--c3 local [ipv4-addr:value ISSUBSET '198.18.5.0/24']
             indicator indicator--bad x [ipv4-addr:value = ]
             @00:00:01 flow 10.1.0.11:40000 > 203.0.113.67:443 tcp
             @00:00:02 flow 10.1.0.12:40000 > 192.0.2.1:6667 tcp
             @00:00:03 flow 10.1.0.12:40000 > 198.18.5.77:53 udp
             @00:00:04 sec connect_refused - from 203.0.113.66:4444 reason=unknown_device
             @00:00:05 flow 10.1.0.12:40000 > 192.0.2.1:6668 tcp"
        ),
        expect![[r#"
            refused indicator--bad: at 19: expected a literal value, found ']'
            @00:00:01 intel.indicator high count=1 device=camera-0001 source=203.0.113.67 zone=ps-field key=indicator--a1/camera-0001 :: indicator "indicator--a1" (shared by isac) seen at camera-0001
            @00:00:02 intel.indicator high count=1 device=camera-0002 source=- zone=ps-field key=indicator--b2/camera-0002 :: indicator "indicator--b2" (shared by cert-nl) seen at camera-0002
            @00:00:03 intel.indicator high count=1 device=camera-0002 source=- zone=ps-field key=indicator--c3/camera-0002 :: indicator "indicator--c3" (written by the city's analysts) seen at camera-0002
            @00:00:04 intel.indicator high count=1 device=- source=203.0.113.66 zone=- key=indicator--a1/203.0.113.66 :: indicator "indicator--a1" (shared by isac) seen at 203.0.113.66
        "#]],
    );
}

#[test]
fn mute_silences_one_key_only() {
    check(
        "device camera-0001 camera ps-field
         device camera-0002 camera ps-field
         @00:00:00 mute mqtt.topic_abuse camera-0001/wildcard
         @00:00:01 sec subscribe_denied camera-0001 from 10.1.0.11:4000 topic=# reason=wildcard
         @00:00:02 sec subscribe_denied camera-0002 from 10.1.0.12:4000 topic=# reason=wildcard",
        expect![[r#"
            @00:00:02 mqtt.topic_abuse high count=1 device=camera-0002 source=10.1.0.12 zone=ps-field key=camera-0002/wildcard :: camera-0002 tried to subscribe to #
        "#]],
    );
}

#[test]
fn shared_credentials_alert_at_the_next_event() {
    check(
        "device meter-0001 smart_meter energy-ami cred=$sha256$salt$abc
         device meter-0002 smart_meter energy-ami cred=$sha256$salt$abc
         device meter-0003 smart_meter energy-ami cred=$sha256$salt$def
         @00:00:01 telemetry meter-0003 power=1.0",
        expect![[r#"
            @00:00:01 policy.shared_credentials high count=1 device=meter-0002 source=- zone=energy-ami key=$sha256$salt$abc :: 2 devices share one credential
        "#]],
    );
}

#[test]
fn meters_that_stop_adding_up_to_their_feeders_alert() {
    let mut fixture = String::from(
        "config rate.messages_per_device = 1000
         device breaker-01 feeder_breaker energy-ot\n",
    );
    for m in 1..=5 {
        fixture.push_str(&format!("device meter-000{m} smart_meter energy-ami\n"));
    }
    // Twenty minutes where five meters (about 1 kW each) add up to ~400 A at the feeder,
    // then three meters start under-reporting by 90%.
    for minute in 0..30 {
        let load = 1.0 + 0.2 * (f64::from(minute) / 5.0).sin();
        let t = minute * 60;
        let (h, m) = (t / 3600, t / 60 % 60);
        fixture.push_str(&format!(
            "@{h:02}:{m:02}:00 telemetry breaker-01 closed=true current_a={:.1}\n",
            400.0 * load
        ));
        for meter in 1..=5 {
            let lie = if minute >= 20 && meter <= 3 { 0.1 } else { 1.0 };
            fixture.push_str(&format!(
                "@{h:02}:{m:02}:{:02} telemetry meter-000{meter} power={:.3}\n",
                meter * 5,
                load * lie
            ));
        }
    }
    check(
        &fixture,
        expect![[r#"
        @00:22:00 plausibility.totals high count=1 device=- source=- zone=- key=energy.meters_vs_feeders :: power of 5 smart_meter disagree with current_a of 1 feeder_breaker
        @00:23:00 plausibility.totals high count=2 device=- source=- zone=- key=energy.meters_vs_feeders :: power of 5 smart_meter disagree with current_a of 1 feeder_breaker
        @00:24:00 plausibility.totals high count=3 device=- source=- zone=- key=energy.meters_vs_feeders :: power of 5 smart_meter disagree with current_a of 1 feeder_breaker
        @00:25:00 plausibility.totals high count=4 device=- source=- zone=- key=energy.meters_vs_feeders :: power of 5 smart_meter disagree with current_a of 1 feeder_breaker
        @00:26:00 plausibility.totals high count=5 device=- source=- zone=- key=energy.meters_vs_feeders :: power of 5 smart_meter disagree with current_a of 1 feeder_breaker
        @00:27:00 plausibility.totals high count=6 device=- source=- zone=- key=energy.meters_vs_feeders :: power of 5 smart_meter disagree with current_a of 1 feeder_breaker
        @00:28:00 plausibility.totals high count=7 device=- source=- zone=- key=energy.meters_vs_feeders :: power of 5 smart_meter disagree with current_a of 1 feeder_breaker
        @00:29:00 plausibility.totals high count=8 device=- source=- zone=- key=energy.meters_vs_feeders :: power of 5 smart_meter disagree with current_a of 1 feeder_breaker
    "#]],
    );
}

#[test]
fn rule_files_load_entry_by_entry_with_clear_errors() {
    let mut rules = crate::RuleSet::default();
    let diagnostics = rules.load(
        "city.toml",
        r#"
        version = 1
        [[reading]]
        class = "level_sensor"
        reading = "level_m"
        min = 0.0
        max = 8.0

        [[reading]]
        class = "sirne"
        reading = "x"

        [[reading]]
        class = "pump"
        reading = "rpm"
        min = 10.0
        max = 1.0

        [[threshold]]
        id = "city.publish_denied_burst"
        severity = "medium"
        title = "many refused publishes"
        event = "publish_denied"
        group_by = "device"
        count = 3
        window_s = 60

        [[threshold]]
        id = "city.bad"
        severity = "urgent"
        title = "x"
        event = "publish_denied"
        group_by = "device"
        count = 3
        window_s = 60

        [[nonsense]]
        x = 1
        "#,
    );
    let rendered: Vec<String> = diagnostics.iter().map(|d| d.to_string()).collect();
    expect![[r#"
        [
            "city.toml: nonsense: unknown section (expected reading, totals or threshold)",
            "city.toml: reading[1]: unknown variant `sirne`, expected one of `siren`, `camera`, `traffic_signal`, `ev_charger`, `smart_meter`, `street_light`, `feeder_breaker`, `pump`, `valve`, `level_sensor`, `quality_sensor`, `air_quality`, `weather`, `hvac`, `access_control`",
            "city.toml: reading[2]: min 10 is greater than max 1",
            "city.toml: threshold[1]: unknown variant `urgent`, expected one of `info`, `low`, `medium`, `high`, `critical`",
        ]
    "#]].assert_debug_eq(&rendered);
    assert_eq!(rules.readings.len(), 1);
    assert_eq!(rules.thresholds.len(), 1);
    let broken = crate::RuleSet::default().load("broken.toml", "[[reading]\nclass=");
    assert_eq!(broken.len(), 1);
    assert!(broken[0].to_string().starts_with("broken.toml: not TOML"));
}

#[test]
fn the_default_rules_load_cleanly() {
    let (rules, diagnostics) = crate::RuleSet::defaults();
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    assert!(rules.readings.len() >= 20);
    assert_eq!(rules.totals.len(), 1);
}

#[test]
fn custom_threshold_rules_fire() {
    let mut rules = crate::RuleSet::defaults().0;
    let diagnostics = rules.load(
        "city.toml",
        r#"
        [[threshold]]
        id = "city.payload_errors"
        severity = "low"
        title = "a device keeps sending bad payloads"
        explanation = "Check its firmware."
        event = "payload_invalid"
        group_by = "device"
        count = 3
        window_s = 60
        "#,
    );
    assert!(diagnostics.is_empty(), "{diagnostics:?}");
    let mut engine = Engine::with_rules(DetectConfig::default(), rules);
    engine.register_device(
        DeviceId::new("meter-0001").unwrap(),
        DeviceMeta::new(DeviceClass::SmartMeter, "energy-ami"),
    );
    let mut out = Vec::new();
    for i in 0..3 {
        let event = Event {
            ts: Timestamp::from_millis(i * 1000),
            device_id: Some(DeviceId::new("meter-0001").unwrap()),
            sector: None,
            kind: EventKind::Security(SecurityEvent {
                action: SecurityEventKind::PayloadInvalid,
                client_id: None,
                username: None,
                peer: None,
                topic: None,
                reason: None,
            }),
        };
        engine.process(&event, &mut out);
    }
    assert!(
        out.iter()
            .any(|a| a.rule == "city.payload_errors" && a.key == "meter-0001"),
        "{out:?}"
    );
}

#[test]
fn zone_plan_errors_are_diagnostics_not_failures() {
    let config = DetectConfig {
        zones: vec![
            crate::ZoneConfig {
                name: "a".into(),
                cidrs: vec!["10.0.0.0/33".into(), "nonsense".into()],
                allow_unregistered: false,
            },
            crate::ZoneConfig {
                name: "internet".into(),
                cidrs: vec![],
                allow_unregistered: false,
            },
        ],
        conduits: vec![crate::ConduitConfig {
            name: String::new(),
            from: "a".into(),
            to: "b".into(),
            protocol: "tcp".into(),
            ports: vec![],
        }],
        ..DetectConfig::default()
    };
    let engine = Engine::new(config);
    let rendered: Vec<String> = engine.diagnostics().iter().map(|d| d.to_string()).collect();
    expect![[r#"
        [
            "config: detect.zones[0]: \"10.0.0.0/33\": prefix length must be 0..=32",
            "config: detect.zones[0]: \"nonsense\" is not an address or CIDR range",
            "config: detect.zones[1]: zone name \"internet\" is reserved or empty",
            "config: detect.conduits[0]: unknown zone \"b\" (define it under [[detect.zones]])",
        ]
    "#]]
    .assert_debug_eq(&rendered);
}

mod never_panics {
    //! Whatever arrives (readings with odd names and values, flows with any addresses and
    //! counters, broker events with any strings, time going backwards), the engine neither
    //! panics nor grows without bound.

    use proptest::prelude::*;

    use super::*;

    fn reading() -> impl Strategy<Value = Reading> {
        (
            prop_oneof![
                Just("level_m".to_owned()),
                Just("power".to_owned()),
                Just("energy".to_owned()),
                Just("sounding".to_owned()),
                Just("closed".to_owned()),
                Just("firmware".to_owned()),
                "[a-z_]{1,12}",
            ],
            prop_oneof![
                any::<f64>().prop_map(Value::Number),
                any::<bool>().prop_map(Value::Bool),
                ".{0,40}".prop_map(Value::Text),
                Just(Value::Number(f64::NAN)),
                Just(Value::Number(f64::INFINITY)),
                Just(Value::Number(-1e300)),
            ],
        )
            .prop_map(|(name, value)| Reading {
                name,
                value,
                unit: None,
            })
    }

    fn event() -> impl Strategy<Value = (i64, Option<usize>, u8, Vec<Reading>, [u8; 8], u16, u64)> {
        (
            -1_000_000i64..100_000_000,
            proptest::option::of(0usize..6),
            0u8..6,
            proptest::collection::vec(reading(), 0..5),
            any::<[u8; 8]>(),
            any::<u16>(),
            any::<u64>(),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn arbitrary_streams(events in proptest::collection::vec(event(), 1..200)) {
            let config = DetectConfig {
                zones: vec![crate::ZoneConfig {
                    name: "z".into(),
                    cidrs: vec!["10.0.0.0/8".into()],
                    allow_unregistered: false,
                }],
                ..DetectConfig::default()
            };
            let mut engine = Engine::new(config);
            engine.upsert_indicators(vec![crate::Indicator {
                id: "indicator--x".into(),
                pattern: "[ipv4-addr:value = '10.0.0.1'] FOLLOWEDBY [network-traffic:dst_port > 1000]".into(),
                name: "x".into(),
                source: "p".into(),
                valid_until: None,
            }]);
            let classes = [DeviceClass::Siren, DeviceClass::LevelSensor, DeviceClass::SmartMeter,
                DeviceClass::FeederBreaker, DeviceClass::Valve, DeviceClass::Camera];
            for (i, class) in classes.iter().enumerate() {
                let mut meta = DeviceMeta::new(*class, "z");
                meta.addresses = vec![format!("10.0.0.{i}").parse().unwrap()];
                meta.credentials = vec!["same".into()];
                engine.register_device(DeviceId::new(format!("d{i}")).unwrap(), meta);
            }
            let mut out = Vec::new();
            for (ts, device, kind, readings, ip, port, n) in events {
                let device_id = device.map(|d| DeviceId::new(format!("d{d}")).unwrap());
                let ts = Timestamp::from_millis(ts);
                let kind = match kind {
                    0 => EventKind::Telemetry { readings },
                    1 => EventKind::State { readings },
                    2 => EventKind::Command { action: "x".into(), actor: "y".into() },
                    3 => EventKind::Flow(model::FlowRecord {
                        src: std::net::IpAddr::from([ip[0], ip[1], ip[2], ip[3]]),
                        dst: std::net::IpAddr::from([10, 0, 0, ip[4] % 8]),
                        src_port: port,
                        dst_port: u16::from(ip[5]) * 10,
                        protocol: ip[6] % 20,
                        bytes: n,
                        packets: n >> 7,
                        tcp_flags: ip[7],
                        start: ts,
                        end: Timestamp::from_millis(ts.as_millis().saturating_add((n % 100_000) as i64)),
                        exporter: None,
                        peer_device: None,
                    }),
                    4 => EventKind::Security(SecurityEvent {
                        action: [SecurityEventKind::AuthFailure, SecurityEventKind::SubscribeDenied,
                            SecurityEventKind::ConnectRefused, SecurityEventKind::ClientIdTakeover,
                            SecurityEventKind::MalformedPacket, SecurityEventKind::ConnectAccepted][usize::from(ip[0] % 6)],
                        client_id: Some(format!("c{}", ip[1])),
                        username: None,
                        peer: Some(format!("{}.{}.{}.{}:{port}", ip[0], ip[1], ip[2], ip[3])),
                        topic: Some("$SYS/#".into()),
                        reason: Some("certificate not registered for device".into()),
                    }),
                    _ => {
                        engine.tick(ts);
                        continue;
                    }
                };
                engine.process(&Event { ts, device_id, sector: None, kind }, &mut out);
            }
            prop_assert!(engine.state_bytes_per_device() < 4096);
            // Whatever the stream did, what the engine learned survives its JSON form and
            // loads into another engine as it was.
            let learned = engine.learned(|_| true);
            let json = serde_json::to_string(&learned).unwrap();
            let back: crate::Learned = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(&back, &learned);
            let mut next = Engine::new(DetectConfig {
                zones: vec![crate::ZoneConfig {
                    name: "z".into(),
                    cidrs: vec!["10.0.0.0/8".into()],
                    allow_unregistered: false,
                }],
                ..DetectConfig::default()
            });
            for (i, class) in classes.iter().enumerate() {
                let mut meta = DeviceMeta::new(*class, "z");
                meta.addresses = vec![format!("10.0.0.{i}").parse().unwrap()];
                next.register_device(DeviceId::new(format!("d{i}")).unwrap(), meta);
            }
            next.restore_learned(&back, |_| true).unwrap();
            prop_assert_eq!(next.learned(|_| true), learned);
            for alert in &out {
                prop_assert!(!alert.title.is_empty() && !alert.explanation.is_empty());
            }
        }
    }
}

#[test]
fn class_indexes_follow_the_list_of_classes() {
    for (i, class) in DeviceClass::ALL.iter().enumerate() {
        assert_eq!(crate::flows::class_index(*class), i);
    }
}

#[test]
fn a_quarantined_device_has_no_conduits() {
    check(
        &format!(
            "{CITY}
             @00:00:01 flow 10.1.0.11:40000 > 10.2.0.5:554 tcp
             @00:00:02 sec quarantined camera-0001 from 127.0.0.1:1 reason=inc-1
             @00:00:03 flow 10.1.0.11:40000 > 10.2.0.5:554 tcp
             @00:00:04 flow 10.1.0.12:40000 > 10.2.0.5:554 tcp"
        ),
        expect![[r#"
            @00:00:03 policy.conduit high count=1 device=camera-0001 source=10.1.0.11 zone=ps-field key=quarantine camera-0001 :: traffic of quarantined device camera-0001
        "#]],
    );
}

#[test]
fn senml_base_names_do_not_hide_readings_from_the_rules() {
    check(
        "device meter-0001 smart_meter energy-ami
         @00:00:00 telemetry meter-0001 urn:dev:id:meter-0001:power=1.2 urn:dev:id:meter-0001:energy=5000
         @00:00:30 telemetry meter-0001 urn:dev:id:meter-0001:power=75 urn:dev:id:meter-0001:energy=4000",
        expect![[r#"
            @00:00:30 plausibility.range high count=1 device=meter-0001 source=- zone=energy-ami key=meter-0001/power :: implausible power from meter-0001
            @00:00:30 plausibility.rate_of_change high count=1 device=meter-0001 source=- zone=energy-ami key=meter-0001/power :: physically impossible change of power at meter-0001
            @00:00:30 plausibility.rate_of_change high count=1 device=meter-0001 source=- zone=energy-ami key=meter-0001/energy :: physically impossible change of energy at meter-0001
        "#]],
    );
}

#[test]
fn a_sensor_that_broke_a_physical_limit_does_not_vote_for_its_neighbours() {
    let mut fixture = String::from(
        "device level-0001 level_sensor water-ot
         device level-0002 level_sensor water-ot
         device level-0003 level_sensor water-ot
         device level-0004 level_sensor water-ot\n",
    );
    // 30 rounds of agreement, then level-0001 is driven to 0.4 m (false data): its jump is
    // a rate-of-change alert, and the other three are not judged against it.
    for round in 0..34 {
        let t = round * 10;
        for (i, offset) in [0.0, 0.3, -0.2, 0.5].iter().enumerate() {
            let v = if i == 0 && round >= 30 {
                0.4
            } else {
                2.0 + offset
            };
            fixture.push_str(&format!(
                "@00:{:02}:{:02} telemetry level-000{} level_m={v:.3}\n",
                t / 60,
                t % 60,
                i + 1
            ));
        }
    }
    check(
        &fixture,
        expect![[r#"
            @00:05:00 plausibility.rate_of_change high count=1 device=level-0001 source=- zone=water-ot key=level-0001/level_m :: physically impossible change of level_m at level-0001
            @00:05:10 plausibility.rate_of_change high count=2 device=level-0001 source=- zone=water-ot key=level-0001/level_m :: physically impossible change of level_m at level-0001
            @00:05:20 plausibility.rate_of_change high count=3 device=level-0001 source=- zone=water-ot key=level-0001/level_m :: physically impossible change of level_m at level-0001
        "#]],
    );
}

#[test]
fn a_feeder_going_offline_is_not_a_totals_mismatch() {
    let mut fixture = String::from(
        "config rate.messages_per_device = 1000
         device breaker-01 feeder_breaker energy-ot
         device breaker-02 feeder_breaker energy-ot
         device breaker-03 feeder_breaker energy-ot\n",
    );
    for m in 1..=5 {
        fixture.push_str(&format!("device meter-000{m} smart_meter energy-ami\n"));
    }
    // Thirty minutes of agreement; from minute 15 breaker-03 stops reporting (an honest
    // outage) and is evicted as stale, so the whole shrinks by a third.
    for minute in 0..50 {
        let t = minute * 60;
        let (h, m) = (t / 3600, t / 60 % 60);
        for b in 1..=3 {
            if b == 3 && minute >= 15 {
                continue;
            }
            fixture.push_str(&format!(
                "@{h:02}:{m:02}:00 telemetry breaker-0{b} closed=true current_a=130\n"
            ));
        }
        for meter in 1..=5 {
            fixture.push_str(&format!(
                "@{h:02}:{m:02}:{:02} telemetry meter-000{meter} power=1.0\n",
                meter * 5
            ));
        }
        fixture.push_str(&format!("@{h:02}:{m:02}:59 tick\n"));
    }
    check(&fixture, expect![[r#""#]]);
}

#[test]
fn a_flood_of_distinct_keys_folds_into_one_alert_per_rule() {
    let config = DetectConfig {
        zones: vec![crate::ZoneConfig {
            name: "z".into(),
            cidrs: vec!["10.0.0.0/8".into()],
            allow_unregistered: false,
        }],
        ..DetectConfig::default()
    };
    let mut engine = Engine::new(config);
    let mut alerts = std::collections::HashSet::new();
    let mut out = Vec::new();
    for i in 0..(crate::MAX_OPEN_ALERTS as u32 + 500) {
        let src = std::net::IpAddr::from((10u32 << 24 | i).to_be_bytes());
        let flow = model::FlowRecord {
            src,
            dst: "10.255.255.1".parse().unwrap(),
            src_port: 1000,
            dst_port: 80,
            protocol: model::proto::TCP,
            bytes: 60,
            packets: 1,
            tcp_flags: 2,
            start: Timestamp::from_millis(i64::from(i)),
            end: Timestamp::from_millis(i64::from(i)),
            exporter: None,
            peer_device: None,
        };
        let event = Event {
            ts: Timestamp::from_millis(i64::from(i)),
            device_id: None,
            sector: None,
            kind: EventKind::Flow(flow),
        };
        engine.process(&event, &mut out);
        for alert in out.drain(..) {
            alerts.insert((alert.rule, alert.key));
        }
    }
    let overflow: Vec<_> = alerts
        .iter()
        .filter(|(_, k)| k == crate::OVERFLOW_KEY)
        .collect();
    assert_eq!(overflow.len(), 1, "{overflow:?}");
    assert!(engine.stats().tracked_keys <= crate::MAX_OPEN_ALERTS + 1);
    assert_eq!(alerts.len(), crate::MAX_OPEN_ALERTS + 1);
}

#[test]
fn every_rule_the_engine_raises_is_listed_as_built_in() {
    // The rule ids in the engine's source are the ones `GET /api/v1/detect` lists.
    let sources = [
        include_str!("auth.rs"),
        include_str!("flows.rs"),
        include_str!("indicator.rs"),
        include_str!("telemetry.rs"),
        include_str!("reports.rs"),
    ];
    let mut raised = std::collections::BTreeSet::new();
    for source in sources {
        for part in source.split("rule: \"").skip(1) {
            raised.insert(part.split('"').next().unwrap().to_owned());
        }
        for line in source.lines() {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix('"')
                && let Some(id) = rest.strip_suffix("\",")
                && id.contains('.')
                && !id.contains(' ')
                && crate::BUILTIN_RULES
                    .iter()
                    .any(|r| r.split('.').next() == id.split('.').next())
            {
                raised.insert(id.to_owned());
            }
        }
    }
    let listed: std::collections::BTreeSet<String> = crate::BUILTIN_RULES
        .iter()
        .map(|r| (*r).to_owned())
        .collect();
    assert!(
        raised.is_subset(&listed),
        "not listed: {:?}",
        raised.difference(&listed).collect::<Vec<_>>()
    );
}

#[test]
fn publishes_over_a_rate_limit_alert_and_changes_of_the_limit_do_not() {
    check(
        "device meter-0001 smart_meter energy-field
         @00:00:01 sec rate_limit_changed meter-0001 from 10.2.0.5:4000 reason=rate_limit_applied
         @00:00:02 sec rate_limited meter-0001 from 10.2.0.5:4000 reason=dropped_1_publish(es)_over_the_rate_limit
         @00:00:03 sec rate_limited meter-0001 from 10.2.0.5:4000 reason=dropped_40_publish(es)_over_the_rate_limit
         @00:00:09 sec rate_limit_changed meter-0001 from 10.2.0.5:4000 reason=rate_limit_lifted",
        expect![[r#"
            @00:00:02 mqtt.rate_limited medium count=1 device=meter-0001 source=10.2.0.5 zone=energy-field key=meter-0001 :: meter-0001 publishes over its rate limit
            @00:00:03 mqtt.rate_limited medium count=2 device=meter-0001 source=10.2.0.5 zone=energy-field key=meter-0001 :: meter-0001 publishes over its rate limit
        "#]],
    );
}

/// Detection split over partition engines (`Scope::Local`, each fed its devices' events)
/// plus one `Scope::Shared` engine fed every event raises exactly the alerts one engine
/// raises, each by one engine.
#[test]
fn scopes_split_detection_without_changing_it() {
    use crate::workload::{WorkloadConfig, build};
    let cfg = WorkloadConfig {
        devices: 400,
        indicators: 50,
        events: 40_000,
        seed: 7,
    };
    let partition = |e: &Event| {
        let id = e.device_id.as_ref().map_or("", |d| d.as_str());
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in id.as_bytes() {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        (hash % 4) as usize
    };
    let latest = |alerts: Vec<model::Alert>| {
        let mut by_id = std::collections::BTreeMap::new();
        for a in alerts {
            by_id.insert(a.id.0.clone(), (a.rule.clone(), a.count));
        }
        by_id
    };
    let (mut one, mut events) = build(cfg);
    // Beside the benign city: spraying from one address across devices (cross-device) and
    // brute force against one device (local).
    let devices = crate::workload::devices(cfg.devices);
    let start = events.last().map_or(0, |e| e.ts.as_millis()) + 1_000;
    for i in 0..40usize {
        let id = devices[i % 20].0.as_str();
        events.push(device_event(
            Timestamp::from_millis(start + i as i64 * 100),
            id,
            security(
                SecurityEventKind::AuthFailure,
                Some(id),
                id,
                "203.0.113.9:5000",
            ),
        ));
        let target = devices[30].0.as_str();
        events.push(device_event(
            Timestamp::from_millis(start + i as i64 * 100 + 50),
            target,
            security(
                SecurityEventKind::AuthFailure,
                Some(target),
                target,
                "198.51.100.7:6000",
            ),
        ));
    }
    let mut all = Vec::new();
    for e in &events {
        one.process(e, &mut all);
    }
    let all = latest(all);
    let rules: std::collections::BTreeSet<&str> = all.values().map(|(r, _)| r.as_str()).collect();
    assert!(
        rules.contains("auth.brute_force.source") && rules.contains("auth.brute_force.device"),
        "{rules:?}"
    );

    let mut split = Vec::new();
    let (mut shared, _) = build(cfg);
    shared.set_scope(crate::Scope::Shared);
    let mut shared_alerts = Vec::new();
    for e in &events {
        shared.process(e, &mut shared_alerts);
    }
    assert!(
        shared_alerts
            .iter()
            .all(|a| shared.is_cross_device(&a.rule))
    );
    split.extend(shared_alerts);
    for p in 0..4 {
        let (mut local, _) = build(cfg);
        local.set_scope(crate::Scope::Local);
        let mut local_alerts = Vec::new();
        for e in events.iter().filter(|e| partition(e) == p) {
            local.process(e, &mut local_alerts);
        }
        assert!(local_alerts.iter().all(|a| !local.is_cross_device(&a.rule)));
        split.extend(local_alerts);
    }
    assert_eq!(latest(split), all);
}

/// An engine that takes a device over from another (a detection worker died) adopts the
/// other's open alerts: the condition seen again after the move, from a history too short
/// to contain the first alert's events, merges into that alert instead of opening another.
#[test]
fn adopted_open_alerts_take_the_repeats_after_a_move() {
    let failure = |ts: i64| {
        device_event(
            Timestamp::from_millis(ts),
            "pump-7",
            security(
                SecurityEventKind::AuthFailure,
                Some("pump-7"),
                "pump-7",
                "203.0.113.9:5000",
            ),
        )
    };
    let mut before = Engine::new(DetectConfig::default());
    let mut raised = Vec::new();
    for i in 0..12 {
        before.process(&failure(1_000 + i * 100), &mut raised);
    }
    let first = raised
        .iter()
        .rfind(|a| a.rule == "auth.brute_force.device")
        .cloned()
        .expect("brute force before the move");
    assert_eq!(first.count, 3);

    // Five minutes later, in another engine that saw none of it.
    let mut after = Engine::new(DetectConfig::default());
    let now = Timestamp::from_millis(300_000);
    assert!(after.adopt_open_alerts(vec![first.clone()], now).is_empty());
    let mut again = Vec::new();
    for i in 0..10 {
        after.process(&failure(300_000 + i * 100), &mut again);
    }
    let repeat = again
        .iter()
        .rfind(|a| a.rule == "auth.brute_force.device")
        .expect("the condition holds again");
    assert_eq!(repeat.id, first.id, "one alert across the move");
    assert_eq!(repeat.count, 4);

    // Past the merge window an adopted alert is ignored.
    let mut late = Engine::new(DetectConfig::default());
    late.adopt_open_alerts(vec![first.clone()], Timestamp::from_millis(10_000_000));
    let mut fresh = Vec::new();
    for i in 0..10 {
        late.process(&failure(10_000_000 + i * 100), &mut fresh);
    }
    assert_ne!(fresh.last().map(|a| &a.id), Some(&first.id));
}

#[test]
fn sensor_noise_at_a_high_report_rate_is_not_flagged_before_it_is_learned() {
    // A weather station reporting every second from its first reading: its noise (a few
    // tenths of a degree) passes the physical limit (0.05 °C/s) but not a hundredth of the
    // physical span (1.2 °C) that stands in for the noise until ten steps are known; a
    // jump of 5 °C is flagged all the same, learned or not.
    let mut fixture = String::from("device wx-0001 weather environment\n");
    let noise = [
        0.0, 0.3, -0.2, 0.4, -0.3, 0.1, 0.5, -0.4, 0.2, 0.0, 0.3, -0.1,
    ];
    for (s, n) in noise.iter().enumerate() {
        fixture.push_str(&format!(
            "@00:00:{s:02} telemetry wx-0001 temp_c={:.1}\n",
            11.0 + n
        ));
    }
    fixture.push_str("@00:00:12 telemetry wx-0001 temp_c=16.0\n");
    fixture.push_str("device wx-0002 weather environment\n");
    fixture.push_str("@00:00:14 telemetry wx-0002 temp_c=11.0\n");
    fixture.push_str("@00:00:15 telemetry wx-0002 temp_c=16.0\n");
    check(
        &fixture,
        expect![[r#"
        @00:00:12 plausibility.rate_of_change high count=1 device=wx-0001 source=- zone=environment key=wx-0001/temp_c :: physically impossible change of temp_c at wx-0001
        @00:00:15 plausibility.rate_of_change high count=1 device=wx-0002 source=- zone=environment key=wx-0002/temp_c :: physically impossible change of temp_c at wx-0002
    "#]],
    );
}

/// An hour of learning (a pump's pressure, a camera's destinations, a firmware the camera
/// moved to), then `{switch}` (a handover or a restart), then what the learned state judges.
fn learned_then(switch: &str) -> String {
    let mut fixture = format!(
        "config baseline.learning_s = 600
         config baseline.min_samples = 30
         {CITY}
         device pump-0001 pump water-ot\n"
    );
    for i in 0..120 {
        let t = i * 30;
        let v = 4.0 + 0.4 * ((f64::from(i) / 10.0).sin());
        fixture.push_str(&format!(
            "@{:02}:{:02}:{:02} telemetry pump-0001 pressure_bar={v:.3}\n",
            t / 3600,
            t / 60 % 60,
            t % 60
        ));
    }
    fixture.push_str(&format!(
        "@00:00:00 repeat 20 30 flow 10.1.0.11:40000 > 203.0.113.9:443 tcp bytes=200000 packets=200
         @00:30:00 telemetry camera-0001 firmware=2.2.0 fps=25
         @01:00:00 {switch}
         @01:00:30 telemetry pump-0001 pressure_bar=12.0
         @01:01:00 telemetry camera-0001 firmware=2.2.0 fps=25
         @01:02:00 repeat 3 1 flow 10.1.0.11:40010 > 198.51.100.200:443 tcp bytes=400000 packets=400\n"
    ));
    fixture
}

#[test]
fn learned_state_survives_a_handover_to_another_engine() {
    check(
        &learned_then("handover"),
        expect![[r#"
            @00:30:00 policy.firmware_change high count=1 device=camera-0001 source=- zone=ps-field key=camera-0001 :: firmware of camera-0001 changed from 2.1.0 to 2.2.0 outside a vendor update
            @01:00:00 handover: 2 devices, 1 class baselines, 0 totals, 1 flow models (911 bytes)
            @01:00:30 baseline.telemetry medium count=1 device=pump-0001 source=- zone=water-ot key=pump-0001/pressure_bar :: pressure_bar of pump-0001 outside its learned baseline
            @01:02:02 baseline.flow high count=1 device=camera-0001 source=198.51.100.200 zone=ps-field key=camera-0001->198.51.100.200 :: camera-0001 sends data to a destination it never used: 198.51.100.200
        "#]],
    );
}

#[test]
fn an_engine_that_starts_from_nothing_learns_again() {
    check(
        &learned_then("restart"),
        expect![[r#"
            @00:30:00 policy.firmware_change high count=1 device=camera-0001 source=- zone=ps-field key=camera-0001 :: firmware of camera-0001 changed from 2.1.0 to 2.2.0 outside a vendor update
            @01:00:00 restart
            @01:01:00 policy.firmware_change high count=1 device=camera-0001 source=- zone=ps-field key=camera-0001 :: firmware of camera-0001 changed from 2.1.0 to 2.2.0 outside a vendor update
        "#]],
    );
}

#[test]
fn a_snapshot_loads_only_what_is_sound_and_known() {
    let mut engine = Engine::new(DetectConfig::default());
    let meta = DeviceMeta::new(DeviceClass::Pump, "water-ot");
    engine.register_device(DeviceId::new("pump-0001").unwrap(), meta.clone());
    engine.register_device(DeviceId::new("pump-0002").unwrap(), meta.clone());
    let mut out = Vec::new();
    for i in 0..50 {
        for pump in ["pump-0001", "pump-0002"] {
            let kind = EventKind::Telemetry {
                readings: readings(&[&format!("pressure_bar={}", 4.0 + (i % 5) as f64 / 10.0)]),
            };
            engine.process(
                &device_event(Timestamp::from_millis(i * 30_000), pump, kind),
                &mut out,
            );
        }
    }
    let learned = engine.learned(|_| true);
    assert_eq!(learned.devices(), 2);
    assert_eq!(learned.as_of(), Timestamp::from_millis(49 * 30_000));
    let only_one = engine.learned(|d| d.as_str() == "pump-0002");
    assert_eq!(only_one.devices(), 1);

    // Another version is refused as a whole.
    let mut json = serde_json::to_value(&learned).unwrap();
    json["version"] = serde_json::json!(99);
    let other: crate::Learned = serde_json::from_value(json).unwrap();
    let mut fresh = Engine::new(DetectConfig::default());
    fresh.register_device(DeviceId::new("pump-0001").unwrap(), meta.clone());
    assert_eq!(
        fresh
            .restore_learned(&other, |_| true)
            .unwrap_err()
            .to_string(),
        "learned state of format version 99 (this engine reads 1)"
    );

    // A device the engine does not know, or that `keep` leaves out, is skipped; a reading
    // whose statistics are not sound is dropped, the rest of its device loads.
    let mut json = serde_json::to_value(&learned).unwrap();
    json["devices"][1]["readings"][0]["stats"][2] = serde_json::json!(-1.0);
    let broken: crate::Learned = serde_json::from_value(json).unwrap();
    let restored = fresh.restore_learned(&broken, |_| true).unwrap();
    assert_eq!((restored.devices, restored.skipped), (1, 1));
    assert_eq!(fresh.learned(|_| true).devices(), 1);
    let mut fresh2 = Engine::new(DetectConfig::default());
    fresh2.register_device(DeviceId::new("pump-0001").unwrap(), meta.clone());
    fresh2.register_device(DeviceId::new("pump-0002").unwrap(), meta);
    let restored = fresh2
        .restore_learned(&broken, |d| d.as_str() == "pump-0002")
        .unwrap();
    assert_eq!((restored.devices, restored.skipped), (1, 1));
    let back = fresh2.learned(|_| true);
    assert_eq!(back.devices(), 1);
    assert!(
        back.devices[0].readings.is_empty(),
        "the unsound reading is not loaded"
    );

    // What loads is what was taken: a snapshot of the restored engine equals the original.
    let mut fresh3 = Engine::new(DetectConfig::default());
    for pump in ["pump-0001", "pump-0002"] {
        fresh3.register_device(
            DeviceId::new(pump).unwrap(),
            DeviceMeta::new(DeviceClass::Pump, "water-ot"),
        );
    }
    fresh3.restore_learned(&learned, |_| true).unwrap();
    assert_eq!(fresh3.learned(|_| true), learned);
}

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

fn run(config: DetectConfig, fixture: &str) -> String {
    let mut engine = Engine::new(config);
    let mut rendered = String::new();
    for line in fixture.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words[0] == "device" {
            let class: DeviceClass = words[2].parse().unwrap();
            engine.register_device(
                DeviceId::new(words[1]).unwrap(),
                DeviceMeta {
                    class,
                    zone: words[3].to_owned(),
                },
            );
            continue;
        }
        let ts = parse_time(words[0]);
        let mut out = Vec::new();
        let event = match words[1] {
            "tick" => {
                engine.tick(ts);
                continue;
            }
            "auth_failure" => Event {
                ts,
                device_id: Some(DeviceId::new(words[2]).unwrap()),
                sector: None,
                kind: security(
                    SecurityEventKind::AuthFailure,
                    Some(words[2]),
                    words[2],
                    words[4],
                ),
            },
            "unknown" => Event {
                ts,
                device_id: None,
                sector: None,
                kind: security(SecurityEventKind::ConnectRefused, None, words[2], words[4]),
            },
            "state" => {
                let (name, value) = words[3].split_once('=').unwrap();
                let value = match value {
                    "true" => Value::Bool(true),
                    "false" => Value::Bool(false),
                    other => Value::Text(other.to_owned()),
                };
                Event {
                    ts,
                    device_id: Some(DeviceId::new(words[2]).unwrap()),
                    sector: None,
                    kind: EventKind::State {
                        readings: vec![Reading {
                            name: name.to_owned(),
                            value,
                            unit: None,
                        }],
                    },
                }
            }
            "command" => Event {
                ts,
                device_id: Some(DeviceId::new(words[2]).unwrap()),
                sector: None,
                kind: EventKind::Command {
                    action: words[3].to_owned(),
                    actor: "test".to_owned(),
                },
            },
            other => panic!("unknown fixture verb {other}"),
        };
        engine.process(&event, &mut out);
        for alert in out {
            rendered.push_str(&format!(
                "{} {} {} count={} device={} source={} zone={} :: {}\n",
                words[0],
                alert.rule,
                alert.severity,
                alert.count,
                alert.device_id.as_ref().map_or("-", |d| d.as_str()),
                alert.source.as_deref().unwrap_or("-"),
                alert.zone.as_deref().unwrap_or("-"),
                alert.title,
            ));
        }
    }
    rendered
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
            @00:00:09 auth.brute_force.device high count=1 device=camera-0001 source=10.0.0.9 zone=ps-field :: credential brute force against camera-0001
            @00:00:09 auth.brute_force.source high count=1 device=- source=10.0.0.9 zone=- :: credential brute force from 10.0.0.9
            @00:00:10 auth.brute_force.device high count=2 device=camera-0001 source=10.0.0.9 zone=ps-field :: credential brute force against camera-0001
            @00:00:10 auth.brute_force.source high count=2 device=- source=10.0.0.9 zone=- :: credential brute force from 10.0.0.9
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
            @00:00:09 auth.brute_force.source high count=1 device=- source=203.0.113.5 zone=- :: password spraying from 203.0.113.5
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
            @00:00:05 actuation.uncommanded critical count=1 device=siren-0001 source=- zone=ps-field :: uncommanded siren actuation: siren-0001 reports sounding
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
            @00:10:01 actuation.uncommanded critical count=1 device=siren-0001 source=- zone=ps-field :: uncommanded siren actuation: siren-0001 reports sounding
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
            @00:00:01 actuation.uncommanded critical count=1 device=siren-0001 source=- zone=ps-field :: uncommanded siren actuation: siren-0001 reports sounding
            @00:00:10 actuation.uncommanded critical count=2 device=siren-0001 source=- zone=ps-field :: uncommanded siren actuation: siren-0001 reports sounding
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
            @00:00:01 actuation.uncommanded critical count=1 device=siren-0001 source=- zone=ps-field :: uncommanded siren actuation: siren-0001 reports sounding
            @00:02:00 actuation.uncommanded critical count=2 device=siren-0001 source=- zone=ps-field :: uncommanded siren actuation: siren-0001 reports sounding
            @00:30:01 actuation.uncommanded critical count=1 device=siren-0001 source=- zone=ps-field :: uncommanded siren actuation: siren-0001 reports sounding
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
            DeviceMeta {
                class: DeviceClass::Siren,
                zone: "ps-field".into(),
            },
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

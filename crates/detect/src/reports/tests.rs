//! Timelines for the citizen-report rules. Fixture lines:
//! - `siren <id> <lat> <lon>` a registered siren and where it is;
//! - `@HH:MM:SS report <lat> <lon> [text]` a `siren_no_storm` report;
//! - `@t other <lat> <lon>` a report of another category;
//! - `@t sounding <id>` / `@t command <id>` siren state and an authorised command;
//! - `@t tick`.

use expect_test::{Expect, expect};
use model::{
    DeviceClass, DeviceId, Event, EventKind, Location, Reading, ReportCategory, Timestamp, Value,
};

use crate::{DetectConfig, DeviceMeta, Engine};

fn at(t: &str) -> Timestamp {
    let p: Vec<i64> = t
        .trim_start_matches('@')
        .split(':')
        .map(|x| x.parse().unwrap())
        .collect();
    Timestamp::from_millis(((p[0] * 60 + p[1]) * 60 + p[2]) * 1000)
}

fn run(fixture: &str) -> String {
    let mut engine = Engine::new(DetectConfig::default());
    let mut out = String::new();
    for line in fixture.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let w: Vec<&str> = line.split_whitespace().collect();
        if w[0] == "siren" {
            let id = DeviceId::new(w[1]).unwrap();
            engine.register_device(id.clone(), DeviceMeta::new(DeviceClass::Siren, "ps-field"));
            engine.register_location(
                id,
                Location {
                    lat: w[2].parse().unwrap(),
                    lon: w[3].parse().unwrap(),
                },
            );
            continue;
        }
        let ts = at(w[0]);
        let device = |i: usize| Some(DeviceId::new(w[i]).unwrap());
        let report = |category| EventKind::CitizenReport {
            category,
            text: w.get(4..).map(|t| t.join(" ")).unwrap_or_default(),
            location: Location {
                lat: w[2].parse().unwrap(),
                lon: w[3].parse().unwrap(),
            },
        };
        let (device_id, kind) = match w[1] {
            "tick" => {
                engine.tick(ts);
                continue;
            }
            "report" => (None, report(ReportCategory::SirenNoStorm)),
            "other" => (None, report(ReportCategory::Other)),
            "sounding" => (
                device(2),
                EventKind::State {
                    readings: vec![Reading {
                        name: "sounding".into(),
                        value: Value::Bool(true),
                        unit: None,
                    }],
                },
            ),
            "command" => (
                device(2),
                EventKind::Command {
                    action: "sound".into(),
                    actor: "ops".into(),
                },
            ),
            other => panic!("unknown verb {other}"),
        };
        let mut alerts = Vec::new();
        engine.process(
            &Event {
                ts,
                device_id,
                sector: None,
                kind,
            },
            &mut alerts,
        );
        for a in alerts {
            out.push_str(&format!(
                "{} {} {} count={} device={} evidence={} :: {}\n",
                w[0],
                a.rule,
                a.severity,
                a.count,
                a.device_id.as_ref().map_or("-", |d| d.as_str()),
                a.evidence.len(),
                a.title
            ));
            if a.rule == "actuation.uncommanded" && a.count > 1 {
                let tail = a.explanation.rsplit(". ").next().unwrap_or("");
                out.push_str(&format!(
                    "    {tail}\n    last evidence: {}\n",
                    a.evidence.last().unwrap().summary
                ));
            }
        }
    }
    out
}

fn check(fixture: &str, expected: Expect) {
    expected.assert_eq(&run(fixture));
}

#[test]
fn three_reports_near_a_silent_siren_raise_an_alert() {
    check(
        "siren siren-1 45.5000 -122.6000
         siren siren-2 45.6000 -122.6000
         @00:00:10 report 45.5010 -122.6010 loud siren, sky is clear
         @00:01:00 report 45.4990 -122.5990
         @00:02:00 other 45.5000 -122.6000
         @00:03:00 report 45.5005 -122.6000 <script>it keeps going</script>
         @00:04:00 report 45.5002 -122.6002",
        expect![[r#"
            @00:03:00 reports.siren_unconfirmed high count=1 device=siren-1 evidence=1 :: 3 residents report a siren near siren-1, which reports nothing
            @00:04:00 reports.siren_unconfirmed high count=2 device=siren-1 evidence=2 :: 4 residents report a siren near siren-1, which reports nothing
        "#]],
    );
}

#[test]
fn reports_far_apart_or_spread_in_time_do_not_add_up() {
    check(
        "siren siren-1 45.5000 -122.6000
         @00:00:00 report 45.5000 -122.6000
         @00:00:30 report 45.6000 -122.6000
         @00:20:00 report 45.5000 -122.6000
         @00:20:30 tick
         @00:40:00 report 45.5000 -122.6000
         @00:41:00 report 40.0000 -100.0000",
        expect![[""]],
    );
}

#[test]
fn a_report_strengthens_an_uncommanded_siren() {
    check(
        "siren siren-1 45.5000 -122.6000
         @00:00:05 sounding siren-1
         @00:00:40 report 45.5010 -122.6000 it woke the baby
         @00:01:10 report 45.5020 -122.6000",
        expect![[r#"
            @00:00:05 actuation.uncommanded critical count=1 device=siren-1 evidence=1 :: uncommanded siren actuation: siren-1 reports sounding
            @00:00:40 actuation.uncommanded critical count=2 device=siren-1 evidence=2 :: uncommanded siren actuation: siren-1 reports sounding
                1 residents reported hearing it.
                last evidence: citizen report 111 m from siren-1: "it woke the baby"
            @00:01:10 actuation.uncommanded critical count=3 device=siren-1 evidence=3 :: uncommanded siren actuation: siren-1 reports sounding
                2 residents reported hearing it.
                last evidence: citizen report 222 m from siren-1: ""
        "#]],
    );
}

#[test]
fn reports_of_a_commanded_siren_are_explained() {
    check(
        "siren siren-1 45.5000 -122.6000
         @00:00:00 command siren-1
         @00:00:05 sounding siren-1
         @00:00:40 report 45.5010 -122.6000
         @00:01:00 report 45.5010 -122.6000
         @00:02:00 report 45.5010 -122.6000
         @00:03:00 report 45.5010 -122.6000",
        expect![[""]],
    );
}

#[test]
fn report_state_is_bounded() {
    let mut engine = Engine::new(DetectConfig::default());
    let id = DeviceId::new("siren-1").unwrap();
    engine.register_device(id.clone(), DeviceMeta::new(DeviceClass::Siren, "z"));
    engine.register_location(id, Location { lat: 0.0, lon: 0.0 });
    let mut out = Vec::new();
    for i in 0..(super::MAX_REPORTS as i64 + 500) {
        let event = Event {
            ts: Timestamp::from_millis(i),
            device_id: None,
            sector: None,
            kind: EventKind::CitizenReport {
                category: ReportCategory::SirenNoStorm,
                text: String::new(),
                location: Location { lat: 0.0, lon: 0.0 },
            },
        };
        engine.process(&event, &mut out);
        out.clear();
    }
    assert!(engine.reports.reports.len() <= super::MAX_REPORTS);
    engine.tick(Timestamp::from_millis(10_000_000));
    assert_eq!(engine.reports.reports.len(), 0);
}

//! Data-driven tests: a timeline of alerts and operations goes in, the rendered incidents
//! (state, times, timeline) come out.
//!
//! Fixture lines (time is `@HH:MM:SS` from the epoch):
//! - `@t alert <id> <rule> <severity> [device=D] [source=S] [zone=Z] [evidence=@t] [count=N] [text=WORD] [key=K]`
//! - `@t <ack|contain|resolve|close> <incident> by <actor>`
//! - `@t assign <incident> <owner> by <actor>`
//! - `@t note <incident> by <actor> <text...>`
//! - `@t request <incident> <action> <device> <auto|approval> by <actor>`
//! - `@t approve|reject <incident> <action-id> by <actor>`
//! - `@t done|fail <incident> <action-id> <detail...>`
//!
//! Operations that are refused render as `! <error>`; actions a playbook adds render as
//! `> proposed <incident> <ids>`, and automatic ones the engine hands out as
//! `> execute <incident> <action-id>`.

use expect_test::{Expect, expect};
use model::{
    ActionKind, ActionMode, Alert, AlertId, DeviceId, Evidence, IncidentId, IncidentState,
    Severity, TimelineKind, Timestamp,
};
use proptest::prelude::*;

use crate::{Correlator, CorrelatorConfig, Op, Playbook, PlaybookAction, indicator_of};

fn parse_time(t: &str) -> Timestamp {
    let t = t.trim_start_matches('@');
    let parts: Vec<i64> = t.split(':').map(|p| p.parse().expect("time")).collect();
    Timestamp::from_millis((parts[0] * 3600 + parts[1] * 60 + parts[2]) * 1000)
}

fn fmt_time(ts: Timestamp) -> String {
    let s = ts.as_millis() / 1000;
    format!("@{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

fn fmt_ms(ms: Option<i64>) -> String {
    ms.map_or("-".to_owned(), |ms| format!("{}s", ms / 1000))
}

fn alert(ts: Timestamp, words: &[&str]) -> Alert {
    let severity = match words[2] {
        "info" => Severity::Info,
        "low" => Severity::Low,
        "medium" => Severity::Medium,
        "high" => Severity::High,
        "critical" => Severity::Critical,
        other => panic!("severity {other}"),
    };
    let mut alert = Alert {
        id: AlertId(words[0].to_owned()),
        rule: words[1].to_owned(),
        key: String::new(),
        severity,
        ts,
        last_ts: ts,
        count: 1,
        device_id: None,
        zone: None,
        source: None,
        title: format!("{} alert", words[1]),
        explanation: String::new(),
        evidence: Vec::new(),
    };
    for word in &words[3..] {
        let (key, value) = word.split_once('=').expect("key=value");
        match key {
            "device" => alert.device_id = Some(DeviceId::new(value).unwrap()),
            "source" => alert.source = Some(value.to_owned()),
            "zone" => alert.zone = Some(value.to_owned()),
            "count" => alert.count = value.parse().unwrap(),
            "text" => alert.explanation = value.to_owned(),
            "key" => alert.key = value.to_owned(),
            "evidence" => alert.evidence.push(Evidence {
                ts: parse_time(value),
                device_id: None,
                summary: "evidence".into(),
            }),
            other => panic!("unknown alert field {other}"),
        }
    }
    if alert.count > 1 {
        alert.ts = Timestamp::from_millis(0);
    }
    alert
}

fn actor_of<'a>(words: &[&'a str]) -> &'a str {
    let pos = words.iter().position(|w| *w == "by").expect("by <actor>");
    words[pos + 1]
}

fn run(playbooks: Vec<Playbook>, fixture: &str) -> String {
    let mut correlator = Correlator::new(CorrelatorConfig::default(), playbooks, 1);
    let mut closed = Vec::new();
    let mut out = String::new();
    for line in fixture.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let at = parse_time(words[0]);
        if words[1] == "alert" {
            let outcome = correlator.on_alert(&alert(at, &words[2..]));
            if !outcome.proposed.is_empty() {
                out.push_str(&format!(
                    "{} > proposed {} {}\n",
                    words[0],
                    outcome.incident.id,
                    outcome.proposed.join(",")
                ));
            }
            for action in outcome.execute {
                out.push_str(&format!(
                    "{} > execute {} {action}\n",
                    words[0], outcome.incident.id
                ));
            }
            continue;
        }
        let id = IncidentId(words[2].to_owned());
        let op = match words[1] {
            "ack" => Op::Transition(IncidentState::Triaged),
            "contain" => Op::Transition(IncidentState::Contained),
            "resolve" => Op::Transition(IncidentState::Resolved),
            "close" => Op::Transition(IncidentState::Closed),
            "reopen" => Op::Transition(IncidentState::New),
            "assign" => Op::Assign(words[3].to_owned()),
            "note" => Op::Note(words[5..].join(" ")),
            "tlp" => Op::SetTlp(words[3].parse::<model::Tlp>().unwrap()),
            "request" => Op::RequestAction {
                kind: words[3].parse::<ActionKind>().unwrap(),
                device_id: DeviceId::new(words[4]).unwrap(),
                mode: if words[5] == "auto" {
                    ActionMode::Auto
                } else {
                    ActionMode::Approval
                },
                // `... auto rate=2/5/60 by alice`: messages per second, burst, seconds.
                rate_limit: words.get(6).and_then(|w| w.strip_prefix("rate=")).map(|r| {
                    let n: Vec<&str> = r.split('/').collect();
                    model::RateLimitParams {
                        messages_per_s: n[0].parse().unwrap(),
                        burst: n[1].parse().unwrap(),
                        duration_s: n[2].parse().unwrap(),
                    }
                }),
            },
            "approve" | "reject" => Op::Decide {
                action_id: words[3].to_owned(),
                approve: words[1] == "approve",
            },
            "done" | "fail" => Op::ActionResult {
                action_id: words[3].to_owned(),
                ok: words[1] == "done",
                detail: words[4..].join(" "),
            },
            other => panic!("unknown fixture verb {other}"),
        };
        let actor = if matches!(words[1], "done" | "fail") {
            "executor"
        } else {
            actor_of(&words)
        };
        let incident = correlator
            .get(&id)
            .cloned()
            .or_else(|| {
                closed
                    .iter()
                    .find(|i: &&model::Incident| i.id == id)
                    .cloned()
            })
            .unwrap_or_else(|| panic!("no incident {id}"));
        match correlator.apply(incident, op, actor, at) {
            Ok((incident, effects)) => {
                for action in effects.execute {
                    out.push_str(&format!("{} > execute {id} {action}\n", words[0]));
                }
                closed.retain(|i| i.id != incident.id);
                if !incident.state.is_open() {
                    closed.push(incident);
                }
            }
            Err(err) => out.push_str(&format!("{} ! {err}\n", words[0])),
        }
    }
    let mut incidents: Vec<model::Incident> = closed;
    for id in correlator.open.keys() {
        incidents.push(correlator.get(id).unwrap().clone());
    }
    incidents.sort_by(|a, b| a.id.cmp(&b.id));
    for incident in incidents {
        render(&incident, &mut out);
    }
    out
}

fn render(incident: &model::Incident, out: &mut String) {
    let d = incident.durations();
    out.push_str(&format!(
        "{} {} {} owner={} devices=[{}] sources=[{}] zones=[{}] indicators=[{}] alerts={}\n",
        incident.id,
        incident.state,
        incident.severity,
        incident.owner.as_deref().unwrap_or("-"),
        incident
            .devices
            .iter()
            .map(|d| d.as_str())
            .collect::<Vec<_>>()
            .join(","),
        incident.sources.join(","),
        incident.zones.join(","),
        incident.indicators.join(","),
        incident.alerts.len(),
    ));
    out.push_str(&format!(
        "  detect={} ack={} contain={} resolve={}\n",
        fmt_ms(Some(d.time_to_detect_ms)),
        fmt_ms(d.time_to_acknowledge_ms),
        fmt_ms(d.time_to_contain_ms),
        fmt_ms(d.time_to_resolve_ms),
    ));
    for entry in &incident.timeline {
        let what = match &entry.what {
            TimelineKind::AlertAdded {
                alert_id,
                rule,
                severity,
                correlation,
            } => format!("alert {alert_id} {rule} {severity} ({correlation})"),
            TimelineKind::SeverityRaised { from, to } => format!("severity {from} -> {to}"),
            TimelineKind::StateChanged { from, to } => format!("state {from} -> {to}"),
            TimelineKind::OwnerChanged { from, to } => {
                format!("owner {} -> {to}", from.as_deref().unwrap_or("-"))
            }
            TimelineKind::Note { text } => format!("note {text:?}"),
            TimelineKind::TlpChanged { from, to } => format!("tlp {from} -> {to}"),
            TimelineKind::Action {
                action_id,
                kind,
                device_id,
                status,
                detail,
            } => format!(
                "action {action_id} {kind} {device_id} {} {}",
                status.as_str(),
                detail.as_deref().unwrap_or("")
            )
            .trim_end()
            .to_owned(),
        };
        out.push_str(&format!(
            "  {} {} {what}\n",
            fmt_time(entry.ts),
            entry.actor
        ));
    }
    for alert in &incident.alerts {
        if alert.count > 1 {
            out.push_str(&format!("  alert {} count={}\n", alert.id, alert.count));
        }
    }
}

fn check(fixture: &str, expect: Expect) {
    expect.assert_eq(&run(Vec::new(), fixture));
}

fn check_with(playbooks: Vec<Playbook>, fixture: &str, expect: Expect) {
    expect.assert_eq(&run(playbooks, fixture));
}

#[test]
fn alerts_about_one_device_form_one_incident() {
    check(
        "@00:00:10 alert a1 auth.brute_force.device high device=camera-1 source=10.0.0.9 evidence=@00:00:01
         @00:05:00 alert a2 mqtt.topic_abuse high device=camera-1
         @00:06:00 alert a3 auth.brute_force.device high device=camera-2 source=10.0.0.200",
        expect![[r#"
            INC-000001 new high owner=- devices=[camera-1] sources=[10.0.0.9] zones=[] indicators=[] alerts=2
              detect=9s ack=- contain=- resolve=-
              @00:00:10 correlator alert a1 auth.brute_force.device high (opened)
              @00:05:00 correlator alert a2 mqtt.topic_abuse high (same device camera-1)
            INC-000002 new high owner=- devices=[camera-2] sources=[10.0.0.200] zones=[] indicators=[] alerts=1
              detect=0s ack=- contain=- resolve=-
              @00:06:00 correlator alert a3 auth.brute_force.device high (opened)
        "#]],
    );
}

#[test]
fn one_source_attacking_many_devices_is_one_campaign() {
    check(
        "@00:00:10 alert a1 auth.brute_force.device high device=camera-1 source=203.0.113.5
         @00:00:20 alert a2 auth.brute_force.device high device=meter-7 source=203.0.113.5
         @00:00:30 alert a3 auth.brute_force.source high source=203.0.113.5",
        expect![[r#"
            INC-000001 new high owner=- devices=[camera-1,meter-7] sources=[203.0.113.5] zones=[] indicators=[] alerts=3
              detect=0s ack=- contain=- resolve=-
              @00:00:10 correlator alert a1 auth.brute_force.device high (opened)
              @00:00:20 correlator alert a2 auth.brute_force.device high (same source 203.0.113.5)
              @00:00:30 correlator alert a3 auth.brute_force.source high (same source 203.0.113.5)
        "#]],
    );
}

#[test]
fn same_zone_correlates_only_within_the_window() {
    check(
        "@00:00:00 alert a1 actuation.uncommanded critical device=siren-1 zone=north
         @00:10:00 alert a2 actuation.uncommanded critical device=siren-2 zone=north
         @01:00:00 alert a3 actuation.uncommanded critical device=siren-3 zone=north
         @01:00:05 alert a4 plausibility.range medium device=level-1 zone=south",
        expect![[r#"
            INC-000001 new critical owner=- devices=[siren-1,siren-2] sources=[] zones=[north] indicators=[] alerts=2
              detect=0s ack=- contain=- resolve=-
              @00:00:00 correlator alert a1 actuation.uncommanded critical (opened)
              @00:10:00 correlator alert a2 actuation.uncommanded critical (same zone north)
            INC-000002 new critical owner=- devices=[siren-3] sources=[] zones=[north] indicators=[] alerts=1
              detect=0s ack=- contain=- resolve=-
              @01:00:00 correlator alert a3 actuation.uncommanded critical (opened)
            INC-000003 new medium owner=- devices=[level-1] sources=[] zones=[south] indicators=[] alerts=1
              detect=0s ack=- contain=- resolve=-
              @01:00:05 correlator alert a4 plausibility.range medium (opened)
        "#]],
    );
}

#[test]
fn same_indicator_correlates_across_devices() {
    check(
        "@00:00:00 alert a1 intel.indicator high device=pump-1 zone=water text=matched:indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f
         @02:00:00 alert a2 intel.indicator high device=camera-9 zone=video text=indicator--8E2E2D2B-17D4-4CBF-938F-98EE46B3CD3F
         @02:00:01 alert a3 intel.indicator high device=camera-8 zone=parks text=indicator--00000000-0000-0000-0000-000000000000
         @02:00:02 alert a4 intel.indicator high device=meter-3 zone=energy key=indicator--00000000-0000-0000-0000-000000000000/198.51.100.7",
        expect![[r#"
            INC-000001 new high owner=- devices=[pump-1,camera-9] sources=[] zones=[water,video] indicators=[indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f] alerts=2
              detect=0s ack=- contain=- resolve=-
              @00:00:00 correlator alert a1 intel.indicator high (opened)
              @02:00:00 correlator alert a2 intel.indicator high (same indicator indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f)
            INC-000002 new high owner=- devices=[camera-8,meter-3] sources=[] zones=[parks,energy] indicators=[indicator--00000000-0000-0000-0000-000000000000] alerts=2
              detect=0s ack=- contain=- resolve=-
              @02:00:01 correlator alert a3 intel.indicator high (opened)
              @02:00:02 correlator alert a4 intel.indicator high (same indicator indicator--00000000-0000-0000-0000-000000000000)
        "#]],
    );
}

#[test]
fn lifecycle_records_times_owner_notes_and_severity() {
    check(
        "@00:00:10 alert a1 rate.message_flood medium device=meter-1 evidence=@00:00:04
         @00:01:10 ack INC-000001 by alice
         @00:02:00 alert a2 policy.firmware_change high device=meter-1
         @00:03:00 note INC-000001 by alice firmware pushed from an unknown server
         @00:04:10 contain INC-000001 by bob
         @00:10:10 resolve INC-000001 by bob
         @00:20:00 assign INC-000001 carol by bob
         @00:30:00 close INC-000001 by carol",
        expect![[r#"
            INC-000001 closed high owner=carol devices=[meter-1] sources=[] zones=[] indicators=[] alerts=2
              detect=6s ack=60s contain=240s resolve=600s
              @00:00:10 correlator alert a1 rate.message_flood medium (opened)
              @00:01:10 alice state new -> triaged
              @00:01:10 alice owner - -> alice
              @00:02:00 correlator severity medium -> high
              @00:02:00 correlator alert a2 policy.firmware_change high (same device meter-1)
              @00:03:00 alice note "firmware pushed from an unknown server"
              @00:04:10 bob state triaged -> contained
              @00:10:10 bob state contained -> resolved
              @00:20:00 bob owner alice -> carol
              @00:30:00 carol state resolved -> closed
        "#]],
    );
}

#[test]
fn refused_operations_change_nothing() {
    check(
        "@00:00:10 alert a1 rate.message_flood medium device=meter-1
         @00:01:00 contain INC-000001 by alice
         @00:02:00 ack INC-000001 by alice
         @00:02:00 note INC-000001 by alice
         @00:03:00 approve INC-000001 A9 by sue
         @00:04:00 close INC-000001 by alice
         @00:05:00 note INC-000001 by alice too late",
        expect![[r#"
            @00:02:00 ! incident INC-000001 is contained; it cannot move to triaged (states only move forward)
            @00:02:00 ! note must not be empty
            @00:03:00 ! no action A9 on incident INC-000001
            @00:05:00 ! incident INC-000001 is closed
            INC-000001 closed medium owner=alice devices=[meter-1] sources=[] zones=[] indicators=[] alerts=1
              detect=0s ack=50s contain=50s resolve=230s
              @00:00:10 correlator alert a1 rate.message_flood medium (opened)
              @00:01:00 alice state new -> contained
              @00:01:00 alice owner - -> alice
              @00:04:00 alice state contained -> closed
        "#]],
    );
}

#[test]
fn a_repeat_updates_the_alert_and_a_resolved_incident_takes_no_more_alerts() {
    check(
        "@00:00:10 alert a1 actuation.uncommanded critical device=siren-1
         @00:02:00 alert a1 actuation.uncommanded critical device=siren-1 count=3
         @00:03:00 resolve INC-000001 by alice
         @00:04:00 alert a2 actuation.uncommanded critical device=siren-1",
        expect![[r#"
            INC-000001 resolved critical owner=alice devices=[siren-1] sources=[] zones=[] indicators=[] alerts=1
              detect=0s ack=170s contain=- resolve=170s
              @00:00:10 correlator alert a1 actuation.uncommanded critical (opened)
              @00:03:00 alice state new -> resolved
              @00:03:00 alice owner - -> alice
              alert a1 count=3
            INC-000002 new critical owner=- devices=[siren-1] sources=[] zones=[] indicators=[] alerts=1
              detect=0s ack=- contain=- resolve=-
              @00:04:00 correlator alert a2 actuation.uncommanded critical (opened)
        "#]],
    );
}

fn siren_playbook() -> Vec<Playbook> {
    vec![
        Playbook {
            name: "uncommanded-siren".into(),
            rules: vec!["actuation.uncommanded".into()],
            min_severity: None,
            actions: vec![
                PlaybookAction {
                    action: ActionKind::SilenceSiren,
                    mode: ActionMode::Auto,
                    rate_limit: None,
                },
                PlaybookAction {
                    action: ActionKind::Quarantine,
                    mode: ActionMode::Approval,
                    rate_limit: None,
                },
            ],
        },
        Playbook {
            name: "brute-force".into(),
            rules: vec!["auth.*".into()],
            min_severity: Some(Severity::High),
            actions: vec![PlaybookAction {
                action: ActionKind::RotateCredentials,
                mode: ActionMode::Approval,
                rate_limit: None,
            }],
        },
        Playbook {
            name: "flood".into(),
            rules: vec!["rate.message_flood".into()],
            min_severity: None,
            actions: vec![PlaybookAction {
                action: ActionKind::RateLimit,
                mode: ActionMode::Auto,
                rate_limit: Some(model::RateLimitParams {
                    messages_per_s: 2.0,
                    burst: 5,
                    duration_s: 600,
                }),
            }],
        },
    ]
}

#[test]
fn playbooks_propose_auto_and_approval_actions() {
    check_with(
        siren_playbook(),
        "@00:00:05 alert a1 actuation.uncommanded critical device=siren-1 zone=north
         @00:00:06 done INC-000001 A1 all-clear delivered
         @00:00:20 alert a2 actuation.uncommanded critical device=siren-1 zone=north
         @00:01:00 approve INC-000001 A2 by sue
         @00:01:01 done INC-000001 A2 sessions dropped 1
         @00:01:02 done INC-000001 A2 again
         @00:02:00 alert a3 auth.brute_force.source high source=203.0.113.5
         @00:03:00 alert a4 auth.brute_force.device medium device=meter-2
         @00:04:00 request INC-000001 rate_limit siren-1 auto by alice
         @00:04:01 done INC-000001 A3 limit applied to 1 live session
         @00:04:10 request INC-000001 rate_limit siren-1 auto rate=0/5/60 by alice
         @00:04:20 request INC-000001 quarantine siren-1 auto rate=1/5/60 by alice
         @00:04:30 alert a5 rate.message_flood medium device=meter-3
         @00:05:00 request INC-000001 revoke_credentials siren-1 approval by alice
         @00:05:30 reject INC-000001 A4 by sue",
        expect![[r#"
            @00:00:05 > proposed INC-000001 A1,A2
            @00:00:05 > execute INC-000001 A1
            @00:01:00 > execute INC-000001 A2
            @00:01:02 ! action A2 is done, not approved
            @00:04:00 > execute INC-000001 A3
            @00:04:10 ! rate_limit: messages_per_s must be between 0.001 and 100000, not 0
            @00:04:20 ! rate_limit parameters belong to action rate_limit, not quarantine
            @00:04:30 > proposed INC-000004 A1
            @00:04:30 > execute INC-000004 A1
            INC-000001 new critical owner=- devices=[siren-1] sources=[] zones=[north] indicators=[] alerts=2
              detect=0s ack=- contain=- resolve=-
              @00:00:05 correlator alert a1 actuation.uncommanded critical (opened)
              @00:00:05 playbook:uncommanded-siren action A1 silence_siren siren-1 approved requested (uncommanded-siren)
              @00:00:05 playbook:uncommanded-siren action A2 quarantine siren-1 pending requested (uncommanded-siren)
              @00:00:06 executor action A1 silence_siren siren-1 done all-clear delivered
              @00:00:20 correlator alert a2 actuation.uncommanded critical (same device siren-1)
              @00:01:00 sue action A2 quarantine siren-1 approved
              @00:01:01 executor action A2 quarantine siren-1 done sessions dropped 1
              @00:04:00 alice action A3 rate_limit siren-1 approved requested (manual): 1 msg/s, burst 10, for 3600 s
              @00:04:01 executor action A3 rate_limit siren-1 done limit applied to 1 live session
              @00:05:00 alice action A4 revoke_credentials siren-1 pending requested (manual)
              @00:05:30 sue action A4 revoke_credentials siren-1 rejected
            INC-000002 new high owner=- devices=[] sources=[203.0.113.5] zones=[] indicators=[] alerts=1
              detect=0s ack=- contain=- resolve=-
              @00:02:00 correlator alert a3 auth.brute_force.source high (opened)
            INC-000003 new medium owner=- devices=[meter-2] sources=[] zones=[] indicators=[] alerts=1
              detect=0s ack=- contain=- resolve=-
              @00:03:00 correlator alert a4 auth.brute_force.device medium (opened)
            INC-000004 new medium owner=- devices=[meter-3] sources=[] zones=[] indicators=[] alerts=1
              detect=0s ack=- contain=- resolve=-
              @00:04:30 correlator alert a5 rate.message_flood medium (opened)
              @00:04:30 playbook:flood action A1 rate_limit meter-3 approved requested (flood): 2 msg/s, burst 5, for 600 s
        "#]],
    );
}

/// The stored and API form of an incident (a versioned document: fields may be added with
/// defaults, never renamed).
#[test]
fn incident_json_is_stable_and_round_trips() {
    let mut correlator = Correlator::new(CorrelatorConfig::default(), siren_playbook(), 41);
    let outcome = correlator.on_alert(&alert(
        parse_time("@00:00:05"),
        &[
            "a1",
            "actuation.uncommanded",
            "critical",
            "device=siren-1",
            "zone=north",
        ],
    ));
    let (incident, _) = correlator
        .apply(
            outcome.incident,
            Op::Note("checked on site".into()),
            "alice",
            parse_time("@00:01:00"),
        )
        .unwrap();
    let text = serde_json::to_string_pretty(&incident).unwrap();
    let back: model::Incident = serde_json::from_str(&text).unwrap();
    assert_eq!(back, incident);
    expect![[r#"
        {
          "id": "INC-000041",
          "title": "actuation.uncommanded alert",
          "state": "new",
          "severity": "critical",
          "tlp": "amber",
          "devices": [
            "siren-1"
          ],
          "zones": [
            "north"
          ],
          "sources": [],
          "indicators": [],
          "alerts": [
            {
              "id": "a1",
              "rule": "actuation.uncommanded",
              "severity": "critical",
              "ts": "1970-01-01T00:00:05.000Z",
              "last_ts": "1970-01-01T00:00:05.000Z",
              "count": 1,
              "device_id": "siren-1",
              "title": "actuation.uncommanded alert",
              "correlation": {
                "by": "opened"
              }
            }
          ],
          "actions": [
            {
              "id": "A1",
              "kind": "silence_siren",
              "device_id": "siren-1",
              "mode": "auto",
              "status": "approved",
              "origin": "uncommanded-siren",
              "requested_by": "playbook:uncommanded-siren",
              "requested_at": "1970-01-01T00:00:05.000Z",
              "decided_by": "playbook:uncommanded-siren",
              "decided_at": "1970-01-01T00:00:05.000Z"
            },
            {
              "id": "A2",
              "kind": "quarantine",
              "device_id": "siren-1",
              "mode": "approval",
              "status": "pending",
              "origin": "uncommanded-siren",
              "requested_by": "playbook:uncommanded-siren",
              "requested_at": "1970-01-01T00:00:05.000Z"
            }
          ],
          "times": {
            "first_evidence": "1970-01-01T00:00:05.000Z",
            "first_alert": "1970-01-01T00:00:05.000Z"
          },
          "created_at": "1970-01-01T00:00:05.000Z",
          "updated_at": "1970-01-01T00:01:00.000Z",
          "timeline": [
            {
              "ts": "1970-01-01T00:00:05.000Z",
              "actor": "correlator",
              "type": "alert_added",
              "alert_id": "a1",
              "rule": "actuation.uncommanded",
              "severity": "critical",
              "correlation": {
                "by": "opened"
              }
            },
            {
              "ts": "1970-01-01T00:00:05.000Z",
              "actor": "playbook:uncommanded-siren",
              "type": "action",
              "action_id": "A1",
              "kind": "silence_siren",
              "device_id": "siren-1",
              "status": "approved",
              "detail": "requested (uncommanded-siren)"
            },
            {
              "ts": "1970-01-01T00:00:05.000Z",
              "actor": "playbook:uncommanded-siren",
              "type": "action",
              "action_id": "A2",
              "kind": "quarantine",
              "device_id": "siren-1",
              "status": "pending",
              "detail": "requested (uncommanded-siren)"
            },
            {
              "ts": "1970-01-01T00:01:00.000Z",
              "actor": "alice",
              "type": "note",
              "text": "checked on site"
            }
          ],
          "timeline_dropped": 0
        }"#]]
    .assert_eq(&text);
}

#[test]
fn playbook_patterns_are_validated() {
    let mut playbook = siren_playbook().remove(0);
    assert_eq!(playbook.validate(), Ok(()));
    playbook.rules = vec!["auth.*.device".into()];
    assert!(playbook.validate().unwrap_err().contains("may only end in"));
    playbook.rules = vec![];
    assert!(playbook.validate().unwrap_err().contains("matches no rule"));
}

#[test]
fn open_incidents_are_bounded() {
    let config = CorrelatorConfig {
        max_open: 3,
        ..CorrelatorConfig::default()
    };
    let mut correlator = Correlator::new(config, Vec::new(), 1);
    for i in 0..10 {
        let a = alert(
            Timestamp::from_millis(i * 1000),
            &[&format!("a{i}"), "x", "low", &format!("device=d-{i}")],
        );
        assert!(correlator.on_alert(&a).created);
    }
    assert_eq!(correlator.stats().open, 3);
    assert_eq!(correlator.stats().evicted, 7);
    assert_eq!(correlator.alert_index.len(), 3);
}

proptest! {
    // Whatever text an alert carries, the indicator scan never panics, and what it finds
    // has the STIX id shape.
    #[test]
    fn indicator_scan_is_total(text in ".{0,200}", hex in "[0-9a-f]{8}") {
        let mut a = alert(Timestamp::from_millis(0), &["a", "intel.indicator", "high"]);
        a.explanation = format!("{text} indicator--{hex}-0000-4000-8000-000000000000 {text}");
        let found = indicator_of(&a);
        prop_assert!(found.is_some());
        let found = found.unwrap();
        prop_assert_eq!(found.len(), "indicator--".len() + 36);
        a.explanation = text.clone();
        a.title = text;
        if let Some(found) = indicator_of(&a) {
            prop_assert!(found.starts_with("indicator--"));
        }
    }
}

#[test]
fn an_incident_carries_the_default_tlp_until_someone_changes_it() {
    let mut c = Correlator::new(CorrelatorConfig::default(), Vec::new(), 1);
    let opened = c.on_alert(&alert(
        Timestamp::from_millis(1000),
        &["a1", "flow.scan", "high", "source=203.0.113.5"],
    ));
    assert_eq!(opened.incident.tlp, model::Tlp::Amber);
    assert!(!opened.incident.state.is_confirmed());
    let red = CorrelatorConfig {
        default_tlp: model::Tlp::Red,
        ..CorrelatorConfig::default()
    };
    let mut c2 = Correlator::new(red, Vec::new(), 1);
    let opened = c2.on_alert(&alert(
        Timestamp::from_millis(1000),
        &["a1", "flow.scan", "high", "source=203.0.113.5"],
    ));
    assert_eq!(opened.incident.tlp, model::Tlp::Red);
    // An incident stored before incidents carried a TLP shares nothing until set.
    let mut legacy = serde_json::to_value(&opened.incident).unwrap();
    legacy.as_object_mut().unwrap().remove("tlp");
    let legacy: model::Incident = serde_json::from_value(legacy).unwrap();
    assert_eq!(legacy.tlp, model::Tlp::Red);
    check(
        "@00:00:10 alert a1 flow.scan high source=203.0.113.5
         @00:01:00 tlp INC-000001 green by ada
         @00:01:10 tlp INC-000001 green by ada
         @00:02:00 ack INC-000001 by ada
         @00:03:00 tlp INC-000001 red by bob
         @00:04:00 close INC-000001 by bob
         @00:05:00 tlp INC-000001 amber by bob",
        expect![[r#"
            @00:05:00 ! incident INC-000001 is closed
            INC-000001 closed high owner=ada devices=[] sources=[203.0.113.5] zones=[] indicators=[] alerts=1
              detect=0s ack=110s contain=- resolve=230s
              @00:00:10 correlator alert a1 flow.scan high (opened)
              @00:01:00 ada tlp amber -> green
              @00:02:00 ada state new -> triaged
              @00:02:00 ada owner - -> ada
              @00:03:00 bob tlp green -> red
              @00:04:00 bob state triaged -> closed
        "#]],
    );
    for (state, confirmed) in [
        (IncidentState::New, false),
        (IncidentState::Triaged, true),
        (IncidentState::Contained, true),
        (IncidentState::Resolved, true),
        (IncidentState::Closed, true),
    ] {
        assert_eq!(state.is_confirmed(), confirmed, "{state}");
    }
}

#[test]
fn playbook_rate_limit_parameters_are_checked() {
    let playbook = |action: ActionKind, params: model::RateLimitParams| Playbook {
        name: "p".into(),
        rules: vec!["*".into()],
        min_severity: None,
        actions: vec![PlaybookAction {
            action,
            mode: ActionMode::Auto,
            rate_limit: Some(params),
        }],
    };
    let good = model::RateLimitParams {
        messages_per_s: 0.5,
        burst: 3,
        duration_s: 60,
    };
    let results: Vec<Result<(), String>> = [
        playbook(ActionKind::RateLimit, good),
        playbook(ActionKind::Quarantine, good),
        playbook(
            ActionKind::RateLimit,
            model::RateLimitParams {
                messages_per_s: f64::NAN,
                ..good
            },
        ),
        playbook(
            ActionKind::RateLimit,
            model::RateLimitParams { burst: 0, ..good },
        ),
        playbook(
            ActionKind::RateLimit,
            model::RateLimitParams {
                duration_s: 31 * 86_400,
                ..good
            },
        ),
    ]
    .iter()
    .map(Playbook::validate)
    .collect();
    expect![[r#"
        [
            Ok(
                (),
            ),
            Err(
                "playbook \"p\": rate_limit parameters belong to action rate_limit, not quarantine",
            ),
            Err(
                "playbook \"p\": rate_limit: messages_per_s must be between 0.001 and 100000, not NaN",
            ),
            Err(
                "playbook \"p\": rate_limit: burst must be between 1 and 1000000, not 0",
            ),
            Err(
                "playbook \"p\": rate_limit: duration_s must be between 1 and 2592000 (30 days), not 2678400",
            ),
        ]
    "#]].assert_debug_eq(&results);
    // A step without parameters takes the default limit; other actions have none.
    let step = PlaybookAction {
        action: ActionKind::RateLimit,
        mode: ActionMode::Auto,
        rate_limit: None,
    };
    assert_eq!(
        step.rate_limit_params(),
        Some(model::RateLimitParams::default())
    );
    let step = PlaybookAction {
        action: ActionKind::Quarantine,
        ..step
    };
    assert_eq!(step.rate_limit_params(), None);
}

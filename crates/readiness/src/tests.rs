//! The index computed from small city fixtures: the rendered scorecards are snapshots.

use expect_test::{Expect, expect};
use model::{Credential, Device, DeviceClass, DeviceId, DeviceStatus, Severity, Timestamp};

use crate::{
    DeviceInput, ExerciseRun, Exercises, FirmwareCatalogue, FirmwareRelease, IncidentInput,
    Incidents, Index, Input, Observed, compute, to_csv,
};

const NOW: i64 = 1_800_000_000_000;
const MIN: i64 = 60_000;

fn device(id: &str, class: DeviceClass, firmware: &str, credential: &str) -> Device {
    let credentials = match credential {
        "cert" => vec![Credential::Certificate {
            sha256: "ab".repeat(32),
        }],
        "generated" => vec![Credential::Secret {
            hash: "$sha256$x".into(),
        }],
        "chosen" => vec![Credential::Secret {
            hash: "$argon2id$x".into(),
        }],
        _ => vec![],
    };
    Device {
        id: DeviceId::new(id).unwrap(),
        sector: class.sector(),
        class,
        zone: "z".into(),
        owner: "o".into(),
        vendor: "acme".into(),
        model: class.as_str().into(),
        firmware: firmware.into(),
        addresses: vec![],
        location: None,
        credentials,
        status: DeviceStatus::Active,
        created_at: Timestamp::from_millis(0),
    }
}

fn seen(ago_min: Option<i64>, cert: Option<bool>) -> Observed {
    Observed {
        last_seen: ago_min.map(|m| Timestamp::from_millis(NOW - m * MIN)),
        connect_via_certificate: cert,
    }
}

fn render(index: &Index) -> String {
    let mut out = String::new();
    let mut card = |name: &str, card: &crate::Scorecard| {
        out.push_str(&format!(
            "{name}: {} ({} devices)\n",
            card.score.map_or("no data".into(), |s| format!("{s:.1}")),
            card.devices
        ));
        for v in &card.values {
            match (&v.score, &v.no_data) {
                (Some(s), _) => out.push_str(&format!("  {} {:.2} {}\n", v.id, s, v.detail)),
                (None, Some(why)) => out.push_str(&format!("  {} no data: {why}\n", v.id)),
                (None, None) => unreachable!(),
            }
        }
    };
    card("city", &index.city);
    for s in &index.sectors {
        card(s.sector.as_str(), &s.scorecard);
    }
    out.push_str(&format!("incidents: {}\n", index.incident_source));
    for i in &index.improvements {
        out.push_str(&format!(
            "improve {} +{:.1}: {}\n",
            i.indicator, i.gain, i.change
        ));
    }
    if let Some(t) = &index.trend {
        out.push_str(&format!(
            "trend {:+.1} since {} ({:+.2}/day)\n",
            t.delta, t.since, t.per_day
        ));
    }
    out
}

fn check(input: &Input<'_>, expected: Expect) {
    expected.assert_eq(&render(&compute(input)));
}

#[test]
fn an_empty_city_has_no_data_rather_than_numbers() {
    check(
        &Input {
            now: Timestamp::from_millis(NOW),
            devices: vec![],
            incidents: Incidents::DerivedFromAlerts(vec![]),
            exercises: None,
            intel: None,
            conduits: None,
            firmware: &FirmwareCatalogue::default(),
            history: vec![],
        },
        expect![[r#"
            city: no data (0 devices)
              inventory_coverage no data: no active registered devices
              unique_credentials no data: no active registered devices
              firmware_current no data: no active device records vendor, model and firmware
              secure_transport no data: no device has connected since the platform started
              telemetry_freshness no data: no active registered devices
              outside_conduits no data: no conduits are defined ([[detect.conduits]] in the config)
              time_to_detect no data: no incident in the last 365 days
              time_to_acknowledge no data: no incident in the last 365 days
              time_to_contain no data: no incident in the last 365 days
              time_to_resolve no data: no incident in the last 365 days
              exercises no data: no source of exercises
              intel_sharing no data: no sharing collection, partner feed or collection partners write to is configured ([taxii])
              open_critical_incidents no data: no devices and no incidents
            incidents: derived_from_alerts
        "#]],
    );
}

#[test]
fn a_small_city_from_live_data() {
    let devices = [
        device("siren-1", DeviceClass::Siren, "2.1.0", "cert"),
        device("siren-2", DeviceClass::Siren, "2.0.9", "chosen"),
        device("siren-3", DeviceClass::Siren, "2.10.0", "generated"),
        device("pump-1", DeviceClass::Pump, "1.0", "cert"),
        device("pump-2", DeviceClass::Pump, "1.0", ""),
    ];
    let mut revoked = device("pump-3", DeviceClass::Pump, "0.1", "chosen");
    revoked.status = DeviceStatus::Revoked;
    let observed = [
        seen(Some(1), Some(true)),
        seen(Some(30), Some(false)),
        seen(None, None),
        seen(Some(5), Some(true)),
        seen(Some(2000), Some(false)),
    ];
    let mut inputs: Vec<DeviceInput> = devices
        .iter()
        .zip(observed)
        .map(|(device, observed)| DeviceInput { device, observed })
        .collect();
    inputs.push(DeviceInput {
        device: &revoked,
        observed: seen(Some(1), Some(false)),
    });
    let alert = |detect_min: i64, ago_min: i64, severity| IncidentInput {
        sector: Some(model::Sector::PublicSafety),
        severity,
        first_event: Timestamp::from_millis(NOW - ago_min * MIN - detect_min * MIN),
        detected: Timestamp::from_millis(NOW - ago_min * MIN),
        acknowledged: None,
        contained: None,
        resolved: None,
    };
    check(
        &Input {
            now: Timestamp::from_millis(NOW),
            devices: inputs,
            incidents: Incidents::DerivedFromAlerts(vec![
                alert(2, 60, Severity::Critical),
                alert(30, 3000, Severity::Critical),
                alert(10, 400 * 24 * 60, Severity::High),
            ]),
            exercises: Some(Exercises {
                runs: vec![],
                warning_drills: vec![Timestamp::from_millis(NOW - 86_400_000)],
            }),
            intel: None,
            conduits: None,
            firmware: &FirmwareCatalogue::default(),
            history: vec![
                (Timestamp::from_millis(NOW - 10 * 86_400_000), 40.0),
                (Timestamp::from_millis(NOW - 40 * 86_400_000), 10.0),
            ],
        },
        expect![[r#"
            city: 51.3 (6 devices)
              inventory_coverage 0.60 3 of 5 active devices seen in the last 24 h
              unique_credentials 0.60 3 of 5 active devices with only certificates or generated secrets
              firmware_current 0.60 3 of 5 devices on the latest firmware, compared with the fleet's newest (no vendor catalogue entry)
              secure_transport 0.50 2 of 4 connected devices using mutual TLS
              telemetry_freshness 0.40 2 of 5 active devices heard from in the last 15 min
              outside_conduits no data: no conduits are defined ([[detect.conduits]] in the config)
              time_to_detect 0.50 median 30.0 min over 2 incidents (target 15.0 min)
              time_to_acknowledge no data: incidents are derived from alerts, which have no lifecycle times yet
              time_to_contain no data: incidents are derived from alerts, which have no lifecycle times yet
              time_to_resolve no data: incidents are derived from alerts, which have no lifecycle times yet
              exercises 0.25 1 exercises in the last 365 days (0 detection exercises, 1 public-warning drills), not scored (no detection exercise results recorded: citysec exercise run --api)
              intel_sharing no data: no sharing collection, partner feed or collection partners write to is configured ([taxii])
              open_critical_incidents 0.50 1 critical alerts in the last 24 h (no incident lifecycle yet)
            public_safety: 51.0 (3 devices)
              inventory_coverage 0.67 2 of 3 active devices seen in the last 24 h
              unique_credentials 0.67 2 of 3 active devices with only certificates or generated secrets
              firmware_current 0.33 1 of 3 devices on the latest firmware, compared with the fleet's newest (no vendor catalogue entry)
              secure_transport 0.50 1 of 2 connected devices using mutual TLS
              telemetry_freshness 0.33 1 of 3 active devices heard from in the last 15 min
              outside_conduits no data: no conduits are defined ([[detect.conduits]] in the config)
              time_to_detect 0.50 median 30.0 min over 2 incidents (target 15.0 min)
              time_to_acknowledge no data: incidents are derived from alerts, which have no lifecycle times yet
              time_to_contain no data: incidents are derived from alerts, which have no lifecycle times yet
              time_to_resolve no data: incidents are derived from alerts, which have no lifecycle times yet
              open_critical_incidents 0.50 1 critical alerts in the last 24 h (no incident lifecycle yet)
            water: 64.3 (3 devices)
              inventory_coverage 0.50 1 of 2 active devices seen in the last 24 h
              unique_credentials 0.50 1 of 2 active devices with only certificates or generated secrets
              firmware_current 1.00 2 of 2 devices on the latest firmware, compared with the fleet's newest (no vendor catalogue entry)
              secure_transport 0.50 1 of 2 connected devices using mutual TLS
              telemetry_freshness 0.50 1 of 2 active devices heard from in the last 15 min
              outside_conduits no data: no conduits are defined ([[detect.conduits]] in the config)
              time_to_detect no data: no incident in the last 365 days
              time_to_acknowledge no data: no incident in the last 365 days
              time_to_contain no data: no incident in the last 365 days
              time_to_resolve no data: no incident in the last 365 days
              open_critical_incidents 1.00 0 critical alerts in the last 24 h (no incident lifecycle yet)
            incidents: derived_from_alerts
            improve secure_transport +7.1: move 2 devices from password logins to mutual TLS with client certificates
            improve telemetry_freshness +6.9: restore reporting from 3 silent devices
            improve unique_credentials +6.9: give 2 devices a client certificate or a generated secret instead of a human-chosen or missing one
            trend +11.3 since 2027-01-05T08:00:00.000Z (+1.13/day)
        "#]],
    );
}

#[test]
fn lifecycle_incidents_feed_every_time_indicator() {
    let at = |m: i64| Some(Timestamp::from_millis(NOW - 1000 * MIN + m * MIN));
    let incident = IncidentInput {
        sector: None,
        severity: Severity::Critical,
        first_event: at(0).unwrap(),
        detected: at(5).unwrap(),
        acknowledged: at(65),
        contained: at(5 + 8 * 60),
        resolved: None,
    };
    let index = compute(&Input {
        now: Timestamp::from_millis(NOW),
        devices: vec![],
        incidents: Incidents::Lifecycle(vec![incident]),
        exercises: Some(Exercises {
            runs: (1..=4)
                .map(|i| ExerciseRun {
                    at: Timestamp::from_millis(NOW - i * 80 * 86_400_000),
                    scenarios: 4,
                    detected: 2,
                    median_time_to_detect_s: Some(30.0),
                })
                .collect(),
            warning_drills: vec![],
        }),
        firmware: &FirmwareCatalogue::default(),
        conduits: Some(crate::Conduits {
            zones: vec![],
            any_zone: true,
        }),
        intel: Some(crate::IntelCounts {
            shared: 20,
            received: 5,
        }),
        history: vec![],
    });
    let csv = to_csv(&index);
    expect![[r#"
        scope,indicator,score,detail,no_data
        city,inventory_coverage,,no data,no active registered devices
        city,unique_credentials,,no data,no active registered devices
        city,firmware_current,,no data,"no active device records vendor, model and firmware"
        city,secure_transport,,no data,no device has connected since the platform started
        city,telemetry_freshness,,no data,no active registered devices
        city,outside_conduits,,no data,no active registered devices
        city,time_to_detect,100.0,median 5.0 min over 1 incidents (target 15.0 min),
        city,time_to_acknowledge,50.0,median 60.0 min over 1 incidents (target 30.0 min),
        city,time_to_contain,50.0,median 8.0 h over 1 incidents (target 4.0 h),
        city,time_to_resolve,,no data,no incident in the last 365 days reached this step
        city,exercises,50.0,"4 exercises in the last 365 days (4 detection exercises, 0 public-warning drills), mean score 50% (8 of 16 scenarios detected, median time to detect 30.0 s)",
        city,intel_sharing,75.0,"20 objects shared, 5 received in 30 days",
        city,open_critical_incidents,50.0,1 open critical incidents,
        city,score,63.9,,
    "#]]
    .assert_eq(&csv);
    let json = serde_json::to_value(&index).unwrap();
    assert_eq!(json["incident_source"], "lifecycle");
    assert_eq!(json["weights"]["unique_credentials"], 12.0);
    assert_eq!(index.improvements.len(), 3);
}

#[test]
fn devices_in_zones_no_conduit_connects_count_against_the_city() {
    let mut a = device("pump-1", DeviceClass::Pump, "1.0", "cert");
    a.zone = "water-ot".into();
    let mut b = device("pump-2", DeviceClass::Pump, "1.0", "cert");
    b.zone = "forgotten".into();
    let devices = [a, b];
    let index = compute(&Input {
        now: Timestamp::from_millis(NOW),
        devices: devices
            .iter()
            .map(|device| DeviceInput {
                device,
                observed: seen(Some(1), Some(true)),
            })
            .collect(),
        incidents: Incidents::Lifecycle(vec![]),
        exercises: None,
        intel: None,
        conduits: Some(crate::Conduits {
            zones: vec!["water-scada".into(), "water-ot".into()],
            any_zone: false,
        }),
        firmware: &FirmwareCatalogue::default(),
        history: vec![],
    });
    let value = index
        .city
        .values
        .iter()
        .find(|v| v.id == "outside_conduits")
        .unwrap();
    assert_eq!(value.score, Some(0.5));
    assert_eq!(
        value.detail,
        "1 of 2 active devices in a zone some conduit connects"
    );
}

fn release(
    vendor: &str,
    model: Option<&str>,
    class: Option<DeviceClass>,
    latest: &str,
    days_ago: i64,
) -> FirmwareRelease {
    FirmwareRelease {
        vendor: vendor.into(),
        model: model.map(str::to_owned),
        class,
        latest: latest.into(),
        released: Timestamp::from_millis(NOW - days_ago * 86_400_000),
    }
}

#[test]
fn firmware_is_judged_against_the_vendor_catalogue_and_the_fleet_only_without_an_entry() {
    let mut devices = [
        // acme sirens: the catalogue says 2.2.0, released 90 days ago; none has it.
        device("siren-1", DeviceClass::Siren, "2.1.0", "cert"),
        device("siren-2", DeviceClass::Siren, "2.2.0", "cert"),
        device("siren-3", DeviceClass::Siren, "2.10.1", "cert"),
        // acme pumps: a class entry, released 10 days ago (inside the patch window).
        device("pump-1", DeviceClass::Pump, "1.0", "cert"),
        // no entry for valves: the fleet's newest (1.5) stands in.
        device("valve-1", DeviceClass::Valve, "1.5", "cert"),
        device("valve-2", DeviceClass::Valve, "1.4", "cert"),
    ];
    // Vendor and model match without regard to case.
    devices[0].vendor = "ACME ".into();
    let catalogue = FirmwareCatalogue::new(vec![
        release("acme", Some("SIREN"), None, "2.2.0", 90),
        release("acme", None, Some(DeviceClass::Pump), "1.2", 10),
        release("acme", None, Some(DeviceClass::Siren), "9.9", 400),
    ])
    .unwrap();
    let index = compute(&Input {
        now: Timestamp::from_millis(NOW),
        devices: devices
            .iter()
            .map(|device| DeviceInput {
                device,
                observed: seen(Some(1), Some(true)),
            })
            .collect(),
        incidents: Incidents::Lifecycle(vec![]),
        exercises: None,
        intel: None,
        conduits: None,
        firmware: &catalogue,
        history: vec![],
    });
    let render = |card: &crate::Scorecard| {
        let v = card
            .values
            .iter()
            .find(|v| v.id == "firmware_current")
            .unwrap();
        format!("{:.2} {} | {}", v.score.unwrap(), v.detail, v.change)
    };
    expect!["0.67 4 of 6 devices on the latest firmware, compared with the vendor catalogue for 4, the fleet's newest for 2 without a catalogue entry | update 2 devices to their vendor's latest firmware (the oldest missed release is 90 days old)"].assert_eq(&render(&index.city));
    let water = &index
        .sectors
        .iter()
        .find(|s| s.sector == model::Sector::Water)
        .unwrap()
        .scorecard;
    expect!["0.67 2 of 3 devices on the latest firmware, compared with the vendor catalogue for 1, the fleet's newest for 2 without a catalogue entry | update 1 devices to their vendor's latest firmware"].assert_eq(&render(water));
    let safety = &index
        .sectors
        .iter()
        .find(|s| s.sector == model::Sector::PublicSafety)
        .unwrap()
        .scorecard;
    expect!["0.67 2 of 3 devices on the latest firmware, compared with the vendor catalogue | update 1 devices to their vendor's latest firmware (the oldest missed release is 90 days old)"].assert_eq(&render(safety));
}

#[test]
fn a_catalogue_refuses_ambiguous_and_repeated_entries() {
    let err = |entries| FirmwareCatalogue::new(entries).unwrap_err();
    expect!["entry 1 (acme): give exactly one of model and class"].assert_eq(&err(vec![release(
        "acme",
        Some("s1"),
        Some(DeviceClass::Siren),
        "1",
        1,
    )]));
    expect!["entry 1 (acme): give exactly one of model and class"]
        .assert_eq(&err(vec![release("acme", None, None, "1", 1)]));
    expect!["entry 1: vendor and latest must not be empty"].assert_eq(&err(vec![release(
        " ",
        Some("s1"),
        None,
        "1",
        1,
    )]));
    expect!["entry 2 (Acme S1 ) repeats entry 1"].assert_eq(&err(vec![
        release("acme", Some("s1"), None, "1", 1),
        release("Acme", Some("S1 "), None, "2", 1),
    ]));
    expect!["entry 3 (acme pump) repeats entry 1"].assert_eq(&err(vec![
        release("acme", None, Some(DeviceClass::Pump), "1", 1),
        release("acme", Some("p1"), None, "1", 1),
        release("acme", None, Some(DeviceClass::Pump), "2", 1),
    ]));
}

#[test]
fn exercises_score_detected_share_and_time_to_detect() {
    let run = |days_ago: i64, scenarios, detected, ttd| ExerciseRun {
        at: Timestamp::from_millis(NOW - days_ago * 86_400_000),
        scenarios,
        detected,
        median_time_to_detect_s: ttd,
    };
    // Every scenario detected within a minute: full marks; half of them: half; slower than
    // the target: in proportion; nothing detected: zero.
    assert_eq!(run(1, 10, 10, Some(4.0)).score(), 1.0);
    assert_eq!(run(1, 10, 5, Some(60.0)).score(), 0.5);
    assert_eq!(run(1, 4, 4, Some(120.0)).score(), 0.5);
    assert_eq!(run(1, 4, 0, None).score(), 0.0);
    assert_eq!(run(1, 0, 0, None).score(), 0.0);
    let value = |exercises: Exercises| {
        let index = compute(&Input {
            now: Timestamp::from_millis(NOW),
            devices: vec![],
            incidents: Incidents::Lifecycle(vec![]),
            exercises: Some(exercises),
            intel: None,
            conduits: None,
            firmware: &FirmwareCatalogue::default(),
            history: vec![],
        });
        let v = index
            .city
            .values
            .iter()
            .find(|v| v.id == "exercises")
            .unwrap()
            .clone();
        format!("{:.3} {} | {}", v.score.unwrap(), v.detail, v.change)
    };
    // Two scored runs this year (one is older than a year and does not count), one drill.
    expect!["0.721 3 exercises in the last 365 days (2 detection exercises, 1 public-warning drills), mean score 96% (25 of 26 scenarios detected, median time to detect 6.0 s) | run 1 more scored exercises this year (one per quarter)"].assert_eq(&value(Exercises {
        runs: vec![
            run(10, 13, 13, Some(0.5)),
            run(100, 13, 12, Some(6.0)),
            run(400, 13, 0, None),
        ],
        warning_drills: vec![Timestamp::from_millis(NOW - 5 * 86_400_000)],
    }));
    expect!["0.250 1 exercises in the last 365 days (0 detection exercises, 1 public-warning drills), not scored (no detection exercise results recorded: citysec exercise run --api) | run 3 scored detection exercises this year (one per quarter, citysec exercise run --api)"].assert_eq(&value(Exercises {
        runs: vec![],
        warning_drills: vec![Timestamp::from_millis(NOW - 5 * 86_400_000)],
    }));
    expect!["0.000 0 exercises in the last 365 days (0 detection exercises, 0 public-warning drills), not scored (no detection exercise results recorded: citysec exercise run --api) | run 4 scored detection exercises this year (one per quarter, citysec exercise run --api)"].assert_eq(&value(Exercises::default()));
}

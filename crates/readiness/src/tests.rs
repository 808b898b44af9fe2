//! The index computed from small city fixtures: the rendered scorecards are snapshots.

use expect_test::{Expect, expect};
use model::{Credential, Device, DeviceClass, DeviceId, DeviceStatus, Severity, Timestamp};

use crate::{
    DeviceInput, Exercises, IncidentInput, Incidents, Index, Input, Observed, compute, to_csv,
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
              intel_sharing no data: no source of sharing counts yet (TAXII exchange)
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
                run: 1,
                mean_score: None,
            }),
            intel: None,
            conduits: None,
            history: vec![
                (Timestamp::from_millis(NOW - 10 * 86_400_000), 40.0),
                (Timestamp::from_millis(NOW - 40 * 86_400_000), 10.0),
            ],
        },
        expect![[r#"
            city: 51.3 (6 devices)
              inventory_coverage 0.60 3 of 5 active devices seen in the last 24 h
              unique_credentials 0.60 3 of 5 active devices with only certificates or generated secrets
              firmware_current 0.60 3 of 5 devices on the newest firmware seen for their model
              secure_transport 0.50 2 of 4 connected devices using mutual TLS
              telemetry_freshness 0.40 2 of 5 active devices heard from in the last 15 min
              outside_conduits no data: no conduits are defined ([[detect.conduits]] in the config)
              time_to_detect 0.50 median 30.0 min over 2 incidents (target 15.0 min)
              time_to_acknowledge no data: incidents are derived from alerts, which have no lifecycle times yet
              time_to_contain no data: incidents are derived from alerts, which have no lifecycle times yet
              time_to_resolve no data: incidents are derived from alerts, which have no lifecycle times yet
              exercises 0.25 1 exercises in the last 365 days, not scored (no source of exercise scores yet)
              intel_sharing no data: no source of sharing counts yet (TAXII exchange)
              open_critical_incidents 0.50 1 critical alerts in the last 24 h (no incident lifecycle yet)
            public_safety: 51.0 (3 devices)
              inventory_coverage 0.67 2 of 3 active devices seen in the last 24 h
              unique_credentials 0.67 2 of 3 active devices with only certificates or generated secrets
              firmware_current 0.33 1 of 3 devices on the newest firmware seen for their model
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
              firmware_current 1.00 2 of 2 devices on the newest firmware seen for their model
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
            run: 4,
            mean_score: Some(0.5),
        }),
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
        city,exercises,50.0,"4 exercises in the last 365 days, mean score 50%",
        city,intel_sharing,75.0,"20 shared, 5 received in 30 days",
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

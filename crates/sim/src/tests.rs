//! Unit tests: population mix and reproducibility, the inventory file, payloads for every
//! class, command handling, the MQTT encoders and the attack plan.

use bytes::BytesMut;
use model::{DeviceClass, Timestamp};
use serde_json::Value;

use crate::attacks::{AttackConfig, AttackKind, plan_cycle};
use crate::mqtt::{self, Incoming, Version};
use crate::population::{MIX, Population, class_counts, profile};
use crate::telemetry::{self, DeviceModel};

/// Expected share (per mille) of each class, from the product brief; the test checks both
/// the table and the generated populations against it.
const EXPECTED_MIX: &[(DeviceClass, u32)] = &[
    (DeviceClass::Siren, 10),
    (DeviceClass::Camera, 80),
    (DeviceClass::TrafficSignal, 60),
    (DeviceClass::EvCharger, 30),
    (DeviceClass::SmartMeter, 400),
    (DeviceClass::StreetLight, 150),
    (DeviceClass::FeederBreaker, 10),
    (DeviceClass::Pump, 20),
    (DeviceClass::Valve, 20),
    (DeviceClass::LevelSensor, 30),
    (DeviceClass::QualitySensor, 20),
    (DeviceClass::AirQuality, 40),
    (DeviceClass::Weather, 10),
    (DeviceClass::Hvac, 80),
    (DeviceClass::AccessControl, 40),
];

#[test]
fn mix_table_covers_every_class_and_sums_to_one() {
    assert_eq!(MIX.iter().map(|p| p.per_mille).sum::<u32>(), 1000);
    for class in DeviceClass::ALL {
        let expected = EXPECTED_MIX.iter().find(|(c, _)| *c == class).unwrap().1;
        assert_eq!(profile(class).per_mille, expected, "{class}");
    }
}

#[test]
fn class_counts_sum_and_minimum() {
    for (devices, min) in [
        (0, 0),
        (1, 0),
        (14, 0),
        (15, 1),
        (50, 1),
        (1000, 1),
        (50_000, 1),
    ] {
        let counts = class_counts(devices);
        assert_eq!(counts.iter().sum::<usize>(), devices, "{devices}");
        assert!(counts.iter().all(|&c| c >= min), "{devices}: {counts:?}");
    }
    // Large populations follow the table within one device per class.
    let counts = class_counts(100_000);
    for (p, count) in MIX.iter().zip(counts) {
        let exact = 100_000.0 * f64::from(p.per_mille) / 1000.0;
        assert!(
            (count as f64 - exact).abs() <= 16.0,
            "{}: {count} vs {exact}",
            p.class
        );
    }
}

#[test]
fn population_is_reproducible_per_seed() {
    let a = Population::generate(500, 42);
    let b = Population::generate(500, 42);
    let c = Population::generate(500, 43);
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert_eq!(a.len(), 500);
    // Same ids, different secrets and places for another seed.
    assert_eq!(
        a.devices.iter().map(|d| &d.id).collect::<Vec<_>>(),
        c.devices.iter().map(|d| &d.id).collect::<Vec<_>>()
    );
    assert_ne!(a.devices[0].secret, c.devices[0].secret);
}

#[test]
fn population_devices_are_well_formed() {
    let pop = Population::generate(2_000, 7);
    let mut ids = std::collections::HashSet::new();
    let mut secrets = std::collections::HashSet::new();
    for d in &pop.devices {
        assert!(ids.insert(d.id.clone()), "duplicate id {}", d.id);
        assert!(secrets.insert(d.secret.clone()), "duplicate secret");
        assert_eq!(d.sector, d.class.sector());
        assert_eq!(d.secret.len(), 64);
        assert!(d.secret.bytes().all(|b| b.is_ascii_hexdigit()));
        let prefix = profile(d.class).id_prefix;
        let num =
            d.id.as_str()
                .strip_prefix(prefix)
                .and_then(|r| r.strip_prefix('-'));
        assert!(
            num.is_some_and(|n| n.len() >= 4 && n.parse::<u32>().is_ok()),
            "{}",
            d.id
        );
        let (lat, lon) = (d.location.lat, d.location.lon);
        assert!(
            (52.27..52.47).contains(&lat) && (4.73..5.05).contains(&lon),
            "{lat},{lon}"
        );
        assert!(!d.zone.is_empty() && !d.owner.is_empty() && !d.vendor.is_empty());
    }
    let siren = pop.get("siren-0001").unwrap();
    assert!(
        !format!("{siren:?}").contains(&siren.secret),
        "debug output leaks the secret"
    );
    assert_eq!(pop.of_class(DeviceClass::SmartMeter).count(), 800);
    assert_eq!(pop.of_class(DeviceClass::Siren).count(), 20);
    // Small populations still hold one of each class.
    let small = Population::generate(15, 1);
    for class in DeviceClass::ALL {
        assert_eq!(small.of_class(class).count(), 1, "{class}");
    }
}

#[test]
fn inventory_json_round_trip_and_shape() {
    let pop = Population::generate(40, 3);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("devices.json");
    pop.write_json(&path).unwrap();
    let back = Population::read_json(&path).unwrap();
    assert_eq!(back, pop);

    let json: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(json["version"], 1);
    let first = &json["devices"][0];
    let mut keys: Vec<&str> = first
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "addresses",
            "class",
            "firmware",
            "id",
            "location",
            "model",
            "owner",
            "secret",
            "sector",
            "vendor",
            "zone"
        ]
    );
    assert_eq!(first["addresses"], serde_json::json!(["10.1.1.1"]));
    assert_eq!(first["id"], "siren-0001");
    assert_eq!(first["sector"], "public_safety");
    assert_eq!(first["class"], "siren");
    assert!(first["location"]["lat"].is_f64() && first["location"]["lon"].is_f64());
    let tsig = json["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["class"] == "traffic_signal");
    assert_eq!(tsig.unwrap()["sector"], "transport");
}

#[test]
fn inventory_rejects_bad_files() {
    let pop = Population::generate(20, 3);
    let good = pop.to_json();
    let cases = [
        (
            good.replacen("\"version\": 1", "\"version\": 2", 1),
            "unsupported inventory version",
        ),
        (
            good.replacen("\"sector\": \"public_safety\"", "\"sector\": \"water\"", 1),
            "sector water",
        ),
        (
            good.replacen("\"id\": \"camera-0001\"", "\"id\": \"siren-0001\"", 1),
            "duplicate device id",
        ),
        (
            good.replacen("\"id\": \"siren-0001\"", "\"id\": \"bad/id\"", 1),
            "parse device inventory",
        ),
        ("{}".to_string(), "parse device inventory"),
    ];
    for (text, expected) in cases {
        let err = format!("{:#}", Population::from_json(&text).unwrap_err());
        assert!(err.contains(expected), "{expected:?} not in {err:?}");
    }
}

#[test]
fn mosquitto_files() {
    let pop = Population::generate(20, 3);
    let dir = tempfile::tempdir().unwrap();
    let files = pop
        .write_mosquitto(dir.path(), Some(("observer", "pw")))
        .unwrap();
    let passwd = std::fs::read_to_string(&files.passwd).unwrap();
    assert_eq!(passwd.lines().count(), 21);
    assert!(passwd.starts_with("observer:"));
    let line = passwd
        .lines()
        .find(|l| l.starts_with("siren-0001:"))
        .unwrap();
    let secret = &pop.get("siren-0001").unwrap().secret;
    if files.hashed {
        assert!(
            line.starts_with("siren-0001:$7$") || line.starts_with("siren-0001:$6$"),
            "{line}"
        );
        assert!(!line.contains(secret.as_str()));
    } else {
        assert_eq!(line, format!("siren-0001:{secret}"));
    }
    let acl = std::fs::read_to_string(&files.acl).unwrap();
    for needed in [
        "user observer\ntopic read city/#",
        "pattern write city/+/%u/telemetry",
        "pattern write city/+/%u/state",
        "pattern write city/+/%u/ack",
        "pattern read city/+/%u/cmd",
    ] {
        assert!(acl.contains(needed), "{needed:?} missing in\n{acl}");
    }
}

/// Field names each class's payload must carry (SenML names for the meter).
const PAYLOAD_FIELDS: &[(DeviceClass, &[&str])] = &[
    (
        DeviceClass::Siren,
        &["sounding", "battery_v", "cabinet_open"],
    ),
    (DeviceClass::Camera, &["fps", "bitrate_kbps", "recording"]),
    (DeviceClass::TrafficSignal, &["phase", "plan", "fault"]),
    (
        DeviceClass::EvCharger,
        &["power_kw", "session_active", "energy_kwh"],
    ),
    (DeviceClass::SmartMeter, &["energy", "power", "voltage"]),
    (DeviceClass::StreetLight, &["on", "dim_pct", "power_w"]),
    (DeviceClass::FeederBreaker, &["closed", "current_a"]),
    (
        DeviceClass::Pump,
        &["flow_lps", "pressure_bar", "rpm", "motor_temp_c"],
    ),
    (DeviceClass::Valve, &["position_pct"]),
    (DeviceClass::LevelSensor, &["level_m"]),
    (
        DeviceClass::QualitySensor,
        &["ph", "turbidity_ntu", "chlorine_mgl"],
    ),
    (DeviceClass::AirQuality, &["pm2_5", "pm10", "no2", "o3"]),
    (
        DeviceClass::Weather,
        &["temp_c", "humidity_pct", "wind_ms", "rain_mm"],
    ),
    (DeviceClass::Hvac, &["temp_c", "setpoint_c", "mode"]),
    (DeviceClass::AccessControl, &["door", "badge_events"]),
];

#[test]
fn payloads_are_valid_for_every_class() {
    let t0 = 1_795_000_000_000i64;
    for &(class, fields) in PAYLOAD_FIELDS {
        let mut model = DeviceModel::new(class, 9);
        for step in 0..200 {
            let sim_ms = t0 + step * 3_600_000 / 4; // a few days in quarter hours
            let ts = Timestamp::from_millis(sim_ms).to_rfc3339();
            let mut out = Vec::new();
            model.telemetry("dev-1", sim_ms, &ts, &mut out);
            assert!(out.len() < 200, "{class}: {} bytes", out.len());
            let v: Value = serde_json::from_slice(&out)
                .unwrap_or_else(|e| panic!("{class}: {e}: {}", String::from_utf8_lossy(&out)));
            if class == DeviceClass::SmartMeter {
                check_senml(&v, sim_ms, fields);
            } else {
                let obj = v
                    .as_object()
                    .unwrap_or_else(|| panic!("{class}: not an object"));
                for f in fields {
                    let value = &obj[*f];
                    assert!(!value.is_null(), "{class}: {f} missing in {v}");
                    if let Some(n) = value.as_f64() {
                        assert!(n.is_finite(), "{class}: {f}");
                    }
                }
                assert_eq!(obj["ts"].as_str(), Some(ts.as_str()), "{class}");
            }
            if class.is_actuator() {
                let mut state = Vec::new();
                model.state(&ts, &mut state);
                let v: Value = serde_json::from_slice(&state).unwrap();
                assert!(v.as_object().unwrap().len() >= 2, "{class}: {v}");
            }
        }
    }
}

fn check_senml(v: &Value, sim_ms: i64, names: &[&str]) {
    let records = v.as_array().expect("senml is an array");
    assert_eq!(records.len(), names.len());
    assert_eq!(records[0]["bn"], "urn:dev:id:dev-1:");
    assert!((records[0]["bt"].as_f64().unwrap() - sim_ms as f64 / 1000.0).abs() < 0.001);
    for (rec, name) in records.iter().zip(names) {
        assert_eq!(rec["n"], *name);
        assert!(rec["u"].is_string());
        assert!(rec["v"].as_f64().unwrap().is_finite());
        for key in rec.as_object().unwrap().keys() {
            assert!(["bn", "bt", "n", "u", "v"].contains(&key.as_str()), "{key}");
        }
    }
}

#[test]
fn daily_curves_follow_the_clock() {
    // 00:00 UTC is 01:00 local.
    let midnight_utc = 1_795_046_400_000i64; // 2026-11-19T00:00:00Z
    assert_eq!(telemetry::hour_of_day(midnight_utc), 1.0);
    assert!(telemetry::residential_load(19.0) > 2.0 * telemetry::residential_load(3.0));
    assert_eq!(telemetry::street_light_dim(12.0), 0);
    assert_eq!(telemetry::street_light_dim(21.0), 100);
    assert_eq!(telemetry::street_light_dim(3.0), 50);

    // A meter uses more energy in the evening hour than in the night hour.
    let energy_over_hour = |start_ms: i64| {
        let mut model = DeviceModel::new(DeviceClass::SmartMeter, 5);
        let mut read = |ms: i64| {
            let mut out = Vec::new();
            model.telemetry("m", ms, "x", &mut out);
            let v: Value = serde_json::from_slice(&out).unwrap();
            v[0]["v"].as_f64().unwrap()
        };
        let first = read(start_ms);
        let mut last = first;
        for i in 1..=120 {
            last = read(start_ms + i * 30_000);
        }
        last - first
    };
    let evening = energy_over_hour(midnight_utc + 18 * 3_600_000); // 19:00 local
    let night = energy_over_hour(midnight_utc + 2 * 3_600_000); // 03:00 local
    assert!(evening > 2.0 * night, "evening {evening} night {night}");
}

#[test]
fn cadences_match_the_brief() {
    let secs = |c| telemetry::cadence(c).as_secs();
    assert_eq!(secs(DeviceClass::Siren), 60);
    assert_eq!(secs(DeviceClass::TrafficSignal), 5);
    assert_eq!(secs(DeviceClass::SmartMeter), 30);
    assert_eq!(secs(DeviceClass::Pump), 5);
    assert_eq!(secs(DeviceClass::AccessControl), 20);
}

#[test]
fn actuators_apply_commands_and_ack() {
    // (class, command, ok, field in state, expected value after)
    let cases: &[(DeviceClass, &str, bool, &str, Value)] = &[
        (
            DeviceClass::Siren,
            r#"{"action":"sound","id":"c-1"}"#,
            true,
            "sounding",
            Value::Bool(true),
        ),
        (
            DeviceClass::Valve,
            r#"{"action":"set_position","position_pct":25}"#,
            true,
            "position_pct",
            25.0.into(),
        ),
        (
            DeviceClass::Valve,
            r#"{"action":"set_position","position_pct":250}"#,
            false,
            "position_pct",
            100.0.into(),
        ),
        (
            DeviceClass::Pump,
            r#"{"action":"stop"}"#,
            true,
            "running",
            Value::Bool(false),
        ),
        (
            DeviceClass::FeederBreaker,
            r#"{"action":"open"}"#,
            true,
            "closed",
            Value::Bool(false),
        ),
        (
            DeviceClass::AccessControl,
            r#"{"action":"unlock"}"#,
            true,
            "locked",
            Value::Bool(false),
        ),
        (
            DeviceClass::Hvac,
            r#"{"action":"set_mode","mode":"cool"}"#,
            true,
            "mode",
            "cool".into(),
        ),
        (
            DeviceClass::TrafficSignal,
            r#"{"action":"flash"}"#,
            true,
            "mode",
            "flash".into(),
        ),
        (
            DeviceClass::StreetLight,
            r#"{"action":"dim","dim_pct":30}"#,
            true,
            "dim_pct",
            30.0.into(),
        ),
        (
            DeviceClass::EvCharger,
            r#"{"action":"disable"}"#,
            true,
            "enabled",
            Value::Bool(false),
        ),
        (
            DeviceClass::Siren,
            r#"{"action":"self_destruct"}"#,
            false,
            "sounding",
            Value::Bool(false),
        ),
    ];
    for (class, cmd, ok, field, after) in cases {
        let mut model = DeviceModel::new(*class, 1);
        let outcome = model
            .apply_command(cmd.as_bytes(), "2026-11-22T00:00:00.000Z")
            .unwrap();
        assert_eq!(outcome.ok, *ok, "{class} {cmd}");
        let ack: Value = serde_json::from_slice(&outcome.ack).unwrap();
        let sent: Value = serde_json::from_str(cmd).unwrap();
        assert_eq!(ack["action"], sent["action"]);
        assert_eq!(ack["ok"], *ok);
        if let Some(id) = sent.get("id") {
            assert_eq!(&ack["id"], id);
        }
        let mut state = Vec::new();
        model.state("t", &mut state);
        let state: Value = serde_json::from_slice(&state).unwrap();
        let got = &state[*field];
        let same = match (got.as_f64(), after.as_f64()) {
            (Some(a), Some(b)) => a == b,
            _ => got == after,
        };
        assert!(same, "{class} {cmd}: {state}");
    }
    let mut siren = DeviceModel::new(DeviceClass::Siren, 1);
    assert_eq!(siren.apply_command(b"not json", "t"), None);
    assert_eq!(siren.apply_command(br#"{"no":"action"}"#, "t"), None);
    siren.set_sounding(true);
    assert!(siren.is_on());
}

#[test]
fn publish_encoding_matches_rumqttc() {
    use rumqttc::mqttbytes::QoS as Q4;
    use rumqttc::mqttbytes::v4;
    use rumqttc::v5::mqttbytes::QoS as Q5;
    use rumqttc::v5::mqttbytes::v5;
    let payload = vec![b'x'; 300]; // forces a two-byte remaining length
    for qos in [0u8, 1] {
        let mut ours = BytesMut::new();
        mqtt::encode_publish(
            Version::V4,
            &["city/water/", "pump-1/telemetry"],
            qos,
            7,
            &payload,
            &mut ours,
        );
        let q4 = if qos == 0 {
            Q4::AtMostOnce
        } else {
            Q4::AtLeastOnce
        };
        let mut p = v4::Publish::new("city/water/pump-1/telemetry", q4, payload.clone());
        p.pkid = if qos == 0 { 0 } else { 7 };
        let mut theirs = BytesMut::new();
        p.write(&mut theirs).unwrap();
        assert_eq!(ours, theirs, "v4 qos {qos}");

        let mut ours = BytesMut::new();
        mqtt::encode_publish(
            Version::V5,
            &["city/water/pump-1/telemetry"],
            qos,
            7,
            &payload,
            &mut ours,
        );
        let q5 = if qos == 0 {
            Q5::AtMostOnce
        } else {
            Q5::AtLeastOnce
        };
        let mut p = v5::Publish::new("city/water/pump-1/telemetry", q5, payload.clone(), None);
        p.pkid = if qos == 0 { 0 } else { 7 };
        let mut theirs = BytesMut::new();
        p.write(&mut theirs).unwrap();
        assert_eq!(ours, theirs, "v5 qos {qos}");
    }
}

#[test]
fn read_packet_handles_partial_input_and_commands() {
    use rumqttc::mqttbytes::QoS as Q4;
    use rumqttc::mqttbytes::v4;
    let mut wire = BytesMut::new();
    v4::ConnAck::new(v4::ConnectReturnCode::BadUserNamePassword, false)
        .write(&mut wire)
        .unwrap();
    v4::Publish::new(
        "city/public_safety/siren-1/cmd",
        Q4::AtMostOnce,
        &b"{\"action\":\"sound\"}"[..],
    )
    .write(&mut wire)
    .unwrap();
    let full = wire.clone();
    // Byte by byte: never a packet before it is complete.
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    for b in full.iter() {
        buf.extend_from_slice(&[*b]);
        while let Some((p, _)) = mqtt::read_packet(Version::V4, &mut buf).unwrap() {
            got.push(p);
        }
    }
    assert_eq!(got.len(), 2);
    assert!(matches!(
        &got[0],
        Incoming::ConnAck {
            accepted: false,
            ..
        }
    ));
    assert_eq!(
        got[1],
        Incoming::Publish {
            topic: "city/public_safety/siren-1/cmd".into(),
            payload: b"{\"action\":\"sound\"}".to_vec()
        }
    );
    let mut garbage = BytesMut::from(&[0xF0u8, 0x01, 0x00][..]);
    assert!(mqtt::read_packet(Version::V4, &mut garbage).is_err());
}

#[test]
fn attack_plan_is_reproducible_and_within_the_first_minute() {
    let pop = Population::generate(200, 11);
    let config = AttackConfig::default();
    let plan = plan_cycle(&pop, &config, 5, 0);
    assert_eq!(plan, plan_cycle(&pop, &config, 5, 0));
    assert_eq!(plan.len(), 3);
    assert_eq!(plan[0].at.as_secs(), 20);
    assert!(plan.iter().all(|a| a.at.as_secs() < 60));
    assert!(plan.last().unwrap().at + config.siren_hold <= std::time::Duration::from_secs(60));
    match &plan[0].kind {
        AttackKind::BruteForce { target } => {
            assert_eq!(pop.get(target.as_str()).unwrap().class, DeviceClass::Camera);
        }
        other => panic!("first attack is {other:?}"),
    }
    match &plan[1].kind {
        AttackKind::PasswordSpray { targets } => {
            assert_eq!(targets.len(), 20);
            let distinct: std::collections::HashSet<_> = targets.iter().collect();
            assert_eq!(distinct.len(), 20);
        }
        other => panic!("second attack is {other:?}"),
    }
    match &plan[2].kind {
        AttackKind::UncommandedSiren { siren } => {
            assert_eq!(pop.get(siren.as_str()).unwrap().class, DeviceClass::Siren);
        }
        other => panic!("third attack is {other:?}"),
    }
    let next = plan_cycle(&pop, &config, 5, 1);
    assert_eq!(next[0].at, config.first_after + config.repeat_every);
    // No sirens or cameras: those attacks are left out.
    let tiny = Population::generate(1, 1);
    assert!(
        plan_cycle(&tiny, &config, 5, 0)
            .iter()
            .all(|a| a.kind.name() == "password_spray")
    );
}

#[test]
fn about_a_fifth_of_devices_speak_mqtt5() {
    let v5 = |seed, share| {
        (0..10_000)
            .filter(|&i| crate::device_version(seed, i, share) == Version::V5)
            .count()
    };
    let share = v5(1, 0.2);
    assert!((1_800..2_200).contains(&share), "{share}");
    assert_eq!(v5(1, 0.2), share, "reproducible");
    assert_eq!(v5(1, 0.0), 0);
    assert_eq!(v5(1, 1.0), 10_000);
}

#[test]
fn refusal_acks_echo_the_command_and_give_the_reason() {
    let ack = crate::telemetry::refusal_ack(
        br#"{"t":"citysec.cmd.v1","device":"v-1","counter":7,"expires_at":1,"id":"cmd-9","action":"close","params":{},"sig":"00"}"#,
        "replayed command: counter 7 is not above the last accepted 7",
        "2026-11-22T00:00:00.000Z",
    );
    let ack: Value = serde_json::from_slice(&ack).unwrap();
    assert_eq!(
        ack,
        serde_json::json!({
            "id": "cmd-9", "counter": 7, "action": "close", "ok": false,
            "error": "replayed command: counter 7 is not above the last accepted 7",
            "ts": "2026-11-22T00:00:00.000Z"
        })
    );
    // Garbage still gets an answer, with nothing echoed.
    let ack: Value = serde_json::from_slice(&crate::telemetry::refusal_ack(
        b"\xff",
        "malformed command: too short",
        "t",
    ))
    .unwrap();
    assert_eq!(ack["ok"], false);
    assert!(ack.get("id").is_none());
}

/// The firmware catalogue shipped for the simulated city (`config/firmware.toml`) has an
/// entry for every product of the mix, naming a version that product's class ships, so the
/// readiness index judges the simulated city against its vendors and never against the
/// fleet's newest.
#[test]
fn the_shipped_firmware_catalogue_covers_every_simulated_product() {
    let catalogue = app::firmware::parse(app::firmware::SIMULATED_CITY_CATALOGUE).unwrap();
    let mut products = 0;
    for profile in MIX {
        for (vendor, model) in profile.products {
            let release = catalogue
                .latest(vendor, model, profile.class)
                .unwrap_or_else(|| panic!("no catalogue entry for {vendor} {model}"));
            assert!(
                profile.firmware.contains(&release.latest.as_str()),
                "{vendor} {model}: latest {} is not a version {} devices run",
                release.latest,
                profile.class.as_str()
            );
            products += 1;
        }
    }
    assert_eq!(
        catalogue.entries().len(),
        products,
        "entries for products the city lacks"
    );
}

//! `citysec exercise` end to end: a platform started with `citysec serve` from the
//! generated config plus the simulated city's zones (`citysec sim zones`), then
//! `citysec exercise run --json` injecting fast scenarios over real MQTT and UDP and
//! reading the alerts back from the API.

use std::path::Path;
use std::process::Stdio;

use serde_json::Value;

use super::{citysec, free_port, free_udp_port, run_ok, serve};

fn exercise(
    http: &str,
    data: &Path,
    mqtt_port: u16,
    mqtt_tls: &str,
    flow: &str,
    scenarios: &str,
) -> Value {
    let out = citysec()
        .args([
            "exercise", "run", "--json", "--seed", "3", "--lead", "3s", "--gap", "1s",
        ])
        .args(["--scenario", scenarios])
        .args(["--api", http, "--token-file"])
        .arg(data.join("admin.token"))
        .arg("--data-dir")
        .arg(data)
        .args(["--mqtt", &format!("127.0.0.1:{mqtt_port}")])
        .args(["--mqtt-tls", mqtt_tls])
        .args(["--flow", flow])
        .env("CITYSEC_LOG", "warn")
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not json ({e}): {text}"))
}

/// The MQTT-side scenarios (credentials, actuation, identity over passwords and over mTLS
/// certificates, topic policy, firmware) are detected within the bar (10 s from onset),
/// with the exercise's own benign background (maintenance, an outage, a firmware update,
/// benign flows over IPFIX) raising no false alert on the rules that have landed.
#[test]
fn exercise_run_detects_fast_scenarios_against_a_served_platform() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let flow = format!("127.0.0.1:{}", free_udp_port());
    let mqtt_tls = format!("127.0.0.1:{}", free_port());
    let mut flows_on = false;
    let platform = serve(dir.path(), &data, |config| {
        // The mTLS listener with the city CA the platform generates in its data dir.
        let config = config.replacen(
            "# tls_listen = \"127.0.0.1:8883\"",
            &format!("tls_listen = \"{mqtt_tls}\""),
            1,
        );
        assert!(config.contains(&mqtt_tls), "config template changed");
        // The simulated city's zones, conduits and update servers, and the flow listener
        // when this build has one (without it the exercise sends no flows).
        let path = dir.path().join("base.toml");
        std::fs::write(&path, &config).unwrap();
        let with_flow = run_ok(
            citysec()
                .args(["sim", "zones", "--flow-listen", &flow, "--merge"])
                .arg(&path),
        );
        let probe = dir.path().join("probe.toml");
        std::fs::write(&probe, &with_flow).unwrap();
        flows_on = citysec()
            .arg("check-config")
            .arg(&probe)
            .output()
            .unwrap()
            .status
            .success();
        if flows_on {
            with_flow
        } else {
            run_ok(citysec().args(["sim", "zones", "--merge"]).arg(&path))
        }
    });
    let flow = if flows_on { flow } else { "none".to_owned() };
    let ca = data.join("pki").join("ca.pem");
    assert!(ca.exists(), "the platform generated no city CA");
    let result = exercise(
        &platform.http,
        &data,
        platform.mqtt_port,
        &mqtt_tls,
        &flow,
        "mqtt-brute-force,mqtt-password-spray,siren-replay,client-id-takeover,certificate-mismatch,mqtt-topic-abuse,firmware-tamper",
    );
    let scenarios = result["scenarios"].as_array().unwrap();
    assert_eq!(scenarios.len(), 7, "{result}");
    for verdict in scenarios {
        assert_eq!(verdict["detected"], true, "{verdict}");
        let ttd = verdict["time_to_detect_s"].as_f64().unwrap();
        assert!((0.0..=10.0).contains(&ttd), "{verdict}");
        assert!(
            verdict["problems"].as_array().unwrap().is_empty(),
            "{verdict}"
        );
    }
    let by_name = |name: &str| {
        scenarios
            .iter()
            .find(|v| v["scenario"] == name)
            .unwrap_or_else(|| panic!("{name} missing in {result}"))
    };
    let fired = |name: &str| -> Vec<String> {
        by_name(name)["rules_fired"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        fired("mqtt-brute-force"),
        ["auth.brute_force.device", "auth.brute_force.source"]
    );
    assert_eq!(fired("mqtt-password-spray"), ["auth.brute_force.source"]);
    assert!(fired("siren-replay").contains(&"actuation.uncommanded".to_owned()));
    assert_eq!(fired("client-id-takeover"), ["identity.client_id_takeover"]);
    assert_eq!(
        fired("certificate-mismatch"),
        ["identity.certificate_mismatch"]
    );
    // Both paths, each naming the valve posed as: another valve's genuine certificate
    // (wrong CN) and a valve's own superseded certificate (fingerprint not registered).
    let mut posed_as: Vec<&str> = by_name("certificate-mismatch")["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["rule"] == "identity.certificate_mismatch")
        .map(|a| a["device_id"].as_str().unwrap_or("(none)"))
        .collect();
    posed_as.sort();
    assert_eq!(posed_as.len(), 2, "{result}");
    assert!(
        posed_as.iter().all(|d| d.starts_with("x-valve-")) && posed_as[0] != posed_as[1],
        "{posed_as:?}"
    );
    // The broker refused each, as the registered valve: one on the certificate's CN, the
    // other on its fingerprint.
    let token = std::fs::read_to_string(data.join("admin.token")).unwrap();
    let mut reasons: Vec<String> = Vec::new();
    for device in &posed_as {
        let (status, body) = super::http_get(
            &format!(
                "{}/api/v1/events?device_id={device}&limit=500",
                platform.http
            ),
            Some(token.trim()),
        );
        assert_eq!(status, 200, "{body}");
        let text = body.to_string();
        for reason in [
            "username does not match certificate cn",
            "certificate not registered for device",
        ] {
            if text.contains(reason) {
                reasons.push(reason.to_owned());
            }
        }
    }
    reasons.sort();
    assert_eq!(
        reasons,
        [
            "certificate not registered for device",
            "username does not match certificate cn"
        ]
    );
    // Every exercise siren sounded without a command: one alert per siren.
    let siren_alerts: Vec<&Value> = by_name("siren-replay")["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["rule"] == "actuation.uncommanded")
        .collect();
    assert_eq!(siren_alerts.len(), 6, "{result}");
    assert_eq!(
        result["false_alerts"].as_array().unwrap().len(),
        0,
        "false alerts on the benign background: {result}"
    );
    assert_eq!(result["devices"], 63);

    // The result was recorded on the platform, and the readiness index scores it.
    let id = result["recorded"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("not recorded: {result}"));
    let admin = &token;
    let get = |path: &str| -> Value {
        let mut response = ureq::get(&format!("{}{path}", platform.http))
            .header("Authorization", &format!("Bearer {}", admin.trim()))
            .call()
            .unwrap();
        serde_json::from_slice(&response.body_mut().read_to_vec().unwrap()).unwrap()
    };
    let stored = get("/api/v1/exercises");
    assert_eq!(stored[0]["id"], id, "{stored}");
    assert_eq!(
        stored[0]["result"]["scenarios"].as_array().unwrap().len(),
        7
    );
    assert_eq!(stored[0]["result"]["seed"], 3);
    let index = get("/api/v1/readiness");
    let exercises = index["city"]["values"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["id"] == "exercises")
        .unwrap()
        .clone();
    // One scored exercise of the four a year asks for, every scenario detected within a
    // minute: a quarter of the indicator.
    assert_eq!(exercises["score"], 0.25, "{exercises}");
    let detail = exercises["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("1 exercises in the last 365 days (1 detection exercises, 0 public-warning drills), mean score 100% (7 of 7 scenarios detected, median time to detect"),
        "{detail}"
    );
}

/// The catalogue lists every scenario with the rules it expects, and a soak of benign
/// background replays through the engine in process.
#[test]
fn exercise_list_and_a_short_soak() {
    let list: Value =
        serde_json::from_str(&run_ok(citysec().args(["exercise", "list", "--json"]))).unwrap();
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 14, "{names:?}");
    assert!(names.contains(&"mirai-camera") && names.contains(&"partner-indicator"));
    assert!(names.contains(&"certificate-mismatch"));
    let soak: Value = serde_json::from_str(&run_ok(
        citysec()
            .args([
                "exercise",
                "soak",
                "--devices",
                "60",
                "--hours",
                "1",
                "--json",
            ])
            .env("CITYSEC_LOG", "error"),
    ))
    .unwrap();
    assert_eq!(soak["device_hours"], 60.0);
    assert!(soak["publishes"].as_u64().unwrap() > 60 * 100, "{soak}");
    assert!(soak["flows"].as_u64().unwrap() > 60 * 60, "{soak}");
    assert_eq!(soak["rejected"], 0, "{soak}");

    // The certificate scenario injected into the engine in process, as the broker reports
    // it: one alert per valve posed as, both paths, no false alert.
    let soak: Value = serde_json::from_str(&run_ok(
        citysec()
            .args(["exercise", "soak", "--devices", "200", "--hours", "0.25"])
            .args(["--scenarios", "certificate-mismatch", "--json"])
            .env("CITYSEC_LOG", "error"),
    ))
    .unwrap();
    assert_eq!(soak["alerts"], 0, "{soak}");
    let score = &soak["in_process_scenarios"];
    assert_eq!(score["false_alerts"].as_array().unwrap().len(), 0, "{soak}");
    let verdict = &score["scenarios"][0];
    assert_eq!(verdict["scenario"], "certificate-mismatch");
    assert_eq!(verdict["detected"], true, "{verdict}");
    assert!(verdict["time_to_detect_s"].as_f64().unwrap() <= 10.0);
    let devices: std::collections::BTreeSet<&str> = verdict["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["rule"] == "identity.certificate_mismatch")
        .filter_map(|a| a["device_id"].as_str())
        .collect();
    assert_eq!(devices.len(), 2, "{verdict}");
    assert!(devices.iter().all(|d| d.starts_with("valve-")), "{verdict}");
}

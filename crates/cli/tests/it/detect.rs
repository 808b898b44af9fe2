//! Detection end to end: a device that reaches for other topics over real MQTT raises
//! `mqtt.topic_abuse`; an analyst learns it through the API and the same behaviour stays
//! quiet, also after a restart; the city's own indicators load; broken rule files fail
//! `check-config` with the file and entry named.

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use super::{citysec, have, http_get, run_ok, serve, wait_for};

fn http_post(url: &str, token: &str, body: Value) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    match agent
        .post(url)
        .header("Authorization", &format!("Bearer {token}"))
        .send_json(body)
    {
        Ok(mut resp) => {
            let status = resp.status().as_u16();
            let text = resp.body_mut().read_to_string().unwrap_or_default();
            (
                status,
                serde_json::from_str(&text).unwrap_or(Value::String(text)),
            )
        }
        Err(err) => panic!("POST {url}: {err}"),
    }
}

fn subscribe_wildcard(port: u16, secret: &str) {
    // The broker refuses the subscription; mosquitto_sub exits on its own after -W.
    let _ = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-i", "camera-0001", "-u", "camera-0001", "-P", secret])
        .args(["-t", "#", "-W", "2", "-C", "1"])
        .output()
        .unwrap();
}

fn topic_abuse(http: &str, token: &str) -> Vec<Value> {
    let (_, alerts) = http_get(
        &format!("{http}/api/v1/alerts?rule=mqtt.topic_abuse"),
        Some(token),
    );
    alerts
        .get("items")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

#[test]
fn topic_abuse_is_detected_learned_and_stays_learned_across_a_restart() {
    if !have("mosquitto_sub") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let secret = "0123456789abcdef0123456789abcdef";
    run_ok(
        citysec()
            .args([
                "device",
                "add",
                "camera-0001",
                "--class",
                "camera",
                "--zone",
                "ps-field",
            ])
            .args([
                "--owner",
                "police",
                "--secret",
                secret,
                "--offline",
                "--data-dir",
            ])
            .arg(&data),
    );
    let token = |data: &std::path::Path| {
        std::fs::read_to_string(data.join("admin.token"))
            .unwrap()
            .trim()
            .to_owned()
    };
    let platform = serve(dir.path(), &data, |c| c);
    let token = token(&data);

    subscribe_wildcard(platform.mqtt_port, secret);
    wait_for("a topic abuse alert", Duration::from_secs(15), || {
        !topic_abuse(&platform.http, &token).is_empty()
    });
    let alert = topic_abuse(&platform.http, &token).remove(0);
    assert_eq!(alert["device_id"], "camera-0001");
    assert_eq!(alert["key"], "camera-0001/wildcard");
    assert!(alert["explanation"].as_str().unwrap().contains("wildcard"));
    let id = alert["id"].as_str().unwrap().to_owned();

    let (status, learned) = http_post(
        &format!("{}/api/v1/alerts/{id}/learn", platform.http),
        &token,
        json!({"reason": "the VMS bridge subscribes to everything by design"}),
    );
    assert_eq!(status, 200, "{learned}");
    assert_eq!(learned["kind"], "learned");

    // The same behaviour again: no new alert, no repeat merged into the old one.
    let count = |alerts: &[Value]| {
        alerts
            .iter()
            .map(|a| a["count"].as_u64().unwrap())
            .sum::<u64>()
    };
    let before = count(&topic_abuse(&platform.http, &token));
    std::thread::sleep(Duration::from_millis(500));
    subscribe_wildcard(platform.mqtt_port, secret);
    // Once the second refusal is stored, detection has had it too (both consume the same
    // stream); give the worker a moment past that.
    wait_for("the second refusal stored", Duration::from_secs(10), || {
        let (_, events) = http_get(
            &format!(
                "{}/api/v1/events?device_id=camera-0001&kind=security",
                platform.http
            ),
            Some(&token),
        );
        events.to_string().matches("subscribe_denied").count() == 2
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(count(&topic_abuse(&platform.http, &token)), before);

    // The city's own indicator, validated per object.
    let (status, report) = http_post(
        &format!("{}/api/v1/indicators", platform.http),
        &token,
        json!({"type": "bundle", "id": "bundle--5d2d6b4c-3c1e-4a52-9bb8-0e1c4a1f7a10", "objects": [
            {"type": "indicator", "spec_version": "2.1",
             "id": "indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f",
             "created": "2026-12-01T10:00:00.000Z", "modified": "2026-12-01T10:00:00.000Z",
             "name": "Mirai C2", "pattern": "[ipv4-addr:value = '203.0.113.66']",
             "pattern_type": "stix", "valid_from": "2026-12-01T10:00:00Z"},
            {"type": "indicator", "id": "indicator--broken", "pattern": "[ipv4-addr:value = ]"}
        ]}),
    );
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["accepted"], 1, "{report}");
    assert_eq!(report["refused"].as_array().unwrap().len(), 1, "{report}");
    wait_for(
        "the indicator in the engine",
        Duration::from_secs(10),
        || http_get(&format!("{}/api/v1/detect", platform.http), Some(&token)).1["indicators"] == 1,
    );
    drop(platform);

    // After a restart the learn and the indicator are back.
    let platform = serve(dir.path(), &data, |c| c);
    wait_for("the indicator restored", Duration::from_secs(10), || {
        http_get(&format!("{}/api/v1/detect", platform.http), Some(&token)).1["indicators"] == 1
    });
    subscribe_wildcard(platform.mqtt_port, secret);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(count(&topic_abuse(&platform.http, &token)), before);
    let (_, suppressions) = http_get(
        &format!("{}/api/v1/suppressions", platform.http),
        Some(&token),
    );
    assert_eq!(
        suppressions["suppressions"][0]["actor"], "admin",
        "{suppressions}"
    );
}

#[test]
fn broken_rule_files_fail_check_config_and_name_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(
        rules.join("city.toml"),
        "version = 1\n[[reading]]\nclass = \"level_sensor\"\nreading = \"level_m\"\nmax = 8.0\n\n[[reading]]\nclass = \"sirne\"\nreading = \"x\"\n",
    )
    .unwrap();
    let config = run_ok(citysec().arg("generate-config"))
        .replace("# rules_dir = \"rules\"", "rules_dir = \"rules\"");
    let path = dir.path().join("citysec.toml");
    std::fs::write(&path, config).unwrap();
    let out = citysec().arg("check-config").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("city.toml: reading[1]: unknown variant `sirne`"),
        "{stderr}"
    );
    // fixing the entry makes the config check clean
    std::fs::write(
        rules.join("city.toml"),
        "version = 1\n[[reading]]\nclass = \"level_sensor\"\nreading = \"level_m\"\nmax = 8.0\n",
    )
    .unwrap();
    let out = citysec().arg("check-config").arg(&path).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

//! End-to-end tests of the `citysec` binary, run as a new user would: real processes,
//! real sockets, real MQTT clients (`mosquitto_pub` from Debian's mosquitto-clients).

use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod cluster;
mod detect;
mod exercise;
mod gateway;

fn citysec() -> Command {
    Command::new(env!("CARGO_BIN_EXE_citysec"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn have(program: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("CITYSEC_REQUIRE_PEERS").as_deref() != Ok("1"),
            "{program} is required (CITYSEC_REQUIRE_PEERS=1) but not installed"
        );
        eprintln!("skipping: {program} not installed (apt-get install mosquitto-clients)");
    }
    found
}

struct Demo {
    child: Child,
    http: String,
    mqtt_port: u16,
    /// The MQTT over mTLS listener (0 when the platform has none).
    mqtt_tls_port: u16,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http_get(url: &str, token: Option<&str>) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut req = agent.get(url);
    if let Some(token) = token {
        req = req.header("Authorization", &format!("Bearer {token}"));
    }
    match req.call() {
        Ok(mut resp) => {
            let status = resp.status().as_u16();
            let text = resp.body_mut().read_to_string().unwrap_or_default();
            (
                status,
                serde_json::from_str(&text).unwrap_or(Value::String(text)),
            )
        }
        Err(_) => (0, Value::Null),
    }
}

fn start_demo(data_dir: &Path, devices: usize, seed: u64) -> Demo {
    let http_port = free_port();
    let mqtt_port = free_port();
    let mqtt_tls_port = free_port();
    let child = citysec()
        .args([
            "demo",
            "--devices",
            &devices.to_string(),
            "--seed",
            &seed.to_string(),
        ])
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--http-listen", &format!("127.0.0.1:{http_port}")])
        .args(["--mqtt-listen", &format!("127.0.0.1:{mqtt_port}")])
        .args(["--mqtt-tls-listen", &format!("127.0.0.1:{mqtt_tls_port}")])
        .args(["--flow-listen", "127.0.0.1:0"])
        .args([
            "--attack-first-after",
            "3s",
            "--attack-spacing",
            "3s",
            "--duration",
            "120s",
        ])
        .env("CITYSEC_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("citysec demo starts");
    let demo = Demo {
        child,
        http: format!("http://127.0.0.1:{http_port}"),
        mqtt_port,
        mqtt_tls_port,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while http_get(&format!("{}/readyz", demo.http), None).0 != 200 {
        assert!(
            Instant::now() < deadline,
            "platform did not become ready in 60 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    demo
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The issue's first detection path, end to end: the demo's simulated attacks (brute force,
/// password spraying, an uncommanded siren) arrive over real MQTT, are detected, stored,
/// and listed at `GET /api/v1/alerts`; the API needs the generated token; Ctrl-C stops
/// cleanly and the store keeps what was acknowledged.
#[test]
fn demo_detects_the_attack_schedule_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut demo = start_demo(&data, 300, 7);

    // The admin token exists, is private, and is the only way in.
    let token_path = data.join("admin.token");
    let token = std::fs::read_to_string(&token_path)
        .unwrap()
        .trim()
        .to_owned();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "admin.token must be mode 0600");
    }
    assert_eq!(
        http_get(&format!("{}/api/v1/alerts", demo.http), None).0,
        401
    );
    assert_eq!(
        http_get(&format!("{}/api/v1/alerts", demo.http), Some("cs_wrong")).0,
        401
    );

    // The registry holds the simulated city, without secret hashes.
    let (status, devices) = http_get(
        &format!("{}/api/v1/devices?limit=1000", demo.http),
        Some(&token),
    );
    assert_eq!(status, 200, "{devices}");
    let items = devices["items"].as_array().unwrap();
    assert_eq!(items.len(), 300);
    assert!(
        !devices.to_string().contains("$sha256$"),
        "secret hashes must not leave the store"
    );

    // Devices come online and telemetry flows.
    wait_for(
        "devices online and telemetry",
        Duration::from_secs(30),
        || {
            let (_, s) = http_get(&format!("{}/api/v1/status", demo.http), Some(&token));
            s["devices_online"].as_u64().unwrap_or(0) >= 250
        },
    );

    // Every attack of the schedule is detected and stored.
    let mut rules = Vec::new();
    wait_for("alerts for every attack", Duration::from_secs(60), || {
        let (_, alerts) = http_get(
            &format!("{}/api/v1/alerts?limit=100", demo.http),
            Some(&token),
        );
        rules = alerts["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a["rule"].as_str().map(str::to_owned))
            .collect();
        [
            "auth.brute_force.device",
            "auth.brute_force.source",
            "actuation.uncommanded",
        ]
        .iter()
        .all(|r| rules.iter().any(|x| x == r))
    });
    let (_, alerts) = http_get(
        &format!("{}/api/v1/alerts?rule=actuation.uncommanded", demo.http),
        Some(&token),
    );
    let siren = &alerts["items"][0];
    assert_eq!(siren["severity"], "critical");
    assert!(
        siren["device_id"].as_str().unwrap().starts_with("siren-"),
        "{siren}"
    );

    // Broker decisions are events too.
    let (_, events) = http_get(
        &format!("{}/api/v1/events?kind=security&limit=200", demo.http),
        Some(&token),
    );
    let actions: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(actions.contains(&"auth_failure"), "{actions:?}");
    assert!(actions.contains(&"connect_accepted"), "{actions:?}");

    // A real MQTT client with a wrong password is refused and reported.
    if have("mosquitto_pub") {
        let out = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &demo.mqtt_port.to_string()])
            .args([
                "-i",
                "siren-0001",
                "-u",
                "siren-0001",
                "-P",
                "not-the-secret-at-all",
            ])
            .args([
                "-t",
                "city/public_safety/siren-0001/state",
                "-m",
                "{\"sounding\":true}",
            ])
            .output()
            .unwrap();
        assert!(!out.status.success(), "a bad password must be refused");
    }

    // The demo's broker listens for mTLS with the city CA it generated into the data dir
    // (key private); a certificate from that CA naming one device, presented as another
    // device, is refused and alerted on, naming the device posed as.
    let pki = data.join("pki");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&pki.join("ca.key")), 0o600);
        assert_eq!(mode(&pki), 0o700);
    }
    if have("mosquitto_pub") {
        let certs = dir.path().join("certs");
        std::fs::create_dir(&certs).unwrap();
        std::fs::copy(pki.join("ca.pem"), certs.join("ca.pem")).unwrap();
        std::fs::copy(pki.join("ca.key"), certs.join("ca.key")).unwrap();
        run_ok(
            citysec()
                .args(["pki", "device", "--dir"])
                .arg(&certs)
                .arg("siren-0001"),
        );
        let publish_tls = |as_id: &str| {
            Command::new("mosquitto_pub")
                .args(["-h", "127.0.0.1", "-p", &demo.mqtt_tls_port.to_string()])
                .args(["-V", "mqttv311", "--cafile"])
                .arg(certs.join("ca.pem"))
                .arg("--cert")
                .arg(certs.join("siren-0001.pem"))
                .arg("--key")
                .arg(certs.join("siren-0001.key"))
                .args(["-i", as_id, "-u", as_id])
                .args([
                    "-t",
                    &format!("city/public_safety/{as_id}/telemetry"),
                    "-m",
                    "{\"battery_v\": 26.9}",
                ])
                .status()
                .unwrap()
                .success()
        };
        assert!(
            !publish_tls("siren-0002"),
            "another device's certificate is refused"
        );
        wait_for(
            "the certificate mismatch alert",
            Duration::from_secs(10),
            || {
                let (_, alerts) = http_get(
                    &format!(
                        "{}/api/v1/alerts?rule=identity.certificate_mismatch",
                        demo.http
                    ),
                    Some(&token),
                );
                alerts["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|a| a["device_id"] == "siren-0002")
            },
        );
    }

    // The registry through the running platform: a device added with the CLI can connect
    // at once with its generated secret, and once revoked it cannot.
    if have("mosquitto_pub") {
        let added = run_ok(
            citysec()
                .args([
                    "device",
                    "add",
                    "pump-9999",
                    "--class",
                    "pump",
                    "--zone",
                    "water-ot",
                    "--owner",
                    "water",
                ])
                .args(["--url", &demo.http, "--token-file"])
                .arg(&token_path),
        );
        let secret = added
            .lines()
            .find_map(|l| l.split_once("): ").map(|(_, s)| s.trim().to_owned()))
            .unwrap_or_else(|| panic!("no secret printed: {added}"));
        let publish = || {
            Command::new("mosquitto_pub")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &demo.mqtt_port.to_string(),
                    "-V",
                    "mqttv5",
                ])
                .args(["-i", "pump-9999", "-u", "pump-9999", "-P", &secret])
                .args([
                    "-t",
                    "city/water/pump-9999/telemetry",
                    "-m",
                    "{\"flow_lps\": 12.5}",
                ])
                .status()
                .unwrap()
                .success()
        };
        assert!(publish(), "a freshly added device must be able to connect");
        run_ok(
            citysec()
                .args([
                    "device",
                    "revoke",
                    "pump-9999",
                    "--url",
                    &demo.http,
                    "--token-file",
                ])
                .arg(&token_path),
        );
        assert!(!publish(), "a revoked device must be refused");
        let shown = run_ok(
            citysec()
                .args([
                    "device",
                    "show",
                    "pump-9999",
                    "--url",
                    &demo.http,
                    "--token-file",
                ])
                .arg(&token_path),
        );
        assert!(shown.contains("revoked"), "{shown}");
    }

    // Ctrl-C stops cleanly and flushes.
    let pid = demo.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = demo.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "demo did not stop within 30 s of Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stderr = String::new();
    demo.child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "demo exited with {status}: {stderr}");
    assert!(stderr.contains("admin token"), "{stderr}");

    // The store closed cleanly and kept the registry.
    let out = citysec()
        .args(["device", "show", "siren-0001", "--offline", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let device: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(device["class"], "siren");
}

#[test]
fn generated_config_checks_and_bad_config_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = citysec().arg("generate-config").output().unwrap();
    assert!(out.status.success());
    let good = dir.path().join("citysec.toml");
    std::fs::write(&good, &out.stdout).unwrap();
    let check = citysec().arg("check-config").arg(&good).output().unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    let bad = dir.path().join("bad.toml");
    let text = String::from_utf8(out.stdout)
        .unwrap()
        .replace("listen = \"127.0.0.1:8080\"", "listen = \"here\"");
    std::fs::write(&bad, text).unwrap();
    let check = citysec().arg("check-config").arg(&bad).output().unwrap();
    assert_eq!(check.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&check.stderr).contains("http.listen"));

    // The data files the config names, relative to it: the shipped firmware catalogue
    // passes; broken templates fail the check with the template named.
    let generated = std::fs::read_to_string(&good).unwrap();
    let conf = dir.path().join("conf");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(
        conf.join("firmware.toml"),
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/firmware.toml"))
            .unwrap(),
    )
    .unwrap();
    let with_files = conf.join("citysec.toml");
    std::fs::write(
        &with_files,
        generated
            .replace(
                "# firmware_catalogue = \"firmware.toml\"",
                "firmware_catalogue = \"firmware.toml\"",
            )
            .replace(
                "# templates = \"advisory-templates.toml\"",
                "templates = \"advisory-templates.toml\"",
            ),
    )
    .unwrap();
    std::fs::write(
        conf.join("advisory-templates.toml"),
        std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/advisory-templates.toml"),
        )
        .unwrap(),
    )
    .unwrap();
    let check = citysec()
        .arg("check-config")
        .arg(&with_files)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    std::fs::write(
        conf.join("advisory-templates.toml"),
        "version = 1\n[[template]]\nid = \"only-sirens\"\nclasses = [\"siren\"]\nevent = \"E\"\ncategories = [\"Safety\"]\nurgency = \"Immediate\"\nseverity = \"Minor\"\ncertainty = \"Observed\"\nexpires_h = 6\n[template.texts.en-US]\nheadline = \"h\"\narea = \"a\"\n",
    )
    .unwrap();
    let check = citysec()
        .arg("check-config")
        .arg(&with_files)
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(
        stderr.contains("advisory-templates.toml: no generic template"),
        "{stderr}"
    );
}

#[test]
fn offline_inventory_import_and_listing() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("inventory.csv");
    std::fs::write(
        &csv,
        "id,class,zone,owner,vendor,model,firmware,lat,lon,secret\n\
         pump-0001,pump,water-ot,water,Grundfos,CR,4.2,52.1,4.3,0123456789abcdef0123456789abcdef\n\
         bad id,pump,water-ot,water,,,,,,\n",
    )
    .unwrap();
    let out = citysec()
        .args(["device", "import", "--offline", "--data-dir"])
        .arg(dir.path())
        .arg(&csv)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "a refused row makes the exit code 1"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("imported 1 devices"), "{stdout}");
    assert!(stdout.contains("row 2"), "{stdout}");

    let out = citysec()
        .args(["device", "list", "--offline", "--json", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["id"], "pump-0001");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("sha256$"));
}

/// Starts `citysec serve` from the generated config with `data` as its data directory, free
/// loopback ports and `edit` applied to the config text; returns once it is ready.
fn serve(dir: &Path, data: &Path, edit: impl FnOnce(String) -> String) -> Demo {
    let (http_port, mqtt_port) = (free_port(), free_port());
    let config = run_ok(citysec().arg("generate-config"))
        .replace(
            "${CITYSEC_DATA_DIR:-./citysec-data}",
            &data.display().to_string(),
        )
        .replace(
            "listen = \"127.0.0.1:8080\"",
            &format!("listen = \"127.0.0.1:{http_port}\""),
        )
        .replace(
            "listen = \"127.0.0.1:1883\"",
            &format!("listen = \"127.0.0.1:{mqtt_port}\""),
        )
        .replace("listen = \"127.0.0.1:2055\"", "listen = \"127.0.0.1:0\"");
    let config_path = dir.join("citysec.toml");
    std::fs::write(&config_path, edit(config)).unwrap();
    let child = citysec()
        .args(["serve", "--config"])
        .arg(&config_path)
        .env("CITYSEC_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let platform = Demo {
        child,
        http: format!("http://127.0.0.1:{http_port}"),
        mqtt_port,
        mqtt_tls_port: 0,
    };
    wait_for("readyz", Duration::from_secs(30), || {
        http_get(&format!("{}/readyz", platform.http), None).0 == 200
    });
    platform
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `serve` from a config with TLS listeners: HTTPS for the API, MQTT over TLS where a
/// device authenticates with a certificate from `citysec pki` whose CN names it.
#[test]
fn serve_with_tls_and_device_certificates() {
    if !have("mosquitto_pub") || !have("curl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let data = dir.path().join("data");
    run_ok(citysec().args(["pki", "init", "--dir"]).arg(&pki));
    run_ok(
        citysec()
            .args([
                "pki",
                "server",
                "--dns",
                "localhost",
                "--ip",
                "127.0.0.1",
                "--dir",
            ])
            .arg(&pki),
    );
    let issued = run_ok(
        citysec()
            .args(["pki", "device", "siren-0001", "stranger-1", "--dir"])
            .arg(&pki),
    );
    let fingerprint = issued
        .lines()
        .find_map(|l| l.strip_prefix("siren-0001 "))
        .unwrap_or_else(|| panic!("no fingerprint in {issued:?}"))
        .trim()
        .to_owned();
    run_ok(
        citysec()
            .args([
                "device",
                "add",
                "siren-0001",
                "--class",
                "siren",
                "--zone",
                "ps-field",
            ])
            .args([
                "--owner",
                "emergency management",
                "--cert-sha256",
                &fingerprint,
                "--offline",
                "--data-dir",
            ])
            .arg(&data),
    );

    let (https_port, mqtt_port, mqtts_port) = (free_port(), free_port(), free_port());
    let default = run_ok(citysec().arg("generate-config"));
    let p = |name: &str| pki.join(name).display().to_string();
    let config = default
        .replace("${CITYSEC_DATA_DIR:-./citysec-data}", &data.display().to_string())
        .replace("listen = \"127.0.0.1:8080\"", &format!("listen = \"127.0.0.1:{https_port}\""))
        .replacen(
            "# tls_cert = \"pki/server.pem\"\n# tls_key = \"pki/server.key\"\n",
            &format!("tls_cert = \"{}\"\ntls_key = \"{}\"\n", p("server.pem"), p("server.key")),
            1,
        )
        .replace("listen = \"127.0.0.1:1883\"", &format!("listen = \"127.0.0.1:{mqtt_port}\""))
        .replace("listen = \"127.0.0.1:2055\"", "listen = \"127.0.0.1:0\"")
        .replace("# tls_listen = \"127.0.0.1:8883\"", &format!("tls_listen = \"127.0.0.1:{mqtts_port}\""))
        .replace("# tls_cert = \"pki/server.pem\"\n# tls_key = \"pki/server.key\"\n# client_ca = \"pki/ca.pem\"", &format!("tls_cert = \"{}\"\ntls_key = \"{}\"\nclient_ca = \"{}\"", p("server.pem"), p("server.key"), p("ca.pem")));
    let config_path = dir.path().join("citysec.toml");
    std::fs::write(&config_path, &config).unwrap();
    run_ok(citysec().arg("check-config").arg(&config_path));
    assert!(
        config.contains("client_ca = "),
        "config template changed: {config}"
    );

    let child = citysec()
        .args(["serve", "--config"])
        .arg(&config_path)
        .env("CITYSEC_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _guard = Demo {
        child,
        http: String::new(),
        mqtt_port,
        mqtt_tls_port: mqtts_port,
    };
    let url = format!("https://localhost:{https_port}");
    let curl = |path: &str, token: Option<&str>| -> (bool, String) {
        let mut cmd = Command::new("curl");
        cmd.args(["-sf", "--cacert"]).arg(pki.join("ca.pem"));
        if let Some(token) = token {
            cmd.args(["-H", &format!("Authorization: Bearer {token}")]);
        }
        let out = cmd.arg(format!("{url}{path}")).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    wait_for("https /readyz", Duration::from_secs(30), || {
        curl("/readyz", None).0
    });
    let token = std::fs::read_to_string(data.join("admin.token"))
        .unwrap()
        .trim()
        .to_owned();

    let publish = |cert: &str, client: &str| -> bool {
        Command::new("mosquitto_pub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &mqtts_port.to_string(),
                "-V",
                "mqttv311",
            ])
            .arg("--cafile")
            .arg(pki.join("ca.pem"))
            .arg("--cert")
            .arg(pki.join(format!("{cert}.pem")))
            .arg("--key")
            .arg(pki.join(format!("{cert}.key")))
            .args([
                "-i",
                client,
                "-t",
                &format!("city/public_safety/{client}/telemetry"),
                "-m",
                "{\"battery_v\": 26.8}",
            ])
            .status()
            .unwrap()
            .success()
    };
    assert!(
        publish("siren-0001", "siren-0001"),
        "a registered device certificate must connect"
    );
    assert!(
        !publish("stranger-1", "stranger-1"),
        "a CA-signed certificate for an unregistered device must be refused"
    );

    wait_for(
        "the certificate login and its telemetry stored",
        Duration::from_secs(15),
        || {
            let (ok, body) = curl("/api/v1/events?device_id=siren-0001&limit=50", Some(&token));
            ok && body.contains("connect_accepted") && body.contains("battery_v")
        },
    );
}

/// `[store] telemetry = "none"`: raw readings are not persisted, while broker security
/// events still are.
#[test]
fn telemetry_storage_off_keeps_security_events() {
    if !have("mosquitto_pub") {
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
                "meter-0001",
                "--class",
                "smart_meter",
                "--zone",
                "energy-ami",
            ])
            .args([
                "--owner",
                "utility",
                "--secret",
                secret,
                "--offline",
                "--data-dir",
            ])
            .arg(&data),
    );
    let demo = serve(dir.path(), &data, |config| {
        config.replace("telemetry = \"all\"", "telemetry = \"none\"")
    });
    let token = std::fs::read_to_string(data.join("admin.token"))
        .unwrap()
        .trim()
        .to_owned();
    let ok = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &demo.mqtt_port.to_string(),
            "-i",
            "meter-0001",
            "-u",
            "meter-0001",
            "-P",
            secret,
        ])
        .args([
            "-t",
            "city/energy/meter-0001/telemetry",
            "-m",
            "{\"energy_kwh\": 1234.5}",
        ])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    // The session's events arrive in order: once its disconnect is stored, the reading
    // published before it has been through the store writer too.
    wait_for("the session stored", Duration::from_secs(15), || {
        let (_, events) = http_get(
            &format!("{}/api/v1/events?device_id=meter-0001", demo.http),
            Some(&token),
        );
        let text = events.to_string();
        text.contains("connect_accepted") && text.contains("\"disconnect\"")
    });
    let (_, events) = http_get(
        &format!("{}/api/v1/events?device_id=meter-0001", demo.http),
        Some(&token),
    );
    assert!(!events.to_string().contains("energy_kwh"), "{events}");
    let (_, status) = http_get(&format!("{}/api/v1/status", demo.http), Some(&token));
    assert_eq!(status["devices_registered"], 1);
}

/// The simulator as a load generator against a platform that knows the same population:
/// `citysec sim --mqtt HOST:PORT --devices N --rate R`.
#[test]
fn sim_drives_a_served_platform_with_the_same_population() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let population = dir.path().join("city.json");
    run_ok(
        citysec()
            .args([
                "sim",
                "population",
                "--devices",
                "60",
                "--seed",
                "3",
                "--out",
            ])
            .arg(&population),
    );
    run_ok(
        citysec()
            .args(["device", "import", "--offline", "--data-dir"])
            .arg(&data)
            .arg(&population),
    );
    let platform = serve(dir.path(), &data, |config| config);

    // No file: the population of --devices and --seed is generated, the same as imported.
    let out = run_ok(
        citysec()
            .args([
                "sim",
                "--mqtt",
                &format!("127.0.0.1:{}", platform.mqtt_port),
                "--devices",
                "60",
                "--seed",
                "3",
            ])
            .args(["--rate", "600", "--duration", "4s", "--json"])
            .env("CITYSEC_LOG", "error"),
    );
    let stats: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(stats["connect_failures"], 0, "{stats}");
    assert_eq!(stats["connects"], 60, "{stats}");
    assert!(stats["messages_sent"].as_u64().unwrap() > 500, "{stats}");

    let token = std::fs::read_to_string(data.join("admin.token"))
        .unwrap()
        .trim()
        .to_owned();
    let (_, events) = http_get(
        &format!("{}/api/v1/events?kind=telemetry&limit=10", platform.http),
        Some(&token),
    );
    assert_eq!(
        events["items"].as_array().map(Vec::len),
        Some(10),
        "{events}"
    );
}

/// `citysec cap validate` checks files offline; `citysec cap ...` and `citysec readiness`
/// drive a served platform.
#[test]
fn cap_and_readiness_commands() {
    let cap_data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cap/test_data");
    let out = run_ok(
        citysec()
            .args(["cap", "validate"])
            .arg(cap_data.join("valid/full.xml"))
            .arg(cap_data.join("valid/minimal.xml")),
    );
    assert!(
        out.contains("full.xml: ok (Actual Update city-example-2026-0042, 2 info block(s))"),
        "{out}"
    );
    let bad = citysec()
        .args(["cap", "validate"])
        .arg(cap_data.join("valid/minimal.xml"))
        .arg(cap_data.join("invalid/update_without_references.xml"))
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    let text = String::from_utf8_lossy(&bad.stdout);
    assert!(
        text.contains("update_without_references.xml: breaks a CAP 1.2 rule at alert/references"),
        "{text}"
    );

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let platform = serve(dir.path(), &data, |c| c);
    let target = |cmd: &mut Command| {
        cmd.arg("--url")
            .arg(&platform.http)
            .arg("--token-file")
            .arg(data.join("admin.token"));
    };
    let draft = dir.path().join("draft.json");
    std::fs::write(
        &draft,
        r#"{"status": "Exercise", "content": {"event": "Siren exercise", "categories": ["Safety"],
            "urgency": "Future", "severity": "Minor", "certainty": "Likely",
            "texts": [{"language": "en-US", "headline": "Sirens will be tested at noon"}]}}"#,
    )
    .unwrap();
    let mut cmd = citysec();
    cmd.args(["cap", "draft", "--json"]).arg(&draft);
    target(&mut cmd);
    let drafted: Value = serde_json::from_str(&run_ok(&mut cmd)).unwrap();
    let id = drafted["id"].as_str().unwrap().to_owned();
    let mut cmd = citysec();
    cmd.args(["cap", "issue", &id]);
    target(&mut cmd);
    let out = run_ok(&mut cmd);
    assert!(
        out.contains(&format!("{id} issued (Exercise Alert)")),
        "{out}"
    );
    assert!(out.contains(&format!("ready cancel: {id}-cancel")), "{out}");
    let mut cmd = citysec();
    cmd.args(["cap", "cancel", &id, "--note", "exercise called off"]);
    target(&mut cmd);
    run_ok(&mut cmd);
    let mut cmd = citysec();
    cmd.args(["cap", "list"]);
    target(&mut cmd);
    let out = run_ok(&mut cmd);
    assert!(
        out.contains("cancelled") && out.contains("Sirens will be tested at noon"),
        "{out}"
    );
    // The public document validates offline too.
    let (status, _) = http_get(&format!("{}/cap/alerts/{id}", platform.http), None);
    assert_eq!(status, 200);

    let mut cmd = citysec();
    cmd.args(["readiness", "--csv"]);
    target(&mut cmd);
    let csv = run_ok(&mut cmd);
    assert!(
        csv.starts_with("scope,indicator,score,detail,no_data\n"),
        "{csv}"
    );
    assert!(
        csv.contains("city,exercises,25.0,\"1 exercises in the last 365 days (0 detection exercises, 1 public-warning drills), not scored"),
        "{csv}"
    );
    assert!(
        csv.contains(
            "city,intel_sharing,,no data,\"no sharing collection, partner feed or collection partners write to is configured ([taxii])\""
        ),
        "{csv}"
    );
    // Drafts from incidents go to the incident route; an unknown incident is refused.
    let mut cmd = citysec();
    cmd.args(["cap", "from-incident", "INC-000009", "--status", "Test"]);
    target(&mut cmd);
    let out = cmd.output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no incident INC-000009"), "{stderr}");
    let mut cmd = citysec();
    cmd.arg("readiness");
    target(&mut cmd);
    let table = run_ok(&mut cmd);
    assert!(table.contains("what would raise it most:"), "{table}");
}

/// The first admin account is made offline with a generated password (there is no default
/// one); people then log in, manage accounts and work incidents as themselves.
#[test]
fn user_accounts_and_incidents_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = run_ok(
        citysec()
            .args([
                "user",
                "add",
                "ada",
                "--role",
                "admin",
                "--offline",
                "--data-dir",
            ])
            .arg(&data),
    );
    let password = out
        .lines()
        .find_map(|l| l.strip_prefix("password (shown once): "))
        .unwrap_or_else(|| panic!("no password in {out:?}"))
        .to_owned();
    let listed = run_ok(
        citysec()
            .args(["user", "list", "--offline", "--data-dir"])
            .arg(&data),
    );
    assert!(
        listed.contains("ada") && listed.contains("admin"),
        "{listed}"
    );
    let bad = citysec()
        .args([
            "user",
            "add",
            "x",
            "--role",
            "root",
            "--offline",
            "--data-dir",
        ])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown role"));

    let demo = serve(dir.path(), &data, |config| config);
    let login = {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut reply = agent
            .post(&format!("{}/api/v1/auth/login", demo.http))
            .send_json(serde_json::json!({"user": "ada", "password": password}))
            .unwrap();
        assert_eq!(reply.status().as_u16(), 200);
        let body: Value =
            serde_json::from_str(&reply.body_mut().read_to_string().unwrap()).unwrap();
        body["token"].as_str().unwrap().to_owned()
    };
    let as_ada = |args: &[&str]| {
        run_ok(
            citysec()
                .args(args)
                .args(["--url", &demo.http])
                .env("CITYSEC_TOKEN", &login),
        )
    };
    let out = as_ada(&["user", "add", "bob", "--role", "analyst"]);
    assert!(
        out.contains("created bob (analyst)") && out.contains("password (shown once)"),
        "{out}"
    );
    assert!(as_ada(&["user", "list"]).contains("bob"));
    assert!(as_ada(&["user", "disable", "bob"]).contains("disabled bob"));
    let listed = as_ada(&["user", "list"]);
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("bob") && l.contains("disabled")),
        "{listed}"
    );
    let listed = as_ada(&["incident", "list"]);
    assert!(listed.starts_with("ID"), "{listed}");
    let missing = citysec()
        .args(["incident", "ack", "INC-000001", "--url", &demo.http])
        .env("CITYSEC_TOKEN", &login)
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not found"));
    // The TLP of an incident: a level that does not exist is refused before any request.
    let tlp = |level: &str| {
        citysec()
            .args(["incident", "tlp", "INC-000001", level, "--url", &demo.http])
            .env("CITYSEC_TOKEN", &login)
            .output()
            .unwrap()
    };
    let bad = tlp("purple");
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("unknown TLP level \"purple\""),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    let missing = tlp("amber+strict");
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not found"));
    drop(demo);
}

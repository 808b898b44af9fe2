//! `cargo xtask bench mqtt`: end-to-end MQTT throughput of the platform against Mosquitto
//! on the same machine, load and device population, plus the platform's resident memory at
//! several city sizes. Writes a Markdown report to `bench/results/<date>-<host>/mqtt.md`.
//!
//! Both brokers get the same devices, the same per-device passwords and the same topic
//! policy (Mosquitto through its password and ACL files), and the same load from the same
//! simulator process (`citysec sim run`, QoS 0). Mosquitto's figure is what it delivers to
//! one subscriber reading every device topic (as citysec's bridge mode would); citysec's is
//! what its broker hands to the bus, which detection and the store then consume.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

struct Killer(Child);

impl Drop for Killer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Process CPU time (user + system) in seconds, from /proc.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').context("bad /proc stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = fields.get(11).context("no utime")?.parse()?;
    let stime: f64 = fields.get(12).context("no stime")?.parse()?;
    Ok((utime + stime) / 100.0)
}

/// (VmRSS, VmHWM) in MiB.
fn rss_mib(pid: u32) -> anyhow::Result<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> f64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    Ok((field("VmRSS:"), field("VmHWM:")))
}

/// The soft limit on open files of this process (inherited by the ones it starts).
fn open_files_limit() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(1024)
}

fn metric(http: &str, token: &str, name: &str) -> anyhow::Result<f64> {
    let out = Command::new("curl")
        .args([
            "-sf",
            "-H",
            &format!("Authorization: Bearer {token}"),
            &format!("{http}/metrics"),
        ])
        .output()
        .context("curl")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{name} "))
                .and_then(|v| v.trim().parse().ok())
        })
        .with_context(|| format!("metric {name} not found"))
}

struct Run {
    msgs_per_s: f64,
    sent_per_s: f64,
    broker_cpu_us_per_msg: f64,
    broker_cpu_share: f64,
}

fn sim_run(
    citysec: &Path,
    port: u16,
    pop: &Path,
    devices: usize,
    rate: u64,
    secs: u64,
) -> anyhow::Result<(Child, PathBuf)> {
    let out = pop.with_extension(format!("sim-{port}.json"));
    let child = Command::new(citysec)
        .args([
            "sim",
            "run",
            "--mqtt",
            &format!("127.0.0.1:{port}"),
            "--devices-file",
        ])
        .arg(pop)
        .args([
            "--devices",
            &devices.to_string(),
            "--rate",
            &rate.to_string(),
        ])
        .args([
            "--duration",
            &format!("{secs}s"),
            "--json",
            "--mqtt5-share",
            "0",
        ])
        .env("CITYSEC_LOG", "error")
        .stdout(std::fs::File::create(&out)?)
        .stderr(Stdio::null())
        .spawn()
        .context("start citysec sim")?;
    Ok((child, out))
}

fn sent_rate(out: &Path) -> f64 {
    std::fs::read_to_string(out)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["messages_per_s"].as_f64())
        .unwrap_or(0.0)
}

fn bench_mosquitto(
    citysec: &Path,
    dir: &Path,
    pop: &Path,
    devices: usize,
    rate: u64,
    secs: u64,
) -> anyhow::Result<Run> {
    let port = free_port()?;
    let mq = dir.join("mosquitto");
    let conf = mq.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\nacl_file {}\n\
             max_queued_messages 100000\nmax_inflight_messages 0\npersistence false\nlog_type error\n",
            mq.join("passwd").display(),
            mq.join("acl").display()
        ),
    )?;
    let broker = Killer(
        Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start mosquitto (apt-get install mosquitto)")?,
    );
    std::thread::sleep(Duration::from_millis(500));
    let mut sub = Killer(
        Command::new("mosquitto_sub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-u",
                "observer",
                "-P",
                "observer-secret-0123456789",
            ])
            .args(["-t", "city/#", "-q", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("start mosquitto_sub")?,
    );
    let delivered = Arc::new(AtomicU64::new(0));
    let stdout = sub.0.stdout.take().context("sub stdout")?;
    let counter = delivered.clone();
    std::thread::spawn(move || {
        let mut reader = BufReader::with_capacity(1 << 20, stdout);
        let mut line = Vec::new();
        while reader
            .read_until(b'\n', &mut line)
            .map(|n| n > 0)
            .unwrap_or(false)
        {
            counter.fetch_add(1, Ordering::Relaxed);
            line.clear();
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let (mut sim, out) = sim_run(citysec, port, pop, devices, rate, secs)?;
    // Measure the middle of the run: skip the connect ramp.
    std::thread::sleep(Duration::from_secs(3));
    let (c0, d0, t0) = (
        cpu_seconds(broker.0.id())?,
        delivered.load(Ordering::Relaxed),
        Instant::now(),
    );
    std::thread::sleep(Duration::from_secs(secs.saturating_sub(5).max(3)));
    let (c1, d1, t1) = (
        cpu_seconds(broker.0.id())?,
        delivered.load(Ordering::Relaxed),
        Instant::now(),
    );
    sim.wait()?;
    let elapsed = (t1 - t0).as_secs_f64();
    let msgs = (d1 - d0) as f64;
    drop(broker);
    Ok(Run {
        msgs_per_s: msgs / elapsed,
        sent_per_s: sent_rate(&out),
        broker_cpu_us_per_msg: (c1 - c0) * 1e6 / msgs.max(1.0),
        broker_cpu_share: (c1 - c0) / elapsed,
    })
}

struct Platform {
    child: Killer,
    http: String,
    mqtt_port: u16,
    token: String,
}

fn start_platform(
    citysec: &Path,
    dir: &Path,
    pop: &Path,
    devices: usize,
    telemetry: &str,
) -> anyhow::Result<Platform> {
    let data = dir.join(format!("data-{devices}-{telemetry}"));
    let _ = std::fs::remove_dir_all(&data);
    // Register the same devices before the platform starts.
    let status = Command::new(citysec)
        .args(["device", "import", "--offline", "--data-dir"])
        .arg(&data)
        .arg(pop)
        .stdout(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("device import failed");
    }
    let http_port = free_port()?;
    let mqtt_port = free_port()?;
    let config = dir.join(format!("citysec-{devices}-{telemetry}.toml"));
    let default = String::from_utf8(
        Command::new(citysec)
            .arg("generate-config")
            .output()?
            .stdout,
    )?;
    let text = default
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
        .replace("listen = \"127.0.0.1:2055\"", "listen = \"127.0.0.1:0\"")
        .replace("connect_rate_per_ip = 500", "connect_rate_per_ip = 100000")
        .replace(
            "telemetry = \"all\"",
            &format!("telemetry = \"{telemetry}\""),
        );
    std::fs::write(&config, text)?;
    let child = Killer(
        Command::new(citysec)
            .args(["serve", "--config"])
            .arg(&config)
            .env("CITYSEC_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let http = format!("http://127.0.0.1:{http_port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ok = Command::new("curl")
            .args(["-sf", &format!("{http}/readyz")])
            .output()?
            .status
            .success();
        if ok {
            break;
        }
        if Instant::now() > deadline {
            bail!("citysec did not become ready");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let token = std::fs::read_to_string(data.join("admin.token"))?
        .trim()
        .to_owned();
    Ok(Platform {
        child,
        http,
        mqtt_port,
        token,
    })
}

fn bench_citysec(
    citysec: &Path,
    dir: &Path,
    pop: &Path,
    devices: usize,
    rate: u64,
    secs: u64,
    telemetry: &str,
) -> anyhow::Result<Run> {
    let p = start_platform(citysec, dir, pop, devices, telemetry)?;
    let pid = p.child.0.id();
    let (mut sim, out) = sim_run(citysec, p.mqtt_port, pop, devices, rate, secs)?;
    std::thread::sleep(Duration::from_secs(3));
    let (c0, m0, t0) = (
        cpu_seconds(pid)?,
        metric(&p.http, &p.token, "mqtt_received_total")?,
        Instant::now(),
    );
    std::thread::sleep(Duration::from_secs(secs.saturating_sub(5).max(3)));
    let (c1, m1, t1) = (
        cpu_seconds(pid)?,
        metric(&p.http, &p.token, "mqtt_received_total")?,
        Instant::now(),
    );
    sim.wait()?;
    let elapsed = (t1 - t0).as_secs_f64();
    let msgs = m1 - m0;
    Ok(Run {
        msgs_per_s: msgs / elapsed,
        sent_per_s: sent_rate(&out),
        broker_cpu_us_per_msg: (c1 - c0) * 1e6 / msgs.max(1.0),
        broker_cpu_share: (c1 - c0) / elapsed,
    })
}

/// Resident memory of the platform with `devices` connected at their natural cadence.
fn memory_at(
    citysec: &Path,
    dir: &Path,
    devices: usize,
    settle_s: u64,
) -> anyhow::Result<(f64, f64, u64)> {
    let pop = dir.join(format!("population-{devices}.json"));
    let status = Command::new(citysec)
        .args([
            "sim",
            "population",
            "--devices",
            &devices.to_string(),
            "--seed",
            "1",
            "--out",
        ])
        .arg(&pop)
        .stderr(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("population failed");
    }
    let p = start_platform(citysec, dir, &pop, devices, "all")?;
    let sim = Command::new(citysec)
        .args([
            "sim",
            "run",
            "--mqtt",
            &format!("127.0.0.1:{}", p.mqtt_port),
            "--devices-file",
        ])
        .arg(&pop)
        .args(["--duration", &format!("{}s", settle_s + 30)])
        .env("CITYSEC_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let _sim = Killer(sim);
    let deadline = Instant::now() + Duration::from_secs(settle_s + 20);
    let mut online = 0;
    while Instant::now() < deadline {
        online = metric(&p.http, &p.token, "mqtt_connections")? as u64;
        if online as usize >= devices {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(Duration::from_secs(settle_s));
    let (rss, hwm) = rss_mib(p.child.0.id())?;
    Ok((rss, hwm, online))
}

pub fn run(root: &Path, args: &[String]) -> anyhow::Result<()> {
    let quick = args.iter().any(|a| a == "--quick");
    let secs: u64 = if quick { 10 } else { 20 };
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "-p", "cli"])
        .current_dir(root)
        .status()?;
    if !status.success() {
        bail!("release build failed");
    }
    let citysec = root.join("target/release/citysec");
    let dir = root.join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let devices = 1000;
    let pop = dir.join("population-1000.json");
    let st = Command::new(&citysec)
        .args([
            "sim",
            "population",
            "--devices",
            "1000",
            "--seed",
            "1",
            "--out",
        ])
        .arg(&pop)
        .arg("--mosquitto")
        .arg(dir.join("mosquitto"))
        .stderr(Stdio::null())
        .status()?;
    if !st.success() {
        bail!("population failed");
    }
    // The subscriber that stands for "what Mosquitto passes on".
    let passwd = dir.join("mosquitto/passwd");
    let acl = dir.join("mosquitto/acl");
    let st = Command::new("mosquitto_passwd")
        .args(["-b"])
        .arg(&passwd)
        .args(["observer", "observer-secret-0123456789"])
        .status()
        .context("mosquitto_passwd")?;
    if !st.success() {
        bail!("mosquitto_passwd failed");
    }
    let mut acl_text = std::fs::read_to_string(&acl)?;
    acl_text.insert_str(0, "user observer\ntopic read city/#\n\n");
    std::fs::write(&acl, acl_text)?;

    let rate = 1_000_000;
    eprintln!("bench: mosquitto, {devices} devices, offered {rate}/s, {secs}s");
    let mosq = bench_mosquitto(&citysec, &dir, &pop, devices, rate, secs)?;
    eprintln!("bench: citysec, {devices} devices, offered {rate}/s, {secs}s");
    let ours = bench_citysec(&citysec, &dir, &pop, devices, rate, secs, "all")?;
    eprintln!("bench: citysec with [store] telemetry = \"none\"");
    let ours_lean = bench_citysec(&citysec, &dir, &pop, devices, rate, secs, "none")?;
    // One process holds one socket per device; the platform (and the simulator, in its own
    // process) can hold at most the open-files limit. Past it, memory is extrapolated.
    let limit = open_files_limit();
    let largest = if limit >= 52_000 {
        50_000
    } else {
        (limit.saturating_sub(2_000) / 1_000 * 1_000) as usize
    };
    let sizes: Vec<usize> = if quick {
        vec![2_000]
    } else {
        vec![2_000, largest / 2, largest]
    };
    let mut memory = Vec::new();
    for &n in &sizes {
        eprintln!("bench: memory with {n} devices");
        memory.push((n, memory_at(&citysec, &dir, n, 15)?));
    }

    let host = Command::new("hostname")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let date = Command::new("date")
        .arg("+%Y-%m-%d")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let mosq_version = Command::new("mosquitto")
        .arg("-h")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_owned()
        })
        .unwrap_or_default();
    let mut md = String::new();
    let _ = writeln!(md, "# MQTT end to end: citysec vs Mosquitto\n");
    let _ = writeln!(
        md,
        "Run on {date}, host `{host}`, {} cores ({cpu}); {mosq_version}.",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    let _ = writeln!(
        md,
        "Command: `cargo xtask bench mqtt{}`.\n",
        if quick { " --quick" } else { "" }
    );
    let _ = writeln!(
        md,
        "Load: `citysec sim run` with {devices} devices (the same population, passwords and topic policy for both brokers), MQTT 3.1.1, QoS 0, offered {rate} msg/s in total, {secs} s, measured over the middle of the run; simulator, broker and consumer share the machine's cores.\n"
    );
    let _ = writeln!(
        md,
        "| broker | passed msg/s | simulator sent msg/s | broker process CPU per msg | broker process CPU (cores) |"
    );
    let _ = writeln!(md, "| --- | ---: | ---: | ---: | ---: |");
    let _ = writeln!(
        md,
        "| Mosquitto (delivered to one `city/#` subscriber) | {:.0} | {:.0} | {:.1} µs | {:.2} |",
        mosq.msgs_per_s, mosq.sent_per_s, mosq.broker_cpu_us_per_msg, mosq.broker_cpu_share
    );
    let _ = writeln!(
        md,
        "| citysec, default config (authorised, decoded, on the bus, detection, every event stored in SQLite) | {:.0} | {:.0} | {:.1} µs | {:.2} |",
        ours.msgs_per_s, ours.sent_per_s, ours.broker_cpu_us_per_msg, ours.broker_cpu_share
    );
    let _ = writeln!(
        md,
        "| citysec, `[store] telemetry = \"none\"` (the same, raw readings not stored) | {:.0} | {:.0} | {:.1} µs | {:.2} |",
        ours_lean.msgs_per_s,
        ours_lean.sent_per_s,
        ours_lean.broker_cpu_us_per_msg,
        ours_lean.broker_cpu_share
    );
    let _ = writeln!(
        md,
        "\nRatio citysec / Mosquitto: **{:.2}x** with the default config, **{:.2}x** without storing raw telemetry.\n",
        ours.msgs_per_s / mosq.msgs_per_s.max(1.0),
        ours_lean.msgs_per_s / mosq.msgs_per_s.max(1.0)
    );
    let _ = writeln!(md, "## Resident memory of the platform\n");
    let _ = writeln!(
        md,
        "`citysec serve` with the default config and N simulated devices connected at their natural cadence (the simulator runs in its own process), sampled 15 s after all connected.\n"
    );
    let _ = writeln!(md, "| devices | connected | RSS | peak RSS |");
    let _ = writeln!(md, "| ---: | ---: | ---: | ---: |");
    for (n, (rss, hwm, online)) in &memory {
        let _ = writeln!(md, "| {n} | {online} | {rss:.0} MiB | {hwm:.0} MiB |");
    }
    if let (Some(first), Some(last)) = (memory.first(), memory.last())
        && last.0 < 50_000
        && last.0 > first.0
    {
        let per_device_kib = (last.1.0 - first.1.0) * 1024.0 / (last.0 - first.0) as f64;
        let at_50k = last.1.0 + per_device_kib * (50_000 - last.0) as f64 / 1024.0;
        let _ = writeln!(
            md,
            "\nThis machine allows {limit} open files per process, so one process cannot hold 50,000 device connections here. \
             Between {} and {} devices the platform grew by {per_device_kib:.1} KiB per connected device; \
             extrapolated linearly, **50,000 devices would take about {at_50k:.0} MiB** (an extrapolation, not a measurement).",
            first.0, last.0
        );
    }
    let out_dir = root.join("bench/results").join(format!("{date}-{host}"));
    std::fs::create_dir_all(&out_dir)?;
    let path = out_dir.join(if quick { "mqtt-quick.md" } else { "mqtt.md" });
    std::fs::write(&path, &md)?;
    println!("{md}");
    eprintln!("wrote {}", path.display());
    Ok(())
}

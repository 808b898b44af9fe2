//! The scale-out deployment on one machine, as separate `citysec serve` processes: NATS
//! JetStream, PostgreSQL and Mosquitto from Debian's packages, two ingest processes bridging
//! Mosquitto with a shared subscription, two detection workers owning the bus's partitions
//! and one API process, driven by the simulator at QoS 1. One detection worker is killed
//! with SIGKILL mid-run; afterwards every event Mosquitto acknowledged is stored exactly
//! once, every alert once, the audit chain is intact with no record twice, and detection
//! went on for the dead worker's devices.
//!
//! `RUN_SLOW_BENCHES=1 cargo test -p cli --release --test it cluster_throughput -- --nocapture`
//! measures messages per second end to end with one and with two detection workers
//! (`bench/results/`).

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bus::testsuite::server::TestNats;
use sim::population::Population;
use store::testsuite::server::TestPostgres;

use super::{citysec, free_port, have, http_get, run_ok};

/// The bridge's MQTT account at Mosquitto (its ACL: read `city/#` and `$SYS/#`, write
/// commands).
const BRIDGE: (&str, &str) = ("observer", "bridge-secret-for-tests-1");

/// A child process killed (SIGKILL) when dropped.
struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Everything a run needs, killed when dropped.
struct Cluster {
    dir: tempfile::TempDir,
    mosquitto: Proc,
    mqtt: SocketAddr,
    procs: Vec<(Proc, u16)>,
    base_config: String,
    token: String,
    api: String,
    db: String,
    db_url: String,
    db_password: String,
    population: Arc<Population>,
    /// The NATS and PostgreSQL ports (to find their processes for CPU time).
    peer_ports: (u16, u16),
    _own_servers: (Option<TestPostgres>, Option<TestNats>),
}

impl Cluster {
    fn logs(&self) -> String {
        let mut out = format!("--- mosquitto\n{}\n", self.mosquitto.log_tail());
        for (p, _) in &self.procs {
            out.push_str(&format!("--- {}\n{}\n", p.name, p.log_tail()));
        }
        out
    }

    /// Starts `citysec serve` with `roles` (and `extra` TOML) as process `name`; returns
    /// once its `/readyz` answers 200.
    fn start(&mut self, name: &str, roles: &str, extra: &str) {
        let http = free_port();
        let data = self.dir.path().join(name);
        std::fs::create_dir_all(&data).unwrap();
        // Split processes share the signing keys: the API process generated them.
        let api_data = self.dir.path().join("api");
        if name != "api" {
            for key in ["gateway.key", "cap-signing.key"] {
                if api_data.join(key).exists() {
                    std::fs::copy(api_data.join(key), data.join(key)).unwrap();
                }
            }
        }
        let config = format!(
            "version = 1\ndata_dir = \"{}\"\nroles = {roles}\n{}\n[http]\nlisten = \"127.0.0.1:{http}\"\n{extra}\n",
            data.display(),
            self.base_config,
        );
        let path = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, config).unwrap();
        let log = self.dir.path().join(format!("{name}.log"));
        let child = citysec()
            .args(["serve", "--config"])
            .arg(&path)
            .env("CITYSEC_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let proc = Proc {
            name: name.to_owned(),
            child,
            log,
        };
        let url = format!("http://127.0.0.1:{http}/readyz");
        let deadline = Instant::now() + Duration::from_secs(60);
        while http_get(&url, None).0 != 200 {
            assert!(
                Instant::now() < deadline,
                "{name} did not become ready:\n{}",
                proc.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        self.procs.push((proc, http));
    }

    fn proc_mut(&mut self, name: &str) -> &mut Proc {
        &mut self
            .procs
            .iter_mut()
            .find(|(p, _)| p.name == name)
            .unwrap()
            .0
    }

    /// One process's `/metrics`, as name -> value (labels kept in the name).
    fn metrics(&self, name: &str) -> BTreeMap<String, f64> {
        let port = self.procs.iter().find(|(p, _)| p.name == name).unwrap().1;
        let text = http_text(
            &format!("http://127.0.0.1:{port}/metrics"),
            Some(&self.token),
        );
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                Some((k.to_owned(), v.parse().ok()?))
            })
            .collect()
    }

    async fn db(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(
            &format!(
                "{} password={}",
                pg_conninfo(&self.db_url),
                self.db_password
            ),
            tokio_postgres::NoTls,
        )
        .await
        .unwrap();
        tokio::spawn(connection);
        client
    }
}

/// `postgres://user@host:port/db` as a key=value conninfo.
fn pg_conninfo(url: &str) -> String {
    let rest = url.strip_prefix("postgres://").unwrap();
    let (user, rest) = rest.split_once('@').unwrap();
    let (hostport, db) = rest.split_once('/').unwrap();
    let (host, port) = hostport.split_once(':').unwrap();
    format!("host={host} port={port} user={user} dbname={db}")
}

fn http_text(url: &str, token: Option<&str>) -> String {
    use std::io::Read;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut req = agent.get(url);
    if let Some(token) = token {
        req = req.header("Authorization", &format!("Bearer {token}"));
    }
    let mut text = String::new();
    if let Ok(resp) = req.call() {
        let _ = resp.into_body().into_reader().read_to_string(&mut text);
    }
    text
}

fn start_mosquitto(dir: &Path, population: &Population) -> (Proc, SocketAddr) {
    let port = free_port();
    let files = population.write_mosquitto(dir, Some(BRIDGE)).unwrap();
    let conf = dir.join("mosquitto.conf");
    let log = dir.join("mosquitto.log");
    // The measurement offers more than this machine sustains, so the broker holds a
    // backlog for the bridge's sessions; at 100,000 it dropped messages it had
    // acknowledged to the devices (a city sizes this for its outages, docs/bridge.md).
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\nacl_file {}\n\
             persistence false\nmax_queued_messages 2000000\nmax_inflight_messages 100\n\
             max_packet_size 262144\n\
             log_dest stderr\nlog_dest topic\nlog_type error\nlog_type warning\n\
             log_type notice\nlog_type information\nconnection_messages true\n",
            files.passwd.display(),
            files.acl.display(),
        ),
    )
    .unwrap();
    let child = Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start mosquitto");
    let proc = Proc {
        name: "mosquitto".into(),
        child,
        log,
    };
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "mosquitto did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    (proc, addr)
}

/// NATS, PostgreSQL, Mosquitto, the API process with the population registered; `None`
/// when a peer is missing (and peers are not required).
/// A cluster on the shared test servers, or (`own_servers`, for measurements) on a NATS
/// and a PostgreSQL of its own, PostgreSQL with fsync on, so their CPU time is the
/// cluster's alone.
fn cluster(devices: usize, partitions: u32, own_servers: bool) -> Option<Cluster> {
    for program in ["mosquitto", "mosquitto_passwd", "nats-server"] {
        if !have(program) {
            return None;
        }
    }
    let own_pg = if own_servers {
        Some(TestPostgres::start(true)?)
    } else {
        None
    };
    let own_nats = if own_servers {
        Some(TestNats::start()?)
    } else {
        None
    };
    let pg: &TestPostgres = match &own_pg {
        Some(pg) => pg,
        None => TestPostgres::shared()?,
    };
    let nats: &TestNats = match &own_nats {
        Some(nats) => nats,
        None => TestNats::shared()?,
    };
    let peer_ports = (
        nats.url()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0),
        pg.port(),
    );
    let mut dir = tempfile::tempdir().unwrap();
    if std::env::var_os("CITYSEC_KEEP_TEST_DIR").is_some() {
        // Configs and every process's log stay for a look afterwards.
        dir.disable_cleanup(true);
        eprintln!("cluster directory: {}", dir.path().display());
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let db = runtime.block_on(pg.create_database());
    let password_file = dir.path().join("pg.password");
    std::fs::write(&password_file, pg.password()).unwrap();
    let nats = nats.config(partitions);
    let bridge_password = dir.path().join("bridge.password");
    std::fs::write(&bridge_password, BRIDGE.1).unwrap();
    let population = Arc::new(Population::generate(devices, 11));
    let (mosquitto, mqtt) = start_mosquitto(dir.path(), &population);
    let base_config = format!(
        "[bus]\ntype = \"nats\"\nurl = \"{}\"\nstream = \"{}\"\nsubject_prefix = \"{}\"\npartitions = {}\n\
         [store]\ntype = \"postgres\"\nurl = \"{}\"\npassword_file = \"{}\"\npool_size = 4\n\
         [ingest.flow]\nenabled = false\n\
         [ingest.mqtt]\nlisten = \"127.0.0.1:0\"\n\
         [advisories]\nsender = \"alerts@city.example\"\npublic_url = \"https://city.example\"\n\
         [detect]\nlearned_save_s = 5\n",
        nats.url,
        nats.stream,
        nats.subject_prefix,
        nats.partitions,
        pg.url(&db),
        password_file.display(),
    );
    let mut cluster = Cluster {
        dir,
        mosquitto,
        mqtt,
        procs: Vec::new(),
        base_config,
        token: String::new(),
        api: String::new(),
        db_url: pg.url(&db),
        db: db.clone(),
        db_password: pg.password().to_owned(),
        population,
        peer_ports,
        _own_servers: (own_pg, own_nats),
    };
    let bridge = bridge_section(&cluster, "api");
    cluster.start("api", "[\"api\"]", &bridge);
    let api_port = cluster.procs[0].1;
    cluster.api = format!("http://127.0.0.1:{api_port}");
    let token_file = cluster.dir.path().join("api/admin.token");
    cluster.token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_owned();
    let inventory = cluster.dir.path().join("city.json");
    cluster.population.write_json(&inventory).unwrap();
    run_ok(
        citysec()
            .args(["device", "import", "--url", &cluster.api, "--token-file"])
            .arg(&token_file)
            .arg(&inventory),
    );
    let _ = bridge_password;
    Some(cluster)
}

/// The `[ingest.bridge]` section of process `name` (every process carries it, so response
/// actions know the broker is not ours): Mosquitto through a shared subscription, and its
/// log topic for the broker's security signals read by one ingest process.
fn bridge_section(cluster: &Cluster, name: &str) -> String {
    // Every ingest process may read the broker's log; the `bridge-log` lease picks one.
    let signals = if name.starts_with("ingest") {
        "mosquitto_log"
    } else {
        "none"
    };
    format!(
        "[ingest.bridge]\nbrokers = [\"mqtt://{}\"]\nclient_id = \"citysec-{name}\"\nusername = \"{}\"\n\
         password_file = \"{}\"\nsecurity_signals = \"{signals}\"\n",
        cluster.mqtt,
        BRIDGE.0,
        cluster.dir.path().join("bridge.password").display(),
    )
}

fn sim_config(cluster: &Cluster, rate: f64, duration: Duration, attacks: bool) -> sim::SimConfig {
    let mut config = sim::SimConfig::new(cluster.mqtt, cluster.population.clone());
    config.rate = Some(rate);
    config.duration = Some(duration);
    config.qos = 1;
    config.mqtt5_share = 0.5;
    config.attacks.enabled = attacks;
    config.attacks.first_after = Duration::from_secs(4);
    config.attacks.spacing = Duration::from_secs(4);
    config.attacks.repeat_every = Duration::from_secs(15);
    config
}

/// Device-published events stored for the population: (rows, distinct device and time).
/// How many device readings the store holds (cheap enough to poll while measuring).
async fn stored_device_readings(db: &tokio_postgres::Client) -> i64 {
    db.query_one(
        "SELECT count(*) FROM events \
         WHERE kind IN ('telemetry', 'state') AND device_id IS NOT NULL",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

async fn stored_device_events(db: &tokio_postgres::Client) -> (i64, i64) {
    let row = db
        .query_one(
            "SELECT count(*), count(DISTINCT (device_id, ts, kind)) FROM events \
             WHERE kind IN ('telemetry', 'state') AND device_id IS NOT NULL",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[test]
fn a_detection_worker_killed_mid_run_loses_and_duplicates_nothing() {
    let Some(mut cluster) = cluster(300, 8, false) else {
        return;
    };
    for name in ["ingest-1", "ingest-2"] {
        let bridge = bridge_section(&cluster, name);
        cluster.start(name, "[\"ingest\"]", &bridge);
    }
    for name in ["detect-1", "detect-2"] {
        let bridge = bridge_section(&cluster, name);
        cluster.start(name, "[\"detect\"]", &bridge);
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let stats = Arc::new(sim::SimStats::default());
    let run_for = Duration::from_secs(40);
    let config = sim_config(&cluster, 1500.0, run_for, true);
    let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    let sim = runtime.spawn(sim::run(config, stats.clone(), stop_rx));
    // Mid-run, with attacks under way, one worker dies without a word.
    std::thread::sleep(Duration::from_secs(15));
    let killed_at = model::Timestamp::now();
    cluster.proc_mut("detect-1").kill();
    runtime.block_on(sim).unwrap().unwrap();
    let sim_stats = stats.snapshot();
    eprintln!("sim: {sim_stats:?} in {:?}", started.elapsed());
    assert_eq!(sim_stats.connect_failures, 0, "{}", cluster.logs());
    assert!(sim_stats.messages_acked > 10_000, "{sim_stats:?}");

    runtime.block_on(async {
        let db = cluster.db().await;
        // Everything Mosquitto acknowledged reaches the store, once.
        let deadline = Instant::now() + Duration::from_secs(90);
        let (rows, distinct) = loop {
            let (rows, distinct) = stored_device_events(&db).await;
            if rows as u64 >= sim_stats.messages_acked || Instant::now() > deadline {
                // A last look after the stragglers could have landed twice.
                tokio::time::sleep(Duration::from_secs(2)).await;
                break stored_device_events(&db).await;
            }
            let _ = distinct;
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        assert_eq!(rows, distinct, "an event was stored twice");
        assert_eq!(
            rows as u64,
            sim_stats.messages_acked,
            "every acknowledged event is stored exactly once\n{}",
            cluster.logs()
        );

        // Alerts: the attacks were detected before and after the kill, each once.
        let alerts = db
            .query("SELECT id, rule, ts, body FROM alerts ORDER BY ts", &[])
            .await
            .unwrap();
        let mut by_detection: HashMap<(String, String), Vec<(i64, i64)>> = HashMap::new();
        for row in &alerts {
            let alert: model::Alert = serde_json::from_str(row.get::<_, &str>(3)).unwrap();
            by_detection
                .entry((alert.rule, alert.key))
                .or_default()
                .push((alert.ts.as_millis(), alert.last_ts.as_millis()));
        }
        for ((rule, key), mut spans) in by_detection.clone() {
            spans.sort();
            for pair in spans.windows(2) {
                assert!(
                    pair[1].0 > pair[0].1,
                    "{rule} on {key} raised twice for one detection: {spans:?}"
                );
            }
        }
        let brute_force: Vec<_> = alerts
            .iter()
            .filter(|r| r.get::<_, &str>(1).starts_with("auth.brute_force"))
            .map(|r| r.get::<_, i64>(2))
            .collect();
        assert!(
            brute_force.iter().any(|&ts| ts < killed_at.as_millis()),
            "no brute force detected before the kill: {alerts:?}\n{}",
            cluster.logs()
        );
        assert!(
            brute_force.iter().any(|&ts| ts > killed_at.as_millis()),
            "detection did not continue after the kill\n{}",
            cluster.logs()
        );

        // How long the dead worker's partitions took to move (printed, not asserted: it is
        // about one lease, `bench/results/2026-12-02-vm/partitions.md`).
        let survivor =
            std::fs::read_to_string(cluster.dir.path().join("detect-2.log")).unwrap_or_default();
        // What the dead worker learned (saved every 5 s here) reached the survivor.
        let loaded: Vec<String> = survivor
            .lines()
            .map(strip_ansi)
            .filter(|l| l.contains("learned state loaded"))
            .filter(|l| {
                l.split_whitespace()
                    .next()
                    .and_then(model::Timestamp::parse_rfc3339)
                    .is_some_and(|at| at.as_millis() > killed_at.as_millis())
            })
            .collect();
        assert!(
            loaded.iter().any(|l| !l.contains(" devices=0 ")),
            "the survivor loaded no learned state after the kill: {loaded:?}\n{}",
            cluster.logs()
        );
        eprintln!(
            "learned state loaded after the kill: {} shards",
            loaded.len()
        );
        for line in survivor.lines() {
            let plain: String = strip_ansi(line);
            if !plain.contains("detection shards taken over") {
                continue;
            }
            if let Some(at) = plain
                .split_whitespace()
                .next()
                .and_then(model::Timestamp::parse_rfc3339)
                && at.as_millis() > killed_at.as_millis()
            {
                eprintln!(
                    "partitions moved to detect-2 {:.2} s after the SIGKILL: {}",
                    (at.as_millis() - killed_at.as_millis()) as f64 / 1000.0,
                    plain.split("INFO").nth(1).unwrap_or_default().trim()
                );
            }
        }

        // The audit chain is intact and holds no record twice.
        let pg = TestPostgres::shared().unwrap();
        let store = store::PgStore::connect(&pg.config(&cluster.db))
            .await
            .unwrap();
        use store::AuditStore;
        let audit = store.verify_audit().await.unwrap();
        assert!(audit.is_intact(), "{audit:?}");
        let dup = db
            .query(
                "SELECT action, (body::jsonb - 'ts' - 'seq')::text, count(*) FROM audit \
                 WHERE action <> 'config.loaded' \
                 GROUP BY 1, 2 HAVING count(*) > 1",
                &[],
            )
            .await
            .unwrap();
        let dup: Vec<(String, String)> = dup.iter().map(|r| (r.get(0), r.get(1))).collect();
        assert!(dup.is_empty(), "audit records twice: {dup:?}");
        // And no command was authorised twice (an automatic all-clear answered again by
        // the survivor's gateway after the dead worker's alerts came back to it).
        let twice = db
            .query(
                "SELECT body::jsonb->>'subject', count(*) FROM audit \
                 WHERE action = 'command.authorised' GROUP BY 1 HAVING count(*) > 1",
                &[],
            )
            .await
            .unwrap();
        let twice: Vec<(Option<String>, i64)> =
            twice.iter().map(|r| (r.get(0), r.get(1))).collect();
        assert!(twice.is_empty(), "commands authorised twice: {twice:?}");
    });
}

/// A log line without its colour codes.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `/proc/<pid>/stat`'s fields after the command name.
fn stat_fields(pid: u32) -> Vec<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return Vec::new();
    };
    rest.split_whitespace()
        .map(|f| f.parse::<f64>().unwrap_or(0.0))
        .collect()
}

/// CPU seconds of the server listening on `port` whose command line names `program`, with
/// its children (PostgreSQL's backends): the ones alive, and the ones it reaped.
fn server_cpu_seconds(program: &str, port: u16) -> f64 {
    let pids: Vec<u32> = std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let port = port.to_string();
    let root = pids.iter().copied().find(|pid| {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        args.first()
            .is_some_and(|a| String::from_utf8_lossy(a).ends_with(program))
            && args
                .windows(2)
                .any(|w| w[0] == b"-p" && w[1] == port.as_bytes())
    });
    let Some(root) = root else {
        return 0.0;
    };
    let ticks = |f: &[f64], from: usize, to: usize| -> f64 {
        (from..=to).map(|i| f.get(i).copied().unwrap_or(0.0)).sum()
    };
    // utime, stime, cutime, cstime: fields 11 to 14 after the name; the ppid is field 1.
    let mut total = ticks(&stat_fields(root), 11, 14);
    for pid in pids {
        let f = stat_fields(pid);
        if f.get(1).copied() == Some(f64::from(root)) {
            total += ticks(&f, 11, 14);
        }
    }
    total / 100.0
}

/// CPU seconds (user + system) a process has used so far, from `/proc/<pid>/stat`.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may hold spaces: fields count from after its closing parenthesis.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// One measured run: `workers` detection workers, the simulator offering `rate` msg/s at
/// QoS 1 for `seconds`.
/// CPU seconds of the NATS and PostgreSQL servers so far.
fn peer_cpu(cluster: &Cluster) -> Vec<(String, f64)> {
    vec![
        (
            "nats-server".to_owned(),
            server_cpu_seconds("nats-server", cluster.peer_ports.0),
        ),
        (
            "postgres".to_owned(),
            server_cpu_seconds("postgres", cluster.peer_ports.1),
        ),
        // The simulator runs in the test process.
        ("simulator".to_owned(), cpu_seconds(std::process::id())),
    ]
}

fn measure(workers: usize, rate: f64, seconds: u64, devices: usize) -> Option<String> {
    let mut cluster = cluster(devices, 16, true)?;
    for name in ["ingest-1", "ingest-2"] {
        let bridge = bridge_section(&cluster, name);
        cluster.start(name, "[\"ingest\"]", &bridge);
    }
    let detectors: Vec<String> = (1..=workers).map(|i| format!("detect-{i}")).collect();
    for name in &detectors {
        let bridge = bridge_section(&cluster, name);
        cluster.start(name, "[\"detect\"]", &bridge);
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let cpu_before: Vec<(String, f64)> = cluster
        .procs
        .iter()
        .map(|(p, _)| (p.name.clone(), cpu_seconds(p.child.id())))
        .chain([(
            "mosquitto".to_owned(),
            cpu_seconds(cluster.mosquitto.child.id()),
        )])
        .chain(peer_cpu(&cluster))
        .collect();
    let stats = Arc::new(sim::SimStats::default());
    let config = sim_config(&cluster, rate, Duration::from_secs(seconds), false);
    let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    runtime
        .block_on(sim::run(config, stats.clone(), stop_rx))
        .unwrap();
    let sent = stats.snapshot();
    let sim_done = started.elapsed();
    // Wait until detection and the store have everything.
    let detected = |c: &Cluster| -> f64 {
        detectors
            .iter()
            .map(|d| {
                c.metrics(d)
                    .get("detect_events_total")
                    .copied()
                    .unwrap_or(0.0)
            })
            .sum()
    };
    let mut done = sim_done;
    let deadline = Instant::now() + Duration::from_secs(300);
    let db = runtime.block_on(cluster.db());
    let rows = loop {
        // A count, not the distinct count of the check: polling that every 250 ms took
        // more of PostgreSQL than the writers did.
        let rows = runtime.block_on(stored_device_readings(&db));
        if (rows as u64 >= sent.messages_acked && detected(&cluster) as u64 >= sent.messages_acked)
            || Instant::now() > deadline
        {
            break rows;
        }
        done = started.elapsed();
        std::thread::sleep(Duration::from_millis(500));
    };
    let (_, distinct) = runtime.block_on(stored_device_events(&db));
    let elapsed = done.as_secs_f64().max(sim_done.as_secs_f64());
    let mut out = format!(
        "| {workers} | {rate:.0} | {} | {rows} ({distinct} distinct) | {:.0} | {:.1} |",
        sent.messages_acked,
        sent.messages_acked as f64 / elapsed,
        elapsed,
    );
    let cpu: Vec<String> = cpu_before
        .iter()
        .map(|(name, before)| {
            if let Some((_, after)) = peer_cpu(&cluster).into_iter().find(|(n, _)| n == name) {
                return format!("{name} {:.1}", after - before);
            }
            let pid = if name == "mosquitto" {
                cluster.mosquitto.child.id()
            } else {
                cluster
                    .procs
                    .iter()
                    .find(|(p, _)| &p.name == name)
                    .unwrap()
                    .0
                    .child
                    .id()
            };
            format!("{name} {:.1}", cpu_seconds(pid) - before)
        })
        .collect();
    out.push_str(&format!(" {} |", cpu.join(", ")));
    let broker_log =
        std::fs::read_to_string(cluster.dir.path().join("mosquitto.log")).unwrap_or_default();
    out.push_str(
        if broker_log.contains("Outgoing messages are being dropped") {
            " yes |"
        } else {
            " no |"
        },
    );
    Some(out)
}

/// End-to-end messages per second with one and with two detection workers, and the CPU
/// seconds each process spent (what the capacity plan scales from). Run with
/// `RUN_SLOW_BENCHES=1 cargo test -p cli --release --test it cluster_throughput -- --nocapture`.
#[test]
fn cluster_throughput() {
    if std::env::var("RUN_SLOW_BENCHES").as_deref() != Ok("1") {
        eprintln!("skipping: set RUN_SLOW_BENCHES=1 to measure");
        return;
    }
    let rate: f64 = std::env::var("CLUSTER_RATE")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(20_000.0);
    let seconds: u64 = std::env::var("CLUSTER_SECONDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(20);
    let mut table = String::from(
        "| detection workers | offered msg/s | acknowledged | stored | end-to-end msg/s | seconds | CPU seconds per process | broker dropped |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for workers in [1, 2] {
        let Some(row) = measure(workers, rate, seconds, 2000) else {
            return;
        };
        eprintln!("{row}");
        table.push_str(&row);
        table.push('\n');
    }
    println!("{table}");
}

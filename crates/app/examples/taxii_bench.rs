//! GET-objects throughput and latency of our TAXII server against medallion (the OASIS
//! reference server) and OpenTAXII (EclecticIQ's server) on the same data, and ours again on
//! a 1,000,000-object collection.
//!
//! ```text
//! cargo run --release -p app --example taxii_bench -- \
//!     --python target/oracles-venv/bin/python --opentaxii target/opentaxii-venv/bin/python \
//!     --out bench/results/<date>-<host>/taxii.md
//! ```
//!
//! `--opentaxii` names a python with `opentaxii` installed (`python3 -m venv
//! target/opentaxii-venv && target/opentaxii-venv/bin/pip install opentaxii`); the server is
//! set up and started by `bench/opentaxii/serve.py`.
//!
//! Both servers hold the same indicators in one collection and are asked the same thing:
//! the first page of objects (`limit=100`, HTTP Basic, keep-alive connections), by the same
//! load generator (this process, `--concurrency` threads) for `--duration-s` seconds (for
//! medallion, until at least 3 requests completed). Ours is then loaded with `--large`
//! objects and measured on the first page, on pages deep in the collection (reached
//! through `next` cursors at random positions) and on an `added_after` query.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use store::Store;
use store::intel::IntelObject;

const COLL: &str = "91a7b528-80eb-42ed-a74d-c6fbd5a26116";
const VERSION: &str = "2026-01-01T00:00:00.000Z";
const BASE_US: i64 = 1_780_000_000_000_000;
const AUTH: &str = "Basic YmVuY2g6YmVuY2gtcGFzcw=="; // bench:bench-pass

struct Args {
    python: Option<String>,
    opentaxii: Option<String>,
    objects: usize,
    large: usize,
    duration: Duration,
    concurrency: usize,
    out: Option<String>,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        python: std::env::var("CITYSEC_TEST_PYTHON").ok(),
        opentaxii: None,
        objects: 4_000,
        large: 1_000_000,
        duration: Duration::from_secs(10),
        concurrency: 2,
        out: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().with_context(|| format!("{k} needs a value"));
        match k.as_str() {
            "--python" => a.python = Some(v()?),
            "--opentaxii" => a.opentaxii = Some(v()?),
            "--objects" => a.objects = v()?.parse()?,
            "--large" => a.large = v()?.parse()?,
            "--duration-s" => a.duration = Duration::from_secs(v()?.parse()?),
            "--concurrency" => a.concurrency = v()?.parse()?,
            "--out" => a.out = Some(v()?),
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(a)
}

fn id(n: usize) -> String {
    format!("indicator--{:08x}-0000-4000-8000-{n:012}", n / 1000)
}

fn indicator(n: usize) -> Value {
    json!({
        "type": "indicator",
        "spec_version": "2.1",
        "id": id(n),
        "created": VERSION,
        "modified": VERSION,
        "name": format!("scanner {n}"),
        "pattern": format!("[ipv4-addr:value = '198.51.{}.{}']", (n / 250) % 250, n % 250),
        "pattern_type": "stix",
        "valid_from": VERSION,
        "object_marking_refs": [stix::object::tlp::TLP2_GREEN],
    })
}

fn partner_config() -> app::intel::config::TaxiiConfig {
    use app::intel::config::{CollectionConfig, PartnerConfig, TaxiiConfig};
    TaxiiConfig {
        partners: vec![PartnerConfig {
            name: "bench".into(),
            password_hash: Some(app::intel::hash_password("bench-pass")),
            token_sha256: None,
            cert_sha256: None,
            tlp: "amber".into(),
        }],
        collections: vec![CollectionConfig {
            id: COLL.into(),
            title: "bench".into(),
            description: None,
            alias: None,
            public: false,
            read: vec!["*".into()],
            write: vec![],
            sharing: false,
        }],
        ..TaxiiConfig::default()
    }
}

/// Loads `n` indicators in batches of 5,000: batch `k` gets `date_added = BASE_US + k`.
async fn load(store: &dyn Store, from: usize, n: usize) -> anyhow::Result<()> {
    let key = format!("city/{COLL}");
    let mut i = from;
    while i < from + n {
        let end = (i + 5_000).min(from + n);
        let batch: Vec<IntelObject> = (i..end)
            .map(|k| IntelObject {
                id: id(k),
                object_type: "indicator".into(),
                version: VERSION.into(),
                version_us: 1_767_225_600_000_000,
                spec_version: "2.1".into(),
                tlp: 1,
                body: indicator(k).to_string(),
            })
            .collect();
        store
            .intel_add(&key, &batch, BASE_US + (i / 5_000) as i64)
            .await?;
        i = end;
    }
    Ok(())
}

struct Measured {
    requests: usize,
    elapsed: Duration,
    p50_ms: f64,
    p99_ms: f64,
    objects_per_page: usize,
}

impl Measured {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
}

/// `concurrency` threads GET the URLs `urls(thread, i)` until `duration` has passed and
/// at least `min_requests` completed.
fn hammer(
    urls: Arc<dyn Fn(usize, usize) -> String + Send + Sync>,
    concurrency: usize,
    duration: Duration,
    min_requests: usize,
    cap: Duration,
) -> anyhow::Result<Measured> {
    let start = Instant::now();
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut threads = Vec::new();
    for t in 0..concurrency {
        let urls = urls.clone();
        let done = done.clone();
        threads.push(std::thread::spawn(
            move || -> anyhow::Result<(Vec<f64>, usize)> {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(600)))
                    .build()
                    .into();
                let mut lat = Vec::new();
                let mut objects = 0;
                let mut i = 0;
                loop {
                    let elapsed = start.elapsed();
                    let n = done.load(std::sync::atomic::Ordering::Relaxed);
                    if (elapsed >= duration && n >= min_requests) || elapsed >= cap {
                        break;
                    }
                    let t0 = Instant::now();
                    let mut r = agent
                        .get(&urls(t, i))
                        .header("Accept", taxii::MEDIA_TYPE_TAXII)
                        .header("Authorization", AUTH)
                        .call()?;
                    let body = r
                        .body_mut()
                        .with_config()
                        .limit(64 << 20)
                        .read_to_string()?;
                    lat.push(t0.elapsed().as_secs_f64() * 1000.0);
                    if r.status() != 200 {
                        bail!("{}: {}", r.status(), &body[..body.len().min(300)]);
                    }
                    if i == 0 {
                        let v: Value = serde_json::from_str(&body)?;
                        objects = v["objects"].as_array().map_or(0, Vec::len);
                    }
                    done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    i += 1;
                }
                Ok((lat, objects))
            },
        ));
    }
    let mut all = Vec::new();
    let mut objects = 0;
    for t in threads {
        let (lat, o) = t.join().expect("load thread")?;
        all.extend(lat);
        objects = objects.max(o);
    }
    let elapsed = start.elapsed();
    all.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| -> f64 {
        if all.is_empty() {
            return f64::NAN;
        }
        all[((all.len() as f64 - 1.0) * p).round() as usize]
    };
    Ok(Measured {
        requests: all.len(),
        elapsed,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        objects_per_page: objects,
    })
}

struct Killer(Child);

impl Drop for Killer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_medallion(
    python: &str,
    dir: &std::path::Path,
    n: usize,
) -> anyhow::Result<(Killer, String)> {
    let objects: Vec<Value> = (0..n).map(indicator).collect();
    let manifest: Vec<Value> = (0..n)
        .map(|k| {
            json!({
                "id": id(k),
                "date_added": stix::time::format_micros(BASE_US + (k / 5_000) as i64),
                "version": VERSION,
                "media_type": taxii::MEDIA_TYPE_STIX,
            })
        })
        .collect();
    let data = json!({
        "/discovery": {"title": "medallion", "default": "/api1/", "api_roots": ["/api1/"]},
        "api1": {
            "information": {"title": "api1", "versions": [taxii::MEDIA_TYPE_TAXII], "max_content_length": 100_000_000},
            "status": [],
            "collections": [{
                "id": COLL, "title": "bench", "can_read": true, "can_write": true,
                "media_types": [taxii::MEDIA_TYPE_STIX], "objects": objects, "manifest": manifest
            }]
        }
    });
    std::fs::write(dir.join("data.json"), data.to_string())?;
    let conf = json!({
        "backend": {"module_class": "MemoryBackend", "module": "medallion.backends.memory_backend",
                    "filename": dir.join("data.json")},
        "users": {"bench": "bench-pass"},
        "taxii": {"max_page_size": 100}
    });
    std::fs::write(dir.join("medallion.json"), conf.to_string())?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let child = Command::new(python)
        .args([
            "-c",
            "import sys; from medallion.scripts.run import main; sys.exit(main())",
        ])
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--log-level",
            "ERROR",
        ])
        .arg(dir.join("medallion.json"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start medallion")?;
    let k = Killer(child);
    let base = format!("http://127.0.0.1:{port}/");
    let client = taxii::client::Client::new(taxii::client::Auth::Basic {
        user: "bench".into(),
        password: "bench-pass".into(),
    });
    for _ in 0..600 {
        if client.discover(&format!("{base}taxii2/")).is_ok() {
            return Ok((k, format!("{base}api1/")));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("medallion did not start")
}

/// OpenTAXII over SQLite with the same objects, through `bench/opentaxii/serve.py`;
/// returns its API root URL and collection id.
fn start_opentaxii(
    python: &str,
    dir: &std::path::Path,
    n: usize,
) -> anyhow::Result<(Killer, String, String)> {
    use std::io::BufRead as _;
    let mut lines = String::new();
    for k in 0..n {
        lines.push_str(&indicator(k).to_string());
        lines.push('\n');
    }
    std::fs::write(dir.join("objects.jsonl"), lines)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/opentaxii/serve.py");
    let mut child = Command::new(python)
        .arg(script)
        .arg(dir)
        .arg(port.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("start opentaxii")?;
    let stdout = child.stdout.take().context("opentaxii stdout")?;
    let k = Killer(child);
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line?;
        if let Some(rest) = line.strip_prefix("ready ") {
            let (root, coll) = rest.split_once(' ').context("opentaxii ready line")?;
            // The line comes just before the server binds its port.
            let client = taxii::client::Client::new(taxii::client::Auth::Basic {
                user: "bench".into(),
                password: "bench-pass".into(),
            });
            let discovery = format!("http://127.0.0.1:{port}/taxii2/");
            for _ in 0..600 {
                if client.discover(&discovery).is_ok() {
                    return Ok((k, root.to_owned(), coll.to_owned()));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            bail!("opentaxii did not answer discovery");
        }
    }
    bail!("opentaxii did not start")
}

fn row(out: &mut String, name: &str, m: &Measured) {
    let _ = writeln!(
        out,
        "| {name} | {} | {} | {} | {:.2} | {:.2} |",
        m.objects_per_page,
        m.requests,
        if m.rps() < 1.0 {
            format!("{:.4}", m.rps())
        } else {
            format!("{:.1}", m.rps())
        },
        m.p50_ms,
        m.p99_ms
    );
}

fn main() -> anyhow::Result<()> {
    let a = args()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn Store> =
        Arc::new(store::EmbeddedStore::open(&dir.path().join("citysec.db"))?);
    let t0 = Instant::now();
    rt.block_on(load(store.as_ref(), 0, a.objects))?;
    eprintln!(
        "loaded {} objects into our store in {:.1} s",
        a.objects,
        t0.elapsed().as_secs_f64()
    );
    let router = app::intel::router(&partner_config(), store.clone());
    let addr: SocketAddr = rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = l.local_addr()?;
        tokio::spawn(async move { axum::serve(l, router).await });
        anyhow::Ok(addr)
    })?;
    let ours = format!("http://{addr}/taxii2/city/");
    let first_page = |root: String| -> Arc<dyn Fn(usize, usize) -> String + Send + Sync> {
        Arc::new(move |_, _| format!("{root}collections/{COLL}/objects/?limit=100"))
    };
    // Warm up (the argon2 check of the Basic password runs once).
    hammer(
        first_page(ours.clone()),
        1,
        Duration::ZERO,
        3,
        Duration::from_secs(30),
    )?;
    let ours_small = hammer(
        first_page(ours.clone()),
        a.concurrency,
        a.duration,
        1,
        a.duration * 3,
    )?;
    eprintln!("ours @ {}: {:.1} req/s", a.objects, ours_small.rps());

    let medallion = match &a.python {
        Some(py) => {
            let mdir = tempfile::tempdir()?;
            let (_k, root) = start_medallion(py, mdir.path(), a.objects)?;
            let m = hammer(
                first_page(root),
                a.concurrency,
                a.duration,
                3,
                Duration::from_secs(900),
            )?;
            eprintln!("medallion @ {}: {:.3} req/s", a.objects, m.rps());
            Some(m)
        }
        None => {
            eprintln!("skipping medallion: no --python / CITYSEC_TEST_PYTHON");
            None
        }
    };

    let opentaxii = match &a.opentaxii {
        Some(py) => {
            let odir = tempfile::tempdir()?;
            let t0 = Instant::now();
            let (_k, root, coll) = start_opentaxii(py, odir.path(), a.objects)?;
            eprintln!(
                "opentaxii loaded {} objects in {:.0} s",
                a.objects,
                t0.elapsed().as_secs_f64()
            );
            let m = hammer(
                Arc::new(move |_, _| format!("{root}collections/{coll}/objects/?limit=100")),
                a.concurrency,
                a.duration,
                3,
                Duration::from_secs(900),
            )?;
            eprintln!("opentaxii @ {}: {:.3} req/s", a.objects, m.rps());
            Some(m)
        }
        None => None,
    };

    // The large collection.
    let t0 = Instant::now();
    rt.block_on(load(
        store.as_ref(),
        a.objects,
        a.large.saturating_sub(a.objects),
    ))?;
    let load_s = t0.elapsed().as_secs_f64();
    eprintln!("loaded up to {} objects in {:.1} s", a.large, load_s);
    let single = hammer(first_page(ours.clone()), 1, a.duration, 1, a.duration * 3)?;
    let large_first = hammer(
        first_page(ours.clone()),
        a.concurrency,
        a.duration,
        1,
        a.duration * 3,
    )?;
    let large = a.large;
    let deep_root = ours.clone();
    let deep: Arc<dyn Fn(usize, usize) -> String + Send + Sync> = Arc::new(move |t, i| {
        // A cursor at a pseudo-random record: batch k holds records [5000k, 5000k+5000).
        let k = ((t * 7_919 + i * 104_729) * 2_654_435_761) % large.max(1);
        let cursor = taxii::cursor::Cursor {
            date_added_us: BASE_US + (k / 5_000) as i64,
            id: id(k),
            version_us: 1_767_225_600_000_000,
        };
        format!(
            "{deep_root}collections/{COLL}/objects/?limit=100&next={}",
            cursor.encode()
        )
    });
    let large_deep = hammer(deep, a.concurrency, a.duration, 1, a.duration * 3)?;
    let after_root = ours.clone();
    let after: Arc<dyn Fn(usize, usize) -> String + Send + Sync> = Arc::new(move |t, i| {
        let k = ((t * 31 + i * 97) * 2_654_435_761) % (large / 5_000).max(1);
        let ts = stix::time::format_micros(BASE_US + k as i64);
        format!(
            "{after_root}collections/{COLL}/objects/?limit=100&added_after={}",
            taxii::client::encode(&ts)
        )
    });
    let large_after = hammer(after, a.concurrency, a.duration, 1, a.duration * 3)?;
    let manifest_root = ours.clone();
    let manifest = hammer(
        Arc::new(move |_, _| format!("{manifest_root}collections/{COLL}/manifest/?limit=100")),
        a.concurrency,
        a.duration,
        1,
        a.duration * 3,
    )?;

    let mut out = String::new();
    let _ = writeln!(
        out,
        "# TAXII 2.1 GET objects: citysec against medallion and OpenTAXII\n"
    );
    let _ = writeln!(
        out,
        "Command: `cargo run --release -p app --example taxii_bench -- --python target/oracles-venv/bin/python{} --objects {} --large {} --duration-s {} --concurrency {}`\n",
        if a.opentaxii.is_some() {
            " --opentaxii target/opentaxii-venv/bin/python"
        } else {
            ""
        },
        a.objects,
        a.large,
        a.duration.as_secs(),
        a.concurrency
    );
    let _ = writeln!(
        out,
        "Machine: the shared 2-core VM (Debian 12); other sessions were compiling and testing at the same time, so absolute figures are noisy; both servers ran in the same minutes on the same loopback."
    );
    let _ = writeln!(
        out,
        "Load: this process, {} keep-alive HTTP/1.1 connections (one thread each), HTTP Basic, `Accept: application/taxii+json;version=2.1`, `limit=100`; latency is per request, client side. Objects are STIX 2.1 indicators (~420 bytes each) marked TLP:GREEN; the partner is cleared for AMBER.",
        a.concurrency
    );
    let _ = writeln!(
        out,
        "medallion 3.0.0 (memory backend, Flask development server, `max_page_size` 100) is loaded from a data file with the same objects and manifest."
    );
    if a.opentaxii.is_some() {
        let _ = writeln!(
            out,
            "OpenTAXII 0.9.3 (SQLite persistence, Flask's threaded server, debug off, set up by `bench/opentaxii/serve.py`) holds the same objects, added through its persistence API; its account is an admin, checked by HTTP Basic on every request as it does."
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| server, collection, request | objects/page | requests | requests/s | p50 ms | p99 ms |"
    );
    let _ = writeln!(out, "| --- | --- | --- | --- | --- | --- |");
    row(
        &mut out,
        &format!("citysec, {} objects, first page", a.objects),
        &ours_small,
    );
    if let Some(m) = &medallion {
        row(
            &mut out,
            &format!("medallion, {} objects, first page", a.objects),
            m,
        );
    }
    if let Some(m) = &opentaxii {
        row(
            &mut out,
            &format!("OpenTAXII, {} objects, first page", a.objects),
            m,
        );
    }
    row(
        &mut out,
        &format!("citysec, {} objects, first page, 1 connection", a.large),
        &single,
    );
    row(
        &mut out,
        &format!("citysec, {} objects, first page", a.large),
        &large_first,
    );
    row(
        &mut out,
        &format!("citysec, {} objects, `next` at random depth", a.large),
        &large_deep,
    );
    row(
        &mut out,
        &format!(
            "citysec, {} objects, `added_after` at random depth",
            a.large
        ),
        &large_after,
    );
    row(
        &mut out,
        &format!("citysec, {} objects, manifest first page", a.large),
        &manifest,
    );
    let _ = writeln!(out);
    if let Some(m) = &medallion {
        let _ = writeln!(
            out,
            "Ratio at {} objects: citysec serves **{:.0}x** medallion's requests/s (bar: 20x); p50 {:.2} ms against {:.0} ms.",
            a.objects,
            ours_small.rps() / m.rps(),
            ours_small.p50_ms,
            m.p50_ms
        );
    }
    if let Some(m) = &opentaxii {
        let _ = writeln!(
            out,
            "Ratio at {} objects: citysec serves **{:.0}x** OpenTAXII's requests/s; p50 {:.2} ms against {:.0} ms.",
            a.objects,
            ours_small.rps() / m.rps(),
            ours_small.p50_ms,
            m.p50_ms
        );
    }
    let _ = writeln!(
        out,
        "First page of the {}-object collection: p50 {:.2} ms, p99 {:.2} ms on one connection (bar: under 20 ms). Loading the {} objects through `IntelStore::intel_add` (batches of 5,000) took {:.0} s.",
        a.large, single.p50_ms, single.p99_ms, a.large, load_s
    );
    print!("{out}");
    if let Some(path) = a.out {
        std::fs::write(&path, &out).with_context(|| format!("failed to write {path}"))?;
    }
    Ok(())
}

//! Comparison benchmark on one seeded corpus (200 patterns x 2,000 observations):
//! our pairs/s against stix2-matcher's, as ratios in one run, plus the time and memory
//! to compile 1,000,000 simple indicator patterns.
//!
//! `cargo bench -p stix --bench compare` (set `CITYSEC_TEST_PYTHON` for the Python side;
//! `STIX_BENCH_PY_OBSERVATIONS` picks how many observations Python gets per pattern).

use std::time::Instant;

use serde_json::{Value, json};
use stix::corpus::{self, Rng};
use stix::matcher::{CompiledPattern, Observation, observations_from_json};

const PATTERNS: usize = 200;
const OBSERVATIONS: usize = 2_000;
const INDICATORS: usize = 1_000_000;
/// Observations in the whole-set mode (one evaluation over all of them).
const WHOLE_SET: usize = 200;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn main() {
    let mut rng = Rng::new(0xB3AC_2026);
    let patterns: Vec<String> = (0..PATTERNS)
        .map(|i| corpus::pattern(&mut rng, i % 3))
        .collect();
    let mut per_obs: Vec<Value> = Vec::new();
    let mut all_objects = Vec::new();
    for i in 0..OBSERVATIONS {
        let at = i as i64 * 10 + rng.below(10) as i64;
        let objs = corpus::observation(&mut rng, i, at);
        per_obs
            .push(json!({"type": "bundle", "id": format!("bundle--{i}"), "objects": objs.clone()}));
        all_objects.extend(objs);
    }
    let whole = json!({"type": "bundle", "id": "bundle--all", "objects": all_objects});
    let subset_objects: Vec<Value> = per_obs[..WHOLE_SET.min(per_obs.len())]
        .iter()
        .flat_map(|b| b["objects"].as_array().cloned().unwrap_or_default())
        .collect();
    let subset = json!({"type": "bundle", "id": "bundle--subset", "objects": subset_objects});
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/stix-bench");
    std::fs::create_dir_all(&dir).expect("create corpus dir");
    std::fs::write(dir.join("patterns.txt"), patterns.join("\n") + "\n").expect("write patterns");
    std::fs::write(
        dir.join("observations.json"),
        Value::Array(per_obs.clone()).to_string(),
    )
    .expect("write");
    std::fs::write(dir.join("bundle.json"), subset.to_string()).expect("write");

    // ours: compile once, prepare once
    let t = Instant::now();
    let compiled: Vec<CompiledPattern> = patterns
        .iter()
        .map(|p| CompiledPattern::new(p).expect("corpus pattern compiles"))
        .collect();
    let compile_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let obs: Vec<Observation> = per_obs
        .iter()
        .flat_map(|b| observations_from_json(b).expect("corpus observations"))
        .collect();
    let prepare_s = t.elapsed().as_secs_f64();

    let mut hits = 0usize;
    let mut best = f64::MAX;
    for _ in 0..3 {
        hits = 0;
        let t = Instant::now();
        for c in &compiled {
            for o in &obs {
                hits += usize::from(c.matches_one(o));
            }
        }
        best = best.min(t.elapsed().as_secs_f64());
    }
    let pairs = (compiled.len() * obs.len()) as f64;
    let ours_pairs_per_s = pairs / best;

    let all = observations_from_json(&whole).expect("whole bundle");
    let all = &all[..WHOLE_SET.min(all.len())];
    let t = Instant::now();
    let mut set_hits = 0;
    let mut set_times = Vec::new();
    for (i, c) in compiled.iter().enumerate() {
        let t1 = Instant::now();
        set_hits += usize::from(c.matches(all));
        let dt = t1.elapsed().as_secs_f64();
        set_times.push(dt);
        if dt > 0.05 {
            println!("slow whole-set pattern #{i} ({dt:.2} s): {}", c.source());
        }
    }
    let set_s = t.elapsed().as_secs_f64();
    let ours_set_pairs_per_s = (compiled.len() * all.len()) as f64 / set_s;

    println!(
        "corpus: {PATTERNS} patterns x {OBSERVATIONS} observations (seed 0xB3AC2026), written to {}",
        dir.display()
    );
    println!(
        "ours: compile {PATTERNS} patterns {:.2} ms, prepare {OBSERVATIONS} observations {:.2} ms",
        compile_s * 1e3,
        prepare_s * 1e3
    );
    println!(
        "ours per-pair: {pairs} pairs in {best:.4} s = {ours_pairs_per_s:.0} pairs/s ({hits} matches)"
    );
    println!(
        "ours whole-set: {PATTERNS} patterns x {} observations",
        all.len()
    );
    println!("   in {set_s:.4} s = {ours_set_pairs_per_s:.0} pairs/s ({set_hits} patterns match)");

    if let Ok(py) = std::env::var("CITYSEC_TEST_PYTHON") {
        let py_obs: usize = std::env::var("STIX_BENCH_PY_OBSERVATIONS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(200);
        let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../scripts/oracles/bench_matcher.py");
        let out = std::process::Command::new(&py)
            .arg(&script)
            .arg(&dir)
            .args([
                "--patterns",
                &PATTERNS.to_string(),
                "--observations",
                &py_obs.to_string(),
                "--set-patterns",
                "10",
            ])
            .output()
            .expect("run python benchmark");
        assert!(
            out.status.success(),
            "python benchmark failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let r: Value = serde_json::from_slice(&out.stdout).expect("python json");
        let py_pairs = r["pairs_per_s"].as_f64().unwrap_or(f64::NAN);
        println!(
            "stix2-matcher per-pair: {} pairs in {:.2} s = {py_pairs:.0} pairs/s ({} matches)",
            r["pairs"],
            r["pair_seconds"].as_f64().unwrap_or(0.0),
            r["pair_hits"]
        );
        println!(
            "stix2-matcher whole-set: {} patterns x {} observations in {:.2} s",
            r["set_patterns"],
            r["set_observations"],
            r["set_seconds"].as_f64().unwrap_or(0.0)
        );
        println!("ratio per-pair: {:.0}x", ours_pairs_per_s / py_pairs);
        // whole-set ratio over the patterns Python finished within its timeout
        let times = r["set_times"].as_array().cloned().unwrap_or_default();
        let (mut ours_t, mut py_t) = (0.0, 0.0);
        for (i, t) in times.iter().enumerate() {
            if let Some(t) = t.as_f64() {
                py_t += t;
                ours_t += set_times[i];
            }
        }
        println!(
            "ratio whole-set (the {} patterns stix2-matcher finished; {} timed out after {} s each): {:.0}x",
            r["set_patterns"],
            r["set_timeouts"],
            r["set_timeout_s"],
            py_t / ours_t
        );
    } else {
        println!("skipping: stix2-matcher comparison: CITYSEC_TEST_PYTHON is not set");
    }

    // 1,000,000 simple indicator patterns
    let texts: Vec<String> = (0..INDICATORS).map(corpus::simple_indicator).collect();
    let before = rss_kib();
    let t = Instant::now();
    let compiled: Vec<CompiledPattern> = texts
        .iter()
        .map(|p| CompiledPattern::new(p).expect("indicator"))
        .collect();
    let secs = t.elapsed().as_secs_f64();
    let after = rss_kib();
    println!(
        "compile {INDICATORS} simple indicator patterns: {secs:.2} s ({:.0} patterns/s), resident memory +{} MiB ({} bytes/pattern)",
        INDICATORS as f64 / secs,
        (after.saturating_sub(before)) / 1024,
        (after.saturating_sub(before)) * 1024 / INDICATORS as u64
    );
    let probe = obs
        .iter()
        .take(100)
        .filter(|o| compiled.iter().take(1000).any(|c| c.matches_one(o)))
        .count();
    println!("(probe: {probe} of 100 observations match one of the first 1000 indicators)");
}

//! `citysec bench detect`: the detection engine on one core against a synthetic city
//! (`detect::workload`): devices with learned baselines, partner indicators, and a mix of
//! telemetry, flows, state and broker events. Prints events/s, state per device and memory.

use std::io::IsTerminal;
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;

/// `citysec bench` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// The detection engine alone, on one thread.
    Detect {
        #[arg(long, default_value_t = 100_000)]
        devices: usize,
        #[arg(long, default_value_t = 1_000_000)]
        indicators: usize,
        /// Events in the measured stream (after the baselines are learned).
        #[arg(long, default_value_t = 2_000_000)]
        events: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Measured passes over the stream (the engine keeps its state between them).
        #[arg(long, default_value_t = 3)]
        passes: usize,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Serialize)]
struct DetectReport {
    devices: usize,
    indicators: usize,
    events_per_pass: usize,
    passes: Vec<Pass>,
    best_events_per_s: f64,
    state_bytes_per_device: usize,
    /// Resident memory of the loaded engine (devices, baselines, indicators), before the
    /// measured streams are generated.
    rss_mib_loaded: f64,
    setup_s: f64,
    /// Saving and loading what the engine learned (`[detect] learned_save_s`).
    learned: LearnedReport,
}

#[derive(Debug, Serialize)]
struct LearnedReport {
    /// Devices with learned state in the snapshot.
    devices: usize,
    /// The snapshot's JSON, as the store keeps it.
    json_bytes: usize,
    bytes_per_device: f64,
    /// Taking the snapshot and encoding it (what a save costs the detection thread and the
    /// encoder), and decoding and loading it into a fresh engine (a takeover).
    take_ms: f64,
    encode_ms: f64,
    decode_ms: f64,
    load_ms: f64,
}

#[derive(Debug, Serialize)]
struct Pass {
    events_per_s: f64,
    cpu_events_per_s: Option<f64>,
    /// Alerts raised or updated, by rule (the workload is benign but for its indicator hits).
    alerts: std::collections::BTreeMap<String, usize>,
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    let BenchCommand::Detect {
        devices,
        indicators,
        events,
        seed,
        passes,
        json,
    } = cmd;
    let say = |s: &str| {
        if !json || std::io::stderr().is_terminal() {
            eprintln!("{s}");
        }
    };
    say(&format!(
        "building a city of {devices} devices, {indicators} indicators, {events} events per pass..."
    ));
    let setup = Instant::now();
    let rss_before = rss_mib();
    let mut workload = detect::workload::Workload::new(detect::workload::WorkloadConfig {
        devices,
        indicators,
        events,
        seed,
    });
    let setup_s = setup.elapsed().as_secs_f64();
    let rss_loaded = rss_mib();
    let mut results = Vec::new();
    let mut out = Vec::with_capacity(1024);
    for pass in 0..passes.max(1) {
        // Each pass is the next stretch of the city's life (generated before timing).
        let stream = workload.events(events);
        let engine = &mut workload.engine;
        let mut alerts = std::collections::BTreeMap::<String, usize>::new();
        let cpu0 = thread_cpu_s();
        let t0 = Instant::now();
        for event in &stream {
            engine.process(event, &mut out);
            for alert in out.drain(..) {
                *alerts.entry(alert.rule).or_default() += 1;
            }
        }
        let wall = t0.elapsed().as_secs_f64();
        let cpu = thread_cpu_s().zip(cpu0).map(|(a, b)| a - b);
        let n = stream.len() as f64;
        let pass_report = Pass {
            events_per_s: n / wall.max(1e-9),
            cpu_events_per_s: cpu.filter(|c| *c > 0.0).map(|c| n / c),
            alerts,
        };
        say(&format!(
            "pass {}: {:.0} events/s, {:.0} per CPU second; alert updates {:?}",
            pass + 1,
            pass_report.events_per_s,
            pass_report.cpu_events_per_s.unwrap_or(0.0),
            pass_report.alerts,
        ));
        results.push(pass_report);
    }
    let engine = &workload.engine;
    let t = Instant::now();
    let learned = engine.learned(|_| true);
    let take_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let body = serde_json::to_string(&learned).context("failed to encode the learned state")?;
    let encode_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let back: detect::Learned =
        serde_json::from_str(&body).context("failed to decode the learned state")?;
    let decode_ms = t.elapsed().as_secs_f64() * 1e3;
    let mut fresh = workload.fresh_engine();
    let t = Instant::now();
    let restored = fresh
        .restore_learned(&back, |_| true)
        .context("failed to load the learned state")?;
    let load_ms = t.elapsed().as_secs_f64() * 1e3;
    anyhow::ensure!(
        restored.devices == learned.devices(),
        "loaded {} of {} devices",
        restored.devices,
        learned.devices()
    );
    let learned_report = LearnedReport {
        devices: learned.devices(),
        json_bytes: body.len(),
        bytes_per_device: body.len() as f64 / learned.devices().max(1) as f64,
        take_ms,
        encode_ms,
        decode_ms,
        load_ms,
    };
    let report = DetectReport {
        devices,
        indicators,
        events_per_pass: events,
        best_events_per_s: results.iter().map(|p| p.events_per_s).fold(0.0, f64::max),
        passes: results,
        state_bytes_per_device: engine.state_bytes_per_device(),
        rss_mib_loaded: rss_loaded - rss_before,
        setup_s,
        learned: learned_report,
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).context("failed to encode")?
        );
    } else {
        println!(
            "detect: {:.0} events/s on one core (best of {} passes), {} devices, {} indicators; \
             {} bytes of state per device; the loaded engine holds {:.0} MiB",
            report.best_events_per_s,
            report.passes.len(),
            devices,
            indicators,
            report.state_bytes_per_device,
            report.rss_mib_loaded
        );
        let l = &report.learned;
        println!(
            "learned state: {} devices, {:.1} MiB of JSON ({:.0} bytes per device); take {:.0} ms, \
             encode {:.0} ms, decode {:.0} ms, load {:.0} ms",
            l.devices,
            l.json_bytes as f64 / (1024.0 * 1024.0),
            l.bytes_per_device,
            l.take_ms,
            l.encode_ms,
            l.decode_ms,
            l.load_ms
        );
    }
    Ok(())
}

/// This process's resident memory, from /proc (0 where there is none).
fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// This thread's CPU time (user + system), from /proc.
fn thread_cpu_s() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // fields after the command: state is [0]; utime and stime are fields 14 and 15 of the
    // whole line, so [11] and [12] here
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

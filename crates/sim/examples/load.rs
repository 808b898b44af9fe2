//! Load generator for benchmarks: drives a broker with a generated population and prints,
//! once a second and at the end, the publish rate and this process's CPU and memory.
//!
//! ```text
//! cargo run --release -p sim --example load -- --write-mosquitto DIR --devices 1000
//! cargo run --release -p sim --example load -- --mqtt 127.0.0.1:1883 --devices 1000 \
//!     --rate 1000000 --duration 20 [--threads 1] [--slice 0/3] [--attacks] [--qos 1]
//! ```
//!
//! `--sink PORT` instead runs a null broker on 127.0.0.1:PORT (accepts every CONNECT,
//! acknowledges SUBSCRIBE and PINGREQ, discards publishes and prints their rate), to measure
//! the generator's own ceiling without a real broker's cost.
//!
//! `--slice k/n` runs every n-th device starting at k, so n processes together play one
//! population (one process cannot hold more sockets than its open-file limit).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sim::attacks::AttackConfig;
use sim::population::Population;
use sim::{SimConfig, SimStats};

struct Args {
    mqtt: Option<std::net::SocketAddr>,
    devices: usize,
    seed: u64,
    rate: Option<f64>,
    duration: u64,
    threads: usize,
    slice: (usize, usize),
    write_mosquitto: Option<std::path::PathBuf>,
    attacks: bool,
    qos: u8,
    mqtt5_share: f64,
    sink: Option<u16>,
    connect_concurrency: Option<usize>,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        mqtt: None,
        devices: 1000,
        seed: 1,
        rate: None,
        duration: 20,
        threads: 2,
        slice: (0, 1),
        write_mosquitto: None,
        attacks: false,
        qos: 0,
        mqtt5_share: 0.2,
        sink: None,
        connect_concurrency: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--mqtt" => args.mqtt = Some(value()?.parse().context("--mqtt")?),
            "--devices" => args.devices = value()?.parse().context("--devices")?,
            "--seed" => args.seed = value()?.parse().context("--seed")?,
            "--rate" => args.rate = Some(value()?.parse().context("--rate")?),
            "--duration" => args.duration = value()?.parse().context("--duration")?,
            "--threads" => args.threads = value()?.parse().context("--threads")?,
            "--qos" => args.qos = value()?.parse().context("--qos")?,
            "--mqtt5-share" => args.mqtt5_share = value()?.parse().context("--mqtt5-share")?,
            "--slice" => {
                let v = value()?;
                let (k, n) = v.split_once('/').context("--slice k/n")?;
                args.slice = (k.parse()?, n.parse()?);
            }
            "--write-mosquitto" => args.write_mosquitto = Some(value()?.into()),
            "--attacks" => args.attacks = true,
            "--connect-concurrency" => {
                args.connect_concurrency = Some(value()?.parse().context("--connect-concurrency")?);
            }
            "--sink" => args.sink = Some(value()?.parse().context("--sink")?),
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(args)
}

/// (utime + stime in seconds, VmRSS kB, VmHWM kB) of this process.
fn self_usage() -> (f64, u64, u64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Fields 14 and 15 (utime, stime) are at 11 and 12 after the command name; 100 Hz.
    let cpu = (ticks(11) + ticks(12)) / 100.0;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (cpu, kb("VmRSS:"), kb("VmHWM:"))
}

fn main() -> Result<()> {
    let args = parse_args()?;
    if let Some(port) = args.sink {
        return sink(port, args.threads);
    }
    let full = Population::generate(args.devices, args.seed);
    if let Some(dir) = &args.write_mosquitto {
        let files = full.write_mosquitto(dir, Some(("observer", "observer")))?;
        println!(
            "wrote {} and {} (hashed: {})",
            files.passwd.display(),
            files.acl.display(),
            files.hashed
        );
        return Ok(());
    }
    let mqtt = args.mqtt.context("--mqtt HOST:PORT is required")?;
    let (k, n) = args.slice;
    let devices = full.devices.into_iter().skip(k).step_by(n.max(1)).collect();
    let population = Arc::new(Population { devices });
    let count = population.len() as u64;
    let (_, rss_before, _) = self_usage();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let stats = Arc::new(SimStats::default());
        let mut config = SimConfig::new(mqtt, population);
        config.rate = args.rate.map(|r| r / n as f64);
        config.duration = Some(Duration::from_secs(args.duration));
        config.seed = args.seed;
        config.qos = args.qos;
        config.mqtt5_share = args.mqtt5_share;
        if let Some(c) = args.connect_concurrency {
            config.connect_concurrency = c;
        }
        config.attacks = if args.attacks { AttackConfig::default() } else { AttackConfig::disabled() };
        let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let started = Instant::now();
        let task = tokio::spawn(sim::run(config, stats.clone(), stop_rx));
        let mut steady: Option<(Instant, u64, f64)> = None;
        let mut last = (Instant::now(), 0u64, 0.0f64);
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        ticker.tick().await;
        while !task.is_finished() {
            ticker.tick().await;
            let s = stats.snapshot();
            let now = Instant::now();
            let rate = (s.messages_sent - last.1) as f64 / (now - last.0).as_secs_f64();
            let (cpu, rss, _) = self_usage();
            // The steady window ends when devices start to disconnect.
            if steady.is_none() || s.devices_connected == count {
                last = (now, s.messages_sent, cpu);
            }
            if steady.is_none() && s.devices_connected == count {
                steady = Some((now, s.messages_sent, cpu));
                eprintln!("all {count} devices connected after {:.1}s", started.elapsed().as_secs_f64());
            }
            eprintln!(
                "t={:>3.0}s connected={} failures={} msg/s={rate:.0} rss={}kB",
                started.elapsed().as_secs_f64(),
                s.devices_connected,
                s.connect_failures,
                rss
            );
        }
        task.await??;
        let s = stats.snapshot();
        let (_, rss, hwm) = self_usage();
        let cpu = last.2;
        let (t0, m0, c0) = steady.unwrap_or((started, 0, 0.0));
        let window = last.0.duration_since(t0).as_secs_f64().max(0.001);
        let msgs = last.1.saturating_sub(m0);
        let summary = serde_json::json!({
            "devices": count,
            "slice": format!("{k}/{n}"),
            "threads": args.threads,
            "steady_window_s": (window * 10.0).round() / 10.0,
            "msg_per_s": (msgs as f64 / window).round(),
            "cpu_pct": ((cpu - c0) / window * 1000.0).round() / 10.0,
            "cpu_us_per_msg": if msgs > 0 { ((cpu - c0) / msgs as f64 * 1e7).round() / 10.0 } else { 0.0 },
            "rss_kb": rss,
            "hwm_kb": hwm,
            "rss_before_run_kb": rss_before,
            "rss_per_device_b": ((hwm.saturating_sub(rss_before)) * 1024) / count.max(1),
            "stats": s,
        });
        println!("{summary}");
        anyhow::Ok(())
    })
}

/// A null MQTT broker: enough protocol to keep clients happy, publishes are counted.
fn sink(port: u16, threads: usize) -> Result<()> {
    use std::sync::atomic::{AtomicU64, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let publishes = Arc::new(AtomicU64::new(0));
        let counter = publishes.clone();
        tokio::spawn(async move {
            let mut last = 0;
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let now = counter.load(Ordering::Relaxed);
                if now != last {
                    let (cpu, rss, _) = self_usage();
                    eprintln!("sink: {} msg/s (cpu {cpu:.1}s, rss {rss} kB)", now - last);
                }
                last = now;
            }
        });
        loop {
            let (mut stream, _) = listener.accept().await?;
            let publishes = publishes.clone();
            tokio::spawn(async move {
                let mut buf = bytes::BytesMut::with_capacity(4096);
                let mut v5 = false;
                loop {
                    // Complete frames at the front of the buffer.
                    let mut out = Vec::new();
                    let mut count = 0;
                    loop {
                        let mut len = 0usize;
                        let mut shift = 0;
                        let mut i = 1;
                        let complete = loop {
                            let Some(&b) = buf.get(i) else { break false };
                            len |= usize::from(b & 0x7f) << shift;
                            shift += 7;
                            i += 1;
                            if b & 0x80 == 0 {
                                break true;
                            }
                        };
                        if !complete || buf.len() < i + len {
                            break;
                        }
                        let frame = buf.split_to(i + len);
                        match frame[0] >> 4 {
                            1 => {
                                v5 = frame.get(i + 6) == Some(&5);
                                out.extend_from_slice(if v5 {
                                    &[0x20, 3, 0, 0, 0]
                                } else {
                                    &[0x20, 2, 0, 0]
                                });
                            }
                            3 => count += 1,
                            8 => {
                                let (hi, lo) = (frame[i], frame[i + 1]);
                                if v5 {
                                    out.extend_from_slice(&[0x90, 4, hi, lo, 0, 1]);
                                } else {
                                    out.extend_from_slice(&[0x90, 3, hi, lo, 1]);
                                }
                            }
                            12 => out.extend_from_slice(&[0xD0, 0]),
                            14 => return,
                            _ => {}
                        }
                    }
                    if count > 0 {
                        publishes.fetch_add(count, Ordering::Relaxed);
                    }
                    if !out.is_empty() && stream.write_all(&out).await.is_err() {
                        return;
                    }
                    match stream.read_buf(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
            });
        }
    })
}

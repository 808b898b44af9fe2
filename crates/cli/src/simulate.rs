//! `citysec sim ...`: the simulated city against any MQTT broker, and the population files
//! that give a broker (ours or Mosquitto) the same devices and credentials.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Subcommand;
use sim::population::Population;

use crate::duration;

/// `citysec sim --mqtt HOST:PORT ...` drives a broker; `citysec sim population` writes the
/// files that give a broker the same devices.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SimArgs {
    #[command(subcommand)]
    command: Option<SimCommand>,
    #[command(flatten)]
    run: Option<RunArgs>,
}

/// Drive a broker with simulated devices.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The broker, HOST:PORT.
    #[arg(long)]
    mqtt: String,
    /// The population file with each device's credentials (`citysec sim population` writes
    /// one). Without it, the population of `--devices` and `--seed` is generated, the same
    /// one `citysec sim population --devices N --seed S` writes.
    #[arg(long)]
    devices_file: Option<PathBuf>,
    /// How many devices: the first N of the file, or N generated (default 2000).
    #[arg(long)]
    devices: Option<usize>,
    /// Total messages/s spread across the devices (load-generator mode); without it each
    /// device publishes at its class's natural cadence.
    #[arg(long)]
    rate: Option<f64>,
    /// Stop after this long (e.g. 60s); without it, run until Ctrl-C.
    #[arg(long, value_parser = duration::parse)]
    duration: Option<Duration>,
    /// Replay the attack schedule.
    #[arg(long)]
    attacks: bool,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// QoS of telemetry publishes (0 or 1).
    #[arg(long, default_value_t = 0)]
    qos: u8,
    /// Share of devices speaking MQTT 5.0 (the rest speak 3.1.1).
    #[arg(long, default_value_t = 0.2)]
    mqtt5_share: f64,
    /// Print the final counters as JSON.
    #[arg(long)]
    json: bool,
    /// The command gateway's Ed25519 public key (64 hex digits; `citysec serve` logs it):
    /// actuators then verify every command and refuse unsigned, replayed and stale ones.
    #[arg(long, value_parser = parse_key)]
    gateway_public_key: Option<[u8; 32]>,
}

fn parse_key(text: &str) -> Result<[u8; 32], String> {
    let bytes = (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
        .filter(|_| text.len() == 64)
        .ok_or("the key must be 64 hex digits")?;
    <[u8; 32]>::try_from(bytes).map_err(|_| "the key must be 64 hex digits".to_owned())
}

#[derive(Debug, Subcommand)]
pub enum SimCommand {
    /// Drive a broker (the same as `citysec sim --mqtt ...`).
    Run(RunArgs),
    /// Generate a reproducible population file (with plaintext secrets: keep it private).
    Population {
        #[arg(long, default_value_t = 2000)]
        devices: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Where to write the population (JSON, importable with `citysec device import`).
        #[arg(long)]
        out: PathBuf,
        /// Also write a Mosquitto password file and ACL file into this directory, so
        /// Mosquitto can be driven with the same devices and the same topic policy.
        #[arg(long)]
        mosquitto: Option<PathBuf>,
    },
    /// Print the simulated city's `[[detect.zones]]`, `[[detect.conduits]]` and
    /// `[detect.firmware]` config (append it to a platform config file).
    Zones {
        /// Print this config file with the city's sections merged in instead (the whole
        /// file, comments dropped).
        #[arg(long)]
        merge: Option<PathBuf>,
        /// Also set `[ingest.flow] listen` (with --merge), e.g. 127.0.0.1:2055.
        #[arg(long, requires = "merge")]
        flow_listen: Option<String>,
    },
}

pub async fn run(args: SimArgs) -> anyhow::Result<()> {
    let cmd = match (args.command, args.run) {
        (Some(cmd), _) => cmd,
        (None, Some(run)) => SimCommand::Run(run),
        (None, None) => {
            anyhow::bail!("give --mqtt HOST:PORT, or a subcommand (see citysec sim --help)")
        }
    };
    match cmd {
        SimCommand::Run(RunArgs {
            mqtt,
            devices_file,
            devices,
            rate,
            duration,
            attacks,
            seed,
            qos,
            mqtt5_share,
            json,
            gateway_public_key,
        }) => {
            let addr: SocketAddr = mqtt
                .to_socket_addrs()
                .with_context(|| format!("cannot resolve {mqtt}"))?
                .next()
                .with_context(|| format!("{mqtt} resolves to no address"))?;
            let population = match devices_file {
                Some(file) => {
                    let mut population = Population::read_json(&file)?;
                    if let Some(n) = devices {
                        population.devices.truncate(n);
                    }
                    population
                }
                None => Population::generate(devices.unwrap_or(2000), seed),
            };
            let population = Arc::new(population);
            let stats = Arc::new(sim::SimStats::default());
            let mut config = sim::SimConfig::new(addr, population.clone());
            config.rate = rate;
            config.duration = duration;
            config.seed = seed;
            config.qos = qos;
            config.mqtt5_share = mqtt5_share;
            config.attacks.enabled = attacks;
            config.gateway_key = gateway_public_key;
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            let started = Instant::now();
            let task = tokio::spawn(sim::run(config, stats.clone(), stop_rx));
            let reporter = {
                let stats = stats.clone();
                tokio::spawn(async move {
                    let mut last = 0;
                    let mut interval = tokio::time::interval(Duration::from_secs(5));
                    interval.tick().await;
                    loop {
                        interval.tick().await;
                        let s = stats.snapshot();
                        eprintln!(
                            "sim: {} connected, {:.0} msg/s, {} failures, {} attacks",
                            s.devices_connected,
                            (s.messages_sent - last) as f64 / 5.0,
                            s.connect_failures,
                            s.attacks_launched
                        );
                        last = s.messages_sent;
                    }
                })
            };
            let result = tokio::select! {
                r = task => r.context("simulator task failed")?,
                r = crate::serve::wait_for_signal() => {
                    r?;
                    let _ = stop_tx.send(true);
                    Ok(())
                }
            };
            reporter.abort();
            result?;
            let s = stats.snapshot();
            let elapsed = started.elapsed().as_secs_f64();
            if json {
                let mut value = serde_json::to_value(s)?;
                value["elapsed_s"] = serde_json::json!(elapsed);
                value["messages_per_s"] = serde_json::json!(s.messages_sent as f64 / elapsed);
                println!("{value}");
            } else {
                eprintln!(
                    "sent {} messages in {elapsed:.1}s ({:.0}/s) from {} devices; {} connect failures",
                    s.messages_sent,
                    s.messages_sent as f64 / elapsed,
                    population.len(),
                    s.connect_failures
                );
            }
            Ok(())
        }
        SimCommand::Zones { merge, flow_listen } => {
            let network = sim::zones::CityNetwork;
            match merge {
                None => print!("{}", network.detect_toml()),
                Some(path) => {
                    let text = std::fs::read_to_string(&path)
                        .with_context(|| format!("failed to read {}", path.display()))?;
                    print!("{}", network.merge_into(&text, flow_listen.as_deref())?);
                }
            }
            Ok(())
        }
        SimCommand::Population {
            devices,
            seed,
            out,
            mosquitto,
        } => {
            let population = Population::generate(devices, seed);
            population.write_json(&out)?;
            eprintln!("wrote {} devices to {}", population.len(), out.display());
            if let Some(dir) = mosquitto {
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("failed to create {}", dir.display()))?;
                let files = population.write_mosquitto(&dir, None)?;
                let files = (files.passwd, files.acl, files.hashed);
                eprintln!(
                    "wrote Mosquitto files: {} {} (hashed: {})",
                    files.0.display(),
                    files.1.display(),
                    files.2
                );
            }
            Ok(())
        }
    }
}

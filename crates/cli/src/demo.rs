//! `citysec demo`: the whole platform embedded, a simulated city connected over real MQTT,
//! and a schedule of attacks, with a live status line.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;

use crate::duration;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// How many simulated devices.
    #[arg(long, default_value_t = 2000)]
    devices: usize,
    /// Stop after this long (e.g. 90s, 10m); without it, run until Ctrl-C.
    #[arg(long, value_parser = duration::parse)]
    duration: Option<Duration>,
    /// Seed for the simulated population, telemetry and attacks.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where the store and the admin token live.
    #[arg(long, default_value = "./citysec-data")]
    data_dir: PathBuf,
    /// The HTTP API's address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    http_listen: String,
    /// The embedded MQTT broker's address.
    #[arg(long, default_value = "127.0.0.1:1883")]
    mqtt_listen: String,
    /// The embedded broker's mTLS listener (device client certificates from the city CA
    /// generated into `<data-dir>/pki/` on first start); `none` turns it off.
    #[arg(long, default_value = "127.0.0.1:8883")]
    mqtt_tls_listen: String,
    /// The flow collector's UDP address (NetFlow v5/v9, IPFIX).
    #[arg(long, default_value = "127.0.0.1:2055")]
    flow_listen: String,
    /// Replay the attack schedule (on by default; `--attacks false` turns it off).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    attacks: bool,
    /// When the first attack starts (default 20s).
    #[arg(long, value_parser = duration::parse, hide = true)]
    attack_first_after: Option<Duration>,
    /// Gap between the attacks of one cycle (default 12s).
    #[arg(long, value_parser = duration::parse, hide = true)]
    attack_spacing: Option<Duration>,
    /// Total telemetry rate in messages/s instead of each device's own cadence (load test).
    #[arg(long)]
    rate: Option<f64>,
    /// After the first attack cycle, play the whole attack catalogue (`citysec exercise
    /// list`) against the city, again every 15 minutes (`--catalogue false` turns it off;
    /// `--attacks false` turns off all attacks).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    catalogue: bool,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let env: HashMap<String, String> = std::env::vars().collect();
    // The defaults, plus the simulated city's zones, conduits and flow listener.
    let mut config = crate::exercise::city_config(&env, Some(&args.flow_listen))?;
    config.data_dir = args.data_dir.clone();
    config.http.listen = args.http_listen.clone();
    config.ingest.mqtt.listen = args.mqtt_listen.clone();
    // mTLS on by default, with the generated city CA (`app::city_pki`).
    config.ingest.mqtt.tls_listen =
        (args.mqtt_tls_listen != "none").then(|| args.mqtt_tls_listen.clone());
    config.ingest.mqtt.tls_cert = None;
    config.ingest.mqtt.tls_key = None;
    config.ingest.mqtt.client_ca = None;
    config.ingest.flow.listen = args.flow_listen.clone();
    // The simulated city's vendor firmware catalogue, for the readiness index.
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("failed to create {}", args.data_dir.display()))?;
    let catalogue = args.data_dir.join("firmware.toml");
    std::fs::write(&catalogue, app::firmware::SIMULATED_CITY_CATALOGUE)
        .with_context(|| format!("failed to write {}", catalogue.display()))?;
    config.readiness.firmware_catalogue = Some(catalogue);
    // Every simulated device connects from this machine's loopback address.
    config.ingest.mqtt.connect_rate_per_ip = config.ingest.mqtt.connect_rate_per_ip.max(50_000);
    config.ingest.mqtt.max_connections =
        config.ingest.mqtt.max_connections.max(args.devices + 1_000);

    // The broker and the simulated devices share this process: two sockets per device.
    if let Some(limit) = crate::open_files_limit() {
        let needed = 2 * args.devices as u64 + 256;
        anyhow::ensure!(
            needed <= limit,
            "{} simulated devices need about {needed} open files in one process, but this system \
             allows {limit} (ulimit -n); use fewer devices, or run `citysec serve` and `citysec sim run` \
             as separate processes",
            args.devices
        );
    }
    let started = Instant::now();
    let population = Arc::new(sim::population::Population::generate(
        args.devices,
        args.seed,
    ));
    let inventory = population.to_json().into_bytes();
    let (mut devices, errors) = app::inventory::parse(
        &inventory,
        app::inventory::Format::Json,
        model::Timestamp::now(),
    )
    .map_err(|e| anyhow::anyhow!(e))?;
    anyhow::ensure!(
        errors.is_empty(),
        "simulated population did not import: {errors:?}"
    );

    let platform = app::Platform::start(config).await?;
    // The catalogue's certificate scenarios: client certificates from the city CA the
    // platform just generated or loaded, the current ones registered with their devices.
    let mut tls = None;
    if let (Some(addr), true) = (platform.mqtt_tls_addr(), args.attacks && args.catalogue) {
        // A scenario this city is too small for fails when it plays, as the others do.
        let plans: Vec<_> = sim::scenario::catalogue()?
            .iter()
            .filter_map(|s| s.plan(&population, args.seed, 0).ok())
            .collect();
        let ca = app::city_pki::load_ca(&args.data_dir)?;
        let (clients, pins) = crate::exercise::issue_certificates(&ca, addr, &plans)?;
        for device in &mut devices {
            if let Some(pin) = pins.get(device.id.as_str()) {
                device.credentials.push(model::Credential::Certificate {
                    sha256: pin.clone(),
                });
            }
        }
        tls = Some(Arc::new(clients));
    }
    platform.register_devices(devices).await?;

    let http = platform.http_addr();
    let scheme = platform.http_scheme();
    eprintln!();
    eprintln!(
        "citysec demo: {} simulated devices, seed {}",
        args.devices, args.seed
    );
    eprintln!("  console:     {scheme}://{http}/");
    eprintln!("  API:         {scheme}://{http}/api/v1/ (e.g. GET /api/v1/alerts)");
    eprintln!(
        "  admin token: {} (mode 0600)",
        platform.admin_token_path().display()
    );
    eprintln!("  MQTT broker: {}", platform.mqtt_addr());
    if let Some(tls) = platform.mqtt_tls_addr() {
        eprintln!(
            "  MQTT mTLS:   {tls} (city CA: {})",
            app::city_pki::dir(&args.data_dir)
                .join(app::city_pki::CA_CERT)
                .display()
        );
    }
    if let Some(flow) = platform.flow_addr() {
        eprintln!("  flows (UDP): {flow} (NetFlow v5/v9, IPFIX)");
    }
    eprintln!(
        "  try: curl -H \"Authorization: Bearer $(cat {})\" {scheme}://{http}/api/v1/alerts",
        platform.admin_token_path().display()
    );
    eprintln!();

    let stats = Arc::new(sim::SimStats::default());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut sim_config = sim::SimConfig::new(platform.mqtt_addr(), population.clone());
    sim_config.rate = args.rate;
    sim_config.seed = args.seed;
    // The simulated actuators verify every command with the gateway's key.
    sim_config.gateway_key = Some(platform.gateway().public_key());
    sim_config.attacks.enabled = args.attacks;
    if let Some(first) = args.attack_first_after {
        sim_config.attacks.first_after = first;
    }
    if let Some(spacing) = args.attack_spacing {
        sim_config.attacks.spacing = spacing;
    }
    let attack_config = sim_config.attacks.clone();
    let (handle, sim_task) = sim::spawn(sim_config, stats.clone(), stop_rx.clone())?;

    // The city's routers export its flows; the catalogue plays after the first cycle.
    let mut background = tokio::task::JoinSet::new();
    // The simulated city's routers export to the collector the platform bound.
    let flow_addr: std::net::SocketAddr = match platform.flow_addr() {
        Some(addr) => addr,
        None => args
            .flow_listen
            .parse()
            .map_err(|e| anyhow::anyhow!("--flow-listen {:?}: {e}", args.flow_listen))?,
    };
    let exporter = Arc::new(tokio::sync::Mutex::new(
        sim::flow::FlowExporter::connect(flow_addr, sim::flow::FlowFormat::Ipfix, 1).await?,
    ));
    background.spawn(sim::live::export_benign_flows(
        population.clone(),
        args.seed,
        exporter.clone(),
        Arc::new(sim::live::Offline::default()),
        stop_rx.clone(),
    ));
    if args.attacks && args.catalogue {
        let api = crate::exercise::Api::new(
            &format!("{scheme}://{http}"),
            platform.admin_token().to_owned(),
        );
        let env = sim::scenario::Env {
            mqtt: platform.mqtt_addr(),
            population: population.clone(),
            handle: handle.clone(),
            flows: Some(exporter.clone()),
            indicators: Arc::new(move |bundle| {
                let api = api.clone();
                Box::pin(async move { api.post_indicators(bundle).await })
            }),
            tls,
        };
        let first = attack_config.first_after + attack_config.spacing * 3;
        let seed = args.seed;
        let mut stop = stop_rx.clone();
        background.spawn(async move {
            let scenarios = sim::scenario::catalogue()?;
            tokio::select! {
                _ = tokio::time::sleep(first) => {}
                _ = stop.changed() => return Ok(()),
            }
            loop {
                let round = crate::exercise::play(
                    &scenarios,
                    &env,
                    crate::exercise::PlayOptions {
                        seed,
                        index_base: 100,
                        gap: Duration::from_secs(2),
                        api: None,
                        since: model::Timestamp::now(),
                        progress: None,
                    },
                );
                tokio::select! {
                    r = round => { r?; }
                    _ = stop.changed() => return Ok(()),
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(900)) => {}
                    _ = stop.changed() => return Ok(()),
                }
            }
        });
    }

    let status = StatusLine::new();
    let deadline = args.duration.map(|d| tokio::time::Instant::now() + d);
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    let signal = crate::serve::wait_for_signal();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            r = &mut signal => { r?; break; }
            _ = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            } => break,
        }
        let s = platform.status();
        status.show(&format!(
            "devices online {}/{} | {:.0} msg/s | alerts {} | attacks launched {} | up {}s",
            s.devices_online,
            s.devices_registered,
            s.messages_per_s,
            s.alerts_total,
            stats.snapshot().attacks_launched,
            s.uptime_s
        ));
    }
    status.finish();
    eprintln!("stopping the simulated city");
    let _ = stop_tx.send(true);
    background.abort_all();
    while background.join_next().await.is_some() {}
    match tokio::time::timeout(Duration::from_secs(10), sim_task).await {
        Ok(Ok(Err(err))) => tracing::warn!(error = %err, "simulator ended with an error"),
        Ok(_) => {}
        Err(_) => tracing::warn!("simulator did not stop within 10 s"),
    }
    let final_status = platform.status();
    let counters = platform.counters();
    platform.shutdown().await?;
    eprintln!(
        "stopped after {:.0}s: {} events stored, {} alerts",
        started.elapsed().as_secs_f64(),
        counters.events_stored.load(Ordering::Relaxed),
        final_status.alerts_total
    );
    Ok(())
}

/// One status line: redrawn in place on a terminal, a log line every 10 s otherwise.
struct StatusLine {
    bar: Option<indicatif::ProgressBar>,
    last_plain: std::sync::Mutex<Option<Instant>>,
}

impl StatusLine {
    fn new() -> StatusLine {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            bar
        });
        StatusLine {
            bar,
            last_plain: std::sync::Mutex::new(None),
        }
    }

    fn show(&self, line: &str) {
        match &self.bar {
            Some(bar) => {
                bar.set_message(line.to_owned());
                bar.tick();
            }
            None => {
                let mut last = self.last_plain.lock().unwrap_or_else(|e| e.into_inner());
                if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                    eprintln!("status: {line}");
                    *last = Some(Instant::now());
                }
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}

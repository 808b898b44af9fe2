//! `citysec exercise`: the attack catalogue against a running platform, scored.
//!
//! `exercise run` registers its own small city through the API (ids `x-...`, addresses in
//! each zone's exercise block, and for the certificate scenarios the fingerprints of client
//! certificates it issues from the platform's city CA, read from `--data-dir` on the
//! platform's machine), connects it over MQTT, exports its benign flows over UDP,
//! plays a few honest events (maintenance, an outage, a firmware update), then injects each
//! scenario over the real protocols and reads `/api/v1/alerts` back: per scenario whether it
//! was detected, the time to detect (first expected alert's `ts` minus onset), the alerts
//! raised, and the false alerts (on the benign background, or not expected). The result is
//! posted to `/api/v1/exercises` (unless `--no-record`), where the readiness index scores it.
//! `exercise soak` replays hours of benign background through the engine in process
//! (`app::replay`) at simulated time and reports false alerts per 10,000 device-hours.
//! `exercise list` prints the catalogue.

use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Subcommand;
use model::Timestamp;
use serde_json::{Value, json};
use sim::flow::{FlowExporter, FlowFormat};
use sim::population::Population;
use sim::scenario::{self, Env, Ran, Scenario, SeenAlert};

use crate::duration;

#[derive(Debug, Subcommand)]
pub enum ExerciseCommand {
    /// List the scenarios of the catalogue.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Inject scenarios into a running platform and score its alerts.
    Run(RunArgs),
    /// Replay hours of benign background through the detection engine in process and
    /// count false alerts per 10,000 device-hours.
    Soak(SoakArgs),
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// A scenario name, several separated by commas, or `all`.
    #[arg(long, default_value = "all")]
    scenario: String,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The platform's API.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    api: String,
    /// A file holding an admin or operator API token.
    #[arg(long, default_value = "./citysec-data/admin.token")]
    token_file: PathBuf,
    /// The platform's MQTT broker, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:1883")]
    mqtt: String,
    /// The platform's flow listener (UDP), HOST:PORT; `none` sends no flows (flow
    /// scenarios then fail with a clear problem).
    #[arg(long, default_value = "127.0.0.1:2055")]
    flow: String,
    /// The broker's mTLS listener, HOST:PORT, for the certificate scenarios; `none`
    /// presents no certificates (those scenarios then fail with a clear problem).
    #[arg(long, default_value = "127.0.0.1:8883")]
    mqtt_tls: String,
    /// The platform's data directory, on this machine: the city CA in its `pki/` issues
    /// the client certificates the certificate scenarios present (the API never issues
    /// device certificates).
    #[arg(long, default_value = "./citysec-data")]
    data_dir: PathBuf,
    /// The flow export format: ipfix or netflow5.
    #[arg(long, default_value = "ipfix")]
    flow_format: FlowFormat,
    /// Benign background before the first scenario (honest events happen in it).
    #[arg(long, value_parser = duration::parse, default_value = "20s")]
    lead: Duration,
    /// Pause between scenarios.
    #[arg(long, value_parser = duration::parse, default_value = "3s")]
    gap: Duration,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Do not record the result on the platform (by default it is posted to
    /// `/api/v1/exercises`, where the readiness index scores it).
    #[arg(long)]
    no_record: bool,
}

#[derive(Debug, clap::Args)]
pub struct SoakArgs {
    #[arg(long, default_value_t = 500)]
    devices: usize,
    /// Simulated hours.
    #[arg(long, default_value_t = 24.0)]
    hours: f64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The platform config whose `[detect]` section builds the engine; without it, the
    /// default config with the simulated city's zones and conduits.
    #[arg(long)]
    config: Option<PathBuf>,
    /// After the benign hours, also inject these scenarios (names, or `all`) into the
    /// engine in process, as the broker and the flow listener would report them, and
    /// score them (a check of the engine alone; `exercise run` is the real-protocol one).
    #[arg(long)]
    scenarios: Option<String>,
    #[arg(long)]
    json: bool,
}

pub fn run(cmd: ExerciseCommand) -> anyhow::Result<u8> {
    match cmd {
        ExerciseCommand::List { json } => list(json),
        ExerciseCommand::Run(args) => crate::runtime()?.block_on(run_exercise(args)),
        ExerciseCommand::Soak(args) => soak(args),
    }
}

fn list(as_json: bool) -> anyhow::Result<u8> {
    let all = scenario::catalogue()?;
    if as_json {
        let items: Vec<Value> = all
            .iter()
            .map(|s| {
                json!({"name": s.name, "title": s.title, "description": s.description,
                       "expect": s.expect, "also": s.also,
                       "target": s.target.as_ref().map(|t| t.class.as_str())})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&items)?);
    } else {
        for s in &all {
            println!("{:<24} {}", s.name, s.title);
            println!("{:<24} expects: {}", "", s.expect.join(", "));
        }
    }
    Ok(0)
}

/// The scenarios `spec` names (`all`, or names separated by commas).
pub fn select(spec: &str) -> anyhow::Result<Vec<Scenario>> {
    if spec == "all" {
        return scenario::catalogue();
    }
    spec.split(',')
        .map(|name| scenario::load(name.trim()))
        .collect()
}

fn resolve(addr: &str) -> anyhow::Result<SocketAddr> {
    addr.to_socket_addrs()
        .with_context(|| format!("{addr:?} is not HOST:PORT"))?
        .next()
        .with_context(|| format!("{addr:?} resolves to no address"))
}

/// A small authenticated JSON client of the platform's API.
#[derive(Clone)]
pub struct Api {
    base: String,
    token: String,
    agent: ureq::Agent,
}

impl Api {
    pub fn new(base: &str, token: String) -> Api {
        Api {
            base: base.trim_end_matches('/').to_owned(),
            token,
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(30)))
                .build()
                .into(),
        }
    }

    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let auth = format!("Bearer {}", self.token);
        let response = match (method, body) {
            ("GET", _) => self.agent.get(&url).header("Authorization", &auth).call(),
            (_, Some((ctype, bytes))) => self
                .agent
                .post(&url)
                .header("Authorization", &auth)
                .header("Content-Type", ctype)
                .send(&bytes[..]),
            (_, None) => self
                .agent
                .post(&url)
                .header("Authorization", &auth)
                .send_empty(),
        }
        .with_context(|| format!("failed to reach {url} (is the platform running?)"))?;
        let mut response = response;
        let status = response.status();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if !status.is_success() {
            let message = value["error"]["message"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| value.to_string());
            bail!("{method} {path}: {status}: {message}");
        }
        Ok(value)
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let api = self.clone();
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || api.call("GET", &path, None)).await?
    }

    pub async fn post(
        &self,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> anyhow::Result<Value> {
        let api = self.clone();
        let (path, ctype) = (path.to_owned(), content_type.to_owned());
        tokio::task::spawn_blocking(move || api.call("POST", &path, Some((&ctype, body)))).await?
    }

    /// Every alert raised (or repeated) since `since`, up to 5,000.
    pub async fn alerts_since(&self, since: Timestamp) -> anyhow::Result<Vec<SeenAlert>> {
        let since = since.to_rfc3339().replace('+', "%2B");
        let page = self
            .get(&format!("/api/v1/alerts?since={since}&limit=1000"))
            .await?;
        let items = page["items"].as_array().cloned().unwrap_or_default();
        Ok(items
            .into_iter()
            .filter_map(|a| serde_json::from_value(a).ok())
            .collect())
    }

    /// Loads a STIX bundle as indicators.
    pub async fn post_indicators(&self, bundle: Value) -> anyhow::Result<()> {
        self.post(
            "/api/v1/indicators",
            "application/json",
            serde_json::to_vec(&bundle)?,
        )
        .await
        .map(|_| ())
    }
}

/// What one run of scenarios produced.
pub struct Played {
    pub ran: Vec<(Ran, Vec<String>)>,
}

/// Plays `scenarios` one after another against `env`, waiting after each until its
/// expected rules all fired (polling `api` when given) or its settle time passed.
/// Scenario `i` attacks from `127.0.77.<10 + index_base + i>` (so two players on one
/// platform never share an attacker address).
/// How [`play`] runs.
pub struct PlayOptions<'a> {
    pub seed: u64,
    /// Added to each scenario's index (see [`play`]).
    pub index_base: usize,
    /// Pause between scenarios.
    pub gap: Duration,
    /// Polled for the expected alerts, to move on as soon as they all fired.
    pub api: Option<&'a Api>,
    /// Alerts are read from here on.
    pub since: Timestamp,
    pub progress: Option<&'a indicatif::ProgressBar>,
}

pub async fn play(
    scenarios: &[Scenario],
    env: &Env,
    options: PlayOptions<'_>,
) -> anyhow::Result<Played> {
    let PlayOptions {
        seed,
        index_base,
        gap,
        api,
        since,
        progress,
    } = options;
    let mut ran = Vec::new();
    for (index, scenario) in scenarios.iter().enumerate() {
        if let Some(bar) = progress {
            bar.set_message(scenario.name.clone());
        }
        let plan = scenario.plan(&env.population, seed, index_base + index)?;
        let onset = Timestamp::now().as_millis() + plan.onset_ms;
        tracing::info!(scenario = %plan.name, actions = plan.actions.len(), "injecting scenario");
        let problems = scenario::execute(&plan, env, onset).await;
        let until = onset + plan.last_ms + plan.settle_ms;
        // Wait for the expected alerts, at most until the settle time ends.
        loop {
            let now = Timestamp::now().as_millis();
            if now >= until {
                break;
            }
            if let Some(api) = api
                && let Ok(alerts) = api.alerts_since(since).await
            {
                let fired = plan.expect.iter().all(|rule| {
                    alerts.iter().any(|a| {
                        &a.rule == rule
                            && (a.ts.as_millis() >= onset || a.last_ts.as_millis() >= onset)
                    })
                });
                if fired {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let until = Timestamp::now()
            .as_millis()
            .min(until)
            .max(onset + plan.last_ms);
        ran.push((
            Ran {
                plan,
                onset,
                until: until + 1_000,
            },
            problems,
        ));
        if let Some(bar) = progress {
            bar.inc(1);
        }
        tokio::time::sleep(gap).await;
    }
    Ok(Played { ran })
}

async fn run_exercise(args: RunArgs) -> anyhow::Result<u8> {
    let scenarios = select(&args.scenario)?;
    let token = std::fs::read_to_string(&args.token_file)
        .with_context(|| {
            format!(
                "failed to read the API token from {}",
                args.token_file.display()
            )
        })?
        .trim()
        .to_owned();
    let api = Api::new(&args.api, token);
    let mqtt = resolve(&args.mqtt)?;
    let population = Arc::new(Population::generate_exercise(args.seed));
    let mut plans = Vec::new();
    for scenario in &scenarios {
        plans.push(scenario.plan(&population, args.seed, 0)?);
    }

    // Client certificates for the certificate scenarios, from the platform's city CA;
    // the ones the registry is to hold are registered with the devices below.
    let mut pins = HashMap::new();
    let mut tls = None;
    let wanted = plans.iter().any(|p| !p.certificates().is_empty());
    if wanted && args.mqtt_tls != "none" {
        let addr = resolve(&args.mqtt_tls)?;
        match app::city_pki::load_ca(&args.data_dir) {
            Ok(ca) => {
                let (clients, registered) = issue_certificates(&ca, addr, &plans)?;
                pins = registered;
                tls = Some(Arc::new(clients));
            }
            Err(err) => tracing::warn!(
                error = %format!("{err:#}"),
                "no city CA: the certificate scenarios cannot run (--data-dir)"
            ),
        }
    }

    // Register the exercise's devices (with their secrets, addresses and certificates).
    let report = api
        .post(
            "/api/v1/devices/import",
            "application/json",
            inventory_with_certificates(&population, &pins)?,
        )
        .await
        .context("registering the exercise devices")?;
    let imported = report["imported"].as_u64().unwrap_or(0);
    if imported != population.len() as u64 {
        bail!(
            "the platform imported {imported} of {} exercise devices: {}",
            population.len(),
            report["errors"]
        );
    }

    // The exercise city comes online.
    let stats = Arc::new(sim::SimStats::default());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut config = sim::SimConfig::new(mqtt, population.clone());
    config.seed = args.seed;
    config.attacks = sim::attacks::AttackConfig::disabled();
    config.source_base = Some(50);
    let (handle, sim_task) = sim::spawn(config, stats.clone(), stop_rx.clone())?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while stats.snapshot().devices_connected < population.len() as u64 {
        if Instant::now() > deadline {
            bail!(
                "only {} of {} exercise devices connected to {mqtt} within 30 s",
                stats.snapshot().devices_connected,
                population.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let flows = match args.flow.as_str() {
        "none" => None,
        addr => Some(Arc::new(tokio::sync::Mutex::new(
            FlowExporter::connect(resolve(addr)?, args.flow_format, 77).await?,
        ))),
    };
    let started = Timestamp::now();
    let offline = Arc::new(sim::live::Offline::default());
    let mut background = tokio::task::JoinSet::new();
    if let Some(exporter) = &flows {
        background.spawn(sim::live::export_benign_flows(
            population.clone(),
            args.seed,
            exporter.clone(),
            offline.clone(),
            stop_rx.clone(),
        ));
    }
    let lead_ms = args.lead.as_millis() as i64;
    background.spawn(sim::live::play_life(
        sim::live::scripted_life(&population, args.seed, lead_ms),
        started.as_millis(),
        population.clone(),
        args.seed,
        handle.clone(),
        flows.clone(),
        offline.clone(),
    ));

    let progress = (!args.json && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(scenarios.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} [{pos}/{len}] {msg} {elapsed}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    });
    if let Some(bar) = &progress {
        bar.set_message("benign lead-in");
    }
    tokio::time::sleep(args.lead).await;

    let indicator_api = api.clone();
    let env = Env {
        mqtt,
        population: population.clone(),
        handle: handle.clone(),
        flows: flows.clone(),
        indicators: Arc::new(move |bundle| {
            let api = indicator_api.clone();
            Box::pin(async move { api.post_indicators(bundle).await })
        }),
        tls,
    };
    let played = play(
        &scenarios,
        &env,
        PlayOptions {
            seed: args.seed,
            index_base: 0,
            gap: args.gap,
            api: Some(&api),
            since: started,
            progress: progress.as_ref(),
        },
    )
    .await;
    if let Some(bar) = &progress {
        bar.finish_and_clear();
    }
    let _ = stop_tx.send(true);
    while let Some(done) = background.join_next().await {
        if let Ok(Err(err)) = done {
            tracing::warn!(error = %format!("{err:#}"), "benign background failed");
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), sim_task).await;
    let played = played?;
    let finished = Timestamp::now();
    // Alerts raised after the last scenario still count (as false ones if unexplained).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let alerts = api.alerts_since(started).await?;
    // Only this exercise's alerts: its devices, its attackers, the outside addresses its
    // scenarios use, its devices' own MQTT addresses (`127.50.x.y`); a city running beside
    // it raises its own.
    let outside: std::collections::BTreeSet<String> = played
        .ran
        .iter()
        .flat_map(|(r, _)| r.plan.addresses.iter().map(|a| a.to_string()))
        .collect();
    let ours = |a: &SeenAlert| match (&a.device_id, &a.source) {
        (Some(d), _) => population.get(d).is_some(),
        (None, Some(src)) => {
            let ip = src.rsplit_once(':').map_or(src.as_str(), |(ip, _)| ip);
            ip.starts_with("127.0.77.") || ip.starts_with("127.50.") || outside.contains(ip)
        }
        (None, None) => true,
    };
    let alerts: Vec<SeenAlert> = alerts.into_iter().filter(|a| ours(a)).collect();
    let score = scenario::score(&played.ran, &alerts);
    let benign_hours =
        population.len() as f64 * (finished.as_millis() - started.as_millis()) as f64 / 3_600_000.0;
    let all_detected = score.scenarios.iter().all(|v| v.detected);
    // The result goes to the platform, whose readiness index scores it.
    let recorded = if args.no_record {
        None
    } else {
        let body = exercise_result(&score, started, finished, args.seed, population.len());
        Some(
            api.post(
                "/api/v1/exercises",
                "application/json",
                serde_json::to_vec(&body)?,
            )
            .await,
        )
    };
    let recorded = match recorded {
        None => Value::Null,
        Some(Ok(record)) => {
            if !args.json {
                println!(
                    "recorded on the platform as {}",
                    record["id"].as_str().unwrap_or("?")
                );
            }
            json!({ "id": record["id"] })
        }
        Some(Err(err)) => {
            eprintln!("warning: the result was not recorded on the platform: {err:#}");
            json!({ "error": format!("{err:#}") })
        }
    };
    if args.json {
        let out = json!({
            "seed": args.seed,
            "devices": population.len(),
            "started": started,
            "finished": finished,
            "benign_device_hours": benign_hours,
            "flow_format": format!("{:?}", args.flow_format).to_lowercase(),
            "scenarios": score.scenarios,
            "false_alerts": score.false_alerts,
            "recorded": recorded,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print_score(&score, benign_hours);
    }
    Ok(if all_detected { 0 } else { 1 })
}

/// The body of `POST /api/v1/exercises` for a scored run.
pub fn exercise_result(
    score: &scenario::Score,
    started: Timestamp,
    finished: Timestamp,
    seed: u64,
    devices: usize,
) -> model::ExerciseResult {
    model::ExerciseResult {
        started,
        finished,
        seed: Some(seed),
        devices: u32::try_from(devices).ok(),
        scenarios: score
            .scenarios
            .iter()
            .map(|v| model::ExerciseScenario {
                scenario: v.scenario.clone(),
                detected: v.detected,
                time_to_detect_s: v
                    .time_to_detect_s
                    .filter(|_| v.detected)
                    .map(|t| t.max(0.0))
                    .or(v.detected.then_some(0.0)),
                rules_fired: bounded(&v.rules_fired),
                rules_missing: bounded(&v.rules_missing),
                problems: bounded(&v.problems),
            })
            .collect(),
        false_alerts: u32::try_from(score.false_alerts.len()).unwrap_or(u32::MAX),
    }
}

/// At most 100 entries of at most 500 characters, as the platform accepts.
fn bounded(list: &[String]) -> Vec<String> {
    list.iter()
        .take(100)
        .map(|e| e.chars().take(500).collect())
        .collect()
}

fn print_score(score: &scenario::Score, benign_hours: f64) {
    println!("{:<24} {:<9} {:>8}  alerts", "scenario", "detected", "ttd");
    for v in &score.scenarios {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for a in &v.alerts {
            *counts.entry(a.rule.as_str()).or_default() += 1;
        }
        let alerts: Vec<String> = counts
            .iter()
            .map(|(rule, n)| {
                if *n > 1 {
                    format!("{rule} x{n}")
                } else {
                    (*rule).to_owned()
                }
            })
            .collect();
        println!(
            "{:<24} {:<9} {:>8}  {}",
            v.scenario,
            if v.detected { "yes" } else { "NO" },
            v.time_to_detect_s
                .map(|t| format!("{t:.1} s"))
                .unwrap_or_else(|| "-".into()),
            if alerts.is_empty() {
                "-".to_owned()
            } else {
                alerts.join(", ")
            }
        );
        if !v.rules_missing.is_empty() && v.detected {
            println!(
                "{:<24} {:<9} {:>8}  (did not fire: {})",
                "",
                "",
                "",
                v.rules_missing.join(", ")
            );
        }
        for p in &v.problems {
            println!("{:<24} problem: {p}", "");
        }
    }
    println!(
        "false alerts: {} (over {benign_hours:.2} device-hours of benign background)",
        score.false_alerts.len()
    );
    for a in &score.false_alerts {
        println!(
            "  {} {} {} {}",
            a.ts,
            a.rule,
            a.device_id
                .as_deref()
                .or(a.source.as_deref())
                .unwrap_or("-"),
            a.title
        );
    }
}

/// Issues, from the city CA, every client certificate `plans` present (valid for a day,
/// never written to disk), and returns them with the fingerprint each device's registry
/// entry must hold: its `Registered` certificate.
pub fn issue_certificates(
    ca: &pki::Ca,
    addr: SocketAddr,
    plans: &[scenario::Plan],
) -> anyhow::Result<(scenario::TlsClients, HashMap<String, String>)> {
    let mut certificates = HashMap::new();
    let mut pins = HashMap::new();
    for plan in plans {
        for (id, kind) in plan.certificates() {
            if certificates.contains_key(&(id.clone(), kind)) {
                continue;
            }
            let issued = ca
                .issue_device(&id, 1)
                .with_context(|| format!("issuing a client certificate for {id}"))?;
            if kind == scenario::CertKind::Registered {
                pins.insert(id.clone(), issued.sha256_hex.clone());
            }
            certificates.insert(
                (id, kind),
                sim::mqtt::ClientCertificate {
                    cert_pem: issued.cert_pem,
                    key_pem: issued.key_pem,
                },
            );
        }
    }
    Ok((
        scenario::TlsClients {
            addr,
            ca_pem: ca.cert_pem().to_owned(),
            certificates,
        },
        pins,
    ))
}

/// The population's inventory JSON with `cert_sha256` set for the devices in `pins`.
fn inventory_with_certificates(
    population: &Population,
    pins: &HashMap<String, String>,
) -> anyhow::Result<Vec<u8>> {
    let mut inventory: Value = serde_json::from_str(&population.to_json())?;
    if let Some(devices) = inventory["devices"].as_array_mut() {
        for device in devices {
            if let Some(pin) = device["id"].as_str().and_then(|id| pins.get(id)) {
                device["cert_sha256"] = Value::String(pin.clone());
            }
        }
    }
    Ok(serde_json::to_vec(&inventory)?)
}

/// The platform config for a simulated city: the defaults, the city's zones and conduits,
/// and the flow listener when `flow_listen` is given. Falls back (with a warning) to the
/// defaults alone when this build's config does not know those sections yet.
pub fn city_config(
    env: &HashMap<String, String>,
    flow_listen: Option<&str>,
) -> anyhow::Result<app::Config> {
    let network = sim::zones::CityNetwork;
    let defaults = app::config::DEFAULT_CONFIG;
    if let Some(listen) = flow_listen {
        let text = network.merge_into(defaults, Some(listen))?;
        match app::Config::load(&text, env) {
            Ok(config) => return Ok(config),
            Err(err) => tracing::warn!(
                error = %format!("{err:#}"),
                "this build has no [ingest.flow] listener; running without it"
            ),
        }
    }
    let text = network.merge_into(defaults, None)?;
    match app::Config::load(&text, env) {
        Ok(config) => Ok(config),
        Err(err) => {
            tracing::warn!(
                error = %format!("{err:#}"),
                "this build's [detect] has no zones and conduits; running without them"
            );
            app::Config::default_with_env(env)
        }
    }
}

fn soak(args: SoakArgs) -> anyhow::Result<u8> {
    if args.devices == 0 || !(args.hours > 0.0 && args.hours.is_finite()) {
        bail!("--devices and --hours must be positive");
    }
    let env: HashMap<String, String> = std::env::vars().collect();
    let config = match &args.config {
        Some(path) => app::Config::load_file(path)?,
        None => city_config(&env, None)?,
    };
    let population = Population::generate(args.devices, args.seed);
    let (devices, errors) = app::inventory::parse(
        population.to_json().as_bytes(),
        app::inventory::Format::Json,
        Timestamp::from_millis(SOAK_START_MS),
    )
    .map_err(|e| anyhow::anyhow!(e))?;
    if !errors.is_empty() {
        bail!("the simulated population did not import: {errors:?}");
    }
    let ids: Vec<model::DeviceId> = population.devices.iter().map(|d| d.id.clone()).collect();
    let mut replay = app::replay::Replay::new(&config, &devices);
    let benign_end = SOAK_START_MS + (args.hours * 3_600_000.0) as i64;
    // Scenarios (if any) follow the benign hours, with the background still running.
    let mut ran = Vec::new();
    let mut injections: Vec<(i64, usize, usize)> = Vec::new(); // (ts, plan, action)
    if let Some(spec) = &args.scenarios {
        let mut at = benign_end + 60_000;
        for (index, scenario) in select(spec)?.iter().enumerate() {
            let plan = scenario.plan(&population, args.seed, index)?;
            let onset = at + plan.onset_ms;
            for (i, a) in plan.actions.iter().enumerate() {
                injections.push((onset + a.at_ms, ran.len(), i));
            }
            let until = onset + plan.last_ms + plan.settle_ms;
            ran.push((Ran { plan, onset, until }, Vec::new()));
            at = until + 60_000;
        }
        injections.sort();
    }
    let total_hours = match ran.last() {
        Some((last, _)) => (last.until - SOAK_START_MS) as f64 / 3_600_000.0,
        None => args.hours,
    };
    let mut soak = sim::soak::Soak::new(&population, args.seed, SOAK_START_MS, total_hours);
    let life = soak.life_events().to_vec();
    let started = Instant::now();
    let mut batch = Vec::new();
    let mut observations = 0u64;
    let mut next_injection = 0;
    while soak.next_minute(&mut batch) {
        for obs in batch.drain(..) {
            while let Some(&(ts, plan, action)) = injections.get(next_injection)
                && ts <= obs.ts().as_millis()
            {
                let plan = &ran[plan].0;
                inject_in_process(&mut replay, &population, &plan.plan, action, plan.onset);
                next_injection += 1;
            }
            observations += 1;
            match obs {
                sim::soak::Observation::Publish {
                    ts, topic, payload, ..
                } => replay.publish(&topic, &payload, ts),
                sim::soak::Observation::Connected { ts, device, peer } => replay.security(
                    &ids[device],
                    model::SecurityEventKind::ConnectAccepted,
                    Some(peer),
                    ts,
                ),
                sim::soak::Observation::Disconnected { ts, device } => {
                    replay.security(&ids[device], model::SecurityEventKind::Disconnect, None, ts)
                }
                sim::soak::Observation::Flow(record) => replay.flow(record),
            }
        }
    }
    while let Some(&(_, plan, action)) = injections.get(next_injection) {
        let plan = &ran[plan].0;
        inject_in_process(&mut replay, &population, &plan.plan, action, plan.onset);
        next_injection += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let device_hours = args.devices as f64 * args.hours;
    let (all_alerts, stats) = replay.finish();
    let (alerts, attack_alerts): (Vec<model::Alert>, Vec<model::Alert>) = all_alerts
        .into_iter()
        .partition(|a| a.ts.as_millis() < benign_end);
    let verdicts = (!ran.is_empty()).then(|| {
        let seen: Vec<SeenAlert> = attack_alerts
            .iter()
            .map(|a| SeenAlert {
                id: a.id.0.clone(),
                rule: a.rule.clone(),
                device_id: a.device_id.as_ref().map(|d| d.to_string()),
                source: a.source.clone(),
                ts: a.ts,
                last_ts: a.last_ts,
                title: a.title.clone(),
            })
            .collect();
        scenario::score(&ran, &seen)
    });
    let per_10k = alerts.len() as f64 / device_hours * 10_000.0;
    let mut by_rule: BTreeMap<String, usize> = BTreeMap::new();
    for a in &alerts {
        *by_rule.entry(a.rule.clone()).or_default() += 1;
    }
    let count =
        |f: fn(&sim::background::LifeKind) -> bool| life.iter().filter(|e| f(&e.kind)).count();
    let honest = json!({
        "outages": count(|k| matches!(k, sim::background::LifeKind::Offline { .. })),
        "maintenance_windows": count(|k| matches!(k, sim::background::LifeKind::Maintenance { .. })),
        "firmware_updates": count(|k| matches!(k, sim::background::LifeKind::FirmwareUpdate { .. })),
    });
    if args.json {
        let out = json!({
            "devices": args.devices,
            "hours": args.hours,
            "seed": args.seed,
            "device_hours": device_hours,
            "observations": observations,
            "publishes": stats.publishes,
            "flows": stats.flows,
            "rejected": stats.rejected,
            "honest_events": honest,
            "alerts": alerts.len(),
            "alerts_per_10k_device_hours": per_10k,
            "alerts_by_rule": by_rule,
            "alert_list": alerts,
            "elapsed_s": elapsed,
            "observations_per_s": observations as f64 / elapsed.max(1e-9),
            "in_process_scenarios": verdicts,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "soak: {} devices x {} h = {device_hours:.0} device-hours (seed {}), {observations} observations ({} publishes, {} flows) in {elapsed:.1} s",
            args.devices, args.hours, args.seed, stats.publishes, stats.flows
        );
        println!("honest events: {honest}");
        println!(
            "false alerts: {} = {per_10k:.2} per 10,000 device-hours",
            alerts.len()
        );
        for (rule, n) in &by_rule {
            println!("  {rule}: {n}");
        }
        if let Some(score) = &verdicts {
            println!(
                "scenarios injected in process after the benign hours (background still running):"
            );
            print_score(score, args.devices as f64 * (total_hours - args.hours));
        }
    }
    Ok(0)
}

/// Feeds a plan into the in-process engine as the broker and the flow listener would
/// report it: wrong-password connects as auth failures (unknown ids as refusals), a
/// second connect with a device's credentials as a client-id takeover, certificates that
/// do not match the registry as the auth failures the broker reports for them, publishes and
/// subscriptions outside a device's own topics as denials, its own publishes decoded,
/// flows as records, indicators loaded.
fn inject_in_process(
    replay: &mut app::replay::Replay,
    population: &Population,
    plan: &scenario::Plan,
    n: usize,
    onset: i64,
) {
    use model::{SecurityEvent, SecurityEventKind};
    use scenario::Action;
    let event =
        |action, id: &str, peer: String, topic: Option<String>, reason: &str| SecurityEvent {
            action,
            client_id: Some(id.to_owned()),
            username: Some(id.to_owned()),
            peer: Some(peer),
            topic,
            reason: Some(reason.to_owned()),
        };
    {
        let planned = &plan.actions[n];
        let ts = Timestamp::from_millis(onset + planned.at_ms);
        match &planned.action {
            Action::Login { id, source, .. } => {
                let peer = format!("127.0.77.{source}:{}", 40_000 + n);
                let known = population.get(id).map(|d| d.id.clone());
                let (kind, reason) = if known.is_some() {
                    (SecurityEventKind::AuthFailure, "bad password")
                } else {
                    (SecurityEventKind::ConnectRefused, "unknown device")
                };
                replay.broker_event(known.as_ref(), event(kind, id, peer, None, reason), ts);
            }
            Action::Takeover { device, source, .. } => {
                let peer = format!("127.0.77.{source}:{}", 40_000 + n);
                replay.broker_event(
                    Some(device),
                    event(
                        SecurityEventKind::ClientIdTakeover,
                        device.as_str(),
                        peer,
                        None,
                        "client id in use from another address",
                    ),
                    ts,
                );
            }
            Action::Subscribe { device, filter } => {
                replay.broker_event(
                    Some(device),
                    event(
                        SecurityEventKind::SubscribeDenied,
                        device.as_str(),
                        "127.50.0.1:1".into(),
                        Some(filter.clone()),
                        "topic outside device namespace",
                    ),
                    ts,
                );
            }
            Action::Publish {
                device,
                topic,
                channel,
                payload,
                n,
                ..
            } => {
                let Some(d) = population.get(device.as_str()) else {
                    return;
                };
                let prefix = model::topic::device_prefix(d.sector, &d.id);
                let topic = topic
                    .clone()
                    .unwrap_or_else(|| format!("{prefix}/{}", channel.as_str()));
                let own = topic.starts_with(&format!("{prefix}/")) && !topic.ends_with("/cmd");
                if own {
                    let body = scenario::render(payload, ts, device.as_str(), *n);
                    replay.publish(&topic, body.as_bytes(), ts);
                } else {
                    replay.broker_event(
                        Some(device),
                        event(
                            SecurityEventKind::PublishDenied,
                            device.as_str(),
                            "127.50.0.1:1".into(),
                            Some(topic),
                            "topic outside device namespace",
                        ),
                        ts,
                    );
                }
            }
            Action::Flows(records) => {
                for r in records {
                    let mut r = r.clone();
                    r.start = Timestamp::from_millis(onset + r.start.as_millis());
                    r.end = Timestamp::from_millis(onset + r.end.as_millis());
                    replay.flow(r);
                }
            }
            Action::TlsConnect {
                identity,
                certificate_of,
                source,
                ..
            } => {
                // What the broker reports: another device's certificate fails on its CN,
                // the device's own superseded one on its fingerprint.
                let peer = format!("127.0.77.{source}:{}", 40_000 + n);
                let reason = if identity != certificate_of {
                    "username does not match certificate cn"
                } else {
                    "certificate not registered for device"
                };
                let known = population.get(identity.as_str()).map(|d| d.id.clone());
                replay.broker_event(
                    known.as_ref(),
                    event(
                        SecurityEventKind::AuthFailure,
                        identity.as_str(),
                        peer,
                        None,
                        reason,
                    ),
                    ts,
                );
            }
            Action::Indicator(bundle) => {
                let objects = bundle["objects"].as_array().cloned().unwrap_or_default();
                let indicators = objects
                    .iter()
                    .filter(|o| o["type"] == "indicator")
                    .map(|o| detect::Indicator {
                        id: o["id"].as_str().unwrap_or_default().to_owned(),
                        pattern: o["pattern"].as_str().unwrap_or_default().to_owned(),
                        name: o["name"].as_str().unwrap_or_default().to_owned(),
                        source: "partner".to_owned(),
                        valid_until: None,
                    })
                    .collect();
                for refused in replay.indicators(indicators) {
                    tracing::warn!(id = %refused.id, message = %refused.message, "indicator refused");
                }
            }
        }
    }
}

/// Soaks start at 2026-12-01T00:00:00Z (simulated).
const SOAK_START_MS: i64 = 1_796_083_200_000;

//! The `citysec` binary: argv, tracing, exit codes. Each subcommand lives in its own
//! module; the platform itself is `app`, the simulated city is `sim`.

mod audit;
mod bench;
mod cap;
mod command;
mod demo;
mod device;
mod duration;
mod exercise;
mod incident;
mod pki;
mod readiness;
mod serve;
mod simulate;
mod stix;
mod taxii;
mod user;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// Security operations for a smart city's Internet of Things.
#[derive(Debug, Parser)]
#[command(name = "citysec", version, about, long_about = None)]
struct Cli {
    /// Log filter, e.g. `info`, `warn`, `citysec=debug` (or set RUST_LOG).
    #[arg(long, global = true, env = "CITYSEC_LOG", default_value = "info")]
    log: String,
    /// Write logs as JSON lines.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run everything embedded (broker, bus, store, API) with a simulated city and attacks.
    Demo(demo::DemoArgs),
    /// Run the platform from a config file.
    Serve {
        /// The config file (`citysec generate-config > citysec.toml` writes one).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print the documented default config.
    GenerateConfig,
    /// Validate a config file: exit 0 when it is valid, 1 with the reason otherwise.
    CheckConfig { file: PathBuf },
    /// Manage the device registry.
    #[command(subcommand)]
    Device(device::DeviceCommand),
    /// Drive a broker with a simulated city (ours, or any MQTT broker).
    Sim(simulate::SimArgs),
    /// Create a city CA and device or server certificates for a pilot.
    #[command(subcommand)]
    Pki(pki::PkiCommand),
    /// Validate STIX 2.1 content and evaluate STIX patterns.
    #[command(subcommand)]
    Stix(stix::StixCommand),
    /// Run the attack catalogue against a running platform and score detection.
    #[command(subcommand)]
    Exercise(exercise::ExerciseCommand),
    /// Send and approve actuator commands through the command gateway.
    #[command(subcommand, name = "command")]
    Gateway(command::CommandCommand),
    /// Verify and export the hash-chained audit log.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Check CAP 1.2 files; draft, approve, issue, cancel and list public advisories.
    #[command(subcommand)]
    Cap(cap::CapCommand),
    /// The readiness index of the running platform.
    Readiness(readiness::ReadinessArgs),
    /// Manage operator accounts (viewer, analyst, operator, supervisor, admin).
    #[command(subcommand)]
    User(user::UserCommand),
    /// Work incidents: list, show, acknowledge, contain, resolve, close, notes, actions.
    #[command(subcommand)]
    Incident(incident::IncidentCommand),
    /// Share threat intelligence over TAXII 2.1 with any server.
    Taxii {
        #[command(subcommand)]
        command: taxii::TaxiiCommand,
        #[command(flatten)]
        auth: taxii::AuthArgs,
    },
    /// Measure the platform's engines (see bench/results/ for recorded runs).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(&cli.log, cli.log_json);
    // One TLS crypto provider for the whole process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Every device is a socket: take all the file descriptors the system allows.
    raise_open_files_limit();
    match run(cli.command) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            let _ = writeln!(std::io::stderr(), "error: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn run(command: Command) -> anyhow::Result<u8> {
    match command {
        Command::Demo(args) => runtime()?.block_on(demo::run(args)).map(|()| 0),
        Command::Serve { config } => {
            let config = app::Config::load_file(&config)?;
            runtime()?.block_on(serve::run(config)).map(|()| 0)
        }
        Command::GenerateConfig => {
            std::io::stdout().write_all(app::config::DEFAULT_CONFIG.as_bytes())?;
            Ok(0)
        }
        Command::CheckConfig { file } => match app::Config::load_file(&file) {
            Ok(config) => {
                // The data files the config names must load, as `serve` requires.
                if let Err(err) = app::firmware::load(&config)
                    .map(|_| ())
                    .and_then(|()| app::advisories::templates::load(&config.advisories).map(|_| ()))
                {
                    eprintln!("{}: {err:#}", file.display());
                    return Ok(1);
                }
                // Broken rules and zones are skipped at run time; here they fail the check.
                let (_, diagnostics) = app::detect::build_engine(&config);
                if diagnostics.is_empty() {
                    println!("{}: ok", file.display());
                    Ok(0)
                } else {
                    for d in &diagnostics {
                        eprintln!("{}: detection: {d}", file.display());
                    }
                    eprintln!(
                        "{}: {} detection problem(s); the platform would skip those entries and run the rest",
                        file.display(),
                        diagnostics.len()
                    );
                    Ok(1)
                }
            }
            Err(err) => {
                eprintln!("{}: {err:#}", file.display());
                Ok(1)
            }
        },
        Command::Device(cmd) => device::run(cmd),
        Command::Sim(cmd) => runtime()?.block_on(simulate::run(cmd)).map(|()| 0),
        Command::Pki(cmd) => pki::run(cmd).map(|()| 0),
        Command::Exercise(cmd) => exercise::run(cmd),
        Command::Gateway(cmd) => command::run(cmd),
        Command::Audit(cmd) => audit::run(cmd),
        Command::Cap(cmd) => cap::run(cmd),
        Command::Readiness(args) => readiness::run(args),
        Command::User(cmd) => user::run(cmd),
        Command::Incident(cmd) => incident::run(cmd),
        Command::Bench(cmd) => bench::run(cmd).map(|()| 0),
        Command::Stix(cmd) => {
            let code = stix::run(cmd)?;
            Ok(u8::try_from(code).unwrap_or(2))
        }
        Command::Taxii { command, auth } => taxii::run(command, auth),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")
}

fn init_tracing(filter: &str, json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .or_else(|| EnvFilter::try_new(filter).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Raises the soft limit on open files to the hard limit (Debian's default soft limit of
/// 1024 would cap a city at a few hundred devices).
fn raise_open_files_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open files limit"),
        Err(err) => tracing::warn!(error = %err, "failed to raise the open files limit"),
    }
}

/// The current soft limit on open files, if known.
pub fn open_files_limit() -> Option<u64> {
    rlimit::getrlimit(rlimit::Resource::NOFILE)
        .ok()
        .map(|(soft, _)| soft)
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

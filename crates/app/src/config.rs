//! The configuration file: one TOML document, `version = 1` first, each crate owning its
//! section. Loading is a pure function of the text and an environment map.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

/// The documented default configuration, printed by `citysec generate-config`.
pub const DEFAULT_CONFIG: &str = include_str!("../../../config/default.toml");

/// The validated platform configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Must be 1.
    pub version: u32,
    /// Where the platform keeps its state.
    pub data_dir: PathBuf,
    /// Which parts of the platform this process runs (see [`Role`]).
    #[serde(default = "default_roles")]
    pub roles: Vec<Role>,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub ingest: IngestConfig,
    #[serde(default)]
    pub bus: BusConfig,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub detect: detect::DetectConfig,
    #[serde(default)]
    pub gateway: gateway::GatewayConfig,
    #[serde(default)]
    pub advisories: crate::advisories::AdvisoryConfig,
    #[serde(default)]
    pub reports: web::ReportLimits,
    #[serde(default)]
    pub readiness: crate::readiness::ReadinessConfig,
    /// `[incidents]`: how alerts are grouped into incidents.
    #[serde(default)]
    pub incidents: incident::CorrelatorConfig,
    /// `[[playbooks]]`: which alert rules trigger which response actions.
    #[serde(default)]
    pub playbooks: Vec<incident::Playbook>,
    /// `[integrations]`: forwarding to the city's SIEM (syslog, webhooks).
    #[serde(default)]
    pub integrations: crate::integrations::IntegrationsConfig,
    #[serde(default)]
    pub taxii: crate::intel::config::TaxiiConfig,
}

/// A part of the platform a process runs. A scale-out deployment runs each where it wants,
/// all sharing one NATS bus and one PostgreSQL store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything below, in one process (the embedded default).
    All,
    /// The MQTT broker and the flow collector: what devices and routers talk to. Events go
    /// onto the bus; command delivery to devices happens here.
    Ingest,
    /// The detection worker, the store writer, incident correlation and the command
    /// gateway's acknowledgement and all-clear loop: consumers of the bus.
    Detect,
    /// The HTTP API, the web console, TAXII, the public CAP feed and citizen reports, and
    /// the readiness index they serve.
    Api,
}

fn default_roles() -> Vec<Role> {
    vec![Role::All]
}

/// `[http]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// The API's listen address.
    pub listen: String,
    /// HTTPS certificate chain (PEM); with `tls_key`, the listener speaks HTTPS only.
    pub tls_cert: Option<PathBuf>,
    /// HTTPS private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// Serve `/metrics` without a bearer token.
    pub metrics_public: bool,
}

impl Default for HttpConfig {
    fn default() -> HttpConfig {
        HttpConfig {
            listen: "127.0.0.1:8080".to_owned(),
            tls_cert: None,
            tls_key: None,
            metrics_public: false,
        }
    }
}

/// `[ingest]`: the adapters that bring events in.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    pub mqtt: ingest::mqtt::MqttConfig,
    pub flow: ingest::flow::FlowConfig,
    /// Bridge mode: when present, the ingest role consumes the city's broker instead of
    /// starting the embedded one (`[ingest.mqtt]` is then unused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<ingest::bridge::BridgeConfig>,
}

/// `[bus]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum BusConfig {
    /// The in-process bus (one process runs everything).
    InProcess {
        /// Messages buffered per consumer group before publishers wait.
        #[serde(default = "default_bus_capacity")]
        capacity: usize,
    },
    /// NATS JetStream, shared by every citysec process of a scale-out deployment
    /// (`url`, `stream`, `subject_prefix`, `partitions`, `max_bytes`, `ack_wait_ms`,
    /// `publish_timeout_ms`, `lease_ms`; see `bus::NatsConfig`).
    Nats(bus::NatsConfig),
}

fn default_bus_capacity() -> usize {
    65_536
}

impl Default for BusConfig {
    fn default() -> BusConfig {
        BusConfig::InProcess {
            capacity: default_bus_capacity(),
        }
    }
}

/// `[store]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum StoreConfig {
    /// One SQLite file, `citysec.db`, in the data directory.
    Embedded {
        /// Events older than this many days are deleted.
        #[serde(default = "default_retention_days")]
        event_retention_days: u32,
        /// Which telemetry readings are stored: `all`, or `none` when a historian elsewhere
        /// keeps raw readings. Security, state and command events are always stored, and
        /// detection always sees every reading.
        #[serde(default)]
        telemetry: TelemetryStorage,
    },
    /// A PostgreSQL database, shared by every citysec process of a scale-out deployment.
    Postgres {
        /// `postgres://user@host:5432/database` (or libpq key/value form), without a
        /// password: a password in the URL is refused.
        url: String,
        /// A file holding the password (its first line), e.g. a mounted secret.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        password_file: Option<PathBuf>,
        /// The environment variable holding the password.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        password_env: Option<String>,
        /// Connections this process keeps open.
        #[serde(default = "default_pool_size")]
        pool_size: usize,
        /// Events older than this many days are deleted.
        #[serde(default = "default_retention_days")]
        event_retention_days: u32,
        /// Which telemetry readings are stored (as for the embedded store).
        #[serde(default)]
        telemetry: TelemetryStorage,
    },
}

fn default_pool_size() -> usize {
    8
}

/// Whether raw telemetry readings are persisted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TelemetryStorage {
    #[default]
    All,
    None,
}

fn default_retention_days() -> u32 {
    7
}

impl Default for StoreConfig {
    fn default() -> StoreConfig {
        StoreConfig::Embedded {
            event_retention_days: default_retention_days(),
            telemetry: TelemetryStorage::All,
        }
    }
}

impl StoreConfig {
    pub fn event_retention_days(&self) -> u32 {
        match self {
            StoreConfig::Embedded {
                event_retention_days,
                ..
            }
            | StoreConfig::Postgres {
                event_retention_days,
                ..
            } => *event_retention_days,
        }
    }

    pub fn telemetry(&self) -> TelemetryStorage {
        match self {
            StoreConfig::Embedded { telemetry, .. } | StoreConfig::Postgres { telemetry, .. } => {
                *telemetry
            }
        }
    }

    fn validate(&self) -> anyhow::Result<()> {
        if let StoreConfig::Postgres {
            url,
            password_file,
            password_env,
            pool_size,
            ..
        } = self
        {
            if url.trim().is_empty() {
                bail!("store.url must name the PostgreSQL database");
            }
            if password_file.is_some() && password_env.is_some() {
                bail!("store.password_file and store.password_env are exclusive");
            }
            if !(1..=256).contains(pool_size) {
                bail!("store.pool_size must be between 1 and 256");
            }
        }
        Ok(())
    }

    /// The PostgreSQL connection settings, with the password read from its file or
    /// variable; `None` for the embedded store.
    pub fn postgres(
        &self,
        env: &HashMap<String, String>,
    ) -> anyhow::Result<Option<store::PgConfig>> {
        let StoreConfig::Postgres {
            url,
            password_file,
            password_env,
            pool_size,
            ..
        } = self
        else {
            return Ok(None);
        };
        let password = match (password_file, password_env) {
            (Some(path), _) => {
                let text = std::fs::read_to_string(path).with_context(|| {
                    format!("failed to read store.password_file {}", path.display())
                })?;
                let line = text
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .trim_end()
                    .to_owned();
                if line.is_empty() {
                    bail!("store.password_file {} is empty", path.display());
                }
                Some(line)
            }
            (None, Some(var)) => Some(
                env.get(var)
                    .filter(|v| !v.is_empty())
                    .with_context(|| format!("store.password_env: ${var} is not set"))?
                    .clone(),
            ),
            (None, None) => None,
        };
        Ok(Some(store::PgConfig {
            url: url.clone(),
            password,
            pool_size: *pool_size,
        }))
    }
}

impl Config {
    /// Parses and validates a configuration text, expanding `${VAR}` and `${VAR:-default}`
    /// from `env`.
    pub fn load(text: &str, env: &HashMap<String, String>) -> anyhow::Result<Config> {
        let mut raw: toml::Table = toml::from_str(text).context("invalid TOML")?;
        match raw.get("version").and_then(|v| v.as_integer()) {
            Some(1) => {}
            Some(other) => {
                bail!("unsupported config version {other}; this citysec reads version 1")
            }
            None => bail!("the config must start with `version = 1`"),
        }
        interpolate_table(&mut raw, env, "")?;
        let config: Config = raw.try_into().context("invalid config")?;
        config.validate()?;
        Ok(config)
    }

    /// Reads and loads a config file with the process environment.
    pub fn load_file(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("failed to read config {}", path.display()))?;
        let env: HashMap<String, String> = std::env::vars().collect();
        let mut config =
            Config::load(&text, &env).with_context(|| format!("in {}", path.display()))?;
        // A relative rules directory is relative to the config file, wherever it is run from.
        if let Some(dir) = &config.detect.rules_dir
            && Path::new(dir).is_relative()
            && let Some(base) = path.parent()
        {
            config.detect.rules_dir = Some(base.join(dir).display().to_string());
        }
        // So are the data files the config names.
        if let Some(base) = path.parent() {
            for file in [
                &mut config.readiness.firmware_catalogue,
                &mut config.advisories.templates,
            ]
            .into_iter()
            .flatten()
            {
                if file.is_relative() {
                    *file = base.join(&*file);
                }
            }
        }
        Ok(config)
    }

    /// The built-in default configuration.
    pub fn default_with_env(env: &HashMap<String, String>) -> anyhow::Result<Config> {
        Config::load(DEFAULT_CONFIG, env)
    }

    fn validate(&self) -> anyhow::Result<()> {
        self.http
            .listen
            .parse::<SocketAddr>()
            .with_context(|| format!("http.listen: {:?} is not an address", self.http.listen))?;
        if self.http.tls_cert.is_some() != self.http.tls_key.is_some() {
            bail!("http.tls_cert and http.tls_key must be set together");
        }
        let mqtt = &self.ingest.mqtt;
        mqtt.listen
            .parse::<SocketAddr>()
            .with_context(|| format!("ingest.mqtt.listen: {:?} is not an address", mqtt.listen))?;
        if let Some(tls) = &mqtt.tls_listen {
            tls.parse::<SocketAddr>()
                .with_context(|| format!("ingest.mqtt.tls_listen: {tls:?} is not an address"))?;
            // Neither: the platform generates a city CA and a broker certificate into
            // `<data_dir>/pki` (`app::city_pki`).
            if mqtt.tls_cert.is_some() != mqtt.tls_key.is_some() {
                bail!("ingest.mqtt.tls_cert and ingest.mqtt.tls_key must be set together");
            }
        }
        if mqtt.max_payload_bytes == 0 || mqtt.max_payload_bytes > 256 * 1024 * 1024 {
            bail!("ingest.mqtt.max_payload_bytes must be between 1 and 268435456");
        }
        if let Some(bridge) = &self.ingest.bridge {
            bridge.validate().map_err(anyhow::Error::msg)?;
        }
        let flow = &self.ingest.flow;
        flow.listen
            .parse::<SocketAddr>()
            .with_context(|| format!("ingest.flow.listen: {:?} is not an address", flow.listen))?;
        if flow.max_templates == 0
            || flow.max_templates_per_exporter == 0
            || flow.max_exporters == 0
        {
            bail!(
                "ingest.flow.max_templates, max_templates_per_exporter and max_exporters must be at least 1"
            );
        }
        match &self.bus {
            BusConfig::InProcess { capacity } => {
                if *capacity == 0 {
                    bail!("bus.capacity must be at least 1");
                }
            }
            BusConfig::Nats(nats) => {
                if nats.url.trim().is_empty() {
                    bail!("bus.url must name the NATS server");
                }
                if !(1..=4096).contains(&nats.partitions) {
                    bail!("bus.partitions must be between 1 and 4096");
                }
                if nats.stream.is_empty()
                    || nats.subject_prefix.is_empty()
                    || !nats
                        .stream
                        .chars()
                        .chain(nats.subject_prefix.chars())
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                {
                    bail!("bus.stream and bus.subject_prefix must be letters, digits, '_' or '-'");
                }
                if nats.ack_wait_ms < 100 || nats.max_bytes < 1 << 20 {
                    bail!(
                        "bus.ack_wait_ms must be at least 100 and bus.max_bytes at least 1048576"
                    );
                }
                if nats.lease_ms < 500 {
                    bail!("bus.lease_ms must be at least 500");
                }
            }
        }
        if self.detect.brute_force.per_device_threshold == 0
            || self.detect.brute_force.per_source_threshold == 0
        {
            bail!("detect.brute_force thresholds must be at least 1");
        }
        if self.roles.is_empty() {
            bail!("roles must name at least one of all, ingest, detect, api");
        }
        let split = !(self.runs(Role::Ingest) && self.runs(Role::Detect) && self.runs(Role::Api));
        if split && matches!(self.bus, BusConfig::InProcess { .. }) {
            bail!(
                "roles {:?} split the platform across processes: that needs [bus] type = \"nats\" \
                 (the in-process bus reaches no other process)",
                self.roles
            );
        }
        if split && matches!(self.store, StoreConfig::Embedded { .. }) {
            bail!(
                "roles {:?} split the platform across processes: that needs [store] type = \"postgres\" \
                 (the embedded store belongs to one process)",
                self.roles
            );
        }
        self.store.validate()?;
        self.gateway.validate().map_err(anyhow::Error::msg)?;
        crate::incidents::validate_playbooks(&self.playbooks)?;
        self.integrations.validate()?;
        self.taxii.validate()?;
        Ok(())
    }

    /// Whether this process runs `role`.
    pub fn runs(&self, role: Role) -> bool {
        self.roles.iter().any(|r| *r == Role::All || *r == role)
    }

    /// The embedded store's file.
    pub fn store_path(&self) -> PathBuf {
        self.data_dir.join("citysec.db")
    }

    /// The generated admin token's file.
    pub fn admin_token_path(&self) -> PathBuf {
        self.data_dir.join("admin.token")
    }
}

/// Interpolates every string value of a table (never keys or comments, so the
/// environment cannot inject TOML structure).
fn interpolate_table(
    table: &mut toml::Table,
    env: &HashMap<String, String>,
    path: &str,
) -> anyhow::Result<()> {
    for (key, value) in table.iter_mut() {
        let here = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        interpolate_value(value, env, &here)?;
    }
    Ok(())
}

fn interpolate_value(
    value: &mut toml::Value,
    env: &HashMap<String, String>,
    path: &str,
) -> anyhow::Result<()> {
    match value {
        toml::Value::String(s) => {
            *s = interpolate(s, env).with_context(|| format!("in {path}"))?;
        }
        toml::Value::Table(t) => interpolate_table(t, env, path)?,
        toml::Value::Array(items) => {
            for item in items {
                interpolate_value(item, env, path)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Expands `${VAR}` and `${VAR:-default}`; `$$` is a literal `$`. An unset variable
/// without a default is an error naming it.
pub fn interpolate(text: &str, env: &HashMap<String, String>) -> anyhow::Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body.find('}').context("unterminated ${...} in config")?;
            let expr = &body[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (expr, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                bail!("invalid variable name {name:?} in config");
            }
            match (env.get(name), default) {
                (Some(value), _) if !value.is_empty() || default.is_none() => out.push_str(value),
                (_, Some(default)) => out.push_str(default),
                (None, None) => bail!("environment variable {name} is not set (used in config)"),
                (Some(value), None) => out.push_str(value),
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

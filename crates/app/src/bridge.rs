//! Bridge mode wired into the platform: with `[ingest.bridge]`, a process with the ingest
//! role consumes the city's broker (`ingest::bridge`) instead of starting the embedded one.
//! Here: the password (from `password_file` or `password_env`, never the config file), the
//! default client id, and what response actions say when citysec does not run the broker.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context;
use ingest::bridge::{Bridge, BridgeConfig, BridgeHandle};
use ingest::mqtt::{DeviceDirectory, EventSink};

/// Why broker-side actions do not hold in bridge mode (for the incident timeline).
pub(crate) const NOT_ENFORCED: &str = "bridge mode: citysec consumes the city's broker and does not hold device connections, so this is not enforced at the broker; do it in the broker's own configuration (its password file, ACL or management API)";

/// Whether the platform runs in bridge mode (any role: a detect process executing response
/// actions needs to know too, so every process of a bridge deployment carries the section).
pub(crate) fn enabled(config: &crate::config::Config) -> bool {
    config.ingest.bridge.is_some()
}

/// Starts the bridge of `config` (already validated by `Config::load`). Rate limits that
/// incident response stored earlier cannot hold here: they are named in the log.
pub(crate) async fn start(
    config: &BridgeConfig,
    store: &dyn store::Store,
    directory: Arc<dyn DeviceDirectory>,
    sink: Arc<dyn EventSink>,
) -> anyhow::Result<BridgeHandle> {
    let env: HashMap<String, String> = std::env::vars().collect();
    let password = password(config, &env)?;
    let client_id = client_id(config);
    let limits = store
        .list_rate_limits(model::Timestamp::now())
        .await
        .context("failed to load the devices' rate limits")?;
    for limit in &limits {
        tracing::warn!(device_id = %limit.device_id, until = %limit.until.to_rfc3339(), "stored rate limit not enforced: {NOT_ENFORCED}");
    }
    Bridge::start(config, &client_id, password, directory, sink)
        .context("failed to start the mqtt bridge")
}

/// The lease group of broker-log reading: one ingest process at a time reads each broker's
/// log (`security_signals = "mosquitto_log"`), the shard being the broker's URL.
pub(crate) const LOG_READERS_GROUP: &str = "bridge-log";

/// Gives each broker's log to one ingest process of the deployment at a time: this process
/// reads the logs of the brokers whose lease it holds, and when a process dies the others
/// take its brokers over within about one lease (`[bus] lease_ms`). Without this, every
/// ingest process would read every log and each connect or refused login would become as
/// many security events as there are ingest processes; with only one reader, its death
/// would silence the signals. `read(i, on)` turns reading broker `i` (of `brokers`) on or
/// off ([`ingest::bridge::LogReaders::set`]). Runs until `shutdown` or the bus closes, then
/// leaves.
pub(crate) async fn share_log_reading(
    bus: Arc<dyn bus::Bus>,
    member: String,
    read: impl Fn(usize, bool) + Send,
    brokers: Vec<String>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    for i in 0..brokers.len() {
        read(i, false);
    }
    let mut ownership = loop {
        match bus.join(LOG_READERS_GROUP, &member, brokers.clone()).await {
            Ok(ownership) => break ownership,
            Err(bus::Error::Closed) => return,
            Err(e) => {
                tracing::warn!(error = %e, "failed to join the broker-log readers; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
                    _ = shutdown.changed() => return,
                }
            }
        }
    };
    let apply = |owned: &std::collections::BTreeSet<String>| {
        for (i, url) in brokers.iter().enumerate() {
            read(i, owned.contains(url));
        }
    };
    apply(&ownership.owned());
    loop {
        tokio::select! {
            changed = ownership.changed() => match changed {
                Some(owned) => apply(&owned),
                None => break,
            },
            _ = shutdown.changed() => break,
        }
    }
    for i in 0..brokers.len() {
        read(i, false);
    }
    ownership.leave().await;
}

/// The password from `password_file` (first line) or `password_env`.
pub(crate) fn password(
    config: &BridgeConfig,
    env: &HashMap<String, String>,
) -> anyhow::Result<Option<String>> {
    match (&config.password_file, &config.password_env) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path).with_context(|| {
                format!(
                    "failed to read ingest.bridge.password_file {}",
                    path.display()
                )
            })?;
            let line = text
                .lines()
                .next()
                .unwrap_or_default()
                .trim_end()
                .to_owned();
            anyhow::ensure!(
                !line.is_empty(),
                "ingest.bridge.password_file {} is empty",
                path.display()
            );
            Ok(Some(line))
        }
        (None, Some(var)) => Ok(Some(
            env.get(var)
                .filter(|v| !v.is_empty())
                .with_context(|| format!("ingest.bridge.password_env: ${var} is not set"))?
                .clone(),
        )),
        (None, None) => Ok(None),
    }
}

/// The configured client id, else `citysec-<hostname>`: stable across restarts, which the
/// persistent session needs (a process id would orphan the session at every restart).
pub(crate) fn client_id(config: &BridgeConfig) -> String {
    if let Some(id) = &config.client_id {
        return id.clone();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .unwrap_or_default();
    let host: String = host
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(64)
        .collect();
    if host.is_empty() {
        "citysec-ingest".to_owned()
    } else {
        format!("citysec-{host}")
    }
}

#[cfg(test)]
mod tests;

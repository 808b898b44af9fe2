//! Bridge mode: instead of the embedded broker, consume the city's own MQTT broker.
//!
//! [`Bridge::start`] opens one MQTT 3.1.1 connection per configured broker node (clean
//! session off, manual acknowledgements), subscribes the device topic filters as a shared
//! subscription (`$share/<group>/<filter>`, so several ingest processes split the stream),
//! and hands every message to the [`EventSink`](crate::mqtt::EventSink) through the pure
//! [`map::to_event`] (the same decoder as the embedded broker, so detection sees the same
//! events). A message is PUBACKed only after the sink took its event: an ingest process that
//! dies loses nothing, the broker delivers again.
//!
//! The broker's own security signals come from [`mosquitto`] (Mosquitto's `$SYS/broker/log`
//! topic, parsed into the same `SecurityEvent`s the embedded broker emits) when
//! [`SecuritySignals::MosquittoLog`] is configured. See `docs/bridge.md` for what each
//! broker gives and what bridge mode cannot do (rate limits, quarantine at the broker).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub(crate) mod client;
pub mod map;
pub mod mosquitto;

#[cfg(test)]
mod tests;

pub use self::client::{Bridge, BridgeHandle, BridgeMetrics, LogReaders};

/// Where the broker's connect and authentication signals come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecuritySignals {
    /// None: only device payloads are consumed.
    #[default]
    None,
    /// Mosquitto's log on `$SYS/broker/log/#` (`log_dest topic`, `connection_messages true`).
    /// Mosquitto 2.0 does not deliver `$SYS` topics to shared subscriptions, so every
    /// process that has this reads every line: give it to one ingest process per broker.
    MosquittoLog,
}

/// `[ingest.bridge]`: the city's broker to consume instead of running the embedded one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BridgeConfig {
    /// Broker URLs, `mqtt://host:port` or `mqtts://host:port`; several for a cluster's nodes
    /// (one connection each; commands go out through the first connected one).
    pub brokers: Vec<String>,
    /// CA certificates (PEM) the `mqtts://` brokers' certificates must chain to.
    pub ca_file: Option<PathBuf>,
    /// The MQTT client id, unique per ingest process and stable across its restarts (the
    /// broker keeps its persistent session under it). Default `citysec-<hostname>`; a second
    /// broker connection appends `-<n>`.
    pub client_id: Option<String>,
    /// The user the bridge logs in as.
    pub username: Option<String>,
    /// A file holding the password (its first line).
    pub password_file: Option<PathBuf>,
    /// The environment variable holding the password.
    pub password_env: Option<String>,
    /// The shared subscription group: filters are subscribed as `$share/<group>/<filter>`.
    /// Empty: plain subscriptions (one consumer only, or every consumer gets every message).
    pub group: String,
    /// The device topic filters; the default is the whole `city/#` tree.
    pub topics: Vec<String>,
    /// The subscription QoS; only 1 is accepted (at-least-once, acknowledged after the bus).
    pub qos: u8,
    /// The broker's security signals.
    pub security_signals: SecuritySignals,
    /// MQTT keep-alive, in seconds.
    pub keep_alive_s: u16,
    /// The longest wait between reconnection attempts (the wait doubles from 100 ms).
    pub reconnect_max_ms: u64,
    /// The largest incoming MQTT packet accepted, in bytes. A larger one drops the connection
    /// before its PUBACK and the broker sends it again: cap the broker's own packet size at
    /// or below this (Mosquitto: `max_packet_size`).
    pub max_packet_bytes: usize,
    /// Messages handed to the bus in one batch at most.
    pub batch_max: usize,
}

impl Default for BridgeConfig {
    fn default() -> BridgeConfig {
        BridgeConfig {
            brokers: vec!["mqtt://127.0.0.1:1883".to_owned()],
            ca_file: None,
            client_id: None,
            username: None,
            password_file: None,
            password_env: None,
            group: "citysec".to_owned(),
            topics: vec!["city/#".to_owned()],
            qos: 1,
            security_signals: SecuritySignals::None,
            keep_alive_s: 30,
            reconnect_max_ms: 10_000,
            max_packet_bytes: 256 * 1024,
            batch_max: 256,
        }
    }
}

/// A parsed broker URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl BrokerUrl {
    /// Parses `mqtt://host[:port]` (default 1883) or `mqtts://host[:port]` (default 8883);
    /// `[v6]:port` for IPv6 addresses. No user info, path or query.
    pub fn parse(url: &str) -> Result<BrokerUrl, String> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("mqtt://") {
            (false, rest)
        } else if let Some(rest) = url.strip_prefix("mqtts://") {
            (true, rest)
        } else {
            return Err(format!("{url:?} must start with mqtt:// or mqtts://"));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) || rest.is_empty() {
            return Err(format!(
                "{url:?} must be scheme://host[:port] (no user, path or query; the password comes from password_file or password_env)"
            ));
        }
        let default_port = if tls { 8883 } else { 1883 };
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("{url:?}: unclosed ["))?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| format!("{url:?}: bad port"))?,
                None if after.is_empty() => default_port,
                None => return Err(format!("{url:?}: bad port")),
            };
            (host.to_owned(), port)
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (
                    h.to_owned(),
                    p.parse().map_err(|_| format!("{url:?}: bad port"))?,
                ),
                None => (rest.to_owned(), default_port),
            }
        };
        if host.is_empty() || port == 0 {
            return Err(format!("{url:?}: missing host or port"));
        }
        Ok(BrokerUrl { tls, host, port })
    }
}

impl BridgeConfig {
    /// Checks the section; the message names the key (`ingest.bridge.<key>`).
    pub fn validate(&self) -> Result<(), String> {
        if self.brokers.is_empty() {
            return Err("ingest.bridge.brokers must name at least one broker".to_owned());
        }
        for url in &self.brokers {
            let parsed =
                BrokerUrl::parse(url).map_err(|e| format!("ingest.bridge.brokers: {e}"))?;
            if parsed.tls && self.ca_file.is_none() {
                return Err(format!(
                    "ingest.bridge.ca_file is required for {url} (the CA the broker's certificate chains to)"
                ));
            }
        }
        if let Some(id) = &self.client_id
            && (id.is_empty() || id.len() > 200 || id.contains(['+', '#', '/']))
        {
            return Err(
                "ingest.bridge.client_id must be 1 to 200 characters without + # /".to_owned(),
            );
        }
        if self.password_file.is_some() && self.password_env.is_some() {
            return Err(
                "ingest.bridge.password_file and ingest.bridge.password_env are exclusive"
                    .to_owned(),
            );
        }
        if (self.password_file.is_some() || self.password_env.is_some()) && self.username.is_none()
        {
            return Err("ingest.bridge.username is required with a password".to_owned());
        }
        if self.group.contains(['+', '#', '/']) {
            return Err("ingest.bridge.group must not contain + # /".to_owned());
        }
        if self.topics.is_empty() {
            return Err("ingest.bridge.topics must name at least one filter".to_owned());
        }
        for t in &self.topics {
            if t.is_empty() || t.starts_with('$') || !valid_filter(t) {
                return Err(format!(
                    "ingest.bridge.topics: {t:?} is not a device topic filter (e.g. city/# or city/water/#)"
                ));
            }
        }
        if self.qos != 1 {
            return Err(
                "ingest.bridge.qos must be 1 (at-least-once, acknowledged after the bus took the event)"
                    .to_owned(),
            );
        }
        if self.keep_alive_s < 5 {
            return Err("ingest.bridge.keep_alive_s must be at least 5".to_owned());
        }
        if self.reconnect_max_ms < 100 {
            return Err("ingest.bridge.reconnect_max_ms must be at least 100".to_owned());
        }
        if !(1024..=256 * 1024 * 1024).contains(&self.max_packet_bytes) {
            return Err(
                "ingest.bridge.max_packet_bytes must be between 1024 and 268435456".to_owned(),
            );
        }
        if !(1..=4096).contains(&self.batch_max) {
            return Err("ingest.bridge.batch_max must be between 1 and 4096".to_owned());
        }
        Ok(())
    }

    /// The filters as subscribed: `$share/<group>/<filter>`, or plain without a group.
    pub fn subscriptions(&self) -> Vec<String> {
        self.topics
            .iter()
            .map(|t| {
                if self.group.is_empty() {
                    t.clone()
                } else {
                    format!("$share/{}/{t}", self.group)
                }
            })
            .collect()
    }
}

/// An MQTT topic filter: `#` only as the last level, `+` and `#` only as whole levels.
fn valid_filter(filter: &str) -> bool {
    let levels: Vec<&str> = filter.split('/').collect();
    levels.iter().enumerate().all(|(i, l)| match *l {
        "#" => i == levels.len() - 1,
        "+" => true,
        l => !l.contains(['+', '#']),
    })
}

//! `[ingest.mqtt]`: the embedded broker's configuration section.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// What to do when a client id that already has a live session connects again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientIdConflict {
    /// Refuse the newcomer when it comes from another address; replace the old session when
    /// it comes from the same address (a device reconnecting after a silent drop).
    /// Both cases are reported as `client_id_takeover`.
    #[default]
    Refuse,
    /// Always replace the old session (the MQTT default), reported as `client_id_takeover`.
    Replace,
}

/// The embedded MQTT broker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    /// Plain-TCP listener address, e.g. `127.0.0.1:1883`.
    pub listen: String,
    /// TLS listener address, e.g. `0.0.0.0:8883`. With `tls_cert` and `tls_key` it serves
    /// those; without them the platform generates a city CA into `<data_dir>/pki/` on first
    /// start, issues the broker a certificate from it at every start, and asks clients for
    /// certificates signed by that CA (`client_ca` defaults to it).
    pub tls_listen: Option<String>,
    /// The broker's certificate chain (PEM).
    pub tls_cert: Option<PathBuf>,
    /// The broker's private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// CA certificates (PEM) that device client certificates must chain to; without it (and
    /// with certificates of your own) the TLS listener accepts password clients only.
    pub client_ca: Option<PathBuf>,
    /// The largest PUBLISH payload accepted, in bytes; larger ones are refused and reported.
    pub max_payload_bytes: usize,
    /// The most simultaneous connections; more are refused and reported.
    pub max_connections: usize,
    /// A new connection must send CONNECT within this many milliseconds.
    pub connect_timeout_ms: u64,
    /// The longest keep-alive a client may ask for, in seconds (0 from a client means this).
    pub max_keep_alive_s: u16,
    /// New connections allowed per source IP per second (token bucket; bursts up to twice this).
    pub connect_rate_per_ip: u32,
    /// Messages queued for delivery to one client before further ones are dropped (counted).
    pub outbound_queue: usize,
    /// What to do with a second connection using a client id that is already connected.
    pub on_client_id_conflict: ClientIdConflict,
    /// Retained messages kept at most; further ones are dropped (counted).
    pub max_retained: usize,
}

impl Default for MqttConfig {
    fn default() -> MqttConfig {
        MqttConfig {
            listen: "127.0.0.1:1883".to_owned(),
            tls_listen: None,
            tls_cert: None,
            tls_key: None,
            client_ca: None,
            max_payload_bytes: 65536,
            max_connections: 100_000,
            connect_timeout_ms: 10_000,
            max_keep_alive_s: 600,
            connect_rate_per_ip: 500,
            outbound_queue: 256,
            on_client_id_conflict: ClientIdConflict::Refuse,
            max_retained: 10_000,
        }
    }
}

//! The embedded MQTT broker devices connect to.
//!
//! [`Broker::start`] binds the listeners; each connection runs the sans-IO
//! [`session::Connection`] state machine (authentication, topic ACL, QoS, events) inside a
//! thin tokio task; payloads become telemetry and state events through the pure
//! [`decode`] module; everything is handed to the [`EventSink`] that `app` provides.
//! See `crates/ingest/ARCHITECTURE.md` for why we build on rumqttc's codec.

use std::path::PathBuf;
use std::sync::Arc;

mod broker;
pub mod config;
pub mod decode;
pub mod limit;
pub mod metrics;
pub mod proto;
pub mod session;
mod tls;

#[cfg(test)]
mod tests;

pub use self::broker::{Broker, BrokerHandle, Publisher};
pub use self::config::{ClientIdConflict, MqttConfig};
pub use self::limit::DeviceLimit;
pub use self::metrics::{BrokerMetrics, MetricsSnapshot};

/// Looks devices up for authentication; `app` implements it over the registry.
/// A revoked device has status `Revoked`.
pub trait DeviceDirectory: Send + Sync + 'static {
    fn get(&self, id: &str) -> Option<Arc<model::Device>>;
}

/// Where the broker's events go; `app` puts them on the bus.
#[async_trait::async_trait]
pub trait EventSink: Send + Sync + 'static {
    /// Takes one batch (one socket read burst of one connection). QoS 1 acknowledgements
    /// are sent only after this returned `Ok`.
    async fn send(&self, events: Vec<model::Event>) -> Result<(), SinkClosed>;

    /// Whether the sink takes new work right now. `false` while the platform cannot keep
    /// it (its bus is unreachable and the bounded buffer in front of it is full): the broker
    /// then refuses publishes instead of acknowledging them (see
    /// `session::Connection::set_refusing`). What was admitted is still sent.
    fn admits(&self) -> bool {
        true
    }
}

/// The sink no longer accepts events (the platform is shutting down).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("event sink closed")]
pub struct SinkClosed;

/// Errors starting the broker.
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("tls: {0}")]
    Tls(String),
    #[error("{0}")]
    Config(String),
}

//! citysec ingest adapters: the embedded MQTT broker ([`mqtt`]) that devices connect to, the
//! flow collector ([`flow`]: NetFlow v5/v9, IPFIX, JSON lines), and the device
//! [`credentials`] helpers shared with the CLI and the API, and [`bridge`] mode (consuming
//! the city's own MQTT broker instead of running the embedded one).
//!
//! This crate depends on `model` only; the composition layer (`app`) hands it a
//! [`mqtt::DeviceDirectory`], a [`flow::AddressBook`] and an [`mqtt::EventSink`].

pub mod bridge;
pub mod credentials;
pub mod flow;
pub mod mqtt;

pub use crate::mqtt::{
    Broker, BrokerHandle, BrokerMetrics, DeviceDirectory, EventSink, MqttConfig, MqttError,
    SinkClosed,
};

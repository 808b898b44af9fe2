//! citysec ingest adapters: the embedded MQTT broker ([`mqtt`]) that devices connect to, and
//! the device [`credentials`] helpers shared with the CLI and the API.
//!
//! This crate depends on `model` only; the composition layer (`app`) hands it a
//! [`mqtt::DeviceDirectory`] and an [`mqtt::EventSink`].

pub mod credentials;
pub mod mqtt;

pub use crate::mqtt::{
    Broker, BrokerHandle, BrokerMetrics, DeviceDirectory, EventSink, MqttConfig, MqttError,
    SinkClosed,
};

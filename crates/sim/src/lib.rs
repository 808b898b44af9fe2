//! The citysec city simulator and load generator.
//!
//! It plays a city's devices over real MQTT against any broker (the platform's embedded
//! one or Mosquitto): a reproducible [`population::Population`] with per-device
//! credentials, class-specific [`telemetry`] at realistic cadences (JSON and SenML),
//! actuators that answer commands, and a replayable schedule of [`attacks`].
//!
//! ```text
//! let population = Arc::new(Population::generate(2_000, 7));
//! let stats = Arc::new(SimStats::default());
//! sim::run(SimConfig::new(broker, population), stats.clone(), shutdown_rx).await?;
//! ```
//!
//! The bulk publishers write MQTT packets straight onto `tokio` sockets with rumqttc's
//! codec (no client event loop), so the simulator measures a broker rather than itself.
//! Each device is one task holding one connection (about 2 KB of memory when idle).
//!
//! `examples/load.rs` is the benchmark driver: it prints the publish rate and this
//! process's CPU and memory, and can run a null broker (`--sink PORT`) to measure the
//! generator's own ceiling.

pub mod attacks;
pub mod background;
pub mod flow;
pub mod live;
pub mod mqtt;
pub mod population;
mod runner;
pub mod scenario;
pub mod soak;
mod stats;
pub mod telemetry;
pub mod zones;

pub use crate::runner::{Inject, SimConfig, SimHandle, device_source, device_version, run, spawn};
pub use crate::stats::{SimSnapshot, SimStats};

#[cfg(test)]
mod catalogue_tests;
#[cfg(test)]
mod tests;

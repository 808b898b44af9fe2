//! Composition: the configuration, and the wiring that turns crates into a running
//! platform (embedded broker -> bus -> detection and store -> HTTP API), with an orderly
//! shutdown. Everything here is glue; the logic lives in the crates it wires.

pub mod advisories;
pub mod audit;
mod bridge;
pub mod city_pki;
pub mod config;
mod console;
pub mod detect;
pub mod directory;
pub mod firmware;
mod flows;
pub mod gateway;
pub mod incidents;
pub mod integrations;
pub mod intel;
pub mod inventory;
mod metrics;
pub mod outage;
pub mod partitions;
pub mod platform;
pub mod readiness;
pub mod replay;
pub mod reports;
pub mod response;
pub mod tls;
pub mod token;
pub mod users;

pub use crate::config::Config;
pub use crate::platform::Platform;

#[cfg(test)]
mod tests;

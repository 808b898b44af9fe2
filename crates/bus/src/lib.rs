//! The event bus: the [`Bus`] trait and the in-process backend ([`InProcessBus`]).
//!
//! Producers publish batches of [`Message`]s to a subject (`obs.telemetry`, `obs.security`,
//! `alerts`, ...); consumers subscribe to subject patterns as a named group. Within a group,
//! each message goes to one member; every group sees every message. Publishing applies
//! backpressure: a full group makes `publish` wait rather than drop.
//! With feature `nats`, [`NatsBus`] implements the same trait on NATS JetStream, with
//! subjects partitioned by device and at-least-once delivery (see `nats.rs`).

use std::sync::Arc;

use async_trait::async_trait;
use model::{Alert, Event};

mod inprocess;
#[cfg(feature = "nats")]
mod nats;
#[cfg(test)]
mod tests;
#[cfg(any(test, feature = "testsuite"))]
pub mod testsuite;

pub use crate::inprocess::InProcessBus;
#[cfg(feature = "nats")]
pub use crate::nats::{NatsBus, NatsConfig, device_of, partition_of};

/// What travels on the bus.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Event(Event),
    Alert(Alert),
}

impl Message {
    /// The subject this message is published to.
    pub fn subject(&self) -> &'static str {
        match self {
            Message::Event(event) => event.subject(),
            Message::Alert(_) => "alerts",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("bus closed")]
    Closed,
    #[error("bus unavailable: {0}")]
    Unavailable(String),
    #[error("invalid subject pattern {0:?}")]
    InvalidPattern(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A consumer's handle.
#[async_trait]
pub trait Subscription: Send {
    /// The next batch of messages, at most `max` long; `None` once the bus is closed and
    /// drained.
    async fn next_batch(&mut self, max: usize) -> Option<Vec<Arc<Message>>>;
}

#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Publishes messages; returns once every subscribed group has accepted them.
    async fn publish(&self, messages: Vec<Message>) -> Result<()>;
    /// Subscribes group `group` to subjects matching `pattern` (`obs.*`, `alerts`, `>` for
    /// everything).
    async fn subscribe(&self, pattern: &str, group: &str) -> Result<Box<dyn Subscription>>;
    /// Stops accepting messages; subscribers drain what was published and then end.
    async fn close(&self);
}

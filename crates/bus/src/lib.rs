//! The event bus: the [`Bus`] trait and the in-process backend ([`InProcessBus`]).
//!
//! Producers publish batches of [`Message`]s to a subject (`obs.telemetry`, `obs.security`,
//! `alerts`, ...); consumers subscribe to subject patterns as a named group. Within a group,
//! each message goes to one member; every group sees every message. Publishing applies
//! backpressure: a full group makes `publish` wait rather than drop.
//! With feature `nats`, [`NatsBus`] implements the same trait on NATS JetStream, with
//! subjects partitioned by device and at-least-once delivery (see `nats.rs`).
//!
//! Partition ownership: [`Bus::join`] makes a process a member of an ownership group that
//! shares a set of shards (the bus partitions, or one singleton shard); the [`Ownership`]
//! handle says which shards this member owns and reports every change. The owner of a
//! partition reads it with [`Bus::subscribe_partition`], which takes over the partition's
//! consumer: what the previous owner had not acknowledged is delivered again at once.

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use model::{Alert, Event};

mod inprocess;
#[cfg(feature = "nats")]
mod lease;
#[cfg(feature = "nats")]
mod nats;
#[cfg(test)]
mod tests;
#[cfg(any(test, feature = "testsuite"))]
pub mod testsuite;

pub use crate::inprocess::InProcessBus;
#[cfg(feature = "nats")]
pub use crate::nats::{NatsBus, NatsConfig};

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

/// The partition of a device id: FNV-1a (64-bit) modulo `partitions`. Stable across
/// processes, platforms and releases, because every process must agree on it.
pub fn partition_of(device_id: &str, partitions: u32) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in device_id.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % u64::from(partitions.max(1))) as u32
}

/// The device a message belongs to ("" for none).
pub fn device_of(message: &Message) -> &str {
    match message {
        Message::Event(e) => e.device_id.as_ref().map_or("", |d| d.as_str()),
        Message::Alert(a) => a.device_id.as_ref().map_or("", |d| d.as_str()),
    }
}

/// A member's share of an ownership group (see [`Bus::join`]).
///
/// Dropping the handle without [`Ownership::leave`] is what a crash looks like: on NATS the
/// member stops renewing its leases and the others take its shards once they expire.
#[async_trait]
pub trait Ownership: Send {
    /// This member's id, as given to `join`.
    fn member(&self) -> &str;
    /// The shards this member owns now.
    fn owned(&self) -> BTreeSet<String>;
    /// Waits until the owned set changes and returns the new one; `None` once the bus is
    /// closed. Cancel-safe. Calling it again confirms that the previous change was acted
    /// upon: shards given up for rebalancing are handed to another member only then, so
    /// stop processing a shard before asking again. A shard lost because its lease could
    /// not be renewed is reported before any other member can take it.
    async fn changed(&mut self) -> Option<BTreeSet<String>>;
    /// Leaves the group: every shard is released at once for the others to take.
    async fn leave(self: Box<Self>);
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
    /// How many partitions subjects are spread over (`partition_of` the device id); 1 in
    /// process.
    fn partitions(&self) -> u32 {
        1
    }
    /// Subscribes group `group` to `pattern` in one partition (`Some(p)`, `p <
    /// partitions()`), or in all of them (`None`), as the one owner of that slice: the
    /// group's consumer for the slice is taken over, so whatever an earlier subscriber of
    /// the same slice had taken and not acknowledged is delivered to this one at once, and
    /// the earlier subscription ends. Call it only for a slice this member owns
    /// ([`Bus::join`]). Patterns ending in `>` cannot name a partition.
    async fn subscribe_partition(
        &self,
        pattern: &str,
        group: &str,
        partition: Option<u32>,
    ) -> Result<Box<dyn Subscription>>;
    /// The messages matching `pattern` in one partition (`Some(p)`) or in all (`None`)
    /// that the bus still holds because some group has not acknowledged them yet, oldest
    /// first, at most `limit`. A new owner of a partition replays them besides what the
    /// store holds: the old owner may have processed (and acknowledged) messages that the
    /// store's group had not written yet. Reading them acknowledges nothing and takes
    /// nothing from any group. The in-process bus holds nothing beyond its process: none.
    async fn retained(
        &self,
        pattern: &str,
        partition: Option<u32>,
        limit: usize,
    ) -> Result<Vec<Message>> {
        let _ = (pattern, partition, limit);
        Ok(Vec::new())
    }
    /// Joins ownership group `group` as `member`, sharing `shards` with the other members:
    /// each shard is owned by at most one member at a time, and every shard by some member
    /// while any is alive; shares are balanced (at most `ceil(shards / members)` each).
    /// Returns once this member has taken its first share.
    async fn join(
        &self,
        group: &str,
        member: &str,
        shards: Vec<String>,
    ) -> Result<Box<dyn Ownership>>;
    /// Whether the backend reaches its server right now (the in-process bus always does).
    /// Cheap; what readiness and the ingest side's outage buffer read.
    fn is_available(&self) -> bool {
        true
    }
}

//! The ports the gateway drives, which `app` implements: the registry (who a device is),
//! the actuator delivery path (MQTT through the embedded broker), the audit log and the
//! command ledger (the store), the advisory check (authorised public warnings), and the
//! announcer (authorised commands as events on the bus, which detection reads).

use async_trait::async_trait;
use model::{DeviceId, Event, Timestamp};
use serde::{Deserialize, Serialize};

use crate::command::{Command, Target};

/// A port failed (the store is unreachable, the broker is shutting down).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PortError(pub String);

/// One audit log entry as the gateway writes it (the store chains it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditNote {
    pub ts: Timestamp,
    pub actor: String,
    pub action: String,
    pub subject: Option<String>,
    pub outcome: String,
    pub detail: serde_json::Value,
}

/// Who a device is. In memory in `app` (the broker's directory), so cancels can still be
/// addressed when the store is down.
pub trait DeviceLookup: Send + Sync + 'static {
    fn target(&self, id: &DeviceId) -> Option<Target>;
}

/// Delivers signed bytes to a device's cmd topic.
#[async_trait]
pub trait Actuator: Send + Sync + 'static {
    /// Returns whether a live session of the device took the message.
    async fn deliver(&self, target: &Target, payload: Vec<u8>) -> Result<bool, PortError>;
}

/// The append-only audit log.
#[async_trait]
pub trait AuditLog: Send + Sync + 'static {
    /// Appends in order; durable when this returns `Ok`.
    async fn record(&self, notes: Vec<AuditNote>) -> Result<(), PortError>;
}

/// Durable counters and command records.
#[async_trait]
pub trait CommandLedger: Send + Sync + 'static {
    /// Advances each device's counter to `max(last + 1, floor)`; durable when it returns.
    async fn next_counters(&self, devices: &[DeviceId], floor: u64) -> Result<Vec<u64>, PortError>;
    async fn save(&self, command: &Command) -> Result<(), PortError>;
    async fn load(&self, id: &str) -> Result<Option<Command>, PortError>;
}

/// Whether an advisory is an authorised public warning a siren may sound under.
pub trait AdvisoryCheck: Send + Sync + 'static {
    fn is_authorised_warning(&self, advisory_id: &str) -> bool;
}

/// Publishes authorised commands as `EventKind::Command` events.
#[async_trait]
pub trait Announcer: Send + Sync + 'static {
    /// Returns once detection can see the events. For a cancel (`cancel`), it must return
    /// within a bounded time even when the bus cannot take them yet (the store behind it is
    /// down): the announcement then follows the delivery, which must not wait.
    async fn commanded(&self, events: Vec<Event>, cancel: bool);
}

//! Persistence for citysec: the [`Store`] trait every backend implements, the embedded
//! backend ([`EmbeddedStore`], one SQLite file in the data directory) and, with feature
//! `postgres`, the PostgreSQL backend (`PgStore`). Callers hold an `Arc<dyn Store>` and
//! never know which.

use async_trait::async_trait;
use model::{
    Alert, AlertId, Device, DeviceClass, DeviceId, DeviceStatus, ErrorCode, Event, Sector,
    Timestamp,
};
use serde::{Deserialize, Serialize};

mod advisory;
pub mod audit;
pub mod console;
mod detect;
mod embedded;
pub mod intel;
pub mod limits;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(test)]
mod tests;
#[cfg(any(test, feature = "testsuite"))]
pub mod testsuite;
#[cfg(any(test, feature = "testsuite"))]
pub mod testsuite_users;
mod users;

pub use crate::advisory::{
    AdvisoryQuery, AdvisoryStore, ReadinessRecord, ReadinessStore, ReportQuery,
};
pub use crate::audit::{AuditStore, GatewayStore};
pub use crate::console::{AlertAck, ConsoleStore};
pub use crate::detect::{DetectStore, LearnedState, LocalIndicator, Suppression};
pub use crate::embedded::{EmbeddedStore, MAX_LIMIT};
pub use crate::intel::IntelStore;
pub use crate::limits::{RateLimit, RateLimitStore};
#[cfg(feature = "postgres")]
pub use crate::postgres::{PgConfig, PgStore};
pub use crate::users::{
    IncidentQuery, IncidentStore, User, UserStore, UserToken, UserTokenKind, severity_rank,
};

/// Errors a store reports.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what} not found")]
    NotFound { what: String },
    #[error("{what} already exists")]
    Conflict { what: String },
    #[error("invalid input: {0}")]
    Invalid(String),
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store failure: {0}")]
    Internal(String),
}

impl Error {
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::NotFound { .. } => ErrorCode::NotFound,
            Error::Conflict { .. } => ErrorCode::Conflict,
            Error::Invalid(_) => ErrorCode::Invalid,
            Error::Unavailable(_) => ErrorCode::Unavailable,
            Error::Internal(_) => ErrorCode::Internal,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which devices to list. Pages are keyed by device id: pass the last id of one page as
/// `after` to get the next.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DeviceQuery {
    pub sector: Option<Sector>,
    pub class: Option<DeviceClass>,
    pub zone: Option<String>,
    pub status: Option<DeviceStatus>,
    pub after: Option<DeviceId>,
    /// At most this many (the backend caps it at 10,000).
    pub limit: usize,
}

/// Which events to list, newest first.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EventQuery {
    pub device_id: Option<DeviceId>,
    /// `telemetry`, `state`, `security` or `command` (see `Event::kind_name`).
    pub kind: Option<String>,
    /// Only events strictly older than this (for paging backwards).
    pub before: Option<Timestamp>,
    pub since: Option<Timestamp>,
    pub limit: usize,
}

/// Which alerts to list, newest first.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AlertQuery {
    pub device_id: Option<DeviceId>,
    pub rule: Option<String>,
    pub since: Option<Timestamp>,
    pub before: Option<Timestamp>,
    pub limit: usize,
}

/// An API token as stored: only the SHA-256 of the token is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiToken {
    /// Lowercase hex SHA-256 of the token text.
    pub sha256: String,
    pub name: String,
    /// `admin`, `operator`, `analyst` or `viewer`.
    pub role: String,
    pub created_at: Timestamp,
}

/// Counts for status displays.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreStats {
    pub devices: u64,
    pub events: u64,
    pub alerts: u64,
}

/// Durable state of the platform. Every method is safe to call from many tasks.
#[async_trait]
pub trait Store:
    AuditStore
    + DetectStore
    + GatewayStore
    + AdvisoryStore
    + ReadinessStore
    + UserStore
    + IncidentStore
    + IntelStore
    + RateLimitStore
    + ConsoleStore
    + Send
    + Sync
    + 'static
{
    /// Adds a device; `Conflict` if the id exists.
    async fn insert_device(&self, device: &Device) -> Result<()>;
    /// Adds or replaces devices in one transaction (imports).
    async fn upsert_devices(&self, devices: &[Device]) -> Result<()>;
    async fn get_device(&self, id: &DeviceId) -> Result<Option<Device>>;
    async fn list_devices(&self, query: &DeviceQuery) -> Result<Vec<Device>>;
    /// Changes a device's status; `NotFound` if it does not exist.
    async fn set_device_status(&self, id: &DeviceId, status: DeviceStatus) -> Result<()>;

    /// Appends events in one transaction. When this returns, the events are durable.
    async fn append_events(&self, events: &[Event]) -> Result<()>;
    async fn list_events(&self, query: &EventQuery) -> Result<Vec<Event>>;
    /// Deletes events older than `cutoff`; returns how many.
    async fn prune_events(&self, cutoff: Timestamp) -> Result<u64>;

    /// Inserts alerts, or replaces an alert with the same id (a merged repeat).
    async fn upsert_alerts(&self, alerts: &[Alert]) -> Result<()>;
    async fn get_alert(&self, id: &AlertId) -> Result<Option<Alert>>;
    async fn list_alerts(&self, query: &AlertQuery) -> Result<Vec<Alert>>;

    async fn insert_token(&self, token: &ApiToken) -> Result<()>;
    async fn find_token(&self, sha256: &str) -> Result<Option<ApiToken>>;

    async fn stats(&self) -> Result<StoreStats>;
    /// A cheap round trip to the backend: `Unavailable` while it cannot be reached (what
    /// readiness probes; the embedded file is always there).
    async fn ping(&self) -> Result<()> {
        Ok(())
    }
    /// Makes everything written so far durable and releases resources.
    async fn close(&self) -> Result<()>;
}

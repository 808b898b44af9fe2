//! Per-device rate limits that incident response put on devices at the broker, kept so a
//! restart applies them again until they lapse.

use async_trait::async_trait;
use model::{DeviceId, Timestamp};
use serde::{Deserialize, Serialize};

use crate::Result;

/// A device's publish limit: a token bucket refilled at `messages_per_s`, holding `burst`
/// messages, until `until`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RateLimit {
    pub device_id: DeviceId,
    pub messages_per_s: f64,
    pub burst: u32,
    pub until: Timestamp,
    /// Who set it (a user name or `playbook:<name>`), and why (the incident).
    pub set_by: String,
    #[serde(default)]
    pub reason: String,
    pub set_at: Timestamp,
}

/// Durable rate limits.
#[async_trait]
pub trait RateLimitStore: Send + Sync + 'static {
    /// Adds or replaces the limit of `limit.device_id`.
    async fn put_rate_limit(&self, limit: &RateLimit) -> Result<()>;
    /// Removes a device's limit; returns whether there was one.
    async fn delete_rate_limit(&self, device_id: &DeviceId) -> Result<bool>;
    /// The limits that still hold at `now` (lapsed ones are deleted), by device id.
    async fn list_rate_limits(&self, now: Timestamp) -> Result<Vec<RateLimit>>;
}

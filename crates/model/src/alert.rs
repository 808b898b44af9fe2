//! Alerts: what detection concludes, with the evidence that led to it.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{DeviceId, Timestamp};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An alert id: deterministic from the rule, its key and the first event's time, so a
/// replayed timeline yields the same ids.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AlertId(pub String);

impl fmt::Display for AlertId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One event that supports an alert, summarised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    pub ts: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<DeviceId>,
    /// A one-line description, e.g. `auth_failure from 10.0.0.7:51234 (bad password)`.
    pub summary: String,
}

/// A detection result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub id: AlertId,
    /// The rule that fired, e.g. `auth.brute_force.device`.
    pub rule: String,
    /// What the rule keyed this alert on (a device id, a source address, a device and a
    /// destination, ...): with `rule`, it says which repeats merge into this alert and what
    /// `learn` and `mute` apply to.
    #[serde(default)]
    pub key: String,
    pub severity: Severity,
    /// When the rule's condition first held.
    pub ts: Timestamp,
    /// When the alert last absorbed a repeat.
    pub last_ts: Timestamp,
    /// How many times the condition held; repeats within the merge window are folded in.
    pub count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<DeviceId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// The source the alert is about, when it is about a network peer rather than a device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub title: String,
    /// A plain-language explanation for the analyst.
    pub explanation: String,
    pub evidence: Vec<Evidence>,
}

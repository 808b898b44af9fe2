//! Incidents: alerts grouped into one case a security team works from first alert to
//! closure, with its lifecycle, owner, notes, response actions and a timeline of all of it.
//!
//! The `incident` engine builds and advances these; `store` keeps them as JSON documents
//! (the serialised form is versioned: new fields get `#[serde(default)]`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{AlertId, DeviceId, Severity, Timestamp};

/// An incident id: `INC-` and a sequence number, e.g. `INC-000042`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct IncidentId(pub String);

impl IncidentId {
    pub fn from_seq(seq: u64) -> IncidentId {
        IncidentId(format!("INC-{seq:06}"))
    }

    /// The sequence number, when the id has the `INC-<digits>` form.
    pub fn seq(&self) -> Option<u64> {
        self.0.strip_prefix("INC-")?.parse().ok()
    }
}

impl fmt::Display for IncidentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where an incident is in its lifecycle; states only move forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentState {
    /// Opened by correlation; nobody has looked at it yet.
    New,
    /// Someone acknowledged it and is working it.
    Triaged,
    /// The threat can no longer spread (device quarantined, credentials revoked, ...).
    Contained,
    /// The cause is removed and service restored.
    Resolved,
    /// Reviewed and closed; nothing more is added.
    Closed,
}

impl IncidentState {
    pub const ALL: [IncidentState; 5] = [
        IncidentState::New,
        IncidentState::Triaged,
        IncidentState::Contained,
        IncidentState::Resolved,
        IncidentState::Closed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            IncidentState::New => "new",
            IncidentState::Triaged => "triaged",
            IncidentState::Contained => "contained",
            IncidentState::Resolved => "resolved",
            IncidentState::Closed => "closed",
        }
    }

    /// Whether the incident is confirmed: a person has triaged it (or moved it further).
    /// A confirmed incident's sightings and indicators are shared with partners under its
    /// [`Tlp`]; a new one is only a correlation nobody has looked at yet.
    pub fn is_confirmed(self) -> bool {
        self >= IncidentState::Triaged
    }

    /// Whether new alerts may still join the incident.
    pub fn is_open(self) -> bool {
        matches!(
            self,
            IncidentState::New | IncidentState::Triaged | IncidentState::Contained
        )
    }
}

impl fmt::Display for IncidentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for IncidentState {
    type Err = String;
    fn from_str(s: &str) -> Result<IncidentState, String> {
        IncidentState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown incident state {s:?} (expected one of: new, triaged, contained, resolved, closed)"
                )
            })
    }
}

/// The Traffic Light Protocol 2.0 level an incident's shared intelligence carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Tlp {
    /// `TLP:CLEAR`: anyone.
    #[serde(rename = "clear")]
    Clear,
    /// `TLP:GREEN`: the community.
    #[serde(rename = "green")]
    Green,
    /// `TLP:AMBER`: partners cleared for AMBER and their organisations.
    #[serde(rename = "amber")]
    Amber,
    /// `TLP:AMBER+STRICT`: partners cleared for AMBER+STRICT only.
    #[serde(rename = "amber+strict")]
    AmberStrict,
    /// `TLP:RED`: never leaves the city.
    #[serde(rename = "red")]
    Red,
}

impl Tlp {
    pub const ALL: [Tlp; 5] = [
        Tlp::Clear,
        Tlp::Green,
        Tlp::Amber,
        Tlp::AmberStrict,
        Tlp::Red,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Tlp::Clear => "clear",
            Tlp::Green => "green",
            Tlp::Amber => "amber",
            Tlp::AmberStrict => "amber+strict",
            Tlp::Red => "red",
        }
    }

    /// The level of incidents stored before incidents carried one: nothing leaves until
    /// someone chooses a level.
    pub fn legacy() -> Tlp {
        Tlp::Red
    }
}

impl fmt::Display for Tlp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Tlp {
    type Err = String;
    /// `amber`, `AMBER`, `TLP:AMBER`, `amber+strict`, ... (`white` is TLP 1.0 for `clear`).
    fn from_str(s: &str) -> Result<Tlp, String> {
        let lower = s.trim().to_ascii_lowercase();
        let name = lower.strip_prefix("tlp:").unwrap_or(&lower);
        if name == "white" {
            return Ok(Tlp::Clear);
        }
        Tlp::ALL
            .into_iter()
            .find(|t| t.as_str() == name)
            .ok_or_else(|| {
                format!(
                    "unknown TLP level {s:?} (expected one of: clear, green, amber, amber+strict, red)"
                )
            })
    }
}

/// Why an alert joined an incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "by", content = "key", rename_all = "snake_case")]
pub enum Correlation {
    /// The first alert: it opened the incident.
    Opened,
    /// The same device.
    Device(String),
    /// The same source address (one campaign).
    Source(String),
    /// The same threat indicator (a STIX id).
    Indicator(String),
    /// The same zone within the correlation window.
    Zone(String),
}

impl fmt::Display for Correlation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Correlation::Opened => f.write_str("opened"),
            Correlation::Device(k) => write!(f, "same device {k}"),
            Correlation::Source(k) => write!(f, "same source {k}"),
            Correlation::Indicator(k) => write!(f, "same indicator {k}"),
            Correlation::Zone(k) => write!(f, "same zone {k}"),
        }
    }
}

/// An alert as an incident remembers it (the full alert stays in the alert store).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentAlert {
    pub id: AlertId,
    pub rule: String,
    pub severity: Severity,
    pub ts: Timestamp,
    pub last_ts: Timestamp,
    pub count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<DeviceId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub title: String,
    pub correlation: Correlation,
    /// The STIX indicator (`indicator--<uuid>`) the alert matched, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub indicator: Option<String>,
}

/// How a response action runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ActionMode {
    /// At once, when the playbook matches.
    Auto,
    /// Only after a supervisor approves it.
    #[default]
    Approval,
}

/// A response action the platform can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    /// Drop the device's sessions, refuse its credentials, and announce the quarantine so
    /// detection treats its flows as blocked.
    Quarantine,
    /// Revoke the device's credentials and drop its sessions.
    RevokeCredentials,
    /// Replace the device's secret with a new generated one (returned once).
    RotateCredentials,
    /// Hold the device's publishes to a token bucket at the broker (messages per second,
    /// burst, for a duration: [`RateLimitParams`]).
    RateLimit,
    /// Lift a rate limit before it lapses.
    LiftRateLimit,
    /// Send an all-clear to a siren through the command gateway.
    SilenceSiren,
    /// Lift a quarantine or revocation: the device's credentials work again.
    Release,
}

impl ActionKind {
    pub const ALL: [ActionKind; 7] = [
        ActionKind::Quarantine,
        ActionKind::RevokeCredentials,
        ActionKind::RotateCredentials,
        ActionKind::RateLimit,
        ActionKind::LiftRateLimit,
        ActionKind::SilenceSiren,
        ActionKind::Release,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Quarantine => "quarantine",
            ActionKind::RevokeCredentials => "revoke_credentials",
            ActionKind::RotateCredentials => "rotate_credentials",
            ActionKind::RateLimit => "rate_limit",
            ActionKind::LiftRateLimit => "lift_rate_limit",
            ActionKind::SilenceSiren => "silence_siren",
            ActionKind::Release => "release",
        }
    }
}

impl fmt::Display for ActionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ActionKind {
    type Err = String;
    fn from_str(s: &str) -> Result<ActionKind, String> {
        ActionKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown action {s:?} (expected one of: quarantine, revoke_credentials, rotate_credentials, rate_limit, lift_rate_limit, silence_siren, release)"
                )
            })
    }
}

/// The limit a `rate_limit` action puts on a device's publishes at the broker: a token
/// bucket refilled at `messages_per_s` holding at most `burst` messages, lapsing
/// `duration_s` seconds after it was applied.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitParams {
    pub messages_per_s: f64,
    pub burst: u32,
    pub duration_s: u64,
}

impl Default for RateLimitParams {
    /// One message a second, bursts of ten, for an hour.
    fn default() -> RateLimitParams {
        RateLimitParams {
            messages_per_s: 1.0,
            burst: 10,
            duration_s: 3600,
        }
    }
}

impl RateLimitParams {
    /// The longest a rate limit may last: 30 days.
    pub const MAX_DURATION_S: u64 = 30 * 86_400;
    /// The highest rate a limit may allow (more is no limit for a device).
    pub const MAX_MESSAGES_PER_S: f64 = 100_000.0;

    /// Checks the numbers; returns a lowercase message naming the bad one.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.messages_per_s.is_finite()
            && self.messages_per_s >= 0.001
            && self.messages_per_s <= Self::MAX_MESSAGES_PER_S)
        {
            return Err(format!(
                "messages_per_s must be between 0.001 and {}, not {}",
                Self::MAX_MESSAGES_PER_S,
                self.messages_per_s
            ));
        }
        if self.burst == 0 || self.burst > 1_000_000 {
            return Err(format!(
                "burst must be between 1 and 1000000, not {}",
                self.burst
            ));
        }
        if self.duration_s == 0 || self.duration_s > Self::MAX_DURATION_S {
            return Err(format!(
                "duration_s must be between 1 and {} (30 days), not {}",
                Self::MAX_DURATION_S,
                self.duration_s
            ));
        }
        Ok(())
    }
}

impl fmt::Display for RateLimitParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} msg/s, burst {}, for {} s",
            self.messages_per_s, self.burst, self.duration_s
        )
    }
}

/// Where a response action stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionStatus {
    /// Waiting for a supervisor's approval.
    Pending,
    /// Approved or automatic, handed to the executor.
    Approved,
    /// Executed successfully.
    Done,
    /// The executor reported a failure.
    Failed,
    /// A supervisor refused it.
    Rejected,
}

impl ActionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionStatus::Pending => "pending",
            ActionStatus::Approved => "approved",
            ActionStatus::Done => "done",
            ActionStatus::Failed => "failed",
            ActionStatus::Rejected => "rejected",
        }
    }
}

/// A response action on an incident: proposed by a playbook or asked for by a person.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseAction {
    /// `A1`, `A2`, ... within the incident.
    pub id: String,
    pub kind: ActionKind,
    pub device_id: DeviceId,
    pub mode: ActionMode,
    pub status: ActionStatus,
    /// The playbook that proposed it, or `manual`.
    pub origin: String,
    /// Who asked for it (a user name, or `playbook:<name>`).
    pub requested_by: String,
    pub requested_at: Timestamp,
    /// The limit of a `rate_limit` action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitParams>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<Timestamp>,
    /// What the executor said (never a secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
}

/// One line of an incident's timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineEntry {
    pub ts: Timestamp,
    /// A user name, `correlator` or `playbook:<name>`.
    pub actor: String,
    #[serde(flatten)]
    pub what: TimelineKind,
}

/// What happened on an incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TimelineKind {
    /// An alert joined the incident (or opened it).
    AlertAdded {
        alert_id: AlertId,
        rule: String,
        severity: Severity,
        correlation: Correlation,
    },
    /// The incident's severity rose with a new alert.
    SeverityRaised {
        from: Severity,
        to: Severity,
    },
    StateChanged {
        from: IncidentState,
        to: IncidentState,
    },
    OwnerChanged {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<String>,
        to: String,
    },
    Note {
        text: String,
    },
    /// The TLP level of what the incident shares changed.
    TlpChanged {
        from: Tlp,
        to: Tlp,
    },

    /// A response action changed status (proposed, approved, rejected, done, failed).
    Action {
        action_id: String,
        kind: ActionKind,
        device_id: DeviceId,
        status: ActionStatus,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
}

/// The milestones of an incident, from which the response times follow.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentTimes {
    /// The earliest evidence of any of its alerts.
    pub first_evidence: Timestamp,
    /// The first alert's time.
    pub first_alert: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contained: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed: Option<Timestamp>,
}

/// Response times in milliseconds: detect is first evidence to first alert; acknowledge,
/// contain and resolve are measured from the first alert.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentDurations {
    pub time_to_detect_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_to_acknowledge_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_to_contain_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_to_resolve_ms: Option<i64>,
}

impl IncidentTimes {
    pub fn durations(&self) -> IncidentDurations {
        let since_alert = |t: Option<Timestamp>| t.map(|t| t.0 - self.first_alert.0);
        IncidentDurations {
            time_to_detect_ms: self.first_alert.0 - self.first_evidence.0,
            time_to_acknowledge_ms: since_alert(self.acknowledged),
            time_to_contain_ms: since_alert(self.contained),
            time_to_resolve_ms: since_alert(self.resolved),
        }
    }
}

/// An incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub id: IncidentId,
    pub title: String,
    pub state: IncidentState,
    /// The highest severity of its alerts.
    pub severity: Severity,
    /// The TLP 2.0 level of the sightings and indicators it shares once confirmed
    /// (`[incidents] default_tlp` when opened; documents from before it existed are RED).
    #[serde(default = "Tlp::legacy")]
    pub tlp: Tlp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The devices its alerts are about.
    #[serde(default)]
    pub devices: Vec<DeviceId>,
    #[serde(default)]
    pub zones: Vec<String>,
    /// Source addresses its alerts are about.
    #[serde(default)]
    pub sources: Vec<String>,
    /// Threat indicators (STIX ids) its alerts matched.
    #[serde(default)]
    pub indicators: Vec<String>,
    pub alerts: Vec<IncidentAlert>,
    #[serde(default)]
    pub actions: Vec<ResponseAction>,
    pub times: IncidentTimes,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub timeline: Vec<TimelineEntry>,
    /// Timeline entries dropped because the timeline reached its bound.
    #[serde(default)]
    pub timeline_dropped: u64,
}

impl Incident {
    pub fn durations(&self) -> IncidentDurations {
        self.times.durations()
    }
}

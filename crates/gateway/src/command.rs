//! What the gateway works with: who asks ([`Principal`]), what they ask ([`CommandRequest`]),
//! the devices it resolves to ([`Target`]), the command it becomes ([`Command`], with its
//! state, approvals and per-device deliveries), and why something is refused ([`Refusal`]).

use std::fmt;

use model::{DeviceClass, DeviceId, ErrorCode, Sector, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Who makes a request: the authenticated person (name and role name) the web layer or the
/// CLI established, or the platform itself ([`Principal::system`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    pub name: String,
    /// `viewer`, `analyst`, `operator`, `supervisor`, `admin`, or `system`.
    pub role: String,
}

impl Principal {
    pub const SYSTEM_ROLE: &'static str = "system";

    pub fn new(name: impl Into<String>, role: impl Into<String>) -> Principal {
        Principal {
            name: name.into(),
            role: role.into(),
        }
    }

    /// The platform acting on its own (automatic all-clears, playbooks). It may send
    /// cancels and nothing else.
    pub fn system(name: impl Into<String>) -> Principal {
        Principal::new(name, Principal::SYSTEM_ROLE)
    }

    pub fn is_system(&self) -> bool {
        self.role == Principal::SYSTEM_ROLE
    }
}

/// A request to act: the body of `POST /api/v1/commands`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandRequest {
    /// Device ids, as given (checked by the gateway so a bad one is refused and audited).
    pub devices: Vec<String>,
    pub action: String,
    #[serde(default)]
    pub params: Map<String, Value>,
    /// The advisory (public warning) a siren activation is issued under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advisory: Option<String>,
    /// Why, in the requester's words (kept in the audit log).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A device the gateway may address, as the registry knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub id: DeviceId,
    pub sector: Sector,
    pub class: DeviceClass,
    /// Credentials revoked (quarantined): nothing is sent to it.
    pub revoked: bool,
}

/// What kind of command the policy found a request to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandKind {
    /// Silences sirens: always one step.
    Cancel,
    /// Sounds sirens: needs an authorised public warning.
    Activation,
    Ordinary,
}

/// Where a command is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandState {
    /// Safety-critical: waiting for a second, different person.
    PendingApproval,
    /// Approved (or needing no approval) and being signed and sent.
    Approved,
    /// Sent; waiting for acknowledgements.
    Delivered,
    /// Every device acknowledged it.
    Acked,
    /// The gateway refused it (nothing was sent), or a device refused it (its reason is on
    /// the delivery).
    Refused,
    /// The approval window passed without a valid approval.
    Expired,
    /// A device did not acknowledge in time, or was not connected.
    TimedOut,
}

impl CommandState {
    pub fn as_str(self) -> &'static str {
        match self {
            CommandState::PendingApproval => "pending_approval",
            CommandState::Approved => "approved",
            CommandState::Delivered => "delivered",
            CommandState::Acked => "acked",
            CommandState::Refused => "refused",
            CommandState::Expired => "expired",
            CommandState::TimedOut => "timed_out",
        }
    }

    /// Whether nothing more will happen to the command.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            CommandState::Acked
                | CommandState::Refused
                | CommandState::Expired
                | CommandState::TimedOut
        )
    }

    pub const ALL: [CommandState; 7] = [
        CommandState::PendingApproval,
        CommandState::Approved,
        CommandState::Delivered,
        CommandState::Acked,
        CommandState::Refused,
        CommandState::Expired,
        CommandState::TimedOut,
    ];
}

impl fmt::Display for CommandState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One device's part of a command.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Signed and handed to the broker; no acknowledgement yet.
    Sent,
    Acked,
    /// The device answered `ok: false` (the verifier's reason, or the device's own).
    Refused,
    /// The device had no session to deliver to.
    NotConnected,
    TimedOut,
}

impl DeliveryState {
    pub fn as_str(&self) -> &'static str {
        match self {
            DeliveryState::Sent => "sent",
            DeliveryState::Acked => "acked",
            DeliveryState::Refused => "refused",
            DeliveryState::NotConnected => "not_connected",
            DeliveryState::TimedOut => "timed_out",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub device: DeviceId,
    pub counter: u64,
    pub state: DeliveryState,
    pub sent_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acked_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Lowercase hex SHA-256 of the exact signed bytes sent.
    pub sha256: String,
}

/// A second person's approval, bound to the payload hash they saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    pub by: String,
    pub role: String,
    pub at: Timestamp,
    pub payload_sha256: String,
}

/// A command and everything that happened to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    pub id: String,
    pub devices: Vec<String>,
    pub action: String,
    pub params: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advisory: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub requested_by: String,
    pub requested_role: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<CommandKind>,
    pub needs_approval: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_expires_at: Option<Timestamp>,
    /// SHA-256 of [`Command::payload`]: what an approver approves.
    pub payload_sha256: String,
    #[serde(default)]
    pub approvals: Vec<Approval>,
    pub state: CommandState,
    /// Why the gateway refused it, or why it ended the way it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// The machine-readable refusal (`unknown_device`, `same_person`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    /// When the signed commands stop being valid at the devices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    #[serde(default)]
    pub deliveries: Vec<Delivery>,
}

impl Command {
    /// The exact canonical payload an approval is bound to: id, devices, action, params,
    /// advisory and requester.
    pub fn payload(&self) -> Value {
        serde_json::json!({
            "id": self.id,
            "devices": self.devices,
            "action": self.action,
            "params": Value::Object(self.params.clone()),
            "advisory": self.advisory,
            "requested_by": self.requested_by,
        })
    }

    /// Recomputes the payload hash from the command's current fields.
    pub fn compute_payload_sha256(&self) -> String {
        sha256_hex(canonical_json(&self.payload()).as_bytes())
    }

    /// Folds the deliveries into the command's state once none is in flight.
    pub(crate) fn settle(&mut self) {
        if self
            .deliveries
            .iter()
            .any(|d| d.state == DeliveryState::Sent)
        {
            return;
        }
        let refused: Vec<String> = self
            .deliveries
            .iter()
            .filter(|d| d.state == DeliveryState::Refused)
            .map(|d| format!("{}: {}", d.device, d.error.as_deref().unwrap_or("refused")))
            .collect();
        let missing: Vec<String> = self
            .deliveries
            .iter()
            .filter(|d| {
                matches!(
                    d.state,
                    DeliveryState::NotConnected | DeliveryState::TimedOut
                )
            })
            .map(|d| format!("{}: {}", d.device, d.state.as_str()))
            .collect();
        if !refused.is_empty() {
            self.state = CommandState::Refused;
            self.outcome = Some(format!("refused by device: {}", refused.join("; ")));
        } else if !missing.is_empty() {
            self.state = CommandState::TimedOut;
            self.outcome = Some(format!("not acknowledged: {}", missing.join("; ")));
        } else {
            self.state = CommandState::Acked;
            self.outcome = Some("acknowledged by every device".to_owned());
        }
    }
}

/// Why the gateway refused a request or an approval. Every refusal is audited.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{0}")]
    Invalid(String),
    #[error("unknown device {0}")]
    UnknownDevice(String),
    #[error("{0}")]
    NotAllowed(String),
    #[error("{devices} devices in one request; the limit is {limit}")]
    TooManyDevices { devices: usize, limit: usize },
    #[error("a siren activation must reference an authorised public warning (advisory)")]
    NoWarning,
    #[error("advisory {0:?} is not an authorised public warning")]
    WarningNotAuthorised(String),
    #[error("the requester cannot approve their own command; a second, different person must")]
    SamePerson,
    #[error("role {0} may not approve commands")]
    NotApprover(String),
    #[error(
        "approval is for payload {given}, but the command's payload is {expected}: it changed, or the approver saw another one"
    )]
    PayloadMismatch { expected: String, given: String },
    #[error("the approval window closed at {0}")]
    ApprovalExpired(String),
    #[error("command is {0}, not pending approval (an approval can be given once)")]
    NotPending(CommandState),
    #[error("{0}; activations are refused until it is back (cancels still go out)")]
    Unavailable(String),
}

impl Refusal {
    /// A stable name for the refusal, kept on the command and in the audit log.
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::Invalid(_) => "invalid",
            Refusal::UnknownDevice(_) => "unknown_device",
            Refusal::NotAllowed(_) => "not_allowed",
            Refusal::TooManyDevices { .. } => "too_many_devices",
            Refusal::NoWarning => "no_warning",
            Refusal::WarningNotAuthorised(_) => "warning_not_authorised",
            Refusal::SamePerson => "same_person",
            Refusal::NotApprover(_) => "not_approver",
            Refusal::PayloadMismatch { .. } => "payload_mismatch",
            Refusal::ApprovalExpired(_) => "approval_expired",
            Refusal::NotPending(_) => "not_pending",
            Refusal::Unavailable(_) => "unavailable",
        }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            Refusal::Invalid(_) => ErrorCode::Invalid,
            Refusal::UnknownDevice(_) => ErrorCode::NotFound,
            Refusal::NotPending(_) | Refusal::ApprovalExpired(_) => ErrorCode::Conflict,
            Refusal::Unavailable(_) => ErrorCode::Unavailable,
            _ => ErrorCode::Forbidden,
        }
    }
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// JSON with object keys sorted and no insignificant whitespace (the same form as the
/// audit log's records).
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

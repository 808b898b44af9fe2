//! The one normalised event type: telemetry readings, actuator state, broker security
//! events, authorised commands and network flow records all travel as an [`Event`].

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{DeviceId, FlowRecord, Location, ReportCategory, Sector, Timestamp};

/// Something that happened in the city, as citysec saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// When it happened: the device's own timestamp when it sent a plausible one,
    /// otherwise when the platform received it.
    pub ts: Timestamp,
    /// The device the event is about, when known (a refused connect from an unknown
    /// client id has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<DeviceId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sector: Option<Sector>,
    #[serde(flatten)]
    pub kind: EventKind,
}

impl Event {
    /// The bus subject for this event: `obs.telemetry`, `obs.state`, `obs.security`,
    /// `obs.command`, `obs.flow` or `obs.report`.
    pub fn subject(&self) -> &'static str {
        match &self.kind {
            EventKind::Telemetry { .. } => "obs.telemetry",
            EventKind::State { .. } => "obs.state",
            EventKind::Security(_) => "obs.security",
            EventKind::Command { .. } => "obs.command",
            EventKind::Flow(_) => "obs.flow",
            EventKind::CitizenReport { .. } => "obs.report",
        }
    }

    /// The short kind name stored with the event: `telemetry`, `state`, `security`,
    /// `command`, `flow` or `report`.
    pub fn kind_name(&self) -> &'static str {
        match &self.kind {
            EventKind::Telemetry { .. } => "telemetry",
            EventKind::State { .. } => "state",
            EventKind::Security(_) => "security",
            EventKind::Command { .. } => "command",
            EventKind::Flow(_) => "flow",
            EventKind::CitizenReport { .. } => "report",
        }
    }
}

/// What an [`Event`] carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventKind {
    /// Sensor readings published to `.../telemetry`.
    Telemetry { readings: Vec<Reading> },
    /// Actuator state published to `.../state`, e.g. `sounding = true` for a siren.
    State { readings: Vec<Reading> },
    /// A decision the broker made or a problem it saw.
    Security(SecurityEvent),
    /// A command that an authorised path (the command gateway) sent to a device.
    /// Detection uses these to tell commanded actuations from uncommanded ones.
    Command {
        action: String,
        /// Who authorised it.
        actor: String,
    },
    /// A network flow record (NetFlow v5/v9, IPFIX or a JSON line from a collector).
    Flow(FlowRecord),
    /// A resident reported something odd through the public report endpoint (cleaned text,
    /// no identity of the sender).
    CitizenReport {
        category: ReportCategory,
        text: String,
        location: Location,
    },
}

/// One named value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    pub name: String,
    pub value: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

/// A reading's value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    Bool(bool),
    Number(f64),
    Text(String),
}

impl Value {
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Number(n) => Some(*n),
            Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
            Value::Text(_) => None,
        }
    }

    /// Truthiness for state values: `true`, non-zero numbers, and the strings `on`,
    /// `true`, `sounding`, `active`, `open`.
    pub fn is_on(&self) -> bool {
        match self {
            Value::Bool(b) => *b,
            Value::Number(n) => *n != 0.0,
            Value::Text(s) => matches!(
                s.to_ascii_lowercase().as_str(),
                "on" | "true" | "sounding" | "active" | "open"
            ),
        }
    }
}

/// A normalised broker security event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityEvent {
    pub action: SecurityEventKind,
    /// The MQTT client id the client presented.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The username the client presented (or the certificate's CN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// The client's address, `ip:port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// A human-readable reason, e.g. `bad password` or `topic outside device namespace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The decisions and problems a broker reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityEventKind {
    /// A client connected and authenticated.
    ConnectAccepted,
    /// A connect was refused for a reason other than bad credentials (unknown device,
    /// revoked, protocol error, rate limit).
    ConnectRefused,
    /// A client presented credentials that did not verify.
    AuthFailure,
    /// A publish was refused by the topic policy.
    PublishDenied,
    /// A subscription was refused by the topic policy.
    SubscribeDenied,
    /// A packet could not be decoded or broke the protocol.
    MalformedPacket,
    /// A payload exceeded the configured size limit.
    OversizedPayload,
    /// A payload on a device topic could not be decoded as telemetry.
    PayloadInvalid,
    /// A second connection used a client id that already had a session.
    ClientIdTakeover,
    /// A client went away (cleanly or not).
    Disconnect,
    /// A response action quarantined the device: its sessions were dropped, its
    /// credentials are refused, and detection should treat any flow of it as blocked by the
    /// conduit policy. `username` names who ordered it, `reason` the incident.
    Quarantined,
    /// A person or playbook took a response action on the device (`username` is the actor,
    /// `reason` says what and with which outcome). The audit trail until the audit log lands.
    ResponseAction,
    /// The broker dropped publishes of a rate-limited device (`reason` counts them and
    /// names the limit; a flood far over the limit also ends the session).
    RateLimited,
    /// A device's rate limit was applied, lifted or lapsed (`reason` says which).
    RateLimitChanged,
}

impl SecurityEventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SecurityEventKind::ConnectAccepted => "connect_accepted",
            SecurityEventKind::ConnectRefused => "connect_refused",
            SecurityEventKind::AuthFailure => "auth_failure",
            SecurityEventKind::PublishDenied => "publish_denied",
            SecurityEventKind::SubscribeDenied => "subscribe_denied",
            SecurityEventKind::MalformedPacket => "malformed_packet",
            SecurityEventKind::OversizedPayload => "oversized_payload",
            SecurityEventKind::PayloadInvalid => "payload_invalid",
            SecurityEventKind::ClientIdTakeover => "client_id_takeover",
            SecurityEventKind::Disconnect => "disconnect",
            SecurityEventKind::Quarantined => "quarantined",
            SecurityEventKind::ResponseAction => "response_action",
            SecurityEventKind::RateLimited => "rate_limited",
            SecurityEventKind::RateLimitChanged => "rate_limit_changed",
        }
    }
}

impl fmt::Display for SecurityEventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

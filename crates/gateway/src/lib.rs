//! The actuator command gateway: the only path from citysec to a city's actuators.
//!
//! A [`CommandRequest`] names devices, an action and its parameters. The pure
//! [`policy`] decides, from the `[gateway]` config ([`GatewayConfig`]), whether the
//! requester's role may send it to those device classes at this hour and this many devices
//! at once; whether it is a siren cancel (always one step), a siren activation (which must
//! reference an authorised public warning, through the [`AdvisoryCheck`] port), and whether
//! a safety-critical class needs a second, different person's approval bound to the
//! SHA-256 of the exact canonical payload (approvals expire).
//!
//! [`Gateway`] carries the decision out through [`ports`] that `app` implements: it writes
//! the audit record before anything is delivered, takes a durable per-device counter, signs
//! each device's copy with Ed25519 ([`Signer`]; the `verifier` crate is the device side),
//! announces the command as a `model::EventKind::Command` event (so detection can tell
//! commanded from uncommanded actuations), delivers it, and tracks acknowledgements and
//! timeouts. [`Gateway::on_alert`] sends the automatic all-clear for an uncommanded siren.
//!
//! **Architecture invariant:** the decisions are sans-IO and the gateway reads no clock:
//! every entry point takes `now`.

pub mod command;
pub mod config;
pub mod policy;
pub mod ports;
mod service;
pub mod sign;

pub use crate::command::{
    Approval, Command, CommandKind, CommandRequest, CommandState, Delivery, DeliveryState,
    Principal, Refusal, Target,
};
pub use crate::config::{GatewayConfig, PolicyRule};
pub use crate::ports::{
    Actuator, AdvisoryCheck, Announcer, AuditLog, AuditNote, CommandLedger, DeviceLookup, PortError,
};
pub use crate::service::{Gateway, GatewayError, GatewayStats, Ports};
pub use crate::sign::{Envelope, Signer};

#[cfg(test)]
mod tests;

//! The `[gateway]` section of the config file: who may send what to which devices, when,
//! and how many at once; approval, expiry and acknowledgement times; the siren vocabulary.

use model::DeviceClass;
use serde::{Deserialize, Serialize};

/// Settings for the command gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// A signed command is valid at the device for this many seconds after it is sent.
    pub command_ttl_s: u64,
    /// A command waiting for its second person expires after this many seconds.
    pub approval_ttl_s: u64,
    /// A delivered command that no device acknowledged within this many seconds is
    /// `timed_out`.
    pub ack_timeout_s: u64,
    /// No request may name more devices than this, whatever the rules say.
    pub max_devices_per_request: usize,
    /// Roles whose holders may give the second approval (never the requester).
    pub approver_roles: Vec<String>,
    /// Roles that may send a cancel or all-clear (always one step, never refused by the
    /// rules, and sent even when the store cannot be reached).
    pub cancel_roles: Vec<String>,
    /// Siren actions that sound it: each must reference an authorised public warning.
    pub siren_activations: Vec<String>,
    /// Siren actions that silence it: cancels and all-clears.
    pub siren_cancels: Vec<String>,
    /// When detection raises `actuation.uncommanded` for a siren the gateway did not
    /// authorise, send it an all-clear at once.
    pub auto_all_clear: bool,
    /// The action the automatic all-clear sends.
    pub all_clear_action: String,
    /// A siren sounding within this many seconds of an activation the gateway delivered to
    /// it is explained by that activation: no automatic all-clear.
    pub reconcile_window_s: u64,
    /// What each role may do; a request is allowed when one rule allows all of it.
    pub rules: Vec<PolicyRule>,
    /// Audit entries held in memory while the audit log cannot be written; beyond this the
    /// oldest are dropped, and the log records the gap (`audit.gap`) when it is back.
    pub max_audit_backlog: usize,
}

/// One permission: these roles may send these actions to these classes, within these
/// hours, to at most this many devices per request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyRule {
    pub roles: Vec<String>,
    pub classes: Vec<DeviceClass>,
    /// Action names, or `"*"` for any.
    pub actions: Vec<String>,
    pub max_devices: usize,
    /// `[from, to)` hours of the day in UTC; absent means at any time. `from > to` wraps
    /// over midnight (`[22, 6]`).
    #[serde(default)]
    pub hours_utc: Option<[u8; 2]>,
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

impl Default for GatewayConfig {
    fn default() -> GatewayConfig {
        let operators = strings(&["operator", "supervisor", "admin"]);
        let (critical, ordinary): (Vec<DeviceClass>, Vec<DeviceClass>) = DeviceClass::ALL
            .into_iter()
            .filter(|c| c.is_actuator())
            .partition(|c| c.is_safety_critical());
        GatewayConfig {
            command_ttl_s: 30,
            approval_ttl_s: 600,
            ack_timeout_s: 10,
            max_devices_per_request: 100,
            approver_roles: strings(&["supervisor", "admin"]),
            cancel_roles: operators.clone(),
            siren_activations: strings(&["sound", "activate", "on", "start"]),
            siren_cancels: strings(&["silence", "cancel", "stop", "off"]),
            auto_all_clear: true,
            all_clear_action: "silence".to_owned(),
            reconcile_window_s: 120,
            max_audit_backlog: 10_000,
            rules: vec![
                PolicyRule {
                    roles: operators.clone(),
                    classes: ordinary,
                    actions: strings(&["*"]),
                    max_devices: 50,
                    hours_utc: None,
                },
                PolicyRule {
                    roles: operators,
                    classes: critical,
                    actions: strings(&["*"]),
                    max_devices: 10,
                    hours_utc: None,
                },
            ],
        }
    }
}

impl GatewayConfig {
    /// Checks the settings on their own; returns a lowercase message.
    pub fn validate(&self) -> Result<(), String> {
        if self.command_ttl_s == 0 || self.approval_ttl_s == 0 || self.ack_timeout_s == 0 {
            return Err(
                "gateway: command_ttl_s, approval_ttl_s and ack_timeout_s must be above 0".into(),
            );
        }
        if self.max_devices_per_request == 0 {
            return Err("gateway: max_devices_per_request must be above 0".into());
        }
        if !self.siren_cancels.contains(&self.all_clear_action) {
            return Err(format!(
                "gateway: all_clear_action {:?} must be one of siren_cancels",
                self.all_clear_action
            ));
        }
        if let Some(a) = self
            .siren_activations
            .iter()
            .find(|a| self.siren_cancels.contains(a))
        {
            return Err(format!(
                "gateway: {a:?} is both a siren activation and a cancel"
            ));
        }
        for (i, rule) in self.rules.iter().enumerate() {
            if let Some([from, to]) = rule.hours_utc
                && (from > 24 || to > 24 || from == to)
            {
                return Err(format!(
                    "gateway: rules[{i}].hours_utc must be two different hours from 0 to 24"
                ));
            }
            if rule.roles.is_empty() || rule.classes.is_empty() || rule.actions.is_empty() {
                return Err(format!(
                    "gateway: rules[{i}] needs roles, classes and actions"
                ));
            }
        }
        Ok(())
    }

    pub fn command_ttl_ms(&self) -> i64 {
        secs_to_ms(self.command_ttl_s)
    }

    pub fn approval_ttl_ms(&self) -> i64 {
        secs_to_ms(self.approval_ttl_s)
    }

    pub fn reconcile_window_ms(&self) -> i64 {
        secs_to_ms(self.reconcile_window_s)
    }

    pub fn ack_timeout_ms(&self) -> i64 {
        secs_to_ms(self.ack_timeout_s)
    }
}

fn secs_to_ms(s: u64) -> i64 {
    i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX)
}

//! The decisions, pure: is this request well-formed, what kind of command is it, does a
//! rule allow it for this role at this time and size, does it need a second person, and is
//! this approval valid. No IO; time is an argument.

use std::collections::HashSet;

use model::{DeviceClass, DeviceId, Timestamp};

use crate::command::{
    Command, CommandKind, CommandRequest, CommandState, Principal, Refusal, Target,
};
use crate::config::GatewayConfig;
use crate::ports::AdvisoryCheck;

/// The longest action name.
pub const MAX_ACTION_LEN: usize = 64;
/// The largest `params` object, as JSON.
pub const MAX_PARAMS_BYTES: usize = 4096;
/// The longest advisory id and reason.
pub const MAX_ADVISORY_LEN: usize = 128;
pub const MAX_REASON_LEN: usize = 1000;

/// What the policy concluded about an allowed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub kind: CommandKind,
    pub needs_approval: bool,
}

/// Checks the request on its own and returns its device ids, parsed; the caller resolves
/// them to [`Target`]s.
pub fn check_request(
    config: &GatewayConfig,
    request: &CommandRequest,
) -> Result<Vec<DeviceId>, Refusal> {
    let action = &request.action;
    if action.is_empty()
        || action.len() > MAX_ACTION_LEN
        || !action
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(Refusal::Invalid(format!(
            "action must be 1 to {MAX_ACTION_LEN} characters of a-z, 0-9 and _"
        )));
    }
    let params = serde_json::to_string(&request.params).unwrap_or_default();
    if params.len() > MAX_PARAMS_BYTES {
        return Err(Refusal::Invalid(format!(
            "params are {} bytes; at most {MAX_PARAMS_BYTES}",
            params.len()
        )));
    }
    if let Some(advisory) = &request.advisory
        && (advisory.is_empty() || advisory.len() > MAX_ADVISORY_LEN)
    {
        return Err(Refusal::Invalid(format!(
            "advisory must be 1 to {MAX_ADVISORY_LEN} characters"
        )));
    }
    if let Some(reason) = &request.reason
        && (reason.chars().count() > MAX_REASON_LEN || reason.chars().any(char::is_control))
    {
        return Err(Refusal::Invalid(format!(
            "reason must be at most {MAX_REASON_LEN} characters without control characters"
        )));
    }
    if request.devices.is_empty() {
        return Err(Refusal::Invalid(
            "a command must name at least one device".into(),
        ));
    }
    if request.devices.len() > config.max_devices_per_request {
        return Err(Refusal::TooManyDevices {
            devices: request.devices.len(),
            limit: config.max_devices_per_request,
        });
    }
    let mut seen = HashSet::new();
    let mut ids = Vec::with_capacity(request.devices.len());
    for raw in &request.devices {
        let id = DeviceId::new(raw.as_str())
            .map_err(|e| Refusal::Invalid(format!("device {raw:?}: {e}")))?;
        if !seen.insert(id.clone()) {
            return Err(Refusal::Invalid(format!("device {id} is named twice")));
        }
        ids.push(id);
    }
    Ok(ids)
}

/// The kind of command a request is, from its action and target classes.
pub fn kind_of(config: &GatewayConfig, action: &str, targets: &[Target]) -> CommandKind {
    let sirens = targets
        .iter()
        .filter(|t| t.class == DeviceClass::Siren)
        .count();
    if sirens == targets.len() && config.siren_cancels.iter().any(|a| a == action) {
        CommandKind::Cancel
    } else if sirens > 0 && config.siren_activations.iter().any(|a| a == action) {
        CommandKind::Activation
    } else {
        CommandKind::Ordinary
    }
}

/// Decides whether `principal` may send `request` to `targets` at `now`.
pub fn decide(
    config: &GatewayConfig,
    principal: &Principal,
    request: &CommandRequest,
    targets: &[Target],
    now: Timestamp,
    advisories: &dyn AdvisoryCheck,
) -> Result<Decision, Refusal> {
    for t in targets {
        if !t.class.is_actuator() {
            return Err(Refusal::Invalid(format!(
                "{} is a {}, which takes no commands",
                t.id, t.class
            )));
        }
        if t.revoked {
            return Err(Refusal::NotAllowed(format!(
                "{} is revoked (quarantined); nothing is sent to it",
                t.id
            )));
        }
    }
    let kind = kind_of(config, &request.action, targets);
    if kind == CommandKind::Cancel {
        if principal.is_system() || config.cancel_roles.contains(&principal.role) {
            return Ok(Decision {
                kind,
                needs_approval: false,
            });
        }
        return Err(Refusal::NotAllowed(format!(
            "role {} may not send cancels",
            principal.role
        )));
    }
    if principal.is_system() {
        return Err(Refusal::NotAllowed(
            "the platform itself may only send cancels and all-clears".into(),
        ));
    }
    check_rules(config, principal, &request.action, targets, now)?;
    if kind == CommandKind::Activation {
        let advisory = request.advisory.as_deref().ok_or(Refusal::NoWarning)?;
        if !advisories.is_authorised_warning(advisory) {
            return Err(Refusal::WarningNotAuthorised(advisory.to_owned()));
        }
    }
    Ok(Decision {
        kind,
        needs_approval: targets.iter().any(|t| t.class.is_safety_critical()),
    })
}

/// Finds a rule allowing everything; otherwise the most specific reason none does.
fn check_rules(
    config: &GatewayConfig,
    principal: &Principal,
    action: &str,
    targets: &[Target],
    now: Timestamp,
) -> Result<(), Refusal> {
    let hour = (now.as_millis().div_euclid(3_600_000)).rem_euclid(24) as u8;
    let mut classes: Vec<DeviceClass> = targets.iter().map(|t| t.class).collect();
    classes.sort();
    classes.dedup();
    let mut best: Option<Refusal> = None;
    for rule in &config.rules {
        if !rule.roles.contains(&principal.role)
            || !classes.iter().all(|c| rule.classes.contains(c))
            || !rule.actions.iter().any(|a| a == "*" || a == action)
        {
            continue;
        }
        if let Some([from, to]) = rule.hours_utc {
            let inside = if from < to {
                (from..to).contains(&hour)
            } else {
                hour >= from || hour < to
            };
            if !inside {
                best.get_or_insert(Refusal::NotAllowed(format!(
                    "{action} to {} is allowed only from {from}:00 to {to}:00 UTC (now {hour}:xx)",
                    names(&classes)
                )));
                continue;
            }
        }
        if targets.len() > rule.max_devices {
            best = Some(Refusal::TooManyDevices {
                devices: targets.len(),
                limit: rule.max_devices,
            });
            continue;
        }
        return Ok(());
    }
    Err(best.unwrap_or_else(|| {
        Refusal::NotAllowed(format!(
            "role {} may not send {action} to {}",
            principal.role,
            names(&classes)
        ))
    }))
}

fn names(classes: &[DeviceClass]) -> String {
    classes
        .iter()
        .map(|c| c.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks an approval of `command` by `approver`, who reviewed the payload whose hash is
/// `payload_sha256`, at `now`. Order: still pending (an approval can be given once), not
/// expired, a different person, an approver role, the same payload (the hash given, the
/// hash recorded at request time, and the hash of the command as it is now must agree).
pub fn check_approval(
    config: &GatewayConfig,
    command: &Command,
    approver: &Principal,
    payload_sha256: &str,
    now: Timestamp,
) -> Result<(), Refusal> {
    if command.state != CommandState::PendingApproval {
        return Err(Refusal::NotPending(command.state));
    }
    if let Some(deadline) = command.approval_expires_at
        && now >= deadline
    {
        return Err(Refusal::ApprovalExpired(deadline.to_rfc3339()));
    }
    if approver.name == command.requested_by {
        return Err(Refusal::SamePerson);
    }
    if approver.is_system() || !config.approver_roles.contains(&approver.role) {
        return Err(Refusal::NotApprover(approver.role.clone()));
    }
    let current = command.compute_payload_sha256();
    if payload_sha256 != command.payload_sha256 || current != command.payload_sha256 {
        return Err(Refusal::PayloadMismatch {
            expected: current,
            given: payload_sha256.to_owned(),
        });
    }
    Ok(())
}

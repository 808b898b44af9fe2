//! The incident lifecycle: state changes, owner, notes and response actions, each one a
//! timeline entry. Pure functions of an incident, an operation, an actor and a time.

use model::{
    ActionKind, ActionMode, ActionStatus, DeviceId, Incident, IncidentState, RateLimitParams,
    ResponseAction, TimelineEntry, TimelineKind, Timestamp, Tlp,
};

/// The longest note, owner name or action detail kept.
pub const MAX_TEXT: usize = 4000;

/// A change someone asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Move the incident forward (states never go back).
    Transition(IncidentState),
    Assign(String),
    Note(String),
    /// Set the TLP level of what the incident shares.
    SetTlp(Tlp),
    /// Ask for a response action; `Auto` runs it at once, `Approval` waits for a supervisor.
    RequestAction {
        kind: ActionKind,
        device_id: DeviceId,
        mode: ActionMode,
        /// For `rate_limit` (else refused); `None` there means the default limit.
        rate_limit: Option<RateLimitParams>,
    },
    /// A supervisor approves or rejects a pending action.
    Decide {
        action_id: String,
        approve: bool,
    },
    /// The executor reports how an approved action went.
    ActionResult {
        action_id: String,
        ok: bool,
        detail: String,
    },
}

/// Why an operation was refused; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LifecycleError {
    #[error("incident {id} is closed")]
    Closed { id: String },
    #[error("incident {id} is {from}; it cannot move to {to} (states only move forward)")]
    Backwards {
        id: String,
        from: IncidentState,
        to: IncidentState,
    },
    #[error("no action {action_id} on incident {id}")]
    NoSuchAction { id: String, action_id: String },
    #[error("action {action_id} is {status}, not {expected}")]
    ActionState {
        action_id: String,
        status: &'static str,
        expected: &'static str,
    },
    #[error("{0}")]
    Invalid(String),
}

/// What the caller must do after an operation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effects {
    /// Actions now approved, to hand to the executor.
    pub execute: Vec<String>,
}

fn check_text(what: &str, text: &str) -> Result<String, LifecycleError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(LifecycleError::Invalid(format!("{what} must not be empty")));
    }
    if text.chars().count() > MAX_TEXT {
        return Err(LifecycleError::Invalid(format!(
            "{what} is longer than {MAX_TEXT} characters"
        )));
    }
    if text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(LifecycleError::Invalid(format!(
            "{what} contains control characters"
        )));
    }
    Ok(text.to_owned())
}

pub(crate) fn push(incident: &mut Incident, ts: Timestamp, actor: &str, what: TimelineKind) {
    incident.timeline.push(TimelineEntry {
        ts,
        actor: actor.to_owned(),
        what,
    });
    incident.updated_at = incident.updated_at.max(ts);
}

/// Applies an operation; on error the incident is unchanged.
pub fn apply(
    incident: &mut Incident,
    op: Op,
    actor: &str,
    at: Timestamp,
) -> Result<Effects, LifecycleError> {
    let id = incident.id.0.clone();
    // An executor may still report on an action after closure; everything else stops.
    if incident.state == IncidentState::Closed && !matches!(op, Op::ActionResult { .. }) {
        return Err(LifecycleError::Closed { id });
    }
    let actor = check_text("actor", actor)?;
    let mut effects = Effects::default();
    match op {
        Op::Transition(to) => {
            let from = incident.state;
            if to <= from {
                return Err(LifecycleError::Backwards { id, from, to });
            }
            let times = &mut incident.times;
            times.acknowledged.get_or_insert(at);
            match to {
                IncidentState::New | IncidentState::Triaged => {}
                IncidentState::Contained => {
                    times.contained.get_or_insert(at);
                }
                IncidentState::Resolved => {
                    times.resolved.get_or_insert(at);
                }
                IncidentState::Closed => {
                    times.resolved.get_or_insert(at);
                    times.closed.get_or_insert(at);
                }
            }
            incident.state = to;
            push(
                incident,
                at,
                &actor,
                TimelineKind::StateChanged { from, to },
            );
            if incident.owner.is_none() {
                incident.owner = Some(actor.clone());
                push(
                    incident,
                    at,
                    &actor,
                    TimelineKind::OwnerChanged {
                        from: None,
                        to: actor.clone(),
                    },
                );
            }
        }
        Op::Assign(owner) => {
            let owner = check_text("owner", &owner)?;
            if incident.owner.as_deref() == Some(owner.as_str()) {
                return Ok(effects);
            }
            let from = incident.owner.replace(owner.clone());
            push(
                incident,
                at,
                &actor,
                TimelineKind::OwnerChanged { from, to: owner },
            );
        }
        Op::Note(text) => {
            let text = check_text("note", &text)?;
            push(incident, at, &actor, TimelineKind::Note { text });
        }
        Op::SetTlp(to) => {
            let from = incident.tlp;
            if from == to {
                return Ok(effects);
            }
            incident.tlp = to;
            push(incident, at, &actor, TimelineKind::TlpChanged { from, to });
        }
        Op::RequestAction {
            kind,
            device_id,
            mode,
            rate_limit,
        } => {
            let rate_limit = match (kind, rate_limit) {
                (ActionKind::RateLimit, params) => {
                    let params = params.unwrap_or_default();
                    params
                        .validate()
                        .map_err(|e| LifecycleError::Invalid(format!("rate_limit: {e}")))?;
                    Some(params)
                }
                (_, None) => None,
                (other, Some(_)) => {
                    return Err(LifecycleError::Invalid(format!(
                        "rate_limit parameters belong to action rate_limit, not {other}"
                    )));
                }
            };
            let action_id = request_action(
                incident, kind, device_id, mode, rate_limit, "manual", &actor, at,
            );
            if mode == ActionMode::Auto {
                effects.execute.push(action_id);
            }
        }
        Op::Decide { action_id, approve } => {
            let action = find_action(incident, &action_id)?;
            if action.status != ActionStatus::Pending {
                return Err(LifecycleError::ActionState {
                    action_id,
                    status: action.status.as_str(),
                    expected: "pending",
                });
            }
            action.status = if approve {
                ActionStatus::Approved
            } else {
                ActionStatus::Rejected
            };
            action.decided_by = Some(actor.clone());
            action.decided_at = Some(at);
            let (kind, device_id, status) = (action.kind, action.device_id.clone(), action.status);
            push(
                incident,
                at,
                &actor,
                TimelineKind::Action {
                    action_id: action_id.clone(),
                    kind,
                    device_id,
                    status,
                    detail: None,
                },
            );
            if approve {
                effects.execute.push(action_id);
            }
        }
        Op::ActionResult {
            action_id,
            ok,
            detail,
        } => {
            let detail: String = detail.chars().take(MAX_TEXT).collect();
            let action = find_action(incident, &action_id)?;
            if action.status != ActionStatus::Approved {
                return Err(LifecycleError::ActionState {
                    action_id,
                    status: action.status.as_str(),
                    expected: "approved",
                });
            }
            action.status = if ok {
                ActionStatus::Done
            } else {
                ActionStatus::Failed
            };
            action.outcome = Some(detail.clone());
            let (kind, device_id, status) = (action.kind, action.device_id.clone(), action.status);
            push(
                incident,
                at,
                &actor,
                TimelineKind::Action {
                    action_id,
                    kind,
                    device_id,
                    status,
                    detail: Some(detail),
                },
            );
        }
    }
    Ok(effects)
}

fn find_action<'a>(
    incident: &'a mut Incident,
    action_id: &str,
) -> Result<&'a mut ResponseAction, LifecycleError> {
    let id = incident.id.0.clone();
    incident
        .actions
        .iter_mut()
        .find(|a| a.id == action_id)
        .ok_or_else(|| LifecycleError::NoSuchAction {
            id,
            action_id: action_id.to_owned(),
        })
}

/// Adds an action (pending, or approved when automatic) with its timeline entry; returns
/// its id.
#[allow(clippy::too_many_arguments)]
pub(crate) fn request_action(
    incident: &mut Incident,
    kind: ActionKind,
    device_id: DeviceId,
    mode: ActionMode,
    rate_limit: Option<RateLimitParams>,
    origin: &str,
    actor: &str,
    at: Timestamp,
) -> String {
    let action_id = format!("A{}", incident.actions.len() + 1);
    let status = match mode {
        ActionMode::Auto => ActionStatus::Approved,
        ActionMode::Approval => ActionStatus::Pending,
    };
    incident.actions.push(ResponseAction {
        id: action_id.clone(),
        kind,
        device_id: device_id.clone(),
        mode,
        status,
        origin: origin.to_owned(),
        requested_by: actor.to_owned(),
        requested_at: at,
        rate_limit,
        decided_by: (mode == ActionMode::Auto).then(|| actor.to_owned()),
        decided_at: (mode == ActionMode::Auto).then_some(at),
        outcome: None,
    });
    push(
        incident,
        at,
        actor,
        TimelineKind::Action {
            action_id: action_id.clone(),
            kind,
            device_id,
            status,
            detail: Some(match &rate_limit {
                Some(params) => format!("requested ({origin}): {params}"),
                None => format!("requested ({origin})"),
            }),
        },
    );
    action_id
}

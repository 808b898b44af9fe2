//! Playbooks: which alert rules trigger which response actions, each automatic or waiting
//! for a supervisor's approval. They are data (the `[[playbooks]]` config section).

use model::{ActionKind, ActionMode, Alert, RateLimitParams, Severity};
use serde::{Deserialize, Serialize};

/// One playbook as the config writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Playbook {
    pub name: String,
    /// Alert rule patterns: an exact rule id (`actuation.uncommanded`), a prefix ending in
    /// `*` (`auth.*`), or `*` for every rule.
    pub rules: Vec<String>,
    /// Only alerts at least this severe trigger the playbook.
    #[serde(default)]
    pub min_severity: Option<Severity>,
    pub actions: Vec<PlaybookAction>,
}

/// One action of a playbook.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlaybookAction {
    pub action: ActionKind,
    /// `auto` or `approval` (the default: a person decides).
    #[serde(default)]
    pub mode: ActionMode,
    /// For `rate_limit`: the limit (`{ messages_per_s, burst, duration_s }`); without it,
    /// `RateLimitParams::default()` (1 message/s, burst 10, one hour).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitParams>,
}

impl PlaybookAction {
    /// The limit a `rate_limit` step applies (its own or the default); `None` for other
    /// actions.
    pub fn rate_limit_params(&self) -> Option<RateLimitParams> {
        (self.action == ActionKind::RateLimit).then(|| self.rate_limit.unwrap_or_default())
    }
}

impl Playbook {
    /// Checks the playbook on its own; returns a lowercase message naming the problem.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.trim().is_empty() {
            return Err("a playbook needs a name".into());
        }
        if self.rules.is_empty() {
            return Err(format!("playbook {:?} matches no rule", self.name));
        }
        for rule in &self.rules {
            let body = rule.strip_suffix('*').unwrap_or(rule);
            if body.contains('*') || (body.is_empty() && rule != "*") {
                return Err(format!(
                    "playbook {:?}: rule pattern {rule:?} may only end in '*'",
                    self.name
                ));
            }
        }
        if self.actions.is_empty() {
            return Err(format!("playbook {:?} has no actions", self.name));
        }
        for step in &self.actions {
            if let Some(params) = &step.rate_limit {
                if step.action != ActionKind::RateLimit {
                    return Err(format!(
                        "playbook {:?}: rate_limit parameters belong to action rate_limit, not {}",
                        self.name, step.action
                    ));
                }
                params
                    .validate()
                    .map_err(|e| format!("playbook {:?}: rate_limit: {e}", self.name))?;
            }
        }
        Ok(())
    }

    /// Whether an alert triggers this playbook.
    pub fn matches(&self, alert: &Alert) -> bool {
        if self.min_severity.is_some_and(|min| alert.severity < min) {
            return false;
        }
        self.rules
            .iter()
            .any(|pattern| match pattern.strip_suffix('*') {
                Some(prefix) => alert.rule.starts_with(prefix),
                None => alert.rule == *pattern,
            })
    }
}

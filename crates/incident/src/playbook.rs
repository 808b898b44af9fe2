//! Playbooks: which alert rules trigger which response actions, each automatic or waiting
//! for a supervisor's approval. They are data (the `[[playbooks]]` config section).

use model::{ActionKind, ActionMode, Alert, Severity};
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlaybookAction {
    pub action: ActionKind,
    /// `auto` or `approval` (the default: a person decides).
    #[serde(default)]
    pub mode: ActionMode,
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

//! Rules as data: the rule file format (documented in `rules/default.toml`), parsed entry
//! by entry so that one broken rule is reported and the rest still load.

use std::collections::HashMap;

use model::{DeviceClass, Severity};
use serde::Deserialize;

/// The rules compiled into the binary, loaded before any rule directory.
pub const DEFAULT_RULES: &str = include_str!("../rules/default.toml");

/// A problem with one rule file or one entry of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file name (or `default` for the built-in rules).
    pub file: String,
    /// Which entry, e.g. `reading[3]`; empty for the file as a whole.
    pub entry: String,
    pub message: String,
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.entry.is_empty() {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}: {}: {}", self.file, self.entry, self.message)
        }
    }
}

/// Plausibility and baseline settings of one reading of one class.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadingRule {
    pub class: DeviceClass,
    pub reading: String,
    #[serde(default)]
    pub min: Option<f64>,
    #[serde(default)]
    pub max: Option<f64>,
    #[serde(default)]
    pub max_rate_per_s: Option<f64>,
    #[serde(default)]
    pub never_decreases: bool,
    #[serde(default)]
    pub neighbours_tolerance: Option<f64>,
    #[serde(default)]
    pub baseline: bool,
}

/// One side of a totals rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadingRef {
    pub class: DeviceClass,
    pub reading: String,
}

/// The parts must keep their learned ratio to the whole.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TotalsRule {
    pub id: String,
    pub parts: ReadingRef,
    pub whole: ReadingRef,
    /// Relative deviation of the ratio from its learned value that raises an alert.
    pub tolerance: f64,
    #[serde(default = "default_interval")]
    pub interval_s: u64,
}

fn default_interval() -> u64 {
    60
}

/// What a threshold rule groups its counts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    Device,
    Source,
}

/// A counting rule: `count` matching events per group within `window_s`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdRule {
    pub id: String,
    pub severity: Severity,
    pub title: String,
    #[serde(default)]
    pub explanation: String,
    /// A security action (`auth_failure`, `publish_denied`, ...) or an event kind
    /// (`telemetry`, `state`, `flow`, `command`).
    pub event: String,
    pub group_by: GroupBy,
    pub count: usize,
    pub window_s: u64,
}

/// Every rule loaded so far.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    pub readings: Vec<ReadingRule>,
    pub totals: Vec<TotalsRule>,
    pub thresholds: Vec<ThresholdRule>,
}

const EVENT_NAMES: &[&str] = &[
    "telemetry",
    "state",
    "flow",
    "command",
    "connect_accepted",
    "connect_refused",
    "auth_failure",
    "publish_denied",
    "subscribe_denied",
    "malformed_packet",
    "oversized_payload",
    "payload_invalid",
    "client_id_takeover",
    "disconnect",
];

impl RuleSet {
    /// The built-in rules alone.
    pub fn defaults() -> (RuleSet, Vec<Diagnostic>) {
        let mut rules = RuleSet::default();
        let diagnostics = rules.load("default", DEFAULT_RULES);
        (rules, diagnostics)
    }

    /// Adds the rules of one file. Entries that do not parse or validate are reported and
    /// skipped; an entry for the same class and reading (or the same id) replaces the
    /// earlier one.
    pub fn load(&mut self, file: &str, text: &str) -> Vec<Diagnostic> {
        let mut diagnostics = Vec::new();
        let diag = |entry: String, message: String| Diagnostic {
            file: file.to_owned(),
            entry,
            message,
        };
        let doc: toml::Table = match text.parse() {
            Ok(doc) => doc,
            Err(err) => {
                diagnostics.push(diag(String::new(), format!("not TOML: {err}")));
                return diagnostics;
            }
        };
        for (key, value) in doc {
            match key.as_str() {
                "version" => {
                    if value.as_integer() != Some(1) {
                        diagnostics.push(diag(
                            "version".into(),
                            "unsupported rule file version (expected 1)".into(),
                        ));
                    }
                }
                "reading" | "totals" | "threshold" => {
                    let Some(entries) = value.as_array() else {
                        diagnostics.push(diag(
                            key.clone(),
                            format!("`{key}` must be an array of tables ([[{key}]])"),
                        ));
                        continue;
                    };
                    for (i, entry) in entries.iter().enumerate() {
                        let name = format!("{key}[{i}]");
                        if let Err(message) = self.add(&key, entry.clone()) {
                            diagnostics.push(diag(name, message));
                        }
                    }
                }
                other => diagnostics.push(diag(
                    other.to_owned(),
                    "unknown section (expected reading, totals or threshold)".into(),
                )),
            }
        }
        diagnostics
    }

    fn add(&mut self, section: &str, entry: toml::Value) -> Result<(), String> {
        match section {
            "reading" => {
                let rule: ReadingRule = entry.try_into().map_err(|e| clean(&e))?;
                check_reading(&rule)?;
                match self
                    .readings
                    .iter_mut()
                    .find(|r| r.class == rule.class && r.reading == rule.reading)
                {
                    Some(slot) => *slot = rule,
                    None => self.readings.push(rule),
                }
            }
            "totals" => {
                let rule: TotalsRule = entry.try_into().map_err(|e| clean(&e))?;
                if !(rule.tolerance.is_finite() && rule.tolerance > 0.0) {
                    return Err("tolerance must be a positive number".into());
                }
                if rule.interval_s == 0 {
                    return Err("interval_s must be at least 1".into());
                }
                check_id(&rule.id)?;
                replace_by_id(&mut self.totals, rule, |r| &r.id);
            }
            _ => {
                let rule: ThresholdRule = entry.try_into().map_err(|e| clean(&e))?;
                check_id(&rule.id)?;
                if !EVENT_NAMES.contains(&rule.event.as_str()) {
                    return Err(format!(
                        "unknown event {:?} (expected one of: {})",
                        rule.event,
                        EVENT_NAMES.join(", ")
                    ));
                }
                if rule.count == 0 || rule.count > 100_000 {
                    return Err("count must be between 1 and 100000".into());
                }
                if rule.window_s == 0 {
                    return Err("window_s must be at least 1".into());
                }
                if rule.title.trim().is_empty() {
                    return Err("title must not be empty".into());
                }
                replace_by_id(&mut self.thresholds, rule, |r| &r.id);
            }
        }
        Ok(())
    }

    /// The reading rules by class, for the engine's lookups.
    pub(crate) fn readings_by_class(&self) -> HashMap<DeviceClass, Vec<ReadingRule>> {
        let mut map: HashMap<DeviceClass, Vec<ReadingRule>> = HashMap::new();
        for rule in &self.readings {
            map.entry(rule.class).or_default().push(rule.clone());
        }
        map
    }
}

fn replace_by_id<T>(list: &mut Vec<T>, rule: T, id: impl Fn(&T) -> &String) {
    match list.iter().position(|r| id(r) == id(&rule)) {
        Some(i) => list[i] = rule,
        None => list.push(rule),
    }
}

fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty()
        || id.len() > 64
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(format!(
            "id {id:?} must be 1 to 64 characters of letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(())
}

fn check_reading(rule: &ReadingRule) -> Result<(), String> {
    if rule.reading.is_empty() || rule.reading.len() > 64 {
        return Err("reading must be 1 to 64 characters".into());
    }
    for (name, value) in [
        ("min", rule.min),
        ("max", rule.max),
        ("max_rate_per_s", rule.max_rate_per_s),
        ("neighbours_tolerance", rule.neighbours_tolerance),
    ] {
        if let Some(v) = value
            && !v.is_finite()
        {
            return Err(format!("{name} must be a finite number"));
        }
    }
    if let (Some(min), Some(max)) = (rule.min, rule.max)
        && min > max
    {
        return Err(format!("min {min} is greater than max {max}"));
    }
    if rule.max_rate_per_s.is_some_and(|r| r <= 0.0) {
        return Err("max_rate_per_s must be positive".into());
    }
    if rule.neighbours_tolerance.is_some_and(|t| t <= 0.0) {
        return Err("neighbours_tolerance must be positive".into());
    }
    Ok(())
}

/// toml's messages carry a source excerpt for the whole document; one line is enough.
fn clean(err: &toml::de::Error) -> String {
    err.message().trim().to_owned()
}

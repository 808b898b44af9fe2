//! The incident engine: groups alerts into [`model::Incident`]s, advances their lifecycle,
//! and proposes the response actions playbooks ask for.
//!
//! An alert joins an open incident (new, triaged or contained) when it is about the same
//! device, the same threat indicator, the same source address (one campaign), or the same
//! zone within [`CorrelatorConfig::zone_window_s`] of that incident's last alert; the first of these that holds wins, in that order. Otherwise it opens a new
//! incident. A repeat of an alert already in an incident updates its count.
//!
//! **Architecture invariant:** the engine is sans-IO. Time is the alert's `ts` and the `at`
//! of each operation; it never reads the clock, and it does not fail on data: alerts it
//! cannot use are counted. State is bounded: only open incidents are tracked, each holds at
//! most [`CorrelatorConfig::max_alerts`] alerts and [`CorrelatorConfig::max_timeline`]
//! alert entries on its timeline.

use std::collections::{BTreeMap, HashMap};

use model::{
    Alert, AlertId, Correlation, Incident, IncidentAlert, IncidentId, IncidentState, IncidentTimes,
    Severity, TimelineKind, Timestamp,
};
use serde::{Deserialize, Serialize};

pub mod lifecycle;
pub mod playbook;

pub use crate::lifecycle::{Effects, LifecycleError, Op, apply};
pub use crate::playbook::{Playbook, PlaybookAction};

/// The `[incidents]` config section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CorrelatorConfig {
    /// Alerts in the same zone within this many seconds of an incident's last alert there
    /// join that incident.
    pub zone_window_s: u64,
    /// The most alerts one incident lists (later ones still raise its severity).
    pub max_alerts: usize,
    /// The most alert entries on one timeline (state changes, notes and actions are
    /// always kept).
    pub max_timeline: usize,
    /// The most incidents tracked open at once; beyond it the oldest stops correlating.
    pub max_open: usize,
    /// The TLP 2.0 level a new incident's shared intelligence carries until someone changes
    /// it: `clear`, `green`, `amber`, `amber+strict` or `red`.
    pub default_tlp: model::Tlp,
}

impl Default for CorrelatorConfig {
    fn default() -> CorrelatorConfig {
        CorrelatorConfig {
            zone_window_s: 900,
            max_alerts: 500,
            max_timeline: 1000,
            max_open: 10_000,
            default_tlp: model::Tlp::Amber,
        }
    }
}

/// What happened to one alert.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertOutcome {
    /// The incident it joined or opened, after the change.
    pub incident: Incident,
    pub created: bool,
    /// Whether the alert was a repeat of one the incident already held.
    pub repeat: bool,
    /// Actions a playbook made approved (automatic ones) for the caller to execute.
    pub execute: Vec<String>,
    /// Every action a playbook added for this alert (automatic and pending ones).
    pub proposed: Vec<String>,
}

/// Counters for status displays and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CorrelatorStats {
    pub open: usize,
    pub alerts: u64,
    /// Playbook actions that named no device (the alert was about a source address only).
    pub actions_without_device: u64,
    /// Open incidents no longer tracked because `max_open` was reached.
    pub evicted: u64,
}

/// The correlator: open incidents and the alerts they hold.
#[derive(Debug)]
pub struct Correlator {
    config: CorrelatorConfig,
    playbooks: Vec<Playbook>,
    next_seq: u64,
    open: BTreeMap<IncidentId, Incident>,
    alert_index: HashMap<AlertId, IncidentId>,
    stats: CorrelatorStats,
}

/// The timeline actor of correlation.
pub const CORRELATOR: &str = "correlator";

impl Correlator {
    /// A correlator whose next incident is `INC-<next_seq>`.
    pub fn new(config: CorrelatorConfig, playbooks: Vec<Playbook>, next_seq: u64) -> Correlator {
        Correlator {
            config,
            playbooks,
            next_seq: next_seq.max(1),
            open: BTreeMap::new(),
            alert_index: HashMap::new(),
            stats: CorrelatorStats::default(),
        }
    }

    pub fn stats(&self) -> CorrelatorStats {
        CorrelatorStats {
            open: self.open.len(),
            ..self.stats
        }
    }

    pub fn playbooks(&self) -> &[Playbook] {
        &self.playbooks
    }

    /// An open incident.
    pub fn get(&self, id: &IncidentId) -> Option<&Incident> {
        self.open.get(id)
    }

    /// Tracks an incident (restored from the store at start, or changed by an operation);
    /// incidents that are no longer open stop being tracked.
    pub fn track(&mut self, incident: Incident) {
        if let Some(seq) = incident.id.seq() {
            self.next_seq = self.next_seq.max(seq + 1);
        }
        let id = incident.id.clone();
        if !incident.state.is_open() {
            self.untrack(&id);
            return;
        }
        for alert in &incident.alerts {
            self.alert_index.insert(alert.id.clone(), id.clone());
        }
        self.open.insert(id, incident);
        while self.open.len() > self.config.max_open {
            let Some(oldest) = self.open.keys().next().cloned() else {
                break;
            };
            self.untrack(&oldest);
            self.stats.evicted += 1;
        }
    }

    fn untrack(&mut self, id: &IncidentId) {
        if let Some(incident) = self.open.remove(id) {
            for alert in &incident.alerts {
                if self.alert_index.get(&alert.id) == Some(id) {
                    self.alert_index.remove(&alert.id);
                }
            }
        }
    }

    /// Applies an operation to an incident (tracked or given) and tracks the result.
    pub fn apply(
        &mut self,
        mut incident: Incident,
        op: Op,
        actor: &str,
        at: Timestamp,
    ) -> Result<(Incident, Effects), LifecycleError> {
        let effects = apply(&mut incident, op, actor, at)?;
        self.track(incident.clone());
        Ok((incident, effects))
    }

    /// Correlates one alert (new or a merged repeat).
    pub fn on_alert(&mut self, alert: &Alert) -> AlertOutcome {
        self.stats.alerts += 1;
        let at = alert.last_ts.max(alert.ts);
        if let Some(id) = self.alert_index.get(&alert.id).cloned()
            && let Some(incident) = self.open.get_mut(&id)
        {
            if let Some(held) = incident.alerts.iter_mut().find(|a| a.id == alert.id) {
                // An alert delivered again (a partition or the correlation moved) may be an
                // older version: it never lowers what the incident holds.
                held.count = held.count.max(alert.count);
                held.last_ts = held.last_ts.max(alert.last_ts);
                held.severity = held.severity.max(alert.severity);
            }
            raise_severity(incident, alert.severity, at);
            incident.updated_at = incident.updated_at.max(at);
            return AlertOutcome {
                incident: incident.clone(),
                created: false,
                repeat: true,
                execute: Vec::new(),
                proposed: Vec::new(),
            };
        }
        let indicator = indicator_of(alert);
        let found = self.find(alert, indicator.as_deref());
        let (id, correlation, created) = match found {
            Some((id, correlation)) => (id, correlation, false),
            None => {
                let id = IncidentId::from_seq(self.next_seq);
                self.next_seq += 1;
                let incident = self.open_incident(id.clone(), alert);
                self.open.insert(id.clone(), incident);
                (id, Correlation::Opened, true)
            }
        };
        let config = self.config.clone();
        let incident = self
            .open
            .get_mut(&id)
            .expect("the incident was found or inserted above");
        add_alert(incident, alert, indicator, correlation, &config, at);
        self.alert_index.insert(alert.id.clone(), id.clone());
        let mut execute = Vec::new();
        let mut proposed = Vec::new();
        for playbook in &self.playbooks {
            if !playbook.matches(alert) {
                continue;
            }
            let Some(device_id) = alert.device_id.clone() else {
                self.stats.actions_without_device += playbook.actions.len() as u64;
                continue;
            };
            for step in &playbook.actions {
                // One live action of a kind per device and incident.
                let live = incident.actions.iter().any(|a| {
                    a.kind == step.action
                        && a.device_id == device_id
                        && !matches!(
                            a.status,
                            model::ActionStatus::Failed | model::ActionStatus::Rejected
                        )
                });
                if live {
                    continue;
                }
                let actor = format!("playbook:{}", playbook.name);
                let action_id = lifecycle::request_action(
                    incident,
                    step.action,
                    device_id.clone(),
                    step.mode,
                    step.rate_limit_params(),
                    &playbook.name,
                    &actor,
                    at,
                );
                if step.mode == model::ActionMode::Auto {
                    execute.push(action_id.clone());
                }
                proposed.push(action_id);
            }
        }
        let incident = incident.clone();
        if created && self.open.len() > self.config.max_open {
            self.track(incident.clone());
        }
        AlertOutcome {
            incident,
            created,
            repeat: false,
            execute,
            proposed,
        }
    }

    fn find(&self, alert: &Alert, indicator: Option<&str>) -> Option<(IncidentId, Correlation)> {
        let window_ms =
            i64::try_from(self.config.zone_window_s.saturating_mul(1000)).unwrap_or(i64::MAX);
        let mut by_indicator = None;
        let mut by_source = None;
        let mut by_zone = None;
        for (id, incident) in &self.open {
            if let Some(device) = &alert.device_id
                && incident.devices.contains(device)
            {
                return Some((id.clone(), Correlation::Device(device.to_string())));
            }
            if by_indicator.is_none()
                && let Some(ind) = indicator
                && incident.indicators.iter().any(|i| i == ind)
            {
                by_indicator = Some((id.clone(), Correlation::Indicator(ind.to_owned())));
            }
            if by_source.is_none()
                && let Some(source) = &alert.source
                && incident.sources.contains(source)
            {
                by_source = Some((id.clone(), Correlation::Source(source.clone())));
            }
            if by_zone.is_none()
                && let Some(zone) = &alert.zone
                && incident.zones.contains(zone)
            {
                let last_alert = incident
                    .alerts
                    .iter()
                    .map(|a| a.last_ts)
                    .max()
                    .unwrap_or(incident.times.first_alert);
                if (alert.ts.0 - last_alert.0).abs() <= window_ms {
                    by_zone = Some((id.clone(), Correlation::Zone(zone.clone())));
                }
            }
        }
        by_indicator.or(by_source).or(by_zone)
    }

    fn open_incident(&self, id: IncidentId, alert: &Alert) -> Incident {
        let first_evidence = alert
            .evidence
            .iter()
            .map(|e| e.ts)
            .min()
            .unwrap_or(alert.ts)
            .min(alert.ts);
        Incident {
            id,
            title: alert.title.clone(),
            state: IncidentState::New,
            severity: alert.severity,
            tlp: self.config.default_tlp,
            owner: None,
            devices: Vec::new(),
            zones: Vec::new(),
            sources: Vec::new(),
            indicators: Vec::new(),
            alerts: Vec::new(),
            actions: Vec::new(),
            times: IncidentTimes {
                first_evidence,
                first_alert: alert.ts,
                ..IncidentTimes::default()
            },
            created_at: alert.ts,
            updated_at: alert.ts,
            timeline: Vec::new(),
            timeline_dropped: 0,
        }
    }
}

/// At most this many devices, zones, sources and indicators are listed per incident.
const MAX_KEYS: usize = 64;

fn add_key(list: &mut Vec<String>, key: &str) {
    if list.len() < MAX_KEYS && !list.iter().any(|k| k == key) {
        list.push(key.to_owned());
    }
}

fn raise_severity(incident: &mut Incident, severity: Severity, at: Timestamp) {
    if severity > incident.severity {
        let from = incident.severity;
        incident.severity = severity;
        lifecycle::push(
            incident,
            at,
            CORRELATOR,
            TimelineKind::SeverityRaised { from, to: severity },
        );
    }
}

fn add_alert(
    incident: &mut Incident,
    alert: &Alert,
    indicator: Option<String>,
    correlation: Correlation,
    config: &CorrelatorConfig,
    at: Timestamp,
) {
    if let Some(device) = &alert.device_id
        && !incident.devices.contains(device)
        && incident.devices.len() < MAX_KEYS
    {
        incident.devices.push(device.clone());
    }
    if let Some(zone) = &alert.zone {
        add_key(&mut incident.zones, zone);
    }
    if let Some(source) = &alert.source {
        add_key(&mut incident.sources, source);
    }
    if let Some(indicator) = &indicator {
        add_key(&mut incident.indicators, indicator);
    }
    let indicator_of_alert = indicator;
    let first_evidence = alert.evidence.iter().map(|e| e.ts).min();
    if let Some(ts) = first_evidence
        && ts < incident.times.first_evidence
    {
        incident.times.first_evidence = ts;
    }
    raise_severity(incident, alert.severity, at);
    let alert_entries = incident
        .timeline
        .iter()
        .filter(|e| matches!(e.what, TimelineKind::AlertAdded { .. }))
        .count();
    if incident.alerts.len() >= config.max_alerts || alert_entries >= config.max_timeline {
        incident.timeline_dropped += 1;
        incident.updated_at = incident.updated_at.max(at);
        return;
    }
    incident.alerts.push(IncidentAlert {
        id: alert.id.clone(),
        rule: alert.rule.clone(),
        severity: alert.severity,
        ts: alert.ts,
        last_ts: alert.last_ts,
        count: alert.count,
        device_id: alert.device_id.clone(),
        source: alert.source.clone(),
        title: alert.title.clone(),
        correlation: correlation.clone(),
        indicator: indicator_of_alert,
    });
    lifecycle::push(
        incident,
        alert.ts,
        CORRELATOR,
        TimelineKind::AlertAdded {
            alert_id: alert.id.clone(),
            rule: alert.rule.clone(),
            severity: alert.severity,
            correlation,
        },
    );
    incident.updated_at = incident.updated_at.max(at);
}

/// The STIX indicator id (`indicator--<uuid>`) an alert names in its key (`intel.indicator`
/// alerts are keyed `<indicator id>/<subject>`), rule, title, explanation or evidence.
pub fn indicator_of(alert: &Alert) -> Option<String> {
    [alert.key.as_str(), alert.rule.as_str()]
        .into_iter()
        .chain([alert.title.as_str(), alert.explanation.as_str()])
        .chain(alert.evidence.iter().map(|e| e.summary.as_str()))
        .find_map(find_indicator)
}

fn find_indicator(text: &str) -> Option<String> {
    const PREFIX: &str = "indicator--";
    let mut rest = text;
    while let Some(pos) = rest.find(PREFIX) {
        let after = &rest[pos + PREFIX.len()..];
        let len = after
            .bytes()
            .take_while(|b| b.is_ascii_hexdigit() || *b == b'-')
            .count();
        if len == 36 {
            return Some(format!("{PREFIX}{}", &after[..len]).to_ascii_lowercase());
        }
        rest = after;
    }
    None
}

#[cfg(test)]
mod tests;

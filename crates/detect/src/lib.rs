//! The detection engine: consumes normalised [`model::Event`]s in time order and emits
//! [`model::Alert`]s.
//!
//! **Architecture invariant:** the engine is sans-IO. It never awaits, never reads the wall
//! clock and never touches disk or network; time is the `ts` of its input events and the
//! `now` of [`Engine::tick`]. That is what lets a simulated day replay in seconds and keeps
//! its tests in milliseconds. Rule files are read by the caller and handed over as text.
//!
//! **Architecture invariant:** the engine does not fail on data. An event it cannot use is
//! counted and skipped; a broken rule is reported as a [`Diagnostic`] and the rest load.
//!
//! The engines inside, by the five kinds OT/IoT monitoring combines:
//! - policy ([`zones`], `auth`): conduits between zones, unregistered addresses, topic
//!   misuse, identity spoofing, firmware changes, credentials shared across devices;
//! - rate and threshold: auth failures, reconnect storms, message floods, actuation bursts,
//!   scans, floods, remote-login brute force, and the analysts' own [`rules::ThresholdRule`]s;
//! - physical plausibility ([`rules::ReadingRule`]): range, rate of change, agreement with
//!   neighbouring sensors, and sums that must keep their ratio to a total;
//! - learned behaviour: per-device and per-class baselines of readings (a learning period,
//!   then alerting), destinations per device, and an online anomaly score over flow
//!   features ([`anomaly`]);
//! - known threats: STIX indicators matched live ([`indicator`]);
//! - and the operational check no product does: actuations that no authorised command
//!   explains.
//!
//! Identical alerts (same rule and key) within the merge window are folded into one alert
//! whose `count` and `last_ts` grow; the engine emits the updated alert so stores upsert it.
//! `learn` and `mute` ([`Engine::learn`], [`Engine::mute`]) silence a rule for one key,
//! and `learn` also folds what the alert saw into the baseline.

pub mod anomaly;
mod auth;
mod config;
mod flows;
pub mod indicator;
mod learned;
mod reports;
pub mod rules;
mod telemetry;
mod window;
pub mod workload;
pub mod zones;

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;

use model::{
    Alert, AlertId, DeviceClass, DeviceId, Event, EventKind, Evidence, Severity, Timestamp,
};

pub use crate::config::{
    ActuationConfig, BaselineConfig, BruteForceConfig, ConduitConfig, DetectConfig, FirmwareConfig,
    FlowConfig, RateConfig, ZoneConfig, parse_cidr,
};
pub use crate::indicator::{Indicator, IndicatorError};
pub use crate::learned::{LEARNED_VERSION, Learned, LearnedError, Restored};
pub use crate::reports::ReportsConfig;
pub use crate::rules::{Diagnostic, RuleSet};

/// The rule ids the engine has built in.
pub const BUILTIN_RULES: &[&str] = &[
    "auth.brute_force.device",
    "auth.brute_force.source",
    "actuation.uncommanded",
    "mqtt.topic_abuse",
    "mqtt.protocol_violation",
    "mqtt.rate_limited",
    "identity.client_id_takeover",
    "identity.certificate_mismatch",
    "rate.connect_flood",
    "rate.message_flood",
    "rate.actuation_burst",
    "policy.conduit",
    "policy.new_device",
    "policy.firmware_change",
    "policy.shared_credentials",
    "plausibility.range",
    "plausibility.rate_of_change",
    "plausibility.neighbours",
    "plausibility.totals",
    "baseline.telemetry",
    "baseline.flow",
    "flow.scan",
    "flow.flood",
    "flow.brute_force",
    "flow.anomaly",
    "intel.indicator",
    "reports.siren_unconfirmed",
];

/// The built-in rules whose state spans devices: windows keyed by a source address, a
/// device class or a zone, comparisons with other devices, models learned across a class,
/// and the registry as a whole. When detection is split by device over several engines
/// (bus partitions), each engine sees part of their evidence, so they must run in one
/// engine that sees every event ([`Scope::Shared`]), and the per-device engines skip them
/// ([`Scope::Local`]). `[[threshold]]` rules grouped by source belong here too.
pub const CROSS_DEVICE_RULES: &[&str] = &[
    "auth.brute_force.source",
    "rate.actuation_burst",
    "policy.shared_credentials",
    "plausibility.neighbours",
    "plausibility.totals",
    "baseline.telemetry",
    "flow.scan",
    "flow.flood",
    "flow.brute_force",
    "flow.anomaly",
    "reports.siren_unconfirmed",
];

/// Which rules an engine raises alerts for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Scope {
    /// Every rule (one engine sees every event: the default).
    #[default]
    All,
    /// Only rules whose state stays within one device: an engine fed one partition of the
    /// devices.
    Local,
    /// Only the cross-device rules ([`CROSS_DEVICE_RULES`], source-grouped thresholds): the
    /// one engine fed every event beside the partition engines.
    Shared,
}

/// What the engine knows about a registered device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceMeta {
    pub class: DeviceClass,
    pub zone: String,
    /// The firmware version in the registry.
    pub firmware: String,
    /// The addresses flows are matched by.
    pub addresses: Vec<IpAddr>,
    /// Fingerprints of the device's credentials (secret hashes, certificate digests).
    pub credentials: Vec<String>,
    /// Quarantined by incident response: every flow to or from it is outside the conduits.
    pub quarantined: bool,
}

impl DeviceMeta {
    pub fn new(class: DeviceClass, zone: impl Into<String>) -> DeviceMeta {
        DeviceMeta {
            class,
            zone: zone.into(),
            firmware: String::new(),
            addresses: Vec::new(),
            credentials: Vec::new(),
            quarantined: false,
        }
    }
}

/// Counters describing what the engine did; cheap to read at any time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineStats {
    pub events: u64,
    pub alerts_raised: u64,
    pub alerts_merged: u64,
    /// Alerts not raised because the rule was learned or muted for that key.
    pub alerts_suppressed: u64,
    /// Events that carried nothing a rule could use (for example a state event from a
    /// device the engine does not know).
    pub skipped: u64,
    /// Keys currently holding window state.
    pub tracked_keys: usize,
    pub devices: usize,
    pub indicators: usize,
}

/// Why a rule stays quiet for one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suppression {
    /// An analyst said this is normal: it is part of the baseline from now on.
    Learned,
    /// An analyst silenced it, until the given time (or for good).
    Muted { until: Option<Timestamp> },
}

/// FNV-1a, for maps keyed by values the registry controls (device ids, reading names).
#[derive(Default)]
pub(crate) struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut hash = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for byte in bytes {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = hash;
    }
}

pub(crate) type FnvMap<K, V> = HashMap<K, V, BuildHasherDefault<Fnv>>;

/// An alert about to be raised.
#[derive(Debug)]
pub(crate) struct AlertDraft {
    pub rule: &'static str,
    pub key: String,
    pub severity: Severity,
    pub device_id: Option<DeviceId>,
    pub zone: Option<String>,
    pub source: Option<String>,
    pub title: String,
    pub explanation: String,
}

/// The detection engine. Feed it events in timestamp order with [`Engine::process`]; call
/// [`Engine::tick`] now and then so that idle state is evicted.
#[derive(Debug)]
pub struct Engine {
    pub(crate) config: DetectConfig,
    pub(crate) disabled: HashSet<String>,
    pub(crate) rules: RuleSet,
    pub(crate) diagnostics: Vec<Diagnostic>,
    pub(crate) zones: zones::Zones,
    pub(crate) update_servers: Vec<(IpAddr, u8)>,
    pub(crate) devices: telemetry::Devices,
    pub(crate) auth: auth::AuthState,
    pub(crate) flows: flows::FlowRules,
    pub(crate) indicators: indicator::IndicatorSet,
    /// Citizen reports correlated with sirens (`reports.rs`).
    pub(crate) reports: reports::ReportState,
    /// Open alerts by (rule, key), for merging repeats.
    open: HashMap<(&'static str, String), Alert>,
    suppressed: HashMap<(String, String), Suppression>,
    /// Alerts found outside `process` (at registration), emitted with the next event.
    pending: Vec<(AlertDraft, Evidence)>,
    stats: EngineStats,
    scope: Scope,
    /// The latest event time processed (what a [`Learned`] snapshot is as of).
    pub(crate) last_event_ts: i64,
}

impl Engine {
    /// An engine with the built-in rules.
    pub fn new(config: DetectConfig) -> Engine {
        let (rules, diagnostics) = RuleSet::defaults();
        let mut engine = Engine::with_rules(config, rules);
        engine.diagnostics.extend(diagnostics);
        engine
    }

    /// An engine with the given rules (see [`RuleSet::load`]); problems with the zone plan
    /// are in [`Engine::diagnostics`].
    pub fn with_rules(config: DetectConfig, rules: RuleSet) -> Engine {
        let (zones, mut diagnostics) = zones::Zones::new(&config.zones, &config.conduits);
        let mut update_servers = Vec::new();
        for (i, cidr) in config.firmware.update_servers.iter().enumerate() {
            match parse_cidr(cidr) {
                Ok(range) => update_servers.push(range),
                Err(message) => diagnostics.push(Diagnostic {
                    file: "config".into(),
                    entry: format!("detect.firmware.update_servers[{i}]"),
                    message,
                }),
            }
        }
        let devices = telemetry::Devices::new(&rules);
        let flows = flows::FlowRules::new(&config);
        Engine {
            disabled: config.disabled_rules.iter().cloned().collect(),
            auth: auth::AuthState::new(&rules),
            config,
            rules,
            diagnostics,
            zones,
            update_servers,
            devices,
            flows,
            indicators: indicator::IndicatorSet::default(),
            reports: reports::ReportState::default(),
            open: HashMap::new(),
            suppressed: HashMap::new(),
            pending: Vec::new(),
            stats: EngineStats::default(),
            scope: Scope::All,
            last_event_ts: i64::MIN,
        }
    }

    /// Restricts the rules this engine raises alerts for (see [`Scope`]). Every rule still
    /// keeps its state, so the same events give the same alerts as one engine of scope
    /// `All`, split between the engines.
    pub fn set_scope(&mut self, scope: Scope) {
        self.scope = scope;
    }

    pub fn scope(&self) -> Scope {
        self.scope
    }

    /// Whether `rule`'s state spans devices (see [`CROSS_DEVICE_RULES`]).
    pub fn is_cross_device(&self, rule: &str) -> bool {
        CROSS_DEVICE_RULES.contains(&rule)
            || self
                .rules
                .thresholds
                .iter()
                .any(|t| t.id == rule && t.group_by == rules::GroupBy::Source)
    }

    fn in_scope(&self, rule: &str) -> bool {
        match self.scope {
            Scope::All => true,
            Scope::Local => !self.is_cross_device(rule),
            Scope::Shared => self.is_cross_device(rule),
        }
    }

    /// Takes over alerts another engine raised and may still merge repeats into (a
    /// detection worker that died, whose partition this engine now runs): each becomes the
    /// open alert of its rule and key unless this engine already holds one with the same id
    /// and at least its count. Returns the ids of open alerts it displaced, which this
    /// engine raised for a rule and key the adopted alert already covers (raised again from
    /// a shorter history); they should not be stored. Alerts of unknown rules, or already
    /// past the merge window at `now`, are ignored.
    pub fn adopt_open_alerts(&mut self, alerts: Vec<Alert>, now: Timestamp) -> Vec<AlertId> {
        let merge = self.config.merge_window_ms();
        let mut displaced = Vec::new();
        for alert in alerts {
            if now.as_millis() - alert.last_ts.as_millis() > merge {
                continue;
            }
            let rule = BUILTIN_RULES
                .iter()
                .copied()
                .find(|r| *r == alert.rule)
                .or_else(|| self.auth.threshold_id(&alert.rule));
            let Some(rule) = rule else { continue };
            let slot = (rule, alert.key.clone());
            match self.open.get(&slot) {
                Some(open) if open.id == alert.id && open.count >= alert.count => {}
                Some(open) if open.id != alert.id && open.ts < alert.ts => {}
                Some(open) => {
                    if open.id != alert.id {
                        displaced.push(open.id.clone());
                    }
                    self.open.insert(slot, alert);
                }
                None => {
                    self.open.insert(slot, alert);
                }
            }
        }
        displaced
    }

    /// Problems found in the rules and the zone plan (each skipped; the rest work).
    pub fn diagnostics(&self) -> &[Diagnostic] {
        &self.diagnostics
    }

    pub fn config(&self) -> &DetectConfig {
        &self.config
    }

    /// The rules the engine runs.
    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// Tells the engine about a device (or updates it).
    pub fn register_device(&mut self, id: DeviceId, meta: DeviceMeta) {
        let shared = self.devices.register(id.clone(), &meta);
        for (credential, others) in shared {
            let mut ids: Vec<String> = others.iter().map(|d| d.to_string()).collect();
            ids.sort();
            let short = &credential[..credential.len().min(24)];
            self.pending.push((
                AlertDraft {
                    rule: "policy.shared_credentials",
                    key: credential.clone(),
                    severity: Severity::High,
                    device_id: Some(id.clone()),
                    zone: Some(meta.zone.clone()),
                    source: None,
                    title: format!("{} devices share one credential", ids.len()),
                    explanation: format!(
                        "devices {} are registered with the same credential ({short}...). Every \
                         device must prove its own identity (ETSI EN 303 645 5.1): anyone holding \
                         this credential can pose as all of them. Issue each its own secret or \
                         certificate.",
                        ids.join(", ")
                    ),
                },
                Evidence {
                    ts: Timestamp::from_millis(0),
                    device_id: Some(id.clone()),
                    summary: format!("registered with credential {short}..."),
                },
            ));
        }
    }

    /// Adds or replaces threat indicators (by STIX id); returns those whose pattern does not
    /// compile, with the reason. The others are matched from the next event on.
    pub fn upsert_indicators(&mut self, indicators: Vec<Indicator>) -> Vec<IndicatorError> {
        self.indicators.upsert(indicators)
    }

    /// Stops matching these indicators.
    pub fn remove_indicators(&mut self, ids: &[String]) {
        self.indicators.remove(ids);
    }

    /// How many indicators are loaded.
    pub fn indicator_count(&self) -> usize {
        self.indicators.len()
    }

    /// Marks what `rule` saw for `key` as normal: the rule stays quiet for that key from
    /// now on (a learned conduit, a known destination, an accepted firmware), except for
    /// `baseline.telemetry`, whose reading relearns its band and keeps being judged.
    pub fn learn(&mut self, rule: &str, key: &str) {
        self.open.retain(|(r, k), _| !(*r == rule && k == key));
        if rule == "baseline.telemetry" {
            // The reading relearns its band from what it reports now; a later departure
            // from the new band alerts again.
            if let Some((device, reading)) = key.split_once('/') {
                self.devices.relearn(device, reading);
            }
            return;
        }
        self.suppressed
            .insert((rule.to_owned(), key.to_owned()), Suppression::Learned);
    }

    /// Silences `rule` for `key` until `until` (or for good), without calling it normal.
    pub fn mute(&mut self, rule: &str, key: &str, until: Option<Timestamp>) {
        self.suppressed.insert(
            (rule.to_owned(), key.to_owned()),
            Suppression::Muted { until },
        );
    }

    /// Lifts a learn or mute.
    pub fn unsuppress(&mut self, rule: &str, key: &str) {
        self.suppressed.remove(&(rule.to_owned(), key.to_owned()));
    }

    /// The current learns and mutes.
    pub fn suppressions(&self) -> Vec<(String, String, Suppression)> {
        let mut all: Vec<_> = self
            .suppressed
            .iter()
            .map(|((r, k), s)| (r.clone(), k.clone(), *s))
            .collect();
        all.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        all
    }

    pub fn stats(&self) -> EngineStats {
        EngineStats {
            tracked_keys: self.auth.tracked()
                + self.flows.tracked()
                + self.open.len()
                + self.reports.tracked(),
            devices: self.devices.len(),
            indicators: self.indicators.len(),
            ..self.stats.clone()
        }
    }

    /// Approximate bytes of state held per registered device (for the 1 KiB budget).
    pub fn state_bytes_per_device(&self) -> usize {
        (self.devices.state_bytes() + self.flows.bytes()) / self.devices.len().max(1)
    }

    /// Processes one event; alerts raised or updated are pushed to `out`.
    pub fn process(&mut self, event: &Event, out: &mut Vec<Alert>) {
        self.stats.events += 1;
        self.last_event_ts = self.last_event_ts.max(event.ts.as_millis());
        if !self.pending.is_empty() {
            for (draft, mut evidence) in std::mem::take(&mut self.pending) {
                evidence.ts = event.ts;
                self.raise_with(draft, evidence, out);
            }
        }
        self.observe_reports(event, out);
        match &event.kind {
            EventKind::Security(sec) => auth::on_security(self, event, sec, out),
            EventKind::State { readings } | EventKind::Telemetry { readings } => {
                telemetry::on_readings(self, event, readings, out)
            }
            EventKind::Command { .. } => telemetry::on_command(self, event, out),
            EventKind::Flow(flow) => flows::on_flow(self, event, flow, out),
            EventKind::CitizenReport { .. } => {}
        }
        if !self.auth.thresholds_empty() {
            auth::custom_thresholds(self, event, out);
        }
    }

    /// Advances time to `now`: forgets windows and merged alerts that have gone quiet.
    pub fn tick(&mut self, now: Timestamp) {
        self.auth.evict(now, &self.config);
        self.flows.evict(now);
        self.devices.evict(now);
        let merge = self.config.merge_window_ms();
        self.open
            .retain(|_, alert| now.as_millis() - alert.last_ts.as_millis() <= merge);
        self.suppressed.retain(|_, s| match s {
            Suppression::Muted { until: Some(t) } => *t > now,
            _ => true,
        });
        self.indicators.expire(now);
        self.tick_reports(now);
    }

    pub(crate) fn enabled(&self, rule: &str) -> bool {
        !self.disabled.contains(rule)
    }

    pub(crate) fn raise(
        &mut self,
        draft: AlertDraft,
        event: &Event,
        summary: String,
        out: &mut Vec<Alert>,
    ) {
        let evidence = Evidence {
            ts: event.ts,
            device_id: event.device_id.clone(),
            summary,
        };
        self.raise_with(draft, evidence, out);
    }

    fn raise_with(&mut self, draft: AlertDraft, evidence: Evidence, out: &mut Vec<Alert>) {
        if !self.enabled(draft.rule) || !self.in_scope(draft.rule) {
            return;
        }
        let ts = evidence.ts;
        if let Some(s) = self
            .suppressed
            .get(&(draft.rule.to_owned(), draft.key.clone()))
        {
            let active = match s {
                Suppression::Learned => true,
                Suppression::Muted { until } => until.is_none_or(|t| ts < t),
            };
            if active {
                self.stats.alerts_suppressed += 1;
                return;
            }
        }
        let merge_ms = self.config.merge_window_ms();
        let max_evidence = self.config.max_evidence;
        let mut draft = draft;
        if self.open.len() >= MAX_OPEN_ALERTS
            && !self.open.contains_key(&(draft.rule, draft.key.clone()))
        {
            // A flood of distinct keys (spoofed sources, invented ids) folds into one alert
            // per rule instead of growing without bound.
            draft.key = OVERFLOW_KEY.to_owned();
            draft.device_id = None;
            draft.title = format!(
                "many distinct {} alerts (the latest: {})",
                draft.rule, draft.title
            );
        }
        let slot = (draft.rule, draft.key.clone());
        if let Some(open) = self.open.get_mut(&slot)
            && ts.as_millis() - open.last_ts.as_millis() <= merge_ms
        {
            open.count = open.count.saturating_add(1);
            open.last_ts = ts.max(open.last_ts);
            if open.evidence.len() < max_evidence {
                open.evidence.push(evidence);
            }
            open.severity = open.severity.max(draft.severity);
            open.title = draft.title;
            open.explanation = draft.explanation;
            self.stats.alerts_merged += 1;
            out.push(open.clone());
            return;
        }
        let alert = Alert {
            id: alert_id(draft.rule, &draft.key, ts),
            rule: draft.rule.to_owned(),
            key: draft.key,
            severity: draft.severity,
            ts,
            last_ts: ts,
            count: 1,
            device_id: draft.device_id,
            zone: draft.zone,
            source: draft.source,
            title: draft.title,
            explanation: draft.explanation,
            evidence: vec![evidence],
        };
        self.stats.alerts_raised += 1;
        out.push(alert.clone());
        self.open.insert(slot, alert);
    }
}

/// Most alerts kept open for merging; past it, new keys of a rule merge into one alert
/// keyed [`OVERFLOW_KEY`].
pub const MAX_OPEN_ALERTS: usize = 50_000;
pub const OVERFLOW_KEY: &str = "(many)";

/// `10.0.0.7:5000` -> `10.0.0.7`; `[::1]:5000` -> `::1`; anything else unchanged.
pub(crate) fn peer_ip(peer: &str) -> &str {
    if let Some(rest) = peer.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match peer.rsplit_once(':') {
        Some((ip, port)) if !ip.contains(':') && port.chars().all(|c| c.is_ascii_digit()) => ip,
        _ => peer,
    }
}

/// A deterministic alert id: FNV-1a of rule, key and first timestamp, in hex, prefixed by
/// the first event's time so ids sort roughly by time.
fn alert_id(rule: &str, key: &str, ts: Timestamp) -> AlertId {
    let mut hasher = Fnv::default();
    hasher.write(rule.as_bytes());
    hasher.write(&[0]);
    hasher.write(key.as_bytes());
    hasher.write(&[0]);
    hasher.write(&ts.as_millis().to_le_bytes());
    AlertId(format!(
        "al-{:012x}-{:016x}",
        ts.as_millis().max(0),
        hasher.finish()
    ))
}

#[cfg(test)]
mod tests;

//! The detection engine: consumes normalised [`model::Event`]s in time order and emits
//! [`model::Alert`]s.
//!
//! **Architecture invariant:** the engine is sans-IO. It never awaits, never reads the wall
//! clock and never touches disk or network; time is the `ts` of its input events and the
//! `now` of [`Engine::tick`]. That is what lets a simulated day replay in seconds and keeps
//! its tests in milliseconds.
//!
//! **Architecture invariant:** the engine does not fail on data. An event it cannot use is
//! counted and skipped.
//!
//! The first rules:
//! - `auth.brute_force.device`: many failed authentications against one device id;
//! - `auth.brute_force.source`: many failed authentications from one network address
//!   (password spraying when they target many device ids);
//! - `actuation.uncommanded`: an actuator reports that it acted (a siren `sounding`) with no
//!   authorised command for it in the authorisation window.
//!
//! Identical alerts (same rule and key) within the merge window are folded into one alert
//! whose `count` and `last_ts` grow; the engine emits the updated alert so stores upsert it.

mod config;
mod indicator;
mod reports;
mod window;

use std::collections::{HashMap, HashSet};

use model::{
    Alert, AlertId, DeviceClass, DeviceId, Event, EventKind, Evidence, Reading, SecurityEvent,
    SecurityEventKind, Severity, Timestamp,
};

pub use crate::config::{ActuationConfig, BruteForceConfig, DetectConfig};
pub use crate::indicator::{Indicator, IndicatorError};
pub use crate::reports::ReportsConfig;
use crate::window::Window;

/// What the engine knows about a registered device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceMeta {
    pub class: DeviceClass,
    pub zone: String,
}

/// Counters describing what the engine did; cheap to read at any time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineStats {
    pub events: u64,
    pub alerts_raised: u64,
    pub alerts_merged: u64,
    /// Events that carried nothing a rule could use (for example a state event from a
    /// device the engine does not know).
    pub skipped: u64,
    /// Keys currently holding window state.
    pub tracked_keys: usize,
}

/// The detection engine. Feed it events in timestamp order with [`Engine::process`]; call
/// [`Engine::tick`] now and then so that idle state is evicted.
#[derive(Debug)]
pub struct Engine {
    config: DetectConfig,
    devices: HashMap<DeviceId, DeviceMeta>,
    /// Auth failures per claimed device id.
    failures_by_device: HashMap<String, Window>,
    /// Auth failures per source IP, with the device ids they tried.
    failures_by_source: HashMap<String, (Window, HashSet<String>)>,
    /// Last authorised command per device.
    last_command: HashMap<DeviceId, Timestamp>,
    /// Whether each actuator was last seen acting (so only the transition alerts).
    acting: HashMap<DeviceId, bool>,
    /// Open alerts by (rule, key), for merging repeats.
    open: HashMap<(&'static str, String), Alert>,
    indicators: indicator::IndicatorSet,
    /// Citizen reports correlated with sirens (`reports.rs`).
    reports: reports::ReportState,
    stats: EngineStats,
}

impl Engine {
    pub fn new(config: DetectConfig) -> Engine {
        Engine {
            config,
            devices: HashMap::new(),
            failures_by_device: HashMap::new(),
            failures_by_source: HashMap::new(),
            last_command: HashMap::new(),
            acting: HashMap::new(),
            open: HashMap::new(),
            indicators: indicator::IndicatorSet::default(),
            reports: reports::ReportState::default(),
            stats: EngineStats::default(),
        }
    }

    /// Tells the engine about a device (or updates it).
    pub fn register_device(&mut self, id: DeviceId, meta: DeviceMeta) {
        self.devices.insert(id, meta);
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

    pub fn stats(&self) -> EngineStats {
        EngineStats {
            tracked_keys: self.failures_by_device.len()
                + self.failures_by_source.len()
                + self.last_command.len()
                + self.acting.len()
                + self.open.len()
                + self.reports.tracked(),
            ..self.stats.clone()
        }
    }

    /// Processes one event; alerts raised or updated are pushed to `out`.
    pub fn process(&mut self, event: &Event, out: &mut Vec<Alert>) {
        self.stats.events += 1;
        self.observe_reports(event, out);
        match &event.kind {
            EventKind::Security(sec) => self.on_security(event, sec, out),
            EventKind::State { readings } => self.on_state(event, readings, out),
            EventKind::Command { .. } => {
                if let Some(id) = &event.device_id {
                    self.last_command.insert(id.clone(), event.ts);
                }
            }
            EventKind::Telemetry { .. } | EventKind::Flow(_) | EventKind::CitizenReport { .. } => {}
        }
    }

    /// Advances time to `now`: forgets windows and merged alerts that have gone quiet.
    pub fn tick(&mut self, now: Timestamp) {
        let bf = self.config.brute_force.window_ms();
        self.failures_by_device.retain(|_, w| !w.is_stale(now, bf));
        self.failures_by_source
            .retain(|_, (w, _)| !w.is_stale(now, bf));
        let auth = self.config.actuation.authorisation_window_ms();
        self.last_command
            .retain(|_, ts| now.as_millis() - ts.as_millis() <= auth);
        let merge = self.config.merge_window_ms();
        self.open
            .retain(|_, alert| now.as_millis() - alert.last_ts.as_millis() <= merge);
        self.tick_reports(now);
    }

    fn on_security(&mut self, event: &Event, sec: &SecurityEvent, out: &mut Vec<Alert>) {
        let failed = match sec.action {
            SecurityEventKind::AuthFailure => true,
            // A refused connect naming an unknown device is a guess at an id: it counts
            // towards the source's failures but not any device's.
            SecurityEventKind::ConnectRefused => event.device_id.is_none(),
            _ => false,
        };
        if !failed {
            return;
        }
        let cfg = self.config.brute_force.clone();
        let window_ms = cfg.window_ms();
        let claimed = event
            .device_id
            .as_ref()
            .map(|id| id.as_str().to_owned())
            .or_else(|| sec.username.clone())
            .or_else(|| sec.client_id.clone());
        let source = sec.peer.as_deref().map(peer_ip).map(str::to_owned);
        let summary = security_summary(sec);

        if let (Some(device), Some(_)) = (&event.device_id, &claimed) {
            let window = self
                .failures_by_device
                .entry(device.as_str().to_owned())
                .or_insert_with(|| Window::new(cfg.per_device_threshold));
            let n = window.push(event.ts, window_ms);
            if n >= cfg.per_device_threshold {
                let zone = self.zone_of(device);
                let alert = AlertDraft {
                    rule: "auth.brute_force.device",
                    key: device.as_str().to_owned(),
                    severity: Severity::High,
                    device_id: Some(device.clone()),
                    zone,
                    source: source.clone(),
                    title: format!("credential brute force against {device}"),
                    explanation: format!(
                        "{n} failed authentications as device {device} within {}s; someone is \
                         guessing this device's credentials. Check the sources, confirm the \
                         device's secret has not leaked, and consider rotating it.",
                        cfg.window_s
                    ),
                };
                self.raise(alert, event, &summary, out);
            }
        }

        if let Some(source) = source {
            let (window, ids) = self
                .failures_by_source
                .entry(source.clone())
                .or_insert_with(|| (Window::new(cfg.per_source_threshold), HashSet::new()));
            let n = window.push(event.ts, window_ms);
            if let Some(claimed) = &claimed
                && ids.len() < 1024
            {
                ids.insert(claimed.clone());
            }
            let distinct = ids.len();
            if n >= cfg.per_source_threshold {
                let spraying = distinct >= cfg.spray_distinct_devices;
                let (title, explanation) = if spraying {
                    (
                        format!("password spraying from {source}"),
                        format!(
                            "{n} failed authentications from {source} within {}s against {distinct} \
                             different device ids; one source is trying credentials across the \
                             fleet. Block the source and check for any successful logins from it.",
                            cfg.window_s
                        ),
                    )
                } else {
                    (
                        format!("credential brute force from {source}"),
                        format!(
                            "{n} failed authentications from {source} within {}s; one source is \
                             guessing credentials. Block the source and check for any successful \
                             logins from it.",
                            cfg.window_s
                        ),
                    )
                };
                let alert = AlertDraft {
                    rule: "auth.brute_force.source",
                    key: source.clone(),
                    severity: Severity::High,
                    device_id: None,
                    zone: None,
                    source: Some(source),
                    title,
                    explanation,
                };
                self.raise(alert, event, &summary, out);
            }
        }
    }

    fn on_state(&mut self, event: &Event, readings: &[Reading], out: &mut Vec<Alert>) {
        let Some(id) = &event.device_id else {
            self.stats.skipped += 1;
            return;
        };
        let Some(meta) = self.devices.get(id) else {
            self.stats.skipped += 1;
            return;
        };
        let Some(key) = actuation_reading(meta.class) else {
            return;
        };
        let Some(reading) = readings.iter().find(|r| r.name == key) else {
            return;
        };
        let now_acting = reading.value.is_on();
        let was_acting = self.acting.insert(id.clone(), now_acting).unwrap_or(false);
        if !now_acting || was_acting {
            return;
        }
        let window = self.config.actuation.authorisation_window_ms();
        let commanded = self
            .last_command
            .get(id)
            .is_some_and(|ts| event.ts.as_millis() - ts.as_millis() <= window);
        if commanded {
            return;
        }
        let class = meta.class;
        let zone = Some(meta.zone.clone());
        let alert = AlertDraft {
            rule: "actuation.uncommanded",
            key: id.as_str().to_owned(),
            severity: Severity::Critical,
            device_id: Some(id.clone()),
            zone,
            source: None,
            title: format!("uncommanded {class} actuation: {id} reports {key}"),
            explanation: format!(
                "{class} {id} reported {key} = true, but no authorised command reached it in the \
                 last {}s. Either the device was triggered outside the platform (a replayed radio \
                 command, local tampering, a compromised controller) or it is faulty. Silence it \
                 and tell the public it was not a real warning if it was heard.",
                self.config.actuation.authorisation_window_s
            ),
        };
        let summary = format!("state {key}=true");
        self.raise(alert, event, &summary, out);
    }

    fn zone_of(&self, id: &DeviceId) -> Option<String> {
        self.devices.get(id).map(|meta| meta.zone.clone())
    }

    fn raise(&mut self, draft: AlertDraft, event: &Event, summary: &str, out: &mut Vec<Alert>) {
        let evidence = Evidence {
            ts: event.ts,
            device_id: event.device_id.clone(),
            summary: summary.to_owned(),
        };
        let merge_ms = self.config.merge_window_ms();
        let max_evidence = self.config.max_evidence;
        let slot = (draft.rule, draft.key.clone());
        if let Some(open) = self.open.get_mut(&slot)
            && event.ts.as_millis() - open.last_ts.as_millis() <= merge_ms
        {
            open.count = open.count.saturating_add(1);
            open.last_ts = event.ts;
            if open.evidence.len() < max_evidence {
                open.evidence.push(evidence);
            }
            open.title = draft.title;
            open.explanation = draft.explanation;
            self.stats.alerts_merged += 1;
            out.push(open.clone());
            return;
        }
        let alert = Alert {
            id: alert_id(draft.rule, &draft.key, event.ts),
            rule: draft.rule.to_owned(),
            severity: draft.severity,
            ts: event.ts,
            last_ts: event.ts,
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

struct AlertDraft {
    rule: &'static str,
    key: String,
    severity: Severity,
    device_id: Option<DeviceId>,
    zone: Option<String>,
    source: Option<String>,
    title: String,
    explanation: String,
}

/// The state reading that means "this actuator is acting" for classes whose uncommanded
/// actuation is a safety matter.
fn actuation_reading(class: DeviceClass) -> Option<&'static str> {
    match class {
        DeviceClass::Siren => Some("sounding"),
        _ => None,
    }
}

/// `10.0.0.7:5000` -> `10.0.0.7`; `[::1]:5000` -> `::1`; anything else unchanged.
fn peer_ip(peer: &str) -> &str {
    if let Some(rest) = peer.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match peer.rsplit_once(':') {
        Some((ip, port)) if !ip.contains(':') && port.chars().all(|c| c.is_ascii_digit()) => ip,
        _ => peer,
    }
}

fn security_summary(sec: &SecurityEvent) -> String {
    let mut s = sec.action.as_str().to_owned();
    if let Some(user) = &sec.username {
        s.push_str(&format!(" as {user}"));
    }
    if let Some(peer) = &sec.peer {
        s.push_str(&format!(" from {peer}"));
    }
    if let Some(reason) = &sec.reason {
        s.push_str(&format!(" ({reason})"));
    }
    s
}

/// A deterministic alert id: FNV-1a of rule, key and first timestamp, in hex, prefixed by
/// the first event's time so ids sort roughly by time.
fn alert_id(rule: &str, key: &str, ts: Timestamp) -> AlertId {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in rule
        .bytes()
        .chain([0])
        .chain(key.bytes())
        .chain([0])
        .chain(ts.as_millis().to_le_bytes())
    {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    AlertId(format!("al-{:012x}-{hash:016x}", ts.as_millis().max(0)))
}

#[cfg(test)]
mod tests;

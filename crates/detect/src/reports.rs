//! Citizen reports correlated with device data (`obs.report` events).
//!
//! - `reports.siren_unconfirmed`: at least `threshold` reports of a siren sounding with no
//!   storm, within `window_s` and `radius_m` of a registered siren, while no siren within
//!   the radius reported sounding in that window. Residents hear something our sirens do not
//!   report: a siren whose state reports are suppressed or spoofed, or a rogue sound source.
//! - A report near a siren that did sound without an authorised command strengthens the open
//!   `actuation.uncommanded` alert: the report is added as evidence and counted.
//!
//! Reports near a siren that sounded on command are explained (a real warning) and raise
//! nothing. State is bounded: at most [`MAX_REPORTS`] recent reports, evicted on `tick`.

use std::collections::{HashMap, VecDeque};

use model::{
    DeviceClass, DeviceId, Event, EventKind, Location, ReportCategory, Severity, Timestamp,
};
use serde::{Deserialize, Serialize};

use crate::{AlertDraft, Engine};

/// The most unexplained siren reports kept at once.
pub const MAX_REPORTS: usize = 10_000;
/// A report may come this long before the siren's state report reaches us.
const REPORT_LEAD_MS: i64 = 60_000;

/// Settings of the citizen-report rules: `[detect.reports]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReportsConfig {
    /// Reports of a siren near a silent siren that raise `reports.siren_unconfirmed`.
    pub threshold: usize,
    /// How far from a siren a report may be, in metres.
    pub radius_m: f64,
    /// How long reports (and siren activity) count, in seconds.
    pub window_s: u64,
}

impl Default for ReportsConfig {
    fn default() -> ReportsConfig {
        ReportsConfig {
            threshold: 3,
            radius_m: 1500.0,
            window_s: 900,
        }
    }
}

impl ReportsConfig {
    fn window_ms(&self) -> i64 {
        i64::try_from(self.window_s.saturating_mul(1000)).unwrap_or(i64::MAX)
    }
}

/// What the rule remembers.
#[derive(Debug, Default)]
pub(crate) struct ReportState {
    locations: HashMap<DeviceId, Location>,
    /// Last time each siren reported sounding, and whether a command explained it.
    sounded: HashMap<DeviceId, (Timestamp, bool)>,
    /// Unexplained siren reports: time and place.
    reports: VecDeque<(Timestamp, Location)>,
    /// Reports that corroborated an uncommanded actuation, per siren.
    corroborations: HashMap<DeviceId, u32>,
}

impl ReportState {
    pub(crate) fn tracked(&self) -> usize {
        self.sounded.len() + self.reports.len() + self.corroborations.len()
    }
}

/// Great-circle distance in metres.
fn distance_m(a: Location, b: Location) -> f64 {
    let (la1, la2) = (a.lat.to_radians(), b.lat.to_radians());
    let dlat = la2 - la1;
    let dlon = (b.lon - a.lon).to_radians();
    let h = (dlat / 2.0).sin().powi(2) + la1.cos() * la2.cos() * (dlon / 2.0).sin().powi(2);
    2.0 * 6_371_000.0 * h.sqrt().min(1.0).asin()
}

impl Engine {
    /// Tells the engine where a device is (sirens are matched to citizen reports by it).
    pub fn register_location(&mut self, id: DeviceId, location: Location) {
        if location.lat.is_finite() && location.lon.is_finite() {
            self.reports.locations.insert(id, location);
        }
    }

    /// The report rules' view of one event; called first by `process`.
    pub(crate) fn observe_reports(&mut self, event: &Event, out: &mut Vec<model::Alert>) {
        match &event.kind {
            EventKind::State { readings } => {
                let Some(id) = &event.device_id else { return };
                let Some(idx) = self.devices.get(id) else {
                    return;
                };
                if self.devices.state(idx).class != DeviceClass::Siren
                    || !self.reports.locations.contains_key(id)
                {
                    return;
                }
                let sounding = readings
                    .iter()
                    .any(|r| r.name == "sounding" && r.value.is_on());
                if sounding {
                    let window = self.config.actuation.authorisation_window_ms();
                    let ts = event.ts.as_millis();
                    let last = self.devices.state(idx).last_command;
                    let commanded =
                        last != i64::MIN && ts >= last && ts.saturating_sub(last) <= window;
                    self.reports
                        .sounded
                        .insert(id.clone(), (event.ts, commanded));
                }
            }
            EventKind::CitizenReport {
                category: ReportCategory::SirenNoStorm,
                text,
                location,
            } => self.on_siren_report(event, text, *location, out),
            _ => {}
        }
    }

    fn on_siren_report(
        &mut self,
        event: &Event,
        text: &str,
        at: Location,
        out: &mut Vec<model::Alert>,
    ) {
        let cfg = self.config.reports.clone();
        let window = cfg.window_ms();
        let now = event.ts.as_millis();
        let mut nearby: Vec<(DeviceId, f64)> = self
            .reports
            .locations
            .iter()
            .filter(|(id, _)| {
                self.devices
                    .get(id)
                    .is_some_and(|idx| self.devices.state(idx).class == DeviceClass::Siren)
            })
            .map(|(id, loc)| (id.clone(), distance_m(*loc, at)))
            .filter(|(_, d)| *d <= cfg.radius_m)
            .collect();
        if nearby.is_empty() {
            self.stats.skipped += 1;
            return;
        }
        nearby.sort_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
        let excerpt: String = text.chars().take(120).collect();
        let sounded: Vec<(DeviceId, f64, bool)> = nearby
            .iter()
            .filter_map(|(id, d)| {
                let (ts, commanded) = self.reports.sounded.get(id)?;
                let dt = now - ts.as_millis();
                ((-REPORT_LEAD_MS..=window).contains(&dt)).then(|| (id.clone(), *d, *commanded))
            })
            .collect();
        if !sounded.is_empty() {
            for (id, d, commanded) in sounded {
                if commanded {
                    continue; // a real warning: the report is explained
                }
                let slot = ("actuation.uncommanded", id.as_str().to_owned());
                let n = {
                    let count = self.reports.corroborations.entry(id.clone()).or_insert(0);
                    *count += 1;
                    *count
                };
                if let Some(open) = self.open.get_mut(&slot) {
                    open.count = open.count.saturating_add(1);
                    open.last_ts = event.ts;
                    if open.evidence.len() < self.config.max_evidence {
                        open.evidence.push(model::Evidence {
                            ts: event.ts,
                            device_id: None,
                            summary: format!("citizen report {d:.0} m from {id}: {excerpt:?}"),
                        });
                    }
                    let note = format!(" {n} residents reported hearing it.");
                    if let Some(i) = open.explanation.find(" residents reported hearing it.") {
                        let start = open.explanation[..i].rfind(' ').unwrap_or(i);
                        open.explanation.truncate(start);
                    }
                    open.explanation.push_str(&note);
                    self.stats.alerts_merged += 1;
                    out.push(open.clone());
                }
            }
            return;
        }
        if self.reports.reports.len() >= MAX_REPORTS {
            self.reports.reports.pop_front();
        }
        self.reports.reports.push_back((event.ts, at));
        let (siren, distance) = nearby[0].clone();
        let Some(siren_at) = self.reports.locations.get(&siren).copied() else {
            return;
        };
        let n = self
            .reports
            .reports
            .iter()
            .filter(|(ts, loc)| {
                now - ts.as_millis() <= window && distance_m(*loc, siren_at) <= cfg.radius_m
            })
            .count();
        if n < cfg.threshold.max(1) {
            return;
        }
        let zone = self.devices.zone_name(&siren);
        let draft = AlertDraft {
            rule: "reports.siren_unconfirmed",
            key: siren.as_str().to_owned(),
            severity: Severity::High,
            device_id: Some(siren.clone()),
            zone,
            source: None,
            title: format!("{n} residents report a siren near {siren}, which reports nothing"),
            explanation: format!(
                "{n} citizen reports within {}s and {:.0} m of siren {siren} say a siren is sounding with \
                 no storm, but no siren within that distance reported sounding. Either a siren is \
                 sounding while its state reports are suppressed or spoofed, or something else is \
                 making the sound. Send someone to look, check the siren's controller, and consider \
                 telling residents whether it is a real warning.",
                cfg.window_s, cfg.radius_m
            ),
        };
        let summary = format!("citizen report {distance:.0} m from {siren}: {excerpt:?}");
        self.raise(draft, event, summary, out);
    }

    /// Forgets reports and siren activity older than the window.
    pub(crate) fn tick_reports(&mut self, now: Timestamp) {
        let window = self.config.reports.window_ms();
        let now = now.as_millis();
        while self
            .reports
            .reports
            .front()
            .is_some_and(|(ts, _)| now - ts.as_millis() > window)
        {
            self.reports.reports.pop_front();
        }
        self.reports
            .sounded
            .retain(|_, (ts, _)| now - ts.as_millis() <= window);
        let open = &self.open;
        self.reports
            .corroborations
            .retain(|id, _| open.contains_key(&("actuation.uncommanded", id.as_str().to_owned())));
    }
}

#[cfg(test)]
mod tests;

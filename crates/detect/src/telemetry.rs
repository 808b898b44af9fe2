//! Rules over what devices report: physical plausibility (range, rate of change,
//! neighbours, totals), learned baselines per device and per class, firmware changes,
//! message floods, and actuations that no authorised command explains (one at a time, and
//! in bursts across many actuators).
//!
//! The device table lives here too: one compact [`DeviceState`] per registered device,
//! indexed by id and by address.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

use model::{Alert, DeviceClass, DeviceId, Event, Reading, Severity, Timestamp, Value};

use crate::rules::{ReadingRule, RuleSet, TotalsRule};
use crate::{AlertDraft, DeviceMeta, Engine, FnvMap};

/// After an authorised command to a device, its readings may jump (a pump started, a
/// breaker opened): baselines and totals do not judge it for this long.
const COMMAND_GRACE_MS: i64 = 10 * 60_000;
/// Readings older than this do not count as a neighbour's or a total's current value.
const FRESH_MS: i64 = 15 * 60_000;
/// At most this many sensors form one neighbour group.
const MAX_GROUP: usize = 64;
/// At most this many reading names are tracked (a device inventing names cannot grow
/// memory).
const MAX_NAMES: usize = 4096;
/// At most this many reading slots per device.
const MAX_SLOTS: usize = 12;
/// Learned statistics stop growing their weight here, so baselines keep adapting slowly.
const MAX_WEIGHT: f64 = 10_000.0;

/// Running mean, variance and range (Welford).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Stats {
    n: f64,
    mean: f64,
    m2: f64,
    min: f64,
    max: f64,
}

impl Stats {
    fn push(&mut self, v: f64) {
        if self.n == 0.0 {
            self.min = v;
            self.max = v;
        }
        self.n = (self.n + 1.0).min(MAX_WEIGHT);
        let d = v - self.mean;
        self.mean += d / self.n;
        self.m2 += d * (v - self.mean);
        if self.n >= MAX_WEIGHT {
            // keep the variance estimate bounded as the weight saturates
            self.m2 = self.m2.max(0.0) * (1.0 - 1.0 / MAX_WEIGHT);
        }
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }

    fn sd(&self) -> f64 {
        if self.n < 2.0 {
            0.0
        } else {
            (self.m2.max(0.0) / (self.n - 1.0)).sqrt()
        }
    }

    /// Whether `v` is far from everything learned: beyond `sigma` standard deviations of
    /// the mean and outside the learned range with a margin (daily curves and multi-modal
    /// readings stay inside their range; a jump does not).
    fn is_outlier(&self, v: f64, sigma: f64) -> bool {
        let sd = self.sd().max(1e-3 * self.mean.abs()).max(1e-6);
        let margin = 0.1 * (self.max - self.min) + sd;
        (v - self.mean).abs() > sigma * sd && (v < self.min - margin || v > self.max + margin)
    }
}

/// The numbers of a [`ReadingRule`], copied out so the hot path does not clone strings.
#[derive(Debug, Clone, Copy)]
struct Limits {
    min: Option<f64>,
    max: Option<f64>,
    max_rate_per_s: Option<f64>,
    never_decreases: bool,
    neighbours_tolerance: Option<f64>,
    baseline: bool,
}

impl Limits {
    fn of(r: &ReadingRule) -> Limits {
        Limits {
            min: r.min,
            max: r.max,
            max_rate_per_s: r.max_rate_per_s,
            never_decreases: r.never_decreases,
            neighbours_tolerance: r.neighbours_tolerance,
            baseline: r.baseline,
        }
    }
}

/// One reading of one device.
#[derive(Debug, Clone)]
struct Slot {
    name: u16,
    last: f32,
    last_ts: i64,
    stats: StatsF32,
    /// The typical change between two consecutive reports (a running mean of |delta|):
    /// the sensor's noise, which the rate-of-change rule allows on top of the physical
    /// limit so that two reports close together do not look like a jump.
    step: f32,
    steps: u16,
    /// The learned offset from the neighbours' median, and how many samples it has.
    offset: f32,
    offset_n: u16,
    streak: u8,
    /// Consecutive implausible reports (after three, the new value becomes the reference).
    flagged: u8,
}

/// [`Stats`] in f32 for the per-device slots (half the memory).
#[derive(Debug, Clone, Copy, Default)]
struct StatsF32 {
    n: f32,
    mean: f32,
    m2: f32,
    min: f32,
    max: f32,
}

impl StatsF32 {
    fn get(&self) -> Stats {
        Stats {
            n: f64::from(self.n),
            mean: f64::from(self.mean),
            m2: f64::from(self.m2),
            min: f64::from(self.min),
            max: f64::from(self.max),
        }
    }
    fn set(&mut self, s: Stats) {
        *self = StatsF32 {
            n: s.n as f32,
            mean: s.mean as f32,
            m2: s.m2 as f32,
            min: s.min as f32,
            max: s.max as f32,
        };
    }
}

/// What an actuator last reported.
#[derive(Debug, Clone, Copy, Default)]
struct Actuation {
    known: bool,
    on: bool,
    level: f32,
}

/// One registered device.
#[derive(Debug, Clone)]
pub(crate) struct DeviceState {
    pub(crate) id: DeviceId,
    pub(crate) class: DeviceClass,
    pub(crate) zone: u16,
    firmware: Box<str>,
    pub(crate) first_seen: i64,
    pub(crate) last_command: i64,
    pub(crate) last_update_flow: i64,
    msg_start: i64,
    msg_count: u32,
    actuation: Actuation,
    slots: Vec<Slot>,
    pub(crate) addresses: Box<[IpAddr]>,
    credentials: Box<[String]>,
    pub(crate) quarantined: bool,
}

#[derive(Debug, Clone, Default)]
struct Group {
    /// (device, last value, when, excluded from the others' median until): a sensor that
    /// just broke a physical limit does not vote on what its neighbours should read.
    members: Vec<(u32, f32, i64, i64)>,
}

#[derive(Debug, Clone)]
struct Totals {
    rule: TotalsRule,
    parts_name: Option<u16>,
    whole_name: Option<u16>,
    parts: FnvMap<u32, (f32, i64)>,
    whole: FnvMap<u32, (f32, i64)>,
    next_eval: i64,
    paused_until: i64,
    ratio: Stats,
    streak: u8,
    /// How many parts and wholes reported at the last evaluation: when membership moves
    /// (a feeder's breaker goes offline, a batch of meters reconnects), the sums are not
    /// comparable with the learned ratio for that interval.
    members: (usize, usize),
}

/// The device table and the state of the reading rules.
#[derive(Debug)]
pub(crate) struct Devices {
    index: FnvMap<DeviceId, u32>,
    states: Vec<DeviceState>,
    by_address: HashMap<IpAddr, u32>,
    zone_names: Vec<String>,
    zone_index: FnvMap<String, u16>,
    names: FnvMap<String, u16>,
    /// Reading rules per class (indexed by the class's position in `DeviceClass::ALL`).
    rules: Vec<Vec<(u16, ReadingRule)>>,
    class_stats: FnvMap<(DeviceClass, u16), Stats>,
    groups: FnvMap<(u16, DeviceClass, u16), Group>,
    totals: Vec<Totals>,
    credentials: HashMap<String, Vec<u32>>,
    bursts: HashMap<DeviceClass, VecDeque<(i64, u32)>>,
}

impl Devices {
    pub(crate) fn new(rules: &RuleSet) -> Devices {
        let mut devices = Devices {
            index: FnvMap::default(),
            states: Vec::new(),
            by_address: HashMap::new(),
            zone_names: Vec::new(),
            zone_index: FnvMap::default(),
            names: FnvMap::default(),
            rules: vec![Vec::new(); DeviceClass::ALL.len()],
            class_stats: FnvMap::default(),
            groups: FnvMap::default(),
            totals: Vec::new(),
            credentials: HashMap::new(),
            bursts: HashMap::new(),
        };
        for (class, list) in rules.readings_by_class() {
            let list = list
                .into_iter()
                .filter_map(|r| devices.intern(&r.reading).map(|id| (id, r)))
                .collect();
            devices.rules[crate::flows::class_index(class)] = list;
        }
        for rule in &rules.totals {
            let parts_name = devices.intern(&rule.parts.reading);
            let whole_name = devices.intern(&rule.whole.reading);
            devices.totals.push(Totals {
                rule: rule.clone(),
                parts_name,
                whole_name,
                parts: FnvMap::default(),
                whole: FnvMap::default(),
                next_eval: i64::MIN,
                paused_until: i64::MIN,
                ratio: Stats::default(),
                streak: 0,
                members: (0, 0),
            });
        }
        devices
    }

    fn intern(&mut self, name: &str) -> Option<u16> {
        if let Some(id) = self.names.get(name) {
            return Some(*id);
        }
        if self.names.len() >= MAX_NAMES {
            return None;
        }
        let id = self.names.len() as u16;
        self.names.insert(name.to_owned(), id);
        Some(id)
    }

    pub(crate) fn len(&self) -> usize {
        self.states.len()
    }

    pub(crate) fn get(&self, id: &DeviceId) -> Option<u32> {
        self.index.get(id).copied()
    }

    pub(crate) fn state(&self, idx: u32) -> &DeviceState {
        &self.states[idx as usize]
    }

    pub(crate) fn state_mut(&mut self, idx: u32) -> &mut DeviceState {
        &mut self.states[idx as usize]
    }

    pub(crate) fn by_address(&self, ip: &IpAddr) -> Option<u32> {
        self.by_address.get(ip).copied()
    }

    pub(crate) fn zone_of_device(&self, idx: u32) -> &str {
        &self.zone_names[usize::from(self.states[idx as usize].zone)]
    }

    pub(crate) fn zone_name(&self, id: &DeviceId) -> Option<String> {
        self.get(id).map(|idx| self.zone_of_device(idx).to_owned())
    }

    /// Registers or updates a device; returns credentials now shared with other devices.
    pub(crate) fn register(
        &mut self,
        id: DeviceId,
        meta: &DeviceMeta,
    ) -> Vec<(String, Vec<DeviceId>)> {
        let zone = match self.zone_index.get(&meta.zone) {
            Some(z) => *z,
            None => {
                let z = self.zone_names.len().min(usize::from(u16::MAX)) as u16;
                self.zone_names.push(meta.zone.clone());
                self.zone_index.insert(meta.zone.clone(), z);
                z
            }
        };
        let idx = match self.index.get(&id) {
            Some(idx) => {
                let old = &self.states[*idx as usize];
                for ip in old.addresses.iter() {
                    if self.by_address.get(ip) == Some(idx) {
                        self.by_address.remove(ip);
                    }
                }
                for c in old.credentials.iter() {
                    if let Some(list) = self.credentials.get_mut(c) {
                        list.retain(|d| d != idx);
                    }
                }
                let idx = *idx;
                let state = &mut self.states[idx as usize];
                state.class = meta.class;
                state.zone = zone;
                if !meta.firmware.is_empty() {
                    state.firmware = meta.firmware.clone().into_boxed_str();
                }
                state.addresses = meta.addresses.clone().into_boxed_slice();
                state.credentials = meta.credentials.clone().into_boxed_slice();
                state.quarantined = meta.quarantined;
                idx
            }
            None => {
                let idx = self.states.len() as u32;
                self.states.push(DeviceState {
                    id: id.clone(),
                    class: meta.class,
                    zone,
                    firmware: meta.firmware.clone().into_boxed_str(),
                    first_seen: i64::MIN,
                    last_command: i64::MIN,
                    last_update_flow: i64::MIN,
                    msg_start: i64::MIN,
                    msg_count: 0,
                    actuation: Actuation::default(),
                    slots: Vec::new(),
                    addresses: meta.addresses.clone().into_boxed_slice(),
                    credentials: meta.credentials.clone().into_boxed_slice(),
                    quarantined: meta.quarantined,
                });
                self.index.insert(id, idx);
                idx
            }
        };
        for ip in &meta.addresses {
            self.by_address.insert(*ip, idx);
        }
        let mut shared = Vec::new();
        for c in &meta.credentials {
            let list = self.credentials.entry(c.clone()).or_default();
            if !list.contains(&idx) {
                list.push(idx);
            }
            if list.len() > 1 {
                shared.push((
                    c.clone(),
                    list.iter()
                        .map(|d| self.states[*d as usize].id.clone())
                        .collect(),
                ));
            }
        }
        shared
    }

    pub(crate) fn relearn(&mut self, device: &str, reading: &str) {
        let (Ok(id), Some(name)) = (DeviceId::new(device), self.names.get(reading).copied()) else {
            return;
        };
        if let Some(idx) = self.get(&id) {
            for slot in &mut self.states[idx as usize].slots {
                if slot.name == name {
                    slot.stats = StatsF32::default();
                    slot.offset_n = 0;
                    slot.streak = 0;
                }
            }
        }
    }

    pub(crate) fn evict(&mut self, now: Timestamp) {
        let now = now.as_millis();
        for group in self.groups.values_mut() {
            group
                .members
                .retain(|(_, _, ts, _)| now.saturating_sub(*ts) <= FRESH_MS);
        }
        self.groups.retain(|_, g| !g.members.is_empty());
        for totals in &mut self.totals {
            totals
                .parts
                .retain(|_, (_, ts)| now.saturating_sub(*ts) <= FRESH_MS);
            totals
                .whole
                .retain(|_, (_, ts)| now.saturating_sub(*ts) <= FRESH_MS);
        }
        for burst in self.bursts.values_mut() {
            while burst
                .front()
                .is_some_and(|(ts, _)| now.saturating_sub(*ts) > 3_600_000)
            {
                burst.pop_front();
            }
        }
    }

    pub(crate) fn state_bytes(&self) -> usize {
        let per_state: usize = self
            .states
            .iter()
            .map(|s| {
                std::mem::size_of::<DeviceState>()
                    + s.id.as_str().len()
                    + s.firmware.len()
                    + s.slots.capacity() * std::mem::size_of::<Slot>()
                    + s.addresses.len() * std::mem::size_of::<IpAddr>()
                    + s.credentials.iter().map(|c| c.len() + 24).sum::<usize>()
            })
            .sum();
        // the id index and the address index: key, value and about one word of overhead
        let index = self.index.capacity() * (std::mem::size_of::<DeviceId>() + 4 + 8)
            + self.by_address.capacity() * (std::mem::size_of::<IpAddr>() + 4 + 8);
        per_state + index
    }
}

/// Siren commands that silence it (the gateway's default `siren_cancels`, and `all_clear`):
/// they authorise no actuation.
fn is_siren_cancel(action: &str) -> bool {
    matches!(action, "silence" | "cancel" | "stop" | "off" | "all_clear")
}

/// A command reached a device through the authorised path.
pub(crate) fn on_command(engine: &mut Engine, event: &Event, out: &mut Vec<Alert>) {
    let Some(id) = &event.device_id else {
        engine.stats.skipped += 1;
        return;
    };
    let Some(idx) = engine.devices.get(id) else {
        engine.stats.skipped += 1;
        return;
    };
    let ts = event.ts.as_millis();
    // A siren's cancel (the gateway's all-clear) explains no later sounding.
    let silences =
        matches!(&event.kind, model::EventKind::Command { action, .. } if is_siren_cancel(action));
    let class = {
        let state = engine.devices.state_mut(idx);
        if !(silences && state.class == DeviceClass::Siren) {
            state.last_command = ts;
        }
        state.class
    };
    for totals in &mut engine.devices.totals {
        if totals.rule.parts.class == class || totals.rule.whole.class == class {
            totals.paused_until = ts + COMMAND_GRACE_MS;
        }
    }
    if class.is_actuator() {
        burst(engine, event, idx, "commanded", out);
    }
}

pub(crate) fn on_readings(
    engine: &mut Engine,
    event: &Event,
    readings: &[Reading],
    out: &mut Vec<Alert>,
) {
    let Some(id) = &event.device_id else {
        engine.stats.skipped += 1;
        return;
    };
    let Some(idx) = engine.devices.get(id) else {
        engine.stats.skipped += 1;
        return;
    };
    let ts = event.ts.as_millis();
    let (class, learning, paused) = {
        let learning_ms = engine.config.baseline.learning_ms();
        let state = engine.devices.state_mut(idx);
        if state.first_seen == i64::MIN {
            state.first_seen = ts;
        }
        (
            state.class,
            ts.saturating_sub(state.first_seen) < learning_ms,
            ts.saturating_sub(state.last_command) < COMMAND_GRACE_MS,
        )
    };
    message_rate(engine, event, idx, out);
    actuation(engine, event, idx, class, readings, out);
    for reading in readings {
        match &reading.value {
            Value::Number(v) if v.is_finite() => {
                numeric(
                    engine, event, idx, class, reading, *v, learning, paused, out,
                );
            }
            Value::Text(text) if measurement(&reading.name) == "firmware" => {
                firmware(engine, event, idx, text, out)
            }
            _ => {}
        }
    }
}

fn message_rate(engine: &mut Engine, event: &Event, idx: u32, out: &mut Vec<Alert>) {
    let limit = engine.config.rate.messages_per_device;
    let window_ms = crate::config::secs_ms(engine.config.rate.message_window_s);
    let ts = event.ts.as_millis();
    let state = engine.devices.state_mut(idx);
    if ts.saturating_sub(state.msg_start) > window_ms || ts < state.msg_start {
        state.msg_start = ts;
        state.msg_count = 0;
    }
    state.msg_count = state.msg_count.saturating_add(1);
    let n = state.msg_count;
    // alert when the limit is crossed, then once per further `limit` messages
    if limit == 0 || n <= limit || !(n - limit - 1).is_multiple_of(limit) {
        return;
    }
    let id = state.id.clone();
    let zone = engine.devices.zone_of_device(idx).to_owned();
    let window_s = engine.config.rate.message_window_s;
    let draft = AlertDraft {
        rule: "rate.message_flood",
        key: id.to_string(),
        severity: Severity::Medium,
        device_id: Some(id.clone()),
        zone: Some(zone),
        source: None,
        title: format!("message flood from {id}"),
        explanation: format!(
            "{id} sent {n} messages within {window_s}s, far above what its class publishes. A \
             compromised device flooding the broker, or firmware stuck in a loop."
        ),
    };
    engine.raise(draft, event, format!("{n} messages in {window_s}s"), out);
}

/// The reading that says an actuator acted, for the classes whose actuations matter.
fn actuation_reading(class: DeviceClass) -> Option<(&'static str, bool)> {
    // (reading, whether only a switch to "on" counts)
    match class {
        DeviceClass::Siren => Some(("sounding", true)),
        DeviceClass::FeederBreaker => Some(("closed", false)),
        DeviceClass::Pump => Some(("running", false)),
        DeviceClass::Valve => Some(("position_pct", false)),
        DeviceClass::AccessControl => Some(("locked", false)),
        _ => None,
    }
}

fn actuation(
    engine: &mut Engine,
    event: &Event,
    idx: u32,
    class: DeviceClass,
    readings: &[Reading],
    out: &mut Vec<Alert>,
) {
    let Some((name, only_on)) = actuation_reading(class) else {
        return;
    };
    let Some(reading) = readings.iter().find(|r| measurement(&r.name) == name) else {
        return;
    };
    let ts = event.ts.as_millis();
    let (changed, description) = {
        let state = engine.devices.state_mut(idx);
        let before = state.actuation;
        let (changed, description) = if class == DeviceClass::Valve {
            let Some(level) = reading.value.as_f64() else {
                return;
            };
            let level = level as f32;
            state.actuation = Actuation {
                known: true,
                on: level > 0.0,
                level,
            };
            (
                before.known && (level - before.level).abs() > 5.0,
                format!("{name} {:.0} -> {level:.0}", before.level),
            )
        } else {
            let on = reading.value.is_on();
            state.actuation = Actuation {
                known: true,
                on,
                level: 0.0,
            };
            let changed = if only_on {
                on && !(before.known && before.on)
            } else {
                before.known && before.on != on
            };
            (changed, format!("{name}={on}"))
        };
        (changed, description)
    };
    if !changed {
        return;
    }
    let window = engine.config.actuation.authorisation_window_ms();
    let last_command = engine.devices.state(idx).last_command;
    let commanded =
        last_command != i64::MIN && ts.saturating_sub(last_command) <= window && ts >= last_command;
    burst(
        engine,
        event,
        idx,
        if commanded {
            "commanded"
        } else {
            "uncommanded"
        },
        out,
    );
    if commanded {
        return;
    }
    let id = engine.devices.state(idx).id.clone();
    let zone = engine.devices.zone_of_device(idx).to_owned();
    let severity = if class.is_safety_critical() {
        Severity::Critical
    } else {
        Severity::High
    };
    let what = if only_on {
        format!("reports {name}")
    } else {
        format!("changed {description}")
    };
    let draft = AlertDraft {
        rule: "actuation.uncommanded",
        key: id.to_string(),
        severity,
        device_id: Some(id.clone()),
        zone: Some(zone),
        source: None,
        title: format!("uncommanded {class} actuation: {id} {what}"),
        explanation: format!(
            "{class} {id} reported {description}, but no authorised command reached it in the \
             last {}s. Either the device was triggered outside the platform (a replayed radio \
             command, local tampering, a compromised controller) or it is faulty. {}",
            engine.config.actuation.authorisation_window_s,
            if class == DeviceClass::Siren {
                "Silence it and tell the public it was not a real warning if it was heard."
            } else {
                "Put it back in its safe state and check who can reach its controller."
            }
        ),
    };
    engine.raise(draft, event, format!("state {description}"), out);
}

/// Counts an actuation (commanded or not) towards its class's burst window.
fn burst(engine: &mut Engine, event: &Event, idx: u32, how: &str, out: &mut Vec<Alert>) {
    let class = engine.devices.state(idx).class;
    let ts = event.ts.as_millis();
    let window_ms = crate::config::secs_ms(engine.config.rate.actuation_window_s);
    let limit = engine.config.rate.actuation_burst_devices.max(2);
    let queue = engine.devices.bursts.entry(class).or_default();
    while queue
        .front()
        .is_some_and(|(t, _)| ts.saturating_sub(*t) > window_ms)
    {
        queue.pop_front();
    }
    if queue.len() >= 4096 {
        queue.pop_front();
    }
    queue.push_back((ts, idx));
    let mut distinct: Vec<u32> = queue.iter().map(|(_, d)| *d).collect();
    distinct.sort_unstable();
    distinct.dedup();
    let n = distinct.len();
    if n < limit {
        return;
    }
    let window_s = engine.config.rate.actuation_window_s;
    let id = engine.devices.state(idx).id.clone();
    let draft = AlertDraft {
        rule: "rate.actuation_burst",
        key: class.as_str().to_owned(),
        severity: Severity::Critical,
        device_id: Some(id.clone()),
        zone: Some(engine.devices.zone_of_device(idx).to_owned()),
        source: None,
        title: format!("{n} {class} actuators switched within {window_s}s"),
        explanation: format!(
            "{n} different {class} devices were switched within {window_s}s (the latest, {id}, \
             {how}). Switching many actuators at once is how a blackout or a city-wide false \
             alarm is made; confirm with the operators that this is planned work, or stop it \
             and restore the devices."
        ),
    };
    engine.raise(draft, event, format!("{id} switched ({how})"), out);
}

fn firmware(engine: &mut Engine, event: &Event, idx: u32, text: &str, out: &mut Vec<Alert>) {
    let ts = event.ts.as_millis();
    let window = engine.config.firmware.update_window_ms();
    let state = engine.devices.state_mut(idx);
    if &*state.firmware == text {
        return;
    }
    let before = std::mem::replace(&mut state.firmware, clip(text, 64).into_boxed_str());
    if before.is_empty() {
        return;
    }
    let updated =
        state.last_update_flow != i64::MIN && ts.saturating_sub(state.last_update_flow) <= window;
    if updated {
        return;
    }
    let id = state.id.clone();
    let zone = engine.devices.zone_of_device(idx).to_owned();
    let new = clip(text, 64);
    let draft = AlertDraft {
        rule: "policy.firmware_change",
        key: id.to_string(),
        severity: Severity::High,
        device_id: Some(id.clone()),
        zone: Some(zone),
        source: None,
        title: format!("firmware of {id} changed from {before} to {new} outside a vendor update"),
        explanation: format!(
            "{id} now reports firmware {new:?} (it ran {before:?}), but it fetched nothing from \
             a vendor update server beforehand. Firmware that changes outside the vendor's \
             update path is how implants persist: verify the image against the vendor's \
             release and reflash if it does not match."
        ),
    };
    engine.raise(draft, event, format!("firmware {before} -> {new}"), out);
}

#[allow(clippy::too_many_arguments)]
fn numeric(
    engine: &mut Engine,
    event: &Event,
    idx: u32,
    class: DeviceClass,
    reading: &Reading,
    v: f64,
    learning: bool,
    paused: bool,
    out: &mut Vec<Alert>,
) {
    let rname = measurement(&reading.name);
    let Some(name) = engine.devices.names.get(rname).copied() else {
        return;
    };
    totals_update(engine, event, idx, class, name, v, out);
    let Some(rule) = engine
        .devices
        .rules
        .get(crate::flows::class_index(class))
        .and_then(|list| list.iter().find(|(n, _)| *n == name))
        .map(|(_, r)| Limits::of(r))
    else {
        return;
    };
    let ts = event.ts.as_millis();
    let sigma = engine.config.baseline.sigma;
    let min_samples = f64::from(engine.config.baseline.min_samples);
    let mut findings: Vec<(&'static str, String, String)> = Vec::new();

    if let Some(min) = rule.min.filter(|m| v < *m) {
        findings.push((
            "plausibility.range",
            format!("{} = {v} is below the physical minimum {min}", rname),
            format!("{}={v} < {min}", rname),
        ));
    }
    if let Some(max) = rule.max.filter(|m| v > *m) {
        findings.push((
            "plausibility.range",
            format!("{} = {v} is above the physical maximum {max}", rname),
            format!("{}={v} > {max}", rname),
        ));
    }

    let devices = &mut engine.devices;
    let state = &mut devices.states[idx as usize];
    let slot_index = match state.slots.iter().position(|s| s.name == name) {
        Some(i) => Some(i),
        None if state.slots.len() < MAX_SLOTS => {
            state.slots.push(Slot {
                name,
                last: f32::NAN,
                last_ts: i64::MIN,
                stats: StatsF32::default(),
                step: 0.0,
                steps: 0,
                offset: 0.0,
                offset_n: 0,
                streak: 0,
                flagged: 0,
            });
            Some(state.slots.len() - 1)
        }
        None => None,
    };
    let Some(si) = slot_index else { return };
    let (last, last_ts) = (state.slots[si].last, state.slots[si].last_ts);
    if last_ts != i64::MIN && !last.is_nan() && ts > last_ts {
        let last = f64::from(last);
        let dt = ((ts - last_ts) as f64 / 1000.0).max(1.0);
        if rule.never_decreases && v < last - 1e-6 * last.abs().max(1.0) {
            findings.push((
                "plausibility.rate_of_change",
                format!(
                    "{} went backwards from {last} to {v}; it only ever grows",
                    rname
                ),
                format!("{} {last} -> {v}", rname),
            ));
        } else if let Some(max_rate) = rule.max_rate_per_s {
            let delta = (v - last).abs();
            let slot = &mut state.slots[si];
            // noise allowance: four typical steps once ten steps are known; until then a
            // hundredth of the physical span, so a device that reports many times a second
            // is not flagged for its sensor's noise before that noise is learned
            let noise = if slot.steps >= 10 {
                4.0 * f64::from(slot.step)
            } else {
                match (rule.min, rule.max) {
                    (Some(min), Some(max)) => (max - min) / 100.0,
                    _ => 0.0,
                }
            };
            let rate = delta / dt;
            let jump = delta > max_rate * dt + noise;
            if !jump {
                slot.steps = slot.steps.saturating_add(1);
                let n = f32::from(slot.steps.min(50));
                slot.step += (delta as f32 - slot.step) / n;
            }
            if jump && !paused {
                findings.push((
                    "plausibility.rate_of_change",
                    format!(
                        "{} changed from {last} to {v} in {dt:.0}s ({rate:.3}/s); the physical \
                         limit is {max_rate}/s",
                        rname
                    ),
                    format!("{} {last} -> {v} in {dt:.0}s", rname),
                ));
            }
        }
    }
    // An implausible value is not the reference for the next one, so the return to the
    // truth after a burst of false data is not another impossible jump; a value that stays
    // three reports in a row becomes the reference (the alert has been raised by then).
    let slot = &mut state.slots[si];
    slot.flagged = if findings.is_empty() {
        0
    } else {
        slot.flagged.saturating_add(1)
    };
    if findings.is_empty() || slot.flagged >= 3 {
        slot.last = v as f32;
        slot.last_ts = ts;
    }

    let out_of_range = findings.iter().any(|f| f.0 == "plausibility.range");
    if rule.baseline && !out_of_range {
        let own = state.slots[si].stats.get();
        let class_stats = devices.class_stats.entry((class, name)).or_default();
        let judged_by = if !learning && own.n >= min_samples {
            Some((own, sigma, "its own learned"))
        } else if class_stats.n >= min_samples * 10.0 {
            Some((*class_stats, sigma * 1.5, "its class's"))
        } else {
            None
        };
        let outlier = !paused && judged_by.is_some_and(|(s, sg, _)| s.is_outlier(v, sg));
        if outlier {
            let (s, _, whose) = judged_by.unwrap_or_default();
            findings.push((
                "baseline.telemetry",
                format!(
                    "{} = {v} lies far outside {whose} baseline (mean {:.3}, sd {:.3}, seen \
                     {:.3}..{:.3})",
                    rname,
                    s.mean,
                    s.sd(),
                    s.min,
                    s.max
                ),
                format!("{}={v} vs mean {:.3}", rname, s.mean),
            ));
        } else {
            let mut own = own;
            own.push(v);
            state.slots[si].stats.set(own);
            class_stats.push(v);
        }
    }

    if let Some(tolerance) = rule.neighbours_tolerance {
        let zone = state.zone;
        let implausible = !findings.is_empty();
        if let Some(finding) = neighbours(
            devices,
            idx,
            si,
            (zone, class, name),
            v,
            ts,
            tolerance,
            implausible,
            rname,
        ) {
            findings.push(finding);
        }
    }

    if findings.is_empty() {
        return;
    }
    let id = engine.devices.state(idx).id.clone();
    let zone = engine.devices.zone_of_device(idx).to_owned();
    for (rule_id, detail, summary) in findings {
        let (severity, title, advice) = match rule_id {
            "plausibility.range" => (
                Severity::High,
                format!("implausible {} from {id}", rname),
                "No real sensor reports this: the value was injected or the sensor is broken. \
                 Do not act on it; check the device and its data path.",
            ),
            "plausibility.rate_of_change" => (
                Severity::High,
                format!("physically impossible change of {} at {id}", rname),
                "Physical quantities cannot change this fast: false data is being injected, or \
                 the device was swapped or reset.",
            ),
            "plausibility.neighbours" => (
                Severity::High,
                format!("{id} disagrees with its neighbours on {}", rname),
                "Neighbouring sensors of the same kind in the same zone see something else. A \
                 lone sensor that departs from its neighbours is being fed false data or has \
                 failed.",
            ),
            _ => (
                Severity::Medium,
                format!("{} of {id} outside its learned baseline", rname),
                "The device has never behaved like this. If the change is expected (new \
                 equipment, a new season), mark the alert as learned.",
            ),
        };
        let key = format!("{id}/{}", rname);
        let draft = AlertDraft {
            rule: rule_id,
            key,
            severity,
            device_id: Some(id.clone()),
            zone: Some(zone.clone()),
            source: None,
            title,
            explanation: format!("{detail}. {advice}"),
        };
        engine.raise(draft, event, summary, out);
    }
}

#[allow(clippy::too_many_arguments)]
fn neighbours(
    devices: &mut Devices,
    idx: u32,
    si: usize,
    key: (u16, DeviceClass, u16),
    v: f64,
    ts: i64,
    tolerance: f64,
    implausible: bool,
    reading: &str,
) -> Option<(&'static str, String, String)> {
    let group = devices.groups.entry(key).or_default();
    let excluded = if implausible {
        ts.saturating_add(FRESH_MS)
    } else {
        i64::MIN
    };
    match group.members.iter().position(|(d, _, _, _)| *d == idx) {
        Some(i) => {
            let keep = group.members[i].3.max(excluded);
            group.members[i] = (idx, v as f32, ts, keep);
        }
        None if group.members.len() < MAX_GROUP => {
            group.members.push((idx, v as f32, ts, excluded))
        }
        None => return None,
    }
    if implausible {
        // already flagged by a physical rule; its neighbours judge it once it is back
        return None;
    }
    let mut others = [0f32; MAX_GROUP];
    let mut n = 0;
    for (d, value, t, excluded_until) in &group.members {
        if *d != idx && ts.saturating_sub(*t) <= FRESH_MS && ts >= *excluded_until {
            others[n] = *value;
            n += 1;
        }
    }
    if n < 3 {
        return None;
    }
    let others = &mut others[..n];
    let mid = n / 2;
    others.select_nth_unstable_by(mid, f32::total_cmp);
    let median = f64::from(others[mid]);
    let diff = v - median;
    let slot = &mut devices.states[idx as usize].slots[si];
    const LEARN: u16 = 20;
    if slot.offset_n < LEARN {
        slot.offset_n += 1;
        slot.offset += ((diff as f32) - slot.offset) / f32::from(slot.offset_n);
        return None;
    }
    let deviation = diff - f64::from(slot.offset);
    if deviation.abs() > tolerance {
        slot.streak = slot.streak.saturating_add(1);
        if slot.streak >= 3 {
            return Some((
                "plausibility.neighbours",
                format!(
                    "{reading} = {v} while the median of {n} neighbours is {median:.3}; it \
                     usually sits {:.3} from them, now {diff:.3} (tolerance {tolerance})",
                    slot.offset
                ),
                format!("{reading}={v} vs neighbours' median {median:.3}"),
            ));
        }
    } else {
        slot.streak = 0;
        slot.offset += 0.05 * ((diff as f32) - slot.offset);
    }
    None
}

fn totals_update(
    engine: &mut Engine,
    event: &Event,
    idx: u32,
    class: DeviceClass,
    name: u16,
    v: f64,
    out: &mut Vec<Alert>,
) {
    if engine.devices.totals.is_empty() {
        return;
    }
    let ts = event.ts.as_millis();
    let mut fired = Vec::new();
    for (i, totals) in engine.devices.totals.iter_mut().enumerate() {
        if class == totals.rule.parts.class && Some(name) == totals.parts_name {
            totals.parts.insert(idx, (v as f32, ts));
        } else if class == totals.rule.whole.class && Some(name) == totals.whole_name {
            totals.whole.insert(idx, (v as f32, ts));
        } else {
            continue;
        }
        if ts < totals.next_eval {
            continue;
        }
        totals.next_eval = ts + crate::config::secs_ms(totals.rule.interval_s);
        if totals.parts.len() < 3 || totals.whole.is_empty() || ts < totals.paused_until {
            continue;
        }
        let members = (totals.parts.len(), totals.whole.len());
        let moved = |now: usize, then: usize| now.abs_diff(then) * 50 > then.max(1);
        if moved(members.0, totals.members.0) || moved(members.1, totals.members.1) {
            // more than 2% of either side joined or left: the old ratio no longer describes
            // this set of devices, so it is learned again
            totals.members = members;
            totals.streak = 0;
            totals.ratio = Stats::default();
            continue;
        }
        let sum = |m: &FnvMap<u32, (f32, i64)>| m.values().map(|(v, _)| f64::from(*v)).sum::<f64>();
        let (parts, whole) = (sum(&totals.parts), sum(&totals.whole));
        if whole.abs() < 1e-9 {
            continue;
        }
        let ratio = parts / whole;
        if totals.ratio.n >= 10.0 {
            let learned = totals.ratio.mean;
            let deviation = if learned.abs() < 1e-12 {
                0.0
            } else {
                ratio / learned - 1.0
            };
            if deviation.abs() > totals.rule.tolerance {
                totals.streak = totals.streak.saturating_add(1);
                if totals.streak >= 2 {
                    fired.push((i, parts, whole, ratio, learned));
                }
                continue;
            }
        }
        totals.streak = 0;
        totals.ratio.push(ratio);
    }
    for (i, parts, whole, ratio, learned) in fired {
        let totals = &engine.devices.totals[i];
        let rule = totals.rule.clone();
        let (np, nw) = (totals.parts.len(), totals.whole.len());
        let draft = AlertDraft {
            rule: "plausibility.totals",
            key: rule.id.clone(),
            severity: Severity::High,
            device_id: None,
            zone: None,
            source: None,
            title: format!(
                "{} of {np} {} disagree with {} of {nw} {}",
                rule.parts.reading, rule.parts.class, rule.whole.reading, rule.whole.class
            ),
            explanation: format!(
                "the {np} {}s report {parts:.1} {} in all against {whole:.1} {} at the {nw} \
                 {}s: a ratio of {ratio:.4} where {learned:.4} was learned (tolerance {:.0}%). \
                 Either the parts under-report (false data injection, meter tampering) or the \
                 whole does; compare the devices that changed most.",
                rule.parts.class,
                rule.parts.reading,
                rule.whole.reading,
                rule.whole.class,
                rule.tolerance * 100.0
            ),
        };
        engine.raise(
            draft,
            event,
            format!("ratio {ratio:.4} vs learned {learned:.4}"),
            out,
        );
    }
}

/// What a reading measures, without the SenML base name a device may prefix (RFC 8428
/// names a record `bn` + `n`, e.g. `urn:dev:id:meter-0001:power`): the part after the last
/// `:` or `/`. Rules name measurements (`power`), not devices.
pub(crate) fn measurement(name: &str) -> &str {
    name.rsplit([':', '/']).next().unwrap_or(name)
}

fn clip(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

impl Stats {
    fn to_tuple(self) -> crate::learned::StatsTuple {
        [self.n, self.mean, self.m2.max(0.0), self.min, self.max]
    }

    /// Statistics from a snapshot, refused unless they are finite and consistent.
    fn from_tuple(t: crate::learned::StatsTuple) -> Option<Stats> {
        let [n, mean, m2, min, max] = t;
        let ok = t.iter().all(|v| v.is_finite())
            && (0.0..=MAX_WEIGHT).contains(&n)
            && m2 >= 0.0
            && (n == 0.0 || min <= max);
        ok.then_some(Stats {
            n,
            mean,
            m2,
            min,
            max,
        })
    }
}

impl Devices {
    /// Adds the learned state of every device `keep` accepts that has any, and the class
    /// baselines and totals ratios, to `learned`. Returns where each device (by index)
    /// went in `learned.devices` (`u32::MAX`: left out).
    pub(crate) fn export(
        &self,
        learned: &mut crate::learned::Learned,
        keep: &dyn Fn(&DeviceId) -> bool,
    ) -> Vec<u32> {
        use crate::learned::{LearnedDevice, LearnedReading};
        let mut position = vec![u32::MAX; self.states.len()];
        let mut names = vec![""; self.names.len()];
        for (name, id) in &self.names {
            names[usize::from(*id)] = name;
        }
        for (idx, state) in self.states.iter().enumerate() {
            let nothing = state.first_seen == i64::MIN
                && state.last_command == i64::MIN
                && state.last_update_flow == i64::MIN
                && state.slots.is_empty()
                && !state.actuation.known;
            if nothing || !keep(&state.id) {
                continue;
            }
            position[idx] = learned.devices.len() as u32;
            learned.devices.push(LearnedDevice {
                id: state.id.to_string(),
                first_seen: state.first_seen,
                last_command: state.last_command,
                last_update_flow: state.last_update_flow,
                firmware: state.firmware.to_string(),
                actuation: state
                    .actuation
                    .known
                    .then_some((state.actuation.on, state.actuation.level)),
                readings: state
                    .slots
                    .iter()
                    .map(|s| {
                        // What is not finite (a flood of absurd values overflowed it) is
                        // not learned knowledge: it is left out, and learned again.
                        let stats = [
                            s.stats.n,
                            s.stats.mean,
                            s.stats.m2.max(0.0),
                            s.stats.min,
                            s.stats.max,
                        ];
                        let sound = stats.iter().all(|v| v.is_finite());
                        LearnedReading {
                            name: names[usize::from(s.name)].to_owned(),
                            last: Some(s.last).filter(|v| v.is_finite()),
                            last_ts: s.last_ts,
                            stats: if sound { stats } else { [0.0; 5] },
                            step: if s.step.is_finite() {
                                s.step.max(0.0)
                            } else {
                                0.0
                            },
                            steps: if s.step.is_finite() { s.steps } else { 0 },
                            offset: if s.offset.is_finite() { s.offset } else { 0.0 },
                            offset_n: if s.offset.is_finite() { s.offset_n } else { 0 },
                        }
                    })
                    .collect(),
                ..LearnedDevice::default()
            });
        }
        let mut classes: Vec<_> = self
            .class_stats
            .iter()
            .filter_map(|((class, name), stats)| {
                Some(crate::learned::ClassBaseline {
                    class: *class,
                    reading: names[usize::from(*name)].to_owned(),
                    stats: Stats::from_tuple(stats.to_tuple())?.to_tuple(),
                })
            })
            .collect();
        classes.sort_by(|a, b| (a.class, &a.reading).cmp(&(b.class, &b.reading)));
        learned.classes = classes;
        learned.totals = self
            .totals
            .iter()
            .filter_map(|t| {
                Some(crate::learned::TotalsRatio {
                    rule: t.rule.id.clone(),
                    ratio: Stats::from_tuple(t.ratio.to_tuple())?.to_tuple(),
                    members: t.members,
                })
            })
            .collect();
        position
    }

    /// Loads the device, class and totals part of a snapshot (see
    /// [`Engine::restore_learned`]); values that are not finite are skipped.
    pub(crate) fn import(
        &mut self,
        learned: &crate::learned::Learned,
        keep: &dyn Fn(&DeviceId) -> bool,
        restored: &mut crate::learned::Restored,
    ) {
        for device in &learned.devices {
            let Some(idx) = DeviceId::new(&device.id)
                .ok()
                .filter(|id| keep(id))
                .and_then(|id| self.get(&id))
            else {
                restored.skipped += 1;
                continue;
            };
            let mut slots = Vec::new();
            for r in device.readings.iter().take(MAX_SLOTS) {
                let finite = r.stats.iter().all(|v| v.is_finite())
                    && r.step.is_finite()
                    && r.offset.is_finite()
                    && r.stats[0] >= 0.0
                    && r.stats[2] >= 0.0;
                let Some(name) = self.intern(&r.name).filter(|_| finite) else {
                    continue;
                };
                if slots.iter().any(|s: &Slot| s.name == name) {
                    continue;
                }
                let stats = StatsF32 {
                    n: r.stats[0].min(MAX_WEIGHT as f32),
                    mean: r.stats[1],
                    m2: r.stats[2],
                    min: r.stats[3],
                    max: r.stats[4],
                };
                slots.push(Slot {
                    name,
                    last: r.last.filter(|v| v.is_finite()).unwrap_or(f32::NAN),
                    last_ts: r.last_ts,
                    stats,
                    step: r.step.max(0.0),
                    steps: r.steps,
                    offset: r.offset,
                    offset_n: r.offset_n,
                    streak: 0,
                    flagged: 0,
                });
            }
            let state = &mut self.states[idx as usize];
            state.first_seen = device.first_seen;
            state.last_command = state.last_command.max(device.last_command);
            state.last_update_flow = state.last_update_flow.max(device.last_update_flow);
            if !device.firmware.is_empty() {
                state.firmware = clip(&device.firmware, 64).into_boxed_str();
            }
            if let Some((on, level)) = device.actuation.filter(|(_, l)| l.is_finite()) {
                state.actuation = Actuation {
                    known: true,
                    on,
                    level,
                };
            }
            state.slots = slots;
            restored.devices += 1;
        }
        for class in &learned.classes {
            let (Some(name), Some(stats)) =
                (self.intern(&class.reading), Stats::from_tuple(class.stats))
            else {
                continue;
            };
            let current = self.class_stats.entry((class.class, name)).or_default();
            if stats.n > current.n {
                *current = stats;
            }
            restored.class_baselines += 1;
        }
        for totals in &learned.totals {
            let Some(stats) = Stats::from_tuple(totals.ratio) else {
                continue;
            };
            if let Some(mine) = self.totals.iter_mut().find(|t| t.rule.id == totals.rule)
                && stats.n > mine.ratio.n
            {
                mine.ratio = stats;
                mine.members = totals.members;
                restored.totals += 1;
            }
        }
    }
}

//! The benign background at simulated time, for soaks: what every device of a population
//! would send over hours or days (telemetry at its cadence with daily curves, actuator
//! state, the firmware report on each connect, flows, outages, maintenance windows and
//! firmware updates), generated minute by minute in time order without sockets or sleeps.
//! The same population, seed and start give the same observations.

use model::{FlowRecord, Timestamp};

use crate::background::{self, LifeKind};
use crate::population::Population;
use crate::telemetry::{DeviceModel, cadence};

/// One thing the platform would observe.
#[derive(Debug, Clone, PartialEq)]
pub enum Observation {
    /// A device publishes `payload` on `topic` (its own) at `ts`.
    Publish {
        ts: Timestamp,
        device: usize,
        topic: String,
        payload: Vec<u8>,
    },
    /// A device connected (from its MQTT source address `peer`).
    Connected {
        ts: Timestamp,
        device: usize,
        peer: String,
    },
    /// A device went away.
    Disconnected { ts: Timestamp, device: usize },
    /// A flow record (timed by its end).
    Flow(FlowRecord),
}

impl Observation {
    pub fn ts(&self) -> Timestamp {
        match self {
            Observation::Publish { ts, .. }
            | Observation::Connected { ts, .. }
            | Observation::Disconnected { ts, .. } => *ts,
            Observation::Flow(r) => r.end,
        }
    }
}

const WINDOW_MS: i64 = 60_000;

struct DeviceState {
    model: DeviceModel,
    firmware: String,
    /// Telemetry phase within the cadence.
    phase_ms: i64,
    cadence_ms: i64,
    /// Off the network until then, reconnecting (with `pending_firmware` if set).
    offline_until: Option<i64>,
    pending_firmware: Option<String>,
    prefix: String,
}

/// A generator of one population's benign background from `start_ms` for `hours`.
pub struct Soak<'a> {
    population: &'a Population,
    seed: u64,
    devices: Vec<DeviceState>,
    life: Vec<background::LifeEvent>,
    next_life: usize,
    /// Pending device disconnects/reconnects: (at, device, reconnect?).
    transitions: Vec<(i64, usize, bool)>,
    /// Flows of honest events that end later.
    pending_flows: Vec<FlowRecord>,
    now: i64,
    end: i64,
    started: bool,
}

impl<'a> Soak<'a> {
    pub fn new(population: &'a Population, seed: u64, start_ms: i64, hours: f64) -> Soak<'a> {
        let end = start_ms + (hours * 3_600_000.0) as i64;
        let devices = population
            .devices
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let cadence_ms = cadence(d.class).as_millis() as i64;
                DeviceState {
                    model: DeviceModel::new(d.class, seed ^ (i as u64).wrapping_mul(0x9e37)),
                    firmware: d.firmware.clone(),
                    phase_ms: (background::draw(seed, i as u64, 1, 0x50a) * cadence_ms as f64)
                        as i64,
                    cadence_ms,
                    offline_until: None,
                    pending_firmware: None,
                    prefix: model::topic::device_prefix(d.sector, &d.id),
                }
            })
            .collect();
        Soak {
            population,
            seed,
            devices,
            life: background::life_events(population, seed, start_ms, end),
            next_life: 0,
            transitions: Vec::new(),
            pending_flows: Vec::new(),
            now: start_ms,
            end,
            started: false,
        }
    }

    /// The honest events planned for the soak (outages, maintenance, firmware updates).
    pub fn life_events(&self) -> &[background::LifeEvent] {
        &self.life
    }

    /// Simulated device-hours covered.
    pub fn device_hours(&self, start_ms: i64) -> f64 {
        self.population.len() as f64 * (self.end - start_ms) as f64 / 3_600_000.0
    }

    fn peer(index: usize) -> String {
        let src = crate::runner::device_source(1, index);
        format!("{}:{}", src.ip(), 40_000 + (index % 20_000))
    }

    fn connect(&mut self, index: usize, at: i64, out: &mut Vec<Observation>) {
        let state = &mut self.devices[index];
        if let Some(fw) = state.pending_firmware.take() {
            state.firmware = fw;
        }
        out.push(Observation::Connected {
            ts: Timestamp::from_millis(at),
            device: index,
            peer: Soak::peer(index),
        });
        let ts = Timestamp::from_millis(at);
        let hello =
            serde_json::json!({"firmware": state.firmware, "ts": ts.to_rfc3339()}).to_string();
        out.push(Observation::Publish {
            ts,
            device: index,
            topic: format!("{}/telemetry", state.prefix),
            payload: hello.into_bytes(),
        });
        if self.population.devices[index].class.is_actuator() {
            let mut payload = Vec::new();
            state.model.state(&ts.to_rfc3339(), &mut payload);
            out.push(Observation::Publish {
                ts,
                device: index,
                topic: format!("{}/state", state.prefix),
                payload,
            });
        }
    }

    /// Appends the next simulated minute's observations, in time order; false when the
    /// soak is over.
    pub fn next_minute(&mut self, out: &mut Vec<Observation>) -> bool {
        if self.now >= self.end {
            return false;
        }
        let from = self.now;
        let to = (from + WINDOW_MS).min(self.end);
        let mut batch = Vec::new();
        if !self.started {
            self.started = true;
            for i in 0..self.devices.len() {
                self.connect(i, from, &mut batch);
            }
        }
        // Honest events starting in this window.
        while let Some(event) = self.life.get(self.next_life).cloned() {
            if event.at_ms >= to {
                break;
            }
            self.next_life += 1;
            let device = &self.population.devices[event.device];
            self.pending_flows
                .extend(background::life_flows(device, &event, self.seed));
            let (down_at, back_at, firmware) = match &event.kind {
                LifeKind::Offline { duration_ms } => (event.at_ms, event.at_ms + duration_ms, None),
                LifeKind::Maintenance {
                    duration_ms,
                    restart_ms,
                } => (
                    event.at_ms + duration_ms,
                    event.at_ms + duration_ms + restart_ms,
                    None,
                ),
                LifeKind::FirmwareUpdate {
                    firmware,
                    restart_ms,
                } => (
                    event.at_ms + 20_000,
                    event.at_ms + 20_000 + restart_ms,
                    Some(firmware.clone()),
                ),
            };
            self.transitions.push((down_at, event.device, false));
            self.transitions.push((back_at, event.device, true));
            if firmware.is_some() {
                self.devices[event.device].pending_firmware = firmware;
            }
        }
        self.transitions.sort();
        // Life flows ending in this window.
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending_flows)
            .into_iter()
            .partition(|r| r.end.as_millis() < to);
        self.pending_flows = later;
        batch.extend(due.into_iter().map(Observation::Flow));
        // Transitions due in this window.
        let mut keep = Vec::new();
        for (at, device, up) in std::mem::take(&mut self.transitions) {
            if at >= to {
                keep.push((at, device, up));
                continue;
            }
            if up {
                self.devices[device].offline_until = None;
                self.connect(device, at, &mut batch);
            } else {
                self.devices[device].offline_until = Some(i64::MAX);
                batch.push(Observation::Disconnected {
                    ts: Timestamp::from_millis(at),
                    device,
                });
            }
        }
        self.transitions = keep;
        // Telemetry and state.
        for (i, state) in self.devices.iter_mut().enumerate() {
            let device = &self.population.devices[i];
            let mut k = (from - state.phase_ms).div_euclid(state.cadence_ms);
            loop {
                let at = state.phase_ms + k * state.cadence_ms;
                k += 1;
                if at < from {
                    continue;
                }
                if at >= to {
                    break;
                }
                if state.offline_until.is_some() {
                    continue;
                }
                let ts = Timestamp::from_millis(at);
                let rfc = ts.to_rfc3339();
                let mut payload = Vec::new();
                state
                    .model
                    .telemetry(device.id.as_str(), at, &rfc, &mut payload);
                batch.push(Observation::Publish {
                    ts,
                    device: i,
                    topic: format!("{}/telemetry", state.prefix),
                    payload,
                });
                if state.model.state_due() {
                    let mut payload = Vec::new();
                    state.model.state(&rfc, &mut payload);
                    batch.push(Observation::Publish {
                        ts,
                        device: i,
                        topic: format!("{}/state", state.prefix),
                        payload,
                    });
                }
            }
        }
        // Flows whose record ends in this window (a record ends at most a period before
        // its period does).
        let devices = &self.devices;
        for record in background::flows(
            self.population,
            self.seed,
            from,
            to + background::FLOW_PERIOD_MS,
            &|i, _| devices[i].offline_until.is_some(),
        ) {
            let end = record.end.as_millis();
            if (from..to).contains(&end) {
                batch.push(Observation::Flow(record));
            }
        }
        batch.sort_by_key(|o| o.ts());
        out.extend(batch);
        self.now = to;
        true
    }
}

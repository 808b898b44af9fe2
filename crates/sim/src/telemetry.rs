//! Telemetry models: what each class of device reports, how often, and how actuators
//! answer commands. Payloads are JSON objects with an RFC 3339 `ts`, except smart meters,
//! which report SenML (RFC 8428). Values follow daily curves driven by simulated time.
//!
//! Payloads are written with `write!` into a reused buffer, not through serde: the load
//! generator renders hundreds of thousands per second.

use std::io::Write as _;
use std::time::Duration;

use model::DeviceClass;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

/// How often a class reports telemetry.
pub fn cadence(class: DeviceClass) -> Duration {
    Duration::from_secs(match class {
        DeviceClass::Siren => 60,
        DeviceClass::Camera => 10,
        DeviceClass::TrafficSignal => 5,
        DeviceClass::EvCharger => 15,
        DeviceClass::SmartMeter => 30,
        DeviceClass::StreetLight => 60,
        DeviceClass::FeederBreaker => 10,
        DeviceClass::Pump => 5,
        DeviceClass::Valve => 30,
        DeviceClass::LevelSensor => 10,
        DeviceClass::QualitySensor => 30,
        DeviceClass::AirQuality => 60,
        DeviceClass::Weather => 60,
        DeviceClass::Hvac => 30,
        DeviceClass::AccessControl => 20,
    })
}

/// An actuator publishes its state to `.../state` on connect, after every command, and
/// with every `STATE_EVERY`th telemetry report.
pub const STATE_EVERY: u32 = 10;

/// Local time offset of the simulated city (CET), for the daily curves.
const LOCAL_OFFSET_S: i64 = 3600;

const HVAC_MODES: [&str; 4] = ["heat", "cool", "auto", "off"];

/// The hour of day (local, fractional) at simulated time `sim_ms`.
pub fn hour_of_day(sim_ms: i64) -> f64 {
    let secs = (sim_ms.div_euclid(1000) + LOCAL_OFFSET_S).rem_euclid(86_400);
    secs as f64 / 3600.0
}

/// A household's relative electricity demand by hour: low at night, a morning bump and an
/// evening peak (1.0).
pub fn residential_load(hour: f64) -> f64 {
    let bump =
        |centre: f64, width: f64, height: f64| height * (-((hour - centre) / width).powi(2)).exp();
    (0.25 + bump(7.5, 1.5, 0.45) + bump(19.0, 2.5, 0.75) + bump(13.0, 3.0, 0.15)).min(1.0)
}

/// A street light's dimming level by hour: off by day, full in the evening and early
/// morning, dimmed in the small hours.
pub fn street_light_dim(hour: f64) -> u8 {
    match hour {
        h if (7.5..17.0).contains(&h) => 0,
        h if (1.0..5.0).contains(&h) => 50,
        _ => 100,
    }
}

/// The result of applying a command to an actuator.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandOutcome {
    pub action: String,
    pub ok: bool,
    /// The payload for `.../ack`.
    pub ack: Vec<u8>,
    /// Whether the actuator's state changed (and `.../state` should be published).
    pub state_changed: bool,
}

/// The simulated behaviour of one device: its own random stream and a few state
/// variables. About 80 bytes, so 50,000 devices cost a few MB.
#[derive(Debug, Clone)]
pub struct DeviceModel {
    pub class: DeviceClass,
    rng: SmallRng,
    /// Per-device scale: household size, pump size, traffic volume.
    base: f32,
    /// Cumulative energy for meters and chargers.
    energy_kwh: f64,
    /// Simulated time of the previous report, for integrating energy.
    last_ms: i64,
    /// Siren sounding, light forced on, breaker closed, pump running, charger enabled,
    /// access locked; depends on the class.
    on: bool,
    /// Valve position, HVAC setpoint, light dim override (negative = follow schedule).
    level: f32,
    /// Traffic plan, HVAC mode, signal flashing flag; depends on the class.
    mode: u8,
    reports: u32,
}

impl DeviceModel {
    pub fn new(class: DeviceClass, seed: u64) -> DeviceModel {
        let mut rng = SmallRng::seed_from_u64(seed);
        let base = rng.random_range(0.6f32..1.6);
        let (on, level, mode) = match class {
            DeviceClass::Siren => (false, 0.0, 0),
            DeviceClass::StreetLight => (false, -1.0, 0),
            DeviceClass::Valve => (true, 100.0, 0),
            DeviceClass::Hvac => (true, rng.random_range(19.0f32..22.5).round(), 0),
            DeviceClass::TrafficSignal => (true, 0.0, rng.random_range(1..4)),
            _ => (true, 0.0, 0),
        };
        DeviceModel {
            class,
            energy_kwh: f64::from(base) * rng.random_range(2_000.0..20_000.0),
            rng,
            base,
            last_ms: i64::MIN,
            on,
            level,
            mode,
            reports: 0,
        }
    }

    /// Whether a siren is sounding (or, for other actuators, their main on/off state).
    pub fn is_on(&self) -> bool {
        self.on
    }

    /// Forces a siren's sounding state without a command, as a compromised device or a
    /// replayed radio command would.
    pub fn set_sounding(&mut self, sounding: bool) {
        if self.class == DeviceClass::Siren {
            self.on = sounding;
        }
    }

    /// How many telemetry reports this device has rendered.
    pub fn reports(&self) -> u32 {
        self.reports
    }

    /// Whether this report should be followed by a state publish.
    pub fn state_due(&self) -> bool {
        self.class.is_actuator() && self.reports % STATE_EVERY == 1
    }

    fn noise(&mut self, spread: f64) -> f64 {
        (self.rng.random::<f64>() - 0.5) * 2.0 * spread
    }

    /// Appends the telemetry payload for simulated time `sim_ms` (`ts` is its RFC 3339 form)
    /// to `out`.
    pub fn telemetry(&mut self, device_id: &str, sim_ms: i64, ts: &str, out: &mut Vec<u8>) {
        let hour = hour_of_day(sim_ms);
        let dt_h = if self.last_ms == i64::MIN || sim_ms < self.last_ms {
            0.0
        } else {
            (sim_ms - self.last_ms) as f64 / 3_600_000.0
        };
        self.last_ms = sim_ms;
        self.reports = self.reports.wrapping_add(1);
        let base = f64::from(self.base);
        // Writing into a Vec cannot fail.
        let _ = match self.class {
            DeviceClass::Siren => {
                let battery = 26.9 + self.noise(0.2);
                let cabinet = self.rng.random_bool(0.001);
                write!(
                    out,
                    r#"{{"sounding":{},"battery_v":{battery:.1},"cabinet_open":{cabinet},"ts":"{ts}"}}"#,
                    self.on
                )
            }
            DeviceClass::Camera => {
                let fps = if self.rng.random_bool(0.01) { 12 } else { 25 };
                let bitrate = 2048.0 * base + self.noise(300.0);
                write!(
                    out,
                    r#"{{"fps":{fps},"bitrate_kbps":{bitrate:.0},"recording":true,"ts":"{ts}"}}"#
                )
            }
            DeviceClass::TrafficSignal => {
                let phase = (sim_ms / 1000 / 20).rem_euclid(4) + 1;
                let plan = if self.mode == 0 {
                    "FLASH".to_string()
                } else if (7.0..9.5).contains(&hour) || (16.0..19.0).contains(&hour) {
                    format!("P{}", self.mode + 3)
                } else {
                    format!("P{}", self.mode)
                };
                let fault = self.rng.random_bool(0.0005);
                write!(
                    out,
                    r#"{{"phase":{phase},"plan":"{plan}","fault":{fault},"ts":"{ts}"}}"#
                )
            }
            DeviceClass::EvCharger => {
                let busy = 0.3 + 0.5 * residential_load(hour);
                let active = self.on && self.rng.random_bool(busy.min(0.95));
                let power = if active {
                    11.0 * base.min(1.0) + self.noise(0.3)
                } else {
                    0.0
                };
                self.energy_kwh += power * dt_h;
                write!(
                    out,
                    r#"{{"power_kw":{power:.2},"session_active":{active},"energy_kwh":{:.2},"ts":"{ts}"}}"#,
                    self.energy_kwh
                )
            }
            DeviceClass::SmartMeter => {
                let power = (1.2 * base * residential_load(hour) + self.noise(0.05)).max(0.02);
                self.energy_kwh += power * dt_h;
                let voltage = 230.0 + self.noise(3.0);
                let bt = sim_ms as f64 / 1000.0;
                write!(
                    out,
                    r#"[{{"bn":"urn:dev:id:{device_id}:","bt":{bt:.3},"n":"energy","u":"kWh","v":{:.3}}},{{"n":"power","u":"kW","v":{power:.3}}},{{"n":"voltage","u":"V","v":{voltage:.1}}}]"#,
                    self.energy_kwh
                )
            }
            DeviceClass::StreetLight => {
                let dim = if self.level >= 0.0 {
                    self.level as u8
                } else {
                    street_light_dim(hour)
                };
                let on = self.on || dim > 0;
                let dim = if on && dim == 0 { 100 } else { dim };
                let power = if on {
                    120.0 * base * f64::from(dim) / 100.0
                } else {
                    0.4
                };
                write!(
                    out,
                    r#"{{"on":{on},"dim_pct":{dim},"power_w":{power:.1},"ts":"{ts}"}}"#
                )
            }
            DeviceClass::FeederBreaker => {
                let current = if self.on {
                    400.0 * base * residential_load(hour) + self.noise(10.0)
                } else {
                    0.0
                };
                write!(
                    out,
                    r#"{{"closed":{},"current_a":{current:.1},"ts":"{ts}"}}"#,
                    self.on
                )
            }
            DeviceClass::Pump => {
                let demand = 0.5 + 0.5 * residential_load(hour);
                let (flow, pressure, rpm, temp) = if self.on {
                    (
                        60.0 * base * demand + self.noise(1.0),
                        3.5 + demand + self.noise(0.05),
                        1480.0 + self.noise(10.0),
                        55.0 + 10.0 * demand + self.noise(0.5),
                    )
                } else {
                    (0.0, 1.2 + self.noise(0.05), 0.0, 30.0 + self.noise(0.5))
                };
                write!(
                    out,
                    r#"{{"flow_lps":{flow:.1},"pressure_bar":{pressure:.2},"rpm":{rpm:.0},"motor_temp_c":{temp:.1},"running":{},"ts":"{ts}"}}"#,
                    self.on
                )
            }
            DeviceClass::Valve => {
                write!(out, r#"{{"position_pct":{:.1},"ts":"{ts}"}}"#, self.level)
            }
            DeviceClass::LevelSensor => {
                let level = 2.0 * base
                    + 0.5 * (hour / 24.0 * std::f64::consts::TAU).sin()
                    + self.noise(0.01);
                write!(out, r#"{{"level_m":{level:.3},"ts":"{ts}"}}"#)
            }
            DeviceClass::QualitySensor => {
                let ph = 7.4 + self.noise(0.1);
                let turbidity = (0.3 + self.noise(0.1)).max(0.01);
                let chlorine = 0.5 + self.noise(0.05);
                write!(
                    out,
                    r#"{{"ph":{ph:.2},"turbidity_ntu":{turbidity:.2},"chlorine_mgl":{chlorine:.2},"ts":"{ts}"}}"#
                )
            }
            DeviceClass::AirQuality => {
                let traffic = residential_load(hour);
                let pm25 = (8.0 + 10.0 * traffic * base + self.noise(1.5)).max(0.5);
                let pm10 = pm25 * 1.6 + self.noise(1.0).abs();
                let no2 = (15.0 + 30.0 * traffic * base + self.noise(2.0)).max(1.0);
                let o3 = (40.0 + 30.0 * (1.0 - traffic) + self.noise(3.0)).max(1.0);
                write!(
                    out,
                    r#"{{"pm2_5":{pm25:.1},"pm10":{pm10:.1},"no2":{no2:.1},"o3":{o3:.1},"ts":"{ts}"}}"#
                )
            }
            DeviceClass::Weather => {
                let daily = ((hour - 9.0) / 24.0 * std::f64::consts::TAU).sin();
                let temp = 11.0 + 5.0 * daily + self.noise(0.3);
                let humidity = (75.0 - 15.0 * daily + self.noise(2.0)).clamp(20.0, 100.0);
                let wind = (4.0 + self.noise(2.0)).max(0.0);
                let rain = if self.rng.random_bool(0.1) {
                    self.rng.random_range(0.1..2.0)
                } else {
                    0.0
                };
                write!(
                    out,
                    r#"{{"temp_c":{temp:.1},"humidity_pct":{humidity:.0},"wind_ms":{wind:.1},"rain_mm":{rain:.1},"ts":"{ts}"}}"#
                )
            }
            DeviceClass::Hvac => {
                let occupied = (7.0..19.0).contains(&hour);
                let target = if occupied {
                    f64::from(self.level)
                } else {
                    f64::from(self.level) - 3.0
                };
                let temp = target + self.noise(0.6);
                write!(
                    out,
                    r#"{{"temp_c":{temp:.1},"setpoint_c":{:.1},"mode":"{}","ts":"{ts}"}}"#,
                    self.level,
                    HVAC_MODES[usize::from(self.mode) % HVAC_MODES.len()]
                )
            }
            DeviceClass::AccessControl => {
                let busy = if (7.0..19.0).contains(&hour) {
                    4.0
                } else {
                    0.3
                };
                let badges = (self.rng.random::<f64>() * busy * 2.0) as u32;
                let door = if badges > 0 && self.rng.random_bool(0.3) {
                    "open"
                } else {
                    "closed"
                };
                write!(
                    out,
                    r#"{{"door":"{door}","badge_events":{badges},"locked":{},"ts":"{ts}"}}"#,
                    self.on
                )
            }
        };
    }

    /// Appends the actuator state payload to `out` (nothing for sensors).
    pub fn state(&self, ts: &str, out: &mut Vec<u8>) {
        let on = self.on;
        let _ = match self.class {
            DeviceClass::Siren => write!(out, r#"{{"sounding":{on},"ts":"{ts}"}}"#),
            DeviceClass::TrafficSignal => {
                let mode = if self.mode == 0 { "flash" } else { "normal" };
                write!(
                    out,
                    r#"{{"mode":"{mode}","plan":{},"ts":"{ts}"}}"#,
                    self.mode
                )
            }
            DeviceClass::EvCharger => write!(out, r#"{{"enabled":{on},"ts":"{ts}"}}"#),
            DeviceClass::StreetLight => {
                if self.level >= 0.0 {
                    write!(
                        out,
                        r#"{{"forced_on":{on},"dim_pct":{},"ts":"{ts}"}}"#,
                        self.level
                    )
                } else {
                    // No dimming override: the light follows its schedule.
                    write!(out, r#"{{"forced_on":{on},"dim":"schedule","ts":"{ts}"}}"#)
                }
            }
            DeviceClass::FeederBreaker => write!(out, r#"{{"closed":{on},"ts":"{ts}"}}"#),
            DeviceClass::Pump => write!(out, r#"{{"running":{on},"ts":"{ts}"}}"#),
            DeviceClass::Valve => {
                write!(out, r#"{{"position_pct":{:.1},"ts":"{ts}"}}"#, self.level)
            }
            DeviceClass::Hvac => write!(
                out,
                r#"{{"setpoint_c":{:.1},"mode":"{}","ts":"{ts}"}}"#,
                self.level,
                HVAC_MODES[usize::from(self.mode) % HVAC_MODES.len()]
            ),
            DeviceClass::AccessControl => write!(out, r#"{{"locked":{on},"ts":"{ts}"}}"#),
            _ => Ok(()),
        };
    }

    /// Applies a command payload (`{"action": "...", ...}`) and renders the ack. `None`
    /// when the payload is not a JSON object with a string `action`.
    pub fn apply_command(&mut self, payload: &[u8], ts: &str) -> Option<CommandOutcome> {
        let cmd: Value = serde_json::from_slice(payload).ok()?;
        let action = cmd.get("action")?.as_str()?.to_string();
        let num = |key: &str| cmd.get(key).and_then(Value::as_f64);
        let before = (self.on, self.level, self.mode);
        let ok = match (self.class, action.as_str()) {
            (DeviceClass::Siren, "sound" | "activate" | "on" | "start") => set(&mut self.on, true),
            (DeviceClass::Siren, "silence" | "cancel" | "stop" | "off") => set(&mut self.on, false),
            (DeviceClass::Siren, "test") => true,
            (DeviceClass::StreetLight, "on") => set(&mut self.on, true),
            (DeviceClass::StreetLight, "off") => {
                self.level = -1.0;
                set(&mut self.on, false)
            }
            (DeviceClass::StreetLight, "dim") => match num("dim_pct") {
                Some(pct) if (0.0..=100.0).contains(&pct) => {
                    self.level = pct as f32;
                    true
                }
                _ => false,
            },
            (DeviceClass::FeederBreaker, "open" | "trip") => set(&mut self.on, false),
            (DeviceClass::FeederBreaker, "close") => set(&mut self.on, true),
            (DeviceClass::Pump, "start") => set(&mut self.on, true),
            (DeviceClass::Pump, "stop") => set(&mut self.on, false),
            (DeviceClass::Valve, "open") => {
                self.level = 100.0;
                true
            }
            (DeviceClass::Valve, "close") => {
                self.level = 0.0;
                true
            }
            (DeviceClass::Valve, "set_position") => match num("position_pct") {
                Some(pct) if (0.0..=100.0).contains(&pct) => {
                    self.level = pct as f32;
                    true
                }
                _ => false,
            },
            (DeviceClass::Hvac, "set_setpoint") => match num("setpoint_c") {
                Some(c) if (5.0..=35.0).contains(&c) => {
                    self.level = c as f32;
                    true
                }
                _ => false,
            },
            (DeviceClass::Hvac, "set_mode") => {
                match cmd
                    .get("mode")
                    .and_then(Value::as_str)
                    .and_then(|m| HVAC_MODES.iter().position(|x| *x == m))
                {
                    Some(i) => {
                        self.mode = i as u8;
                        true
                    }
                    None => false,
                }
            }
            (DeviceClass::AccessControl, "lock") => set(&mut self.on, true),
            (DeviceClass::AccessControl, "unlock") => set(&mut self.on, false),
            (DeviceClass::TrafficSignal, "flash") => {
                self.mode = 0;
                true
            }
            (DeviceClass::TrafficSignal, "normal") => {
                if self.mode == 0 {
                    self.mode = 1;
                }
                true
            }
            (DeviceClass::TrafficSignal, "set_plan") => match num("plan") {
                Some(p) if (1.0..=9.0).contains(&p) => {
                    self.mode = p as u8;
                    true
                }
                _ => false,
            },
            (DeviceClass::EvCharger, "enable") => set(&mut self.on, true),
            (DeviceClass::EvCharger, "disable" | "stop_session") => set(&mut self.on, false),
            _ => false,
        };
        let mut ack = serde_json::Map::new();
        for key in ["id", "command_id", "counter"] {
            if let Some(v) = cmd.get(key) {
                ack.insert(key.to_string(), v.clone());
            }
        }
        ack.insert("action".into(), Value::String(action.clone()));
        ack.insert("ok".into(), Value::Bool(ok));
        if !ok {
            ack.insert(
                "error".into(),
                Value::String("unsupported action or argument".into()),
            );
        }
        ack.insert("ts".into(), Value::String(ts.to_string()));
        let ack = serde_json::to_vec(&Value::Object(ack)).expect("ack serialises");
        let state_changed = before != (self.on, self.level, self.mode);
        Some(CommandOutcome {
            action,
            ok,
            ack,
            state_changed,
        })
    }
}

/// The ack for a command the device refused without acting on it: `ok: false`, the reason,
/// and the command's `id`, `action` and `counter` when the payload carries them (they are
/// not trusted, only echoed so the sender can match the ack).
pub fn refusal_ack(payload: &[u8], reason: &str, ts: &str) -> Vec<u8> {
    let cmd: Value = serde_json::from_slice(payload).unwrap_or(Value::Null);
    let mut ack = serde_json::Map::new();
    for key in ["id", "command_id", "counter", "action"] {
        if let Some(v) = cmd.get(key).filter(|v| v.is_string() || v.is_number()) {
            ack.insert(key.to_string(), v.clone());
        }
    }
    ack.insert("ok".into(), Value::Bool(false));
    ack.insert("error".into(), Value::String(reason.to_owned()));
    ack.insert("ts".into(), Value::String(ts.to_owned()));
    serde_json::to_vec(&Value::Object(ack)).expect("ack serialises")
}

fn set(slot: &mut bool, value: bool) -> bool {
    *slot = value;
    true
}

//! A synthetic city for measuring the engine (`cargo bench -p detect`, `citysec bench
//! detect`): devices of every class with addresses in their zones, a zone plan with
//! conduits, partner indicators, and a reproducible mix of telemetry, state, broker events
//! and flows. Pure and seeded, like the engine: the caller times it.

use std::net::{IpAddr, Ipv4Addr};

use model::{
    DeviceClass, DeviceId, Event, EventKind, FlowRecord, Reading, SecurityEvent, SecurityEventKind,
    Timestamp, Value, proto,
};

use crate::{ConduitConfig, DetectConfig, DeviceMeta, Engine, Indicator, ZoneConfig};

/// What to build.
#[derive(Debug, Clone, Copy)]
pub struct WorkloadConfig {
    pub devices: usize,
    pub indicators: usize,
    /// Events in the measured stream.
    pub events: usize,
    pub seed: u64,
}

/// splitmix64: small, fast, and reproducible across platforms.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

const START_MS: i64 = 1_796_000_000_000;

fn zone_index(class: DeviceClass) -> u8 {
    DeviceClass::ALL
        .iter()
        .position(|c| *c == class)
        .unwrap_or(0) as u8
        + 1
}

fn zone_name(class: DeviceClass) -> String {
    format!("{}-zone", class.as_str())
}

/// The address of device `i` of a class: 10.<zone>.<hi>.<lo>.
fn address(class: DeviceClass, i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(
        10,
        zone_index(class),
        (i / 250 % 250) as u8,
        (i % 250 + 1) as u8,
    ))
}

/// The head-end all devices report to, in the `core` zone.
const HEAD_END: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 10);

/// The detection config of the synthetic city: one zone per class and a core zone, and
/// conduits for MQTT to the head-end and HTTPS to the internet.
pub fn config() -> DetectConfig {
    let mut zones: Vec<ZoneConfig> = DeviceClass::ALL
        .iter()
        .map(|c| ZoneConfig {
            name: zone_name(*c),
            cidrs: vec![format!("10.{}.0.0/16", zone_index(*c))],
            allow_unregistered: false,
        })
        .collect();
    zones.push(ZoneConfig {
        name: "core".into(),
        cidrs: vec!["10.200.0.0/16".into()],
        allow_unregistered: true,
    });
    let mut conduits = Vec::new();
    for c in DeviceClass::ALL {
        conduits.push(ConduitConfig {
            name: format!("{c} to the head-end"),
            from: zone_name(c),
            to: "core".into(),
            protocol: "tcp".into(),
            ports: vec![8883],
        });
        conduits.push(ConduitConfig {
            name: format!("{c} to the vendor cloud"),
            from: zone_name(c),
            to: "internet".into(),
            protocol: "tcp".into(),
            ports: vec![443],
        });
    }
    DetectConfig {
        zones,
        conduits,
        ..DetectConfig::default()
    }
}

fn device_id(class: DeviceClass, i: usize) -> DeviceId {
    // ids are validated; these are always valid
    DeviceId::new(format!("{}-{i:06}", class.as_str())).unwrap_or_else(|_| unreachable!())
}

/// The devices: classes round-robin, each with one address.
pub fn devices(n: usize) -> Vec<(DeviceId, DeviceMeta)> {
    (0..n)
        .map(|i| {
            let class = DeviceClass::ALL[i % DeviceClass::ALL.len()];
            let k = i / DeviceClass::ALL.len();
            let mut meta = DeviceMeta::new(class, zone_name(class));
            meta.firmware = "1.4.2".into();
            meta.addresses = vec![address(class, k)];
            meta.credentials = vec![format!("$sha256$salt{i}$hash{i}")];
            (device_id(class, k), meta)
        })
        .collect()
}

/// Partner indicators: mostly single addresses (as feeds are), some domains and file
/// hashes that flows never evaluate.
pub fn indicators(n: usize, seed: u64) -> Vec<Indicator> {
    let mut rng = Rng::new(seed ^ 0x1d1c);
    (0..n)
        .map(|i| {
            let pattern = match i % 200 {
                0 => format!("[domain-name:value = 'c2-{i}.example.net']"),
                1 => format!(
                    "[file:hashes.'SHA-256' = '{:016x}{:016x}{:016x}{:016x}']",
                    rng.next_u64(),
                    rng.next_u64(),
                    rng.next_u64(),
                    rng.next_u64()
                ),
                _ => {
                    let ip = Ipv4Addr::from(0xc000_0000u32 | (rng.next_u64() as u32 & 0x1fff_ffff));
                    format!("[ipv4-addr:value = '{ip}']")
                }
            };
            Indicator {
                id: format!("indicator--{:08x}-0000-4000-8000-{i:012}", seed as u32),
                pattern,
                name: format!("feed entry {i}"),
                source: "isac".into(),
                valid_until: None,
            }
        })
        .collect()
}

fn readings(class: DeviceClass, rng: &mut Rng, t: f64) -> Vec<Reading> {
    let n = |name: &str, v: f64| Reading {
        name: name.to_owned(),
        value: Value::Number((v * 1000.0).round() / 1000.0),
        unit: None,
    };
    let b = |name: &str, v: bool| Reading {
        name: name.to_owned(),
        value: Value::Bool(v),
        unit: None,
    };
    let daily = (t / 86_400.0 * std::f64::consts::TAU).sin();
    let noise = |rng: &mut Rng, s: f64| (rng.unit() - 0.5) * 2.0 * s;
    match class {
        DeviceClass::SmartMeter => vec![
            n("power", 1.0 + 0.4 * daily + noise(rng, 0.05)),
            n("voltage", 230.0 + noise(rng, 3.0)),
            n("energy", 5000.0 + t / 3600.0),
        ],
        DeviceClass::LevelSensor => vec![n("level_m", 2.0 + 0.5 * daily + noise(rng, 0.01))],
        DeviceClass::QualitySensor => vec![
            n("ph", 7.4 + noise(rng, 0.1)),
            n("chlorine_mgl", 0.5 + noise(rng, 0.05)),
            n("turbidity_ntu", 0.3 + noise(rng, 0.1)),
        ],
        DeviceClass::Pump => vec![
            n("pressure_bar", 4.0 + noise(rng, 0.05)),
            n("motor_temp_c", 60.0 + noise(rng, 0.5)),
            n("flow_lps", 60.0 + noise(rng, 1.0)),
            b("running", true),
        ],
        DeviceClass::FeederBreaker => vec![
            n("current_a", 300.0 + 100.0 * daily + noise(rng, 10.0)),
            b("closed", true),
        ],
        DeviceClass::Camera => vec![
            n("bitrate_kbps", 2048.0 + noise(rng, 300.0)),
            n("fps", 25.0),
        ],
        DeviceClass::Siren => vec![b("sounding", false), n("battery_v", 26.9 + noise(rng, 0.2))],
        DeviceClass::Weather => vec![
            n("temp_c", 11.0 + 5.0 * daily + noise(rng, 0.3)),
            n("humidity_pct", 70.0 + noise(rng, 2.0)),
        ],
        DeviceClass::AirQuality => vec![
            n("pm2_5", 12.0 + noise(rng, 1.5)),
            n("no2", 25.0 + noise(rng, 2.0)),
        ],
        DeviceClass::EvCharger => vec![
            n("power_kw", 7.0 + noise(rng, 0.3)),
            n("energy_kwh", 100.0 + t / 600.0),
        ],
        DeviceClass::StreetLight => vec![n("dim_pct", 100.0), b("on", true)],
        DeviceClass::Hvac => vec![n("temp_c", 21.0 + noise(rng, 0.6)), n("setpoint_c", 21.0)],
        DeviceClass::AccessControl => {
            vec![n("badge_events", rng.below(4) as f64), b("locked", true)]
        }
        DeviceClass::TrafficSignal => vec![n("phase", (rng.below(4) + 1) as f64)],
        DeviceClass::Valve => vec![n("position_pct", 100.0)],
    }
}

/// One event of the mix at time `ts` for device `i`.
fn event(
    devices: &[(DeviceId, DeviceMeta)],
    i: usize,
    ts: i64,
    rng: &mut Rng,
    hits: &[Ipv4Addr],
) -> Event {
    let (id, meta) = &devices[i];
    let t = (ts - START_MS) as f64 / 1000.0;
    let roll = rng.below(1000);
    let kind = if roll < 850 {
        EventKind::Telemetry {
            readings: readings(meta.class, rng, t),
        }
    } else if roll < 970 {
        let src = meta.addresses[0];
        let (dst, port) = match rng.below(100) {
            0 if !hits.is_empty() && rng.below(100) == 0 => {
                (IpAddr::V4(hits[rng.below(hits.len() as u64) as usize]), 443)
            }
            0..=9 => (
                IpAddr::V4(Ipv4Addr::new(52, 28, (rng.below(4)) as u8, 10)),
                443,
            ),
            _ => (IpAddr::V4(HEAD_END), 8883),
        };
        let packets = 4 + rng.below(40);
        EventKind::Flow(FlowRecord {
            src,
            dst,
            src_port: 40_000 + rng.below(20_000) as u16,
            dst_port: port,
            protocol: proto::TCP,
            bytes: packets * (60 + rng.below(600)),
            packets,
            tcp_flags: 0x1b,
            start: Timestamp::from_millis(ts - 5_000),
            end: Timestamp::from_millis(ts),
            exporter: None,
            peer_device: None,
        })
    } else if roll < 990 {
        EventKind::State {
            readings: readings(meta.class, rng, t),
        }
    } else {
        EventKind::Security(SecurityEvent {
            action: if rng.below(2) == 0 {
                SecurityEventKind::ConnectAccepted
            } else {
                SecurityEventKind::Disconnect
            },
            client_id: Some(id.to_string()),
            username: Some(id.to_string()),
            peer: Some(format!(
                "{}:{}",
                meta.addresses[0],
                40_000 + rng.below(20_000)
            )),
            topic: None,
            reason: None,
        })
    };
    Event {
        ts: Timestamp::from_millis(ts),
        device_id: Some(id.clone()),
        sector: Some(meta.class.sector()),
        kind,
    }
}

/// A synthetic city in motion: the engine, its devices, and where the stream is.
pub struct Workload {
    pub engine: Engine,
    devices: Vec<(DeviceId, DeviceMeta)>,
    hits: Vec<Ipv4Addr>,
    rng: Rng,
    next: usize,
    begin: i64,
    step: f64,
    stride: usize,
}

impl Workload {
    /// The engine with its devices registered, its indicators loaded and its baselines
    /// learned (every device has reported past its learning period).
    pub fn new(cfg: WorkloadConfig) -> Workload {
        let mut config = config();
        config.baseline.learning_s = 600;
        let mut engine = Engine::new(config);
        let devices = devices(cfg.devices);
        for (id, meta) in &devices {
            engine.register_device(id.clone(), meta.clone());
        }
        let indicators = indicators(cfg.indicators, cfg.seed);
        let hits: Vec<Ipv4Addr> = indicators
            .iter()
            .take(1000)
            .filter_map(|i| {
                i.pattern
                    .strip_prefix("[ipv4-addr:value = '")
                    .and_then(|p| p.strip_suffix("']"))
                    .and_then(|p| p.parse().ok())
            })
            .collect();
        let refused = engine.upsert_indicators(indicators);
        debug_assert!(refused.is_empty(), "{refused:?}");
        let mut rng = Rng::new(cfg.seed);
        let mut out = Vec::new();
        // Learning: 40 rounds of telemetry from every device, 20 s apart per device.
        let n = devices.len().max(1) as i64;
        let round_ms = 20_000;
        for round in 0..40i64 {
            for (i, (id, meta)) in devices.iter().enumerate() {
                let ts = START_MS + round * round_ms + (i as i64 * round_ms) / n;
                let event = Event {
                    ts: Timestamp::from_millis(ts),
                    device_id: Some(id.clone()),
                    sector: None,
                    kind: EventKind::Telemetry {
                        readings: readings(meta.class, &mut rng, (ts - START_MS) as f64 / 1000.0),
                    },
                };
                engine.process(&event, &mut out);
            }
        }
        engine.tick(Timestamp::from_millis(START_MS + 40 * round_ms));
        // The stream: every device once per 20 s round, in a scrambled order (a stride
        // coprime with the fleet size).
        let len = devices.len().max(1);
        let stride = (1..)
            .map(|k| len / 2 + k)
            .find(|s| gcd(*s, len) == 1)
            .unwrap_or(1);
        Workload {
            engine,
            devices,
            hits,
            rng,
            next: 0,
            begin: START_MS + 40 * round_ms,
            step: round_ms as f64 / n as f64,
            stride,
        }
    }

    /// An engine with the same config and devices that has learned nothing (what a new
    /// owner of the city's devices starts from before loading a [`crate::Learned`]).
    pub fn fresh_engine(&self) -> Engine {
        let mut engine = Engine::new(self.engine.config().clone());
        for (id, meta) in &self.devices {
            engine.register_device(id.clone(), meta.clone());
        }
        engine
    }

    /// The next `n` events of the stream.
    pub fn events(&mut self, n: usize) -> Vec<Event> {
        let len = self.devices.len().max(1);
        let out = (self.next..self.next + n)
            .map(|k| {
                let i = (k * self.stride) % len;
                let ts = self.begin + (k as f64 * self.step) as i64;
                event(&self.devices, i, ts, &mut self.rng, &self.hits)
            })
            .collect();
        self.next += n;
        out
    }
}

/// The engine after learning, and the next `events` events (see [`Workload`]).
pub fn build(cfg: WorkloadConfig) -> (Engine, Vec<Event>) {
    let mut workload = Workload::new(cfg);
    let events = workload.events(cfg.events);
    (workload.engine, events)
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

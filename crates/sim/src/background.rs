//! The benign background of a city, as pure functions of (population, seed, time): the
//! flows each device class sends (MQTT to the broker, its application traffic, SCADA poll
//! answers, DNS and NTP) with daily load curves, and the honest life of devices:
//! maintenance windows (a technician's laptop connects over SSH/HTTPS, then the device
//! restarts), devices going offline for a few minutes, and firmware updates from the
//! vendor's update server (a flow to the server, a restart, a new `firmware` reading).
//!
//! Flows are periodic per device with a per-device phase, so any time window can be
//! generated on its own (the live exporter asks for the last few seconds; the soak asks
//! for one minute after another) and the same seed always gives the same traffic.
//! Only device-side records are generated (the direction a device sends); servers are not
//! registered devices.

use std::net::IpAddr;

use model::proto::{TCP, UDP};
use model::{DeviceClass, FlowRecord, Timestamp};

use crate::population::{Population, SimDevice, profile};
use crate::telemetry::{cadence, hour_of_day, residential_load};
use crate::zones::{CityNetwork, hosts};

/// One flow record per long-lived connection per this period (a router's active timeout).
pub const FLOW_PERIOD_MS: i64 = 60_000;
const DAY_MS: i64 = 86_400_000;

/// A deterministic draw in `[0, 1)` from a seed and a few coordinates (SplitMix64).
pub fn draw(seed: u64, a: u64, b: u64, salt: u64) -> f64 {
    let mut z = seed
        ^ a.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ b.wrapping_mul(0xc2b2_ae3d_27d4_eb4f)
        ^ salt.wrapping_mul(0x1656_67b1_9e37_79f9);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

fn ephemeral(seed: u64, index: usize, k: u64, salt: u64) -> u16 {
    49_152 + (draw(seed, index as u64, k, salt) * 16_000.0) as u16
}

/// The device's first address (flows without one are not generated).
pub fn address(device: &SimDevice) -> Option<IpAddr> {
    device.addresses.first().copied()
}

/// The phase of device `index`'s flow period, in ms.
fn phase(seed: u64, index: usize) -> i64 {
    (draw(seed, index as u64, 0, 0xf10) * FLOW_PERIOD_MS as f64) as i64
}

/// Benign flow records of every device whose period ends in `[from_ms, to_ms)`, in time
/// order. Devices listed in `offline` (by index) send nothing.
pub fn flows(
    population: &Population,
    seed: u64,
    from_ms: i64,
    to_ms: i64,
    offline: &dyn Fn(usize, i64) -> bool,
) -> Vec<FlowRecord> {
    let mut out = Vec::new();
    for (index, device) in population.devices.iter().enumerate() {
        let p = phase(seed, index);
        // The first k with p + k * period >= from.
        let mut k = (from_ms - p).div_euclid(FLOW_PERIOD_MS);
        if p + k * FLOW_PERIOD_MS < from_ms {
            k += 1;
        }
        loop {
            let end = p + k * FLOW_PERIOD_MS;
            if end >= to_ms {
                break;
            }
            if !offline(index, end) {
                period_flows(device, index, seed, k, end, &mut out);
            }
            k += 1;
        }
    }
    out.sort_by_key(|r| (r.end, r.start));
    out
}

/// The records device `index` exports for its period `k`, which ends at `end_ms`.
pub fn period_flows(
    device: &SimDevice,
    index: usize,
    seed: u64,
    k: i64,
    end_ms: i64,
    out: &mut Vec<FlowRecord>,
) {
    let Some(src) = address(device) else { return };
    let ku = k as u64;
    let start_ms = end_ms - FLOW_PERIOD_MS;
    let hour = hour_of_day(end_ms);
    let jitter = |salt: u64| 0.85 + 0.3 * draw(seed, index as u64, ku, salt);
    let flow =
        |dst: IpAddr, sport: u16, dport: u16, proto: u8, packets: u64, bytes: u64| FlowRecord {
            src,
            dst,
            src_port: sport,
            dst_port: dport,
            protocol: proto,
            bytes,
            packets: packets.max(1),
            tcp_flags: if proto == TCP { 0x18 } else { 0 },
            start: Timestamp::from_millis(start_ms),
            end: Timestamp::from_millis(end_ms),
            exporter: None,
            peer_device: None,
        };
    // MQTT: the telemetry the device published this period, one long-lived connection.
    let per_period = FLOW_PERIOD_MS as f64 / cadence(device.class).as_millis() as f64;
    let mqtt_packets = (per_period * 1.5).ceil() as u64 + 1;
    out.push(flow(
        hosts::BROKER,
        ephemeral(seed, index, 0, 0x1883),
        1883,
        TCP,
        mqtt_packets,
        (per_period * 180.0 * jitter(1)) as u64 + 60,
    ));
    // The class's application traffic.
    if let Some((dst, port, proto)) = CityNetwork::application_peer(device.class) {
        let (packets, bytes) = match device.class {
            // ~2 Mbit/s of video, a little more at night (IR, noise).
            DeviceClass::Camera => {
                let night = if (7.0..19.0).contains(&hour) {
                    1.0
                } else {
                    1.15
                };
                let bytes = 2_048_000.0 / 8.0 * 60.0 * night * jitter(2);
                ((bytes / 1_300.0) as u64, bytes as u64)
            }
            // A load profile push every 15 minutes; keep-alives otherwise.
            DeviceClass::SmartMeter => {
                if k.rem_euclid(15) == 0 {
                    (12, (3_000.0 * jitter(3)) as u64)
                } else {
                    (2, 120)
                }
            }
            // OCPP / NTCIP status, busier with traffic.
            DeviceClass::EvCharger | DeviceClass::TrafficSignal => {
                let load = residential_load(hour);
                let packets = (6.0 + 20.0 * load * jitter(4)) as u64;
                (packets, packets * 160)
            }
            DeviceClass::StreetLight => (3, (400.0 * jitter(5)) as u64),
            // BACnet COV notifications.
            _ => {
                let occupied = if (7.0..19.0).contains(&hour) {
                    3.0
                } else {
                    1.0
                };
                let packets = (4.0 * occupied * jitter(6)) as u64;
                (packets, packets * 90)
            }
        };
        let sport = if proto == UDP {
            port
        } else {
            ephemeral(seed, index, 0, u64::from(port))
        };
        if device.class == DeviceClass::Camera {
            // Video is exported every 10 s (a busy flow's active timeout), so no 10 s
            // window ever holds more than about 2.5 MB of it.
            for part in 0..6 {
                let mut r = flow(dst, sport, port, proto, packets / 6, bytes / 6);
                r.start = Timestamp::from_millis(start_ms + part * 10_000);
                r.end = Timestamp::from_millis(start_ms + (part + 1) * 10_000);
                out.push(r);
            }
        } else {
            out.push(flow(dst, sport, port, proto, packets, bytes));
        }
    }
    // Answers to the SCADA poller (every 2 s), from the Modbus port.
    if CityNetwork::scada_polled(device.class) {
        out.push(flow(
            hosts::SCADA,
            502,
            ephemeral(seed, index, 0, 502),
            TCP,
            30,
            (30.0 * 72.0 * jitter(7)) as u64,
        ));
    }
    // DNS every 5 periods, NTP every 16.
    if (k + index as i64).rem_euclid(5) == 0 {
        out.push(flow(
            hosts::DNS,
            ephemeral(seed, index, ku, 53),
            53,
            UDP,
            1,
            70,
        ));
    }
    if (k + index as i64).rem_euclid(16) == 0 {
        out.push(flow(hosts::NTP, 123, 123, UDP, 1, 76));
    }
}

/// Something that happens to a device for an honest reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LifeKind {
    /// The device drops off the network and comes back after `duration_ms`.
    Offline { duration_ms: i64 },
    /// A technician's laptop works on the device for `duration_ms`, then the device
    /// restarts (offline for `restart_ms`).
    Maintenance { duration_ms: i64, restart_ms: i64 },
    /// The device fetches `firmware` from its vendor's update server, restarts (offline for
    /// `restart_ms`) and reports the new version.
    FirmwareUpdate { firmware: String, restart_ms: i64 },
}

/// One honest event in a device's life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifeEvent {
    pub at_ms: i64,
    /// Index into the population.
    pub device: usize,
    pub kind: LifeKind,
}

/// Daily chances per device.
const P_OFFLINE: f64 = 0.02;
const P_MAINTENANCE: f64 = 0.03;
const P_UPDATE: f64 = 0.01;

/// The firmware a device moves to in an update: the next version its class ships.
pub fn next_firmware(device: &SimDevice) -> String {
    let versions = profile(device.class).firmware;
    match versions.iter().position(|v| *v == device.firmware) {
        Some(i) if versions.len() > 1 => versions[(i + 1) % versions.len()].to_owned(),
        _ => format!("{}-p1", device.firmware),
    }
}

/// The honest events of every device in `[from_ms, to_ms)`, in time order: per device and
/// day, a chance of an outage (2-20 minutes), a maintenance window (between 09:00 and 15:00,
/// 10-30 minutes of laptop work) and a firmware update (at night).
pub fn life_events(population: &Population, seed: u64, from_ms: i64, to_ms: i64) -> Vec<LifeEvent> {
    let mut out = Vec::new();
    let first_day = from_ms.div_euclid(DAY_MS);
    let last_day = to_ms.div_euclid(DAY_MS);
    for day in first_day..=last_day {
        let day_start = day * DAY_MS - 3_600_000; // local midnight (CET)
        let d = day as u64;
        for (index, device) in population.devices.iter().enumerate() {
            let i = index as u64;
            let mut push = |at_ms: i64, kind: LifeKind| {
                if (from_ms..to_ms).contains(&at_ms) {
                    out.push(LifeEvent {
                        at_ms,
                        device: index,
                        kind,
                    });
                }
            };
            if draw(seed, i, d, 0x0ff) < P_OFFLINE {
                let at = day_start + (draw(seed, i, d, 0x0f1) * DAY_MS as f64) as i64;
                let duration_ms = 120_000 + (draw(seed, i, d, 0x0f2) * 1_080_000.0) as i64;
                push(at, LifeKind::Offline { duration_ms });
            }
            if draw(seed, i, d, 0xa11) < P_MAINTENANCE {
                let at = day_start
                    + 9 * 3_600_000
                    + (draw(seed, i, d, 0xa12) * 6.0 * 3_600_000.0) as i64;
                let duration_ms = 600_000 + (draw(seed, i, d, 0xa13) * 1_200_000.0) as i64;
                push(
                    at,
                    LifeKind::Maintenance {
                        duration_ms,
                        restart_ms: 60_000,
                    },
                );
            }
            if draw(seed, i, d, 0xf3) < P_UPDATE {
                let at = day_start + 2 * 3_600_000 + (draw(seed, i, d, 0xf4) * 3_600_000.0) as i64;
                push(
                    at,
                    LifeKind::FirmwareUpdate {
                        firmware: next_firmware(device),
                        restart_ms: 120_000,
                    },
                );
            }
        }
    }
    out.sort_by_key(|e| (e.at_ms, e.device));
    out
}

/// The flows a life event causes, with end times from `at_ms` on: the laptop session
/// (the device's answers from ports 22 and 443, one record a minute) or the firmware
/// download's request side to the update server.
pub fn life_flows(device: &SimDevice, event: &LifeEvent, seed: u64) -> Vec<FlowRecord> {
    let Some(src) = address(device) else {
        return Vec::new();
    };
    let record =
        |dst: IpAddr, sport: u16, dport: u16, start: i64, end: i64, packets, bytes| FlowRecord {
            src,
            dst,
            src_port: sport,
            dst_port: dport,
            protocol: TCP,
            bytes,
            packets,
            tcp_flags: 0x1b,
            start: Timestamp::from_millis(start),
            end: Timestamp::from_millis(end),
            exporter: None,
            peer_device: None,
        };
    let mut out = Vec::new();
    match &event.kind {
        LifeKind::Offline { .. } => {}
        LifeKind::Maintenance { duration_ms, .. } => {
            let laptop_port = ephemeral(seed, event.device, event.at_ms as u64, 22);
            let mut t = event.at_ms;
            let end = event.at_ms + duration_ms;
            while t < end {
                let e = (t + FLOW_PERIOD_MS).min(end);
                out.push(record(
                    hosts::MAINT_LAPTOP,
                    22,
                    laptop_port,
                    t,
                    e,
                    80,
                    24_000,
                ));
                t = e;
            }
            out.push(record(
                hosts::MAINT_LAPTOP,
                443,
                laptop_port.wrapping_add(1),
                event.at_ms,
                event.at_ms + 20_000,
                40,
                30_000,
            ));
        }
        LifeKind::FirmwareUpdate { .. } => {
            // Requests and acknowledgements of a ~8 MB download.
            out.push(record(
                hosts::UPDATE_SERVER,
                ephemeral(seed, event.device, event.at_ms as u64, 443),
                443,
                event.at_ms,
                event.at_ms + 15_000,
                3_000,
                160_000,
            ));
        }
    }
    out
}

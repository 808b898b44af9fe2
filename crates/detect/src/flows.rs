//! Rules over network flows: conduits between zones, addresses no device owns, scans,
//! floods, remote-login brute force, destinations a device never used (exfiltration),
//! the online anomaly score, and vendor update traffic (which makes a firmware change
//! benign).

use std::hash::Hasher;
use std::net::IpAddr;

use model::{Alert, DeviceClass, Event, FlowRecord, Severity, Timestamp, proto};

use crate::anomaly::{self, Model};
use crate::zones::{ZoneId, Zones};
use crate::{AlertDraft, DetectConfig, Engine, Fnv, FnvMap};

/// Most destinations learned per device; a device that talks to more is a server-like
/// device for which "a new destination" means nothing.
const MAX_KNOWN: usize = 48;
/// Most anomaly models (class x zone x service); beyond it new services are not scored.
const MAX_MODELS: usize = 16_384;

#[derive(Debug, Default)]
struct FlowState {
    last_flow: i64,
    known: Vec<u32>,
    known_full: bool,
    unknown_bytes: Vec<(u32, u64)>,
    scan_start: i64,
    hosts: Vec<u32>,
    port_host: u32,
    ports: Vec<u16>,
    flood: Vec<(u32, i64, u64, u64)>,
    login: Vec<(IpAddr, i64, u32)>,
}

#[derive(Debug, Default)]
pub(crate) struct FlowRules {
    per_device: FnvMap<u32, Box<FlowState>>,
    /// One model per (device class, destination zone, service port): what a camera sends
    /// to the VMS is judged against other camera-to-VMS flows, not against its firmware
    /// downloads. A model judges nothing until it has learned `anomaly_min_flows` flows,
    /// so a rare service is left to the rules.
    models: FnvMap<(u8, ZoneId, u16), Model>,
}

impl FlowRules {
    pub(crate) fn new(_config: &DetectConfig) -> FlowRules {
        FlowRules::default()
    }

    pub(crate) fn tracked(&self) -> usize {
        self.per_device.len()
    }

    pub(crate) fn evict(&mut self, now: Timestamp) {
        let now = now.as_millis();
        for state in self.per_device.values_mut() {
            if now - state.scan_start > 3_600_000 {
                state.hosts = Vec::new();
                state.ports = Vec::new();
            }
            state
                .flood
                .retain(|(_, start, _, _)| now.saturating_sub(*start) <= 3_600_000);
            state
                .login
                .retain(|(_, start, _)| now.saturating_sub(*start) <= 3_600_000);
        }
    }

    pub(crate) fn bytes(&self) -> usize {
        self.per_device
            .values()
            .map(|s| {
                std::mem::size_of::<FlowState>()
                    + s.known.capacity() * 4
                    + s.unknown_bytes.capacity() * 16
                    + s.hosts.capacity() * 4
                    + s.ports.capacity() * 2
                    + s.flood.capacity() * 32
                    + s.login.capacity() * 32
                    + 24
            })
            .sum()
    }
}

fn ip_hash(ip: &IpAddr) -> u32 {
    let mut h = Fnv::default();
    match ip {
        IpAddr::V4(v4) => h.write(&v4.octets()),
        IpAddr::V6(v6) => h.write(&v6.octets()),
    }
    let x = h.finish();
    (x ^ (x >> 32)) as u32
}

pub(crate) fn on_flow(engine: &mut Engine, event: &Event, flow: &FlowRecord, out: &mut Vec<Alert>) {
    let ts = event.ts.as_millis();
    let src_dev = engine.devices.by_address(&flow.src);
    let dst_dev = engine.devices.by_address(&flow.dst);
    let src_zone = zone_of(engine, flow.src, src_dev);
    let dst_zone = zone_of(engine, flow.dst, dst_dev);
    if !engine.indicators.is_empty() {
        crate::indicator::match_flow(engine, event, flow, src_dev.or(dst_dev), out);
    }

    let to_update_server = engine
        .update_servers
        .iter()
        .any(|(net, len)| in_cidr(flow.dst, *net, *len));
    if let Some(idx) = src_dev {
        let state = engine.devices.state_mut(idx);
        if state.first_seen == i64::MIN {
            state.first_seen = ts;
        }
        if to_update_server {
            state.last_update_flow = ts;
        }
    }

    // A quarantined device has no conduits at all.
    let quarantined = [src_dev, dst_dev]
        .into_iter()
        .flatten()
        .find(|d| engine.devices.state(*d).quarantined);
    if let Some(q) = quarantined {
        let device = engine.devices.state(q).id.clone();
        let summary = flow.summary();
        let draft = AlertDraft {
            rule: "policy.conduit",
            key: format!("quarantine {device}"),
            severity: Severity::High,
            zone: Some(engine.devices.zone_of_device(q).to_owned()),
            device_id: Some(device.clone()),
            source: Some(flow.src.to_string()),
            title: format!("traffic of quarantined device {device}"),
            explanation: format!(
                "{summary}: {device} is quarantined, so every flow to or from it is outside the \
                 conduit policy. Something still talks to it (or it to something): block the \
                 flow at the network and check whether the device is still under the attacker's \
                 control."
            ),
        };
        engine.raise(draft, event, summary, out);
    } else if engine.zones.is_configured()
        && !(src_zone == Zones::INTERNET && dst_zone == Zones::INTERNET)
        && !engine.zones.allowed(
            src_zone,
            dst_zone,
            flow.protocol,
            flow.src_port,
            flow.dst_port,
        )
    {
        let (from, to) = (
            engine.zones.name(src_zone).to_owned(),
            engine.zones.name(dst_zone).to_owned(),
        );
        let service = service(flow);
        let summary = flow.summary();
        let device = src_dev
            .or(dst_dev)
            .map(|d| engine.devices.state(d).id.clone());
        let draft = AlertDraft {
            rule: "policy.conduit",
            key: format!("{from}->{to} {service}"),
            severity: Severity::High,
            zone: Some(from.clone()),
            device_id: device.clone(),
            source: Some(flow.src.to_string()),
            title: format!("flow from {from} to {to} ({service}) outside every conduit"),
            explanation: format!(
                "{} is traffic from zone {from} to {to} on {service}, which no conduit allows. \
                 Zones only talk through the conduits the city defined; this is a device \
                 reaching where it should not (lateral movement, a pivot, a scan) or a conduit \
                 that is missing. If the flow is legitimate, mark the alert as learned.",
                summary
            ),
        };
        engine.raise(draft, event, summary.clone(), out);
    }

    // An address inside a city zone that no registered device owns.
    if src_zone != Zones::INTERNET
        && src_dev.is_none()
        && !engine.zones.allows_unregistered(src_zone)
    {
        let summary = flow.summary();
        let zone = engine.zones.name(src_zone).to_owned();
        let draft = AlertDraft {
            rule: "policy.new_device",
            key: flow.src.to_string(),
            severity: Severity::Medium,
            device_id: None,
            zone: Some(zone.clone()),
            source: Some(flow.src.to_string()),
            title: format!("unregistered device {} in zone {zone}", flow.src),
            explanation: format!(
                "{} sends traffic from zone {zone}, but no registered device has that address. \
                 Either the inventory is missing a device, or someone plugged something in. \
                 Register it or find it.",
                flow.src
            ),
        };
        engine.raise(draft, event, summary.clone(), out);
    }

    if let Some(idx) = src_dev {
        outbound(engine, event, flow, idx, dst_zone, to_update_server, out);
    }
    if let Some(idx) = dst_dev {
        inbound(engine, event, flow, idx, out);
    }
}

fn zone_of(engine: &Engine, ip: IpAddr, device: Option<u32>) -> ZoneId {
    let zone = engine.zones.zone_of(ip);
    if zone != Zones::INTERNET {
        return zone;
    }
    // A registered device outside every range still sits in its registered zone.
    device
        .and_then(|d| engine.zones.by_name(engine.devices.zone_of_device(d)))
        .unwrap_or(Zones::INTERNET)
}

fn service(flow: &FlowRecord) -> String {
    match flow.protocol {
        proto::TCP | proto::UDP => format!("{}/{}", flow.protocol_name(), flow.dst_port),
        _ => flow.protocol_name(),
    }
}

/// The scalar settings of [`crate::FlowConfig`], copied for the hot path.
#[derive(Debug, Clone, Copy)]
struct FlowLimits {
    scan_hosts: usize,
    scan_ports: usize,
    scan_window_s: u64,
    flood_packets: u64,
    flood_bytes: u64,
    flood_window_s: u64,
    new_destination_bytes: u64,
    anomaly_score: f64,
    anomaly_min_flows: u64,
}

impl FlowLimits {
    fn of(c: &crate::FlowConfig) -> FlowLimits {
        FlowLimits {
            scan_hosts: c.scan_hosts,
            scan_ports: c.scan_ports,
            scan_window_s: c.scan_window_s,
            flood_packets: c.flood_packets,
            flood_bytes: c.flood_bytes,
            flood_window_s: c.flood_window_s,
            new_destination_bytes: c.new_destination_bytes,
            anomaly_score: c.anomaly_score,
            anomaly_min_flows: c.anomaly_min_flows,
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn outbound(
    engine: &mut Engine,
    event: &Event,
    flow: &FlowRecord,
    idx: u32,
    dst_zone: ZoneId,
    to_update_server: bool,
    out: &mut Vec<Alert>,
) {
    let ts = event.ts.as_millis();
    let cfg = FlowLimits::of(&engine.config.flow);
    let learning_ms = engine.config.baseline.learning_ms();
    let (device, class, first_seen) = {
        let s = engine.devices.state(idx);
        (&s.id, s.class, s.first_seen)
    };
    let own_zone = engine.devices.zone_of_device(idx);
    let same_zone = engine.zones.name(dst_zone) == own_zone;
    let state = engine.flows.per_device.entry(idx).or_default();
    state.last_flow = ts;
    let dst = ip_hash(&flow.dst);
    let mut findings: Vec<(&'static str, Severity, String, String, String)> = Vec::new();

    // Scans: many hosts, or many ports on one host, within the window.
    let window = crate::config::secs_ms(cfg.scan_window_s);
    if ts.saturating_sub(state.scan_start) > window || ts < state.scan_start {
        state.scan_start = ts;
        state.hosts.clear();
        state.ports.clear();
        state.port_host = dst;
    }
    if !state.hosts.contains(&dst) && state.hosts.len() < cfg.scan_hosts {
        state.hosts.push(dst);
        if state.hosts.len() == cfg.scan_hosts {
            findings.push((
                "flow.scan",
                Severity::High,
                format!("{device}/hosts"),
                format!(
                    "{device} is scanning: {} hosts in {}s",
                    cfg.scan_hosts, cfg.scan_window_s
                ),
                format!(
                    "{device} contacted {} different hosts within {}s (the latest {}); a sensor \
                     or camera that sweeps addresses is looking for its next victim, as Mirai \
                     does. Quarantine it.",
                    cfg.scan_hosts, cfg.scan_window_s, flow.dst
                ),
            ));
        }
    }
    if state.port_host != dst {
        state.port_host = dst;
        state.ports.clear();
    }
    if !state.ports.contains(&flow.dst_port) && state.ports.len() < cfg.scan_ports {
        state.ports.push(flow.dst_port);
        if state.ports.len() == cfg.scan_ports {
            findings.push((
                "flow.scan",
                Severity::High,
                format!("{device}/ports/{}", flow.dst),
                format!("{device} is port-scanning {}", flow.dst),
                format!(
                    "{device} tried {} ports on {} within {}s: a port scan from inside the \
                     city's network.",
                    cfg.scan_ports, flow.dst, cfg.scan_window_s
                ),
            ));
        }
    }

    // Floods: packets or bytes to one destination within the window.
    let flood_ms = crate::config::secs_ms(cfg.flood_window_s);
    let slot = match state.flood.iter().position(|(d, _, _, _)| *d == dst) {
        Some(i) => i,
        None => {
            if state.flood.len() >= 4 {
                // replace the oldest window
                let oldest = (0..state.flood.len())
                    .min_by_key(|i| state.flood[*i].1)
                    .unwrap_or(0);
                state.flood.swap_remove(oldest);
            }
            state.flood.push((dst, ts, 0, 0));
            state.flood.len() - 1
        }
    };
    let entry = &mut state.flood[slot];
    if ts.saturating_sub(entry.1) > flood_ms || ts < entry.1 {
        *entry = (dst, ts, 0, 0);
    }
    let (was_packets, was_bytes) = (entry.2, entry.3);
    entry.2 = entry.2.saturating_add(flow.packets);
    entry.3 = entry.3.saturating_add(flow.bytes);
    let crossed = (was_packets < cfg.flood_packets && entry.2 >= cfg.flood_packets)
        || (was_bytes < cfg.flood_bytes && entry.3 >= cfg.flood_bytes);
    if crossed {
        let (packets, bytes) = (entry.2, entry.3);
        findings.push((
            "flow.flood",
            Severity::High,
            format!("{device}->{}", flow.dst),
            format!("{device} is flooding {}", flow.dst),
            format!(
                "{device} sent {packets} packets ({bytes} bytes) to {} within {}s: a \
                 denial-of-service flood from a city device, the last stage of a botnet \
                 takeover. Quarantine it; the city's address may already be on blocklists.",
                flow.dst, cfg.flood_window_s
            ),
        ));
    }

    // Destinations: learned while the device learns, then new ones are watched.
    let learning = first_seen == i64::MIN || ts.saturating_sub(first_seen) < learning_ms;
    if learning {
        if !state.known.contains(&dst) {
            if state.known.len() < MAX_KNOWN {
                state.known.push(dst);
            } else {
                state.known_full = true;
            }
        }
    } else if !state.known_full && !same_zone && !to_update_server && !state.known.contains(&dst) {
        let slot = match state.unknown_bytes.iter().position(|(d, _)| *d == dst) {
            Some(i) => i,
            None => {
                if state.unknown_bytes.len() >= 8 {
                    state.unknown_bytes.remove(0);
                }
                state.unknown_bytes.push((dst, 0));
                state.unknown_bytes.len() - 1
            }
        };
        let before = state.unknown_bytes[slot].1;
        let after = before.saturating_add(flow.bytes);
        state.unknown_bytes[slot].1 = after;
        if before < cfg.new_destination_bytes && after >= cfg.new_destination_bytes {
            findings.push((
                "baseline.flow",
                Severity::High,
                format!("{device}->{}", flow.dst),
                format!(
                    "{device} sends data to a destination it never used: {}",
                    flow.dst
                ),
                format!(
                    "{device} has sent {after} bytes to {}, an address it never contacted while \
                     its baseline was learned. Data leaving a camera or sensor for somewhere new \
                     is how recordings and readings are exfiltrated. Find out what {} is.",
                    flow.dst, flow.dst
                ),
            ));
        }
    }

    // The anomaly score, per class and service. Vendor update downloads are expected to
    // be unlike anything else and are not scored.
    let x = anomaly::features(flow);
    let service = match (flow.src_port, flow.dst_port) {
        (0, p) | (p, 0) => p,
        (a, b) => a.min(b),
    };
    let key = (class_index(class) as u8, dst_zone, service);
    let models = &mut engine.flows.models;
    let model = if to_update_server || (!models.contains_key(&key) && models.len() >= MAX_MODELS) {
        None
    } else {
        Some(models.entry(key).or_default())
    };
    let score = model.as_ref().map_or(0.0, |m| m.score(&x));
    if let Some(model) = model
        && model.samples() >= cfg.anomaly_min_flows
        && score > cfg.anomaly_score
    {
        findings.push((
            "flow.anomaly",
            Severity::Medium,
            device.to_string(),
            format!("unusual traffic from {device}"),
            format!(
                "{} scores {score:.1} against what {class}s normally send (a typical \
                 flow scores about 1; the threshold is {}). No rule names it, but nothing like \
                 it was seen from this class on this service before.",
                flow.summary(),
                cfg.anomaly_score
            ),
        ));
    } else if let Some(model) = engine.flows.models.get_mut(&key)
        && !to_update_server
    {
        model.learn(&x);
    }

    if findings.is_empty() {
        return;
    }
    let device = device.clone();
    let zone = Some(own_zone.to_owned());
    let summary = flow.summary();
    for (rule, severity, key, title, explanation) in findings {
        let draft = AlertDraft {
            rule,
            key,
            severity,
            device_id: Some(device.clone()),
            zone: zone.clone(),
            source: Some(flow.dst.to_string()),
            title,
            explanation,
        };
        engine.raise(draft, event, summary.clone(), out);
    }
}

fn inbound(engine: &mut Engine, event: &Event, flow: &FlowRecord, idx: u32, out: &mut Vec<Alert>) {
    let cfg = &engine.config.flow;
    if flow.protocol != proto::TCP || !cfg.login_ports.contains(&flow.dst_port) {
        return;
    }
    let (limit, window_ms, window_s) = (
        cfg.login_flows as u32,
        crate::config::secs_ms(cfg.login_window_s),
        cfg.login_window_s,
    );
    let ts = event.ts.as_millis();
    let state = engine.flows.per_device.entry(idx).or_default();
    let slot = match state.login.iter().position(|(src, _, _)| *src == flow.src) {
        Some(i) => i,
        None => {
            if state.login.len() >= 4 {
                state.login.remove(0);
            }
            state.login.push((flow.src, ts, 0));
            state.login.len() - 1
        }
    };
    let entry = &mut state.login[slot];
    if ts.saturating_sub(entry.1) > window_ms || ts < entry.1 {
        *entry = (flow.src, ts, 0);
    }
    entry.2 += 1;
    let n = entry.2;
    if n < limit || !(n - limit).is_multiple_of(limit) {
        return;
    }
    let device = engine.devices.state(idx).id.clone();
    let zone = engine.devices.zone_of_device(idx).to_owned();
    let port = flow.dst_port;
    let draft = AlertDraft {
        rule: "flow.brute_force",
        key: format!("{device}/{}", flow.src),
        severity: Severity::High,
        device_id: Some(device.clone()),
        zone: Some(zone),
        source: Some(flow.src.to_string()),
        title: format!(
            "remote-login brute force against {device} from {}",
            flow.src
        ),
        explanation: format!(
            "{n} connections from {} to {device}'s port {port} within {window_s}s: someone is \
             guessing its telnet or SSH password, the first step of a Mirai-style takeover. \
             Close the port and change the device's default credentials.",
            flow.src
        ),
    };
    engine.raise(draft, event, flow.summary(), out);
}

/// The class's position in `DeviceClass::ALL`, which lists the classes in declaration
/// order (a test holds it to that).
pub(crate) fn class_index(class: DeviceClass) -> usize {
    class as usize
}

pub(crate) fn in_cidr(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let len = u32::from(len.min(32));
            if len == 0 {
                return true;
            }
            let mask = u32::MAX << (32 - len);
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let len = u32::from(len.min(128));
            if len == 0 {
                return true;
            }
            let mask = u128::MAX << (128 - len);
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

impl FlowRules {
    /// Adds the learned destinations of the devices already in `learned` and the anomaly
    /// models to it.
    /// `position` is where [`crate::telemetry::Devices::export`] put each device (by index).
    pub(crate) fn export(
        &self,
        learned: &mut crate::learned::Learned,
        position: &[u32],
        zones: &Zones,
    ) {
        for (idx, state) in &self.per_device {
            let Some(&i) = position.get(*idx as usize).filter(|i| **i != u32::MAX) else {
                continue;
            };
            let device = &mut learned.devices[i as usize];
            device.known = state.known.clone();
            device.known_full = state.known_full;
            device.unknown_bytes = state.unknown_bytes.clone();
            device.last_flow = state.last_flow;
        }
        let mut models: Vec<_> = self
            .models
            .iter()
            .filter(|(_, m)| m.samples() > 0)
            .filter_map(|((class, zone, service), m)| {
                let (n, mean, m2) = m.parts();
                let m2 = m2.map(|v| v.max(0.0));
                Model::from_parts(n, mean, m2)?;
                Some(crate::learned::FlowModel {
                    class: *DeviceClass::ALL.get(usize::from(*class))?,
                    zone: zones.name(*zone).to_owned(),
                    service: *service,
                    n,
                    mean,
                    m2,
                })
            })
            .collect();
        models.sort_by(|a, b| (a.class, &a.zone, a.service).cmp(&(b.class, &b.zone, b.service)));
        learned.models = models;
    }

    /// Loads the flow part of a snapshot (see [`crate::Engine::restore_learned`]).
    pub(crate) fn import(
        &mut self,
        learned: &crate::learned::Learned,
        devices: &crate::telemetry::Devices,
        zones: &Zones,
        keep: &dyn Fn(&model::DeviceId) -> bool,
        restored: &mut crate::learned::Restored,
    ) {
        for device in &learned.devices {
            let Some(idx) = model::DeviceId::new(&device.id)
                .ok()
                .filter(|id| keep(id))
                .and_then(|id| devices.get(&id))
            else {
                continue;
            };
            if device.known.is_empty() && device.unknown_bytes.is_empty() && !device.known_full {
                continue;
            }
            let state = self.per_device.entry(idx).or_default();
            state.known = device.known.iter().copied().take(MAX_KNOWN).collect();
            state.known_full = device.known_full;
            state.unknown_bytes = device.unknown_bytes.iter().copied().take(8).collect();
            state.last_flow = state.last_flow.max(device.last_flow);
        }
        for m in &learned.models {
            let Some(zone) = zones.id_of(&m.zone) else {
                continue;
            };
            let key = (class_index(m.class) as u8, zone, m.service);
            if !self.models.contains_key(&key) && self.models.len() >= MAX_MODELS {
                continue;
            }
            let Some(model) = Model::from_parts(m.n, m.mean, m.m2) else {
                continue;
            };
            let current = self.models.entry(key).or_default();
            if model.samples() > current.samples() {
                *current = model;
            }
            restored.flow_models += 1;
        }
    }
}

//! Detection settings: the `[detect]` section of the config file. Thresholds of the
//! built-in rules, the zones and conduits of the city's network, and where rule files live.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Settings for the detection engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectConfig {
    /// Credential brute force and password spraying.
    pub brute_force: BruteForceConfig,
    /// Actuations nobody commanded.
    pub actuation: ActuationConfig,
    /// Citizen reports correlated with sirens.
    pub reports: crate::ReportsConfig,
    /// Repeats of an alert (same rule, same device or source) within this many seconds of
    /// its last occurrence are merged into it.
    pub merge_window_s: u64,
    /// At most this many evidence events are kept on one alert.
    pub max_evidence: usize,
    /// Rule ids that never fire (e.g. `flow.anomaly`).
    pub disabled_rules: Vec<String>,
    /// A directory of rule files (`*.toml`, see `detect::rules`), relative to the config
    /// file; the built-in default rules are always loaded first.
    pub rules_dir: Option<String>,
    /// The network zones (IEC 62443): devices' `zone` names with their address ranges.
    pub zones: Vec<ZoneConfig>,
    /// The flows allowed between zones; any other flow between two zones is an alert.
    pub conduits: Vec<ConduitConfig>,
    pub firmware: FirmwareConfig,
    pub rate: RateConfig,
    pub flow: FlowConfig,
    pub baseline: BaselineConfig,
    /// With the detection workers sharing partitions (a NATS bus), a worker that takes a
    /// partition over replays the stored events of its devices from this many seconds back
    /// to rebuild their state. Unset: the longest window of the rate and threshold rules
    /// (see [`DetectConfig::rebuild_window_ms`]).
    pub rebuild_window_s: Option<u64>,
    /// Every this many seconds each engine's learned state ([`crate::Learned`]: baselines,
    /// known destinations, flow models) is saved to the store, and an engine that starts
    /// (a restart, a partition taken over) loads the last save before replaying; 0 never
    /// saves. With a rebuild window at least this long, nothing learned is lost.
    pub learned_save_s: u64,
}

impl Default for DetectConfig {
    fn default() -> DetectConfig {
        DetectConfig {
            brute_force: BruteForceConfig::default(),
            actuation: ActuationConfig::default(),
            reports: crate::ReportsConfig::default(),
            merge_window_s: 600,
            max_evidence: 20,
            disabled_rules: Vec::new(),
            rules_dir: None,
            zones: Vec::new(),
            conduits: Vec::new(),
            firmware: FirmwareConfig::default(),
            rate: RateConfig::default(),
            flow: FlowConfig::default(),
            baseline: BaselineConfig::default(),
            rebuild_window_s: None,
            learned_save_s: 60,
        }
    }
}

impl DetectConfig {
    pub fn merge_window_ms(&self) -> i64 {
        secs_to_ms(self.merge_window_s)
    }

    /// How far back a rebuild replays: `rebuild_window_s`, else the longest window of the
    /// rate and threshold rules (brute force, reconnects, floods, actuation bursts and the
    /// authorisation of actuations, scans, floods and logins in flows, and the `extra`
    /// windows of `[[threshold]]` rules, in seconds). Learned state (baselines, destinations,
    /// the anomaly model, sensor offsets) is not rebuilt this way.
    pub fn rebuild_window_ms(&self, extra: impl IntoIterator<Item = u64>) -> i64 {
        if let Some(s) = self.rebuild_window_s {
            return secs_to_ms(s);
        }
        let windows = [
            self.brute_force.window_s,
            self.actuation.authorisation_window_s,
            self.rate.connect_window_s,
            self.rate.message_window_s,
            self.rate.actuation_window_s,
            self.flow.scan_window_s,
            self.flow.flood_window_s,
            self.flow.login_window_s,
        ];
        secs_to_ms(windows.into_iter().chain(extra).max().unwrap_or(60))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BruteForceConfig {
    /// Failed authentications as one device id within the window that raise an alert.
    pub per_device_threshold: usize,
    /// Failed authentications from one source address within the window that raise an alert.
    pub per_source_threshold: usize,
    /// When a source's failures name at least this many different device ids, the alert
    /// calls it password spraying.
    pub spray_distinct_devices: usize,
    /// The sliding window, in seconds.
    pub window_s: u64,
}

impl Default for BruteForceConfig {
    fn default() -> BruteForceConfig {
        BruteForceConfig {
            per_device_threshold: 10,
            per_source_threshold: 10,
            spray_distinct_devices: 5,
            window_s: 60,
        }
    }
}

impl BruteForceConfig {
    pub fn window_ms(&self) -> i64 {
        secs_to_ms(self.window_s)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ActuationConfig {
    /// An actuation is explained by an authorised command sent at most this many seconds
    /// before it.
    pub authorisation_window_s: u64,
}

impl Default for ActuationConfig {
    fn default() -> ActuationConfig {
        ActuationConfig {
            authorisation_window_s: 120,
        }
    }
}

impl ActuationConfig {
    pub fn authorisation_window_ms(&self) -> i64 {
        secs_to_ms(self.authorisation_window_s)
    }
}

fn secs_to_ms(s: u64) -> i64 {
    i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX)
}

/// `[[detect.zones]]`: a zone and the address ranges in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneConfig {
    /// The zone name devices carry in their `zone` field. `internet` is reserved for every
    /// address in no zone.
    pub name: String,
    /// CIDR ranges, e.g. `10.1.0.0/16` or `2001:db8::/48`.
    #[serde(default)]
    pub cidrs: Vec<String>,
    /// Addresses in this zone that belong to no registered device are expected (a
    /// maintenance laptop VLAN, DHCP guests): no `policy.new_device` alert for them.
    #[serde(default)]
    pub allow_unregistered: bool,
}

/// `[[detect.conduits]]`: flows allowed from one zone to another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConduitConfig {
    #[serde(default)]
    pub name: String,
    /// A zone name, `internet`, or `*` for any zone.
    pub from: String,
    /// A zone name, `internet`, or `*` for any zone.
    pub to: String,
    /// `tcp`, `udp`, `icmp` or `any`.
    #[serde(default = "any")]
    pub protocol: String,
    /// Destination ports; empty means any. Replies (the reverse direction, from one of
    /// these ports) are allowed too.
    #[serde(default)]
    pub ports: Vec<u16>,
}

fn any() -> String {
    "any".to_owned()
}

/// `[detect.firmware]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FirmwareConfig {
    /// The vendors' update servers (CIDRs). A firmware change shortly after a device
    /// talked to one of these is a vendor update, not tampering.
    pub update_servers: Vec<String>,
    /// How long after such a flow a firmware change counts as an update, in seconds.
    pub update_window_s: u64,
}

impl Default for FirmwareConfig {
    fn default() -> FirmwareConfig {
        FirmwareConfig {
            update_servers: Vec::new(),
            update_window_s: 3600,
        }
    }
}

impl FirmwareConfig {
    pub fn update_window_ms(&self) -> i64 {
        secs_to_ms(self.update_window_s)
    }
}

/// `[detect.rate]`: rate and threshold rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateConfig {
    /// Accepted connects by one device id within `connect_window_s` (a reconnect storm:
    /// a crashing device, or two clients fighting over one identity).
    pub connects_per_device: usize,
    pub connect_window_s: u64,
    /// Messages from one device within `message_window_s` (a message flood).
    pub messages_per_device: u32,
    pub message_window_s: u64,
    /// Distinct actuators of one class switched within `actuation_window_s`.
    pub actuation_burst_devices: usize,
    pub actuation_window_s: u64,
    /// Malformed or oversized packets from one client within a minute.
    pub protocol_violations: usize,
}

impl Default for RateConfig {
    fn default() -> RateConfig {
        RateConfig {
            connects_per_device: 20,
            connect_window_s: 60,
            messages_per_device: 100,
            message_window_s: 10,
            actuation_burst_devices: 5,
            actuation_window_s: 60,
            protocol_violations: 5,
        }
    }
}

/// `[detect.flow]`: rules over network flows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FlowConfig {
    /// Distinct destination hosts from one device within `scan_window_s`.
    pub scan_hosts: usize,
    /// Distinct destination ports on one host from one device within the window.
    pub scan_ports: usize,
    pub scan_window_s: u64,
    /// Packets or bytes from one device to one destination within `flood_window_s`.
    pub flood_packets: u64,
    pub flood_bytes: u64,
    pub flood_window_s: u64,
    /// TCP flows from one source to a remote-login port of one device within the window.
    pub login_flows: usize,
    pub login_window_s: u64,
    pub login_ports: Vec<u16>,
    /// Bytes a device may send to a destination it never contacted before the alert.
    pub new_destination_bytes: u64,
    /// The anomaly score above which a flow is reported (see `detect::anomaly`).
    pub anomaly_score: f64,
    /// Flows of a device class seen before its anomaly model scores anything.
    pub anomaly_min_flows: u64,
}

impl Default for FlowConfig {
    fn default() -> FlowConfig {
        FlowConfig {
            scan_hosts: 50,
            scan_ports: 100,
            scan_window_s: 60,
            flood_packets: 10_000,
            flood_bytes: 10_000_000,
            flood_window_s: 10,
            login_flows: 20,
            login_window_s: 60,
            login_ports: vec![22, 23, 2323],
            new_destination_bytes: 1_000_000,
            anomaly_score: 12.0,
            anomaly_min_flows: 500,
        }
    }
}

/// `[detect.baseline]`: learned behaviour per device and per class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BaselineConfig {
    /// How long a new device learns before its own baseline alerts, in seconds. Until
    /// then its class baseline judges it.
    pub learning_s: u64,
    /// A reading this many standard deviations from the learned mean, and outside the
    /// learned range, is an anomaly.
    pub sigma: f64,
    /// Samples a baseline needs before it judges anything.
    pub min_samples: u32,
}

impl Default for BaselineConfig {
    fn default() -> BaselineConfig {
        BaselineConfig {
            learning_s: 3600,
            sigma: 6.0,
            min_samples: 30,
        }
    }
}

impl BaselineConfig {
    pub fn learning_ms(&self) -> i64 {
        secs_to_ms(self.learning_s)
    }
}

/// Parses `10.0.0.0/8`, `2001:db8::/32` or a bare address (a /32 or /128).
pub fn parse_cidr(s: &str) -> Result<(IpAddr, u8), String> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let ip: IpAddr = addr
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not an address or CIDR range"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        Some(l) => l
            .trim()
            .parse::<u8>()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| format!("{s:?}: prefix length must be 0..={max}"))?,
        None => max,
    };
    Ok((ip, len))
}

pub(crate) fn secs_ms(s: u64) -> i64 {
    secs_to_ms(s)
}

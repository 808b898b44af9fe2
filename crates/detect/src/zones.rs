//! Zones and conduits (IEC 62443): which zone an address is in, and whether a flow between
//! two zones is one a conduit allows.

use std::collections::HashMap;
use std::net::IpAddr;

use model::proto;

use crate::config::{ConduitConfig, ZoneConfig, parse_cidr};
use crate::rules::Diagnostic;

/// A zone index; [`Zones::INTERNET`] is every address in no configured zone.
pub(crate) type ZoneId = u16;

#[derive(Debug, Clone)]
struct Range {
    net: u128,
    mask: u128,
    v4: bool,
    len: u8,
    zone: ZoneId,
}

#[derive(Debug, Clone)]
struct Conduit {
    protocol: Option<u8>,
    ports: Vec<u16>,
}

/// The compiled zone plan.
#[derive(Debug, Clone, Default)]
pub(crate) struct Zones {
    names: Vec<String>,
    allow_unregistered: Vec<bool>,
    by_name: HashMap<String, ZoneId>,
    /// Longest prefix first.
    ranges: Vec<Range>,
    /// (from, to) -> conduits; `ANY` stands for `*`.
    conduits: HashMap<(ZoneId, ZoneId), Vec<Conduit>>,
}

const ANY: ZoneId = ZoneId::MAX - 1;

impl Zones {
    pub(crate) const INTERNET: ZoneId = ZoneId::MAX;

    pub(crate) fn new(
        zones: &[ZoneConfig],
        conduits: &[ConduitConfig],
    ) -> (Zones, Vec<Diagnostic>) {
        let mut out = Zones::default();
        let mut diagnostics = Vec::new();
        let diag = |entry: String, message: String| Diagnostic {
            file: "config".into(),
            entry,
            message,
        };
        for (i, zone) in zones.iter().enumerate() {
            if zone.name.is_empty() || zone.name == "internet" || zone.name == "*" {
                diagnostics.push(diag(
                    format!("detect.zones[{i}]"),
                    format!("zone name {:?} is reserved or empty", zone.name),
                ));
                continue;
            }
            if out.by_name.contains_key(&zone.name) || out.names.len() >= usize::from(ANY) {
                diagnostics.push(diag(
                    format!("detect.zones[{i}]"),
                    format!("zone {:?} is defined twice", zone.name),
                ));
                continue;
            }
            let id = out.names.len() as ZoneId;
            out.names.push(zone.name.clone());
            out.allow_unregistered.push(zone.allow_unregistered);
            out.by_name.insert(zone.name.clone(), id);
            for cidr in &zone.cidrs {
                match parse_cidr(cidr) {
                    Ok((ip, len)) => {
                        let (net, v4) = to_bits(ip);
                        let width = if v4 { 32 } else { 128 };
                        let mask = prefix_mask(len, width);
                        out.ranges.push(Range {
                            net: net & mask,
                            mask,
                            v4,
                            len,
                            zone: id,
                        });
                    }
                    Err(message) => diagnostics.push(diag(format!("detect.zones[{i}]"), message)),
                }
            }
        }
        out.ranges.sort_by_key(|r| std::cmp::Reverse(r.len));
        for (i, conduit) in conduits.iter().enumerate() {
            let entry = format!("detect.conduits[{i}]");
            let from = out.zone_ref(&conduit.from);
            let to = out.zone_ref(&conduit.to);
            let protocol = match conduit.protocol.as_str() {
                "any" | "" => None,
                "tcp" => Some(proto::TCP),
                "udp" => Some(proto::UDP),
                "icmp" => Some(proto::ICMP),
                other => {
                    diagnostics.push(diag(
                        entry,
                        format!("unknown protocol {other:?} (expected tcp, udp, icmp or any)"),
                    ));
                    continue;
                }
            };
            match (from, to) {
                (Some(from), Some(to)) => {
                    out.conduits.entry((from, to)).or_default().push(Conduit {
                        protocol,
                        ports: conduit.ports.clone(),
                    })
                }
                (from, _) => {
                    let name = if from.is_none() {
                        &conduit.from
                    } else {
                        &conduit.to
                    };
                    diagnostics.push(diag(
                        entry,
                        format!("unknown zone {name:?} (define it under [[detect.zones]])"),
                    ));
                }
            }
        }
        (out, diagnostics)
    }

    fn zone_ref(&self, name: &str) -> Option<ZoneId> {
        match name {
            "*" => Some(ANY),
            "internet" => Some(Zones::INTERNET),
            name => self.by_name.get(name).copied(),
        }
    }

    pub(crate) fn is_configured(&self) -> bool {
        !self.ranges.is_empty()
    }

    pub(crate) fn by_name(&self, name: &str) -> Option<ZoneId> {
        self.by_name.get(name).copied()
    }

    pub(crate) fn name(&self, zone: ZoneId) -> &str {
        self.names
            .get(usize::from(zone))
            .map_or("internet", String::as_str)
    }

    /// The zone of a name (`internet` for [`Zones::INTERNET`]).
    pub(crate) fn id_of(&self, name: &str) -> Option<ZoneId> {
        if name == "internet" {
            return Some(Zones::INTERNET);
        }
        self.by_name.get(name).copied()
    }

    /// Whether the address falls in a configured range.
    pub(crate) fn zone_of(&self, ip: IpAddr) -> ZoneId {
        let (bits, v4) = to_bits(ip);
        self.ranges
            .iter()
            .find(|r| r.v4 == v4 && bits & r.mask == r.net)
            .map_or(Zones::INTERNET, |r| r.zone)
    }

    pub(crate) fn allows_unregistered(&self, zone: ZoneId) -> bool {
        self.allow_unregistered
            .get(usize::from(zone))
            .copied()
            .unwrap_or(true)
    }

    /// Whether a flow from `src` to `dst` (zones), or its reply, is allowed.
    pub(crate) fn allowed(
        &self,
        src: ZoneId,
        dst: ZoneId,
        protocol: u8,
        src_port: u16,
        dst_port: u16,
    ) -> bool {
        if src == dst {
            return true;
        }
        self.conduit_allows(src, dst, protocol, dst_port)
            || self.conduit_allows(dst, src, protocol, src_port)
    }

    fn conduit_allows(&self, from: ZoneId, to: ZoneId, protocol: u8, port: u16) -> bool {
        [(from, to), (ANY, to), (from, ANY), (ANY, ANY)]
            .iter()
            .filter_map(|key| self.conduits.get(key))
            .flatten()
            .any(|c| {
                c.protocol.is_none_or(|p| p == protocol)
                    && (c.ports.is_empty() || c.ports.contains(&port))
            })
    }
}

fn to_bits(ip: IpAddr) -> (u128, bool) {
    match ip {
        IpAddr::V4(v4) => (u128::from(u32::from(v4)), true),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => (u128::from(u32::from(v4)), true),
            None => (u128::from(v6), false),
        },
    }
}

fn prefix_mask(len: u8, width: u32) -> u128 {
    let len = u32::from(len).min(width);
    if len == 0 {
        return 0;
    }
    let ones = if width == 32 {
        u128::from(u32::MAX)
    } else {
        u128::MAX
    };
    (ones >> (width - len)) << (width - len) & ones
}

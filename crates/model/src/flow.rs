//! Network flow records: what routers and switches export (NetFlow v5, NetFlow v9, IPFIX)
//! or what a collector forwards as JSON lines, normalised into one shape.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::{DeviceId, Timestamp};

/// IANA protocol numbers that rules name.
pub mod proto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ICMPV6: u8 = 58;
}

/// One unidirectional flow: packets from `src:src_port` to `dst:dst_port` over
/// `protocol` between `start` and `end`.
///
/// The event carrying a flow names, as its `device_id`, the registered device that owns
/// `src` (or, when `src` is no device, the one that owns `dst`); `peer_device` is the
/// device at the other end when there is one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowRecord {
    pub src: IpAddr,
    pub dst: IpAddr,
    #[serde(default)]
    pub src_port: u16,
    #[serde(default)]
    pub dst_port: u16,
    /// IANA protocol number (6 TCP, 17 UDP, 1 ICMP).
    pub protocol: u8,
    #[serde(default)]
    pub bytes: u64,
    #[serde(default)]
    pub packets: u64,
    /// The OR of the TCP flags seen (0 when unknown or not TCP).
    #[serde(default)]
    pub tcp_flags: u8,
    pub start: Timestamp,
    pub end: Timestamp,
    /// The router or probe that exported the record, `ip` or `ip:port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exporter: Option<String>,
    /// The registered device at the far end of the flow from the event's `device_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_device: Option<DeviceId>,
}

impl FlowRecord {
    /// `tcp`, `udp`, `icmp` or the protocol number.
    pub fn protocol_name(&self) -> String {
        match self.protocol {
            proto::TCP => "tcp".to_owned(),
            proto::UDP => "udp".to_owned(),
            proto::ICMP => "icmp".to_owned(),
            proto::ICMPV6 => "ipv6-icmp".to_owned(),
            n => n.to_string(),
        }
    }

    /// `tcp 10.0.0.7:51234 -> 203.0.113.5:23 (3 packets, 180 bytes)`.
    pub fn summary(&self) -> String {
        format!(
            "{} {} -> {} ({} packets, {} bytes)",
            self.protocol_name(),
            endpoint(self.src, self.src_port),
            endpoint(self.dst, self.dst_port),
            self.packets,
            self.bytes
        )
    }
}

fn endpoint(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    }
}

//! The flow exporter: what a city's routers would send a collector. Encodes
//! [`FlowRecord`]s as IPFIX (RFC 7011, with template sets) or NetFlow v5 and sends them in
//! batches over UDP. The encoders are pure functions of the records and the exporter's
//! state (sequence numbers, uptime), so they are tested byte for byte and against
//! `nfcapd`/`nfdump` as a real collector.
//!
//! IPFIX carries IPv4 and IPv6 records (templates 256 and 257, re-sent every
//! [`TEMPLATE_EVERY`] messages so a collector that starts late learns them); NetFlow v5 is
//! IPv4 only, so IPv6 records are skipped (and counted) in that format.

use std::net::{IpAddr, SocketAddr};

use anyhow::{Context, Result, bail};
use model::FlowRecord;
use tokio::net::UdpSocket;

/// The wire format of an exporter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowFormat {
    Ipfix,
    NetflowV5,
}

impl std::str::FromStr for FlowFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<FlowFormat, String> {
        match s {
            "ipfix" => Ok(FlowFormat::Ipfix),
            "netflow5" | "v5" | "netflow-v5" => Ok(FlowFormat::NetflowV5),
            other => Err(format!("unknown flow format {other:?} (ipfix or netflow5)")),
        }
    }
}

/// IPFIX template ids of the two record layouts.
pub const TEMPLATE_V4: u16 = 256;
pub const TEMPLATE_V6: u16 = 257;
/// Templates go out with the first message and then every this many messages.
pub const TEMPLATE_EVERY: u32 = 20;
/// The largest datagram the exporter writes (fits an Ethernet MTU).
pub const MAX_DATAGRAM: usize = 1400;
/// NetFlow v5 carries at most this many records per datagram.
pub const V5_MAX_RECORDS: usize = 30;

/// IPFIX information elements of the IPv4 template: (id, length).
const FIELDS_V4: &[(u16, u16)] = &[
    (8, 4),   // sourceIPv4Address
    (12, 4),  // destinationIPv4Address
    (7, 2),   // sourceTransportPort
    (11, 2),  // destinationTransportPort
    (4, 1),   // protocolIdentifier
    (6, 2),   // tcpControlBits
    (1, 8),   // octetDeltaCount
    (2, 8),   // packetDeltaCount
    (152, 8), // flowStartMilliseconds
    (153, 8), // flowEndMilliseconds
];
/// The IPv6 template: the same with sourceIPv6Address (27) and destinationIPv6Address (28).
const FIELDS_V6: &[(u16, u16)] = &[
    (27, 16),
    (28, 16),
    (7, 2),
    (11, 2),
    (4, 1),
    (6, 2),
    (1, 8),
    (2, 8),
    (152, 8),
    (153, 8),
];

fn record_len(fields: &[(u16, u16)]) -> usize {
    fields.iter().map(|&(_, len)| usize::from(len)).sum()
}

/// What an exporter remembers between messages.
#[derive(Debug, Clone)]
pub struct ExporterState {
    pub format: FlowFormat,
    /// IPFIX observation domain / NetFlow v5 engine id.
    pub domain: u32,
    /// Records sent so far (the sequence number of the next message).
    pub sequence: u32,
    /// Messages sent so far.
    pub messages: u32,
    /// The exporter's boot time in Unix milliseconds (NetFlow v5 times are uptime-relative).
    pub boot_ms: i64,
    /// Records the format could not carry (IPv6 in NetFlow v5).
    pub skipped: u64,
}

impl ExporterState {
    pub fn new(format: FlowFormat, domain: u32, boot_ms: i64) -> ExporterState {
        ExporterState {
            format,
            domain,
            sequence: 0,
            messages: 0,
            boot_ms,
            skipped: 0,
        }
    }

    /// Encodes `records` into as many datagrams as they need, at export time `now_ms`.
    pub fn encode(&mut self, records: &[FlowRecord], now_ms: i64) -> Vec<Vec<u8>> {
        match self.format {
            FlowFormat::Ipfix => self.encode_ipfix(records, now_ms),
            FlowFormat::NetflowV5 => self.encode_v5(records, now_ms),
        }
    }

    fn encode_ipfix(&mut self, records: &[FlowRecord], now_ms: i64) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut rest = records;
        loop {
            let with_templates = self.messages.is_multiple_of(TEMPLATE_EVERY);
            let mut msg = Vec::with_capacity(MAX_DATAGRAM);
            msg.extend_from_slice(&[0, 10, 0, 0]); // version 10, length patched below
            msg.extend_from_slice(&((now_ms.div_euclid(1000)) as u32).to_be_bytes());
            msg.extend_from_slice(&self.sequence.to_be_bytes());
            msg.extend_from_slice(&self.domain.to_be_bytes());
            if with_templates {
                // One template set holding both templates.
                let start = msg.len();
                msg.extend_from_slice(&[0, 2, 0, 0]);
                for (id, fields) in [(TEMPLATE_V4, FIELDS_V4), (TEMPLATE_V6, FIELDS_V6)] {
                    msg.extend_from_slice(&id.to_be_bytes());
                    msg.extend_from_slice(&(fields.len() as u16).to_be_bytes());
                    for &(ie, len) in fields {
                        msg.extend_from_slice(&ie.to_be_bytes());
                        msg.extend_from_slice(&len.to_be_bytes());
                    }
                }
                let set_len = (msg.len() - start) as u16;
                msg[start + 2..start + 4].copy_from_slice(&set_len.to_be_bytes());
            }
            // Data sets: consecutive records of one address family share a set.
            let mut sent = 0usize;
            let mut set: Option<(usize, bool)> = None; // (start, v6)
            for record in rest {
                let v6 = record.src.is_ipv6() || record.dst.is_ipv6();
                let len = record_len(if v6 { FIELDS_V6 } else { FIELDS_V4 });
                let need = len
                    + if set.is_some_and(|(_, s)| s == v6) {
                        0
                    } else {
                        4
                    };
                if msg.len() + need > MAX_DATAGRAM && sent > 0 {
                    break;
                }
                if set.is_none_or(|(_, s)| s != v6) {
                    close_set(&mut msg, set);
                    set = Some((msg.len(), v6));
                    let id = if v6 { TEMPLATE_V6 } else { TEMPLATE_V4 };
                    msg.extend_from_slice(&id.to_be_bytes());
                    msg.extend_from_slice(&[0, 0]);
                }
                put_ipfix_record(&mut msg, record, v6);
                sent += 1;
            }
            close_set(&mut msg, set);
            let total = msg.len() as u16;
            msg[2..4].copy_from_slice(&total.to_be_bytes());
            self.messages = self.messages.wrapping_add(1);
            self.sequence = self.sequence.wrapping_add(sent as u32);
            out.push(msg);
            rest = &rest[sent..];
            if rest.is_empty() {
                return out;
            }
        }
    }

    fn encode_v5(&mut self, records: &[FlowRecord], now_ms: i64) -> Vec<Vec<u8>> {
        let v4: Vec<&FlowRecord> = records
            .iter()
            .filter(|r| r.src.is_ipv4() && r.dst.is_ipv4())
            .collect();
        self.skipped += (records.len() - v4.len()) as u64;
        let uptime = |ms: i64| (ms - self.boot_ms).clamp(0, i64::from(u32::MAX)) as u32;
        let mut out = Vec::new();
        for chunk in v4.chunks(V5_MAX_RECORDS) {
            let mut msg = Vec::with_capacity(24 + 48 * chunk.len());
            msg.extend_from_slice(&5u16.to_be_bytes());
            msg.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
            msg.extend_from_slice(&uptime(now_ms).to_be_bytes());
            msg.extend_from_slice(&(now_ms.div_euclid(1000) as u32).to_be_bytes());
            msg.extend_from_slice(&((now_ms.rem_euclid(1000) * 1_000_000) as u32).to_be_bytes());
            msg.extend_from_slice(&self.sequence.to_be_bytes());
            msg.push(0); // engine type
            msg.push((self.domain & 0xff) as u8); // engine id
            msg.extend_from_slice(&0u16.to_be_bytes()); // sampling: none
            for r in chunk {
                let (IpAddr::V4(src), IpAddr::V4(dst)) = (r.src, r.dst) else {
                    continue;
                };
                msg.extend_from_slice(&src.octets());
                msg.extend_from_slice(&dst.octets());
                msg.extend_from_slice(&[0; 4]); // next hop
                msg.extend_from_slice(&[0; 4]); // input, output interface
                msg.extend_from_slice(&(r.packets.min(u64::from(u32::MAX)) as u32).to_be_bytes());
                msg.extend_from_slice(&(r.bytes.min(u64::from(u32::MAX)) as u32).to_be_bytes());
                msg.extend_from_slice(&uptime(r.start.as_millis()).to_be_bytes());
                msg.extend_from_slice(&uptime(r.end.as_millis()).to_be_bytes());
                msg.extend_from_slice(&r.src_port.to_be_bytes());
                msg.extend_from_slice(&r.dst_port.to_be_bytes());
                msg.push(0);
                msg.push(r.tcp_flags);
                msg.push(r.protocol);
                msg.push(0); // tos
                msg.extend_from_slice(&[0; 4]); // src_as, dst_as
                msg.extend_from_slice(&[0; 4]); // masks, pad
            }
            self.sequence = self.sequence.wrapping_add(chunk.len() as u32);
            self.messages = self.messages.wrapping_add(1);
            out.push(msg);
        }
        out
    }
}

fn close_set(msg: &mut [u8], set: Option<(usize, bool)>) {
    if let Some((start, _)) = set {
        let len = (msg.len() - start) as u16;
        msg[start + 2..start + 4].copy_from_slice(&len.to_be_bytes());
    }
}

fn put_ipfix_record(msg: &mut Vec<u8>, r: &FlowRecord, v6: bool) {
    if v6 {
        msg.extend_from_slice(&v6_octets(r.src));
        msg.extend_from_slice(&v6_octets(r.dst));
    } else if let (IpAddr::V4(src), IpAddr::V4(dst)) = (r.src, r.dst) {
        msg.extend_from_slice(&src.octets());
        msg.extend_from_slice(&dst.octets());
    }
    msg.extend_from_slice(&r.src_port.to_be_bytes());
    msg.extend_from_slice(&r.dst_port.to_be_bytes());
    msg.push(r.protocol);
    msg.extend_from_slice(&u16::from(r.tcp_flags).to_be_bytes());
    msg.extend_from_slice(&r.bytes.to_be_bytes());
    msg.extend_from_slice(&r.packets.to_be_bytes());
    msg.extend_from_slice(&(r.start.as_millis().max(0) as u64).to_be_bytes());
    msg.extend_from_slice(&(r.end.as_millis().max(0) as u64).to_be_bytes());
}

fn v6_octets(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// Sends flow records to a collector over UDP.
pub struct FlowExporter {
    socket: UdpSocket,
    collector: SocketAddr,
    state: ExporterState,
    /// Datagrams and records sent.
    pub datagrams: u64,
    pub records: u64,
}

impl FlowExporter {
    /// Binds an ephemeral local port (on loopback when the collector is on loopback).
    pub async fn connect(
        collector: SocketAddr,
        format: FlowFormat,
        domain: u32,
    ) -> Result<FlowExporter> {
        let local: SocketAddr = match collector {
            SocketAddr::V4(v4) if v4.ip().is_loopback() => "127.0.0.1:0".parse()?,
            SocketAddr::V4(_) => "0.0.0.0:0".parse()?,
            SocketAddr::V6(_) => "[::]:0".parse()?,
        };
        let socket = UdpSocket::bind(local)
            .await
            .with_context(|| format!("bind a udp socket for flow export to {collector}"))?;
        Ok(FlowExporter {
            socket,
            collector,
            state: ExporterState::new(format, domain, model::Timestamp::now().as_millis()),
            datagrams: 0,
            records: 0,
        })
    }

    /// Encodes and sends `records` (in as many datagrams as needed).
    pub async fn send(&mut self, records: &[FlowRecord], now_ms: i64) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        for datagram in self.state.encode(records, now_ms) {
            let n = self
                .socket
                .send_to(&datagram, self.collector)
                .await
                .with_context(|| format!("send flow datagram to {}", self.collector))?;
            if n != datagram.len() {
                bail!("short udp send to {}", self.collector);
            }
            self.datagrams += 1;
        }
        self.records += records.len() as u64;
        Ok(())
    }

    pub fn state(&self) -> &ExporterState {
        &self.state
    }
}

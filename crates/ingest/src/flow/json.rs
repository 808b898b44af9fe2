//! JSON lines: one flow object per line, as collectors forward them.
//!
//! The canonical shape is `model::FlowRecord`'s serde form:
//!
//! ```json
//! {"src": "10.0.0.7", "dst": "203.0.113.5", "src_port": 51234, "dst_port": 23,
//!  "protocol": 6, "bytes": 180, "packets": 3, "tcp_flags": 2,
//!  "start": "2026-12-01T10:00:00.000Z", "end": "2026-12-01T10:00:01.500Z",
//!  "exporter": "192.0.2.1"}
//! ```
//!
//! Only `src` and `dst` are required. Key names are matched ignoring case, `_`, `-` and
//! `.`, and common collector spellings are accepted (nfdump `-o json`, goflow2, pmacct,
//! IPFIX element names):
//!
//! | field | also accepted |
//! | --- | --- |
//! | `src` | `src_addr`, `src_ip`, `srcaddr`, `src4_addr`, `src6_addr`, `ip_src`, `sa`, `sourceIPv4Address`, `sourceIPv6Address`, `source_address`, `source_ip` |
//! | `dst` | `dst_addr`, `dst_ip`, `dstaddr`, `dst4_addr`, `dst6_addr`, `ip_dst`, `da`, `destinationIPv4Address`, `destinationIPv6Address`, `destination_address`, `destination_ip` |
//! | `src_port` | `sport`, `sp`, `port_src`, `source_port`, `l4_src_port`, `sourceTransportPort` |
//! | `dst_port` | `dport`, `dp`, `port_dst`, `destination_port`, `l4_dst_port`, `destinationTransportPort` |
//! | `protocol` | `proto`, `ip_proto`, `pr`, `protocolIdentifier`; a number or a name (`tcp`, `udp`, `icmp`, `icmpv6`, `sctp`, `gre`, `esp`) |
//! | `bytes` | `octets`, `in_bytes`, `ibyt`, `byt`, `octetDeltaCount`, `octetTotalCount` |
//! | `packets` | `pkts`, `in_packets`, `in_pkts`, `ipkt`, `pkt`, `packetDeltaCount`, `packetTotalCount` |
//! | `tcp_flags` | `flags`, `flg`, `tcpControlBits`; a number or letters such as `...AP.SF` or `SA` |
//! | `start` | `first`, `t_first`, `time_start`, `timestamp_start`, `flow_start`, `time_flow_start`, `time_flow_start_ns`, `flowStartMilliseconds`, `flowStartSeconds` |
//! | `end` | `last`, `t_last`, `time_end`, `timestamp_end`, `flow_end`, `time_flow_end`, `time_flow_end_ns`, `flowEndMilliseconds`, `flowEndSeconds` |
//! | `exporter` | `exporter_ip`, `exporter_address`, `sampler_address`, `peer_ip_src`, `router` |
//!
//! Times are RFC 3339 strings, `YYYY-MM-DD HH:MM:SS[.fff]` (UTC), or numbers since the
//! epoch whose unit follows from their size (seconds, milliseconds, microseconds or
//! nanoseconds; seconds may have a fraction). A line without times takes the time it was
//! received; with one of them, the other equals it. Other keys are ignored, and so is a
//! `peer_device`: the platform matches devices by address itself.

use std::net::IpAddr;

use model::{FlowRecord, Timestamp};
use serde_json::{Map, Value};

use crate::flow::stats::{DropReason, FlowStats};

/// The longest line accepted, in bytes.
pub const MAX_LINE_BYTES: usize = 64 * 1024;
/// Line errors described in a [`JsonReport`] at most (all are counted).
pub const MAX_REPORTED_ERRORS: usize = 100;

/// Why one line was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// 1-based line number.
    pub line: u64,
    pub reason: DropReason,
    pub message: String,
}

/// What decoding a body of JSON lines did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JsonReport {
    pub stats: FlowStats,
    /// The first [`MAX_REPORTED_ERRORS`] refused lines.
    pub errors: Vec<LineError>,
}

/// Decodes every non-blank line of `body`; `now` stands in for missing times.
pub fn decode_lines(body: &[u8], now: Timestamp, out: &mut Vec<FlowRecord>) -> JsonReport {
    let mut report = JsonReport::default();
    for (i, line) in body.split(|b| *b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        report.stats.json_lines += 1;
        match decode_line(line, now) {
            Ok(record) => {
                out.push(record);
                report.stats.records += 1;
            }
            Err((reason, message)) => {
                report.stats.drop(reason);
                if report.errors.len() < MAX_REPORTED_ERRORS {
                    report.errors.push(LineError {
                        line: i as u64 + 1,
                        reason,
                        message,
                    });
                }
            }
        }
    }
    report
}

/// Decodes one line.
pub fn decode_line(line: &[u8], now: Timestamp) -> Result<FlowRecord, (DropReason, String)> {
    if line.len() > MAX_LINE_BYTES {
        return Err((
            DropReason::LineTooLong,
            format!("line is longer than {MAX_LINE_BYTES} bytes"),
        ));
    }
    let value: Value = serde_json::from_slice(line)
        .map_err(|e| (DropReason::JsonInvalid, format!("not json: {e}")))?;
    let Value::Object(object) = value else {
        return Err((DropReason::JsonInvalid, "not a json object".to_owned()));
    };
    from_object(&object, now).map_err(|message| (DropReason::JsonField, message))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Slot {
    Src,
    Dst,
    SrcPort,
    DstPort,
    Protocol,
    Bytes,
    Packets,
    TcpFlags,
    Start,
    End,
    Exporter,
}

const NAMES: [(Slot, &str); 11] = [
    (Slot::Src, "src"),
    (Slot::Dst, "dst"),
    (Slot::SrcPort, "src_port"),
    (Slot::DstPort, "dst_port"),
    (Slot::Protocol, "protocol"),
    (Slot::Bytes, "bytes"),
    (Slot::Packets, "packets"),
    (Slot::TcpFlags, "tcp_flags"),
    (Slot::Start, "start"),
    (Slot::End, "end"),
    (Slot::Exporter, "exporter"),
];

/// Keys normalised: lowercase, without `_`, `-` and `.`.
fn slot(normalised: &str) -> Option<Slot> {
    Some(match normalised {
        "src" | "srcaddr" | "srcip" | "src4addr" | "src6addr" | "ipsrc" | "sa"
        | "sourceipv4address" | "sourceipv6address" | "sourceaddress" | "sourceip"
        | "srcaddress" => Slot::Src,
        "dst"
        | "dstaddr"
        | "dstip"
        | "dst4addr"
        | "dst6addr"
        | "ipdst"
        | "da"
        | "destinationipv4address"
        | "destinationipv6address"
        | "destinationaddress"
        | "destinationip"
        | "dstaddress" => Slot::Dst,
        "srcport"
        | "sport"
        | "sp"
        | "portsrc"
        | "sourceport"
        | "l4srcport"
        | "sourcetransportport" => Slot::SrcPort,
        "dstport"
        | "dport"
        | "dp"
        | "portdst"
        | "destinationport"
        | "l4dstport"
        | "destinationtransportport" => Slot::DstPort,
        "protocol" | "proto" | "ipproto" | "pr" | "protocolidentifier" => Slot::Protocol,
        "bytes" | "octets" | "inbytes" | "ibyt" | "byt" | "octetdeltacount" | "octettotalcount" => {
            Slot::Bytes
        }
        "packets" | "pkts" | "inpackets" | "inpkts" | "ipkt" | "pkt" | "packetdeltacount"
        | "packettotalcount" => Slot::Packets,
        "tcpflags" | "flags" | "flg" | "tcpcontrolbits" => Slot::TcpFlags,
        "start"
        | "first"
        | "tfirst"
        | "timestart"
        | "timestampstart"
        | "flowstart"
        | "timeflowstart"
        | "timeflowstartns"
        | "flowstartmilliseconds"
        | "flowstartseconds" => Slot::Start,
        "end"
        | "last"
        | "tlast"
        | "timeend"
        | "timestampend"
        | "flowend"
        | "timeflowend"
        | "timeflowendns"
        | "flowendmilliseconds"
        | "flowendseconds" => Slot::End,
        "exporter" | "exporterip" | "exporteraddress" | "sampleraddress" | "peeripsrc"
        | "router" => Slot::Exporter,
        _ => return None,
    })
}

fn name(s: Slot) -> &'static str {
    NAMES.iter().find(|(k, _)| *k == s).map_or("?", |(_, n)| n)
}

fn from_object(object: &Map<String, Value>, now: Timestamp) -> Result<FlowRecord, String> {
    let mut found: [Option<&Value>; 11] = [None; 11];
    for (key, value) in object {
        if key.len() > 64 || value.is_null() {
            continue;
        }
        let normalised: String = key
            .chars()
            .filter(|c| !matches!(c, '_' | '-' | '.'))
            .map(|c| c.to_ascii_lowercase())
            .collect();
        if let Some(s) = slot(&normalised) {
            let i = NAMES.iter().position(|(k, _)| *k == s).unwrap_or(0);
            found[i].get_or_insert(value);
        }
    }
    let get = |s: Slot| found[NAMES.iter().position(|(k, _)| *k == s).unwrap_or(0)];
    let addr = |s: Slot| -> Result<IpAddr, String> {
        let v = get(s).ok_or_else(|| format!("{} is missing", name(s)))?;
        v.as_str()
            .and_then(|t| t.trim().parse::<IpAddr>().ok())
            .ok_or_else(|| format!("{}: {} is not an ip address", name(s), short(v)))
    };
    let src = addr(Slot::Src)?;
    let dst = addr(Slot::Dst)?;
    let number = |s: Slot, max: u64| -> Result<u64, String> {
        match get(s) {
            None => Ok(0),
            Some(v) => unsigned(v).filter(|n| *n <= max).ok_or_else(|| {
                format!(
                    "{}: {} is not a whole number from 0 to {max}",
                    name(s),
                    short(v)
                )
            }),
        }
    };
    let src_port = number(Slot::SrcPort, u64::from(u16::MAX))? as u16;
    let dst_port = number(Slot::DstPort, u64::from(u16::MAX))? as u16;
    let protocol = match get(Slot::Protocol) {
        None => 0,
        Some(v) => protocol(v)
            .ok_or_else(|| format!("protocol: {} is not a protocol number or name", short(v)))?,
    };
    let bytes = number(Slot::Bytes, u64::MAX)?;
    let packets = number(Slot::Packets, u64::MAX)?;
    let tcp_flags = match get(Slot::TcpFlags) {
        None => 0,
        Some(v) => flags(v)
            .ok_or_else(|| format!("tcp_flags: {} is not a flags number or string", short(v)))?,
    };
    let time = |s: Slot| -> Result<Option<Timestamp>, String> {
        get(s)
            .map(|v| {
                timestamp(v).ok_or_else(|| format!("{}: {} is not a timestamp", name(s), short(v)))
            })
            .transpose()
    };
    let (start, end) = match (time(Slot::Start)?, time(Slot::End)?) {
        (Some(s), Some(e)) if s > e => return Err(format!("start {s} is after end {e}")),
        (Some(s), Some(e)) => (s, e),
        (Some(t), None) | (None, Some(t)) => (t, t),
        (None, None) => (now, now),
    };
    let exporter = match get(Slot::Exporter) {
        None => None,
        Some(v) => Some(
            v.as_str()
                .filter(|t| !t.is_empty() && t.len() <= 64 && !t.chars().any(char::is_control))
                .ok_or_else(|| format!("exporter: {} is not an address", short(v)))?
                .to_owned(),
        ),
    };
    Ok(FlowRecord {
        src,
        dst,
        src_port,
        dst_port,
        protocol,
        bytes,
        packets,
        tcp_flags: if protocol == model::proto::TCP {
            tcp_flags
        } else {
            0
        },
        start,
        end,
        exporter,
        peer_device: None,
    })
}

/// A value for an error message, cut short.
fn short(v: &Value) -> String {
    let text = v.to_string();
    if text.chars().count() > 40 {
        format!("{}...", text.chars().take(40).collect::<String>())
    } else {
        text
    }
}

fn unsigned(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn protocol(v: &Value) -> Option<u8> {
    if let Some(n) = unsigned(v) {
        return u8::try_from(n).ok();
    }
    Some(match v.as_str()?.trim().to_ascii_lowercase().as_str() {
        "icmp" => 1,
        "tcp" => 6,
        "udp" => 17,
        "gre" => 47,
        "esp" => 50,
        "icmpv6" | "icmp6" | "ipv6-icmp" => 58,
        "sctp" => 132,
        _ => return None,
    })
}

fn flags(v: &Value) -> Option<u8> {
    if let Some(n) = unsigned(v) {
        return u8::try_from(n).ok();
    }
    let text = v.as_str()?.trim();
    if let Some(hex) = text.strip_prefix("0x") {
        return u8::from_str_radix(hex, 16).ok();
    }
    let mut out = 0u8;
    for c in text.chars() {
        out |= match c.to_ascii_uppercase() {
            'F' => 0x01,
            'S' => 0x02,
            'R' => 0x04,
            'P' => 0x08,
            'A' => 0x10,
            'U' => 0x20,
            'E' => 0x40,
            'C' => 0x80,
            '.' | ' ' => 0,
            _ => return None,
        };
    }
    Some(out)
}

fn timestamp(v: &Value) -> Option<Timestamp> {
    match v {
        Value::Number(n) => {
            if let Some(i) = n.as_u64() {
                epoch(i as f64, Some(i))
            } else {
                epoch(n.as_f64()?, None)
            }
        }
        Value::String(s) => {
            let s = s.trim();
            if let Some(t) = Timestamp::parse_rfc3339(s) {
                return Some(t);
            }
            if let Ok(i) = s.parse::<u64>() {
                return epoch(i as f64, Some(i));
            }
            if let Ok(f) = s.parse::<f64>() {
                return epoch(f, None);
            }
            // `YYYY-MM-DD HH:MM:SS[.fff]` in UTC (pmacct, nfdump).
            let iso = s.replacen(' ', "T", 1);
            let iso = if iso.ends_with('Z') || iso.contains('+') {
                iso
            } else {
                format!("{iso}Z")
            };
            Timestamp::parse_rfc3339(&iso)
        }
        _ => None,
    }
}

/// A number since the epoch in seconds, ms, µs or ns, told apart by size.
fn epoch(f: f64, exact: Option<u64>) -> Option<Timestamp> {
    if !f.is_finite() || f < 0.0 {
        return None;
    }
    let ms = match exact {
        Some(i) if i < 100_000_000_000 => i.checked_mul(1000)?,
        Some(i) if i < 100_000_000_000_000 => i,
        Some(i) if i < 100_000_000_000_000_000 => i / 1000,
        Some(i) => i / 1_000_000,
        None if f < 1e11 => (f * 1000.0) as u64,
        None if f < 1e14 => f as u64,
        None if f < 1e17 => (f / 1000.0) as u64,
        None => (f / 1e6) as u64,
    };
    i64::try_from(ms).ok().map(Timestamp::from_millis)
}

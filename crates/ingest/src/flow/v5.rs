//! NetFlow v5: a fixed 24-byte header and fixed 48-byte IPv4 records; times are
//! sysUptime-relative and converted with the header's uptime and Unix time.

use std::net::{IpAddr, Ipv4Addr};

use model::{FlowRecord, Timestamp};

use crate::flow::stats::{DropReason, FlowStats};
use crate::flow::template::TimeBase;

pub const HEADER_LEN: usize = 24;
pub const RECORD_LEN: usize = 48;

fn u16_at(d: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([d[at], d[at + 1]])
}

fn u32_at(d: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([d[at], d[at + 1], d[at + 2], d[at + 3]])
}

/// Decodes one v5 datagram (its version already checked).
pub fn decode(datagram: &[u8], exporter: &str, stats: &mut FlowStats, out: &mut Vec<FlowRecord>) {
    if datagram.len() < HEADER_LEN {
        stats.drop(DropReason::Truncated);
        return;
    }
    let count = usize::from(u16_at(datagram, 2));
    if count == 0 {
        stats.drop(DropReason::BadHeader);
        return;
    }
    if datagram.len() < HEADER_LEN + count * RECORD_LEN {
        stats.drop(DropReason::Truncated);
        return;
    }
    let sys_uptime = u32_at(datagram, 4);
    let unix_ms =
        i64::from(u32_at(datagram, 8)) * 1000 + i64::from(u32_at(datagram, 12) / 1_000_000);
    let base = TimeBase {
        export_ms: unix_ms,
        sys_uptime_ms: Some(sys_uptime),
        system_init_ms: None,
    };
    for i in 0..count {
        let r = &datagram[HEADER_LEN + i * RECORD_LEN..HEADER_LEN + (i + 1) * RECORD_LEN];
        let first = base.from_uptime(u32_at(r, 24), None).unwrap_or(unix_ms);
        let last = base.from_uptime(u32_at(r, 28), None).unwrap_or(unix_ms);
        let protocol = r[38];
        out.push(FlowRecord {
            src: IpAddr::V4(Ipv4Addr::from(u32_at(r, 0))),
            dst: IpAddr::V4(Ipv4Addr::from(u32_at(r, 4))),
            src_port: u16_at(r, 32),
            dst_port: u16_at(r, 34),
            protocol,
            bytes: u64::from(u32_at(r, 20)),
            packets: u64::from(u32_at(r, 16)),
            tcp_flags: if protocol == model::proto::TCP {
                r[37]
            } else {
                0
            },
            start: Timestamp::from_millis(first.min(last)),
            end: Timestamp::from_millis(first.max(last)),
            exporter: Some(exporter.to_owned()),
            peer_device: None,
        });
        stats.records += 1;
    }
}

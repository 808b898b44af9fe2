//! Templates shared by NetFlow v9 and IPFIX: parsing template and options template
//! records, and decoding one data record by its template into a [`FlowRecord`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use model::{FlowRecord, Timestamp};

use crate::flow::stats::DropReason;

/// The field length that marks an IPFIX variable-length field.
pub const VARIABLE: u16 = 65535;
/// The most fields one template may have.
pub const MAX_FIELDS: usize = 512;

/// One field specifier: information element id, enterprise number (0 for IANA) and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub id: u16,
    pub enterprise: u32,
    pub len: u16,
}

/// A data or options template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub fields: Vec<Field>,
    /// Options templates describe exporter metadata, not flows.
    pub options: bool,
    /// The shortest record this template can describe (variable fields count one byte).
    pub min_len: usize,
}

impl Template {
    fn new(fields: Vec<Field>, options: bool) -> Result<Template, DropReason> {
        let min_len = fields
            .iter()
            .map(|f| {
                if f.len == VARIABLE {
                    1
                } else {
                    usize::from(f.len)
                }
            })
            .sum();
        if fields.is_empty() || min_len == 0 {
            return Err(DropReason::BadTemplate);
        }
        Ok(Template {
            fields,
            options,
            min_len,
        })
    }
}

/// What a template record says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateRecord {
    /// Define or redefine template `id`.
    Define(u16, Template),
    /// Forget template `id` (IPFIX withdrawal).
    Withdraw(u16),
    /// Forget every template (id 2) or options template (id 3) of the domain.
    WithdrawAll { options: bool },
}

/// Which wire format a template set comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    V9,
    Ipfix,
}

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let out = self.data.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(out)
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn rest_is_zero(&self) -> bool {
        self.data[self.pos..].iter().all(|b| *b == 0)
    }
}

/// Parses the records of one template set (`options` for v9 flowset 1 / IPFIX set 3).
/// Stops at the first bad record, whose error is the last item.
pub fn parse_set(
    dialect: Dialect,
    options: bool,
    body: &[u8],
) -> Vec<Result<TemplateRecord, DropReason>> {
    let mut out = Vec::new();
    let mut c = Cursor { data: body, pos: 0 };
    while c.remaining() >= 4 {
        if c.rest_is_zero() {
            break; // padding
        }
        match parse_record(dialect, options, &mut c) {
            Ok(record) => out.push(Ok(record)),
            Err(reason) => {
                out.push(Err(reason));
                break;
            }
        }
    }
    out
}

fn parse_record(
    dialect: Dialect,
    options: bool,
    c: &mut Cursor<'_>,
) -> Result<TemplateRecord, DropReason> {
    let bad = DropReason::BadTemplate;
    let id = c.u16().ok_or(DropReason::Truncated)?;
    let count = match (dialect, options) {
        (Dialect::V9, false) | (Dialect::Ipfix, false) => {
            let count = c.u16().ok_or(DropReason::Truncated)?;
            if dialect == Dialect::Ipfix && count == 0 {
                return match id {
                    2 => Ok(TemplateRecord::WithdrawAll { options: false }),
                    256.. => Ok(TemplateRecord::Withdraw(id)),
                    _ => Err(bad),
                };
            }
            usize::from(count)
        }
        (Dialect::V9, true) => {
            let scope_len = c.u16().ok_or(DropReason::Truncated)?;
            let option_len = c.u16().ok_or(DropReason::Truncated)?;
            let bytes = usize::from(scope_len) + usize::from(option_len);
            if bytes % 4 != 0 {
                return Err(bad);
            }
            bytes / 4
        }
        (Dialect::Ipfix, true) => {
            let count = c.u16().ok_or(DropReason::Truncated)?;
            if count == 0 {
                return match id {
                    3 => Ok(TemplateRecord::WithdrawAll { options: true }),
                    256.. => Ok(TemplateRecord::Withdraw(id)),
                    _ => Err(bad),
                };
            }
            let scope = c.u16().ok_or(DropReason::Truncated)?;
            if scope == 0 || scope > count {
                return Err(bad);
            }
            usize::from(count)
        }
    };
    if id < 256 || count > MAX_FIELDS {
        return Err(bad);
    }
    let mut fields = Vec::with_capacity(count);
    for _ in 0..count {
        let raw = c.u16().ok_or(DropReason::Truncated)?;
        let len = c.u16().ok_or(DropReason::Truncated)?;
        let (id, enterprise) = match dialect {
            Dialect::Ipfix if raw & 0x8000 != 0 => {
                (raw & 0x7fff, c.u32().ok_or(DropReason::Truncated)?)
            }
            _ => (raw, 0),
        };
        if dialect == Dialect::V9 && (len == 0 || len == VARIABLE) {
            return Err(bad);
        }
        fields.push(Field {
            id,
            enterprise,
            len,
        });
    }
    Ok(TemplateRecord::Define(id, Template::new(fields, options)?))
}

/// The time context a record's timestamps are relative to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeBase {
    /// Export time of the message, ms since the epoch.
    pub export_ms: i64,
    /// v9 header's sysUptime (ms), which FIRST_SWITCHED / LAST_SWITCHED count from.
    pub sys_uptime_ms: Option<u32>,
    /// IPFIX systemInitTimeMilliseconds for the domain, learned from options data.
    pub system_init_ms: Option<i64>,
}

impl TimeBase {
    /// Converts a sysUpTime-relative time (ms) to ms since the epoch.
    pub fn from_uptime(&self, t: u32, system_init_ms: Option<i64>) -> Option<i64> {
        if let Some(init) = system_init_ms.or(self.system_init_ms) {
            // Flows end before they are exported: an unsigned uptime that lands after the
            // export time is a time before the init time that wrapped (exporters replaying
            // captures older than their start, such as softflowd -r).
            let unsigned = init + i64::from(t);
            if unsigned > self.export_ms + 60_000 {
                return Some(init + i64::from(t as i32));
            }
            return Some(unsigned);
        }
        // An uptime a little after the header's (clock skew) is a small negative age.
        let up = self.sys_uptime_ms?;
        Some(self.export_ms - i64::from(up.wrapping_sub(t) as i32))
    }
}

/// The fields of one data record that citysec uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fields {
    pub src4: Option<Ipv4Addr>,
    pub dst4: Option<Ipv4Addr>,
    pub src6: Option<Ipv6Addr>,
    pub dst6: Option<Ipv6Addr>,
    pub src_port: Option<u16>,
    pub dst_port: Option<u16>,
    pub protocol: Option<u8>,
    pub bytes: Option<u64>,
    pub packets: Option<u64>,
    pub tcp_flags: Option<u8>,
    pub start_uptime: Option<u32>,
    pub end_uptime: Option<u32>,
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
    pub start_delta_us: Option<u64>,
    pub end_delta_us: Option<u64>,
    pub system_init_ms: Option<i64>,
    /// RFC 5103 reverse direction of a biflow (enterprise 29305).
    pub reverse_bytes: Option<u64>,
    pub reverse_packets: Option<u64>,
    pub reverse_tcp_flags: Option<u8>,
}

/// The private enterprise number of RFC 5103's reverse information elements.
pub const REVERSE_PEN: u32 = 29305;

fn uint(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 8 {
        return None;
    }
    Some(b.iter().fold(0u64, |acc, x| (acc << 8) | u64::from(*x)))
}

/// NTP 64-bit timestamp (dateTimeMicroseconds / dateTimeNanoseconds) to ms since the epoch.
fn ntp_ms(b: &[u8]) -> Option<i64> {
    if b.len() != 8 {
        return None;
    }
    let secs = i64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    let frac = u64::from(u32::from_be_bytes([b[4], b[5], b[6], b[7]]));
    Some((secs - 2_208_988_800) * 1000 + ((frac * 1000) >> 32) as i64)
}

impl Fields {
    /// Records one IANA information element.
    fn set(&mut self, id: u16, b: &[u8]) {
        match id {
            1 | 85 => self.bytes = uint(b).or(self.bytes),
            2 | 86 => self.packets = uint(b).or(self.packets),
            4 => self.protocol = uint(b).and_then(|v| u8::try_from(v).ok()),
            6 => self.tcp_flags = uint(b).map(|v| (v & 0xff) as u8),
            7 => self.src_port = uint(b).and_then(|v| u16::try_from(v).ok()),
            11 => self.dst_port = uint(b).and_then(|v| u16::try_from(v).ok()),
            8 => self.src4 = <[u8; 4]>::try_from(b).ok().map(Ipv4Addr::from),
            12 => self.dst4 = <[u8; 4]>::try_from(b).ok().map(Ipv4Addr::from),
            27 => self.src6 = <[u8; 16]>::try_from(b).ok().map(Ipv6Addr::from),
            28 => self.dst6 = <[u8; 16]>::try_from(b).ok().map(Ipv6Addr::from),
            22 => self.start_uptime = uint(b).and_then(|v| u32::try_from(v).ok()),
            21 => self.end_uptime = uint(b).and_then(|v| u32::try_from(v).ok()),
            150 => self.start_ms = uint(b).map(|v| (v as i64).saturating_mul(1000)),
            151 => self.end_ms = uint(b).map(|v| (v as i64).saturating_mul(1000)),
            152 => self.start_ms = uint(b).map(|v| v as i64),
            153 => self.end_ms = uint(b).map(|v| v as i64),
            154 | 156 => self.start_ms = ntp_ms(b),
            155 | 157 => self.end_ms = ntp_ms(b),
            158 => self.start_delta_us = uint(b),
            159 => self.end_delta_us = uint(b),
            160 => self.system_init_ms = uint(b).map(|v| v as i64),
            _ => {}
        }
    }

    /// Records one RFC 5103 reverse element.
    fn set_reverse(&mut self, id: u16, b: &[u8]) {
        match id {
            1 | 85 => self.reverse_bytes = uint(b),
            2 | 86 => self.reverse_packets = uint(b),
            6 => self.reverse_tcp_flags = uint(b).map(|v| (v & 0xff) as u8),
            _ => {}
        }
    }

    /// Builds the flow records: one, or for a biflow with reverse counters also the
    /// reverse direction (and only that when the forward one saw nothing). Empty without
    /// a source and destination of one family.
    pub fn into_records(self, base: &TimeBase, exporter: &str, out: &mut Vec<FlowRecord>) -> usize {
        let reverse = (
            self.reverse_bytes,
            self.reverse_packets,
            self.reverse_tcp_flags,
        );
        let Some(forward) = self.into_record(base, exporter) else {
            return 0;
        };
        let mut n = 0;
        let has_reverse = reverse.0.unwrap_or(0) > 0 || reverse.1.unwrap_or(0) > 0;
        if has_reverse {
            let mut back = forward.clone();
            std::mem::swap(&mut back.src, &mut back.dst);
            std::mem::swap(&mut back.src_port, &mut back.dst_port);
            back.bytes = reverse.0.unwrap_or(0);
            back.packets = reverse.1.unwrap_or(0);
            back.tcp_flags = if back.protocol == model::proto::TCP {
                reverse.2.unwrap_or(0)
            } else {
                0
            };
            if forward.bytes > 0 || forward.packets > 0 {
                out.push(forward);
                n += 1;
            }
            out.push(back);
            return n + 1;
        }
        out.push(forward);
        1
    }

    /// Builds the forward flow record; `None` without a source and destination of one family.
    pub fn into_record(self, base: &TimeBase, exporter: &str) -> Option<FlowRecord> {
        let (src, dst) = match (self.src4, self.dst4, self.src6, self.dst6) {
            (Some(s), Some(d), _, _) => (IpAddr::V4(s), IpAddr::V4(d)),
            (_, _, Some(s), Some(d)) => (IpAddr::V6(s), IpAddr::V6(d)),
            _ => return None,
        };
        let time = |abs: Option<i64>, up: Option<u32>, delta: Option<u64>| {
            abs.or_else(|| up.and_then(|t| base.from_uptime(t, self.system_init_ms)))
                .or_else(|| delta.map(|d| base.export_ms - (d / 1000) as i64))
        };
        let start = time(self.start_ms, self.start_uptime, self.start_delta_us);
        let end = time(self.end_ms, self.end_uptime, self.end_delta_us);
        let (start, end) = match (start, end) {
            (Some(s), Some(e)) => (s.min(e), s.max(e)),
            (Some(t), None) | (None, Some(t)) => (t, t),
            (None, None) => (base.export_ms, base.export_ms),
        };
        let protocol = self.protocol.unwrap_or(0);
        Some(FlowRecord {
            src,
            dst,
            src_port: self.src_port.unwrap_or(0),
            dst_port: self.dst_port.unwrap_or(0),
            protocol,
            bytes: self.bytes.unwrap_or(0),
            packets: self.packets.unwrap_or(0),
            tcp_flags: if protocol == model::proto::TCP {
                self.tcp_flags.unwrap_or(0)
            } else {
                0
            },
            start: Timestamp::from_millis(start),
            end: Timestamp::from_millis(end),
            exporter: Some(exporter.to_owned()),
            peer_device: None,
        })
    }
}

/// Decodes one record at the start of `data`; returns its fields and its length.
pub fn decode_record(template: &Template, data: &[u8]) -> Result<(Fields, usize), DropReason> {
    let mut c = Cursor { data, pos: 0 };
    let mut fields = Fields::default();
    for f in &template.fields {
        let len = if f.len == VARIABLE {
            let first = *c
                .take(1)
                .ok_or(DropReason::Truncated)?
                .first()
                .unwrap_or(&0);
            if first == 255 {
                usize::from(c.u16().ok_or(DropReason::Truncated)?)
            } else {
                usize::from(first)
            }
        } else {
            usize::from(f.len)
        };
        let value = c.take(len).ok_or(DropReason::Truncated)?;
        match f.enterprise {
            0 => fields.set(f.id, value),
            REVERSE_PEN => fields.set_reverse(f.id, value),
            _ => {}
        }
    }
    Ok((fields, c.pos))
}

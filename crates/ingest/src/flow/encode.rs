//! An exporter: encodes flow records as NetFlow v5, v9 and IPFIX datagrams with the
//! layouts real exporters use. The tests, the benchmarks, the fuzz seeds and the simulator
//! use it to speak the wire format; the collector never does.

use std::net::IpAddr;

use model::FlowRecord;

use crate::flow::template::{Dialect, VARIABLE};

/// How a flow's start or end time is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeForm {
    /// flowStartSysUpTime / flowEndSysUpTime (22/21): ms since the exporter booted.
    Uptime,
    /// flowStart/EndSeconds (150/151).
    Seconds,
    /// flowStart/EndMilliseconds (152/153).
    Millis,
    /// flowStart/EndMicroseconds (154/155), NTP format.
    Micros,
    /// flowStart/EndNanoseconds (156/157), NTP format.
    Nanos,
    /// flowStart/EndDeltaMicroseconds (158/159): µs before the export time.
    DeltaMicros,
}

impl TimeForm {
    pub const ALL: [TimeForm; 6] = [
        TimeForm::Uptime,
        TimeForm::Seconds,
        TimeForm::Millis,
        TimeForm::Micros,
        TimeForm::Nanos,
        TimeForm::DeltaMicros,
    ];

    /// The (start, end) element ids and length.
    fn ids(self) -> (u16, u16, u16) {
        match self {
            TimeForm::Uptime => (22, 21, 4),
            TimeForm::Seconds => (150, 151, 4),
            TimeForm::Millis => (152, 153, 8),
            TimeForm::Micros => (154, 155, 8),
            TimeForm::Nanos => (156, 157, 8),
            TimeForm::DeltaMicros => (158, 159, 4),
        }
    }

    /// What survives encoding a time in this form (seconds lose the milliseconds).
    pub fn quantise(self, ms: i64) -> i64 {
        match self {
            TimeForm::Seconds => ms - ms.rem_euclid(1000),
            _ => ms,
        }
    }
}

/// One column of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Column {
    SrcAddr,
    DstAddr,
    /// Ports, protocol, counters and flags with their (possibly reduced) length in bytes.
    SrcPort,
    DstPort,
    Protocol,
    TcpFlags {
        len: u16,
    },
    Bytes {
        len: u16,
    },
    Packets {
        len: u16,
    },
    Start(TimeForm),
    End(TimeForm),
    /// A field the collector skips: an unused IANA element or an enterprise-specific one
    /// (`enterprise != 0`, IPFIX only), fixed or variable length (IPFIX only).
    Opaque {
        id: u16,
        enterprise: u32,
        value: Vec<u8>,
        variable: bool,
    },
}

/// A template: which columns, for IPv4 or IPv6 addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub v6: bool,
    pub columns: Vec<Column>,
}

/// The exporter's clock: when it booted and when it exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    /// ms since the epoch at boot (sysUpTime 0).
    pub boot_ms: i64,
    /// ms since the epoch at export. v9 and IPFIX headers carry whole seconds.
    pub export_ms: i64,
}

impl Clock {
    fn uptime(&self, ms: i64) -> u32 {
        (ms - self.boot_ms) as u32
    }
}

impl Layout {
    /// The layout softflowd and most routers use.
    pub fn standard(v6: bool, time: TimeForm) -> Layout {
        Layout {
            v6,
            columns: vec![
                Column::SrcAddr,
                Column::DstAddr,
                Column::Start(time),
                Column::End(time),
                Column::Bytes { len: 4 },
                Column::Packets { len: 4 },
                Column::Opaque {
                    id: 10,
                    enterprise: 0,
                    value: vec![0, 0, 0, 1],
                    variable: false,
                },
                Column::SrcPort,
                Column::DstPort,
                Column::Protocol,
                Column::TcpFlags { len: 1 },
            ],
        }
    }

    fn spec(&self, c: &Column) -> (u16, u32, u16) {
        let (a4, a6) = (4, 16);
        match c {
            Column::SrcAddr if self.v6 => (27, 0, a6),
            Column::SrcAddr => (8, 0, a4),
            Column::DstAddr if self.v6 => (28, 0, a6),
            Column::DstAddr => (12, 0, a4),
            Column::SrcPort => (7, 0, 2),
            Column::DstPort => (11, 0, 2),
            Column::Protocol => (4, 0, 1),
            Column::TcpFlags { len } => (6, 0, *len),
            Column::Bytes { len } => (1, 0, *len),
            Column::Packets { len } => (2, 0, *len),
            Column::Start(t) => (t.ids().0, 0, t.ids().2),
            Column::End(t) => (t.ids().1, 0, t.ids().2),
            Column::Opaque {
                id,
                enterprise,
                value,
                variable,
            } => (
                *id,
                *enterprise,
                if *variable {
                    VARIABLE
                } else {
                    value.len() as u16
                },
            ),
        }
    }

    /// Appends one data record.
    pub fn record(&self, r: &FlowRecord, clock: &Clock, out: &mut Vec<u8>) {
        let uint = |out: &mut Vec<u8>, v: u64, len: u16| {
            let bytes = v.to_be_bytes();
            out.extend_from_slice(&bytes[8 - usize::from(len).min(8)..]);
        };
        let time = |out: &mut Vec<u8>, form: TimeForm, ms: i64| match form {
            TimeForm::Uptime => out.extend_from_slice(&clock.uptime(ms).to_be_bytes()),
            TimeForm::Seconds => out.extend_from_slice(&((ms / 1000) as u32).to_be_bytes()),
            TimeForm::Millis => out.extend_from_slice(&(ms as u64).to_be_bytes()),
            TimeForm::Micros | TimeForm::Nanos => {
                let secs = (ms.div_euclid(1000) + 2_208_988_800) as u32;
                let frac = ((ms.rem_euclid(1000) as u64) << 32).div_ceil(1000) as u32;
                out.extend_from_slice(&secs.to_be_bytes());
                out.extend_from_slice(&frac.to_be_bytes());
            }
            TimeForm::DeltaMicros => {
                out.extend_from_slice(&(((clock.export_ms - ms) * 1000) as u32).to_be_bytes())
            }
        };
        let addr = |out: &mut Vec<u8>, ip: IpAddr| match ip {
            IpAddr::V4(v4) if self.v6 => out.extend_from_slice(&v4.to_ipv6_mapped().octets()),
            IpAddr::V4(v4) => out.extend_from_slice(&v4.octets()),
            IpAddr::V6(v6) if self.v6 => out.extend_from_slice(&v6.octets()),
            IpAddr::V6(_) => out.extend_from_slice(&[0; 4]),
        };
        for c in &self.columns {
            match c {
                Column::SrcAddr => addr(out, r.src),
                Column::DstAddr => addr(out, r.dst),
                Column::SrcPort => out.extend_from_slice(&r.src_port.to_be_bytes()),
                Column::DstPort => out.extend_from_slice(&r.dst_port.to_be_bytes()),
                Column::Protocol => out.push(r.protocol),
                Column::TcpFlags { len } => uint(out, u64::from(r.tcp_flags), *len),
                Column::Bytes { len } => uint(out, r.bytes, *len),
                Column::Packets { len } => uint(out, r.packets, *len),
                Column::Start(form) => time(out, *form, r.start.as_millis()),
                Column::End(form) => time(out, *form, r.end.as_millis()),
                Column::Opaque {
                    value, variable, ..
                } => {
                    if *variable {
                        if value.len() < 255 {
                            out.push(value.len() as u8);
                        } else {
                            out.push(255);
                            out.extend_from_slice(&(value.len() as u16).to_be_bytes());
                        }
                    }
                    out.extend_from_slice(value);
                }
            }
        }
    }

    /// A template set (v9 flowset 0 / IPFIX set 2) defining this layout as `id`.
    pub fn template_set(&self, dialect: Dialect, id: u16) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&id.to_be_bytes());
        body.extend_from_slice(&(self.columns.len() as u16).to_be_bytes());
        for c in &self.columns {
            let (ie, enterprise, len) = self.spec(c);
            if enterprise != 0 {
                body.extend_from_slice(&(ie | 0x8000).to_be_bytes());
                body.extend_from_slice(&len.to_be_bytes());
                body.extend_from_slice(&enterprise.to_be_bytes());
            } else {
                body.extend_from_slice(&ie.to_be_bytes());
                body.extend_from_slice(&len.to_be_bytes());
            }
        }
        set(
            if dialect == Dialect::V9 { 0 } else { 2 },
            body,
            dialect == Dialect::V9,
        )
    }

    /// A data set of these records under template `id` (v9 sets are padded to 4 bytes).
    pub fn data_set(
        &self,
        dialect: Dialect,
        id: u16,
        records: &[FlowRecord],
        clock: &Clock,
    ) -> Vec<u8> {
        let mut body = Vec::new();
        for r in records {
            self.record(r, clock, &mut body);
        }
        set(id, body, dialect == Dialect::V9)
    }
}

fn set(id: u16, body: Vec<u8>, pad: bool) -> Vec<u8> {
    let padding = if pad { (4 - body.len() % 4) % 4 } else { 0 };
    let mut out = Vec::with_capacity(4 + body.len() + padding);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&((4 + body.len() + padding) as u16).to_be_bytes());
    out.extend_from_slice(&body);
    out.resize(out.len() + padding, 0);
    out
}

/// An options template (id `id`) announcing systemInitTimeMilliseconds (IE 160), as
/// softflowd sends before IPFIX data using sysUpTime-relative times.
pub fn system_init_template_set(dialect: Dialect, id: u16) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&id.to_be_bytes());
    match dialect {
        Dialect::V9 => {
            // scope: system (type 1), 4 bytes; option: 160, 8 bytes.
            body.extend_from_slice(&4u16.to_be_bytes());
            body.extend_from_slice(&4u16.to_be_bytes());
            body.extend_from_slice(&[0, 1, 0, 4, 0, 160, 0, 8]);
            set(1, body, true)
        }
        Dialect::Ipfix => {
            // 2 fields, 1 scope: meteringProcessId (143), 4 bytes; 160, 8 bytes.
            body.extend_from_slice(&[0, 2, 0, 1, 0, 143, 0, 4, 0, 160, 0, 8]);
            set(3, body, false)
        }
    }
}

/// The options data record for [`system_init_template_set`].
pub fn system_init_data_set(dialect: Dialect, id: u16, boot_ms: i64) -> Vec<u8> {
    let mut body = vec![0, 0, 0, 1];
    body.extend_from_slice(&(boot_ms as u64).to_be_bytes());
    set(id, body, dialect == Dialect::V9)
}

/// A NetFlow v9 datagram of these sets from source id `source_id`.
pub fn v9_message(clock: &Clock, sequence: u32, source_id: u32, sets: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&9u16.to_be_bytes());
    out.extend_from_slice(&(sets.len() as u16).to_be_bytes());
    out.extend_from_slice(&clock.uptime(clock.export_ms).to_be_bytes());
    out.extend_from_slice(&((clock.export_ms / 1000) as u32).to_be_bytes());
    out.extend_from_slice(&sequence.to_be_bytes());
    out.extend_from_slice(&source_id.to_be_bytes());
    for s in sets {
        out.extend_from_slice(s);
    }
    out
}

/// An IPFIX message of these sets in observation domain `domain`.
pub fn ipfix_message(clock: &Clock, sequence: u32, domain: u32, sets: &[Vec<u8>]) -> Vec<u8> {
    let len = 16 + sets.iter().map(Vec::len).sum::<usize>();
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&10u16.to_be_bytes());
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.extend_from_slice(&((clock.export_ms / 1000) as u32).to_be_bytes());
    out.extend_from_slice(&sequence.to_be_bytes());
    out.extend_from_slice(&domain.to_be_bytes());
    for s in sets {
        out.extend_from_slice(s);
    }
    out
}

/// A NetFlow v5 datagram (IPv4 records only: others are written as 0.0.0.0).
pub fn v5_message(clock: &Clock, sequence: u32, records: &[FlowRecord]) -> Vec<u8> {
    let mut out = Vec::with_capacity(24 + 48 * records.len());
    out.extend_from_slice(&5u16.to_be_bytes());
    out.extend_from_slice(&(records.len() as u16).to_be_bytes());
    out.extend_from_slice(&clock.uptime(clock.export_ms).to_be_bytes());
    out.extend_from_slice(&((clock.export_ms / 1000) as u32).to_be_bytes());
    out.extend_from_slice(&((clock.export_ms % 1000) as u32 * 1_000_000).to_be_bytes());
    out.extend_from_slice(&sequence.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    let v4 = |ip: IpAddr| match ip {
        IpAddr::V4(v4) => v4.octets(),
        IpAddr::V6(_) => [0; 4],
    };
    for r in records {
        out.extend_from_slice(&v4(r.src));
        out.extend_from_slice(&v4(r.dst));
        out.extend_from_slice(&[0; 4]); // next hop
        out.extend_from_slice(&[0, 1, 0, 2]); // input, output interfaces
        out.extend_from_slice(&(r.packets as u32).to_be_bytes());
        out.extend_from_slice(&(r.bytes as u32).to_be_bytes());
        out.extend_from_slice(&clock.uptime(r.start.as_millis()).to_be_bytes());
        out.extend_from_slice(&clock.uptime(r.end.as_millis()).to_be_bytes());
        out.extend_from_slice(&r.src_port.to_be_bytes());
        out.extend_from_slice(&r.dst_port.to_be_bytes());
        out.extend_from_slice(&[0, r.tcp_flags, r.protocol, 0]);
        out.extend_from_slice(&[0; 8]); // AS numbers, masks, padding
    }
    out
}

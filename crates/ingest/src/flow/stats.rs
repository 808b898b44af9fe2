//! Flow counters: why records were dropped ([`DropReason`]), the plain per-call deltas the
//! sans-IO decoders fill ([`FlowStats`]), and the shared atomics `app` exports on
//! `/metrics` ([`FlowMetrics`]).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why part of the input was dropped. Each reason counts one unit, named in its doc.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    /// A datagram, set or record ended before its announced length (one per datagram or set).
    Truncated,
    /// A datagram whose version is not 5, 9 or 10.
    BadVersion,
    /// A message or set header with impossible lengths or counts (one per datagram or set).
    BadHeader,
    /// A template record that cannot describe a record (one per template).
    BadTemplate,
    /// A template refused because the exporter's or the collector's template cache is full.
    TemplateLimit,
    /// A data set whose template did not arrive within `pending_timeout_s` (one per set).
    PendingTimeout,
    /// A data set without template refused because the pending buffer was full (one per set).
    PendingFull,
    /// A data record without a usable source and destination address (one per record).
    IncompleteRecord,
    /// A datagram over its exporter's `datagrams_per_s_per_exporter`.
    RateLimited,
    /// A datagram from an address not in `exporters`.
    ExporterRefused,
    /// A datagram from a new exporter while `max_exporters` are already tracked.
    ExporterLimit,
    /// A JSON line that is not a JSON object (one per line).
    JsonInvalid,
    /// A JSON object with a missing or invalid field (one per line).
    JsonField,
    /// A JSON line longer than [`crate::flow::json::MAX_LINE_BYTES`].
    LineTooLong,
}

impl DropReason {
    /// Every reason, in the order of [`DropReason::index`].
    pub const ALL: [DropReason; 14] = [
        DropReason::Truncated,
        DropReason::BadVersion,
        DropReason::BadHeader,
        DropReason::BadTemplate,
        DropReason::TemplateLimit,
        DropReason::PendingTimeout,
        DropReason::PendingFull,
        DropReason::IncompleteRecord,
        DropReason::RateLimited,
        DropReason::ExporterRefused,
        DropReason::ExporterLimit,
        DropReason::JsonInvalid,
        DropReason::JsonField,
        DropReason::LineTooLong,
    ];
    pub const COUNT: usize = DropReason::ALL.len();

    pub fn index(self) -> usize {
        self as usize
    }

    /// The snake_case name used in metrics labels and API reports.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Truncated => "truncated",
            DropReason::BadVersion => "bad_version",
            DropReason::BadHeader => "bad_header",
            DropReason::BadTemplate => "bad_template",
            DropReason::TemplateLimit => "template_limit",
            DropReason::PendingTimeout => "pending_timeout",
            DropReason::PendingFull => "pending_full",
            DropReason::IncompleteRecord => "incomplete_record",
            DropReason::RateLimited => "rate_limited",
            DropReason::ExporterRefused => "exporter_refused",
            DropReason::ExporterLimit => "exporter_limit",
            DropReason::JsonInvalid => "json_invalid",
            DropReason::JsonField => "json_field",
            DropReason::LineTooLong => "line_too_long",
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Counter deltas from decoding some input.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowStats {
    /// UDP datagrams handed to the collector.
    pub datagrams: u64,
    /// Bytes of those datagrams.
    pub bytes: u64,
    /// JSON lines read (blank lines excluded).
    pub json_lines: u64,
    /// Flow records decoded.
    pub records: u64,
    /// Templates (and options templates) learned or refreshed.
    pub templates: u64,
    /// Options data records read (exporter metadata, not flows).
    pub options_records: u64,
    /// Data sets that waited for their template and were decoded when it came.
    pub pending_decoded: u64,
    pub dropped: [u64; DropReason::COUNT],
}

impl FlowStats {
    pub fn drop(&mut self, reason: DropReason) {
        self.dropped[reason.index()] += 1;
    }

    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped[reason.index()]
    }

    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().sum()
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &FlowStats) {
        self.datagrams += other.datagrams;
        self.bytes += other.bytes;
        self.json_lines += other.json_lines;
        self.records += other.records;
        self.templates += other.templates;
        self.options_records += other.options_records;
        self.pending_decoded += other.pending_decoded;
        for (a, b) in self.dropped.iter_mut().zip(other.dropped.iter()) {
            *a += b;
        }
    }
}

/// The flow inputs' shared counters (UDP listener and HTTP JSON lines alike).
#[derive(Debug, Default)]
pub struct FlowMetrics {
    pub datagrams: AtomicU64,
    pub bytes: AtomicU64,
    pub json_lines: AtomicU64,
    pub records: AtomicU64,
    pub templates: AtomicU64,
    pub options_records: AtomicU64,
    pub pending_decoded: AtomicU64,
    /// Flow events handed to the sink.
    pub events: AtomicU64,
    pub dropped: [AtomicU64; DropReason::COUNT],
    /// Flow events dropped because the platform could not take them (an outage: the bus is
    /// unreachable and the buffer in front of it full). UDP has no way to refuse.
    pub refused_unavailable: AtomicU64,
}

impl FlowMetrics {
    /// Adds a batch of deltas (non-zero ones only, to spare shared cache lines).
    pub fn add(&self, s: &FlowStats) {
        let add = |c: &AtomicU64, v: u64| {
            if v != 0 {
                c.fetch_add(v, Ordering::Relaxed);
            }
        };
        add(&self.datagrams, s.datagrams);
        add(&self.bytes, s.bytes);
        add(&self.json_lines, s.json_lines);
        add(&self.records, s.records);
        add(&self.templates, s.templates);
        add(&self.options_records, s.options_records);
        add(&self.pending_decoded, s.pending_decoded);
        for (c, v) in self.dropped.iter().zip(s.dropped.iter()) {
            add(c, *v);
        }
    }

    /// A plain copy of the counters (`events` is not part of [`FlowStats`]).
    pub fn snapshot(&self) -> FlowStats {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut dropped = [0; DropReason::COUNT];
        for (d, c) in dropped.iter_mut().zip(self.dropped.iter()) {
            *d = l(c);
        }
        FlowStats {
            datagrams: l(&self.datagrams),
            bytes: l(&self.bytes),
            json_lines: l(&self.json_lines),
            records: l(&self.records),
            templates: l(&self.templates),
            options_records: l(&self.options_records),
            pending_decoded: l(&self.pending_decoded),
            dropped,
        }
    }
}

//! The sans-IO collector: datagrams in, flow records out. It owns the template cache and
//! the buffer of data sets waiting for their template, both bounded per exporter and in
//! total, with expiry; time is an argument, never the clock.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use model::{FlowRecord, Timestamp};

use crate::flow::stats::{DropReason, FlowStats};
use crate::flow::template::{self, Dialect, Template, TemplateRecord, TimeBase};
use crate::flow::v5;

/// The collector's bounds (see `FlowConfig` for each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub template_timeout_ms: i64,
    pub max_templates_per_exporter: usize,
    pub max_templates: usize,
    pub pending_timeout_ms: i64,
    pub max_pending_bytes_per_exporter: usize,
    pub max_pending_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        crate::flow::FlowConfig::default().limits()
    }
}

/// Templates are scoped by exporter (address and port), protocol version, observation
/// domain (IPFIX) or source id (v9), and template id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    exporter: SocketAddr,
    version: u16,
    domain: u32,
    id: u16,
}

impl Key {
    fn same_domain(&self, other: &Key) -> bool {
        self.exporter == other.exporter
            && self.version == other.version
            && self.domain == other.domain
    }
}

struct Entry {
    template: Arc<Template>,
    refreshed: Timestamp,
}

/// A data set that arrived before its template.
struct Pending {
    body: Box<[u8]>,
    base: TimeBase,
    at: Timestamp,
}

#[derive(Default)]
struct ExporterUse {
    templates: usize,
    pending_bytes: usize,
}

/// What a datagram is decoded against.
#[derive(Clone, Copy)]
struct Message {
    exporter: SocketAddr,
    version: u16,
    domain: u32,
    base: TimeBase,
}

/// The flow collector: feed it datagrams with [`Collector::decode`].
pub struct Collector {
    limits: Limits,
    templates: HashMap<Key, Entry>,
    pending: HashMap<Key, VecDeque<Pending>>,
    pending_bytes: usize,
    usage: HashMap<IpAddr, ExporterUse>,
    /// systemInitTimeMilliseconds per (exporter, version, domain), from options data.
    system_init: HashMap<(SocketAddr, u16, u32), i64>,
    stats: FlowStats,
    last_sweep: Timestamp,
}

impl Collector {
    pub fn new(limits: Limits) -> Collector {
        Collector {
            limits,
            templates: HashMap::new(),
            pending: HashMap::new(),
            pending_bytes: 0,
            usage: HashMap::new(),
            system_init: HashMap::new(),
            stats: FlowStats::default(),
            last_sweep: Timestamp::from_millis(i64::MIN),
        }
    }

    /// Templates cached now.
    pub fn templates(&self) -> usize {
        self.templates.len()
    }

    /// Bytes of data sets waiting for their template.
    pub fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }

    /// The counters since the last call.
    pub fn take_stats(&mut self) -> FlowStats {
        std::mem::take(&mut self.stats)
    }

    /// Decodes one datagram (NetFlow v5, v9 or IPFIX, told apart by the version field)
    /// from `exporter` received at `now`, appending flow records to `out`. Records of data
    /// sets that were waiting for a template this datagram carries are appended too.
    pub fn decode(
        &mut self,
        exporter: SocketAddr,
        datagram: &[u8],
        now: Timestamp,
        out: &mut Vec<FlowRecord>,
    ) {
        if now.as_millis().saturating_sub(self.last_sweep.as_millis()) >= 1000 {
            self.expire(now);
        }
        self.stats.datagrams += 1;
        self.stats.bytes += datagram.len() as u64;
        if datagram.len() < 2 {
            self.stats.drop(DropReason::Truncated);
            return;
        }
        let exporter_name = exporter.ip().to_string();
        match u16::from_be_bytes([datagram[0], datagram[1]]) {
            5 => v5::decode(datagram, &exporter_name, &mut self.stats, out),
            9 => self.decode_v9(exporter, &exporter_name, datagram, now, out),
            10 => self.decode_ipfix(exporter, &exporter_name, datagram, now, out),
            _ => self.stats.drop(DropReason::BadVersion),
        }
    }

    fn decode_v9(
        &mut self,
        exporter: SocketAddr,
        name: &str,
        d: &[u8],
        now: Timestamp,
        out: &mut Vec<FlowRecord>,
    ) {
        if d.len() < 20 {
            self.stats.drop(DropReason::Truncated);
            return;
        }
        let u32_at = |at: usize| u32::from_be_bytes([d[at], d[at + 1], d[at + 2], d[at + 3]]);
        let domain = u32_at(16);
        let message = Message {
            exporter,
            version: 9,
            domain,
            base: TimeBase {
                export_ms: i64::from(u32_at(8)) * 1000,
                sys_uptime_ms: Some(u32_at(4)),
                system_init_ms: None,
            },
        };
        self.walk_sets(message, name, &d[20..], now, out);
    }

    fn decode_ipfix(
        &mut self,
        exporter: SocketAddr,
        name: &str,
        d: &[u8],
        now: Timestamp,
        out: &mut Vec<FlowRecord>,
    ) {
        if d.len() < 16 {
            self.stats.drop(DropReason::Truncated);
            return;
        }
        let length = usize::from(u16::from_be_bytes([d[2], d[3]]));
        if length < 16 {
            self.stats.drop(DropReason::BadHeader);
            return;
        }
        if length > d.len() {
            self.stats.drop(DropReason::Truncated);
            return;
        }
        let u32_at = |at: usize| u32::from_be_bytes([d[at], d[at + 1], d[at + 2], d[at + 3]]);
        let domain = u32_at(12);
        let message = Message {
            exporter,
            version: 10,
            domain,
            base: TimeBase {
                export_ms: i64::from(u32_at(4)) * 1000,
                sys_uptime_ms: None,
                system_init_ms: self.system_init.get(&(exporter, 10, domain)).copied(),
            },
        };
        self.walk_sets(message, name, &d[16..length], now, out);
    }

    /// Walks the sets (v9: flowsets) of one message body.
    fn walk_sets(
        &mut self,
        m: Message,
        name: &str,
        body: &[u8],
        now: Timestamp,
        out: &mut Vec<FlowRecord>,
    ) {
        let dialect = if m.version == 9 {
            Dialect::V9
        } else {
            Dialect::Ipfix
        };
        let (template_set, options_set) = if m.version == 9 { (0, 1) } else { (2, 3) };
        let mut pos = 0;
        while body.len() - pos >= 4 {
            let id = u16::from_be_bytes([body[pos], body[pos + 1]]);
            let len = usize::from(u16::from_be_bytes([body[pos + 2], body[pos + 3]]));
            if len < 4 {
                self.stats.drop(DropReason::BadHeader);
                return;
            }
            if len > body.len() - pos {
                self.stats.drop(DropReason::Truncated);
                return;
            }
            let set = &body[pos + 4..pos + len];
            pos += len;
            if id == template_set || id == options_set {
                for record in template::parse_set(dialect, id == options_set, set) {
                    match record {
                        Ok(record) => self.learn(m, record, name, now, out),
                        Err(reason) => self.stats.drop(reason),
                    }
                }
            } else if id >= 256 {
                let key = Key {
                    exporter: m.exporter,
                    version: m.version,
                    domain: m.domain,
                    id,
                };
                match self.lookup(&key, now) {
                    Some(template) => self.decode_set(&key, &template, set, m.base, name, out),
                    None => self.park(key, set, m.base, now),
                }
            }
            // Set ids 2..255 (v9) and 4..255 (IPFIX) are reserved: skipped.
        }
    }

    fn lookup(&mut self, key: &Key, now: Timestamp) -> Option<Arc<Template>> {
        let entry = self.templates.get(key)?;
        if now.as_millis().saturating_sub(entry.refreshed.as_millis())
            > self.limits.template_timeout_ms
        {
            self.forget(key);
            return None;
        }
        Some(entry.template.clone())
    }

    fn forget(&mut self, key: &Key) {
        if self.templates.remove(key).is_some()
            && let Some(u) = self.usage.get_mut(&key.exporter.ip())
        {
            u.templates = u.templates.saturating_sub(1);
        }
    }

    fn learn(
        &mut self,
        m: Message,
        record: TemplateRecord,
        name: &str,
        now: Timestamp,
        out: &mut Vec<FlowRecord>,
    ) {
        let key = |id| Key {
            exporter: m.exporter,
            version: m.version,
            domain: m.domain,
            id,
        };
        match record {
            TemplateRecord::Withdraw(id) => self.forget(&key(id)),
            TemplateRecord::WithdrawAll { options } => {
                let here = key(0);
                let gone: Vec<Key> = self
                    .templates
                    .iter()
                    .filter(|(k, e)| k.same_domain(&here) && e.template.options == options)
                    .map(|(k, _)| *k)
                    .collect();
                for k in gone {
                    self.forget(&k);
                }
            }
            TemplateRecord::Define(id, template) => {
                let key = key(id);
                if let Some(entry) = self.templates.get_mut(&key) {
                    if *entry.template != template {
                        entry.template = Arc::new(template);
                    }
                    entry.refreshed = now;
                } else {
                    let usage = self.usage.entry(m.exporter.ip()).or_default();
                    if usage.templates >= self.limits.max_templates_per_exporter
                        || self.templates.len() >= self.limits.max_templates
                    {
                        self.stats.drop(DropReason::TemplateLimit);
                        return;
                    }
                    usage.templates += 1;
                    self.templates.insert(
                        key,
                        Entry {
                            template: Arc::new(template),
                            refreshed: now,
                        },
                    );
                }
                self.stats.templates += 1;
                if let Some(waiting) = self.pending.remove(&key) {
                    let template = self.templates[&key].template.clone();
                    for p in waiting {
                        self.release(&key, p.body.len());
                        self.stats.pending_decoded += 1;
                        self.decode_set(&key, &template, &p.body, p.base, name, out);
                    }
                }
            }
        }
    }

    fn decode_set(
        &mut self,
        key: &Key,
        template: &Template,
        set: &[u8],
        base: TimeBase,
        name: &str,
        out: &mut Vec<FlowRecord>,
    ) {
        let mut pos = 0;
        while set.len() - pos >= template.min_len {
            let (fields, len) = match template::decode_record(template, &set[pos..]) {
                Ok(decoded) => decoded,
                Err(reason) => {
                    self.stats.drop(reason);
                    return;
                }
            };
            pos += len;
            if template.options {
                self.stats.options_records += 1;
                if let Some(init) = fields.system_init_ms
                    && (self.system_init.len() < self.limits.max_templates
                        || self
                            .system_init
                            .contains_key(&(key.exporter, key.version, key.domain)))
                {
                    self.system_init
                        .insert((key.exporter, key.version, key.domain), init);
                }
                continue;
            }
            let mut base = base;
            if key.version == 10 && base.system_init_ms.is_none() {
                base.system_init_ms = self
                    .system_init
                    .get(&(key.exporter, 10, key.domain))
                    .copied();
            }
            match fields.into_records(&base, name, out) {
                0 => self.stats.drop(DropReason::IncompleteRecord),
                n => self.stats.records += n as u64,
            }
        }
    }

    fn park(&mut self, key: Key, set: &[u8], base: TimeBase, now: Timestamp) {
        let usage = self.usage.entry(key.exporter.ip()).or_default();
        if usage.pending_bytes + set.len() > self.limits.max_pending_bytes_per_exporter
            || self.pending_bytes + set.len() > self.limits.max_pending_bytes
        {
            self.stats.drop(DropReason::PendingFull);
            return;
        }
        usage.pending_bytes += set.len();
        self.pending_bytes += set.len();
        self.pending.entry(key).or_default().push_back(Pending {
            body: set.into(),
            base,
            at: now,
        });
    }

    fn release(&mut self, key: &Key, bytes: usize) {
        self.pending_bytes = self.pending_bytes.saturating_sub(bytes);
        if let Some(u) = self.usage.get_mut(&key.exporter.ip()) {
            u.pending_bytes = u.pending_bytes.saturating_sub(bytes);
        }
    }

    /// Forgets templates not refreshed within their timeout and drops (counting them)
    /// data sets that waited too long. [`Collector::decode`] calls it at most once a second;
    /// call it on a timer too so waiting sets are dropped without traffic.
    pub fn expire(&mut self, now: Timestamp) {
        self.last_sweep = now;
        let now_ms = now.as_millis();
        let stale: Vec<Key> = self
            .templates
            .iter()
            .filter(|(_, e)| {
                now_ms.saturating_sub(e.refreshed.as_millis()) > self.limits.template_timeout_ms
            })
            .map(|(k, _)| *k)
            .collect();
        for key in stale {
            self.forget(&key);
        }
        let keys: Vec<Key> = self.pending.keys().copied().collect();
        for key in keys {
            let Some(queue) = self.pending.get_mut(&key) else {
                continue;
            };
            let mut released = 0;
            let mut expired = 0;
            while let Some(front) = queue.front() {
                if now_ms.saturating_sub(front.at.as_millis()) <= self.limits.pending_timeout_ms {
                    break;
                }
                released += front.body.len();
                expired += 1;
                queue.pop_front();
            }
            if queue.is_empty() {
                self.pending.remove(&key);
            }
            self.release(&key, released);
            self.stats.dropped[DropReason::PendingTimeout.index()] += expired;
        }
        self.usage
            .retain(|_, u| u.templates > 0 || u.pending_bytes > 0);
    }
}

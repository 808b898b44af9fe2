//! Threat indicators (STIX 2.1 patterns shared by partners or written by the city's analysts),
//! compiled once and matched against the live event stream.
//!
//! Most shared indicators are a single address, or an `OR` of addresses
//! (`[ipv4-addr:value = '203.0.113.5' OR ipv4-addr:value = '198.51.100.7']`). Those are
//! indexed by address, so a flow costs two hash lookups however many million indicators are
//! loaded. Every other pattern is compiled by `stix::matcher` and evaluated against the STIX
//! view of each flow (`network-traffic` with its `ipv4-addr`/`ipv6-addr` ends).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use model::{Alert, Event, FlowRecord, Severity, Timestamp};
use serde_json::json;
use stix::matcher::{CompiledPattern, Observation};
use stix::pattern::{CmpExpr, Literal, ObsExpr, Op, PathStep, Pattern};

use crate::{AlertDraft, Engine};

/// One indicator the engine matches live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Indicator {
    /// The STIX id (`indicator--<uuid>`), the key for updates and removals.
    pub id: String,
    /// The STIX pattern, e.g. `[ipv4-addr:value = '203.0.113.5']`.
    pub pattern: String,
    /// A name for the analyst (the indicator's `name`, or its id).
    pub name: String,
    /// Who shared it: a partner's name, or `local`.
    pub source: String,
    /// After this the indicator no longer matches (`valid_until`).
    pub valid_until: Option<Timestamp>,
}

/// An indicator the engine refused, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndicatorError {
    pub id: String,
    pub message: String,
}

#[derive(Debug)]
struct Entry {
    id: Box<str>,
    name: Box<str>,
    pattern: Box<str>,
    source: Arc<str>,
    valid_until: Option<Timestamp>,
    /// Addresses this indicator is indexed under (empty for general patterns).
    addresses: Vec<IpAddr>,
    /// The compiled pattern, for indicators the address index cannot answer.
    compiled: Option<CompiledPattern>,
    /// Whether the pattern names an object a flow has (`network-traffic`, `ipv4-addr`,
    /// `ipv6-addr`); patterns about files, domains or URLs are not evaluated on flows.
    on_flows: bool,
}

/// The compiled indicator set.
#[derive(Debug, Default)]
pub(crate) struct IndicatorSet {
    entries: Vec<Option<Entry>>,
    free: Vec<u32>,
    by_id: HashMap<Box<str>, u32>,
    by_address: HashMap<IpAddr, Vec<u32>>,
    general: Vec<u32>,
    sources: HashMap<String, Arc<str>>,
    live: usize,
}

/// At most this many indicators (about 150 bytes each when indexed).
pub const MAX_INDICATORS: usize = 5_000_000;

impl IndicatorSet {
    /// Adds or replaces indicators; returns the ones whose pattern does not compile.
    pub(crate) fn upsert(&mut self, indicators: Vec<Indicator>) -> Vec<IndicatorError> {
        let mut refused = Vec::new();
        for indicator in indicators {
            if self.live >= MAX_INDICATORS && !self.by_id.contains_key(indicator.id.as_str()) {
                refused.push(IndicatorError {
                    id: indicator.id,
                    message: format!("the engine holds its maximum of {MAX_INDICATORS} indicators"),
                });
                continue;
            }
            let parsed = match Pattern::parse(&indicator.pattern) {
                Ok(p) => p,
                Err(err) => {
                    refused.push(IndicatorError {
                        id: indicator.id,
                        message: err.to_string(),
                    });
                    continue;
                }
            };
            let on_flows = names_flow_objects(&parsed.root);
            let (addresses, compiled) = match address_set(&parsed) {
                Some(addresses) => (addresses, None),
                None => match CompiledPattern::compile(&parsed, &indicator.pattern) {
                    Ok(c) => (Vec::new(), Some(c)),
                    Err(err) => {
                        refused.push(IndicatorError {
                            id: indicator.id,
                            message: err.to_string(),
                        });
                        continue;
                    }
                },
            };
            self.remove_one(&indicator.id);
            let source = self
                .sources
                .entry(indicator.source.clone())
                .or_insert_with(|| Arc::from(indicator.source.as_str()))
                .clone();
            let entry = Entry {
                id: indicator.id.into_boxed_str(),
                name: indicator.name.into_boxed_str(),
                pattern: indicator.pattern.into_boxed_str(),
                source,
                valid_until: indicator.valid_until,
                addresses,
                compiled,
                on_flows,
            };
            let slot = match self.free.pop() {
                Some(slot) => slot,
                None => {
                    self.entries.push(None);
                    (self.entries.len() - 1) as u32
                }
            };
            for ip in &entry.addresses {
                self.by_address.entry(*ip).or_default().push(slot);
            }
            if entry.compiled.is_some() && entry.on_flows {
                self.general.push(slot);
            }
            self.by_id.insert(entry.id.clone(), slot);
            self.entries[slot as usize] = Some(entry);
            self.live += 1;
        }
        refused
    }

    fn remove_one(&mut self, id: &str) {
        let Some(slot) = self.by_id.remove(id) else {
            return;
        };
        let Some(entry) = self.entries[slot as usize].take() else {
            return;
        };
        for ip in &entry.addresses {
            if let Some(list) = self.by_address.get_mut(ip) {
                list.retain(|s| *s != slot);
                if list.is_empty() {
                    self.by_address.remove(ip);
                }
            }
        }
        if entry.compiled.is_some() && entry.on_flows {
            self.general.retain(|s| *s != slot);
        }
        self.free.push(slot);
        self.live -= 1;
    }

    pub(crate) fn remove(&mut self, ids: &[String]) {
        for id in ids {
            self.remove_one(id);
        }
    }

    /// Drops indicators whose `valid_until` has passed.
    pub(crate) fn expire(&mut self, now: Timestamp) {
        let expired: Vec<String> = self
            .entries
            .iter()
            .flatten()
            .filter(|e| e.valid_until.is_some_and(|t| t <= now))
            .map(|e| e.id.to_string())
            .collect();
        self.remove(&expired);
    }

    pub(crate) fn len(&self) -> usize {
        self.live
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Indexed indicators naming `ip`, then general ones the observation satisfies.
    fn hits(
        &self,
        ips: &[IpAddr],
        observation: impl FnOnce() -> Option<Observation>,
        ts: Timestamp,
    ) -> Vec<u32> {
        let mut hits = Vec::new();
        for ip in ips {
            if let Some(list) = self.by_address.get(ip) {
                hits.extend(list.iter().copied());
            }
        }
        if !self.general.is_empty()
            && let Some(obs) = observation()
        {
            for slot in &self.general {
                if let Some(Some(entry)) = self.entries.get(*slot as usize)
                    && let Some(compiled) = &entry.compiled
                    && compiled.matches_one(&obs)
                {
                    hits.push(*slot);
                }
            }
        }
        hits.retain(|slot| {
            self.entries[*slot as usize]
                .as_ref()
                .is_some_and(|e| e.valid_until.is_none_or(|t| ts < t))
        });
        hits.sort_unstable();
        hits.dedup();
        hits
    }
}

/// Whether any comparison of the pattern is about an object type a flow carries.
fn names_flow_objects(expr: &ObsExpr) -> bool {
    fn cmp(c: &CmpExpr) -> bool {
        match c {
            CmpExpr::And(a, b) | CmpExpr::Or(a, b) => cmp(a) || cmp(b),
            CmpExpr::Group(inner) => cmp(inner),
            CmpExpr::Test(t) => matches!(
                t.path.object_type.as_str(),
                "network-traffic" | "ipv4-addr" | "ipv6-addr"
            ),
        }
    }
    match expr {
        ObsExpr::Simple(c) => cmp(c),
        ObsExpr::And(a, b) | ObsExpr::Or(a, b) | ObsExpr::FollowedBy(a, b) => {
            names_flow_objects(a) || names_flow_objects(b)
        }
        ObsExpr::Within(e, _)
        | ObsExpr::Repeats(e, _)
        | ObsExpr::StartStop(e, _, _)
        | ObsExpr::Group(e) => names_flow_objects(e),
    }
}

/// The addresses of a pattern that is nothing but `[x:value = 'ip' OR ...]` over
/// `ipv4-addr`, `ipv6-addr` or `network-traffic:(src|dst)_ref.value`; `None` for any other.
fn address_set(pattern: &Pattern) -> Option<Vec<IpAddr>> {
    let ObsExpr::Simple(cmp) = &pattern.root else {
        return None;
    };
    let mut out = Vec::new();
    collect(cmp, &mut out)?;
    Some(out)
}

fn collect(cmp: &CmpExpr, out: &mut Vec<IpAddr>) -> Option<()> {
    match cmp {
        CmpExpr::Or(a, b) => {
            collect(a, out)?;
            collect(b, out)
        }
        CmpExpr::Group(inner) => collect(inner, out),
        CmpExpr::Test(test) if !test.negated => {
            let Op::Eq(Literal::Str(value)) = &test.op else {
                return None;
            };
            let keys: Vec<&str> = test
                .path
                .steps
                .iter()
                .map(|s| match s {
                    PathStep::Key(k) => Some(k.as_str()),
                    _ => None,
                })
                .collect::<Option<_>>()?;
            let addressy = matches!(
                (test.path.object_type.as_str(), keys.as_slice()),
                ("ipv4-addr" | "ipv6-addr", ["value"])
                    | ("network-traffic", ["src_ref" | "dst_ref", "value"])
            );
            if !addressy || value.contains('/') {
                return None;
            }
            let ip: IpAddr = value.parse().ok()?;
            out.push(ip);
            Some(())
        }
        _ => None,
    }
}

fn ip_object(id: &str, ip: IpAddr) -> serde_json::Value {
    let kind = if ip.is_ipv4() {
        "ipv4-addr"
    } else {
        "ipv6-addr"
    };
    json!({"type": kind, "id": format!("{kind}--{id}"), "value": ip.to_string()})
}

/// The STIX view of a flow: a `network-traffic` object and its two address objects.
pub(crate) fn flow_observation(event: &Event, flow: &FlowRecord) -> Observation {
    let src = ip_object("src", flow.src);
    let dst = ip_object("dst", flow.dst);
    let mut protocols = vec![if flow.src.is_ipv4() { "ipv4" } else { "ipv6" }.to_owned()];
    protocols.push(flow.protocol_name());
    let traffic = json!({
        "type": "network-traffic",
        "id": "network-traffic--flow",
        "src_ref": src["id"],
        "dst_ref": dst["id"],
        "src_port": flow.src_port,
        "dst_port": flow.dst_port,
        "protocols": protocols,
        "src_byte_count": flow.bytes,
        "src_packets": flow.packets,
    });
    let us = event.ts.as_millis().saturating_mul(1000);
    Observation::new(
        "observed-data--flow",
        flow.start.as_millis().saturating_mul(1000).min(us),
        flow.end.as_millis().saturating_mul(1000).max(us),
        1,
        vec![Arc::new(traffic), Arc::new(src), Arc::new(dst)],
    )
}

pub(crate) fn match_flow(
    engine: &mut Engine,
    event: &Event,
    flow: &FlowRecord,
    device: Option<u32>,
    out: &mut Vec<Alert>,
) {
    let hits = engine.indicators.hits(
        &[flow.src, flow.dst],
        || Some(flow_observation(event, flow)),
        event.ts,
    );
    if hits.is_empty() {
        return;
    }
    let summary = flow.summary();
    for slot in hits {
        let which = [flow.src, flow.dst].into_iter().find(|ip| {
            engine
                .indicators
                .by_address
                .get(ip)
                .is_some_and(|l| l.contains(&slot))
        });
        raise(engine, event, slot, device, which, &summary, out);
    }
}

pub(crate) fn match_client(
    engine: &mut Engine,
    event: &Event,
    ip: IpAddr,
    summary: &str,
    out: &mut Vec<Alert>,
) {
    let hits = engine.indicators.hits(&[ip], || None, event.ts);
    let device = event.device_id.as_ref().and_then(|d| engine.devices.get(d));
    for slot in hits {
        raise(engine, event, slot, device, Some(ip), summary, out);
    }
}

fn raise(
    engine: &mut Engine,
    event: &Event,
    slot: u32,
    device: Option<u32>,
    ip: Option<IpAddr>,
    summary: &str,
    out: &mut Vec<Alert>,
) {
    let Some(entry) = engine.indicators.entries[slot as usize].as_ref() else {
        return;
    };
    let (id, name, source, pattern) = (
        entry.id.to_string(),
        entry.name.to_string(),
        entry.source.to_string(),
        entry.pattern.to_string(),
    );
    let device_id = device.map(|d| engine.devices.state(d).id.clone());
    let zone = device.map(|d| engine.devices.zone_of_device(d).to_owned());
    let subject = device_id
        .as_ref()
        .map(|d| d.to_string())
        .or_else(|| ip.map(|i| i.to_string()))
        .unwrap_or_else(|| "the city".into());
    let shared = if source == "local" {
        "written by the city's analysts".to_owned()
    } else {
        format!("shared by {source}")
    };
    let draft = AlertDraft {
        rule: "intel.indicator",
        key: format!("{id}/{subject}"),
        severity: Severity::High,
        device_id,
        zone,
        source: ip.map(|i| i.to_string()),
        title: format!("indicator {name:?} ({shared}) seen at {subject}"),
        explanation: format!(
            "{summary} matches threat indicator {name:?} ({id}, {shared}): {pattern}. A known \
             threat is in contact with the city. Confirm the sighting, contain the device, and \
             tell the partner: a sighting helps them too."
        ),
    };
    engine.raise(draft, event, summary.to_owned(), out);
}

//! Flow records as an input: NetFlow v5, NetFlow v9 and IPFIX (RFC 7011) over UDP, and
//! JSON lines (which `app` serves over HTTP).
//!
//! The decoders are pure: [`Collector`] takes datagrams, the exporter's address and the
//! time and returns `model::FlowRecord`s, keeping the template cache and the buffer of data
//! sets that wait for their template, both bounded and expiring; [`json`] decodes lines.
//! What cannot be decoded is counted by [`DropReason`] and dropped, never panics.
//! [`FlowListener`] is the thin tokio task around the collector; [`to_event`] matches
//! devices by address through the [`AddressBook`] that `app` implements.
//! See `crates/ingest/ARCHITECTURE.md` for the supported information elements.

use std::net::IpAddr;

use model::{DeviceId, Event, EventKind, FlowRecord, Sector};

mod collector;
pub mod config;
pub mod encode;
pub mod json;
mod listener;
pub mod stats;
pub mod template;
mod v5;

#[cfg(test)]
mod tests;

pub use self::collector::{Collector, Limits};
pub use self::config::FlowConfig;
pub use self::listener::{FlowHandle, FlowListener};
pub use self::stats::{DropReason, FlowMetrics, FlowStats};

/// Finds the registered device that uses an IP address; `app` implements it over its
/// device directory, so registry changes apply to the next flow.
pub trait AddressBook: Send + Sync + 'static {
    fn device_at(&self, ip: IpAddr) -> Option<(DeviceId, Sector)>;
}

/// Turns a flow record into an event: the event's device is the one owning `src`, else the
/// one owning `dst`; `peer_device` is the device at the other end, if any. Its time is the
/// flow's end (when the exporter knew all of it).
pub fn to_event(mut record: FlowRecord, book: &dyn AddressBook) -> Event {
    let (src, dst) = (record.src.to_canonical(), record.dst.to_canonical());
    let (owner, peer) = match (book.device_at(src), book.device_at(dst)) {
        (Some(src), dst) => (Some(src), dst),
        (None, dst) => (dst, None),
    };
    record.peer_device = peer.map(|(id, _)| id);
    let (device_id, sector) = match owner {
        Some((id, sector)) => (Some(id), Some(sector)),
        None => (None, None),
    };
    Event {
        ts: record.end,
        device_id,
        sector,
        kind: EventKind::Flow(record),
    }
}

/// Errors starting the flow listener.
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    #[error("{0:?} is not a socket address")]
    Address(String),
    #[error("cannot bind udp {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

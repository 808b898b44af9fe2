//! Broker counters: atomics the platform reads for `/metrics`, and the per-burst deltas a
//! connection accumulates before adding them in one go.

use std::sync::atomic::{AtomicU64, Ordering};

/// The broker's counters. Read them with [`BrokerMetrics::snapshot`].
#[derive(Debug, Default)]
pub struct BrokerMetrics {
    pub connections_current: AtomicU64,
    pub connects_accepted: AtomicU64,
    pub connects_refused: AtomicU64,
    pub auth_failures: AtomicU64,
    pub messages_received: AtomicU64,
    pub bytes_received: AtomicU64,
    /// Payloads that did not decode as telemetry (`payload_invalid`).
    pub decode_errors: AtomicU64,
    pub publish_denied: AtomicU64,
    pub subscribe_denied: AtomicU64,
    /// Messages dropped: full outbound queues, full retained store, oversized payloads.
    pub dropped: AtomicU64,
    pub malformed_packets: AtomicU64,
    /// Security events not emitted because a flood was aggregated into a summary.
    pub events_suppressed: AtomicU64,
    /// Publishes dropped because their device is over its rate limit.
    pub rate_limited: AtomicU64,
    /// Publishes refused because the platform could not take events (an outage).
    pub refused_unavailable: AtomicU64,
}

/// A plain copy of [`BrokerMetrics`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    pub connections_current: u64,
    pub connects_accepted: u64,
    pub connects_refused: u64,
    pub auth_failures: u64,
    pub messages_received: u64,
    pub bytes_received: u64,
    pub decode_errors: u64,
    pub publish_denied: u64,
    pub subscribe_denied: u64,
    pub dropped: u64,
    pub malformed_packets: u64,
    pub events_suppressed: u64,
    pub rate_limited: u64,
    pub refused_unavailable: u64,
}

/// Counter deltas from one burst of one connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub connects_accepted: u64,
    pub connects_refused: u64,
    pub auth_failures: u64,
    pub messages_received: u64,
    pub bytes_received: u64,
    pub decode_errors: u64,
    pub publish_denied: u64,
    pub subscribe_denied: u64,
    pub dropped: u64,
    pub malformed_packets: u64,
    pub events_suppressed: u64,
    pub rate_limited: u64,
    pub refused_unavailable: u64,
}

impl BrokerMetrics {
    pub fn snapshot(&self) -> MetricsSnapshot {
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MetricsSnapshot {
            connections_current: l(&self.connections_current),
            connects_accepted: l(&self.connects_accepted),
            connects_refused: l(&self.connects_refused),
            auth_failures: l(&self.auth_failures),
            messages_received: l(&self.messages_received),
            bytes_received: l(&self.bytes_received),
            decode_errors: l(&self.decode_errors),
            publish_denied: l(&self.publish_denied),
            subscribe_denied: l(&self.subscribe_denied),
            dropped: l(&self.dropped),
            malformed_packets: l(&self.malformed_packets),
            events_suppressed: l(&self.events_suppressed),
            rate_limited: l(&self.rate_limited),
            refused_unavailable: l(&self.refused_unavailable),
        }
    }

    /// Adds a connection's deltas (non-zero ones only, to spare shared cache lines).
    pub fn add(&self, s: &Stats) {
        let add = |c: &AtomicU64, v: u64| {
            if v != 0 {
                c.fetch_add(v, Ordering::Relaxed);
            }
        };
        add(&self.connects_accepted, s.connects_accepted);
        add(&self.connects_refused, s.connects_refused);
        add(&self.auth_failures, s.auth_failures);
        add(&self.messages_received, s.messages_received);
        add(&self.bytes_received, s.bytes_received);
        add(&self.decode_errors, s.decode_errors);
        add(&self.publish_denied, s.publish_denied);
        add(&self.subscribe_denied, s.subscribe_denied);
        add(&self.dropped, s.dropped);
        add(&self.malformed_packets, s.malformed_packets);
        add(&self.events_suppressed, s.events_suppressed);
        add(&self.rate_limited, s.rate_limited);
        add(&self.refused_unavailable, s.refused_unavailable);
    }
}

//! Outages of the platform's peers (NATS, PostgreSQL), issue 9: the bounded buffer between
//! the ingest side and the bus, and the health that `/readyz`, `/api/v1/status` and
//! `/metrics` report.
//!
//! ```text
//! broker, flow collector, POST /api/v1/flows --SpoolSink--> bus (NATS)
//!                                                 | bus unreachable or refusing
//!                                                 v
//!                                 Spool (at most [bus] buffer_messages events, in order)
//!                                                 | drained by one task, backing off to 5 s
//!                                                 v
//!                                                bus
//! ```
//!
//! An event the sink took (a QoS 1 publish the broker then acknowledges) is on the bus or
//! in the spool; past the bound the sink stops admitting (`EventSink::admits`), so the
//! broker refuses publishes (MQTT 5: 0x97; 3.1.1: the connection is closed), the UDP flow
//! listener drops and counts, and the HTTP intake answers 503 with `Retry-After`. The
//! bound is checked when a burst is admitted, so it can be passed by at most one read burst
//! per connection. The spool is memory: a process that dies loses what it holds (its
//! senders were acknowledged; this is the gap the bound limits).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bus::{Bus, Message};
use ingest::mqtt::{EventSink, SinkClosed};
use model::Event;
use store::Store;
use tokio::sync::{Notify, watch};

use crate::platform::Counters;

/// How many buffered events one drain publish carries.
const DRAIN_CHUNK: usize = 4096;
/// The longest pause between two attempts to reach a peer that is down.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Events waiting for the bus while it cannot take them.
pub struct Spool {
    bus: Arc<dyn Bus>,
    counters: Arc<Counters>,
    queue: parking_lot::Mutex<VecDeque<Event>>,
    capacity: usize,
    /// Publishes are failing (set by a refused publish, cleared by a successful drain).
    failing: AtomicBool,
    wake: Notify,
    dropped: AtomicU64,
}

impl Spool {
    pub fn new(bus: Arc<dyn Bus>, counters: Arc<Counters>, capacity: usize) -> Arc<Spool> {
        Arc::new(Spool {
            bus,
            counters,
            queue: parking_lot::Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            failing: AtomicBool::new(false),
            wake: Notify::new(),
            dropped: AtomicU64::new(0),
        })
    }

    /// Events held now.
    pub fn len(&self) -> usize {
        self.queue.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.lock().is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Whether the bus takes events (connected and not refusing them).
    pub fn bus_up(&self) -> bool {
        self.bus.is_available() && !self.failing.load(Ordering::Acquire)
    }

    fn mark_failing(&self, error: &bus::Error) {
        if !self.failing.swap(true, Ordering::AcqRel) {
            tracing::warn!(error = %error, buffer_messages = self.capacity, "the bus does not take events; buffering them");
        }
    }

    fn enqueue(&self, mut events: Vec<Event>) {
        {
            let mut queue = self.queue.lock();
            // Publishes are refused at the bound, but connects and disconnects still make
            // security events; past twice the bound those are dropped (and counted), so
            // connection churn during an outage cannot grow the buffer without limit.
            // Nothing dropped here was acknowledged to anyone.
            if queue.len() + events.len() > self.capacity.saturating_mul(2) {
                let before = events.len();
                events.retain(|e| !matches!(e.kind, model::EventKind::Security(_)));
                let dropped = (before - events.len()) as u64;
                if dropped > 0 && self.dropped.fetch_add(dropped, Ordering::Relaxed) == 0 {
                    tracing::warn!(
                        buffer_messages = self.capacity,
                        "the bus buffer is over twice its bound; dropping security events until it drains"
                    );
                }
            }
            queue.extend(events);
        }
        self.wake.notify_one();
    }

    /// Security events dropped because the buffer was over twice its bound.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Publishes what is held, in order, until the bus takes it; runs until the bus is
    /// closed (after [`Spool::flush`] at shutdown) or the task is aborted.
    pub async fn drain(self: Arc<Spool>) {
        let mut delay = Duration::from_millis(100);
        loop {
            let chunk: Vec<Event> = self
                .queue
                .lock()
                .iter()
                .take(DRAIN_CHUNK)
                .cloned()
                .collect();
            if chunk.is_empty() {
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                continue;
            }
            if !self.bus.is_available() {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_BACKOFF);
                continue;
            }
            let n = chunk.len();
            match self
                .bus
                .publish(chunk.into_iter().map(Message::Event).collect())
                .await
            {
                Ok(()) => {
                    let left = {
                        let mut queue = self.queue.lock();
                        queue.drain(..n);
                        queue.len()
                    };
                    self.counters
                        .events_published
                        .fetch_add(n as u64, Ordering::Relaxed);
                    delay = Duration::from_millis(100);
                    if left == 0 && self.failing.swap(false, Ordering::AcqRel) {
                        tracing::info!("the bus takes events again; the buffer is drained");
                    }
                }
                Err(bus::Error::Closed) => return,
                Err(e) => {
                    self.mark_failing(&e);
                    tracing::debug!(error = %e, held = self.len(), "buffered events not published yet");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Waits up to `timeout` for the spool to empty (at shutdown); returns what is left.
    pub async fn flush(&self, timeout: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = self.len();
            if left == 0 || tokio::time::Instant::now() >= deadline {
                return left;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The ingest side's hand-off to a bus that may go away: publishes directly while the bus
/// takes events, else buffers in the [`Spool`] (behind what is already buffered, so one
/// connection's events keep their order).
pub struct SpoolSink(pub Arc<Spool>);

#[async_trait]
impl EventSink for SpoolSink {
    async fn send(&self, events: Vec<Event>) -> Result<(), SinkClosed> {
        let spool = &self.0;
        if !spool.bus_up() || !spool.queue.lock().is_empty() {
            spool.enqueue(events);
            return Ok(());
        }
        let n = events.len() as u64;
        let messages = events.iter().cloned().map(Message::Event).collect();
        match spool.bus.publish(messages).await {
            Ok(()) => {
                spool
                    .counters
                    .events_published
                    .fetch_add(n, Ordering::Relaxed);
                Ok(())
            }
            Err(bus::Error::Closed) => Err(SinkClosed),
            Err(e) => {
                // Some packs may have been stored before the refusal: publishing them again
                // makes duplicates on the bus, which consumers absorb (at least once).
                spool.mark_failing(&e);
                spool.enqueue(events);
                Ok(())
            }
        }
    }

    fn admits(&self) -> bool {
        self.0.len() < self.0.capacity
    }
}

/// The bridge's hand-off to the bus: no buffer of our own, since the city's broker is one.
/// `send` returns only once the bus took the events (retrying with backoff while NATS is
/// away or refusing), and the bridge acknowledges a message to the broker only after
/// that: during an outage the broker holds what citysec has not taken (its persistent
/// sessions, up to its `max_queued_messages`), and a process killed meanwhile loses
/// nothing the broker gave it.
pub struct BridgeSink {
    pub bus: Arc<dyn Bus>,
    pub counters: Arc<Counters>,
}

#[async_trait]
impl EventSink for BridgeSink {
    async fn send(&self, events: Vec<Event>) -> Result<(), SinkClosed> {
        let n = events.len() as u64;
        let messages: Vec<Message> = events.into_iter().map(Message::Event).collect();
        let mut delay = Duration::from_millis(100);
        let mut logged = false;
        loop {
            match self.bus.publish(messages.clone()).await {
                Ok(()) => {
                    self.counters
                        .events_published
                        .fetch_add(n, Ordering::Relaxed);
                    if logged {
                        tracing::info!("the bus takes the bridge's events again");
                    }
                    return Ok(());
                }
                Err(bus::Error::Closed) => return Err(SinkClosed),
                Err(e) => {
                    // Packs stored before the refusal are published again with the rest:
                    // duplicates on the bus, which consumers absorb (at least once).
                    if !logged {
                        tracing::warn!(error = %e, "the bus does not take events; the bridge stops acknowledging the broker until it does");
                        logged = true;
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

/// Watches the store: pings it every two seconds and keeps `Counters::store_unavailable`
/// (which the writers' retries also set) true while it cannot be reached; logs once each
/// way.
pub async fn watch_store(
    store: Arc<dyn Store>,
    counters: Arc<Counters>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut interval = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = shutdown.changed() => return,
        }
        let ping = tokio::time::timeout(Duration::from_secs(10), store.ping()).await;
        let up = matches!(ping, Ok(Ok(())));
        let was_down = counters.store_unavailable.swap(!up, Ordering::AcqRel);
        match (was_down, up) {
            (false, false) => tracing::warn!(
                "the store cannot be reached; writes wait and intake that needs it is refused"
            ),
            (true, true) => tracing::info!("the store is reachable again"),
            _ => {}
        }
    }
}

/// The dependencies this process cannot reach right now (`bus`, `store`), for `/readyz`.
pub fn unavailable(bus: &dyn Bus, spool: Option<&Spool>, counters: &Counters) -> Vec<String> {
    let mut down = Vec::new();
    if !bus_up(bus, spool) {
        down.push("bus".to_owned());
    }
    if counters.store_unavailable.load(Ordering::Acquire) {
        down.push("store".to_owned());
    }
    down
}

pub fn bus_up(bus: &dyn Bus, spool: Option<&Spool>) -> bool {
    spool.map_or_else(|| bus.is_available(), Spool::bus_up)
}

/// Events refused in this process because the platform could not take them: MQTT publishes
/// refused by the broker, flow events dropped by the UDP listener or refused over HTTP, and
/// security events dropped past twice the buffer's bound.
pub(crate) fn refused(inner: &crate::platform::Inner) -> u64 {
    let broker = inner.broker.as_ref().map_or(0, |b| {
        b.metrics().refused_unavailable.load(Ordering::Relaxed)
    });
    let spool = inner.spool.as_ref().map_or(0, |s| s.dropped());
    broker + spool + inner.flows.refused_unavailable()
}

/// At shutdown: gives the bus until its publish timeout to take what the spool holds, and
/// says how many acknowledged events are lost if it does not.
pub(crate) async fn flush_at_shutdown(spool: &Spool) {
    let held = spool.len();
    if held == 0 {
        return;
    }
    tracing::info!(held, "publishing buffered events before stopping");
    let left = spool.flush(Duration::from_secs(30)).await;
    if left > 0 {
        tracing::error!(
            lost = left,
            "the bus did not take buffered events before shutdown; they are lost"
        );
    }
}

//! The UDP listener: one tokio task that reads datagrams, applies the per-exporter limits,
//! runs the sans-IO [`Collector`] and hands flow events to the sink in batches.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use model::Timestamp;
use parking_lot::Mutex;
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::flow::stats::{DropReason, FlowMetrics, FlowStats};
use crate::flow::{AddressBook, Collector, FlowConfig, FlowError, to_event};
use crate::mqtt::EventSink;

/// Datagrams read before their events are handed over as one batch.
const MAX_BATCH_DATAGRAMS: usize = 256;

/// Starts the flow listener.
pub struct FlowListener;

/// A running flow listener.
pub struct FlowHandle {
    local_addr: SocketAddr,
    metrics: Arc<FlowMetrics>,
    shutdown: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Per-exporter admission: the allowlist, the exporter limit and a token bucket each.
struct Admission {
    allowed: Vec<IpAddr>,
    max_exporters: usize,
    rate: f64,
    buckets: HashMap<IpAddr, Bucket>,
}

impl Admission {
    fn admit(&mut self, ip: IpAddr, now: Instant) -> Result<(), DropReason> {
        if !self.allowed.is_empty() && !self.allowed.contains(&ip) {
            return Err(DropReason::ExporterRefused);
        }
        if !self.buckets.contains_key(&ip) && self.buckets.len() >= self.max_exporters {
            // Forget exporters idle for a minute before refusing a new one.
            self.buckets
                .retain(|_, b| now.duration_since(b.at) < Duration::from_secs(60));
            if self.buckets.len() >= self.max_exporters {
                return Err(DropReason::ExporterLimit);
            }
        }
        let burst = self.rate * 2.0;
        let bucket = self.buckets.entry(ip).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(burst);
        bucket.at = now;
        if bucket.tokens < 1.0 {
            return Err(DropReason::RateLimited);
        }
        bucket.tokens -= 1.0;
        Ok(())
    }
}

impl FlowListener {
    /// Binds the UDP socket and starts the listener task; returns at once.
    /// Must be called inside a tokio runtime. Counters go to `metrics`, which `app` shares
    /// with the HTTP JSON lines path.
    pub fn start(
        config: FlowConfig,
        book: Arc<dyn AddressBook>,
        sink: Arc<dyn EventSink>,
        metrics: Arc<FlowMetrics>,
    ) -> Result<FlowHandle, FlowError> {
        let bind_err = |source| FlowError::Bind {
            addr: config.listen.clone(),
            source,
        };
        let addr: SocketAddr = config
            .listen
            .parse()
            .map_err(|_| FlowError::Address(config.listen.clone()))?;
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )
        .map_err(bind_err)?;
        // The kernel may cap or double the size; failing to set it is not fatal.
        if let Err(err) = socket.set_recv_buffer_size(config.recv_buffer_bytes) {
            tracing::warn!(error = %err, "cannot set the flow socket's receive buffer");
        }
        socket.bind(&addr.into()).map_err(bind_err)?;
        socket.set_nonblocking(true).map_err(bind_err)?;
        let socket = UdpSocket::from_std(socket.into()).map_err(bind_err)?;
        let local_addr = socket.local_addr().map_err(bind_err)?;
        let (shutdown, stop) = watch::channel(false);
        let admission = Admission {
            allowed: config.exporters.clone(),
            max_exporters: config.max_exporters.max(1),
            rate: f64::from(config.datagrams_per_s_per_exporter.max(1)),
            buckets: HashMap::new(),
        };
        let collector = Collector::new(config.limits());
        let task = tokio::spawn(run(
            socket,
            collector,
            admission,
            book,
            sink,
            metrics.clone(),
            stop,
        ));
        tracing::info!(listen = %local_addr, "flow collector listening (netflow v5/v9, ipfix)");
        Ok(FlowHandle {
            local_addr,
            metrics,
            shutdown,
            task: Mutex::new(Some(task)),
        })
    }
}

impl FlowHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn metrics(&self) -> &Arc<FlowMetrics> {
        &self.metrics
    }

    /// Stops reading; what was already decoded is handed to the sink first.
    pub async fn shutdown(&self) {
        self.shutdown.send_replace(true);
        let task = self.task.lock().take();
        if let Some(task) = task {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

async fn run(
    socket: UdpSocket,
    mut collector: Collector,
    mut admission: Admission,
    book: Arc<dyn AddressBook>,
    sink: Arc<dyn EventSink>,
    metrics: Arc<FlowMetrics>,
    mut stop: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 65_536];
    let mut records = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let mut refused = FlowStats::default();
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            _ = tick.tick() => {
                collector.expire(Timestamp::now());
            }
            first = socket.recv_from(&mut buf) => {
                let mut next = first;
                let mut read = 0;
                loop {
                    match next {
                        Ok((n, from)) => {
                            match admission.admit(from.ip(), Instant::now()) {
                                Ok(()) => collector.decode(from, &buf[..n], Timestamp::now(), &mut records),
                                Err(reason) => {
                                    refused.datagrams += 1;
                                    refused.bytes += n as u64;
                                    refused.drop(reason);
                                }
                            }
                        }
                        Err(err) => {
                            // ICMP port-unreachable and the like surface here; keep reading.
                            tracing::debug!(error = %err, "flow socket receive error");
                        }
                    }
                    read += 1;
                    if read >= MAX_BATCH_DATAGRAMS {
                        break;
                    }
                    match socket.try_recv_from(&mut buf) {
                        Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => break,
                        other => next = other,
                    }
                }
            }
        }
        let mut stats = collector.take_stats();
        stats.merge(&refused);
        metrics.add(&stats);
        if !records.is_empty() {
            let events: Vec<model::Event> = records
                .drain(..)
                .map(|r| to_event(r, book.as_ref()))
                .collect();
            let n = events.len() as u64;
            if !sink.admits() {
                metrics
                    .refused_unavailable
                    .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                continue;
            }
            if sink.send(events).await.is_err() {
                break;
            }
            metrics
                .events
                .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

//! The tokio layer of bridge mode: per broker node one rumqttc connection (MQTT 3.1.1, clean
//! session off, manual acknowledgements) polled by one task, and one consumer task that
//! batches what the connection read, maps it to events, hands them to the sink and only
//! then acknowledges (PUBACK) each message. Reconnects with doubling backoff. Commands from
//! the platform go out through the first connected node ([`BridgeHandle::publisher`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use model::{Event, Timestamp};
use parking_lot::Mutex;
use rumqttc::{
    AsyncClient, Event as MqttEvent, EventLoop, MqttOptions, Outgoing, Packet, Publish, QoS,
    SubscribeFilter, TlsConfiguration, Transport,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::map::{self, Skip};
use super::mosquitto::LogCorrelator;
use super::{BridgeConfig, BrokerUrl, SecuritySignals};
use crate::mqtt::{DeviceDirectory, EventSink, MqttError, Publisher};

/// Mosquitto's log topic tree.
pub const MOSQUITTO_LOG_FILTER: &str = "$SYS/broker/log/#";

/// Counters of the bridge (all connections).
#[derive(Debug, Default)]
pub struct BridgeMetrics {
    /// Messages read from the brokers (device topics and log lines).
    pub messages_received: AtomicU64,
    /// Events handed to the sink.
    pub events_published: AtomicU64,
    /// Messages acknowledged to the broker.
    pub acks_sent: AtomicU64,
    /// Messages on topics that are not device topics (skipped).
    pub not_device_topic: AtomicU64,
    /// Messages on command topics (the platform's own deliveries; skipped).
    pub command_topic: AtomicU64,
    /// Messages naming no registered device, or a device in another sector (skipped).
    pub unknown_device: AtomicU64,
    /// Payloads that did not decode (skipped).
    pub decode_errors: AtomicU64,
    /// Broker log lines read, and those that were not connection messages.
    pub log_lines: AtomicU64,
    pub log_unrecognised: AtomicU64,
    /// Successful (re)connections, and connection errors.
    pub connects: AtomicU64,
    pub connection_errors: AtomicU64,
    /// Connections up now.
    pub connected: AtomicU64,
    /// Commands published to devices, and those refused because no broker was connected.
    pub commands_sent: AtomicU64,
    pub commands_unsent: AtomicU64,
}

/// One broker connection as the publisher sees it.
struct Link {
    url: String,
    client: AsyncClient,
    up: AtomicBool,
    /// Whether this connection reads the broker's log (`$SYS/broker/log/#`): exactly one
    /// process per broker should, see [`BridgeHandle::set_log_reader`].
    reads_log: AtomicBool,
}

/// Delivery to devices through the bridge connections (see [`Publisher`]).
#[derive(Clone)]
pub(crate) struct CommandPath {
    links: Arc<Vec<Arc<Link>>>,
    metrics: Arc<BridgeMetrics>,
}

impl CommandPath {
    /// Publishes through the first connected broker; 1 when queued there, 0 when none is up.
    pub(crate) fn publish(&self, topic: &str, payload: bytes::Bytes, qos: u8) -> usize {
        let qos = match qos {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            _ => QoS::ExactlyOnce,
        };
        for link in self.links.iter() {
            if link.up.load(Ordering::Acquire)
                && link
                    .client
                    .try_publish(topic, qos, false, payload.to_vec())
                    .is_ok()
            {
                self.metrics.commands_sent.fetch_add(1, Ordering::Relaxed);
                return 1;
            }
        }
        self.metrics.commands_unsent.fetch_add(1, Ordering::Relaxed);
        0
    }
}

/// Bridge mode; see the module docs of [`crate::bridge`].
pub struct Bridge;

/// Which broker logs this process reads (cheap to clone; outlives nothing: once the bridge
/// stopped, setting it changes nothing).
#[derive(Clone)]
pub struct LogReaders {
    links: Arc<Vec<Arc<Link>>>,
}

impl LogReaders {
    /// Starts or stops reading broker `index`'s log (in config order, as
    /// [`BridgeHandle::brokers`]) for security signals. Mosquitto does not
    /// share `$SYS` topics in a group, so when several ingest processes could read one
    /// broker's log, the platform gives the reading to one of them at a time (a lease) and
    /// moves it when that one dies.
    pub fn set(&self, index: usize, read: bool) {
        let Some(link) = self.links.get(index) else {
            return;
        };
        if link.reads_log.swap(read, Ordering::AcqRel) != read {
            tracing::info!(broker = %link.url, read, "mqtt bridge log reading changed");
            if link.up.load(Ordering::Acquire)
                && let Err(err) = log_subscription(link, read)
            {
                // Applied again at the next CONNACK.
                tracing::warn!(broker = %link.url, error = %err, "mqtt bridge could not change its log subscription");
            }
        }
    }
}

/// A running bridge.
pub struct BridgeHandle {
    links: Arc<Vec<Arc<Link>>>,
    metrics: Arc<BridgeMetrics>,
    stop_consumers: watch::Sender<bool>,
    stop_links: watch::Sender<bool>,
    consumers: Mutex<Vec<JoinHandle<()>>>,
    pollers: Mutex<Vec<JoinHandle<()>>>,
}

impl Bridge {
    /// Connects to every broker of `config` as `client_id` (the second and later brokers as
    /// `<client_id>-<n>`) and starts consuming; returns at once (connections are retried in
    /// the background). Must be called inside a tokio runtime.
    pub fn start(
        config: &BridgeConfig,
        client_id: &str,
        password: Option<String>,
        directory: Arc<dyn DeviceDirectory>,
        sink: Arc<dyn EventSink>,
    ) -> Result<BridgeHandle, MqttError> {
        config.validate().map_err(MqttError::Config)?;
        let tls = match &config.ca_file {
            Some(ca) => Some(tls_config(ca)?),
            None => None,
        };
        let metrics = Arc::new(BridgeMetrics::default());
        let (stop_consumers, _) = watch::channel(false);
        let (stop_links, _) = watch::channel(false);
        let mut links = Vec::new();
        let mut consumers = Vec::new();
        let mut pollers = Vec::new();
        let filters: Vec<SubscribeFilter> = config
            .subscriptions()
            .into_iter()
            .map(|path| SubscribeFilter::new(path, QoS::AtLeastOnce))
            .collect();
        let reads_log = config.security_signals == SecuritySignals::MosquittoLog;
        for (i, url) in config.brokers.iter().enumerate() {
            let parsed = BrokerUrl::parse(url).map_err(MqttError::Config)?;
            let id = if i == 0 {
                client_id.to_owned()
            } else {
                format!("{client_id}-{i}")
            };
            let mut options = MqttOptions::new(id, parsed.host.clone(), parsed.port);
            options
                .set_clean_session(false)
                .set_manual_acks(true)
                .set_keep_alive(Duration::from_secs(u64::from(config.keep_alive_s)))
                .set_max_packet_size(config.max_packet_bytes, config.max_packet_bytes)
                .set_inflight(256);
            if let Some(user) = &config.username {
                options.set_credentials(user.clone(), password.clone().unwrap_or_default());
            }
            if parsed.tls {
                let Some(tls) = &tls else {
                    return Err(MqttError::Config(format!("{url} needs ca_file")));
                };
                options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                    Arc::clone(tls),
                )));
            }
            let (client, eventloop) = AsyncClient::new(options, 16 * 1024);
            let link = Arc::new(Link {
                url: url.clone(),
                client: client.clone(),
                up: AtomicBool::new(false),
                reads_log: AtomicBool::new(reads_log),
            });
            let (tx, rx) = mpsc::unbounded_channel();
            pollers.push(tokio::spawn(poll(
                Arc::clone(&link),
                eventloop,
                filters.clone(),
                tx,
                Arc::clone(&metrics),
                stop_links.subscribe(),
                config.reconnect_max_ms,
            )));
            consumers.push(tokio::spawn(consume(
                Arc::clone(&link),
                rx,
                Arc::clone(&directory),
                Arc::clone(&sink),
                Arc::clone(&metrics),
                config.batch_max,
                stop_consumers.subscribe(),
            )));
            links.push(link);
        }
        tracing::info!(brokers = ?config.brokers, client_id, subscriptions = ?config.subscriptions(), security_signals = ?config.security_signals, "mqtt bridge started");
        Ok(BridgeHandle {
            links: Arc::new(links),
            metrics,
            stop_consumers,
            stop_links,
            consumers: Mutex::new(consumers),
            pollers: Mutex::new(pollers),
        })
    }
}

impl BridgeHandle {
    pub fn metrics(&self) -> &BridgeMetrics {
        &self.metrics
    }

    /// Whether every broker connection is up.
    pub fn connected(&self) -> bool {
        self.links.iter().all(|l| l.up.load(Ordering::Acquire))
    }

    /// The broker URLs, in config order (the indexes [`BridgeHandle::set_log_reader`] takes).
    pub fn brokers(&self) -> Vec<String> {
        self.links.iter().map(|l| l.url.clone()).collect()
    }

    /// Starts or stops reading broker `index`'s log for security signals (see
    /// [`LogReaders::set`]).
    pub fn set_log_reader(&self, index: usize, read: bool) {
        self.log_readers().set(index, read);
    }

    /// A handle that turns log reading on and off, for the task that holds the leases.
    pub fn log_readers(&self) -> LogReaders {
        LogReaders {
            links: Arc::clone(&self.links),
        }
    }

    /// Delivery to devices through the bridge (the command gateway's path in bridge mode).
    pub fn publisher(&self) -> Publisher {
        Publisher::bridge(CommandPath {
            links: Arc::clone(&self.links),
            metrics: Arc::clone(&self.metrics),
        })
    }

    /// Stops consuming: the batch in hand is handed to the sink and acknowledged, what the
    /// connections read beyond it stays unacknowledged (the broker keeps it in the session),
    /// then each connection sends DISCONNECT. Waits up to five seconds.
    pub async fn shutdown(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        self.stop_consumers.send_replace(true);
        let consumers = std::mem::take(&mut *self.consumers.lock());
        for t in consumers {
            let _ = tokio::time::timeout_at(deadline, t).await;
        }
        self.stop_links.send_replace(true);
        let pollers = std::mem::take(&mut *self.pollers.lock());
        for t in pollers {
            let _ = tokio::time::timeout_at(deadline, t).await;
        }
    }

    /// Stops at once, acknowledging nothing more and sending no DISCONNECT: what a killed
    /// process does (the broker sees the sockets close). For tests and emergencies.
    pub fn abort(&self) {
        for t in self.consumers.lock().drain(..) {
            t.abort();
        }
        for t in self.pollers.lock().drain(..) {
            t.abort();
        }
        for l in self.links.iter() {
            l.up.store(false, Ordering::Release);
        }
    }
}

impl Drop for BridgeHandle {
    fn drop(&mut self) {
        self.abort();
    }
}

/// Subscribes to the broker's log topic, or unsubscribes from it.
fn log_subscription(link: &Link, read: bool) -> Result<(), rumqttc::ClientError> {
    if read {
        link.client
            .try_subscribe(MOSQUITTO_LOG_FILTER, QoS::AtMostOnce)
    } else {
        link.client.try_unsubscribe(MOSQUITTO_LOG_FILTER)
    }
}

async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Drives one connection: (re)connects, subscribes after every CONNACK, forwards messages.
async fn poll(
    link: Arc<Link>,
    mut eventloop: EventLoop,
    filters: Vec<SubscribeFilter>,
    tx: mpsc::UnboundedSender<Publish>,
    metrics: Arc<BridgeMetrics>,
    mut stop: watch::Receiver<bool>,
    reconnect_max_ms: u64,
) {
    let min_backoff = Duration::from_millis(100);
    let max_backoff = Duration::from_millis(reconnect_max_ms);
    let mut backoff = min_backoff;
    let set_up = |up: bool| {
        let was = link.up.swap(up, Ordering::AcqRel);
        if was != up {
            if up {
                metrics.connected.fetch_add(1, Ordering::Relaxed);
            } else {
                metrics.connected.fetch_sub(1, Ordering::Relaxed);
            }
        }
    };
    loop {
        let polled = tokio::select! {
            p = eventloop.poll() => p,
            _ = stopped(&mut stop) => break,
        };
        match polled {
            Ok(MqttEvent::Incoming(Packet::ConnAck(ack))) => {
                backoff = min_backoff;
                metrics.connects.fetch_add(1, Ordering::Relaxed);
                tracing::info!(broker = %link.url, session_present = ack.session_present, "mqtt bridge connected");
                // Subscribing again is harmless with a present session and needed without.
                if let Err(err) = link.client.try_subscribe_many(filters.clone()) {
                    tracing::warn!(broker = %link.url, error = %err, "mqtt bridge could not subscribe");
                }
                // The log subscription follows `reads_log`; a persistent session may still
                // hold one from before a restart.
                if let Err(err) = log_subscription(&link, link.reads_log.load(Ordering::Acquire)) {
                    tracing::warn!(broker = %link.url, error = %err, "mqtt bridge could not change its log subscription");
                }
                set_up(true);
            }
            Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                metrics.messages_received.fetch_add(1, Ordering::Relaxed);
                // After the consumer stopped, what arrives stays unacknowledged.
                let _ = tx.send(p);
            }
            Ok(MqttEvent::Incoming(Packet::SubAck(ack))) => {
                use rumqttc::SubscribeReasonCode;
                if ack
                    .return_codes
                    .iter()
                    .any(|c| matches!(c, SubscribeReasonCode::Failure))
                {
                    tracing::error!(broker = %link.url, codes = ?ack.return_codes, "mqtt bridge subscription refused by the broker (check its ACL)");
                }
            }
            Ok(_) => {}
            Err(err) => {
                set_up(false);
                metrics.connection_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(broker = %link.url, error = %err, retry_ms = backoff.as_millis() as u64, "mqtt bridge connection failed");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stopped(&mut stop) => break,
                }
                backoff = (backoff * 2).min(max_backoff);
            }
        }
    }
    // Flush the acknowledgements already queued, then DISCONNECT (the session stays).
    if link.up.load(Ordering::Acquire) && link.client.try_disconnect().is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                match eventloop.poll().await {
                    Ok(MqttEvent::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
    }
    set_up(false);
}

/// Maps, hands to the sink, then acknowledges, one batch at a time.
async fn consume(
    link: Arc<Link>,
    mut rx: mpsc::UnboundedReceiver<Publish>,
    directory: Arc<dyn DeviceDirectory>,
    sink: Arc<dyn EventSink>,
    metrics: Arc<BridgeMetrics>,
    batch_max: usize,
    mut stop: watch::Receiver<bool>,
) {
    let mut log = LogCorrelator::new();
    let mut batch: Vec<Publish> = Vec::with_capacity(batch_max);
    loop {
        let first = tokio::select! {
            biased;
            _ = stopped(&mut stop) => break,
            p = rx.recv() => match p {
                Some(p) => p,
                None => break,
            },
        };
        batch.push(first);
        while batch.len() < batch_max {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let now = Timestamp::now();
        let mut events = Vec::with_capacity(batch.len());
        for p in &batch {
            if let Some(ev) = to_event(p, now, directory.as_ref(), &mut log, &metrics) {
                events.push(ev);
            }
        }
        if !events.is_empty() {
            let n = events.len() as u64;
            if sink.send(events).await.is_err() {
                // Unacknowledged: the broker delivers them again (to another member).
                tracing::warn!(broker = %link.url, "event sink closed; mqtt bridge stops consuming");
                break;
            }
            metrics.events_published.fetch_add(n, Ordering::Relaxed);
        }
        for p in batch.drain(..) {
            if p.qos == QoS::AtMostOnce {
                continue;
            }
            if link.client.ack(&p).await.is_err() {
                return;
            }
            metrics.acks_sent.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One message to its event (device payload or broker log line), counting what is skipped.
fn to_event(
    p: &Publish,
    now: Timestamp,
    directory: &dyn DeviceDirectory,
    log: &mut LogCorrelator,
    metrics: &BridgeMetrics,
) -> Option<Event> {
    if p.topic.starts_with("$SYS/broker/log/") {
        metrics.log_lines.fetch_add(1, Ordering::Relaxed);
        let text = String::from_utf8_lossy(&p.payload);
        let before = log.unrecognised;
        let signal = log.on_line(&text, now);
        if log.unrecognised != before {
            metrics.log_unrecognised.fetch_add(1, Ordering::Relaxed);
        }
        let mut signal = signal?;
        if let Some(device) = signal.claimed.as_deref().and_then(|id| directory.get(id)) {
            signal.event.device_id = Some(device.id.clone());
            signal.event.sector = Some(device.sector);
        }
        return Some(signal.event);
    }
    let device = map::device_of(&p.topic).and_then(|id| directory.get(id));
    match map::to_event(&p.topic, &p.payload, device.as_deref(), now) {
        Ok(ev) => Some(ev),
        Err(skip) => {
            let counter = match skip {
                Skip::NotDeviceTopic => &metrics.not_device_topic,
                Skip::Command => &metrics.command_topic,
                Skip::UnknownDevice | Skip::WrongSector => &metrics.unknown_device,
                Skip::Payload(_) => &metrics.decode_errors,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(topic = %p.topic, reason = %skip, "mqtt bridge skipped a message");
            None
        }
    }
}

fn tls_config(ca: &std::path::Path) -> Result<Arc<rustls::ClientConfig>, MqttError> {
    let read = |source| MqttError::Read {
        path: ca.to_owned(),
        source,
    };
    let file = std::fs::File::open(ca).map_err(read)?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut std::io::BufReader::new(file)) {
        roots
            .add(cert.map_err(read)?)
            .map_err(|e| MqttError::Tls(format!("ca_file {}: {e}", ca.display())))?;
    }
    if roots.is_empty() {
        return Err(MqttError::Tls(format!(
            "ca_file {} holds no certificate",
            ca.display()
        )));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| MqttError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

//! The tokio layer around [`Connection`]: listeners, per-IP connect limits, one task per
//! connection, the session registry (client id -> live connection), cmd-topic routing for
//! platform deliveries, the bounded retained store, and shutdown.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use model::{Event, EventKind, SecurityEvent, SecurityEventKind, Timestamp};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use super::config::{ClientIdConflict, MqttConfig};
use super::limit::{Bucket as LimitBucket, DeviceLimit};
use super::metrics::BrokerMetrics;
use super::proto::DisconnectReason;
use super::session::{Claim, Connection, Context, EventBudget, Limits, Output, TlsIdentity};
use super::{DeviceDirectory, EventSink, MqttError, tls};
use crate::credentials;

/// Refused-connect events beyond this many per second are aggregated into one summary.
const REFUSAL_EVENTS_PER_S: u32 = 20;

/// A message for one connection's task.
enum Outbound {
    Publish {
        topic: Arc<str>,
        payload: Bytes,
        qos: u8,
    },
    Kick {
        reason: DisconnectReason,
        text: String,
    },
    /// Apply (or lift, `None`) the device's rate limit on this session.
    Limit(Option<DeviceLimit>),
}

struct SessionEntry {
    conn_id: u64,
    peer: SocketAddr,
    tx: mpsc::Sender<Outbound>,
    kick: mpsc::UnboundedSender<Outbound>,
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

struct Shared {
    config: MqttConfig,
    limits: Limits,
    directory: Arc<dyn DeviceDirectory>,
    sink: Arc<dyn EventSink>,
    metrics: BrokerMetrics,
    sessions: Mutex<HashMap<String, SessionEntry>>,
    /// cmd topic -> client ids subscribed to it.
    routes: Mutex<HashMap<String, Vec<String>>>,
    retained: Mutex<HashMap<String, Bytes>>,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
    /// Per-device publish limits (device id -> bucket): read at each connect, written back
    /// when a session ends, so a device's reconnects share one bucket.
    device_limits: Mutex<HashMap<String, LimitBucket>>,
    refusals: Mutex<EventBudget>,
    /// Events raised outside connections (refused connects), forwarded by one task.
    side_events: mpsc::Sender<Event>,
    next_conn_id: AtomicU64,
    shutdown: watch::Sender<bool>,
    idle: Notify,
}

/// The embedded broker.
pub struct Broker;

/// A running broker.
pub struct BrokerHandle {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    tls_local_addr: Option<SocketAddr>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Broker {
    /// Binds the listeners and starts serving; returns at once.
    /// Must be called inside a tokio runtime.
    pub fn start(
        config: MqttConfig,
        directory: Arc<dyn DeviceDirectory>,
        sink: Arc<dyn EventSink>,
    ) -> Result<BrokerHandle, MqttError> {
        let listener = bind(&config.listen)?;
        let local_addr = listener.local_addr().map_err(|source| MqttError::Bind {
            addr: config.listen.clone(),
            source,
        })?;
        let tls = match &config.tls_listen {
            Some(addr) => {
                let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) else {
                    return Err(MqttError::Tls(
                        "tls_listen needs tls_cert and tls_key".to_owned(),
                    ));
                };
                let server = tls::server_config(cert, key, config.client_ca.as_deref())?;
                let l = bind(addr)?;
                let a = l.local_addr().map_err(|source| MqttError::Bind {
                    addr: addr.clone(),
                    source,
                })?;
                Some((l, a, TlsAcceptor::from(server)))
            }
            None => None,
        };
        let (side_tx, side_rx) = mpsc::channel(1024);
        let limits = Limits {
            max_payload_bytes: config.max_payload_bytes,
            max_keep_alive_s: config.max_keep_alive_s.max(1),
            max_inflight: config.outbound_queue.max(1),
        };
        let shared = Arc::new(Shared {
            limits,
            directory,
            sink,
            metrics: BrokerMetrics::default(),
            sessions: Mutex::new(HashMap::new()),
            routes: Mutex::new(HashMap::new()),
            retained: Mutex::new(HashMap::new()),
            buckets: Mutex::new(HashMap::new()),
            device_limits: Mutex::new(HashMap::new()),
            refusals: Mutex::new(EventBudget::default()),
            side_events: side_tx,
            next_conn_id: AtomicU64::new(1),
            shutdown: watch::Sender::new(false),
            idle: Notify::new(),
            config,
        });
        let mut tasks = vec![
            tokio::spawn(forward_side_events(Arc::clone(&shared), side_rx)),
            tokio::spawn(accept_loop(Arc::clone(&shared), listener, None)),
        ];
        let tls_local_addr = match tls {
            Some((l, a, acceptor)) => {
                tasks.push(tokio::spawn(accept_loop(
                    Arc::clone(&shared),
                    l,
                    Some(acceptor),
                )));
                Some(a)
            }
            None => None,
        };
        tracing::info!(listen = %local_addr, tls_listen = ?tls_local_addr, "mqtt broker listening");
        Ok(BrokerHandle {
            shared,
            local_addr,
            tls_local_addr,
            tasks: Mutex::new(tasks),
        })
    }
}

impl BrokerHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn tls_local_addr(&self) -> Option<SocketAddr> {
        self.tls_local_addr
    }

    pub fn metrics(&self) -> &BrokerMetrics {
        &self.shared.metrics
    }

    /// Delivers a message from the platform to every client subscribed to `topic` (exact
    /// match; devices can only subscribe to their own cmd topic). Returns how many sessions
    /// it was queued for; full queues drop it (counted in `dropped`).
    pub fn publish(&self, topic: &str, payload: impl Into<Bytes>, qos: u8) -> usize {
        self.publisher().publish(topic, payload, qos)
    }

    /// A cloneable handle that can publish to devices (the command gateway's delivery path)
    /// without owning the broker.
    pub fn publisher(&self) -> Publisher {
        Publisher {
            path: Path::Embedded(Arc::clone(&self.shared)),
        }
    }

    /// Closes the live session of device `id` (e.g. after revocation). Returns whether
    /// there was one.
    pub fn disconnect_device(&self, id: &str, reason: &str) -> bool {
        let sessions = self.shared.sessions.lock();
        match sessions.get(id) {
            Some(entry) => entry
                .kick
                .send(Outbound::Kick {
                    reason: DisconnectReason::Administrative,
                    text: reason.to_owned(),
                })
                .is_ok(),
            None => false,
        }
    }

    /// Puts a rate limit on device `id`: its live session enforces it at once, its later
    /// connections until `limit.until`. Replaces an earlier limit. Emits a
    /// `rate_limit_changed` event. Returns whether a live session took it.
    pub fn set_rate_limit(&self, id: &str, limit: DeviceLimit) -> bool {
        let now = Timestamp::now();
        {
            let mut limits = self.shared.device_limits.lock();
            limits.retain(|_, b| b.limit.active(now));
            limits.insert(id.to_owned(), LimitBucket::new(limit, now));
        }
        let live = self.send_limit(id, Some(limit));
        self.limit_event(
            id,
            now,
            format!(
                "rate limit applied ({limit}); {} live session(s)",
                u8::from(live)
            ),
        );
        live
    }

    /// Puts back limits kept across a restart (no event: they were announced when set).
    pub fn restore_rate_limits(&self, limits: Vec<(String, DeviceLimit)>) {
        let now = Timestamp::now();
        for (id, limit) in limits {
            self.shared
                .device_limits
                .lock()
                .insert(id.clone(), LimitBucket::new(limit, now));
            self.send_limit(&id, Some(limit));
        }
    }

    /// Lifts device `id`'s rate limit (live session and later connections). Returns the
    /// limit that held, if one did.
    pub fn lift_rate_limit(&self, id: &str) -> Option<DeviceLimit> {
        let now = Timestamp::now();
        let lifted = self
            .shared
            .device_limits
            .lock()
            .remove(id)
            .map(|b| b.limit)
            .filter(|l| l.active(now));
        self.send_limit(id, None);
        if let Some(limit) = lifted {
            self.limit_event(id, now, format!("rate limit lifted (was {limit})"));
        }
        lifted
    }

    /// The rate limits that hold now, by device id.
    pub fn rate_limits(&self) -> Vec<(String, DeviceLimit)> {
        let now = Timestamp::now();
        let mut limits = self.shared.device_limits.lock();
        limits.retain(|_, b| b.limit.active(now));
        let mut list: Vec<_> = limits.iter().map(|(k, b)| (k.clone(), b.limit)).collect();
        list.sort_by(|a, b| a.0.cmp(&b.0));
        list
    }

    fn send_limit(&self, id: &str, limit: Option<DeviceLimit>) -> bool {
        let sessions = self.shared.sessions.lock();
        sessions
            .get(id)
            .is_some_and(|entry| entry.kick.send(Outbound::Limit(limit)).is_ok())
    }

    fn limit_event(&self, id: &str, now: Timestamp, reason: String) {
        let device = self.shared.directory.get(id);
        let event = Event {
            ts: now,
            device_id: device.as_ref().map(|d| d.id.clone()),
            sector: device.as_ref().map(|d| d.sector),
            kind: EventKind::Security(SecurityEvent {
                action: SecurityEventKind::RateLimitChanged,
                client_id: None,
                username: None,
                peer: None,
                topic: None,
                reason: Some(reason),
            }),
        };
        if self.shared.side_events.try_send(event).is_err() {
            self.shared
                .metrics
                .events_suppressed
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Stops accepting, closes every session (their pending events are flushed to the
    /// sink first), and waits up to five seconds for them to finish.
    pub async fn shutdown(&self) {
        self.shared.shutdown.send_replace(true);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let notified = self.shared.idle.notified();
            if self
                .shared
                .metrics
                .connections_current
                .load(Ordering::Acquire)
                == 0
            {
                break;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                tracing::warn!("mqtt shutdown timed out with sessions still open");
                break;
            }
        }
        let tasks = std::mem::take(&mut *self.tasks.lock());
        for t in tasks {
            let _ = tokio::time::timeout_at(deadline, t).await;
        }
    }
}

/// Publishes from the platform to devices; see [`BrokerHandle::publisher`] and, in bridge
/// mode, [`crate::bridge::BridgeHandle::publisher`].
#[derive(Clone)]
pub struct Publisher {
    path: Path,
}

#[derive(Clone)]
enum Path {
    Embedded(Arc<Shared>),
    Bridge(crate::bridge::client::CommandPath),
}

impl Publisher {
    pub(crate) fn bridge(path: crate::bridge::client::CommandPath) -> Publisher {
        Publisher {
            path: Path::Bridge(path),
        }
    }

    /// Delivers a message from the platform to every client subscribed to `topic` (exact
    /// match; devices can only subscribe to their own cmd topic). Returns how many sessions
    /// it was queued for; full queues drop it (counted in `dropped`). In bridge mode: 1 when
    /// it was queued on a connected broker connection (the broker then routes it), else 0.
    pub fn publish(&self, topic: &str, payload: impl Into<Bytes>, qos: u8) -> usize {
        let payload = payload.into();
        let shared = match &self.path {
            Path::Embedded(shared) => shared,
            Path::Bridge(bridge) => return bridge.publish(topic, payload, qos),
        };
        let clients: Vec<String> = shared.routes.lock().get(topic).cloned().unwrap_or_default();
        if clients.is_empty() {
            return 0;
        }
        let topic: Arc<str> = Arc::from(topic);
        let sessions = shared.sessions.lock();
        let mut queued = 0;
        for client in clients {
            if let Some(entry) = sessions.get(&client) {
                let msg = Outbound::Publish {
                    topic: Arc::clone(&topic),
                    payload: payload.clone(),
                    qos,
                };
                if entry.tx.try_send(msg).is_ok() {
                    queued += 1;
                } else {
                    shared.metrics.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        queued
    }
}

/// Resolves once shutdown was requested (the watch guard is dropped before returning).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

fn bind(addr: &str) -> Result<TcpListener, MqttError> {
    let std = std::net::TcpListener::bind(addr).map_err(|source| MqttError::Bind {
        addr: addr.to_owned(),
        source,
    })?;
    std.set_nonblocking(true)
        .map_err(|source| MqttError::Bind {
            addr: addr.to_owned(),
            source,
        })?;
    TcpListener::from_std(std).map_err(|source| MqttError::Bind {
        addr: addr.to_owned(),
        source,
    })
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener, tls: Option<TlsAcceptor>) {
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stopped(&mut shutdown) => break,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(err) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %err, "mqtt accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if let Some(reason) = admit(&shared, peer.ip()) {
            refused_connect(&shared, peer, reason);
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        shared
            .metrics
            .connections_current
            .fetch_add(1, Ordering::AcqRel);
        let shared2 = Arc::clone(&shared);
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => serve(Arc::clone(&shared2), stream, peer, None).await,
                Some(acceptor) => {
                    let timeout = Duration::from_millis(shared2.config.connect_timeout_ms);
                    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls_stream)) => {
                            let identity = tls_stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|c| c.first())
                                .map(|c| tls::identity(c.as_ref()));
                            serve(Arc::clone(&shared2), tls_stream, peer, identity).await
                        }
                        Ok(Err(err)) => {
                            tracing::debug!(peer = %peer, error = %err, "tls handshake failed")
                        }
                        Err(_) => tracing::debug!(peer = %peer, "tls handshake timed out"),
                    }
                }
            }
            if shared2
                .metrics
                .connections_current
                .fetch_sub(1, Ordering::AcqRel)
                == 1
            {
                shared2.idle.notify_waiters();
            }
        });
    }
}

/// Connection-count and per-IP token-bucket checks; `Some(reason)` refuses.
fn admit(shared: &Shared, ip: IpAddr) -> Option<&'static str> {
    let current = shared.metrics.connections_current.load(Ordering::Acquire);
    if current >= shared.config.max_connections as u64 {
        return Some("max connections reached");
    }
    let rate = f64::from(shared.config.connect_rate_per_ip.max(1));
    let burst = rate * 2.0;
    let now = Instant::now();
    let mut buckets = shared.buckets.lock();
    if buckets.len() > 100_000 {
        // Bounded memory under a spread-out flood: forget full buckets.
        buckets.retain(|_, b| b.tokens + now.duration_since(b.last).as_secs_f64() * rate < burst);
    }
    let b = buckets.entry(ip).or_insert(Bucket {
        tokens: burst,
        last: now,
    });
    b.tokens = (b.tokens + now.duration_since(b.last).as_secs_f64() * rate).min(burst);
    b.last = now;
    if b.tokens >= 1.0 {
        b.tokens -= 1.0;
        None
    } else {
        Some("connect rate per ip exceeded")
    }
}

fn refused_connect(shared: &Shared, peer: SocketAddr, reason: &str) {
    shared
        .metrics
        .connects_refused
        .fetch_add(1, Ordering::Relaxed);
    let now = Timestamp::now();
    let (allowed, flushed) = shared
        .refusals
        .lock()
        .allow(now, REFUSAL_EVENTS_PER_S, 1000);
    let event = |reason: String| Event {
        ts: now,
        device_id: None,
        sector: None,
        kind: EventKind::Security(SecurityEvent {
            action: SecurityEventKind::ConnectRefused,
            client_id: None,
            username: None,
            peer: Some(peer.to_string()),
            topic: None,
            reason: Some(reason),
        }),
    };
    if flushed > 0 {
        let _ = shared.side_events.try_send(event(format!(
            "{flushed} further refused connects suppressed"
        )));
    }
    if allowed {
        tracing::debug!(peer = %peer, reason, "mqtt connect refused");
        if shared
            .side_events
            .try_send(event(reason.to_owned()))
            .is_err()
        {
            shared
                .metrics
                .events_suppressed
                .fetch_add(1, Ordering::Relaxed);
        }
    } else {
        shared
            .metrics
            .events_suppressed
            .fetch_add(1, Ordering::Relaxed);
    }
}

async fn forward_side_events(shared: Arc<Shared>, mut rx: mpsc::Receiver<Event>) {
    let mut shutdown = shared.shutdown.subscribe();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Some(ev) => {
                    let mut batch = vec![ev];
                    while let Ok(more) = rx.try_recv() {
                        batch.push(more);
                    }
                    if shared.sink.send(batch).await.is_err() {
                        break;
                    }
                }
                None => break,
            },
            _ = tick.tick() => {
                // Flush a pending summary of suppressed refusals once the flood is over.
                let n = shared.refusals.lock().take_suppressed();
                if n > 0 {
                    let ev = Event {
                        ts: Timestamp::now(),
                        device_id: None,
                        sector: None,
                        kind: EventKind::Security(SecurityEvent {
                            action: SecurityEventKind::ConnectRefused,
                            client_id: None,
                            username: None,
                            peer: None,
                            topic: None,
                            reason: Some(format!("{n} further refused connects suppressed")),
                        }),
                    };
                    if shared.sink.send(vec![ev]).await.is_err() {
                        break;
                    }
                }
            }
            _ = stopped(&mut shutdown) => {
                while let Ok(ev) = rx.try_recv() {
                    let _ = shared.sink.send(vec![ev]).await;
                }
                break;
            }
        }
    }
}

/// The [`Context`] of one connection task.
struct TaskContext<'a> {
    shared: &'a Shared,
    conn_id: u64,
    tx: mpsc::Sender<Outbound>,
    kick: mpsc::UnboundedSender<Outbound>,
    registered: Option<String>,
    subscribed: Vec<String>,
}

impl Context for TaskContext<'_> {
    fn device(&self, id: &str) -> Option<Arc<model::Device>> {
        self.shared.directory.get(id)
    }

    fn claim(&mut self, client_id: &str, peer: SocketAddr) -> Claim {
        let mut sessions = self.shared.sessions.lock();
        let result = match sessions.get(client_id) {
            None => Claim::Free,
            Some(old) => {
                let same_address = old.peer.ip() == peer.ip();
                if !same_address
                    && self.shared.config.on_client_id_conflict == ClientIdConflict::Refuse
                {
                    return Claim::Refused;
                }
                let _ = old.kick.send(Outbound::Kick {
                    reason: DisconnectReason::TakenOver,
                    text: format!("session taken over by {peer}"),
                });
                Claim::Replaced { same_address }
            }
        };
        sessions.insert(
            client_id.to_owned(),
            SessionEntry {
                conn_id: self.conn_id,
                peer,
                tx: self.tx.clone(),
                kick: self.kick.clone(),
            },
        );
        self.registered = Some(client_id.to_owned());
        result
    }

    fn subscribe(&mut self, topic: &str, _qos: u8) {
        let Some(client) = &self.registered else {
            return;
        };
        let mut routes = self.shared.routes.lock();
        let list = routes.entry(topic.to_owned()).or_default();
        if !list.contains(client) {
            list.push(client.clone());
        }
        if !self.subscribed.iter().any(|t| t == topic) {
            self.subscribed.push(topic.to_owned());
        }
    }

    fn unsubscribe(&mut self, topic: &str) {
        let Some(client) = &self.registered else {
            return;
        };
        remove_route(&mut self.shared.routes.lock(), topic, client);
        self.subscribed.retain(|t| t != topic);
    }

    fn verify_secret(&self, hash: &str, secret: &str) -> bool {
        // argon2 takes tens of milliseconds: on a multi-thread runtime, tell tokio this
        // worker blocks so its other tasks move on. Generated secrets ($sha256$) are cheap.
        let multi = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if credentials::is_slow_hash(hash) && multi {
            tokio::task::block_in_place(|| credentials::verify(hash, secret))
        } else {
            credentials::verify(hash, secret)
        }
    }

    fn rate_limit(&self, device_id: &str) -> Option<LimitBucket> {
        self.shared.device_limits.lock().get(device_id).cloned()
    }

    fn retain(&mut self, topic: &str, payload: Bytes) -> bool {
        let mut retained = self.shared.retained.lock();
        if payload.is_empty() {
            retained.remove(topic);
            return true;
        }
        if retained.len() >= self.shared.config.max_retained && !retained.contains_key(topic) {
            return false;
        }
        retained.insert(topic.to_owned(), payload);
        true
    }
}

impl TaskContext<'_> {
    /// Hands the session's bucket back to the device's entry (unless the limit was lifted
    /// or replaced meanwhile), so its next session goes on from the same state.
    fn save_limit(&self, bucket: LimitBucket) {
        let Some(client) = &self.registered else {
            return;
        };
        let mut limits = self.shared.device_limits.lock();
        if let Some(entry) = limits.get_mut(client)
            && entry.limit == bucket.limit
        {
            *entry = bucket;
        }
    }

    fn unregister(&mut self) {
        let Some(client) = self.registered.take() else {
            return;
        };
        {
            let mut routes = self.shared.routes.lock();
            for topic in self.subscribed.drain(..) {
                // Only our own route entry: a takeover session may already hold the id.
                let ours = self
                    .shared
                    .sessions
                    .lock()
                    .get(&client)
                    .is_none_or(|e| e.conn_id == self.conn_id);
                if ours {
                    remove_route(&mut routes, &topic, &client);
                }
            }
        }
        let mut sessions = self.shared.sessions.lock();
        if sessions
            .get(&client)
            .is_some_and(|e| e.conn_id == self.conn_id)
        {
            sessions.remove(&client);
        }
    }
}

fn remove_route(routes: &mut HashMap<String, Vec<String>>, topic: &str, client: &str) {
    if let Some(list) = routes.get_mut(topic) {
        list.retain(|c| c != client);
        if list.is_empty() {
            routes.remove(topic);
        }
    }
}

/// Serves one connection until it closes.
async fn serve<S>(
    shared: Arc<Shared>,
    mut stream: S,
    peer: SocketAddr,
    identity: Option<TlsIdentity>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let conn_id = shared.next_conn_id.fetch_add(1, Ordering::Relaxed);
    let (tx, mut rx) = mpsc::channel(shared.config.outbound_queue.max(1));
    let (kick_tx, mut kick_rx) = mpsc::unbounded_channel();
    let mut ctx = TaskContext {
        shared: &shared,
        conn_id,
        tx,
        kick: kick_tx,
        registered: None,
        subscribed: Vec::new(),
    };
    let mut conn = Connection::new(peer, identity, shared.limits);
    let mut out = Output::default();
    let mut shutdown = shared.shutdown.subscribe();
    let connect_timeout = Duration::from_millis(shared.config.connect_timeout_ms);
    let mut deadline = tokio::time::Instant::now() + connect_timeout;

    loop {
        tokio::select! {
            read = stream.read_buf(conn.buffer_mut()) => {
                let now = Timestamp::now();
                match read {
                    Ok(0) => conn.close(now, "connection closed by peer", false, &mut out),
                    Ok(_) => {
                        conn.set_refusing(!shared.sink.admits());
                        conn.process(now, &mut ctx, &mut out);
                        if conn.is_connected() {
                            let ka = u64::from(conn.keep_alive()) * 1500;
                            deadline = tokio::time::Instant::now() + Duration::from_millis(ka);
                        }
                    }
                    Err(err) => conn.close(now, &format!("read error: {err}"), false, &mut out),
                }
            }
            Some(msg) = rx.recv() => {
                let mut next = Some(msg);
                let mut n = 0;
                while let Some(msg) = next.take() {
                    if let Outbound::Publish { topic, payload, qos } = msg {
                        conn.deliver(&topic, payload, qos, &mut out);
                    }
                    n += 1;
                    if n < 64 {
                        next = rx.try_recv().ok();
                    }
                }
            }
            Some(msg) = kick_rx.recv() => match msg {
                Outbound::Kick { reason, text } => conn.kick(reason, &text, Timestamp::now(), &mut out),
                Outbound::Limit(limit) => conn.set_limit(limit, Timestamp::now(), &mut out),
                Outbound::Publish { .. } => {}
            },
            _ = tokio::time::sleep_until(deadline) => {
                let now = Timestamp::now();
                if conn.is_connected() {
                    conn.kick(DisconnectReason::KeepAliveTimeout, "keep-alive timeout", now, &mut out);
                } else {
                    conn.close(now, "connect timeout", false, &mut out);
                    refused_connect(&shared, peer, "connect timeout");
                }
            }
            _ = stopped(&mut shutdown) => {
                conn.kick(DisconnectReason::ShuttingDown, "broker shutting down", Timestamp::now(), &mut out);
            }
        }

        shared.metrics.add(&out.stats);
        out.stats = Default::default();
        // Events first: QoS 1 acknowledgements leave only once the sink took the messages.
        // While the sink pushes back (the bus is full because the store is down),
        // deliveries to the device still go out: a cancel must reach a siren then too.
        if !out.events.is_empty() {
            let events = std::mem::take(&mut out.events);
            let send = shared.sink.send(events);
            tokio::pin!(send);
            let mut delivered = Output::default();
            let mut write_failed = false;
            let sent = loop {
                tokio::select! {
                    biased;
                    sent = &mut send => break sent,
                    Some(msg) = rx.recv(), if !write_failed => {
                        if let Outbound::Publish { topic, payload, qos } = msg {
                            conn.deliver(&topic, payload, qos, &mut delivered);
                        }
                        shared.metrics.add(&delivered.stats);
                        delivered.stats = Default::default();
                        if !delivered.write.is_empty() {
                            if let Err(err) = stream.write_all(&delivered.write).await {
                                tracing::debug!(peer = %peer, error = %err, "mqtt write failed");
                                write_failed = true;
                            }
                            delivered.write.clear();
                        }
                    }
                }
            };
            if sent.is_err() {
                tracing::warn!(peer = %peer, "event sink closed; dropping mqtt connection");
                break;
            }
            if write_failed {
                out.write.clear();
                if !conn.is_closed() {
                    conn.close(Timestamp::now(), "write error", false, &mut out);
                    if !out.events.is_empty() {
                        let _ = shared.sink.send(std::mem::take(&mut out.events)).await;
                    }
                }
                break;
            }
        }
        if !out.write.is_empty() {
            if let Err(err) = stream.write_all(&out.write).await {
                tracing::debug!(peer = %peer, error = %err, "mqtt write failed");
                out.write.clear();
                if !conn.is_closed() {
                    conn.close(Timestamp::now(), "write error", false, &mut out);
                    if !out.events.is_empty() {
                        let _ = shared.sink.send(std::mem::take(&mut out.events)).await;
                    }
                }
                break;
            }
            out.write.clear();
        }
        if conn.is_closed() {
            break;
        }
    }
    if let Some(bucket) = conn.take_limit_bucket() {
        ctx.save_limit(bucket);
    }
    ctx.unregister();
    let _ = stream.shutdown().await;
}

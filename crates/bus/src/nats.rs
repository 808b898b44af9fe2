//! The NATS JetStream backend ([`NatsBus`], feature `nats`).
//!
//! One stream holds every subject under a prefix: bus subject `obs.telemetry` of device
//! `pump-7` is published as `<prefix>.obs.telemetry.<p>`, where `p` is [`partition_of`] the
//! device id (a stable FNV-1a hash modulo the partition count), so one device's messages
//! stay in one partition in order. Messages without a device (broker events before
//! authentication) use the partition of the empty id.
//!
//! The stream keeps messages while any consumer still has to see them (interest retention)
//! and refuses new ones past its byte limit (discard new), which `publish` turns into
//! backpressure: it retries with backoff and answers `Unavailable` only after
//! [`NatsConfig::publish_timeout_ms`]. Each message carries a `Nats-Msg-Id`, so a publish
//! retried after a lost acknowledgement is stored once.
//!
//! One `publish` packs the messages of one subject into JetStream messages of up to 256
//! bus messages or 256 KiB (a JSON array, in order), so acknowledgements are per pack, not
//! per message; consumers unpack and hand out at most what `next_batch` asks for.
//!
//! A subscription group is a durable pull consumer with explicit acknowledgement: a batch
//! is acknowledged when its consumer asks for the next one (or ends), so a consumer that
//! dies mid-batch has the batch (every pack it touched) redelivered to another member after
//! `ack_wait_ms`.
//! Delivery is at least once; consumers make processing idempotent (alerts are upserted by
//! id, the PostgreSQL store skips an event it already holds).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer, stream};
use async_trait::async_trait;
use futures_util::{FutureExt, StreamExt};
use model::{Alert, Event};
use serde::{Deserialize, Serialize};

use crate::inprocess::Pattern;
use crate::{Bus, Error, Message, Ownership, Result, Subscription, device_of, partition_of};

/// How to reach NATS and how the stream is laid out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsConfig {
    /// `nats://host:4222` (several comma-separated for a cluster).
    pub url: String,
    /// The JetStream stream's name.
    pub stream: String,
    /// The first subject token of every message.
    pub subject_prefix: String,
    /// Partitions per subject (devices are spread over them by a stable hash).
    pub partitions: u32,
    /// The stream refuses new messages beyond this many bytes (publishers wait).
    pub max_bytes: i64,
    /// A delivered message not acknowledged within this goes to another member.
    pub ack_wait_ms: u64,
    /// How long `publish` keeps retrying a full or unreachable stream before it answers
    /// `Unavailable`.
    pub publish_timeout_ms: u64,
    /// How long a shard lease (`Bus::join`) lasts without renewal: a partition of a worker
    /// that died moves to another within about this plus a fifth of it.
    pub lease_ms: u64,
    /// How many events an ingest process holds in memory while NATS does not take them
    /// (unreachable, or the stream full past `publish_timeout_ms`); past it the broker and
    /// the HTTP intake refuse new events (read by `app::outage`, not by the bus itself).
    pub buffer_messages: usize,
}

impl Default for NatsConfig {
    fn default() -> NatsConfig {
        NatsConfig {
            url: "nats://127.0.0.1:4222".to_owned(),
            stream: "CITYSEC".to_owned(),
            subject_prefix: "citysec".to_owned(),
            partitions: 16,
            max_bytes: 1 << 30,
            ack_wait_ms: 30_000,
            publish_timeout_ms: 30_000,
            lease_ms: 3_000,
            buffer_messages: 100_000,
        }
    }
}

/// The wire form of a message: JSON, tagged.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Wire {
    Event(Event),
    Alert(Alert),
}

#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
enum WireRef<'a> {
    Event(&'a Event),
    Alert(&'a Alert),
}

/// Several bus messages of one subject (one partition) as one JetStream message: a JSON
/// array, in order.
fn encode(messages: &[&Message]) -> Result<Vec<u8>> {
    let wire: Vec<WireRef<'_>> = messages
        .iter()
        .map(|m| match m {
            Message::Event(e) => WireRef::Event(e),
            Message::Alert(a) => WireRef::Alert(a),
        })
        .collect();
    serde_json::to_vec(&wire).map_err(|e| Error::Unavailable(format!("failed to encode: {e}")))
}

fn decode(payload: &[u8]) -> Option<Vec<Message>> {
    let wire: Vec<Wire> = serde_json::from_slice(payload).ok()?;
    Some(
        wire.into_iter()
            .map(|w| match w {
                Wire::Event(e) => Message::Event(e),
                Wire::Alert(a) => Message::Alert(a),
            })
            .collect(),
    )
}

/// At most this many bus messages go into one JetStream message.
const PACK_MESSAGES: usize = 256;
/// A JetStream message is closed once its payload passes this (NATS's default limit is 1 MiB).
const PACK_BYTES: usize = 256 * 1024;

/// The JetStream bus. Cloning gives another handle to the same connection.
#[derive(Clone)]
pub struct NatsBus {
    inner: Arc<Inner>,
}

struct Inner {
    config: NatsConfig,
    client: async_nats::Client,
    js: jetstream::Context,
    closed: Arc<AtomicBool>,
    /// Unique per handle: the `Nats-Msg-Id` prefix.
    publisher: String,
    /// Set when the client reconnects: publishing waits until the stream has its
    /// consumers back (see [`NatsBus::settle`]).
    reconnected: Arc<AtomicBool>,
    /// Publishes acknowledged in the last few seconds, checked after a reconnection
    /// ([`NatsBus::verify_recent`]).
    recent: std::sync::Mutex<RecentPublishes>,
    /// The id of the server the client was last seen connected to (updated after each
    /// reconnection), which acknowledgements are remembered with.
    server: std::sync::Mutex<Arc<str>>,
    /// When the connection was last lost.
    disconnected_at: Arc<std::sync::Mutex<Option<std::time::Instant>>>,
    /// Publishes made again because the restarted server no longer held them.
    republished: AtomicU64,
    /// The most consumers the stream was seen with.
    consumers: std::sync::atomic::AtomicUsize,
    seq: AtomicU64,
}

/// Publishes acknowledged this shortly before the connection was lost may be what a server
/// going down did not keep.
const AT_RISK: std::time::Duration = std::time::Duration::from_secs(1);

/// A publish the server acknowledged: where it said it stored it, and what to send again
/// if it did not keep it.
struct Recent {
    seq: u64,
    id: String,
    /// The server the client was connected to when the publish was acknowledged.
    server: Arc<str>,
    subject: String,
    payload: bytes::Bytes,
    at: std::time::Instant,
}

/// The acknowledged publishes of the last [`RECENT_AGE`], oldest first, and their payloads'
/// bytes.
#[derive(Default)]
struct RecentPublishes {
    list: std::collections::VecDeque<Recent>,
    bytes: usize,
}

impl RecentPublishes {
    fn push_back(&mut self, recent: Recent) {
        self.bytes += recent.payload.len();
        self.list.push_back(recent);
    }

    fn push_front(&mut self, recent: Recent) {
        self.bytes += recent.payload.len();
        self.list.push_front(recent);
    }

    fn pop_front(&mut self) {
        if let Some(r) = self.list.pop_front() {
            self.bytes -= r.payload.len();
        }
    }

    fn take(&mut self) -> Vec<Recent> {
        self.bytes = 0;
        self.list.drain(..).collect()
    }
}

/// How long, how many and how many bytes of acknowledged publishes are remembered for
/// [`NatsBus::verify_recent`] (the payloads are kept: a lost one is sent again).
const RECENT_AGE: Duration = Duration::from_secs(5);
const RECENT_MAX: usize = 4096;
const RECENT_BYTES: usize = 64 << 20;

impl std::fmt::Debug for NatsBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBus")
            .field("stream", &self.inner.config.stream)
            .field("partitions", &self.inner.config.partitions)
            .finish_non_exhaustive()
    }
}

fn unavailable(e: impl std::fmt::Display) -> Error {
    Error::Unavailable(e.to_string())
}

/// A consumer name from a group and a pattern (NATS names allow no `.`, `*`, `>`).
fn consumer_name(group: &str, pattern: &str) -> String {
    let mut name = String::with_capacity(group.len() + pattern.len() + 1);
    for c in group.chars().chain(['_']).chain(pattern.chars()) {
        match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' => name.push(c),
            '.' => name.push('_'),
            '*' => name.push_str("STAR"),
            '>' => name.push_str("REST"),
            _ => name.push_str(&format!("x{:x}", c as u32)),
        }
    }
    name
}

/// How [`NatsBus::open_consumer`] opens a consumer.
enum Open {
    Create(consumer::DeliverPolicy),
    Existing,
}

/// Whether a consumer lookup failed because the consumer does not exist.
fn consumer_gone(e: &jetstream::context::ConsumerInfoError) -> bool {
    match e.kind() {
        jetstream::context::ConsumerInfoErrorKind::NotFound => true,
        jetstream::context::ConsumerInfoErrorKind::JetStream(e) => {
            e.error_code() == jetstream::ErrorCode::CONSUMER_NOT_FOUND
        }
        _ => false,
    }
}

/// Creates the stream if it does not exist (at start, and when a server came back without
/// it).
async fn ensure_stream(js: &jetstream::Context, config: &NatsConfig) -> Result<stream::Stream> {
    js.get_or_create_stream(stream::Config {
        name: config.stream.clone(),
        subjects: vec![format!("{}.>", config.subject_prefix)],
        retention: stream::RetentionPolicy::Interest,
        storage: stream::StorageType::File,
        discard: stream::DiscardPolicy::New,
        max_bytes: config.max_bytes,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .map_err(|e| Error::Unavailable(format!("failed to create stream: {e}")))
}

impl NatsBus {
    /// Connects and creates the stream if it does not exist.
    pub async fn connect(config: NatsConfig) -> Result<NatsBus> {
        if config.partitions == 0 || config.partitions > 4096 {
            return Err(Error::Unavailable(format!(
                "partitions must be 1 to 4096, not {}",
                config.partitions
            )));
        }
        // The client reconnects by itself (forever, backing off up to a few seconds);
        // losing and regaining the server is logged once each way, not per message.
        let url = config.url.clone();
        let reconnected = Arc::new(AtomicBool::new(false));
        let flag = reconnected.clone();
        let disconnected_at: Arc<std::sync::Mutex<Option<std::time::Instant>>> = Arc::default();
        let lost_at = disconnected_at.clone();
        let client = async_nats::ConnectOptions::new()
            .name("citysec")
            .connection_timeout(Duration::from_secs(5))
            .event_callback(move |event| {
                let url = url.clone();
                if matches!(event, async_nats::Event::Connected) {
                    flag.store(true, Ordering::Release);
                }
                if matches!(event, async_nats::Event::Disconnected) {
                    *lost_at.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some(std::time::Instant::now());
                }
                async move {
                    match event {
                        async_nats::Event::Disconnected => {
                            tracing::warn!(url, "lost the nats connection; reconnecting");
                        }
                        async_nats::Event::Connected => {
                            tracing::info!(url, "connected to nats");
                        }
                        other => tracing::debug!(url, event = %other, "nats client event"),
                    }
                }
            })
            .connect(config.url.as_str())
            .await
            .map_err(|e| Error::Unavailable(format!("failed to connect to nats: {e}")))?;
        let js = jetstream::new(client.clone());
        let mut stream = ensure_stream(&js, &config).await?;
        let consumers = stream.info().await.map_or(0, |i| i.state.consumer_count);
        reconnected.store(false, Ordering::Release);
        let publisher = format!(
            "{:016x}",
            std::hash::BuildHasher::hash_one(
                &std::collections::hash_map::RandomState::new(),
                std::time::SystemTime::now()
            )
        );
        let server: Arc<str> = Arc::from(client.server_info().server_id.as_str());
        Ok(NatsBus {
            inner: Arc::new(Inner {
                config,
                client,
                js,
                closed: Arc::new(AtomicBool::new(false)),
                publisher,
                seq: AtomicU64::new(0),
                reconnected,
                recent: std::sync::Mutex::new(RecentPublishes::default()),
                server: std::sync::Mutex::new(server),
                disconnected_at,
                republished: AtomicU64::new(0),
                consumers: std::sync::atomic::AtomicUsize::new(consumers),
            }),
        })
    }

    /// The NATS subject of a message.
    pub fn nats_subject(&self, message: &Message) -> String {
        format!(
            "{}.{}.{}",
            self.inner.config.subject_prefix,
            message.subject(),
            partition_of(device_of(message), self.inner.config.partitions)
        )
    }

    /// The NATS filter of a bus pattern: the pattern under the prefix, plus one token for
    /// the partition unless it already ends in `>`.
    fn filter(&self, pattern: &str) -> String {
        if pattern.ends_with('>') {
            format!("{}.{pattern}", self.inner.config.subject_prefix)
        } else {
            format!("{}.{pattern}.*", self.inner.config.subject_prefix)
        }
    }

    /// The NATS subject filter of `pattern` in one partition, or in all of them; patterns
    /// ending in `>` name no partition.
    fn slice_filter(&self, pattern: &str, partition: Option<u32>) -> Result<String> {
        match partition {
            Some(p) if p >= self.inner.config.partitions || pattern.ends_with('>') => {
                Err(Error::InvalidPattern(format!("{pattern} in partition {p}")))
            }
            Some(p) => Ok(format!(
                "{}.{pattern}.{p}",
                self.inner.config.subject_prefix
            )),
            None => Ok(self.filter(pattern)),
        }
    }

    /// A durable pull consumer and its message stream: created if missing
    /// ([`Open::Create`]), or only if it still exists ([`Open::Existing`]: `None` when it
    /// is gone).
    async fn open_consumer(
        &self,
        name: &str,
        filter: &str,
        open: Open,
    ) -> Result<Option<(consumer::PullConsumer, consumer::pull::Stream)>> {
        let stream = match self.inner.js.get_stream(&self.inner.config.stream).await {
            Ok(stream) => stream,
            // A server that came back without its storage: the stream is made again.
            Err(e)
                if matches!(
                    e.kind(),
                    jetstream::context::GetStreamErrorKind::JetStream(_)
                ) =>
            {
                ensure_stream(&self.inner.js, &self.inner.config).await?
            }
            Err(e) => return Err(unavailable(e)),
        };
        let consumer: consumer::PullConsumer = match open {
            // A group that exists resumes where it left off; a new one starts where told
            // (with what is published from now on for `subscribe`, like the in-process bus).
            Open::Create(deliver_policy) => stream
                .get_or_create_consumer(
                    name,
                    consumer::pull::Config {
                        durable_name: Some(name.to_owned()),
                        filter_subject: filter.to_owned(),
                        ack_policy: consumer::AckPolicy::Explicit,
                        deliver_policy,
                        ack_wait: Duration::from_millis(self.inner.config.ack_wait_ms),
                        max_ack_pending: 65_536,
                        ..Default::default()
                    },
                )
                .await
                .map_err(unavailable)?,
            Open::Existing => match stream.consumer_info(name).await {
                Ok(_) => stream.get_consumer(name).await.map_err(unavailable)?,
                Err(e) if consumer_gone(&e) => return Ok(None),
                Err(e) => return Err(unavailable(e)),
            },
        };
        let messages = consumer
            .stream()
            .max_messages_per_batch(1_000)
            // A member that dies leaves its pull request behind; the server stops sending
            // into it when it expires, so redelivery to the others waits at most this
            // plus `ack_wait_ms`.
            .expires(PULL_EXPIRY)
            .heartbeat(PULL_EXPIRY / 2)
            .messages()
            .await
            .map_err(unavailable)?;
        Ok(Some((consumer, messages)))
    }

    /// Publishes made again because the restarted server no longer held them.
    #[cfg(test)]
    pub(crate) fn republished(&self) -> u64 {
        self.inner.republished.load(Ordering::Relaxed)
    }

    #[cfg(test)]
    pub(crate) async fn test_stream(&self) -> stream::Stream {
        self.inner
            .js
            .get_stream(&self.inner.config.stream)
            .await
            .expect("the stream exists")
    }

    /// How many JetStream messages the stream has ever stored (its last sequence number).
    #[cfg(test)]
    pub(crate) async fn stored_packs(&self) -> u64 {
        self.test_stream()
            .await
            .info()
            .await
            .expect("stream info")
            .state
            .last_sequence
    }

    /// The stream's and the consumers' state, for a failing test's message.
    #[cfg(test)]
    pub(crate) async fn debug_state(&self) -> String {
        let mut stream = self.test_stream().await;
        let info = stream.info().await.expect("stream info").clone();
        let mut out = format!("stream {:?}", info.state);
        // What is left in the stream: its sequences and the bus messages they hold.
        let mut left = Vec::new();
        for seq in info.state.first_sequence..=info.state.last_sequence {
            if let Ok(m) = stream.get_raw_message(seq).await {
                let held: Vec<String> = decode(&m.payload)
                    .unwrap_or_default()
                    .iter()
                    .map(|m| match m {
                        Message::Event(e) => format!("{}", e.ts.as_millis()),
                        Message::Alert(a) => a.id.0.clone(),
                    })
                    .collect();
                left.push(format!("{seq}:{}", held.join(",")));
            }
        }
        out.push_str(&format!("; left in the stream: [{}]", left.join(" ")));
        let names: Vec<String> =
            futures_util::StreamExt::collect::<Vec<_>>(stream.consumer_names())
                .await
                .into_iter()
                .filter_map(|n| n.ok())
                .collect();
        for name in names {
            if let Ok(mut c) = stream.get_consumer::<consumer::pull::Config>(&name).await
                && let Ok(i) = c.info().await
            {
                out.push_str(&format!(
                    "; consumer {name}: delivered {:?} ack_floor {:?} pending {} ack_pending {} redelivered {} waiting {}",
                    i.delivered, i.ack_floor, i.num_pending, i.num_ack_pending, i.num_redelivered, i.num_waiting
                ));
            }
        }
        out
    }

    /// After a reconnection, waits (until `deadline`, at most 10 s) for the stream to have
    /// as many consumers as it was seen with. A restarted server recovers its streams
    /// before their consumers, and an interest-retention stream discards at once what it
    /// stores while no consumer is interested: publishing then would be acknowledged and
    /// lost.
    async fn settle(&self, deadline: tokio::time::Instant) {
        if !self.inner.reconnected.load(Ordering::Acquire) {
            return;
        }
        let want = self.inner.consumers.load(Ordering::Relaxed);
        let until = deadline.min(tokio::time::Instant::now() + Duration::from_secs(10));
        loop {
            if let Ok(mut stream) = self.inner.js.get_stream(&self.inner.config.stream).await
                && let Ok(info) = stream.info().await
                && info.state.consumer_count >= want
            {
                self.verify_recent().await;
                self.inner.reconnected.store(false, Ordering::Release);
                return;
            }
            if tokio::time::Instant::now() >= until {
                tracing::warn!(
                    consumers = want,
                    "the stream's consumers are not back after a reconnection; publishing anyway"
                );
                self.verify_recent().await;
                self.inner.reconnected.store(false, Ordering::Release);
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Remembers an acknowledged publish for a few seconds.
    fn remember(&self, seq: u64, id: &str, subject: &str, payload: &bytes::Bytes) {
        let now = std::time::Instant::now();
        let mut recent = self.inner.recent.lock().unwrap_or_else(|e| e.into_inner());
        while recent.list.front().is_some_and(|r| {
            now.duration_since(r.at) > RECENT_AGE
                || recent.list.len() >= RECENT_MAX
                || recent.bytes + payload.len() > RECENT_BYTES
        }) {
            recent.pop_front();
        }
        let server = self
            .inner
            .server
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        recent.push_back(Recent {
            seq,
            id: id.to_owned(),
            server,
            subject: subject.to_owned(),
            payload: payload.clone(),
            at: now,
        });
    }

    /// After a reconnection: checks that the server still holds what it acknowledged in
    /// the last few seconds, and publishes again what it does not.
    ///
    /// nats-server 2.9.10 can acknowledge a publish as it receives SIGTERM and come back
    /// without it: the bus restart test saw the stream's next message take the lost one's
    /// sequence number. A remembered publish counts as kept when its sequence holds its
    /// `Nats-Msg-Id`, or holds nothing any more (every group acknowledged it) on the same
    /// server that acknowledged it; it is lost when the stream ends before its sequence or
    /// the sequence holds another message. Those are published again under a new id (at
    /// least once: consumers absorb a duplicate), before anything new is published.
    ///
    /// On another server (a restart gives the server a new id; in a cluster, another
    /// node), an empty sequence proves nothing for a publish acknowledged within
    /// [`AT_RISK`] of the connection's loss: its sequence may have gone to a newer message
    /// that every group has acknowledged since. Such a publish is sent again under its own
    /// id: a server that stored it remembers the id (its duplicate
    /// window) and drops the copy; one that lost it stores it (or, having lost its memory of
    /// ids with the restart, stores a copy of something delivered already: a duplicate,
    /// never a loss).
    async fn verify_recent(&self) {
        let recent: Vec<Recent> = {
            let mut recent = self.inner.recent.lock().unwrap_or_else(|e| e.into_inner());
            recent.take()
        };
        let current: Arc<str> = Arc::from(self.inner.client.server_info().server_id.as_str());
        *self.inner.server.lock().unwrap_or_else(|e| e.into_inner()) = current.clone();
        if recent.is_empty() {
            return;
        }
        // What a server loses going down is what it acknowledged in its last moments: a
        // publish acknowledged well before the connection was lost was stored.
        let lost_at = *self
            .inner
            .disconnected_at
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let at_risk = |r: &Recent| lost_at.is_none_or(|lost| r.at + AT_RISK >= lost);
        let stream = self.inner.js.get_stream(&self.inner.config.stream).await;
        // (publish, under its own id)
        let mut lost: Vec<(Recent, bool)> = Vec::new();
        match stream {
            Ok(mut stream) => {
                let last = stream.info().await.map(|i| i.state.last_sequence).ok();
                for r in recent {
                    let verdict = match last {
                        Some(last) if r.seq <= last => match stream.get_raw_message(r.seq).await {
                            Ok(m) => {
                                let same = m.headers.get("Nats-Msg-Id").map(|v| v.as_str())
                                    == Some(r.id.as_str());
                                if same { None } else { Some(false) }
                            }
                            Err(e) => {
                                use jetstream::stream::RawMessageErrorKind;
                                // Removed: acknowledged by every group, if this is the
                                // server that acknowledged it. Unreachable: do not know.
                                if !matches!(e.kind(), RawMessageErrorKind::NoMessageFound) {
                                    Some(true)
                                } else if r.server == current || !at_risk(&r) {
                                    None
                                } else {
                                    Some(true)
                                }
                            }
                        },
                        _ => Some(false),
                    };
                    if let Some(own_id) = verdict {
                        lost.push((r, own_id));
                    }
                }
            }
            Err(_) => lost = recent.into_iter().map(|r| (r, true)).collect(),
        }
        if lost.is_empty() {
            return;
        }
        tracing::warn!(
            count = lost.len(),
            "nats came back without publishes it had acknowledged; publishing them again"
        );
        for (r, own_id) in lost {
            let id = if own_id {
                r.id.clone()
            } else {
                let seq = self.inner.seq.fetch_add(1, Ordering::Relaxed);
                format!("{}-{seq}", self.inner.publisher)
            };
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", id.as_str());
            let sent = async {
                self.inner
                    .js
                    .publish_with_headers(r.subject.clone(), headers, r.payload.clone())
                    .await
                    .map_err(unavailable)?
                    .await
                    .map_err(unavailable)
            };
            match tokio::time::timeout(Duration::from_secs(5), sent).await {
                // The server had it (it remembered the id): nothing was lost.
                Ok(Ok(ack)) if ack.duplicate => {}
                Ok(Ok(ack)) => {
                    self.inner.republished.fetch_add(1, Ordering::Relaxed);
                    self.remember(ack.sequence, &id, &r.subject, &r.payload);
                }
                _ => {
                    // Still owed: checked again (as lost) at the next reconnection.
                    let mut recent = self.inner.recent.lock().unwrap_or_else(|e| e.into_inner());
                    recent.push_front(Recent {
                        seq: u64::MAX,
                        at: std::time::Instant::now(),
                        ..r
                    });
                }
            }
        }
    }

    /// Whether the client is connected to a server right now.
    fn is_connected(&self) -> bool {
        self.inner.client.connection_state() == async_nats::connection::State::Connected
    }

    async fn publish_one(&self, subject: String, id: String, payload: bytes::Bytes) -> Result<()> {
        let deadline = tokio::time::Instant::now()
            + Duration::from_millis(self.inner.config.publish_timeout_ms);
        let mut backoff = Duration::from_millis(10);
        loop {
            // Nothing is queued in a disconnected client (it would be sent at the
            // reconnection, before the server has its consumers back).
            if !self.is_connected() {
                if tokio::time::Instant::now() + backoff > deadline {
                    return Err(Error::Unavailable("not connected to nats".into()));
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
            self.settle(deadline).await;
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", id.as_str());
            let attempt = async {
                let ack = self
                    .inner
                    .js
                    .publish_with_headers(subject.clone(), headers, payload.clone())
                    .await
                    .map_err(unavailable)?;
                ack.await.map_err(unavailable)
            };
            // While the client is disconnected its queue fills and a publish would wait
            // for the reconnection: no attempt outlives the deadline.
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let attempt = async {
                tokio::time::timeout(left.max(Duration::from_millis(10)), attempt)
                    .await
                    .unwrap_or_else(|_| {
                        Err(Error::Unavailable(
                            "nats did not acknowledge the publish in time".into(),
                        ))
                    })
            };
            match attempt.await {
                Ok(ack) => {
                    self.remember(ack.sequence, &id, &subject, &payload);
                    return Ok(());
                }
                Err(e) => {
                    if tokio::time::Instant::now() + backoff > deadline {
                        return Err(e);
                    }
                    tracing::debug!(error = %e, subject, "nats publish refused; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }
}

/// How long one pull request of a member stays open.
const PULL_EXPIRY: Duration = Duration::from_secs(4);

/// How long the fast path of `publish` waits before the slow path (one at a time, with
/// backoff, until `publish_timeout_ms`) takes over.
const FAST_PATH_TIMEOUT: Duration = Duration::from_secs(10);

/// How many publishes one call keeps in flight.
const PUBLISH_WINDOW: usize = 512;

#[async_trait]
impl Bus for NatsBus {
    async fn publish(&self, messages: Vec<Message>) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        // Pack messages by subject (partition), in order: one JetStream message (and one
        // acknowledgement on each side) per pack rather than per message.
        let mut packs: Vec<(String, Vec<&Message>)> = Vec::new();
        let mut open: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        for message in &messages {
            let subject = self.nats_subject(message);
            let index = match open.get(&subject) {
                Some(&i) if packs[i].1.len() < PACK_MESSAGES => i,
                _ => {
                    packs.push((subject.clone(), Vec::new()));
                    open.insert(subject, packs.len() - 1);
                    packs.len() - 1
                }
            };
            packs[index].1.push(message);
        }
        let mut prepared = Vec::with_capacity(packs.len());
        for (subject, pack) in packs {
            // Split a pack whose payload is too large (big documents) in halves until each fits.
            let mut pending = vec![pack];
            while let Some(pack) = pending.pop() {
                let payload = encode(&pack)?;
                if payload.len() > PACK_BYTES && pack.len() > 1 {
                    let (a, b) = pack.split_at(pack.len() / 2);
                    pending.push(b.to_vec());
                    pending.push(a.to_vec());
                    continue;
                }
                let seq = self.inner.seq.fetch_add(1, Ordering::Relaxed);
                prepared.push((
                    subject.clone(),
                    format!("{}-{seq}", self.inner.publisher),
                    bytes::Bytes::from(payload),
                ));
            }
        }
        // Fast path: send a window of publishes, then wait for their acknowledgements, in
        // order, so one device's messages are stored in the order given.
        let mut prepared = prepared.into_iter().peekable();
        while prepared.peek().is_some() {
            let window: Vec<_> = prepared.by_ref().take(PUBLISH_WINDOW).collect();
            let mut acks = Vec::with_capacity(window.len());
            let mut failed_from = None;
            // A disconnected client would hold these until it reconnects: the fast path
            // gives up after a short while and the slow path takes over with its deadline.
            let fast_deadline = tokio::time::Instant::now() + FAST_PATH_TIMEOUT;
            if !self.is_connected() || self.inner.reconnected.load(Ordering::Acquire) {
                failed_from = Some(0);
            }
            for (i, (subject, id, payload)) in window.iter().enumerate() {
                if failed_from.is_some() {
                    break;
                }
                let mut headers = HeaderMap::new();
                headers.insert("Nats-Msg-Id", id.as_str());
                let send =
                    self.inner
                        .js
                        .publish_with_headers(subject.clone(), headers, payload.clone());
                match tokio::time::timeout_at(fast_deadline, send).await {
                    Ok(Ok(ack)) => acks.push(ack),
                    _ => {
                        failed_from = Some(i);
                        break;
                    }
                }
            }
            for (i, ack) in acks.into_iter().enumerate() {
                let acked = match tokio::time::timeout_at(fast_deadline, ack).await {
                    Ok(Ok(ack)) => {
                        let (subject, id, payload) = &window[i];
                        self.remember(ack.sequence, id, subject, payload);
                        true
                    }
                    _ => false,
                };
                if !acked && failed_from.is_none_or(|f| i < f) {
                    failed_from = Some(i);
                    break;
                }
            }
            // Slow path: from the first refusal on, one at a time with backoff. Those
            // accepted meanwhile carry the same ids, so the stream stores them once.
            if let Some(from) = failed_from {
                for (subject, id, payload) in window.into_iter().skip(from) {
                    self.publish_one(subject, id, payload).await?;
                }
            }
        }
        Ok(())
    }

    async fn subscribe(&self, pattern: &str, group: &str) -> Result<Box<dyn Subscription>> {
        Pattern::parse(pattern)?;
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let name = consumer_name(group, pattern);
        let filter = self.filter(pattern);
        let (consumer, messages) = self
            .open_consumer(&name, &filter, Open::Create(consumer::DeliverPolicy::New))
            .await?
            .ok_or_else(|| unavailable("the consumer is gone"))?;
        self.note_consumers().await;
        Ok(self.subscription(name, filter, consumer, messages, false))
    }

    async fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
    }

    fn is_available(&self) -> bool {
        self.is_connected()
    }

    fn partitions(&self) -> u32 {
        self.inner.config.partitions
    }

    async fn subscribe_partition(
        &self,
        pattern: &str,
        group: &str,
        partition: Option<u32>,
    ) -> Result<Box<dyn Subscription>> {
        Pattern::parse(pattern)?;
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let filter = self.slice_filter(pattern, partition)?;
        let slice = partition.map_or_else(|| "pall".to_owned(), |p| format!("p{p}"));
        let base = format!("{}_{slice}_g", consumer_name(group, pattern));
        let stream = self
            .inner
            .js
            .get_stream(&self.inner.config.stream)
            .await
            .map_err(unavailable)?;
        // The slice's consumers so far (normally one; more if a takeover was interrupted).
        let mut names = Vec::new();
        let mut listing = stream.consumer_names();
        while let Some(name) = listing.next().await {
            let name = name.map_err(unavailable)?;
            if let Some(generation) = name.strip_prefix(&base).and_then(|g| g.parse::<u64>().ok()) {
                names.push((generation, name));
            }
        }
        // Take over: a new consumer from the oldest acknowledgement floor, created before
        // the old ones are deleted, so under interest retention there is never a moment
        // when nobody holds what the old owner had not acknowledged. It is delivered at
        // once, instead of after the old consumer's ack wait.
        let mut start: Option<u64> = None;
        for (_, name) in &names {
            let mut consumer: consumer::PullConsumer =
                stream.get_consumer(name).await.map_err(unavailable)?;
            let info = consumer.info().await.map_err(unavailable)?;
            let floor = info.ack_floor.stream_sequence + 1;
            start = Some(start.map_or(floor, |s| s.min(floor)));
        }
        let generation = names.iter().map(|(g, _)| g + 1).max().unwrap_or(0);
        let name = format!("{base}{generation}");
        let deliver_policy = match start {
            Some(start_sequence) => consumer::DeliverPolicy::ByStartSequence { start_sequence },
            None => consumer::DeliverPolicy::New,
        };
        let (consumer, messages) = self
            .open_consumer(&name, &filter, Open::Create(deliver_policy))
            .await?
            .ok_or_else(|| unavailable("the consumer is gone"))?;
        for (_, old) in &names {
            if let Err(e) = stream.delete_consumer(old).await {
                tracing::warn!(error = %e, consumer = %old, "failed to delete a taken-over consumer");
            }
        }
        self.note_consumers().await;
        // A slice's consumer is never made again once gone: its deletion means another
        // member took the slice over, and making it again would hold messages forever.
        Ok(self.subscription(name, filter, consumer, messages, true))
    }

    async fn retained(
        &self,
        pattern: &str,
        partition: Option<u32>,
        limit: usize,
    ) -> Result<Vec<Message>> {
        Pattern::parse(pattern)?;
        let filter = self.slice_filter(pattern, partition)?;
        let stream = self
            .inner
            .js
            .get_stream(&self.inner.config.stream)
            .await
            .map_err(unavailable)?;
        // An ephemeral consumer that acknowledges on delivery: it reads what the stream
        // holds without touching any group's consumer. Deleted at the end (or by the server
        // once idle, if this process dies first), so it holds nothing back for long.
        let mut consumer: consumer::PullConsumer = stream
            .create_consumer(consumer::pull::Config {
                filter_subject: filter,
                ack_policy: consumer::AckPolicy::None,
                deliver_policy: consumer::DeliverPolicy::All,
                inactive_threshold: Duration::from_secs(30),
                ..Default::default()
            })
            .await
            .map_err(unavailable)?;
        let name = consumer.cached_info().name.clone();
        let read = async {
            let mut pending = consumer.info().await.map_err(unavailable)?.num_pending;
            let mut out = Vec::new();
            while pending > 0 && out.len() < limit {
                let mut batch = consumer
                    .fetch()
                    .max_messages(pending.min(1_000) as usize)
                    .expires(Duration::from_secs(2))
                    .messages()
                    .await
                    .map_err(unavailable)?;
                let mut got = 0;
                while let Some(message) = batch.next().await {
                    let message = message.map_err(unavailable)?;
                    got += 1;
                    pending = message.info().map_or(0, |i| i.pending);
                    match decode(&message.payload) {
                        Some(messages) => out.extend(messages),
                        None => {
                            tracing::warn!(subject = %message.subject, "skipped an undecodable message")
                        }
                    }
                }
                if got == 0 {
                    break;
                }
            }
            out.truncate(limit);
            Ok(out)
        };
        let result = read.await;
        if let Err(e) = stream.delete_consumer(&name).await {
            tracing::debug!(error = %e, consumer = %name, "failed to delete a reading consumer (it expires)");
        }
        result
    }

    async fn join(
        &self,
        group: &str,
        member: &str,
        shards: Vec<String>,
    ) -> Result<Box<dyn Ownership>> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let lease = Duration::from_millis(self.inner.config.lease_ms.max(100));
        let kv = crate::lease::bucket(&self.inner.js, &self.inner.config.stream, lease).await?;
        crate::lease::join(kv, group, member, shards, lease, self.inner.closed.clone()).await
    }
}

impl NatsBus {
    /// Records how many consumers the stream has (see [`NatsBus::settle`]).
    async fn note_consumers(&self) {
        if let Ok(mut stream) = self.inner.js.get_stream(&self.inner.config.stream).await
            && let Ok(info) = stream.info().await
        {
            self.inner
                .consumers
                .fetch_max(info.state.consumer_count, Ordering::Relaxed);
        }
    }

    fn subscription(
        &self,
        name: String,
        filter: String,
        consumer: consumer::PullConsumer,
        messages: consumer::pull::Stream,
        slice: bool,
    ) -> Box<dyn Subscription> {
        Box::new(NatsSubscription {
            bus: self.clone(),
            name,
            filter,
            slice,
            consumer,
            messages,
            closed: self.inner.closed.clone(),
            buffer: std::collections::VecDeque::new(),
            held: std::collections::VecDeque::new(),
            unacked: Vec::new(),
        })
    }
}

struct NatsSubscription {
    bus: NatsBus,
    /// The durable consumer's name and filter, to open it again after an outage.
    name: String,
    filter: String,
    /// A partition slice (`subscribe_partition`): its consumer is opened again after an
    /// outage but never made again; once it is gone the subscription ends.
    slice: bool,
    consumer: consumer::PullConsumer,
    messages: consumer::pull::Stream,
    closed: Arc<AtomicBool>,
    /// Decoded messages not handed out yet, in order.
    buffer: std::collections::VecDeque<Arc<Message>>,
    /// The JetStream messages the buffer came from, with how many of their messages are
    /// still in it.
    held: std::collections::VecDeque<(jetstream::Message, usize)>,
    /// JetStream messages whose every message was handed out: acknowledged when the next
    /// batch is asked for.
    unacked: Vec<jetstream::Message>,
}

impl NatsSubscription {
    async fn ack_previous(&mut self) {
        for message in self.unacked.drain(..) {
            if let Err(e) = message.ack().await {
                // Not acknowledged means delivered again later: at least once, never lost.
                tracing::debug!(error = %e, "nats ack failed; the message will be redelivered");
            }
        }
    }

    /// Opens the consumer again, backing off (100 ms doubling to 5 s) until it works or
    /// the bus is closed; logs once when it starts and once when it is back. What was
    /// delivered and not acknowledged comes again after `ack_wait_ms` (at least once).
    /// Answers false when the subscription should end: the bus is closed, or a slice's
    /// consumer is gone (another member took the slice over).
    async fn reopen(&mut self, why: &str) -> bool {
        let mut delay = Duration::from_millis(100);
        let mut logged = false;
        let slice = self.slice;
        let open = || {
            if slice {
                Open::Existing
            } else {
                Open::Create(consumer::DeliverPolicy::New)
            }
        };
        loop {
            if self.closed.load(Ordering::Acquire) {
                return false;
            }
            if self.bus.is_connected() {
                // A restarted server recovers consumers after streams: opening ours before
                // it is back would create a new one that starts from now.
                self.bus
                    .settle(tokio::time::Instant::now() + Duration::from_secs(10))
                    .await;
                match self
                    .bus
                    .open_consumer(&self.name, &self.filter, open())
                    .await
                {
                    Ok(Some((consumer, messages))) => {
                        self.consumer = consumer;
                        self.messages = messages;
                        if logged {
                            tracing::info!(consumer = %self.name, "nats consumer resumed");
                        }
                        return true;
                    }
                    Ok(None) => {
                        tracing::debug!(consumer = %self.name, "nats slice consumer gone; subscription ends");
                        return false;
                    }
                    Err(e) if !logged => {
                        tracing::warn!(consumer = %self.name, reason = why, error = %e, "nats consumer lost; retrying");
                        logged = true;
                    }
                    Err(e) => {
                        tracing::debug!(consumer = %self.name, error = %e, "nats consumer still unavailable")
                    }
                }
            } else if !logged {
                tracing::warn!(consumer = %self.name, reason = why, "nats consumer waiting for the server");
                logged = true;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    /// Whether nothing is left for this group (after `close`).
    async fn drained(&mut self) -> bool {
        match self.consumer.info().await {
            Ok(info) => info.num_pending == 0,
            Err(_) => true,
        }
    }

    /// Decodes one JetStream message into the buffer (undecodable ones are acknowledged
    /// and dropped).
    fn take(&mut self, message: jetstream::Message) {
        match decode(&message.payload) {
            Some(decoded) if !decoded.is_empty() => {
                let n = decoded.len();
                self.buffer.extend(decoded.into_iter().map(Arc::new));
                self.held.push_back((message, n));
            }
            _ => {
                tracing::warn!(
                    subject = %message.subject,
                    "dropping an undecodable bus message"
                );
                self.unacked.push(message);
            }
        }
    }

    /// Hands out up to `max` buffered messages; JetStream messages fully handed out become
    /// due for acknowledgement.
    fn hand_out(&mut self, max: usize) -> Vec<Arc<Message>> {
        let n = max.min(self.buffer.len());
        let batch: Vec<Arc<Message>> = self.buffer.drain(..n).collect();
        let mut left = n;
        while left > 0 {
            let Some((_, remaining)) = self.held.front_mut() else {
                break;
            };
            let used = left.min(*remaining);
            *remaining -= used;
            left -= used;
            if *remaining == 0
                && let Some((message, _)) = self.held.pop_front()
            {
                self.unacked.push(message);
            }
        }
        batch
    }
}

#[async_trait]
impl Subscription for NatsSubscription {
    async fn next_batch(&mut self, max: usize) -> Option<Vec<Arc<Message>>> {
        let max = max.max(1);
        self.ack_previous().await;
        while self.buffer.is_empty() {
            let first = if self.closed.load(Ordering::Acquire) {
                match tokio::time::timeout(Duration::from_millis(200), self.messages.next()).await {
                    Ok(next) => next,
                    Err(_) if self.drained().await => return None,
                    Err(_) => continue,
                }
            } else {
                // Wake up now and then to notice `close`.
                match tokio::time::timeout(Duration::from_millis(500), self.messages.next()).await {
                    Ok(next) => next,
                    Err(_) => continue,
                }
            };
            match first {
                Some(Ok(message)) => self.take(message),
                Some(Err(e)) if e.kind() == consumer::pull::MessagesErrorKind::ConsumerDeleted => {
                    // Another owner took this slice over (`subscribe_partition`).
                    tracing::debug!("nats consumer deleted; subscription ends");
                    return None;
                }
                Some(Err(e)) => {
                    // Missed heartbeats while the server is away, a consumer deleted or a
                    // server restarted without it: open the consumer again (the client
                    // reconnects by itself; the pull stream alone does not survive every
                    // restart).
                    if !self.reopen(&e.to_string()).await {
                        return None;
                    }
                    continue;
                }
                None if self.closed.load(Ordering::Acquire) => return None,
                None => {
                    // The pull stream ended (terminated by the server) though the bus is
                    // open: open it again rather than end the subscription.
                    if !self.reopen("the pull stream ended").await {
                        return None;
                    }
                    continue;
                }
            }
            while self.buffer.len() < max {
                match self.messages.next().now_or_never() {
                    Some(Some(Ok(message))) => self.take(message),
                    _ => break,
                }
            }
            if self.buffer.is_empty() {
                // Only undecodable messages: acknowledge them and wait for more.
                self.ack_previous().await;
            }
        }
        Some(self.hand_out(max))
    }
}

//! The sans-IO connection state machine: bytes in, [`Output`] out (bytes to write, events for
//! the sink, counter deltas, whether to close).
//!
//! Every CONNECT, SUBSCRIBE and PUBLISH decision is made here; the broker's tokio layer only
//! moves bytes and owns the shared tables behind [`Context`]. Tests and the fuzz target drive
//! a [`Connection`] directly with a fake [`Context`].

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use model::topic::{self, Channel};
use model::{
    Credential, Device, DeviceStatus, Event, EventKind, SecurityEvent, SecurityEventKind, Timestamp,
};

use super::decode;
use super::limit::{Bucket, DeviceLimit, Take};
use super::metrics::Stats;
use super::proto::{
    self, AckReason, DisconnectReason, Inbound, Peek, ReadError, Refusal, Version, Will,
};

/// What the connection needs from the broker around it.
pub trait Context {
    /// The registered device with this id.
    fn device(&self, id: &str) -> Option<Arc<Device>>;
    /// Registers this connection as the live session of `client_id`.
    fn claim(&mut self, client_id: &str, peer: SocketAddr) -> Claim;
    /// Routes deliveries on `topic` to this connection.
    fn subscribe(&mut self, topic: &str, qos: u8);
    fn unsubscribe(&mut self, topic: &str);
    /// Stores (or with an empty payload deletes) a retained message; `false` when the store
    /// is full and the message was dropped.
    fn retain(&mut self, topic: &str, payload: Bytes) -> bool;
    /// Checks a secret against a stored hash; the broker overrides this to keep slow
    /// (argon2) verification off its async workers.
    fn verify_secret(&self, hash: &str, secret: &str) -> bool {
        crate::credentials::verify(hash, secret)
    }
    /// The rate limit incident response put on this device, if any, with the state its
    /// last session left the bucket in (so reconnecting does not refill it).
    fn rate_limit(&self, device_id: &str) -> Option<Bucket> {
        let _ = device_id;
        None
    }
}

/// The answer to [`Context::claim`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// No other live session.
    Free,
    /// An older session was told to close; this one takes over.
    Replaced { same_address: bool },
    /// A live session from another address keeps the id; this one is refused.
    Refused,
}

/// Per-connection limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_payload_bytes: usize,
    pub max_keep_alive_s: u16,
    /// Unacknowledged QoS 1/2 deliveries to the client before further ones are dropped.
    pub max_inflight: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_payload_bytes: 65536,
            max_keep_alive_s: 600,
            max_inflight: 256,
        }
    }
}

/// What the TLS layer learned from a verified client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsIdentity {
    /// The subject common name, when there is one.
    pub cn: Option<String>,
    /// Lowercase hex SHA-256 of the certificate's DER.
    pub sha256: String,
}

/// What one call produced.
#[derive(Debug, Default)]
pub struct Output {
    /// Bytes to write to the client, after the events were accepted by the sink.
    pub write: BytesMut,
    /// Events for the sink, one batch per burst.
    pub events: Vec<Event>,
    /// Counter deltas.
    pub stats: Stats,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitConnect,
    Connected,
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Inflight {
    /// QoS 1, waiting for PUBACK.
    Ack,
    /// QoS 2, waiting for PUBREC.
    Rec,
    /// QoS 2, PUBREL sent, waiting for PUBCOMP.
    Comp,
}

/// The topics an authenticated device owns, computed once at CONNECT.
#[derive(Debug)]
struct Session {
    device: Arc<Device>,
    telemetry: String,
    state: String,
    ack: String,
    cmd: String,
}

/// Security events from one connection beyond this many per window are summarised.
const EVENT_BUDGET: u32 = 20;
const EVENT_WINDOW_MS: i64 = 10_000;

/// Bounds noisy events: [`EVENT_BUDGET`] per window, then one summary with a count.
#[derive(Debug, Default, Clone)]
pub struct EventBudget {
    window_start: i64,
    used: u32,
    suppressed: u64,
}

impl EventBudget {
    /// Whether to emit an event now; returns a count of suppressed events to summarise
    /// when a new window opens.
    pub fn allow(&mut self, now: Timestamp, budget: u32, window_ms: i64) -> (bool, u64) {
        let mut flushed = 0;
        if now.as_millis().saturating_sub(self.window_start) >= window_ms {
            flushed = std::mem::take(&mut self.suppressed);
            self.window_start = now.as_millis();
            self.used = 0;
        }
        if self.used < budget {
            self.used += 1;
            (true, flushed)
        } else {
            self.suppressed += 1;
            (false, flushed)
        }
    }

    /// Takes the pending count of suppressed events.
    pub fn take_suppressed(&mut self) -> u64 {
        std::mem::take(&mut self.suppressed)
    }
}

/// One client connection.
#[derive(Debug)]
pub struct Connection {
    peer: SocketAddr,
    peer_text: String,
    tls: Option<TlsIdentity>,
    limits: Limits,
    version: Option<Version>,
    state: State,
    buf: BytesMut,
    client_id: Option<String>,
    username: Option<String>,
    session: Option<Session>,
    keep_alive: u16,
    will: Option<Will>,
    subs: Vec<(String, u8)>,
    qos2_in: HashSet<u16>,
    inflight: HashMap<u16, Inflight>,
    next_pkid: u16,
    budget: EventBudget,
    /// The device's rate limit, while one holds.
    limit: Option<Bucket>,
    /// Publishes dropped by the limit and not yet reported in an event.
    limit_unreported: u64,
    /// When the last rate-limit drop event was emitted.
    limit_reported_ms: Option<i64>,
    /// Whether publishes are refused because the platform cannot take events.
    refusing: bool,
}

impl Connection {
    pub fn new(peer: SocketAddr, tls: Option<TlsIdentity>, limits: Limits) -> Connection {
        Connection {
            peer,
            peer_text: peer.to_string(),
            tls,
            limits,
            version: None,
            state: State::AwaitConnect,
            buf: BytesMut::with_capacity(4096),
            client_id: None,
            username: None,
            session: None,
            keep_alive: limits.max_keep_alive_s,
            will: None,
            subs: Vec::new(),
            qos2_in: HashSet::new(),
            inflight: HashMap::new(),
            next_pkid: 1,
            budget: EventBudget::default(),
            limit: None,
            limit_unreported: 0,
            limit_reported_ms: None,
            refusing: false,
        }
    }

    /// The buffer the IO layer reads into before calling [`Connection::process`].
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    pub fn is_connected(&self) -> bool {
        self.state == State::Connected
    }

    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// The negotiated keep-alive in seconds (after CONNECT).
    pub fn keep_alive(&self) -> u16 {
        self.keep_alive
    }

    /// The authenticated device, once connected.
    pub fn device(&self) -> Option<&Arc<Device>> {
        self.session.as_ref().map(|s| &s.device)
    }

    pub fn client_id(&self) -> Option<&str> {
        self.client_id.as_deref()
    }

    pub fn version(&self) -> Option<Version> {
        self.version
    }

    /// Feeds bytes and processes every complete packet.
    pub fn handle(&mut self, data: &[u8], now: Timestamp, ctx: &mut dyn Context, out: &mut Output) {
        if self.state == State::Closed {
            return;
        }
        self.buf.extend_from_slice(data);
        self.process(now, ctx, out);
    }

    /// Processes every complete packet in the buffer.
    pub fn process(&mut self, now: Timestamp, ctx: &mut dyn Context, out: &mut Output) {
        let max_frame = self.limits.max_payload_bytes.saturating_add(1024);
        while self.state != State::Closed && !self.buf.is_empty() {
            let version = match self.version {
                Some(v) => v,
                None => match proto::peek_connect(&self.buf) {
                    Peek::Incomplete => return,
                    Peek::NotConnect => {
                        self.malformed(now, "first packet is not connect", out);
                        return;
                    }
                    Peek::Connect {
                        mqtt_name: true,
                        level: 4,
                    } => Version::V311,
                    Peek::Connect {
                        mqtt_name: true,
                        level: 5,
                    } => Version::V5,
                    Peek::Connect { level, .. } => {
                        // Answer in 3.1.1 form, which every version understands.
                        self.version = Some(Version::V311);
                        proto::write_connack(
                            Version::V311,
                            Some(Refusal::UnsupportedVersion),
                            None,
                            &mut out.write,
                        );
                        out.stats.connects_refused += 1;
                        let ev = self.security(
                            now,
                            SecurityEventKind::ConnectRefused,
                            None,
                            format!("unsupported protocol level {level}"),
                        );
                        out.events.push(ev);
                        self.state = State::Closed;
                        return;
                    }
                },
            };
            self.version = Some(version);
            match proto::read(version, &mut self.buf, max_frame) {
                Ok(packet) => self.on_packet(packet, now, ctx, out),
                Err(ReadError::Incomplete) => return,
                Err(ReadError::TooLarge(n)) => {
                    out.stats.dropped += 1;
                    let reason = format!("packet of {n} bytes exceeds limit of {max_frame}");
                    let ev = self.security(now, SecurityEventKind::OversizedPayload, None, reason);
                    out.events.push(ev);
                    proto::write_disconnect(version, DisconnectReason::TooLarge, &mut out.write);
                    self.close(now, "oversized packet", false, out);
                }
                Err(ReadError::Malformed(why)) => self.malformed(now, &why, out),
            }
        }
    }

    /// Queues a delivery of `payload` on `topic` (a subscribed topic) to the client.
    /// Returns `false` when it was dropped (not connected, or too many unacknowledged).
    pub fn deliver(&mut self, topic: &str, payload: Bytes, qos: u8, out: &mut Output) -> bool {
        let Some(version) = self.version else {
            return false;
        };
        if self.state != State::Connected {
            return false;
        }
        let granted = self
            .subs
            .iter()
            .find(|(t, _)| t == topic)
            .map_or(0, |(_, q)| *q);
        let qos = qos.min(granted).min(2);
        let mut pkid = 0;
        if qos > 0 {
            if self.inflight.len() >= self.limits.max_inflight {
                out.stats.dropped += 1;
                return false;
            }
            pkid = self.alloc_pkid();
            self.inflight.insert(
                pkid,
                if qos == 1 {
                    Inflight::Ack
                } else {
                    Inflight::Rec
                },
            );
        }
        proto::write_publish(version, topic, payload, qos, pkid, &mut out.write);
        true
    }

    /// Applies (or with `None` lifts) the device's rate limit on this live session at once;
    /// a new limit starts with a full bucket.
    pub fn set_limit(&mut self, limit: Option<DeviceLimit>, now: Timestamp, out: &mut Output) {
        self.report_limit_drops(now, out);
        self.limit = limit.filter(|l| l.active(now)).map(|l| Bucket::new(l, now));
    }

    /// The rate limit this session enforces now.
    pub fn limit(&self) -> Option<DeviceLimit> {
        self.limit.as_ref().map(|b| b.limit)
    }

    /// The bucket as this session leaves it, for the device's next session.
    pub fn take_limit_bucket(&mut self) -> Option<Bucket> {
        self.limit.take()
    }

    /// Emits the count of rate-limited publishes not yet reported.
    fn report_limit_drops(&mut self, now: Timestamp, out: &mut Output) {
        if self.limit_unreported == 0 {
            return;
        }
        let n = std::mem::take(&mut self.limit_unreported);
        self.limit_reported_ms = Some(now.as_millis());
        let limit = self.limit.as_ref().map(|b| b.limit.to_string());
        let ev = self.security(
            now,
            SecurityEventKind::RateLimited,
            None,
            format!(
                "dropped {n} publish(es) over the rate limit ({})",
                limit.as_deref().unwrap_or("since lifted")
            ),
        );
        out.events.push(ev);
    }

    /// A publish over the device's rate limit: dropped, counted, reported (the first at
    /// once, then at most one event a second with the count), refused to a 5.0 client at
    /// QoS 1/2 (0x97 quota exceeded; 0x96 is a DISCONNECT code only) and, since 3.1.1 has no
    /// negative acknowledgement, answered by closing a 3.1.1 client's connection at QoS 1/2.
    /// A session sending far over its limit (see [`DeviceLimit::flood_threshold`]) is
    /// disconnected, a 5.0 client with 0x96 message rate too high.
    #[allow(clippy::too_many_arguments)]
    fn over_limit(
        &mut self,
        version: Version,
        qos: u8,
        pkid: u16,
        flooding: bool,
        now: Timestamp,
        out: &mut Output,
    ) {
        out.stats.rate_limited += 1;
        self.limit_unreported += 1;
        let due = self
            .limit_reported_ms
            .is_none_or(|at| now.as_millis().saturating_sub(at) >= 1000);
        if due || flooding || (qos > 0 && version == Version::V311) {
            self.report_limit_drops(now, out);
        }
        if flooding {
            let limit = self.limit().map(|l| l.to_string()).unwrap_or_default();
            let ev = self.security(
                now,
                SecurityEventKind::RateLimited,
                None,
                format!("disconnected: publishing more than ten times its rate limit ({limit})"),
            );
            out.events.push(ev);
            proto::write_disconnect(
                version,
                DisconnectReason::MessageRateTooHigh,
                &mut out.write,
            );
            self.close(now, "message rate too high", true, out);
            return;
        }
        match (qos, version) {
            (0, _) => {}
            (_, Version::V5) => match qos {
                1 => proto::write_puback(version, pkid, AckReason::Quota, &mut out.write),
                _ => proto::write_pubrec(version, pkid, AckReason::Quota, &mut out.write),
            },
            (_, Version::V311) => {
                self.close(
                    now,
                    "qos 1/2 publish over the rate limit (mqtt 3.1.1 cannot refuse it otherwise)",
                    true,
                    out,
                );
            }
        }
    }

    /// Whether publishes from now on are refused because the platform cannot take events
    /// (its bus is down and its buffer full); the broker sets it before each read burst.
    pub fn set_refusing(&mut self, refusing: bool) {
        self.refusing = refusing;
    }

    /// A publish while the platform cannot take events: never acknowledged and then lost.
    /// QoS 0 is dropped and counted; at QoS 1/2 a 5.0 client gets 0x97 quota exceeded (as
    /// over a rate limit) and publishes again later, and a 3.1.1 client, which has no
    /// negative acknowledgement, has its connection closed, so it sends the message again
    /// when it reconnects.
    fn refuse_unavailable(
        &mut self,
        version: Version,
        qos: u8,
        pkid: u16,
        now: Timestamp,
        out: &mut Output,
    ) {
        out.stats.refused_unavailable += 1;
        match (qos, version) {
            (0, _) => out.stats.dropped += 1,
            (1, Version::V5) => proto::write_puback(version, pkid, AckReason::Quota, &mut out.write),
            (_, Version::V5) => proto::write_pubrec(version, pkid, AckReason::Quota, &mut out.write),
            (_, Version::V311) => self.close(
                now,
                "qos 1/2 publish while the platform cannot take events (mqtt 3.1.1 cannot refuse it otherwise)",
                true,
                out,
            ),
        }
    }

    /// The broker closes the connection (revocation, takeover, shutdown): tells a 5.0 client
    /// why and emits the disconnect event.
    pub fn kick(&mut self, reason: DisconnectReason, text: &str, now: Timestamp, out: &mut Output) {
        if self.state == State::Closed {
            return;
        }
        if let Some(v) = self.version
            && self.state == State::Connected
        {
            proto::write_disconnect(v, reason, &mut out.write);
        }
        // A session that went silent or was taken over did not say goodbye: its will is
        // published (MQTT 3.1.1 3.1.2.5, 5.0 3.1.2.5); revocation and shutdown are ours.
        let clean = !matches!(
            reason,
            DisconnectReason::KeepAliveTimeout | DisconnectReason::TakenOver
        );
        self.close(now, text, clean, out);
    }

    /// The transport ended (`clean` = after a DISCONNECT packet or a broker decision):
    /// emits a disconnect event for an authenticated session and publishes its will when
    /// the end was not clean.
    pub fn close(&mut self, now: Timestamp, reason: &str, clean: bool, out: &mut Output) {
        if self.state == State::Connected {
            self.report_limit_drops(now, out);
            if !clean
                && let (Some(will), Some(session)) = (self.will.take(), &self.session)
                && let Some(channel) = channel_of(session, &will.topic)
            {
                self.ingest(channel, &will.topic, &will.payload, now, out);
            }
            let suppressed = self.budget.take_suppressed();
            if suppressed > 0 {
                let ev = self.security(
                    now,
                    SecurityEventKind::PublishDenied,
                    None,
                    format!("{suppressed} similar events suppressed"),
                );
                out.events.push(ev);
            }
            let kind = if clean { "clean" } else { "unclean" };
            let ev = self.security(
                now,
                SecurityEventKind::Disconnect,
                None,
                format!("{reason} ({kind})"),
            );
            out.events.push(ev);
        }
        self.state = State::Closed;
        self.buf = BytesMut::new();
    }

    fn alloc_pkid(&mut self) -> u16 {
        loop {
            let id = self.next_pkid;
            self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
            if !self.inflight.contains_key(&id) {
                return id;
            }
        }
    }

    fn malformed(&mut self, now: Timestamp, why: &str, out: &mut Output) {
        out.stats.malformed_packets += 1;
        let ev = self.security(
            now,
            SecurityEventKind::MalformedPacket,
            None,
            why.to_owned(),
        );
        out.events.push(ev);
        if let Some(v) = self.version
            && self.state == State::Connected
        {
            proto::write_disconnect(v, DisconnectReason::Malformed, &mut out.write);
        }
        self.close(now, "malformed packet", false, out);
    }

    fn protocol_error(&mut self, now: Timestamp, why: &str, out: &mut Output) {
        out.stats.malformed_packets += 1;
        let ev = self.security(
            now,
            SecurityEventKind::MalformedPacket,
            None,
            why.to_owned(),
        );
        out.events.push(ev);
        if let Some(v) = self.version
            && self.state == State::Connected
        {
            proto::write_disconnect(v, DisconnectReason::ProtocolError, &mut out.write);
        }
        self.close(now, "protocol error", false, out);
    }

    fn on_packet(
        &mut self,
        packet: Inbound,
        now: Timestamp,
        ctx: &mut dyn Context,
        out: &mut Output,
    ) {
        if self.state == State::AwaitConnect {
            match packet {
                Inbound::Connect {
                    client_id,
                    keep_alive,
                    username,
                    password,
                    will,
                } => self.on_connect(
                    client_id, keep_alive, username, password, will, now, ctx, out,
                ),
                _ => self.malformed(now, "first packet is not connect", out),
            }
            return;
        }
        let Some(version) = self.version else { return };
        match packet {
            Inbound::Connect { .. } => self.protocol_error(now, "second connect", out),
            Inbound::Publish {
                topic,
                payload,
                qos,
                retain,
                pkid,
                topic_alias,
            } => self.on_publish(
                version,
                topic,
                payload,
                qos,
                retain,
                pkid,
                topic_alias,
                now,
                ctx,
                out,
            ),
            Inbound::PubAck(pkid) => {
                if self.inflight.get(&pkid) == Some(&Inflight::Ack) {
                    self.inflight.remove(&pkid);
                }
            }
            Inbound::PubRec(pkid) => {
                if let Some(state) = self.inflight.get_mut(&pkid) {
                    *state = Inflight::Comp;
                }
                proto::write_pubrel(version, pkid, &mut out.write);
            }
            Inbound::PubComp(pkid) => {
                self.inflight.remove(&pkid);
            }
            Inbound::PubRel(pkid) => {
                self.qos2_in.remove(&pkid);
                proto::write_pubcomp(version, pkid, &mut out.write);
            }
            Inbound::Subscribe { pkid, filters } => {
                self.on_subscribe(version, pkid, filters, now, ctx, out)
            }
            Inbound::Unsubscribe { pkid, filters } => {
                for f in &filters {
                    if let Some(i) = self.subs.iter().position(|(t, _)| t == f) {
                        self.subs.swap_remove(i);
                        ctx.unsubscribe(f);
                    }
                }
                proto::write_unsuback(version, pkid, filters.len(), &mut out.write);
            }
            Inbound::PingReq => proto::write_pingresp(&mut out.write),
            Inbound::Disconnect => {
                self.will = None;
                self.close(now, "client disconnect", true, out);
            }
            Inbound::Unexpected(what) => {
                self.protocol_error(now, &format!("unexpected {what} from client"), out)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_connect(
        &mut self,
        client_id: String,
        keep_alive: u16,
        username: Option<String>,
        password: Option<String>,
        will: Option<Will>,
        now: Timestamp,
        ctx: &mut dyn Context,
        out: &mut Output,
    ) {
        let version = self.version.unwrap_or(Version::V311);
        self.client_id = Some(client_id.clone());
        self.username = username.clone();
        let cert = self
            .tls
            .as_ref()
            .and_then(|t| t.cn.clone().map(|cn| (cn, t.sha256.clone())));

        // Who does the client claim to be?
        let (device_id, via_cert) = match (&cert, &username) {
            (Some((cn, _)), Some(user)) if user != cn => {
                // Another device's certificate presented as `user`: the event names the
                // registered device being posed as, so detection can say whose identity
                // was spoofed.
                let claimed = ctx.device(user);
                out.stats.auth_failures += 1;
                return self.refuse(
                    version,
                    Refusal::BadCredentials,
                    SecurityEventKind::AuthFailure,
                    "username does not match certificate cn",
                    claimed.as_ref(),
                    now,
                    out,
                );
            }
            (Some((cn, _)), _) => (cn.clone(), true),
            (None, Some(user)) => (user.clone(), false),
            (None, None) => {
                return self.refuse(
                    version,
                    Refusal::NotAuthorized,
                    SecurityEventKind::ConnectRefused,
                    "missing credentials",
                    None,
                    now,
                    out,
                );
            }
        };
        if self.username.is_none() {
            self.username = Some(device_id.clone());
        }
        let Some(device) = ctx.device(&device_id) else {
            return self.refuse(
                version,
                Refusal::BadCredentials,
                SecurityEventKind::ConnectRefused,
                "unknown device",
                None,
                now,
                out,
            );
        };
        if client_id != device_id {
            return self.refuse(
                version,
                Refusal::BadClientId,
                SecurityEventKind::ConnectRefused,
                "client id does not match device id",
                Some(&device),
                now,
                out,
            );
        }
        if device.status != DeviceStatus::Active {
            return self.refuse(
                version,
                Refusal::NotAuthorized,
                SecurityEventKind::ConnectRefused,
                match device.status {
                    DeviceStatus::Quarantined => "device quarantined",
                    _ => "device revoked",
                },
                Some(&device),
                now,
                out,
            );
        }
        if via_cert {
            let pins: Vec<&str> = device
                .credentials
                .iter()
                .filter_map(|c| match c {
                    Credential::Certificate { sha256 } => Some(sha256.as_str()),
                    Credential::Secret { .. } => None,
                })
                .collect();
            let presented = cert.as_ref().map_or("", |(_, sha)| sha.as_str());
            if !pins.is_empty() && !pins.iter().any(|p| p.eq_ignore_ascii_case(presented)) {
                out.stats.auth_failures += 1;
                return self.refuse(
                    version,
                    Refusal::BadCredentials,
                    SecurityEventKind::AuthFailure,
                    "certificate not registered for device",
                    Some(&device),
                    now,
                    out,
                );
            }
        } else {
            let Some(password) = password else {
                return self.refuse(
                    version,
                    Refusal::BadCredentials,
                    SecurityEventKind::ConnectRefused,
                    "missing password",
                    Some(&device),
                    now,
                    out,
                );
            };
            let mut hashes = device.credentials.iter().filter_map(|c| match c {
                Credential::Secret { hash } => Some(hash.as_str()),
                Credential::Certificate { .. } => None,
            });
            let mut any = false;
            let ok = hashes.any(|h| {
                any = true;
                ctx.verify_secret(h, &password)
            });
            if !any {
                return self.refuse(
                    version,
                    Refusal::NotAuthorized,
                    SecurityEventKind::ConnectRefused,
                    "device has no secret credential",
                    Some(&device),
                    now,
                    out,
                );
            }
            if !ok {
                out.stats.auth_failures += 1;
                return self.refuse(
                    version,
                    Refusal::BadCredentials,
                    SecurityEventKind::AuthFailure,
                    "bad password",
                    Some(&device),
                    now,
                    out,
                );
            }
        }

        // Authenticated; now the client id must be free (or ours to take over).
        let prefix = device.topic_prefix();
        self.session = Some(Session {
            telemetry: format!("{prefix}/{}", Channel::Telemetry.as_str()),
            state: format!("{prefix}/{}", Channel::State.as_str()),
            ack: format!("{prefix}/{}", Channel::Ack.as_str()),
            cmd: format!("{prefix}/{}", Channel::Cmd.as_str()),
            device: Arc::clone(&device),
        });
        match ctx.claim(&client_id, self.peer) {
            Claim::Free => {}
            Claim::Replaced { same_address } => {
                let reason = if same_address {
                    "replaced live session from the same address"
                } else {
                    "replaced live session from another address"
                };
                let ev = self.security(
                    now,
                    SecurityEventKind::ClientIdTakeover,
                    None,
                    reason.to_owned(),
                );
                out.events.push(ev);
            }
            Claim::Refused => {
                self.session = None;
                return self.refuse(
                    version,
                    Refusal::BadClientId,
                    SecurityEventKind::ClientIdTakeover,
                    "client id in use from another address",
                    Some(&device),
                    now,
                    out,
                );
            }
        }

        let max = self.limits.max_keep_alive_s;
        self.keep_alive = if keep_alive == 0 || keep_alive > max {
            max
        } else {
            keep_alive
        };
        let server_keep_alive = (self.keep_alive != keep_alive).then_some(self.keep_alive);
        if let Some(w) = will {
            let allowed = self
                .session
                .as_ref()
                .and_then(|s| channel_of(s, &w.topic))
                .is_some();
            if allowed && w.payload.len() <= self.limits.max_payload_bytes {
                self.will = Some(w);
            } else {
                out.stats.publish_denied += 1;
                let ev = self.security(
                    now,
                    SecurityEventKind::PublishDenied,
                    Some(w.topic.clone()),
                    "will topic outside device namespace".to_owned(),
                );
                out.events.push(ev);
            }
        }
        self.state = State::Connected;
        self.limit = ctx
            .rate_limit(device.id.as_str())
            .filter(|b| b.limit.active(now));
        out.stats.connects_accepted += 1;
        proto::write_connack(version, None, server_keep_alive, &mut out.write);
        let how = if via_cert { "certificate" } else { "password" };
        let ev = self.security(
            now,
            SecurityEventKind::ConnectAccepted,
            None,
            format!("mqtt {} {how}", version.as_str()),
        );
        out.events.push(ev);
    }

    #[allow(clippy::too_many_arguments)]
    fn refuse(
        &mut self,
        version: Version,
        refusal: Refusal,
        kind: SecurityEventKind,
        reason: &str,
        device: Option<&Arc<Device>>,
        now: Timestamp,
        out: &mut Output,
    ) {
        out.stats.connects_refused += 1;
        proto::write_connack(version, Some(refusal), None, &mut out.write);
        let mut ev = self.security(now, kind, None, reason.to_owned());
        if let Some(d) = device {
            ev.device_id = Some(d.id.clone());
            ev.sector = Some(d.sector);
        }
        out.events.push(ev);
        self.state = State::Closed;
    }

    #[allow(clippy::too_many_arguments)]
    fn on_publish(
        &mut self,
        version: Version,
        topic: Option<String>,
        payload: Bytes,
        qos: u8,
        retain: bool,
        pkid: u16,
        topic_alias: bool,
        now: Timestamp,
        ctx: &mut dyn Context,
        out: &mut Output,
    ) {
        out.stats.messages_received += 1;
        out.stats.bytes_received += payload.len() as u64;
        if topic_alias {
            out.stats.malformed_packets += 1;
            let ev = self.security(
                now,
                SecurityEventKind::MalformedPacket,
                None,
                "topic aliases are not supported".to_owned(),
            );
            out.events.push(ev);
            proto::write_disconnect(version, DisconnectReason::TopicAliasInvalid, &mut out.write);
            self.close(now, "topic alias", false, out);
            return;
        }
        let Some(topic) = topic else {
            self.malformed(now, "topic is not utf-8", out);
            return;
        };
        let ack = |out: &mut Output, reason: AckReason| match qos {
            1 => proto::write_puback(version, pkid, reason, &mut out.write),
            2 => proto::write_pubrec(version, pkid, reason, &mut out.write),
            _ => {}
        };
        if payload.len() > self.limits.max_payload_bytes {
            out.stats.dropped += 1;
            let reason = format!(
                "payload of {} bytes exceeds limit of {}",
                payload.len(),
                self.limits.max_payload_bytes
            );
            self.budgeted(
                now,
                SecurityEventKind::OversizedPayload,
                Some(topic),
                reason,
                out,
            );
            ack(out, AckReason::Quota);
            return;
        }
        let channel = self.session.as_ref().and_then(|s| channel_of(s, &topic));
        let Some(channel) = channel else {
            out.stats.publish_denied += 1;
            let reason = if topic.starts_with('$') {
                "publish to $ topic"
            } else if retain && topic::parse(&topic).is_some_and(|t| t.channel == Channel::Cmd) {
                "retained publish on cmd topic"
            } else if topic::parse(&topic).is_some_and(|t| t.channel == Channel::Cmd) {
                "publish to cmd topic"
            } else {
                "topic outside device namespace"
            };
            self.budgeted(
                now,
                SecurityEventKind::PublishDenied,
                Some(topic),
                reason.to_owned(),
                out,
            );
            ack(out, AckReason::NotAuthorized);
            return;
        };
        if qos == 2 && self.qos2_in.contains(&pkid) {
            // A redelivery of a QoS 2 message we already took: acknowledge, do not duplicate.
            ack(out, AckReason::Success);
            return;
        }
        if self.refusing {
            self.refuse_unavailable(version, qos, pkid, now, out);
            return;
        }
        if let Some(bucket) = &mut self.limit {
            match bucket.take(now) {
                Take::Allowed => {
                    // Drops held back for the one-event-a-second bound are reported once
                    // the second is over, also when the device is back within its limit.
                    if self.limit_unreported > 0
                        && self
                            .limit_reported_ms
                            .is_none_or(|at| now.as_millis().saturating_sub(at) >= 1000)
                    {
                        self.report_limit_drops(now, out);
                    }
                }
                Take::Dropped => {
                    let flooding = bucket.flooding();
                    self.over_limit(version, qos, pkid, flooding, now, out);
                    return;
                }
                Take::Lapsed => {
                    let limit = bucket.limit;
                    self.report_limit_drops(now, out);
                    self.limit = None;
                    let ev = self.security(
                        now,
                        SecurityEventKind::RateLimitChanged,
                        None,
                        format!("rate limit lapsed ({limit})"),
                    );
                    out.events.push(ev);
                }
            }
        }
        if qos == 2 {
            self.qos2_in.insert(pkid);
        }
        if retain && !ctx.retain(&topic, payload.clone()) {
            out.stats.dropped += 1;
        }
        self.ingest(channel, &topic, &payload, now, out);
        ack(out, AckReason::Success);
    }

    /// Decodes an accepted payload into a telemetry/state event, or reports it invalid.
    fn ingest(
        &mut self,
        channel: Channel,
        topic: &str,
        payload: &[u8],
        now: Timestamp,
        out: &mut Output,
    ) {
        let Some(session) = &self.session else { return };
        let decoded = match channel {
            Channel::Ack => decode::decode_ack(payload, now),
            _ => decode::decode(payload, now),
        };
        match decoded {
            Ok(d) => {
                let ts = d.event_time(now);
                let kind = match channel {
                    Channel::Telemetry => EventKind::Telemetry {
                        readings: d.readings,
                    },
                    _ => EventKind::State {
                        readings: d.readings,
                    },
                };
                out.events.push(Event {
                    ts,
                    device_id: Some(session.device.id.clone()),
                    sector: Some(session.device.sector),
                    kind,
                });
            }
            Err(err) => {
                out.stats.decode_errors += 1;
                self.budgeted(
                    now,
                    SecurityEventKind::PayloadInvalid,
                    Some(topic.to_owned()),
                    err.to_string(),
                    out,
                );
            }
        }
    }

    fn on_subscribe(
        &mut self,
        version: Version,
        pkid: u16,
        filters: Vec<(String, u8)>,
        now: Timestamp,
        ctx: &mut dyn Context,
        out: &mut Output,
    ) {
        let mut results = Vec::with_capacity(filters.len());
        for (filter, qos) in filters {
            let own_cmd = self.session.as_ref().is_some_and(|s| s.cmd == filter);
            if own_cmd && qos <= 2 {
                if let Some(entry) = self.subs.iter_mut().find(|(t, _)| *t == filter) {
                    entry.1 = qos;
                } else {
                    self.subs.push((filter.clone(), qos));
                }
                ctx.subscribe(&filter, qos);
                results.push(Some(qos));
                continue;
            }
            out.stats.subscribe_denied += 1;
            let reason = if filter.contains(['+', '#']) {
                "wildcard subscription"
            } else if filter.starts_with('$') {
                "$ topic subscription"
            } else {
                "topic outside device namespace"
            };
            self.budgeted(
                now,
                SecurityEventKind::SubscribeDenied,
                Some(filter),
                reason.to_owned(),
                out,
            );
            results.push(None);
        }
        proto::write_suback(version, pkid, &results, &mut out.write);
    }

    /// Emits a noisy event within the per-connection budget, with a summary of what was
    /// suppressed in the previous window.
    fn budgeted(
        &mut self,
        now: Timestamp,
        kind: SecurityEventKind,
        topic: Option<String>,
        reason: String,
        out: &mut Output,
    ) {
        let (allowed, flushed) = self.budget.allow(now, EVENT_BUDGET, EVENT_WINDOW_MS);
        if flushed > 0 {
            let ev = self.security(
                now,
                kind,
                None,
                format!("{flushed} similar events suppressed"),
            );
            out.events.push(ev);
        }
        if allowed {
            let ev = self.security(now, kind, topic, reason);
            out.events.push(ev);
        } else {
            out.stats.events_suppressed += 1;
        }
    }

    fn security(
        &self,
        now: Timestamp,
        action: SecurityEventKind,
        topic: Option<String>,
        reason: String,
    ) -> Event {
        let device = self.session.as_ref().map(|s| &s.device);
        Event {
            ts: now,
            device_id: device.map(|d| d.id.clone()),
            sector: device.map(|d| d.sector),
            kind: EventKind::Security(SecurityEvent {
                action,
                client_id: self.client_id.as_deref().map(clip),
                username: self.username.as_deref().map(clip),
                peer: Some(self.peer_text.clone()),
                topic: topic.as_deref().map(clip),
                reason: Some(reason),
            }),
        }
    }
}

/// Client-chosen strings in events are cut to this many bytes, so a 64 KiB client id
/// cannot inflate every event it causes.
pub const MAX_EVENT_FIELD: usize = 256;

fn clip(s: &str) -> String {
    if s.len() <= MAX_EVENT_FIELD {
        return s.to_owned();
    }
    let mut end = MAX_EVENT_FIELD;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", s.get(..end).unwrap_or_default())
}

/// Which of the device's publishable channels `topic` is, if any.
fn channel_of(session: &Session, topic: &str) -> Option<Channel> {
    if topic == session.telemetry {
        Some(Channel::Telemetry)
    } else if topic == session.state {
        Some(Channel::State)
    } else if topic == session.ack {
        Some(Channel::Ack)
    } else {
        None
    }
}

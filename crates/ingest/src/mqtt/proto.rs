//! One view of MQTT 3.1.1 and 5.0 packets over rumqttc's codecs: [`read`] turns a frame of
//! either version into an [`Inbound`], and the `write_*` functions encode what the broker
//! sends in the version the connection speaks.

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::QoS as Qos4;
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes::QoS as Qos5;
use rumqttc::v5::mqttbytes::v5;

/// The protocol version a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V311,
    V5,
}

impl Version {
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V311 => "3.1.1",
            Version::V5 => "5.0",
        }
    }
}

/// A last will as announced in CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    pub topic: String,
    pub payload: Bytes,
    pub qos: u8,
    pub retain: bool,
}

/// A packet a client sent, version-neutral.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    Connect {
        client_id: String,
        keep_alive: u16,
        username: Option<String>,
        password: Option<String>,
        will: Option<Will>,
    },
    Publish {
        /// `None` when the topic was not valid UTF-8.
        topic: Option<String>,
        payload: Bytes,
        qos: u8,
        retain: bool,
        pkid: u16,
        /// v5 topic alias (unsupported; we announce a maximum of 0).
        topic_alias: bool,
    },
    PubAck(u16),
    PubRec(u16),
    PubRel(u16),
    PubComp(u16),
    Subscribe {
        pkid: u16,
        filters: Vec<(String, u8)>,
    },
    Unsubscribe {
        pkid: u16,
        filters: Vec<String>,
    },
    PingReq,
    Disconnect,
    /// A packet only a server may send, or AUTH (unsupported).
    Unexpected(&'static str),
}

/// Why a frame could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadError {
    /// Not enough bytes yet.
    Incomplete,
    /// The frame announces more than the allowed size.
    TooLarge(usize),
    /// Not a valid packet.
    Malformed(String),
}

/// What the first bytes of a connection say about its CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peek {
    Incomplete,
    NotConnect,
    /// A CONNECT with this protocol name ("MQTT" = true) and level.
    Connect {
        mqtt_name: bool,
        level: u8,
    },
}

/// Peeks at the protocol level of a CONNECT without decoding it.
pub fn peek_connect(buf: &[u8]) -> Peek {
    let Some(&first) = buf.first() else {
        return Peek::Incomplete;
    };
    if first >> 4 != 1 {
        return Peek::NotConnect;
    }
    // Skip the remaining-length varint (1..=4 bytes).
    let mut i = 1;
    loop {
        let Some(&b) = buf.get(i) else {
            return Peek::Incomplete;
        };
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
        if i > 4 {
            return Peek::NotConnect;
        }
    }
    let (Some(&hi), Some(&lo)) = (buf.get(i), buf.get(i + 1)) else {
        return Peek::Incomplete;
    };
    let name_len = usize::from(u16::from_be_bytes([hi, lo]));
    let name_start = i + 2;
    let Some(name) = buf.get(name_start..name_start + name_len) else {
        return Peek::Incomplete;
    };
    let Some(&level) = buf.get(name_start + name_len) else {
        return Peek::Incomplete;
    };
    Peek::Connect {
        mqtt_name: name == b"MQTT",
        level,
    }
}

/// Reads one frame from the front of `buf` (consuming it on success or malformed input).
pub fn read(version: Version, buf: &mut BytesMut, max_frame: usize) -> Result<Inbound, ReadError> {
    match version {
        Version::V311 => read_v4(buf, max_frame),
        Version::V5 => read_v5(buf, max_frame),
    }
}

fn read_v4(buf: &mut BytesMut, max_frame: usize) -> Result<Inbound, ReadError> {
    use rumqttc::mqttbytes::Error as E;
    let packet = match v4::Packet::read(buf, max_frame) {
        Ok(p) => p,
        Err(E::InsufficientBytes(_)) => return Err(ReadError::Incomplete),
        Err(E::PayloadSizeLimitExceeded(n)) => return Err(ReadError::TooLarge(n)),
        Err(err) => return Err(ReadError::Malformed(err.to_string().to_lowercase())),
    };
    Ok(match packet {
        v4::Packet::Connect(c) => Inbound::Connect {
            client_id: c.client_id,
            keep_alive: c.keep_alive,
            username: c.login.as_ref().map(|l| l.username.clone()),
            password: c.login.map(|l| l.password),
            will: c.last_will.map(|w| Will {
                topic: w.topic,
                payload: w.message,
                qos: w.qos as u8,
                retain: w.retain,
            }),
        },
        v4::Packet::Publish(p) => Inbound::Publish {
            topic: Some(p.topic),
            payload: p.payload,
            qos: p.qos as u8,
            retain: p.retain,
            pkid: p.pkid,
            topic_alias: false,
        },
        v4::Packet::PubAck(a) => Inbound::PubAck(a.pkid),
        v4::Packet::PubRec(a) => Inbound::PubRec(a.pkid),
        v4::Packet::PubRel(a) => Inbound::PubRel(a.pkid),
        v4::Packet::PubComp(a) => Inbound::PubComp(a.pkid),
        v4::Packet::Subscribe(s) => Inbound::Subscribe {
            pkid: s.pkid,
            filters: s
                .filters
                .into_iter()
                .map(|f| (f.path, f.qos as u8))
                .collect(),
        },
        v4::Packet::Unsubscribe(u) => Inbound::Unsubscribe {
            pkid: u.pkid,
            filters: u.topics,
        },
        v4::Packet::PingReq => Inbound::PingReq,
        v4::Packet::Disconnect => Inbound::Disconnect,
        v4::Packet::ConnAck(_) => Inbound::Unexpected("connack"),
        v4::Packet::SubAck(_) => Inbound::Unexpected("suback"),
        v4::Packet::UnsubAck(_) => Inbound::Unexpected("unsuback"),
        v4::Packet::PingResp => Inbound::Unexpected("pingresp"),
    })
}

fn read_v5(buf: &mut BytesMut, max_frame: usize) -> Result<Inbound, ReadError> {
    use rumqttc::v5::mqttbytes::Error as E;
    let limit = u32::try_from(max_frame).unwrap_or(u32::MAX);
    let packet = match v5::Packet::read(buf, Some(limit)) {
        Ok(p) => p,
        Err(E::InsufficientBytes(_)) => return Err(ReadError::Incomplete),
        Err(E::PayloadSizeLimitExceeded { pkt_size, .. }) => {
            return Err(ReadError::TooLarge(pkt_size));
        }
        Err(err) => return Err(ReadError::Malformed(err.to_string().to_lowercase())),
    };
    Ok(match packet {
        v5::Packet::Connect(c, will, login) => Inbound::Connect {
            client_id: c.client_id,
            keep_alive: c.keep_alive,
            username: login.as_ref().map(|l| l.username.clone()),
            password: login.map(|l| l.password),
            will: will.map(|w| Will {
                topic: String::from_utf8_lossy(&w.topic).into_owned(),
                payload: w.message,
                qos: w.qos as u8,
                retain: w.retain,
            }),
        },
        v5::Packet::Publish(p) => Inbound::Publish {
            topic: std::str::from_utf8(&p.topic).ok().map(str::to_owned),
            topic_alias: p
                .properties
                .as_ref()
                .is_some_and(|pr| pr.topic_alias.is_some()),
            payload: p.payload,
            qos: p.qos as u8,
            retain: p.retain,
            pkid: p.pkid,
        },
        v5::Packet::PubAck(a) => Inbound::PubAck(a.pkid),
        v5::Packet::PubRec(a) => Inbound::PubRec(a.pkid),
        v5::Packet::PubRel(a) => Inbound::PubRel(a.pkid),
        v5::Packet::PubComp(a) => Inbound::PubComp(a.pkid),
        v5::Packet::Subscribe(s) => Inbound::Subscribe {
            pkid: s.pkid,
            filters: s
                .filters
                .into_iter()
                .map(|f| (f.path, f.qos as u8))
                .collect(),
        },
        v5::Packet::Unsubscribe(u) => Inbound::Unsubscribe {
            pkid: u.pkid,
            filters: u.filters,
        },
        v5::Packet::PingReq(_) => Inbound::PingReq,
        v5::Packet::Disconnect(_) => Inbound::Disconnect,
        v5::Packet::Auth(_) => Inbound::Unexpected("auth"),
        v5::Packet::ConnAck(_) => Inbound::Unexpected("connack"),
        v5::Packet::SubAck(_) => Inbound::Unexpected("suback"),
        v5::Packet::UnsubAck(_) => Inbound::Unexpected("unsuback"),
        v5::Packet::PingResp(_) => Inbound::Unexpected("pingresp"),
    })
}

/// Why a CONNECT was refused, mapped to each version's CONNACK code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    UnsupportedVersion,
    BadClientId,
    BadCredentials,
    NotAuthorized,
    ServerBusy,
    RateExceeded,
}

impl Refusal {
    /// The 3.1.1 CONNACK return code.
    pub fn v311_code(self) -> u8 {
        match self {
            Refusal::UnsupportedVersion => 1,
            Refusal::BadClientId => 2,
            Refusal::ServerBusy | Refusal::RateExceeded => 3,
            Refusal::BadCredentials => 4,
            Refusal::NotAuthorized => 5,
        }
    }

    /// The 5.0 CONNACK reason code.
    pub fn v5_code(self) -> u8 {
        match self {
            Refusal::UnsupportedVersion => 0x84,
            Refusal::BadClientId => 0x85,
            Refusal::BadCredentials => 0x86,
            Refusal::NotAuthorized => 0x87,
            Refusal::ServerBusy => 0x89,
            Refusal::RateExceeded => 0x9F,
        }
    }
}

/// CONNACK; `None` accepts. `server_keep_alive` is sent to 5.0 clients when we lowered theirs.
pub fn write_connack(
    version: Version,
    refusal: Option<Refusal>,
    server_keep_alive: Option<u16>,
    out: &mut BytesMut,
) {
    match version {
        Version::V311 => {
            let code = refusal.map_or(0, Refusal::v311_code);
            out.extend_from_slice(&[0x20, 0x02, 0x00, code]);
        }
        Version::V5 => {
            use v5::ConnectReturnCode as C;
            let code = match refusal {
                None => C::Success,
                Some(Refusal::UnsupportedVersion) => C::UnsupportedProtocolVersion,
                Some(Refusal::BadClientId) => C::ClientIdentifierNotValid,
                Some(Refusal::BadCredentials) => C::BadUserNamePassword,
                Some(Refusal::NotAuthorized) => C::NotAuthorized,
                Some(Refusal::ServerBusy) => C::ServerBusy,
                Some(Refusal::RateExceeded) => C::ConnectionRateExceeded,
            };
            let properties = refusal.is_none().then(|| v5::ConnAckProperties {
                topic_alias_max: Some(0),
                wildcard_subscription_available: Some(0),
                shared_subscription_available: Some(0),
                subscription_identifiers_available: Some(0),
                server_keep_alive,
                ..no_connack_properties()
            });
            let ack = v5::ConnAck {
                session_present: false,
                code,
                properties,
            };
            // Encoding our own small packets cannot fail.
            let _ = ack.write(out);
        }
    }
}

/// PUBACK (QoS 1); `denied` becomes reason 0x87 in 5.0 and a plain ack in 3.1.1.
pub fn write_puback(version: Version, pkid: u16, reason: AckReason, out: &mut BytesMut) {
    match version {
        Version::V311 => {
            let _ = v4::PubAck::new(pkid).write(out);
        }
        Version::V5 => {
            let mut ack = v5::PubAck::new(pkid, None);
            ack.reason = match reason {
                AckReason::Success => v5::PubAckReason::Success,
                AckReason::NotAuthorized => v5::PubAckReason::NotAuthorized,
                AckReason::TopicInvalid => v5::PubAckReason::TopicNameInvalid,
                AckReason::Quota => v5::PubAckReason::QuotaExceeded,
            };
            let _ = ack.write(out);
        }
    }
}

/// How a publish is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckReason {
    Success,
    NotAuthorized,
    TopicInvalid,
    Quota,
}

/// PUBREC (QoS 2, step 1).
pub fn write_pubrec(version: Version, pkid: u16, reason: AckReason, out: &mut BytesMut) {
    match version {
        Version::V311 => {
            let _ = v4::PubRec::new(pkid).write(out);
        }
        Version::V5 => {
            let mut rec = v5::PubRec::new(pkid, None);
            rec.reason = match reason {
                AckReason::Success => v5::PubRecReason::Success,
                AckReason::NotAuthorized => v5::PubRecReason::NotAuthorized,
                AckReason::TopicInvalid => v5::PubRecReason::TopicNameInvalid,
                AckReason::Quota => v5::PubRecReason::QuotaExceeded,
            };
            let _ = rec.write(out);
        }
    }
}

/// PUBREL (our QoS 2 deliveries, step 2).
pub fn write_pubrel(version: Version, pkid: u16, out: &mut BytesMut) {
    match version {
        Version::V311 => {
            let _ = v4::PubRel::new(pkid).write(out);
        }
        Version::V5 => {
            let _ = v5::PubRel::new(pkid, None).write(out);
        }
    }
}

/// PUBCOMP (QoS 2, step 3).
pub fn write_pubcomp(version: Version, pkid: u16, out: &mut BytesMut) {
    match version {
        Version::V311 => {
            let _ = v4::PubComp::new(pkid).write(out);
        }
        Version::V5 => {
            let _ = v5::PubComp::new(pkid, None).write(out);
        }
    }
}

/// SUBACK: `Some(qos)` granted, `None` refused (0x80 in 3.1.1, 0x87 in 5.0).
pub fn write_suback(version: Version, pkid: u16, results: &[Option<u8>], out: &mut BytesMut) {
    match version {
        Version::V311 => {
            let codes = results
                .iter()
                .map(|r| match r.and_then(qos_v4) {
                    Some(q) => v4::SubscribeReasonCode::Success(q),
                    None => v4::SubscribeReasonCode::Failure,
                })
                .collect();
            let _ = v4::SubAck::new(pkid, codes).write(out);
        }
        Version::V5 => {
            let codes = results
                .iter()
                .map(|r| match r.and_then(qos_v5) {
                    Some(q) => v5::SubscribeReasonCode::Success(q),
                    None => v5::SubscribeReasonCode::NotAuthorized,
                })
                .collect();
            let ack = v5::SubAck {
                pkid,
                return_codes: codes,
                properties: None,
            };
            let _ = ack.write(out);
        }
    }
}

/// UNSUBACK for `n` filters.
pub fn write_unsuback(version: Version, pkid: u16, n: usize, out: &mut BytesMut) {
    match version {
        Version::V311 => {
            let _ = v4::UnsubAck::new(pkid).write(out);
        }
        Version::V5 => {
            let ack = v5::UnsubAck {
                pkid,
                reasons: vec![v5::UnsubAckReason::Success; n],
                properties: None,
            };
            let _ = ack.write(out);
        }
    }
}

/// PINGRESP.
pub fn write_pingresp(out: &mut BytesMut) {
    out.extend_from_slice(&[0xD0, 0x00]);
}

/// A PUBLISH to a client.
pub fn write_publish(
    version: Version,
    topic: &str,
    payload: Bytes,
    qos: u8,
    pkid: u16,
    out: &mut BytesMut,
) {
    match version {
        Version::V311 => {
            let mut p =
                v4::Publish::from_bytes(topic, qos_v4(qos).unwrap_or(Qos4::AtMostOnce), payload);
            p.pkid = pkid;
            let _ = p.write(out);
        }
        Version::V5 => {
            let mut p = v5::Publish::new(
                topic,
                qos_v5(qos).unwrap_or(Qos5::AtMostOnce),
                payload,
                None,
            );
            p.pkid = pkid;
            let _ = p.write(out);
        }
    }
}

/// DISCONNECT with a reason (5.0 only; 3.1.1 servers just close).
pub fn write_disconnect(version: Version, reason: DisconnectReason, out: &mut BytesMut) {
    if version == Version::V5 {
        use v5::DisconnectReasonCode as D;
        let code = match reason {
            DisconnectReason::Malformed => D::MalformedPacket,
            DisconnectReason::ProtocolError => D::ProtocolError,
            DisconnectReason::TooLarge => D::PacketTooLarge,
            DisconnectReason::TakenOver => D::SessionTakenOver,
            DisconnectReason::Administrative => D::AdministrativeAction,
            DisconnectReason::ShuttingDown => D::ServerShuttingDown,
            DisconnectReason::KeepAliveTimeout => D::KeepAliveTimeout,
            DisconnectReason::TopicAliasInvalid => D::TopicAliasInvalid,
            DisconnectReason::MessageRateTooHigh => D::MessageRateTooHigh,
        };
        // Hand-encoded: rumqttc 0.25's `Disconnect::write` announces a remaining length of 1
        // but writes 2 bytes (reason code and an empty property length), corrupting the stream;
        // its reader also insists on the property length, so we always send it.
        out.extend_from_slice(&[0xE0, 0x02, code as u8, 0x00]);
    }
}

/// Why the broker closes a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectReason {
    Malformed,
    ProtocolError,
    TooLarge,
    TakenOver,
    Administrative,
    ShuttingDown,
    KeepAliveTimeout,
    TopicAliasInvalid,
    /// 0x96: the client publishes far above its rate limit.
    MessageRateTooHigh,
}

fn qos_v4(q: u8) -> Option<Qos4> {
    match q {
        0 => Some(Qos4::AtMostOnce),
        1 => Some(Qos4::AtLeastOnce),
        2 => Some(Qos4::ExactlyOnce),
        _ => None,
    }
}

fn qos_v5(q: u8) -> Option<Qos5> {
    match q {
        0 => Some(Qos5::AtMostOnce),
        1 => Some(Qos5::AtLeastOnce),
        2 => Some(Qos5::ExactlyOnce),
        _ => None,
    }
}

fn no_connack_properties() -> v5::ConnAckProperties {
    v5::ConnAckProperties {
        session_expiry_interval: None,
        receive_max: None,
        max_qos: None,
        retain_available: None,
        max_packet_size: None,
        assigned_client_identifier: None,
        topic_alias_max: None,
        reason_string: None,
        user_properties: Vec::new(),
        wildcard_subscription_available: None,
        subscription_identifiers_available: None,
        shared_subscription_available: None,
        server_keep_alive: None,
        response_information: None,
        server_reference: None,
        authentication_method: None,
        authentication_data: None,
    }
}

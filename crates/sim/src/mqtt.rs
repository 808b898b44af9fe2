//! The MQTT wire, without a client event loop: rumqttc's codecs for CONNECT, SUBSCRIBE and
//! everything read back, and a hand-written QoS 0/1 PUBLISH encoder for the hot path (it
//! writes straight into the connection's buffer, with no per-message allocation).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::{BufMut, BytesMut};
use rumqttc::mqttbytes::QoS as Q4;
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes::QoS as Q5;
use rumqttc::v5::mqttbytes::v5;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// The kernel send buffer of each connection (`SO_SNDBUF`).
pub const SEND_BUFFER: u32 = 32 * 1024;

/// The largest packet we accept from a broker.
pub const MAX_INCOMING: usize = 64 * 1024;

/// The MQTT protocol version a simulated device speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// MQTT 3.1.1.
    V4,
    /// MQTT 5.0.
    V5,
}

/// A packet read from the broker, reduced to what the simulator needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    ConnAck {
        accepted: bool,
        reason: String,
    },
    SubAck,
    Publish {
        topic: String,
        payload: Vec<u8>,
    },
    /// A publish acknowledged; `accepted` is false for an MQTT 5 refusal (reason >= 0x80).
    PubAck {
        accepted: bool,
    },
    PingResp,
    Disconnect,
    Other,
}

fn qos_of(qos: u8) -> (Q4, Q5) {
    match qos {
        0 => (Q4::AtMostOnce, Q5::AtMostOnce),
        1 => (Q4::AtLeastOnce, Q5::AtLeastOnce),
        _ => (Q4::ExactlyOnce, Q5::ExactlyOnce),
    }
}

/// Appends a CONNECT packet (clean session) to `buf`.
pub fn encode_connect(
    version: Version,
    client_id: &str,
    username: &str,
    password: &str,
    keep_alive_s: u16,
    buf: &mut BytesMut,
) -> Result<()> {
    match version {
        Version::V4 => {
            let mut connect = v4::Connect::new(client_id);
            connect.keep_alive = keep_alive_s;
            connect.set_login(username, password);
            connect.write(buf).context("encode connect")?;
        }
        Version::V5 => {
            let connect = v5::Connect {
                keep_alive: keep_alive_s,
                client_id: client_id.to_string(),
                clean_start: true,
                properties: None,
            };
            let login = Some(v5::Login::new(username, password));
            connect
                .write(&None, &login, buf)
                .context("encode connect")?;
        }
    }
    Ok(())
}

/// Appends a SUBSCRIBE for one filter to `buf`.
pub fn encode_subscribe(
    version: Version,
    pkid: u16,
    filter: &str,
    qos: u8,
    buf: &mut BytesMut,
) -> Result<()> {
    let (q4, q5) = qos_of(qos);
    match version {
        Version::V4 => {
            let mut sub = v4::Subscribe::new(filter, q4);
            sub.pkid = pkid;
            sub.write(buf).context("encode subscribe")?;
        }
        Version::V5 => {
            let mut sub = v5::Subscribe::new(v5::Filter::new(filter, q5), None);
            sub.pkid = pkid;
            sub.write(buf).context("encode subscribe")?;
        }
    }
    Ok(())
}

/// Appends a PUBLISH (QoS 0 or 1, no retain, no properties) to `buf`. The topic is the
/// concatenation of `topic` parts (so callers need not build a string per message); `pkid`
/// is ignored for QoS 0. Produces the same bytes as rumqttc's `Publish::write`.
pub fn encode_publish(
    version: Version,
    topic: &[&str],
    qos: u8,
    pkid: u16,
    payload: &[u8],
    buf: &mut BytesMut,
) {
    let qos = qos.min(1);
    let topic_len: usize = topic.iter().map(|part| part.len()).sum();
    let mut remaining = 2 + topic_len + payload.len();
    if qos > 0 {
        remaining += 2;
    }
    if version == Version::V5 {
        remaining += 1; // empty property length
    }
    buf.reserve(5 + remaining);
    buf.put_u8(0x30 | (qos << 1));
    let mut len = remaining;
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        buf.put_u8(byte);
        if len == 0 {
            break;
        }
    }
    buf.put_u16(topic_len as u16);
    for part in topic {
        buf.put_slice(part.as_bytes());
    }
    if qos > 0 {
        buf.put_u16(pkid);
    }
    if version == Version::V5 {
        buf.put_u8(0);
    }
    buf.put_slice(payload);
}

/// [`encode_publish`] with the RETAIN flag when `retain` (scenarios that abuse retained
/// messages; devices never retain).
pub fn encode_publish_retain(
    version: Version,
    topic: &str,
    qos: u8,
    pkid: u16,
    payload: &[u8],
    retain: bool,
    buf: &mut BytesMut,
) {
    let start = buf.len();
    encode_publish(version, &[topic], qos, pkid, payload, buf);
    if retain {
        buf[start] |= 0x01;
    }
}

/// Appends a PINGREQ.
pub fn encode_pingreq(buf: &mut BytesMut) {
    buf.put_slice(&[0xC0, 0x00]);
}

/// Appends a DISCONNECT (normal disconnection in both versions).
pub fn encode_disconnect(buf: &mut BytesMut) {
    buf.put_slice(&[0xE0, 0x00]);
}

/// Appends a PUBACK for `pkid` (QoS 1 commands from the broker).
pub fn encode_puback(pkid: u16, buf: &mut BytesMut) {
    buf.put_slice(&[0x40, 0x02]);
    buf.put_u16(pkid);
}

/// Takes one complete packet off the front of `buf`; `Ok(None)` when more bytes are needed.
/// Also returns the packet id of a QoS 1 publish, which the caller must acknowledge.
pub fn read_packet(version: Version, buf: &mut BytesMut) -> Result<Option<(Incoming, u16)>> {
    match version {
        Version::V4 => match v4::Packet::read(buf, MAX_INCOMING) {
            Ok(packet) => Ok(Some(match packet {
                v4::Packet::ConnAck(ack) => (
                    Incoming::ConnAck {
                        accepted: ack.code == v4::ConnectReturnCode::Success,
                        reason: format!("{:?}", ack.code),
                    },
                    0,
                ),
                v4::Packet::SubAck(_) => (Incoming::SubAck, 0),
                v4::Packet::Publish(p) => {
                    let pkid = if p.qos == Q4::AtMostOnce { 0 } else { p.pkid };
                    (
                        Incoming::Publish {
                            topic: p.topic,
                            payload: p.payload.to_vec(),
                        },
                        pkid,
                    )
                }
                v4::Packet::PubAck(_) => (Incoming::PubAck { accepted: true }, 0),
                v4::Packet::PingResp => (Incoming::PingResp, 0),
                v4::Packet::Disconnect => (Incoming::Disconnect, 0),
                _ => (Incoming::Other, 0),
            })),
            Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => Ok(None),
            Err(err) => bail!("malformed packet from broker: {err}"),
        },
        Version::V5 => match v5::Packet::read(buf, Some(MAX_INCOMING as u32)) {
            Ok(packet) => Ok(Some(match packet {
                v5::Packet::ConnAck(ack) => (
                    Incoming::ConnAck {
                        accepted: ack.code == v5::ConnectReturnCode::Success,
                        reason: format!("{:?}", ack.code),
                    },
                    0,
                ),
                v5::Packet::SubAck(_) => (Incoming::SubAck, 0),
                v5::Packet::Publish(p) => {
                    let pkid = if p.qos == Q5::AtMostOnce { 0 } else { p.pkid };
                    let topic = String::from_utf8_lossy(&p.topic).into_owned();
                    (
                        Incoming::Publish {
                            topic,
                            payload: p.payload.to_vec(),
                        },
                        pkid,
                    )
                }
                v5::Packet::PubAck(ack) => (
                    Incoming::PubAck {
                        accepted: matches!(
                            ack.reason,
                            v5::PubAckReason::Success | v5::PubAckReason::NoMatchingSubscribers
                        ),
                    },
                    0,
                ),
                v5::Packet::PingResp(_) => (Incoming::PingResp, 0),
                v5::Packet::Disconnect(_) => (Incoming::Disconnect, 0),
                _ => (Incoming::Other, 0),
            })),
            Err(rumqttc::v5::mqttbytes::Error::InsufficientBytes(_)) => Ok(None),
            Err(err) => bail!("malformed packet from broker: {err}"),
        },
    }
}

/// Reads from `stream` until one packet is complete.
pub async fn next_packet(
    version: Version,
    stream: &mut TcpStream,
    buf: &mut BytesMut,
) -> Result<(Incoming, u16)> {
    loop {
        if let Some(packet) = read_packet(version, buf)? {
            return Ok(packet);
        }
        if stream.read_buf(buf).await.context("read from broker")? == 0 {
            bail!("broker closed the connection");
        }
    }
}

/// How a connect attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectOutcome {
    Accepted,
    /// The broker answered with a refusal (e.g. bad user name or password).
    Refused(String),
}

/// Opens a TCP connection and performs the MQTT CONNECT/CONNACK exchange within `timeout`.
/// A broker that closes the socket instead of sending a refusing CONNACK counts as refused.
pub async fn connect(
    addr: SocketAddr,
    version: Version,
    client_id: &str,
    username: &str,
    password: &str,
    keep_alive_s: u16,
    timeout: Duration,
) -> Result<(TcpStream, BytesMut, ConnectOutcome)> {
    connect_from(
        addr,
        None,
        version,
        client_id,
        username,
        password,
        keep_alive_s,
        timeout,
    )
    .await
}

/// [`connect`] from a chosen local address (e.g. a distinct loopback address per attacker).
#[allow(clippy::too_many_arguments)]
pub async fn connect_from(
    addr: SocketAddr,
    source: Option<SocketAddr>,
    version: Version,
    client_id: &str,
    username: &str,
    password: &str,
    keep_alive_s: u16,
    timeout: Duration,
) -> Result<(TcpStream, BytesMut, ConnectOutcome)> {
    let attempt = async {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .context("create socket")?;
        // A device has little to say: a small fixed send buffer bounds the bytes queued in
        // the kernel when the broker falls behind (autotuning would allow megabytes per
        // connection, which hides a slow broker behind the simulator's own counters).
        socket
            .set_send_buffer_size(SEND_BUFFER)
            .context("set send buffer")?;
        if let Some(local) = source {
            socket
                .bind(local)
                .with_context(|| format!("bind {local}"))?;
        }
        let mut stream = socket
            .connect(addr)
            .await
            .with_context(|| format!("connect to {addr}"))?;
        stream.set_nodelay(true).context("set nodelay")?;
        let (buf, outcome) = exchange(
            &mut stream,
            version,
            client_id,
            username,
            password,
            keep_alive_s,
        )
        .await?;
        anyhow::Ok((stream, buf, outcome))
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .context("mqtt connect timed out")?
}

async fn bound_socket(addr: SocketAddr, source: Option<SocketAddr>) -> Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .context("create socket")?;
    if let Some(local) = source {
        socket
            .bind(local)
            .with_context(|| format!("bind {local}"))?;
    }
    let stream = socket
        .connect(addr)
        .await
        .with_context(|| format!("connect to {addr}"))?;
    stream.set_nodelay(true).context("set nodelay")?;
    Ok(stream)
}

/// The CONNECT/CONNACK exchange on an open stream (plain TCP or TLS).
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    version: Version,
    client_id: &str,
    username: &str,
    password: &str,
    keep_alive_s: u16,
) -> Result<(BytesMut, ConnectOutcome)> {
    let mut buf = BytesMut::with_capacity(128);
    encode_connect(
        version,
        client_id,
        username,
        password,
        keep_alive_s,
        &mut buf,
    )?;
    stream.write_all(&buf).await.context("send connect")?;
    stream.flush().await.context("send connect")?;
    buf.clear();
    let outcome = loop {
        if let Some((packet, _)) = read_packet(version, &mut buf)? {
            match packet {
                Incoming::ConnAck { accepted: true, .. } => break ConnectOutcome::Accepted,
                Incoming::ConnAck {
                    accepted: false,
                    reason,
                } => {
                    break ConnectOutcome::Refused(reason);
                }
                _ => continue,
            }
        }
        match stream.read_buf(&mut buf).await {
            Ok(0) | Err(_) => {
                break ConnectOutcome::Refused("connection closed before connack".into());
            }
            Ok(_) => {}
        }
    };
    Ok((buf, outcome))
}

/// A client certificate and its private key, both PEM.
#[derive(Clone)]
pub struct ClientCertificate {
    pub cert_pem: String,
    /// PKCS#8 PEM; secret.
    pub key_pem: String,
}

impl std::fmt::Debug for ClientCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCertificate")
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// A rustls client config that trusts `ca_pem` and presents `client` (mTLS).
pub fn tls_client_config(ca_pem: &str, client: &ClientCertificate) -> Result<rustls::ClientConfig> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots
            .add(cert.context("read the ca certificate")?)
            .context("trust the ca certificate")?;
    }
    let chain = rustls_pemfile::certs(&mut client.cert_pem.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
        .context("read the client certificate")?;
    let key = rustls_pemfile::private_key(&mut client.key_pem.as_bytes())
        .context("read the client key")?
        .context("no private key in the client key pem")?;
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("tls protocol versions")?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .context("client certificate and key do not form a pair")
}

/// Opens a TLS connection (server checked against the config's roots under the name
/// `server_name`, our client certificate presented) and performs the MQTT 3.1.1
/// CONNECT/CONNACK exchange with `client_id` and `username` and no password, within
/// `timeout`. The stream is closed afterwards.
pub async fn connect_tls_from(
    addr: SocketAddr,
    source: Option<SocketAddr>,
    config: std::sync::Arc<rustls::ClientConfig>,
    client_id: &str,
    username: &str,
    timeout: Duration,
) -> Result<ConnectOutcome> {
    let attempt = async {
        let tcp = bound_socket(addr, source).await?;
        let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
        let mut tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .with_context(|| format!("tls handshake with {addr}"))?;
        let (_, outcome) = exchange(&mut tls, Version::V4, client_id, username, "", 30).await?;
        let _ = tls.shutdown().await;
        anyhow::Ok(outcome)
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .context("mqtt tls connect timed out")?
}

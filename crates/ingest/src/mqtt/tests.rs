//! Sans-IO tests of the connection state machine and the payload decoders.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use model::{
    Credential, Device, DeviceClass, DeviceId, DeviceStatus, Event, EventKind, Reading, Timestamp,
    Value,
};
use proptest::prelude::*;
use rumqttc::mqttbytes::QoS as Q4;
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes::QoS as Q5;
use rumqttc::v5::mqttbytes::v5;

use super::decode::{self, DecodeError};
use super::limit::{Bucket, DeviceLimit};
use super::proto::Version;
use super::session::{Claim, Connection, Context, Limits, Output, TlsIdentity};

const NOW: Timestamp = Timestamp::from_millis(1_795_000_000_000);

fn device(
    id: &str,
    class: DeviceClass,
    creds: Vec<Credential>,
    status: DeviceStatus,
) -> Arc<Device> {
    Arc::new(Device {
        id: DeviceId::new(id).unwrap(),
        sector: class.sector(),
        class,
        zone: "z1".into(),
        owner: "water".into(),
        vendor: "acme".into(),
        model: "m".into(),
        firmware: "1.0".into(),
        addresses: Vec::new(),
        location: None,
        credentials: creds,
        status,
        created_at: Timestamp::from_millis(0),
    })
}

struct FakeCtx {
    devices: HashMap<String, Arc<Device>>,
    /// client id -> address of a live session.
    live: HashMap<String, SocketAddr>,
    replace_other_address: bool,
    subscribed: Vec<String>,
    retained: HashMap<String, Bytes>,
    limit: Option<Bucket>,
}

impl FakeCtx {
    fn new() -> FakeCtx {
        let secret = Credential::Secret {
            hash: crate::credentials::hash_secret("s3cret"),
        };
        let mut devices = HashMap::new();
        for d in [
            device(
                "pump-7",
                DeviceClass::Pump,
                vec![secret.clone()],
                DeviceStatus::Active,
            ),
            device(
                "siren-1",
                DeviceClass::Siren,
                vec![secret.clone()],
                DeviceStatus::Active,
            ),
            device(
                "old-1",
                DeviceClass::Pump,
                vec![secret.clone()],
                DeviceStatus::Revoked,
            ),
            device("bare-1", DeviceClass::Pump, vec![], DeviceStatus::Active),
            device(
                "cam-1",
                DeviceClass::Camera,
                vec![Credential::Certificate {
                    sha256: "ab".repeat(32),
                }],
                DeviceStatus::Active,
            ),
        ] {
            devices.insert(d.id.as_str().to_owned(), d);
        }
        FakeCtx {
            devices,
            live: HashMap::new(),
            replace_other_address: false,
            subscribed: vec![],
            retained: HashMap::new(),
            limit: None,
        }
    }
}

impl Context for FakeCtx {
    fn device(&self, id: &str) -> Option<Arc<Device>> {
        self.devices.get(id).cloned()
    }
    fn claim(&mut self, client_id: &str, peer: SocketAddr) -> Claim {
        let result = match self.live.get(client_id) {
            None => Claim::Free,
            Some(old) if old.ip() == peer.ip() => Claim::Replaced { same_address: true },
            Some(_) if self.replace_other_address => Claim::Replaced {
                same_address: false,
            },
            Some(_) => return Claim::Refused,
        };
        self.live.insert(client_id.to_owned(), peer);
        result
    }
    fn subscribe(&mut self, topic: &str, _qos: u8) {
        self.subscribed.push(topic.to_owned());
    }
    fn unsubscribe(&mut self, topic: &str) {
        self.subscribed.retain(|t| t != topic);
    }
    fn retain(&mut self, topic: &str, payload: Bytes) -> bool {
        self.retained.insert(topic.to_owned(), payload);
        true
    }
    fn rate_limit(&self, _device_id: &str) -> Option<Bucket> {
        self.limit.clone()
    }
}

fn peer() -> SocketAddr {
    "10.0.0.7:5000".parse().unwrap()
}

/// Client-side encoders for both versions.
enum Pkt<'a> {
    Connect {
        client_id: &'a str,
        user: Option<&'a str>,
        pass: Option<&'a str>,
    },
    Publish {
        topic: &'a str,
        payload: &'a [u8],
        qos: u8,
        pkid: u16,
        retain: bool,
    },
    Subscribe {
        filter: &'a str,
        qos: u8,
        pkid: u16,
    },
    PubRel(u16),
    PubAck(u16),
    Disconnect,
}

fn q4(q: u8) -> Q4 {
    [Q4::AtMostOnce, Q4::AtLeastOnce, Q4::ExactlyOnce][q as usize]
}
fn q5(q: u8) -> Q5 {
    [Q5::AtMostOnce, Q5::AtLeastOnce, Q5::ExactlyOnce][q as usize]
}

fn encode(v: Version, p: Pkt<'_>) -> BytesMut {
    let mut b = BytesMut::new();
    match (v, p) {
        (
            Version::V311,
            Pkt::Connect {
                client_id,
                user,
                pass,
            },
        ) => {
            let mut c = v4::Connect::new(client_id);
            if let Some(u) = user {
                c.set_login(u, pass.unwrap_or(""));
            }
            c.write(&mut b).unwrap();
        }
        (
            Version::V5,
            Pkt::Connect {
                client_id,
                user,
                pass,
            },
        ) => {
            let c = v5::Connect {
                keep_alive: 30,
                client_id: client_id.into(),
                clean_start: true,
                properties: None,
            };
            let login = user.map(|u| v5::Login::new(u, pass.unwrap_or("")));
            v5::Packet::Connect(c, None, login)
                .write(&mut b, None)
                .unwrap();
        }
        (
            Version::V311,
            Pkt::Publish {
                topic,
                payload,
                qos,
                pkid,
                retain,
            },
        ) => {
            let mut p = v4::Publish::new(topic, q4(qos), payload.to_vec());
            p.pkid = pkid;
            p.retain = retain;
            p.write(&mut b).unwrap();
        }
        (
            Version::V5,
            Pkt::Publish {
                topic,
                payload,
                qos,
                pkid,
                retain,
            },
        ) => {
            let mut p = v5::Publish::new(topic, q5(qos), payload.to_vec(), None);
            p.pkid = pkid;
            p.retain = retain;
            p.write(&mut b).unwrap();
        }
        (Version::V311, Pkt::Subscribe { filter, qos, pkid }) => {
            let mut s = v4::Subscribe::new(filter, q4(qos));
            s.pkid = pkid;
            s.write(&mut b).unwrap();
        }
        (Version::V5, Pkt::Subscribe { filter, qos, pkid }) => {
            let mut s = v5::Subscribe::new(v5::Filter::new(filter, q5(qos)), None);
            s.pkid = pkid;
            s.write(&mut b).unwrap();
        }
        (Version::V311, Pkt::PubRel(id)) => {
            v4::PubRel::new(id).write(&mut b).unwrap();
        }
        (Version::V5, Pkt::PubRel(id)) => {
            v5::PubRel::new(id, None).write(&mut b).unwrap();
        }
        (Version::V311, Pkt::PubAck(id)) => {
            v4::PubAck::new(id).write(&mut b).unwrap();
        }
        (Version::V5, Pkt::PubAck(id)) => {
            v5::PubAck::new(id, None).write(&mut b).unwrap();
        }
        (Version::V311, Pkt::Disconnect) => {
            v4::Packet::Disconnect.write(&mut b, 10).unwrap();
        }
        (Version::V5, Pkt::Disconnect) => {
            v5::Disconnect::new(v5::DisconnectReasonCode::NormalDisconnection)
                .write(&mut b)
                .unwrap();
        }
    }
    b
}

/// The server's output, rendered one packet per line, version-neutral.
fn render(v: Version, out: &mut BytesMut) -> Vec<String> {
    let mut lines = vec![];
    while !out.is_empty() {
        let line = match v {
            Version::V311 => match v4::Packet::read(out, 1 << 20).unwrap() {
                v4::Packet::ConnAck(a) => format!("connack {}", a.code as u8),
                v4::Packet::PubAck(a) => format!("puback {}", a.pkid),
                v4::Packet::PubRec(a) => format!("pubrec {}", a.pkid),
                v4::Packet::PubComp(a) => format!("pubcomp {}", a.pkid),
                v4::Packet::SubAck(a) => format!("suback {:?}", a.return_codes),
                v4::Packet::Publish(p) => {
                    format!("publish {} q{} id{}", p.topic, p.qos as u8, p.pkid)
                }
                other => format!("{other:?}"),
            },
            Version::V5 => match v5::Packet::read(out, None).unwrap() {
                v5::Packet::ConnAck(a) => format!("connack {:?}", a.code),
                v5::Packet::PubAck(a) => format!("puback {} {:?}", a.pkid, a.reason),
                v5::Packet::PubRec(a) => format!("pubrec {} {:?}", a.pkid, a.reason),
                v5::Packet::PubComp(a) => format!("pubcomp {}", a.pkid),
                v5::Packet::SubAck(a) => format!("suback {:?}", a.return_codes),
                v5::Packet::Disconnect(d) => format!("disconnect {:?}", d.reason_code),
                v5::Packet::Publish(p) => {
                    format!(
                        "publish {} q{} id{}",
                        String::from_utf8_lossy(&p.topic),
                        p.qos as u8,
                        p.pkid
                    )
                }
                other => format!("{other:?}"),
            },
        };
        lines.push(line);
    }
    lines
}

/// One security event rendered as `action reason [topic]`, other events by kind.
fn ev(e: &Event) -> String {
    match &e.kind {
        EventKind::Security(s) => {
            let mut line = format!("{} {}", s.action, s.reason.as_deref().unwrap_or(""));
            if let Some(t) = &s.topic {
                line.push_str(&format!(" [{t}]"));
            }
            line
        }
        EventKind::Telemetry { readings } => format!("telemetry {}", readings.len()),
        EventKind::State { readings } => format!("state {}", readings.len()),
        EventKind::Command { .. } => "command".into(),
        EventKind::Flow(_) => "flow".into(),
        EventKind::CitizenReport { .. } => "report".into(),
    }
}

struct Run {
    conn: Connection,
    ctx: FakeCtx,
    v: Version,
}

impl Run {
    fn new(v: Version) -> Run {
        Run {
            conn: Connection::new(peer(), None, Limits::default()),
            ctx: FakeCtx::new(),
            v,
        }
    }
    fn send(&mut self, p: Pkt<'_>) -> (Vec<String>, Vec<String>) {
        let bytes = encode(self.v, p);
        self.raw(&bytes)
    }
    fn raw(&mut self, bytes: &[u8]) -> (Vec<String>, Vec<String>) {
        self.raw_at(bytes, NOW).0
    }
    /// Sends at `NOW + ms`; also returns the counter deltas.
    fn send_at(
        &mut self,
        p: Pkt<'_>,
        ms: i64,
    ) -> ((Vec<String>, Vec<String>), super::metrics::Stats) {
        let bytes = encode(self.v, p);
        self.raw_at(&bytes, NOW.saturating_add_ms(ms))
    }
    fn raw_at(
        &mut self,
        bytes: &[u8],
        now: Timestamp,
    ) -> ((Vec<String>, Vec<String>), super::metrics::Stats) {
        let mut out = Output::default();
        self.conn.handle(bytes, now, &mut self.ctx, &mut out);
        (
            (
                render(self.v, &mut out.write),
                out.events.iter().map(ev).collect(),
            ),
            out.stats,
        )
    }
    fn login(&mut self, id: &str) {
        let (w, e) = self.send(Pkt::Connect {
            client_id: id,
            user: Some(id),
            pass: Some("s3cret"),
        });
        assert!(
            w[0].contains("connack 0") || w[0].contains("Success"),
            "{w:?} {e:?}"
        );
    }
}

/// (client id, username, password, 3.1.1 code, 5.0 code, event prefix)
type ConnectCase = (
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
    u8,
    &'static str,
    &'static str,
);

#[test]
fn connect_decisions() {
    // (client id, username, password, 3.1.1 code, 5.0 code, event)
    let cases: &[ConnectCase] = &[
        (
            "pump-7",
            Some("pump-7"),
            Some("s3cret"),
            0,
            "Success",
            "connect_accepted mqtt",
        ),
        (
            "pump-7",
            Some("pump-7"),
            Some("wrong"),
            4,
            "BadUserNamePassword",
            "auth_failure bad password",
        ),
        (
            "ghost",
            Some("ghost"),
            Some("s3cret"),
            4,
            "BadUserNamePassword",
            "connect_refused unknown device",
        ),
        (
            "old-1",
            Some("old-1"),
            Some("s3cret"),
            5,
            "NotAuthorized",
            "connect_refused device revoked",
        ),
        (
            "pump-7",
            None,
            None,
            5,
            "NotAuthorized",
            "connect_refused missing credentials",
        ),
        (
            "other",
            Some("pump-7"),
            Some("s3cret"),
            2,
            "ClientIdentifierNotValid",
            "connect_refused client id does not match",
        ),
        (
            "bare-1",
            Some("bare-1"),
            Some("x"),
            5,
            "NotAuthorized",
            "connect_refused device has no secret",
        ),
    ];
    for &(cid, user, pass, code4, code5, event) in cases {
        for v in [Version::V311, Version::V5] {
            let mut run = Run::new(v);
            let (w, e) = run.send(Pkt::Connect {
                client_id: cid,
                user,
                pass,
            });
            let want = match v {
                Version::V311 => format!("connack {code4}"),
                Version::V5 => format!("connack {code5}"),
            };
            assert_eq!(w, vec![want], "{cid} {user:?} {v:?}");
            assert_eq!(e.len(), 1, "{e:?}");
            assert!(e[0].starts_with(event), "{v:?}: {} !~ {event}", e[0]);
            assert_eq!(run.conn.is_connected(), code4 == 0);
            assert_eq!(run.conn.is_closed(), code4 != 0);
        }
    }
}

#[test]
fn unsupported_protocol_level_and_garbage() {
    let mut run = Run::new(Version::V311);
    // MQTT 3.1: "MQIsdp" level 3.
    let mut c = vec![0x10, 0x12, 0x00, 0x06];
    c.extend_from_slice(b"MQIsdp");
    c.extend_from_slice(&[3, 0x02, 0, 30, 0, 4]);
    c.extend_from_slice(b"abcd");
    let (w, e) = run.raw(&c);
    assert_eq!(w, vec!["connack 1"]);
    assert_eq!(e, vec!["connect_refused unsupported protocol level 3"]);
    assert!(run.conn.is_closed());

    let mut run = Run::new(Version::V311);
    let (w, e) = run.raw(b"GET / HTTP/1.1\r\n\r\n");
    assert!(w.is_empty());
    assert_eq!(e, vec!["malformed_packet first packet is not connect"]);
    assert!(run.conn.is_closed());
}

#[test]
fn publish_acl_and_qos1() {
    for v in [Version::V311, Version::V5] {
        let mut run = Run::new(v);
        run.login("pump-7");
        let (w, e) = run.send(Pkt::Publish {
            topic: "city/water/pump-7/telemetry",
            payload: br#"{"temp_c":21.5}"#,
            qos: 1,
            pkid: 3,
            retain: false,
        });
        assert_eq!(e, vec!["telemetry 1"]);
        assert!(w[0].starts_with("puback 3"), "{w:?}");
        // Another device's topic, a cmd topic, a retained cmd and $SYS: all denied.
        for (topic, retain, reason) in [
            (
                "city/water/pump-8/telemetry",
                false,
                "topic outside device namespace",
            ),
            ("city/water/pump-7/cmd", false, "publish to cmd topic"),
            (
                "city/water/pump-7/cmd",
                true,
                "retained publish on cmd topic",
            ),
            ("$SYS/broker", false, "publish to $ topic"),
            (
                "city/public_safety/siren-1/state",
                false,
                "topic outside device namespace",
            ),
        ] {
            let (w, e) = run.send(Pkt::Publish {
                topic,
                payload: b"{}",
                qos: 1,
                pkid: 4,
                retain,
            });
            assert_eq!(e, vec![format!("publish_denied {reason} [{topic}]")]);
            let want = match v {
                Version::V311 => "puback 4".to_owned(),
                Version::V5 => "puback 4 NotAuthorized".to_owned(),
            };
            assert_eq!(w, vec![want]);
        }
        assert!(run.conn.is_connected());
        assert!(run.ctx.retained.is_empty());
    }
}

/// Issue 9: while the platform cannot take events (`Connection::set_refusing`, from
/// `EventSink::admits`), nothing is acknowledged and then lost: QoS 0 is dropped and
/// counted, a 5.0 client gets 0x97 quota exceeded at QoS 1 and 2 and stays connected, a
/// 3.1.1 client (no negative acknowledgement) is disconnected; once the platform takes
/// events again, publishes are acknowledged as before.
#[test]
fn publishes_are_refused_while_the_platform_cannot_take_them() {
    // (version, qos, what is written, connected after, events)
    let cases: &[(Version, u8, &[&str], bool)] = &[
        (Version::V5, 0, &[], true),
        (Version::V5, 1, &["puback 9 QuotaExceeded"], true),
        (Version::V5, 2, &["pubrec 9 QuotaExceeded"], true),
        (Version::V311, 0, &[], true),
        (Version::V311, 1, &[], false),
        (Version::V311, 2, &[], false),
    ];
    for &(v, qos, want, connected) in cases {
        let mut run = Run::new(v);
        run.login("pump-7");
        run.conn.set_refusing(true);
        let ((w, e), stats) = run.send_at(
            Pkt::Publish {
                topic: "city/water/pump-7/telemetry",
                payload: br#"{"temp_c":21.5}"#,
                qos,
                pkid: 9,
                retain: false,
            },
            0,
        );
        let case = format!("{v:?} qos {qos}");
        assert_eq!(w, want, "{case}");
        assert!(
            !e.iter().any(|e| e.starts_with("telemetry")),
            "{case}: {e:?}"
        );
        assert_eq!(stats.refused_unavailable, 1, "{case}");
        assert_eq!(stats.dropped, u64::from(qos == 0), "{case}");
        assert_eq!(run.conn.is_connected(), connected, "{case}");
        if connected {
            run.conn.set_refusing(false);
            let (w, e) = run.send(Pkt::Publish {
                topic: "city/water/pump-7/telemetry",
                payload: br#"{"temp_c":21.5}"#,
                qos: 1,
                pkid: 10,
                retain: false,
            });
            assert_eq!(e, vec!["telemetry 1"], "{case}");
            assert!(w[0].starts_with("puback 10"), "{case}: {w:?}");
        }
    }
}

#[test]
fn state_ack_retain_and_invalid_payloads() {
    let mut run = Run::new(Version::V311);
    run.login("siren-1");
    let (_, e) = run.send(Pkt::Publish {
        topic: "city/public_safety/siren-1/state",
        payload: br#"{"sounding":true}"#,
        qos: 0,
        pkid: 0,
        retain: true,
    });
    assert_eq!(e, vec!["state 1"]);
    assert!(
        run.ctx
            .retained
            .contains_key("city/public_safety/siren-1/state")
    );
    let (_, e) = run.send(Pkt::Publish {
        topic: "city/public_safety/siren-1/ack",
        payload: br#"{"cmd":"c1","ok":true}"#,
        qos: 0,
        pkid: 0,
        retain: false,
    });
    assert_eq!(e, vec!["state 2"]);
    let (w, e) = run.send(Pkt::Publish {
        topic: "city/public_safety/siren-1/telemetry",
        payload: b"not json",
        qos: 1,
        pkid: 9,
        retain: false,
    });
    assert_eq!(
        e,
        vec!["payload_invalid payload is not json [city/public_safety/siren-1/telemetry]"]
    );
    assert_eq!(w, vec!["puback 9"], "an invalid payload was still received");
}

#[test]
fn qos2_flow_is_exactly_once() {
    for v in [Version::V311, Version::V5] {
        let mut run = Run::new(v);
        run.login("pump-7");
        let p = Pkt::Publish {
            topic: "city/water/pump-7/telemetry",
            payload: br#"{"a":1}"#,
            qos: 2,
            pkid: 5,
            retain: false,
        };
        let (w, e) = run.send(p);
        assert_eq!(e, vec!["telemetry 1"]);
        assert!(w[0].starts_with("pubrec 5"), "{w:?}");
        // A duplicate before PUBREL: acknowledged, not re-emitted.
        let (w, e) = run.send(Pkt::Publish {
            topic: "city/water/pump-7/telemetry",
            payload: br#"{"a":1}"#,
            qos: 2,
            pkid: 5,
            retain: false,
        });
        assert!(e.is_empty(), "{e:?}");
        assert!(w[0].starts_with("pubrec 5"));
        let (w, _) = run.send(Pkt::PubRel(5));
        assert_eq!(w, vec!["pubcomp 5"]);
        // After PUBCOMP the id is free for a new message.
        let (_, e) = run.send(Pkt::Publish {
            topic: "city/water/pump-7/telemetry",
            payload: br#"{"a":2}"#,
            qos: 2,
            pkid: 5,
            retain: false,
        });
        assert_eq!(e, vec!["telemetry 1"]);
    }
}

#[test]
fn subscribe_acl() {
    for v in [Version::V311, Version::V5] {
        let mut run = Run::new(v);
        run.login("pump-7");
        let (w, e) = run.send(Pkt::Subscribe {
            filter: "city/water/pump-7/cmd",
            qos: 1,
            pkid: 1,
        });
        assert_eq!(w, vec!["suback [Success(AtLeastOnce)]"]);
        assert!(e.is_empty());
        assert_eq!(run.ctx.subscribed, vec!["city/water/pump-7/cmd"]);
        let denied = match v {
            Version::V311 => "suback [Failure]",
            Version::V5 => "suback [NotAuthorized]",
        };
        for (filter, reason) in [
            ("city/#", "wildcard subscription"),
            ("city/water/+/cmd", "wildcard subscription"),
            ("$SYS/broker/clients", "$ topic subscription"),
            ("city/water/pump-8/cmd", "topic outside device namespace"),
            (
                "city/water/pump-7/telemetry",
                "topic outside device namespace",
            ),
        ] {
            let (w, e) = run.send(Pkt::Subscribe {
                filter,
                qos: 0,
                pkid: 2,
            });
            assert_eq!(w, vec![denied], "{filter}");
            assert_eq!(e, vec![format!("subscribe_denied {reason} [{filter}]")]);
        }
        assert_eq!(run.ctx.subscribed.len(), 1);
    }
}

#[test]
fn delivery_to_subscriber_with_qos() {
    let mut run = Run::new(Version::V311);
    run.login("siren-1");
    run.send(Pkt::Subscribe {
        filter: "city/public_safety/siren-1/cmd",
        qos: 1,
        pkid: 1,
    });
    let mut out = Output::default();
    assert!(run.conn.deliver(
        "city/public_safety/siren-1/cmd",
        Bytes::from_static(b"{\"sound\":true}"),
        2,
        &mut out
    ));
    // Downgraded to the granted QoS 1.
    assert_eq!(
        render(Version::V311, &mut out.write),
        vec!["publish city/public_safety/siren-1/cmd q1 id1"]
    );
    run.send(Pkt::PubAck(1));
    // The in-flight window is bounded.
    let limits = Limits {
        max_inflight: 2,
        ..Limits::default()
    };
    let mut run2 = Run {
        conn: Connection::new(peer(), None, limits),
        ctx: FakeCtx::new(),
        v: Version::V311,
    };
    run2.login("siren-1");
    run2.send(Pkt::Subscribe {
        filter: "city/public_safety/siren-1/cmd",
        qos: 1,
        pkid: 1,
    });
    let mut out = Output::default();
    let sent: Vec<bool> = (0..3)
        .map(|_| {
            run2.conn
                .deliver("city/public_safety/siren-1/cmd", Bytes::new(), 1, &mut out)
        })
        .collect();
    assert_eq!(sent, vec![true, true, false]);
    assert_eq!(out.stats.dropped, 1);
}

#[test]
fn client_id_takeover() {
    // Same address: replaces, reported.
    let mut run = Run::new(Version::V311);
    run.ctx
        .live
        .insert("pump-7".into(), "10.0.0.7:4000".parse().unwrap());
    let (w, e) = run.send(Pkt::Connect {
        client_id: "pump-7",
        user: Some("pump-7"),
        pass: Some("s3cret"),
    });
    assert_eq!(w, vec!["connack 0"]);
    assert_eq!(
        e[0],
        "client_id_takeover replaced live session from the same address"
    );
    // Another address: refused, reported.
    let mut run = Run::new(Version::V5);
    run.ctx
        .live
        .insert("pump-7".into(), "10.9.9.9:4000".parse().unwrap());
    let (w, e) = run.send(Pkt::Connect {
        client_id: "pump-7",
        user: Some("pump-7"),
        pass: Some("s3cret"),
    });
    assert_eq!(w, vec!["connack ClientIdentifierNotValid"]);
    assert_eq!(
        e,
        vec!["client_id_takeover client id in use from another address"]
    );
    assert!(run.conn.is_closed());
}

#[test]
fn certificate_identity() {
    let mk = |cn: &str, sha: &str| {
        Some(TlsIdentity {
            cn: Some(cn.into()),
            sha256: sha.into(),
        })
    };
    // (tls identity, client id, username, expected 3.1.1 code, event, device named)
    let cases = [
        (
            mk("cam-1", &"ab".repeat(32)),
            "cam-1",
            None,
            0,
            "connect_accepted mqtt 3.1.1 certificate",
            Some("cam-1"),
        ),
        (
            mk("cam-1", &"cd".repeat(32)),
            "cam-1",
            None,
            4,
            "auth_failure certificate not registered",
            Some("cam-1"),
        ),
        (
            mk("cam-1", &"ab".repeat(32)),
            "cam-1",
            Some("pump-7"),
            4,
            "auth_failure username does not match certificate cn",
            // The device posed as, not the certificate's owner.
            Some("pump-7"),
        ),
        // Another device's certificate with a made-up name: refused, no device named.
        (
            mk("cam-1", &"ab".repeat(32)),
            "ghost-9",
            Some("ghost-9"),
            4,
            "auth_failure username does not match certificate cn",
            None,
        ),
        // No pins registered: a CA-issued certificate naming the device suffices.
        (
            mk("pump-7", "00"),
            "pump-7",
            Some("pump-7"),
            0,
            "connect_accepted mqtt 3.1.1 certificate",
            Some("pump-7"),
        ),
    ];
    for (tls, cid, user, code, event, device) in cases {
        let mut run = Run {
            conn: Connection::new(peer(), tls, Limits::default()),
            ctx: FakeCtx::new(),
            v: Version::V311,
        };
        let bytes = encode(
            run.v,
            Pkt::Connect {
                client_id: cid,
                user,
                pass: None,
            },
        );
        let mut out = Output::default();
        run.conn.handle(&bytes, NOW, &mut run.ctx, &mut out);
        let w = render(run.v, &mut out.write);
        let e: Vec<String> = out.events.iter().map(ev).collect();
        assert_eq!(w, vec![format!("connack {code}")], "{event}");
        assert!(e[0].starts_with(event), "{} !~ {event}", e[0]);
        let named = out.events[0].device_id.as_ref().map(|d| d.as_str());
        assert_eq!(named, device, "{event}");
    }
}

#[test]
fn malformed_and_oversized_close_the_connection() {
    let mut run = Run::new(Version::V5);
    run.login("pump-7");
    // A PUBLISH whose topic length runs past the packet.
    let (w, e) = run.raw(&[0x30, 0x03, 0x00, 0x09, b'a']);
    assert_eq!(w, vec!["disconnect MalformedPacket"]);
    assert!(e[0].starts_with("malformed_packet"), "{e:?}");
    assert_eq!(e.last().unwrap(), "disconnect malformed packet (unclean)");
    assert!(run.conn.is_closed());

    let limits = Limits {
        max_payload_bytes: 100,
        ..Limits::default()
    };
    let mut run = Run {
        conn: Connection::new(peer(), None, limits),
        ctx: FakeCtx::new(),
        v: Version::V5,
    };
    run.login("pump-7");
    let big = vec![b'x'; 200];
    let (w, e) = run.send(Pkt::Publish {
        topic: "city/water/pump-7/telemetry",
        payload: &big,
        qos: 1,
        pkid: 1,
        retain: false,
    });
    assert_eq!(w, vec!["puback 1 QuotaExceeded"]);
    assert!(
        e[0].starts_with("oversized_payload payload of 200 bytes"),
        "{e:?}"
    );
    let huge = vec![b'x'; 5000];
    let (w, e) = run.send(Pkt::Publish {
        topic: "city/water/pump-7/telemetry",
        payload: &huge,
        qos: 0,
        pkid: 0,
        retain: false,
    });
    assert_eq!(w, vec!["disconnect PacketTooLarge"]);
    assert!(e[0].starts_with("oversized_payload packet of"), "{e:?}");
    assert!(run.conn.is_closed());
}

#[test]
fn denied_floods_are_summarised() {
    let mut run = Run::new(Version::V311);
    run.login("pump-7");
    let mut events = 0;
    for i in 0..200u16 {
        let (_, e) = run.send(Pkt::Publish {
            topic: "elsewhere",
            payload: b"x",
            qos: 1,
            pkid: i + 1,
            retain: false,
        });
        events += e.len();
    }
    assert_eq!(events, 20);
    let mut out = Output::default();
    run.conn
        .close(NOW, "connection closed by peer", false, &mut out);
    let rendered: Vec<String> = out.events.iter().map(ev).collect();
    assert_eq!(
        rendered,
        vec![
            "publish_denied 180 similar events suppressed",
            "disconnect connection closed by peer (unclean)"
        ]
    );
}

#[test]
fn will_is_published_when_the_session_goes_silent() {
    let mut c = v4::Connect::new("siren-1");
    c.set_login("siren-1", "s3cret");
    c.last_will = Some(v4::LastWill::new(
        "city/public_safety/siren-1/state",
        r#"{"online":false}"#,
        Q4::AtMostOnce,
        false,
    ));
    let mut bytes = BytesMut::new();
    c.write(&mut bytes).unwrap();
    let mut run = Run::new(Version::V311);
    let (w, _) = run.raw(&bytes);
    assert_eq!(w, vec!["connack 0"]);
    let mut out = Output::default();
    run.conn.kick(
        super::proto::DisconnectReason::KeepAliveTimeout,
        "keep-alive timeout",
        NOW,
        &mut out,
    );
    let got: Vec<String> = out.events.iter().map(ev).collect();
    assert_eq!(
        got,
        vec!["state 1", "disconnect keep-alive timeout (unclean)"]
    );
    // A will outside the device's namespace is refused at CONNECT.
    let mut c = v4::Connect::new("siren-1");
    c.set_login("siren-1", "s3cret");
    c.last_will = Some(v4::LastWill::new(
        "city/public_safety/siren-2/state",
        "x",
        Q4::AtMostOnce,
        false,
    ));
    let mut bytes = BytesMut::new();
    c.write(&mut bytes).unwrap();
    let mut run = Run::new(Version::V311);
    let (_, e) = run.raw(&bytes);
    assert_eq!(
        e[0],
        "publish_denied will topic outside device namespace [city/public_safety/siren-2/state]"
    );
}

#[test]
fn long_client_strings_are_clipped_in_events() {
    let long_id = "é".repeat(1000);
    let mut run = Run::new(Version::V311);
    let mut out = Output::default();
    let bytes = encode(
        Version::V311,
        Pkt::Connect {
            client_id: &long_id,
            user: Some(&long_id),
            pass: Some("x"),
        },
    );
    run.conn.handle(&bytes, NOW, &mut run.ctx, &mut out);
    let EventKind::Security(s) = &out.events[0].kind else {
        panic!("{:?}", out.events)
    };
    assert_eq!(s.reason.as_deref(), Some("unknown device"));
    let cid = s.client_id.as_deref().unwrap();
    assert!(
        cid.len() <= super::session::MAX_EVENT_FIELD + 3 && cid.ends_with("..."),
        "{}",
        cid.len()
    );
}

#[test]
fn clean_disconnect_is_reported() {
    let mut run = Run::new(Version::V311);
    run.login("pump-7");
    let (_, e) = run.send(Pkt::Disconnect);
    assert_eq!(e, vec!["disconnect client disconnect (clean)"]);
    assert!(run.conn.is_closed());
}

#[test]
fn byte_at_a_time_framing() {
    let mut run = Run::new(Version::V5);
    let mut bytes = encode(
        Version::V5,
        Pkt::Connect {
            client_id: "pump-7",
            user: Some("pump-7"),
            pass: Some("s3cret"),
        },
    );
    bytes.extend_from_slice(&encode(
        Version::V5,
        Pkt::Publish {
            topic: "city/water/pump-7/telemetry",
            payload: b"[{\"n\":\"t\",\"v\":1}]",
            qos: 0,
            pkid: 0,
            retain: false,
        },
    ));
    let mut all = vec![];
    for b in bytes.iter() {
        let (_, e) = run.raw(&[*b]);
        all.extend(e);
    }
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(all[1], "telemetry 1");
}

// ---- decode ----

fn names(d: &decode::Decoded) -> Vec<(String, Value, Option<String>)> {
    d.readings
        .iter()
        .map(|r| (r.name.clone(), r.value.clone(), r.unit.clone()))
        .collect()
}

#[test]
fn decode_json_object() {
    let ts = NOW.saturating_sub_ms(5000);
    let payload = format!(
        r#"{{"ts":"{}","temp_c":21.5,"door":"open","on":true,"nested":{{"a":1}},"skip":null}}"#,
        ts.to_rfc3339()
    );
    let d = decode::decode(payload.as_bytes(), NOW).unwrap();
    assert_eq!(d.ts, Some(ts));
    let mut got = names(&d);
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        vec![
            ("door".into(), Value::Text("open".into()), None),
            ("nested.a".into(), Value::Number(1.0), None),
            ("on".into(), Value::Bool(true), None),
            ("temp_c".into(), Value::Number(21.5), None),
        ]
    );
    // Epoch ms accepted; implausible times fall back to the receive time.
    let d = decode::decode(
        format!(r#"{{"ts":{},"x":1}}"#, NOW.as_millis() - 1000).as_bytes(),
        NOW,
    )
    .unwrap();
    assert_eq!(d.event_time(NOW), NOW.saturating_sub_ms(1000));
    let d = decode::decode(br#"{"ts":"2001-01-01T00:00:00Z","x":1}"#, NOW).unwrap();
    assert_eq!(d.event_time(NOW), NOW);
}

#[test]
fn decode_senml() {
    let bt = NOW.as_millis() as f64 / 1000.0;
    let payload = format!(
        r#"[{{"bn":"urn:dev:pump-7:","bt":{bt},"bu":"Cel","n":"temp","v":21.5}},{{"n":"rpm","u":"1/min","v":1200,"t":1}},{{"n":"running","vb":true}},{{"n":"mode","vs":"auto"}}]"#
    );
    let d = decode::decode(payload.as_bytes(), NOW).unwrap();
    assert_eq!(d.ts, Some(NOW));
    assert_eq!(
        names(&d),
        vec![
            (
                "urn:dev:pump-7:temp".into(),
                Value::Number(21.5),
                Some("Cel".into())
            ),
            (
                "urn:dev:pump-7:rpm".into(),
                Value::Number(1200.0),
                Some("1/min".into())
            ),
            (
                "urn:dev:pump-7:running".into(),
                Value::Bool(true),
                Some("Cel".into())
            ),
            (
                "urn:dev:pump-7:mode".into(),
                Value::Text("auto".into()),
                Some("Cel".into())
            ),
        ]
    );
    // Relative time (small t) is relative to receipt.
    let d = decode::decode(br#"[{"n":"x","v":1,"t":-10}]"#, NOW).unwrap();
    assert_eq!(d.ts, Some(NOW.saturating_sub_ms(10_000)));
}

#[test]
fn decode_errors() {
    let too_many = format!(
        "{{{}}}",
        (0..300)
            .map(|i| format!("\"k{i}\":1"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let cases: &[(&[u8], DecodeError)] = &[
        (b"", DecodeError::NotJson),
        (b"\xff\xfe", DecodeError::NotJson),
        (b"42", DecodeError::WrongShape),
        (b"\"text\"", DecodeError::WrongShape),
        (b"[1]", DecodeError::SenmlRecord(0)),
        (br#"[{"v":1}]"#, DecodeError::SenmlNoName(0)),
        (br#"[{"n":"x"}]"#, DecodeError::SenmlNoValue(0)),
        (too_many.as_bytes(), DecodeError::TooManyReadings),
    ];
    for (payload, want) in cases {
        assert_eq!(
            decode::decode(payload, NOW).as_ref().err(),
            Some(want),
            "{}",
            String::from_utf8_lossy(payload)
        );
    }
}

fn reading() -> impl Strategy<Value = Reading> {
    let value = prop_oneof![
        any::<bool>().prop_map(Value::Bool),
        // Exactly representable, so the round trip is exact whatever the float parser.
        (-1_000_000_000i64..1_000_000_000).prop_map(|i| Value::Number(i as f64 / 4.0)),
        "[a-z ]{0,12}".prop_map(Value::Text),
    ];
    ("[a-z][a-z0-9_]{0,15}", value).prop_map(|(name, value)| Reading {
        name,
        value,
        unit: None,
    })
}

fn to_json(v: &Value) -> serde_json::Value {
    match v {
        Value::Bool(b) => serde_json::json!(b),
        Value::Number(n) => serde_json::json!(n),
        Value::Text(s) => serde_json::json!(s),
    }
}

proptest! {
    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode::decode(&bytes, NOW);
        let _ = decode::decode_ack(&bytes, NOW);
    }

    #[test]
    fn decode_never_panics_on_json_like(text in r#"[\[\]{}":,a-z0-9.\-e ]{0,200}"#) {
        let _ = decode::decode(text.as_bytes(), NOW);
    }

    #[test]
    fn json_object_round_trip(readings in proptest::collection::btree_map("[a-z][a-z0-9_]{0,15}", reading(), 0..20)) {
        let obj: serde_json::Map<String, serde_json::Value> =
            readings.iter().filter(|(k, _)| k.as_str() != "ts").map(|(k, r)| (k.clone(), to_json(&r.value))).collect();
        let bytes = serde_json::to_vec(&obj).unwrap();
        let d = decode::decode(&bytes, NOW).unwrap();
        let mut got: Vec<(String, Value)> = d.readings.into_iter().map(|r| (r.name, r.value)).collect();
        got.sort_by(|a, b| a.0.cmp(&b.0));
        let want: Vec<(String, Value)> = obj.keys().map(|k| (k.clone(), readings[k].value.clone())).collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn senml_round_trip(readings in proptest::collection::vec(reading(), 1..20), base in "[a-z]{0,8}:?") {
        let records: Vec<serde_json::Value> = readings.iter().enumerate().map(|(i, r)| {
            let mut rec = serde_json::Map::new();
            if i == 0 && !base.is_empty() {
                rec.insert("bn".into(), serde_json::json!(base));
            }
            rec.insert("n".into(), serde_json::json!(r.name));
            let key = match r.value { Value::Bool(_) => "vb", Value::Number(_) => "v", Value::Text(_) => "vs" };
            rec.insert(key.into(), to_json(&r.value));
            serde_json::Value::Object(rec)
        }).collect();
        let bytes = serde_json::to_vec(&records).unwrap();
        let d = decode::decode(&bytes, NOW).unwrap();
        let want: Vec<(String, Value)> = readings.iter().map(|r| (format!("{base}{}", r.name), r.value.clone())).collect();
        let got: Vec<(String, Value)> = d.readings.into_iter().map(|r| (r.name, r.value)).collect();
        prop_assert_eq!(got, want);
        prop_assert_eq!(d.ts, Some(NOW));
    }

    #[test]
    fn connection_never_panics(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..8)) {
        let mut run = Run::new(Version::V311);
        run.login("pump-7");
        let mut out = Output::default();
        for c in chunks {
            run.conn.handle(&c, NOW, &mut run.ctx, &mut out);
        }
    }
}

#[test]
fn config_defaults_and_unknown_fields() {
    use super::config::{ClientIdConflict, MqttConfig};
    let c: MqttConfig =
        serde_json::from_str(r#"{"listen":"0.0.0.0:1883","on_client_id_conflict":"replace"}"#)
            .unwrap();
    assert_eq!(c.listen, "0.0.0.0:1883");
    assert_eq!(c.on_client_id_conflict, ClientIdConflict::Replace);
    assert_eq!(c.max_payload_bytes, 65536);
    assert_eq!(c.max_connections, 100_000);
    assert_eq!(MqttConfig::default().listen, "127.0.0.1:1883");
    assert_eq!(
        MqttConfig::default().on_client_id_conflict,
        ClientIdConflict::Refuse
    );
    let err = serde_json::from_str::<MqttConfig>(r#"{"listen_addr":"x"}"#).unwrap_err();
    assert!(err.to_string().contains("unknown field"), "{err}");
}

fn telemetry_pkt(qos: u8, pkid: u16) -> Pkt<'static> {
    Pkt::Publish {
        topic: "city/water/pump-7/telemetry",
        payload: br#"{"flow_lps": 3.5}"#,
        qos,
        pkid,
        retain: false,
    }
}

#[test]
fn rate_limit_drops_over_limit_publishes_and_refuses_qos1() {
    let limit = DeviceLimit {
        messages_per_s: 2.0,
        burst: 2,
        until: NOW.saturating_add_ms(60_000),
    };
    for v in [Version::V311, Version::V5] {
        let mut run = Run::new(v);
        run.ctx.limit = Some(Bucket::new(limit, NOW));
        run.login("pump-7");
        assert_eq!(run.conn.limit(), Some(limit));
        // The burst passes; the third is dropped and reported at once.
        let mut events = Vec::new();
        let mut dropped = 0;
        for _ in 0..3 {
            let ((w, e), stats) = run.send_at(telemetry_pkt(0, 0), 0);
            assert!(w.is_empty(), "{w:?}");
            events.extend(e);
            dropped += stats.rate_limited;
        }
        assert_eq!(dropped, 1);
        assert_eq!(events.len(), 3, "{events:?}");
        assert!(events[..2].iter().all(|e| e == "telemetry 1"), "{events:?}");
        assert!(
            events[2].starts_with(
                "rate_limited dropped 1 publish(es) over the rate limit (2 msg/s, burst 2"
            ),
            "{events:?}"
        );
        // Within the second: dropped and counted, no further event.
        let ((_, e), stats) = run.send_at(telemetry_pkt(0, 0), 100);
        assert_eq!((e.len(), stats.rate_limited), (0, 1), "{e:?}");
        // A second later the bucket is full again: accepted, and the held-back drop reported.
        let ((_, e), _) = run.send_at(telemetry_pkt(0, 0), 1000);
        assert!(
            e[0].starts_with("rate_limited dropped 1 publish(es)"),
            "{e:?}"
        );
        assert_eq!(e[1], "telemetry 1");
        let ((_, e), _) = run.send_at(telemetry_pkt(0, 0), 1000);
        assert_eq!(e, vec!["telemetry 1"]);
        // A QoS 1 publish over the limit is never acknowledged as accepted.
        let ((w, e), stats) = run.send_at(telemetry_pkt(1, 9), 1000);
        assert_eq!(stats.rate_limited, 1);
        assert!(!e.iter().any(|e| e.starts_with("telemetry")), "{e:?}");
        match v {
            Version::V5 => {
                assert_eq!(w, vec!["puback 9 QuotaExceeded"]);
                assert!(run.conn.is_connected());
            }
            Version::V311 => {
                // 3.1.1 has no negative acknowledgement: the broker closes instead.
                assert!(w.is_empty(), "{w:?}");
                assert!(run.conn.is_closed());
                assert!(
                    e.iter().any(|e| e.starts_with("rate_limited dropped 1"))
                        && e.iter().any(
                            |e| e.starts_with("disconnect qos 1/2 publish over the rate limit")
                        ),
                    "{e:?}"
                );
            }
        }
    }
}

#[test]
fn rate_limit_floods_are_disconnected_with_0x96_and_limits_lapse() {
    let limit = DeviceLimit {
        messages_per_s: 1.0,
        burst: 1,
        until: NOW.saturating_add_ms(5_000),
    };
    // Far over the limit (more than 10 x rate + burst drops in a second): disconnected.
    for v in [Version::V311, Version::V5] {
        let mut run = Run::new(v);
        run.ctx.limit = Some(Bucket::new(limit, NOW));
        run.login("pump-7");
        let mut writes = Vec::new();
        let mut events = Vec::new();
        for _ in 0..13 {
            let ((w, e), _) = run.send_at(telemetry_pkt(0, 0), 0);
            writes.extend(w);
            events.extend(e);
        }
        assert!(run.conn.is_closed(), "{v:?} {events:?}");
        match v {
            Version::V5 => assert_eq!(writes, vec!["disconnect MessageRateTooHigh"]),
            Version::V311 => assert!(writes.is_empty(), "{writes:?}"),
        }
        assert!(
            events
                .iter()
                .any(|e| e.starts_with("rate_limited disconnected: publishing more than ten times")),
            "{events:?}"
        );
        assert_eq!(events.iter().filter(|e| *e == "telemetry 1").count(), 1);
    }
    // A limit lapses by itself.
    let mut run = Run::new(Version::V5);
    run.ctx.limit = Some(Bucket::new(limit, NOW));
    run.login("pump-7");
    let ((_, e), _) = run.send_at(telemetry_pkt(0, 0), 5_000);
    assert_eq!(
        e[0],
        format!(
            "rate_limit_changed rate limit lapsed (1 msg/s, burst 1, until {})",
            NOW.saturating_add_ms(5_000).to_rfc3339()
        )
    );
    assert_eq!(e[1], "telemetry 1");
    assert_eq!(run.conn.limit(), None);
}

#[test]
fn rate_limit_applies_to_a_live_session_and_lifts() {
    let mut run = Run::new(Version::V5);
    run.login("pump-7");
    let mut out = Output::default();
    let limit = DeviceLimit {
        messages_per_s: 1.0,
        burst: 1,
        until: NOW.saturating_add_ms(60_000),
    };
    run.conn.set_limit(Some(limit), NOW, &mut out);
    let ((_, a), _) = run.send_at(telemetry_pkt(0, 0), 0);
    let ((_, b), s) = run.send_at(telemetry_pkt(0, 0), 0);
    assert_eq!(a, vec!["telemetry 1"]);
    assert_eq!(s.rate_limited, 1, "{b:?}");
    // Lifting reports what was held back and lets everything through again.
    let mut out = Output::default();
    run.conn.set_limit(None, NOW, &mut out);
    assert!(out.events.is_empty() || ev(&out.events[0]).starts_with("rate_limited"));
    for _ in 0..5 {
        let ((_, e), s) = run.send_at(telemetry_pkt(0, 0), 1);
        assert_eq!((e, s.rate_limited), (vec!["telemetry 1".to_owned()], 0));
    }
    // The bucket goes back to the broker when the session ends.
    run.conn.set_limit(Some(limit), NOW, &mut Output::default());
    assert_eq!(run.conn.take_limit_bucket().map(|b| b.limit), Some(limit));
}

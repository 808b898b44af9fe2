//! Fuzzes the broker's sans-IO MQTT connection: arbitrary bytes, optionally after a valid
//! CONNECT (3.1.1 or 5.0) so the fuzzer reaches the authenticated states, fed in chunks,
//! optionally with the device under a tight rate limit (mode bit 16) and with time moving.
//! Nothing a client sends may panic the broker.
//!
//! `cargo fuzz run mqtt_connection` (stable: `cargo fuzz build --sanitizer none`).

#![no_main]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use ingest::mqtt::limit::{Bucket, DeviceLimit};
use ingest::mqtt::session::{Claim, Connection, Context, Limits, Output, TlsIdentity};
use libfuzzer_sys::fuzz_target;
use model::{Credential, Device, DeviceClass, DeviceId, DeviceStatus, Timestamp};

struct Ctx(Arc<Device>, Option<Bucket>);

impl Context for Ctx {
    fn device(&self, id: &str) -> Option<Arc<Device>> {
        (id == self.0.id.as_str()).then(|| Arc::clone(&self.0))
    }
    fn claim(&mut self, _client_id: &str, _peer: SocketAddr) -> Claim {
        Claim::Free
    }
    fn subscribe(&mut self, _topic: &str, _qos: u8) {}
    fn unsubscribe(&mut self, _topic: &str) {}
    fn retain(&mut self, _topic: &str, _payload: Bytes) -> bool {
        true
    }
    fn rate_limit(&self, _device_id: &str) -> Option<Bucket> {
        self.1.clone()
    }
}

fn device() -> Arc<Device> {
    static DEVICE: OnceLock<Arc<Device>> = OnceLock::new();
    Arc::clone(DEVICE.get_or_init(|| {
        Arc::new(Device {
            id: DeviceId::new("pump-7").expect("valid id"),
            sector: DeviceClass::Pump.sector(),
            class: DeviceClass::Pump,
            zone: "z".into(),
            owner: "o".into(),
            vendor: "v".into(),
            model: "m".into(),
            firmware: "1".into(),
            location: None,
            addresses: Vec::new(),
            credentials: vec![Credential::Secret { hash: ingest::credentials::hash_secret("pw") }],
            status: DeviceStatus::Active,
            created_at: Timestamp::from_millis(0),
        })
    }))
}

/// CONNECT pump-7 / pump-7 / "pw", 3.1.1.
const CONNECT_V4: &[u8] = b"\x10\x1e\x00\x04MQTT\x04\xc2\x00\x1e\x00\x06pump-7\x00\x06pump-7\x00\x02pw";
/// CONNECT pump-7 / pump-7 / "pw", 5.0 (empty properties).
const CONNECT_V5: &[u8] = b"\x10\x1f\x00\x04MQTT\x05\xc2\x00\x1e\x00\x00\x06pump-7\x00\x06pump-7\x00\x02pw";

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let Some((&chunk, rest)) = rest.split_first() else { return };
    let tls = (mode & 4 != 0).then(|| TlsIdentity { cn: Some("pump-7".into()), sha256: "00".into() });
    let limits = Limits { max_payload_bytes: 512, max_keep_alive_s: 60, max_inflight: 4 };
    let peer: SocketAddr = ([10, 0, 0, 1], 1883).into();
    let mut conn = Connection::new(peer, tls, limits);
    let mut now = Timestamp::from_millis(1_795_000_000_000);
    let limit = (mode & 16 != 0).then(|| {
        let limit = DeviceLimit { messages_per_s: 2.0, burst: 2, until: now.saturating_add_ms(30_000) };
        Bucket::new(limit, now)
    });
    let mut ctx = Ctx(device(), limit);
    let mut out = Output::default();
    match mode & 3 {
        1 => conn.handle(CONNECT_V4, now, &mut ctx, &mut out),
        2 => conn.handle(CONNECT_V5, now, &mut ctx, &mut out),
        _ => {}
    }
    let size = usize::from(chunk).max(1);
    for piece in rest.chunks(size) {
        if mode & 32 != 0 {
            now = now.saturating_add_ms(i64::from(chunk) * 10);
        }
        conn.handle(piece, now, &mut ctx, &mut out);
        if mode & 8 != 0 {
            conn.deliver("city/water/pump-7/cmd", Bytes::from_static(b"{}"), 1, &mut out);
        }
    }
    conn.close(now, "fuzz end", false, &mut out);
});

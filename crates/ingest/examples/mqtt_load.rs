//! A quick load check of the embedded broker: N devices on loopback each publish M QoS 0
//! telemetry messages (hand-encoded, ~120-byte JSON payloads) to their own topic; the sink
//! only counts. Prints msg/s and process CPU per message (publishers included).
//!
//! `cargo run --release -p ingest --example mqtt_load -- [devices] [messages-per-device]`
//!
//! For comparison, `... -- 1000 2000 127.0.0.1:18830` sends the same load to another broker
//! (e.g. `mosquitto -p 18830`, anonymous) and counts what one `city/#` subscriber receives.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ingest::credentials;
use ingest::mqtt::{Broker, DeviceDirectory, EventSink, MqttConfig, SinkClosed};
use model::{Credential, Device, DeviceClass, DeviceId, DeviceStatus, Event, EventKind, Timestamp};
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Dir(HashMap<String, Arc<Device>>);

impl DeviceDirectory for Dir {
    fn get(&self, id: &str) -> Option<Arc<Device>> {
        self.0.get(id).cloned()
    }
}

#[derive(Default)]
struct Counter {
    telemetry: AtomicU64,
    batches: AtomicU64,
}

#[async_trait::async_trait]
impl EventSink for Counter {
    async fn send(&self, events: Vec<Event>) -> Result<(), SinkClosed> {
        let n = events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::Telemetry { .. }))
            .count();
        self.telemetry.fetch_add(n as u64, Ordering::Relaxed);
        self.batches.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

fn cpu_seconds() -> f64 {
    // utime + stime (fields 14 and 15 of /proc/self/stat) in clock ticks of 1/100 s; after
    // the command name come the state (field 3, skipped) and then numbers from field 4.
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<i64> = after
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    match (f.get(10), f.get(11)) {
        (Some(u), Some(s)) => (u + s) as f64 / 100.0,
        _ => 0.0,
    }
}

fn main() {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<usize> = raw.iter().filter_map(|a| a.parse().ok()).collect();
    let devices = args.first().copied().unwrap_or(1000);
    let per_device = args.get(1).copied().unwrap_or(1000);
    let external = raw
        .iter()
        .find_map(|a| a.parse::<std::net::SocketAddr>().ok());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(devices, per_device, external));
}

async fn run(devices: usize, per_device: usize, external: Option<std::net::SocketAddr>) {
    let secret = "load-secret";
    let cred = Credential::Secret {
        hash: credentials::hash_secret(secret),
    };
    let mut map = HashMap::new();
    for i in 0..devices {
        let id = format!("pump-{i}");
        map.insert(
            id.clone(),
            Arc::new(Device {
                id: DeviceId::new(id).expect("id"),
                sector: DeviceClass::Pump.sector(),
                class: DeviceClass::Pump,
                zone: "z".into(),
                owner: "o".into(),
                vendor: "v".into(),
                model: "m".into(),
                firmware: "1".into(),
                addresses: Vec::new(),
                location: None,
                credentials: vec![cred.clone()],
                status: DeviceStatus::Active,
                created_at: Timestamp::from_millis(0),
            }),
        );
    }
    let sink = Arc::new(Counter::default());
    let config = MqttConfig {
        listen: "127.0.0.1:0".into(),
        connect_rate_per_ip: 1_000_000,
        ..MqttConfig::default()
    };
    let broker = Broker::start(
        config,
        Arc::new(Dir(map)),
        Arc::clone(&sink) as Arc<dyn EventSink>,
    )
    .expect("broker");
    let addr = match external {
        Some(ext) => {
            tokio::spawn(count_subscriber(ext, Arc::clone(&sink)));
            tokio::time::sleep(Duration::from_millis(300)).await;
            ext
        }
        None => broker.local_addr(),
    };

    // Connect everyone first.
    let connect_start = Instant::now();
    let mut streams = Vec::with_capacity(devices);
    for i in 0..devices {
        let id = format!("pump-{i}");
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.set_nodelay(true).ok();
        let mut buf = BytesMut::new();
        let mut c = v4::Connect::new(id.clone());
        c.keep_alive = 600;
        if external.is_none() {
            c.set_login(id.clone(), secret);
        }
        c.write(&mut buf).expect("encode");
        s.write_all(&buf).await.expect("write");
        let mut ack = [0u8; 4];
        s.read_exact(&mut ack).await.expect("connack");
        assert_eq!(ack[3], 0, "refused");
        // Pre-encode this device's messages in batches of 100.
        let topic = format!("city/water/{id}/telemetry");
        let mut batch = BytesMut::new();
        for k in 0..100 {
            let payload = format!(
                r#"{{"ts":{},"temp_c":21.5,"flow_lps":12.25,"pressure_bar":3.5,"pump_on":true,"seq":{k}}}"#,
                Timestamp::now().as_millis()
            );
            v4::Publish::new(topic.clone(), QoS::AtMostOnce, payload.into_bytes())
                .write(&mut batch)
                .expect("encode");
        }
        streams.push((s, batch.freeze()));
    }
    let connect_s = connect_start.elapsed().as_secs_f64();
    println!(
        "connected {devices} devices sequentially in {connect_s:.3} s (CONNECT, sha256 secret check, CONNACK, payload pre-encoding)"
    );
    let total = (devices * (per_device / 100) * 100) as u64;
    let base = sink.telemetry.load(Ordering::Relaxed);
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for (mut s, batch) in streams {
        let rounds = per_device / 100;
        tasks.push(tokio::spawn(async move {
            for _ in 0..rounds {
                if s.write_all(&batch).await.is_err() {
                    break;
                }
            }
            s
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while sink.telemetry.load(Ordering::Relaxed) - base < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let got = sink.telemetry.load(Ordering::Relaxed) - base;
    println!(
        "devices={devices} messages={got}/{total} seconds={secs:.3} msg_per_s={:.0} cpu_us_per_msg={:.2} sink_batches={}",
        got as f64 / secs,
        cpu * 1e6 / got.max(1) as f64,
        sink.batches.load(Ordering::Relaxed)
    );
    let mut kept = Vec::new();
    for t in tasks {
        if let Ok(s) = t.await {
            kept.push(s);
        }
    }
    broker.shutdown().await;
    drop(kept);
}

/// Subscribes to `city/#` on an external broker and counts the PUBLISH packets received.
async fn count_subscriber(addr: std::net::SocketAddr, sink: Arc<Counter>) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut buf = BytesMut::new();
    let mut c = v4::Connect::new("load-counter");
    c.keep_alive = 600;
    c.write(&mut buf).expect("encode");
    let mut sub = v4::Subscribe::new("city/#", QoS::AtMostOnce);
    sub.pkid = 1;
    sub.write(&mut buf).expect("encode");
    s.write_all(&buf).await.expect("write");
    let mut rx = BytesMut::with_capacity(1 << 20);
    loop {
        match s.read_buf(&mut rx).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut n = 0;
        loop {
            match v4::Packet::read(&mut rx, 1 << 20) {
                Ok(v4::Packet::Publish(_)) => n += 1,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        sink.telemetry.fetch_add(n, Ordering::Relaxed);
        sink.batches.fetch_add(1, Ordering::Relaxed);
    }
}

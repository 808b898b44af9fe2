//! The flow exporter against a real collector: `nfcapd` (Debian's nfdump package) decodes
//! what the simulator sends, IPFIX with its templates and NetFlow v5, and prints each
//! record (`-E`). Skips with a message when nfcapd is missing, unless
//! `CITYSEC_REQUIRE_PEERS=1`.

use std::io::Read;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use model::{FlowRecord, Timestamp};
use sim::flow::{FlowExporter, FlowFormat};

use super::Killed;

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn have_nfcapd() -> bool {
    if Command::new("nfcapd").arg("-V").output().is_ok() {
        return true;
    }
    assert!(
        std::env::var("CITYSEC_REQUIRE_PEERS").as_deref() != Ok("1"),
        "CITYSEC_REQUIRE_PEERS=1 but nfcapd is not installed (apt-get install nfdump)"
    );
    eprintln!("skipping: nfcapd not installed (apt-get install nfdump)");
    false
}

fn record(i: u8) -> FlowRecord {
    let now = Timestamp::now().as_millis();
    FlowRecord {
        src: IpAddr::from([10, 1, 200, i]),
        dst: IpAddr::from([10, 101, 0, 10]),
        src_port: 50_000 + u16::from(i),
        dst_port: 554,
        protocol: 6,
        bytes: 100_000 + u64::from(i),
        packets: 70 + u64::from(i),
        tcp_flags: 0x18,
        start: Timestamp::from_millis(now - 10_000),
        end: Timestamp::from_millis(now - 1_000),
        exporter: None,
        peer_device: None,
    }
}

/// Starts nfcapd on a free port, sends `n` records in `format`, and returns what it
/// printed once every record was seen (or after 20 s).
async fn collect(format: FlowFormat, n: u8) -> String {
    let dir = tempfile::tempdir().unwrap();
    let port = free_udp_port();
    let child = Command::new("nfcapd")
        .args(["-E", "-b", "127.0.0.1", "-p", &port.to_string(), "-w"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("nfcapd starts");
    let mut child = Killed(child);
    let mut stdout = child.0.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(k) => out.extend_from_slice(&buf[..k]),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    });
    tokio::time::sleep(Duration::from_millis(800)).await;
    let collector: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut exporter = FlowExporter::connect(collector, format, 5).await.unwrap();
    let records: Vec<FlowRecord> = (1..=n).map(record).collect();
    exporter
        .send(&records, Timestamp::now().as_millis())
        .await
        .unwrap();
    assert!(
        exporter.datagrams >= 2,
        "{n} records span several datagrams"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    // SIGTERM, so nfcapd flushes what it printed (stdout is a pipe, so buffered).
    let _ = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status();
    let _ = child.0.wait();
    reader.join().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nfcapd_decodes_our_ipfix_and_netflow_v5() {
    if !have_nfcapd() {
        return;
    }
    for (format, n) in [(FlowFormat::Ipfix, 60u8), (FlowFormat::NetflowV5, 45)] {
        let out = collect(format, n).await;
        for i in [1u8, n / 2, n] {
            let src = format!("10.1.200.{i}");
            assert!(out.contains(&src), "{format:?}: {src} not decoded:\n{out}");
        }
        assert!(out.contains("10.101.0.10"), "{out}");
        assert!(
            out.contains(&format!("{}", 100_000 + u64::from(n))),
            "{format:?} bytes:\n{out}"
        );
    }
}

//! End-to-end flow tests against a started platform: hand-encoded NetFlow v5, v9 and IPFIX
//! datagrams over UDP and JSON lines over HTTP, and softflowd (Debian) exporting a capture
//! written here; the stored flow events must name the devices by address.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use ingest::flow::encode::{self, Clock, Layout, TimeForm};
use ingest::flow::template::Dialect;
use model::{
    Credential, Device, DeviceClass, DeviceId, DeviceStatus, Event, EventKind, FlowRecord,
    Timestamp,
};
use store::EventQuery;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{Config, Platform};

/// An hour ago in whole seconds (recent, so event retention keeps what the tests send).
fn t0() -> i64 {
    static T0: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *T0.get_or_init(|| (Timestamp::now().as_millis() / 1000 - 3600) * 1000)
}

async fn start(dir: &Path) -> Platform {
    let text = format!(
        "version = 1\ndata_dir = {:?}\n[http]\nlisten = '127.0.0.1:0'\n[ingest.mqtt]\nlisten = '127.0.0.1:0'\n[ingest.flow]\nenabled = true\nlisten = '127.0.0.1:0'\n",
        dir.display().to_string()
    );
    let config = Config::load(&text, &Default::default()).unwrap();
    let platform = Platform::start(config).await.unwrap();
    platform
        .register_devices(vec![
            device("cam-7", DeviceClass::Camera, &["10.0.0.7"]),
            device(
                "meter-8",
                DeviceClass::SmartMeter,
                &["10.0.0.8", "2001:db8::8"],
            ),
        ])
        .await
        .unwrap();
    platform
}

fn device(id: &str, class: DeviceClass, addresses: &[&str]) -> Device {
    Device {
        id: DeviceId::new(id).unwrap(),
        sector: class.sector(),
        class,
        zone: "ot".into(),
        owner: "city".into(),
        vendor: String::new(),
        model: String::new(),
        firmware: String::new(),
        location: None,
        addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
        credentials: vec![Credential::Secret {
            hash: ingest::credentials::hash_secret("a-long-device-secret"),
        }],
        status: DeviceStatus::Active,
        created_at: Timestamp::from_millis(t0()),
    }
}

fn flow(src: &str, dst: &str, proto: u8, sport: u16, dport: u16, start_ms: i64) -> FlowRecord {
    FlowRecord {
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        src_port: sport,
        dst_port: dport,
        protocol: proto,
        bytes: 1000,
        packets: 10,
        tcp_flags: if proto == 6 { 0x1b } else { 0 },
        start: Timestamp::from_millis(start_ms),
        end: Timestamp::from_millis(start_ms + 2000),
        exporter: None,
        peer_device: None,
    }
}

/// Waits until the store holds `n` flow events, returning them oldest first.
async fn stored_flows(platform: &Platform, n: usize) -> Vec<Event> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let events = platform
            .store()
            .list_events(&EventQuery {
                kind: Some("flow".into()),
                limit: 1000,
                ..EventQuery::default()
            })
            .await
            .unwrap();
        if events.len() >= n || Instant::now() > deadline {
            let mut events = events;
            events.reverse();
            return events;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `(device, peer, summary, start ms)` of a flow event, for comparing.
fn row(e: &Event) -> (Option<String>, Option<String>, String, i64) {
    let EventKind::Flow(r) = &e.kind else {
        panic!("not a flow: {e:?}")
    };
    (
        e.device_id.as_ref().map(|d| d.to_string()),
        r.peer_device.as_ref().map(|d| d.to_string()),
        r.summary(),
        r.start.as_millis(),
    )
}

/// One HTTP/1.1 request over a fresh connection; returns (status, body).
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    ct: &str,
    body: &str,
) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: {ct}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn dechunk(body: &str) -> String {
    // axum answers small bodies with Content-Length; this handles chunked ones too.
    if !body.contains("\r\n") {
        return body.to_owned();
    }
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn netflow_ipfix_and_json_lines_become_device_events() {
    let dir = tempfile::tempdir().unwrap();
    let platform = start(dir.path()).await;
    let flow_addr = platform
        .flow_addr()
        .expect("flow listener enabled by default");
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let clock = Clock {
        boot_ms: t0() - 86_400_000,
        export_ms: t0() + 60_000,
    };
    // v5: camera to the internet (telnet).
    let v5 = [flow("10.0.0.7", "203.0.113.5", 6, 51234, 23, t0())];
    udp.send_to(&encode::v5_message(&clock, 1, &v5), flow_addr)
        .unwrap();
    // v9: data before its template; the meter talks to the camera.
    let layout = Layout::standard(false, TimeForm::Uptime);
    let v9 = [flow("10.0.0.8", "10.0.0.7", 17, 5000, 53, t0() + 1000)];
    let data = encode::v9_message(
        &clock,
        1,
        1,
        &[layout.data_set(Dialect::V9, 300, &v9, &clock)],
    );
    let template = encode::v9_message(&clock, 2, 1, &[layout.template_set(Dialect::V9, 300)]);
    udp.send_to(&data, flow_addr).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    udp.send_to(&template, flow_addr).unwrap();
    // IPFIX over IPv6 with milliseconds: the internet to the meter.
    let layout6 = Layout::standard(true, TimeForm::Millis);
    let ipfix = [flow(
        "2001:db8:ffff::1",
        "2001:db8::8",
        6,
        443,
        40000,
        t0() + 2000,
    )];
    let msg = encode::ipfix_message(
        &clock,
        1,
        5,
        &[
            layout6.template_set(Dialect::Ipfix, 256),
            layout6.data_set(Dialect::Ipfix, 256, &ipfix, &clock),
        ],
    );
    udp.send_to(&msg, flow_addr).unwrap();
    // A malformed datagram is counted and dropped.
    udp.send_to(&[0, 7, 1, 2, 3], flow_addr).unwrap();
    // JSON lines over HTTP, one good (nfdump spelling), one bad.
    let lines = format!(
        "{{\"src4_addr\":\"198.51.100.9\",\"dst4_addr\":\"10.0.0.7\",\"proto\":\"tcp\",\"src_port\":4444,\"dst_port\":22,\"in_bytes\":60,\"in_packets\":1,\"t_first\":{},\"t_last\":{}}}\n{{\"src\":\"nowhere\"}}\n",
        t0() + 3000,
        t0() + 5000
    );
    let (status, body) = http(
        platform.http_addr(),
        "POST",
        "/api/v1/flows",
        platform.admin_token(),
        "application/x-ndjson",
        &lines,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let report: web::FlowReport = serde_json::from_str(&dechunk(&body)).unwrap();
    assert_eq!((report.accepted, report.refused), (1, 1), "{report:?}");
    assert_eq!(report.refused_by_reason["json_field"], 1);

    let events = stored_flows(&platform, 4).await;
    // The counters are on /metrics.
    let (status, metrics) = http(
        platform.http_addr(),
        "GET",
        "/metrics",
        platform.admin_token(),
        "text/plain",
        "",
    )
    .await;
    assert_eq!(status, 200);
    let metrics = dechunk(&metrics);
    let rows: Vec<_> = events.iter().map(row).collect();
    let s = |t: &str| Some(t.to_owned());
    assert_eq!(
        rows,
        vec![
            (
                s("cam-7"),
                None,
                "tcp 10.0.0.7:51234 -> 203.0.113.5:23 (10 packets, 1000 bytes)".into(),
                t0()
            ),
            (
                s("meter-8"),
                s("cam-7"),
                "udp 10.0.0.8:5000 -> 10.0.0.7:53 (10 packets, 1000 bytes)".into(),
                t0() + 1000
            ),
            (
                s("meter-8"),
                None,
                "tcp [2001:db8:ffff::1]:443 -> [2001:db8::8]:40000 (10 packets, 1000 bytes)".into(),
                t0() + 2000
            ),
            (
                s("cam-7"),
                None,
                "tcp 198.51.100.9:4444 -> 10.0.0.7:22 (1 packets, 60 bytes)".into(),
                t0() + 3000
            ),
        ]
    );
    assert_eq!(events[0].ts, Timestamp::from_millis(t0() + 2000));
    assert!(events[0].sector.is_some());

    for line in [
        "flow_datagrams_received_total 5",
        "flow_records_decoded_total 4",
        "flow_json_lines_received_total 2",
        "flow_pending_decoded_total 1",
        "flow_events_published_total 4",
        "flow_dropped_total{reason=\"bad_version\"} 1",
        "flow_dropped_total{reason=\"json_field\"} 1",
        "flow_dropped_total{reason=\"rate_limited\"} 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line:?} in\n{metrics}"
        );
    }

    // Registry changes apply to the next flow: the camera moves to a new address.
    platform
        .register_devices(vec![device("cam-7", DeviceClass::Camera, &["10.0.0.70"])])
        .await
        .unwrap();
    let moved = [
        flow("10.0.0.7", "203.0.113.5", 6, 1, 2, t0() + 10_000),
        flow("10.0.0.70", "203.0.113.5", 6, 1, 2, t0() + 11_000),
    ];
    udp.send_to(&encode::v5_message(&clock, 2, &moved), flow_addr)
        .unwrap();
    let events = stored_flows(&platform, 6).await;
    let devices: Vec<_> = events[4..].iter().map(|e| row(e).0).collect();
    assert_eq!(devices, vec![None, s("cam-7")]);
    platform.shutdown().await.unwrap();
}

/// One captured packet: (unix ms, src, dst, protocol, source port, destination port, payload bytes).
type Packet = (i64, [u8; 4], [u8; 4], u8, u16, u16, usize);

/// A classic pcap file (Ethernet, IPv4) of these packets.
fn pcap(packets: &[Packet]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    for &(ms, src, dst, proto, sport, dport, len) in packets {
        let mut l4 = Vec::new();
        l4.extend_from_slice(&sport.to_be_bytes());
        l4.extend_from_slice(&dport.to_be_bytes());
        if proto == 6 {
            l4.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
        } else {
            l4.extend_from_slice(&((8 + len) as u16).to_be_bytes());
            l4.extend_from_slice(&[0, 0]);
        }
        l4.resize(l4.len() + len, b'x');
        let mut ip = vec![0x45, 0];
        ip.extend_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
        ip.extend_from_slice(&[0, 1, 0, 0, 64, proto, 0, 0]);
        ip.extend_from_slice(&src);
        ip.extend_from_slice(&dst);
        let sum = ip.chunks(2).fold(0u32, |acc, w| {
            acc + u32::from(u16::from_be_bytes([w[0], w[1]]))
        });
        let sum = !(((sum & 0xffff) + (sum >> 16)) as u16);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        let mut frame = vec![
            0, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 8, 0,
        ];
        frame.extend_from_slice(&ip);
        frame.extend_from_slice(&l4);
        out.extend_from_slice(&((ms / 1000) as u32).to_le_bytes());
        out.extend_from_slice(&(((ms % 1000) * 1000) as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&frame);
    }
    out
}

fn installed(program: &str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
        || Path::new("/usr/sbin").join(program).is_file();
    if !found {
        assert!(
            std::env::var("CITYSEC_REQUIRE_PEERS").as_deref() != Ok("1"),
            "{program} is required (CITYSEC_REQUIRE_PEERS=1) but not installed (apt-get install softflowd)"
        );
        eprintln!("skipping: {program} not installed (apt-get install softflowd)");
    }
    found
}

fn program(name: &str) -> std::path::PathBuf {
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| Path::new("/usr/sbin").join(name))
}

/// softflowd reads a capture and exports it to our collector as NetFlow v5, v9 and IPFIX
/// (sysUpTime times with an options record, and absolute milliseconds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn softflowd_exports_to_the_platform() {
    if !installed("softflowd") || !installed("softflowctl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let platform = start(&dir.path().join("data")).await;
    let flow_addr = platform.flow_addr().unwrap();
    let capture = dir.path().join("city.pcap");
    std::fs::write(
        &capture,
        pcap(&[
            (
                t0() + 250,
                [10, 0, 0, 7],
                [203, 0, 113, 5],
                6,
                51234,
                23,
                10,
            ),
            (
                t0() + 1250,
                [10, 0, 0, 7],
                [203, 0, 113, 5],
                6,
                51234,
                23,
                20,
            ),
            (
                t0() + 2250,
                [192, 168, 1, 9],
                [10, 0, 0, 8],
                17,
                5000,
                53,
                30,
            ),
        ]),
    )
    .unwrap();
    let runs: [&[&str]; 4] = [
        &["-v", "5"],
        &["-v", "9"],
        &["-v", "10"],
        &["-v", "10", "-A", "milli"],
    ];
    for (i, args) in runs.iter().enumerate() {
        let ctl = dir.path().join(format!("sf{i}.ctl"));
        let mut child = tokio::process::Command::new(program("softflowd"))
            .arg("-d")
            .arg("-r")
            .arg(&capture)
            .arg("-n")
            .arg(flow_addr.to_string())
            .arg("-p")
            .arg(dir.path().join(format!("sf{i}.pid")))
            .arg("-c")
            .arg(&ctl)
            .args(*args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        // softflowd 1.1.0 waits on its control socket while reading a capture: commands
        // let it go on until it has read the file, exported every flow and exited.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ctl.exists() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut finished = false;
        while !finished && Instant::now() < deadline {
            let _ = tokio::process::Command::new(program("softflowctl"))
                .arg("-c")
                .arg(&ctl)
                .arg("statistics")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .await
                .unwrap();
            finished = tokio::time::timeout(Duration::from_millis(200), child.wait())
                .await
                .is_ok();
        }
        assert!(finished, "softflowd {args:?} did not finish");
        let events = stored_flows(&platform, 2 * (i + 1)).await;
        assert_eq!(events.len(), 2 * (i + 1), "softflowd {args:?}");
    }
    let events = stored_flows(&platform, 8).await;
    for e in &events {
        let EventKind::Flow(r) = &e.kind else {
            panic!()
        };
        let (device, start, end) = match r.protocol {
            6 => ("cam-7", t0() + 250, t0() + 1250),
            17 => ("meter-8", t0() + 2250, t0() + 2250),
            p => panic!("protocol {p}"),
        };
        assert_eq!(
            e.device_id.as_ref().map(|d| d.as_str()),
            Some(device),
            "{r:?}"
        );
        // v9 headers carry whole seconds: within a second.
        assert!((r.start.as_millis() - start).abs() < 1000, "{r:?}");
        assert!((r.end.as_millis() - end).abs() < 1000, "{r:?}");
        assert_eq!(r.exporter.as_deref(), Some("127.0.0.1"));
        assert!(r.src.is_ipv4());
        if r.protocol == 6 {
            assert_eq!((r.packets, r.bytes), (2, 110), "{r:?}");
            assert_eq!(r.dst, IpAddr::from([203, 0, 113, 5]));
        }
    }
    platform.shutdown().await.unwrap();
}

#[test]
fn the_flow_section_is_on_by_default_and_validated() {
    let config = Config::load(crate::config::DEFAULT_CONFIG, &Default::default()).unwrap();
    assert!(config.ingest.flow.enabled);
    assert_eq!(config.ingest.flow.listen, "127.0.0.1:2055");
    // The file differs from a config without the section only in turning the listener on.
    let absent = Config::load("version = 1\ndata_dir = 'x'\n", &Default::default()).unwrap();
    assert!(!absent.ingest.flow.enabled);
    assert_eq!(
        config.ingest.flow,
        ingest::flow::FlowConfig {
            enabled: true,
            ..absent.ingest.flow
        }
    );
    for (section, message) in [
        ("listen = 'nowhere'", "ingest.flow.listen"),
        ("max_templates = 0", "ingest.flow.max_templates"),
        ("template_timeout = 5", "unknown field"),
    ] {
        let text = format!("version = 1\ndata_dir = 'x'\n[ingest.flow]\n{section}\n");
        let err = format!(
            "{:#}",
            Config::load(&text, &Default::default()).unwrap_err()
        );
        assert!(err.contains(message), "{section}: {err}");
    }
}

//! Flow decoder tests: the softflowd corpus, encoder round trips (proptest), template
//! caching and the pending buffer, bounds, JSON lines, and address matching.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use model::{DeviceId, EventKind, FlowRecord, Sector, Timestamp};
use proptest::prelude::*;

use crate::flow::encode::{self, Clock, Column, Layout, TimeForm};
use crate::flow::template::Dialect;
use crate::flow::{AddressBook, Collector, DropReason, FlowStats, Limits, json, to_event};

const T0: i64 = 1_795_000_000_000;

fn exporter() -> SocketAddr {
    "192.0.2.1:40000".parse().unwrap()
}

fn now() -> Timestamp {
    Timestamp::from_millis(T0 + 10_000)
}

fn clock() -> Clock {
    Clock {
        boot_ms: T0 - 3_600_000,
        export_ms: T0 + 5_000,
    }
}

fn flow(src: &str, dst: &str, proto: u8, sport: u16, dport: u16) -> FlowRecord {
    FlowRecord {
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        src_port: sport,
        dst_port: dport,
        protocol: proto,
        bytes: 180,
        packets: 3,
        tcp_flags: if proto == 6 { 0x12 } else { 0 },
        start: Timestamp::from_millis(T0),
        end: Timestamp::from_millis(T0 + 1500),
        exporter: Some("192.0.2.1".into()),
        peer_device: None,
    }
}

fn render(records: &[FlowRecord], stats: &FlowStats) -> String {
    let mut out = String::new();
    for r in records {
        out.push_str(&format!(
            "{} flags={:#04x} start={} end={} exporter={}\n",
            r.summary(),
            r.tcp_flags,
            r.start,
            r.end,
            r.exporter.as_deref().unwrap_or("-")
        ));
    }
    out.push_str(&render_stats(stats));
    out
}

fn render_stats(s: &FlowStats) -> String {
    let mut out = format!(
        "records={} templates={} options_records={} pending_decoded={}",
        s.records, s.templates, s.options_records, s.pending_decoded
    );
    for reason in DropReason::ALL {
        if s.dropped(reason) > 0 {
            out.push_str(&format!(" {reason}={}", s.dropped(reason)));
        }
    }
    out.push('\n');
    out
}

/// Every capture in test_data/flow decodes to its `.txt`.
#[test]
fn softflowd_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("test_data/flow");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .collect();
    files.sort();
    assert!(files.len() >= 7, "corpus missing");
    for path in files {
        let datagram = std::fs::read(&path).unwrap();
        let mut c = Collector::new(Limits::default());
        let mut out = Vec::new();
        c.decode(exporter(), &datagram, now(), &mut out);
        let stats = c.take_stats();
        assert!(!out.is_empty(), "{}", path.display());
        assert_eq!(
            stats.dropped_total(),
            0,
            "{}: {}",
            path.display(),
            render_stats(&stats)
        );
        expect_test::expect_file![path.with_extension("txt")].assert_eq(&render(&out, &stats));
    }
}

/// softflowd stamps flows with the capture's packet times: every export format, whichever
/// time elements it uses, gives them back (v9 and seconds to the second).
#[test]
fn softflowd_capture_times_survive() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("test_data/flow");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "bin") {
            continue;
        }
        let datagram = std::fs::read(&path).unwrap();
        let mut c = Collector::new(Limits::default());
        let mut out = Vec::new();
        c.decode(exporter(), &datagram, now(), &mut out);
        let udp = out.iter().find(|r| r.protocol == 17).unwrap();
        let tcp = out.iter().find(|r| r.protocol == 6).unwrap();
        for (what, got, want) in [
            ("udp start", udp.start, 1_795_000_002_250),
            ("tcp start", tcp.start, 1_795_000_000_250),
            ("tcp end", tcp.end, 1_795_000_001_250),
        ] {
            assert!(
                (got.as_millis() - want).abs() < 1000,
                "{}: {what} {got}",
                path.display()
            );
        }
    }
}

fn decode_all(c: &mut Collector, datagrams: &[Vec<u8>]) -> Vec<FlowRecord> {
    let mut out = Vec::new();
    for d in datagrams {
        c.decode(exporter(), d, now(), &mut out);
    }
    out
}

#[test]
fn v5_round_trip() {
    let records = vec![
        flow("10.0.0.7", "203.0.113.5", 6, 51234, 23),
        flow("10.0.0.8", "10.0.0.9", 17, 5000, 53),
    ];
    let mut c = Collector::new(Limits::default());
    let out = decode_all(&mut c, &[encode::v5_message(&clock(), 1, &records)]);
    assert_eq!(out, records);
}

#[test]
fn data_before_template_waits_and_is_decoded() {
    for dialect in [Dialect::V9, Dialect::Ipfix] {
        let layout = Layout::standard(false, TimeForm::Uptime);
        let records = vec![flow("10.0.0.7", "203.0.113.5", 6, 51234, 23)];
        let msg = |sets: &[Vec<u8>]| match dialect {
            Dialect::V9 => encode::v9_message(&clock(), 1, 7, sets),
            Dialect::Ipfix => encode::ipfix_message(&clock(), 1, 7, sets),
        };
        let data = msg(&[layout.data_set(dialect, 300, &records, &clock())]);
        let mut template_sets = vec![layout.template_set(dialect, 300)];
        if dialect == Dialect::Ipfix {
            template_sets.push(encode::system_init_template_set(dialect, 301));
            template_sets.push(encode::system_init_data_set(dialect, 301, clock().boot_ms));
        }
        let mut c = Collector::new(Limits::default());
        let mut out = Vec::new();
        c.decode(exporter(), &data, now(), &mut out);
        assert!(out.is_empty());
        assert!(c.pending_bytes() > 0);
        // IPFIX: the options data (system init time) comes after the template here, so the
        // parked set is decoded when its template arrives, before the init time is known;
        // send the options first, as softflowd does.
        if dialect == Dialect::Ipfix {
            template_sets.rotate_left(1);
        }
        c.decode(exporter(), &msg(&template_sets), now(), &mut out);
        assert_eq!(out, records, "{dialect:?}");
        assert_eq!(c.pending_bytes(), 0);
        let stats = c.take_stats();
        assert_eq!(stats.pending_decoded, 1);
        assert_eq!(stats.dropped_total(), 0, "{}", render_stats(&stats));
        // Further data decodes at once.
        c.decode(exporter(), &data, now(), &mut out);
        assert_eq!(out.len(), 2);
    }
}

#[test]
fn pending_sets_time_out_and_are_bounded() {
    let layout = Layout::standard(false, TimeForm::Millis);
    let records = vec![flow("10.0.0.7", "203.0.113.5", 6, 51234, 23); 10];
    let set = layout.data_set(Dialect::Ipfix, 300, &records, &clock());
    let data = encode::ipfix_message(&clock(), 1, 7, std::slice::from_ref(&set));
    let limits = Limits {
        pending_timeout_ms: 10_000,
        max_pending_bytes_per_exporter: (set.len() - 4) * 3,
        max_pending_bytes: (set.len() - 4) * 4,
        ..Limits::default()
    };
    let mut c = Collector::new(limits);
    let mut out = Vec::new();
    for _ in 0..5 {
        c.decode(exporter(), &data, now(), &mut out);
    }
    // A second exporter has its own bound, the total bound stops it after one.
    let other: SocketAddr = "192.0.2.2:1".parse().unwrap();
    c.decode(other, &data, now(), &mut out);
    c.decode(other, &data, now(), &mut out);
    let stats = c.take_stats();
    assert_eq!(stats.dropped(DropReason::PendingFull), 3);
    c.expire(now().saturating_add_ms(10_001));
    assert_eq!(c.take_stats().dropped(DropReason::PendingTimeout), 4);
    assert_eq!(c.pending_bytes(), 0);
    assert!(out.is_empty());
}

#[test]
fn templates_expire_are_bounded_and_withdrawn() {
    let layout = Layout::standard(false, TimeForm::Millis);
    let records = vec![flow("10.0.0.7", "203.0.113.5", 6, 51234, 23)];
    let limits = Limits {
        template_timeout_ms: 60_000,
        max_templates_per_exporter: 2,
        max_templates: 3,
        ..Limits::default()
    };
    let mut c = Collector::new(limits);
    let mut out = Vec::new();
    let sets: Vec<Vec<u8>> = (256..260)
        .map(|id| layout.template_set(Dialect::Ipfix, id))
        .collect();
    c.decode(
        exporter(),
        &encode::ipfix_message(&clock(), 0, 1, &sets),
        now(),
        &mut out,
    );
    assert_eq!(c.templates(), 2);
    assert_eq!(c.take_stats().dropped(DropReason::TemplateLimit), 2);
    let data = encode::ipfix_message(
        &clock(),
        1,
        1,
        &[layout.data_set(Dialect::Ipfix, 256, &records, &clock())],
    );
    c.decode(exporter(), &data, now(), &mut out);
    assert_eq!(out.len(), 1);
    // After the timeout the template is gone and data waits again.
    c.decode(exporter(), &data, now().saturating_add_ms(60_001), &mut out);
    assert_eq!(out.len(), 1);
    assert!(c.pending_bytes() > 0);
    assert_eq!(c.templates(), 0);
    // Withdrawal: template 256 defined, then withdrawn (field count 0).
    let mut c = Collector::new(Limits::default());
    let withdraw = vec![0, 2, 0, 8, 1, 0, 0, 0];
    c.decode(
        exporter(),
        &encode::ipfix_message(&clock(), 0, 1, &[layout.template_set(Dialect::Ipfix, 256)]),
        now(),
        &mut out,
    );
    assert_eq!(c.templates(), 1);
    c.decode(
        exporter(),
        &encode::ipfix_message(&clock(), 0, 1, &[withdraw]),
        now(),
        &mut out,
    );
    assert_eq!(c.templates(), 0);
    // Templates are scoped by exporter and domain.
    c.decode(
        exporter(),
        &encode::ipfix_message(&clock(), 0, 1, &[layout.template_set(Dialect::Ipfix, 256)]),
        now(),
        &mut out,
    );
    let before = out.len();
    let other_domain = encode::ipfix_message(
        &clock(),
        1,
        2,
        &[layout.data_set(Dialect::Ipfix, 256, &records, &clock())],
    );
    c.decode(exporter(), &other_domain, now(), &mut out);
    assert_eq!(out.len(), before);
}

#[test]
fn malformed_datagrams_are_counted_by_reason() {
    let layout = Layout::standard(false, TimeForm::Millis);
    let good = encode::ipfix_message(&clock(), 1, 1, &[layout.template_set(Dialect::Ipfix, 256)]);
    let mut bad_template = good.clone();
    bad_template[20] = 0; // template id 256 -> 0..255
    bad_template[21] = 5;
    let mut short_set = good.clone();
    short_set[18] = 0;
    short_set[19] = 2; // set length 2
    let mut long_set = good.clone();
    long_set[18] = 0xff;
    let v5 = encode::v5_message(&clock(), 1, &[flow("10.0.0.7", "203.0.113.5", 6, 1, 2)]);
    let cases: Vec<(&str, Vec<u8>, DropReason)> = vec![
        ("empty", vec![], DropReason::Truncated),
        ("version 7", vec![0, 7, 0, 0], DropReason::BadVersion),
        ("v5 header cut", v5[..20].to_vec(), DropReason::Truncated),
        ("v5 record cut", v5[..60].to_vec(), DropReason::Truncated),
        (
            "v5 zero count",
            {
                let mut d = v5.clone();
                d[3] = 0;
                d
            },
            DropReason::BadHeader,
        ),
        (
            "v9 header cut",
            vec![0, 9, 0, 1, 0, 0],
            DropReason::Truncated,
        ),
        (
            "ipfix length beyond datagram",
            {
                let mut d = good.clone();
                d[3] = d[3].wrapping_add(1);
                d
            },
            DropReason::Truncated,
        ),
        (
            "ipfix length too small",
            {
                let mut d = good.clone();
                d[2] = 0;
                d[3] = 8;
                d
            },
            DropReason::BadHeader,
        ),
        (
            "template id below 256",
            bad_template,
            DropReason::BadTemplate,
        ),
        ("set length below 4", short_set, DropReason::BadHeader),
        ("set beyond message", long_set, DropReason::Truncated),
    ];
    for (name, datagram, reason) in cases {
        let mut c = Collector::new(Limits::default());
        let mut out = Vec::new();
        c.decode(exporter(), &datagram, now(), &mut out);
        let stats = c.take_stats();
        assert_eq!(stats.dropped(reason), 1, "{name}: {}", render_stats(&stats));
        assert_eq!(stats.dropped_total(), 1, "{name}: {}", render_stats(&stats));
    }
    // A record without addresses is incomplete.
    let layout = Layout {
        v6: false,
        columns: vec![Column::SrcPort, Column::DstPort],
    };
    let mut c = Collector::new(Limits::default());
    let mut out = Vec::new();
    let records = [flow("10.0.0.7", "203.0.113.5", 6, 1, 2)];
    c.decode(
        exporter(),
        &encode::ipfix_message(
            &clock(),
            1,
            1,
            &[
                layout.template_set(Dialect::Ipfix, 256),
                layout.data_set(Dialect::Ipfix, 256, &records, &clock()),
            ],
        ),
        now(),
        &mut out,
    );
    assert_eq!(c.take_stats().dropped(DropReason::IncompleteRecord), 1);
}

fn arb_record(v6: bool) -> impl Strategy<Value = FlowRecord> {
    let addr = move || -> BoxedStrategy<IpAddr> {
        if v6 {
            any::<u128>()
                .prop_map(|a| IpAddr::V6(Ipv6Addr::from(a)))
                .boxed()
        } else {
            any::<u32>()
                .prop_map(|a| IpAddr::V4(Ipv4Addr::from(a)))
                .boxed()
        }
    };
    (
        addr(),
        addr(),
        any::<u16>(),
        any::<u16>(),
        prop_oneof![Just(6u8), Just(17u8), Just(1u8), any::<u8>()],
        any::<u32>(),
        any::<u32>(),
        any::<u8>(),
        0i64..3_000_000,
        0i64..600_000,
    )
        .prop_map(
            |(src, dst, sp, dp, proto, bytes, packets, flags, start, dur)| FlowRecord {
                src,
                dst,
                src_port: sp,
                dst_port: dp,
                protocol: proto,
                bytes: u64::from(bytes),
                packets: u64::from(packets),
                tcp_flags: if proto == 6 { flags } else { 0 },
                start: Timestamp::from_millis(T0 - 3_000_000 + start),
                end: Timestamp::from_millis((T0 - 3_000_000 + start + dur).min(T0)),
                exporter: Some("192.0.2.1".into()),
                peer_device: None,
            },
        )
}

fn arb_opaque() -> impl Strategy<Value = Column> {
    (
        prop_oneof![Just(0u32), Just(29305u32), 1u32..100_000],
        prop::collection::vec(any::<u8>(), 0..300),
        any::<bool>(),
        prop_oneof![Just(10u16), Just(14u16), Just(82u16), 300u16..0x7fff],
    )
        .prop_map(|(enterprise, mut value, variable, id)| {
            if !variable {
                value.truncate(16);
                if value.is_empty() {
                    value.push(0);
                }
            }
            Column::Opaque {
                id,
                enterprise,
                value,
                variable,
            }
        })
}

/// A layout with every column the record needs, in any order, reduced-size counters and
/// skipped fields (enterprise and variable-length ones only in IPFIX).
fn arb_layout(dialect: Dialect) -> impl Strategy<Value = Layout> {
    (
        any::<bool>(),
        prop::sample::select(TimeForm::ALL.to_vec()),
        4u16..=8,
        4u16..=8,
        1u16..=2,
        prop::collection::vec(arb_opaque(), 0..4),
        any::<u64>(),
    )
        .prop_map(move |(v6, time, blen, plen, flen, opaque, seed)| {
            let mut columns = vec![
                Column::SrcAddr,
                Column::DstAddr,
                Column::SrcPort,
                Column::DstPort,
                Column::Protocol,
                Column::TcpFlags { len: flen },
                Column::Bytes { len: blen },
                Column::Packets { len: plen },
                Column::Start(time),
                Column::End(time),
            ];
            for o in opaque {
                let v9_ok = matches!(
                    &o,
                    Column::Opaque {
                        enterprise: 0,
                        variable: false,
                        ..
                    }
                );
                if dialect == Dialect::Ipfix || v9_ok {
                    columns.push(o);
                }
            }
            // A deterministic shuffle from the seed.
            let mut s = seed | 1;
            for i in (1..columns.len()).rev() {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                columns.swap(i, (s % (i as u64 + 1)) as usize);
            }
            Layout { v6, columns }
        })
}

fn time_form(layout: &Layout) -> TimeForm {
    layout
        .columns
        .iter()
        .find_map(|c| match c {
            Column::Start(t) => Some(*t),
            _ => None,
        })
        .unwrap()
}

fn expected(layout: &Layout, mut r: FlowRecord) -> FlowRecord {
    let form = time_form(layout);
    r.start = Timestamp::from_millis(form.quantise(r.start.as_millis()));
    r.end = Timestamp::from_millis(form.quantise(r.end.as_millis()));
    r
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn v9_and_ipfix_round_trip(
        (dialect, layout) in prop_oneof![Just(Dialect::V9), Just(Dialect::Ipfix)]
            .prop_flat_map(|d| (Just(d), arb_layout(d))),
        records in prop::collection::vec(arb_record(false), 1..20),
        records6 in prop::collection::vec(arb_record(true), 1..20),
        data_first in any::<bool>(),
    ) {
        let records = if layout.v6 { records6 } else { records };
        let c = clock();
        let msg = |sets: &[Vec<u8>]| match dialect {
            Dialect::V9 => encode::v9_message(&c, 1, 3, sets),
            Dialect::Ipfix => encode::ipfix_message(&c, 1, 3, sets),
        };
        let mut template = vec![layout.template_set(dialect, 999)];
        if dialect == Dialect::Ipfix {
            template.insert(0, encode::system_init_data_set(dialect, 998, c.boot_ms));
            template.insert(0, encode::system_init_template_set(dialect, 998));
        }
        // Split the records into datagrams that fit.
        let data: Vec<Vec<u8>> = records
            .chunks(4)
            .map(|chunk| msg(&[layout.data_set(dialect, 999, chunk, &c)]))
            .collect();
        let mut datagrams = vec![msg(&template)];
        if data_first {
            datagrams.splice(0..0, data.iter().take(1).cloned());
            datagrams.extend(data.iter().skip(1).cloned());
        } else {
            datagrams.extend(data.iter().cloned());
        }
        let mut col = Collector::new(Limits::default());
        let out = decode_all(&mut col, &datagrams);
        let stats = col.take_stats();
        prop_assert_eq!(stats.dropped_total(), 0, "{}", render_stats(&stats));
        let want: Vec<FlowRecord> = records.into_iter().map(|r| expected(&layout, r)).collect();
        // A set that waited for its template decodes before the init time is learned only
        // when it came first; with options sent first (as here) times agree either way.
        prop_assert_eq!(out, want);
    }

    #[test]
    fn v5_round_trips(records in prop::collection::vec(arb_record(false), 1..30)) {
        let mut col = Collector::new(Limits::default());
        let out = decode_all(&mut col, &[encode::v5_message(&clock(), 1, &records)]);
        prop_assert_eq!(out, records);
    }

    #[test]
    fn arbitrary_bytes_never_panic(version in prop_oneof![Just(5u16), Just(9u16), Just(10u16), any::<u16>()], tail in prop::collection::vec(any::<u8>(), 0..1500)) {
        let mut datagram = version.to_be_bytes().to_vec();
        datagram.extend(tail);
        let mut col = Collector::new(Limits::default());
        let mut out = Vec::new();
        col.decode(exporter(), &datagram, now(), &mut out);
        col.decode(exporter(), &datagram, now(), &mut out);
        col.expire(now().saturating_add_ms(1_000_000));
    }

    #[test]
    fn mutated_datagrams_never_panic(
        records in prop::collection::vec(arb_record(false), 1..5),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        ipfix in any::<bool>(),
    ) {
        let layout = Layout::standard(false, TimeForm::Uptime);
        let c = clock();
        let dialect = if ipfix { Dialect::Ipfix } else { Dialect::V9 };
        let sets = [layout.template_set(dialect, 256), layout.data_set(dialect, 256, &records, &c)];
        let mut datagram = match dialect {
            Dialect::V9 => encode::v9_message(&c, 1, 3, &sets),
            Dialect::Ipfix => encode::ipfix_message(&c, 1, 3, &sets),
        };
        for (at, byte) in flips {
            let i = at.index(datagram.len());
            datagram[i] = byte;
        }
        let mut col = Collector::new(Limits::default());
        let mut out = Vec::new();
        col.decode(exporter(), &datagram, now(), &mut out);
        // A flipped template byte can shorten the record (a field length of 2 instead of
        // 4), so the data set legitimately holds more records than were encoded (13 from 3
        // was seen); what must hold is that decoding never amplifies: every record takes
        // at least a byte of the datagram.
        prop_assert!(out.len() <= datagram.len(), "{} records from {} bytes", out.len(), datagram.len());
    }

    #[test]
    fn json_round_trips_the_serde_shape(record in arb_record(false), v6 in arb_record(true)) {
        for r in [record, v6] {
            let line = serde_json::to_string(&r).unwrap();
            prop_assert_eq!(json::decode_line(line.as_bytes(), now()).unwrap(), r);
        }
    }

    #[test]
    fn json_arbitrary_lines_never_panic(body in prop::collection::vec(any::<u8>(), 0..2000)) {
        let mut out = Vec::new();
        let report = json::decode_lines(&body, now(), &mut out);
        prop_assert_eq!(report.stats.records as usize, out.len());
    }
}

#[test]
fn json_lines_by_example() {
    // (line, expected summary with times, or the refusal reason)
    let cases: &[(&str, Result<&str, DropReason>)] = &[
        (
            r#"{"src":"10.0.0.7","dst":"203.0.113.5","src_port":51234,"dst_port":23,"protocol":6,"bytes":180,"packets":3,"tcp_flags":2,"start":"2026-11-16T09:33:20.000Z","end":"2026-11-16T09:33:21.500Z"}"#,
            Ok(
                "tcp 10.0.0.7:51234 -> 203.0.113.5:23 (3 packets, 180 bytes) flags=0x02 2026-11-16T09:33:20.000Z 2026-11-16T09:33:21.500Z -",
            ),
        ),
        // nfdump -o json
        (
            r#"{"type":"FLOW","t_first":"2026-11-16T09:33:20.250","t_last":"2026-11-16T09:33:21.250","proto":6,"tcp_flags":"...A..S.","src4_addr":"10.0.0.7","dst4_addr":"203.0.113.5","src_port":51234,"dst_port":23,"in_packets":2,"in_bytes":110}"#,
            Ok(
                "tcp 10.0.0.7:51234 -> 203.0.113.5:23 (2 packets, 110 bytes) flags=0x12 2026-11-16T09:33:20.250Z 2026-11-16T09:33:21.250Z -",
            ),
        ),
        // goflow2
        (
            r#"{"SrcAddr":"2001:db8::7","DstAddr":"2001:db8::1","SrcPort":5000,"DstPort":53,"Proto":17,"Bytes":58,"Packets":1,"TimeFlowStartNs":1795000002250000000,"TimeFlowEndNs":1795000002250000000,"SamplerAddress":"192.0.2.1"}"#,
            Ok(
                "udp [2001:db8::7]:5000 -> [2001:db8::1]:53 (1 packets, 58 bytes) flags=0x00 2026-11-18T11:06:42.250Z 2026-11-18T11:06:42.250Z 192.0.2.1",
            ),
        ),
        // pmacct
        (
            r#"{"ip_src":"10.0.0.7","ip_dst":"198.51.100.9","port_src":40000,"port_dst":443,"ip_proto":"tcp","tcp_flags":"24","bytes":1200,"packets":4,"timestamp_start":"2026-11-16 09:33:20.000000","timestamp_end":"2026-11-16 09:33:25.000000","peer_ip_src":"192.0.2.9"}"#,
            Ok(
                "tcp 10.0.0.7:40000 -> 198.51.100.9:443 (4 packets, 1200 bytes) flags=0x18 2026-11-16T09:33:20.000Z 2026-11-16T09:33:25.000Z 192.0.2.9",
            ),
        ),
        // epoch seconds with a fraction, one time only, no counters
        (
            r#"{"src":"10.0.0.1","dst":"10.0.0.2","proto":"icmp","first":1795000000.5}"#,
            Ok(
                "icmp 10.0.0.1:0 -> 10.0.0.2:0 (0 packets, 0 bytes) flags=0x00 2026-11-18T11:06:40.500Z 2026-11-18T11:06:40.500Z -",
            ),
        ),
        // no times at all: the receive time
        (
            r#"{"src":"10.0.0.1","dst":"10.0.0.2"}"#,
            Ok(
                "0 10.0.0.1:0 -> 10.0.0.2:0 (0 packets, 0 bytes) flags=0x00 2026-11-18T11:06:50.000Z 2026-11-18T11:06:50.000Z -",
            ),
        ),
        ("not json", Err(DropReason::JsonInvalid)),
        ("[1,2]", Err(DropReason::JsonInvalid)),
        (r#"{"dst":"10.0.0.2"}"#, Err(DropReason::JsonField)),
        (
            r#"{"src":"10.0.0.999","dst":"10.0.0.2"}"#,
            Err(DropReason::JsonField),
        ),
        (
            r#"{"src":"10.0.0.1","dst":"10.0.0.2","dst_port":70000}"#,
            Err(DropReason::JsonField),
        ),
        (
            r#"{"src":"10.0.0.1","dst":"10.0.0.2","protocol":"carrier-pigeon"}"#,
            Err(DropReason::JsonField),
        ),
        (
            r#"{"src":"10.0.0.1","dst":"10.0.0.2","start":"yesterday"}"#,
            Err(DropReason::JsonField),
        ),
        (
            r#"{"src":"10.0.0.1","dst":"10.0.0.2","start":1795000001,"end":1795000000}"#,
            Err(DropReason::JsonField),
        ),
        (
            r#"{"src":"10.0.0.1","dst":"10.0.0.2","tcp_flags":"XYZ"}"#,
            Err(DropReason::JsonField),
        ),
        (
            r#"{"src":"10.0.0.1","dst":"10.0.0.2","bytes":-5}"#,
            Err(DropReason::JsonField),
        ),
    ];
    for (line, want) in cases {
        let got = json::decode_line(line.as_bytes(), now()).map(|r| {
            format!(
                "{} flags={:#04x} {} {} {}",
                r.summary(),
                r.tcp_flags,
                r.start,
                r.end,
                r.exporter.as_deref().unwrap_or("-")
            )
        });
        match (got, want) {
            (Ok(got), Ok(want)) => assert_eq!(&got, want, "{line}"),
            (Err((reason, message)), Err(want)) => {
                assert_eq!(reason, *want, "{line}: {message}");
                assert!(!message.is_empty());
            }
            (got, want) => panic!("{line}: got {got:?}, want {want:?}"),
        }
    }
    let long = format!(
        r#"{{"src":"10.0.0.1","dst":"10.0.0.2","pad":"{}"}}"#,
        "x".repeat(json::MAX_LINE_BYTES)
    );
    assert_eq!(
        json::decode_line(long.as_bytes(), now()).unwrap_err().0,
        DropReason::LineTooLong
    );
}

#[test]
fn json_bodies_report_per_line() {
    let body = "{\"src\":\"10.0.0.1\",\"dst\":\"10.0.0.2\"}\r\n\n  \nnope\n{\"src\":\"10.0.0.1\"}\n{\"src\":\"10.0.0.3\",\"dst\":\"10.0.0.2\"}";
    let mut out = Vec::new();
    let report = json::decode_lines(body.as_bytes(), now(), &mut out);
    assert_eq!(out.len(), 2);
    assert_eq!(report.stats.json_lines, 4);
    assert_eq!(report.stats.dropped(DropReason::JsonInvalid), 1);
    assert_eq!(report.stats.dropped(DropReason::JsonField), 1);
    let lines: Vec<u64> = report.errors.iter().map(|e| e.line).collect();
    assert_eq!(lines, vec![4, 5]);
    assert_eq!(report.errors[1].message, "dst is missing");
}

struct Book;

impl AddressBook for Book {
    fn device_at(&self, ip: IpAddr) -> Option<(DeviceId, Sector)> {
        match ip.to_string().as_str() {
            "10.0.0.7" => Some((DeviceId::new("cam-7").unwrap(), Sector::PublicSafety)),
            "10.0.0.8" => Some((DeviceId::new("meter-8").unwrap(), Sector::Energy)),
            _ => None,
        }
    }
}

#[test]
fn devices_are_matched_by_address() {
    // (src, dst, device_id, peer_device)
    let cases = [
        ("10.0.0.7", "203.0.113.5", Some("cam-7"), None),
        ("203.0.113.5", "10.0.0.7", Some("cam-7"), None),
        ("10.0.0.7", "10.0.0.8", Some("cam-7"), Some("meter-8")),
        ("10.0.0.8", "10.0.0.7", Some("meter-8"), Some("cam-7")),
        ("198.51.100.1", "203.0.113.5", None, None),
    ];
    for (src, dst, device, peer) in cases {
        let event = to_event(flow(src, dst, 6, 1, 2), &Book);
        assert_eq!(
            event.device_id.as_ref().map(|d| d.as_str()),
            device,
            "{src} -> {dst}"
        );
        assert_eq!(event.ts, Timestamp::from_millis(T0 + 1500));
        assert_eq!(event.subject(), "obs.flow");
        let EventKind::Flow(record) = &event.kind else {
            panic!()
        };
        assert_eq!(
            record.peer_device.as_ref().map(|d| d.as_str()),
            peer,
            "{src} -> {dst}"
        );
        assert_eq!(event.sector.is_some(), device.is_some());
    }
}

//! Decode throughput of the flow collector on one core: NetFlow v5, v9 and IPFIX datagrams
//! of 30 records each (templates already learned), in records per second.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ingest::flow::encode::{self, Clock, Layout, TimeForm};
use ingest::flow::template::Dialect;
use ingest::flow::{Collector, Limits};
use model::{FlowRecord, Timestamp};

const RECORDS: usize = 30;

fn records() -> Vec<FlowRecord> {
    (0..RECORDS)
        .map(|i| FlowRecord {
            src: IpAddr::V4(Ipv4Addr::new(10, 0, (i / 256) as u8, i as u8)),
            dst: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 5)),
            src_port: 40_000 + i as u16,
            dst_port: 443,
            protocol: 6,
            bytes: 1500 * i as u64,
            packets: 3 + i as u64,
            tcp_flags: 0x1b,
            start: Timestamp::from_millis(1_795_000_000_000),
            end: Timestamp::from_millis(1_795_000_001_000),
            exporter: None,
            peer_device: None,
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let clock = Clock {
        boot_ms: 1_794_999_000_000,
        export_ms: 1_795_000_002_000,
    };
    let exporter: SocketAddr = "192.0.2.1:40000".parse().unwrap();
    let now = Timestamp::from_millis(1_795_000_002_000);
    let records = records();
    let layout = Layout::standard(false, TimeForm::Uptime);
    let ipfix_layout = Layout::standard(false, TimeForm::Millis);
    let v5 = encode::v5_message(&clock, 1, &records);
    let v9_template = encode::v9_message(&clock, 0, 1, &[layout.template_set(Dialect::V9, 256)]);
    let v9 = encode::v9_message(
        &clock,
        1,
        1,
        &[layout.data_set(Dialect::V9, 256, &records, &clock)],
    );
    let ipfix_template = encode::ipfix_message(
        &clock,
        0,
        1,
        &[ipfix_layout.template_set(Dialect::Ipfix, 256)],
    );
    let ipfix = encode::ipfix_message(
        &clock,
        1,
        1,
        &[ipfix_layout.data_set(Dialect::Ipfix, 256, &records, &clock)],
    );

    let mut group = c.benchmark_group("flow_decode");
    group.throughput(Throughput::Elements(RECORDS as u64));
    for (name, template, data) in [
        ("netflow_v5", None, &v5),
        ("netflow_v9", Some(&v9_template), &v9),
        ("ipfix", Some(&ipfix_template), &ipfix),
    ] {
        let mut collector = Collector::new(Limits::default());
        let mut out = Vec::with_capacity(RECORDS);
        if let Some(template) = template {
            collector.decode(exporter, template, now, &mut out);
        }
        group.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                collector.decode(exporter, black_box(data), now, &mut out);
                assert_eq!(out.len(), RECORDS);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

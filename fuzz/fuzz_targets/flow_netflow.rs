//! Fuzzes the NetFlow v5/v9 collector: the input is split into datagrams (at 0xff 0xfe)
//! fed to one collector, so templates learned from one datagram drive the next; never a
//! panic, and the pending buffer stays within its bound.

#![no_main]

use ingest::flow::{Collector, Limits};
use libfuzzer_sys::fuzz_target;
use model::Timestamp;

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_pending_bytes: 4096,
        max_pending_bytes_per_exporter: 2048,
        max_templates: 8,
        max_templates_per_exporter: 4,
        ..Limits::default()
    };
    let mut collector = Collector::new(limits);
    let exporter = "192.0.2.1:2055".parse().unwrap();
    let mut out = Vec::new();
    let mut now = Timestamp::from_millis(1_795_000_000_000);
    for (i, part) in data.split(|b| *b == 0xff).enumerate() {
        // Force NetFlow versions so the fuzzer spends its time past the version check.
        let mut datagram = if i % 2 == 0 { vec![0, 9] } else { vec![0, 5] };
        datagram.extend_from_slice(part);
        collector.decode(exporter, &datagram, now, &mut out);
        assert!(collector.pending_bytes() <= 4096);
        now = now.saturating_add_ms(700);
    }
    collector.expire(now.saturating_add_ms(3_600_000));
    assert_eq!(collector.pending_bytes(), 0);
});

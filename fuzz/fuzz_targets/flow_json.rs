//! Fuzzes the JSON lines flow decoder: never a panic, and every line is either a record or
//! a counted refusal.

#![no_main]

use libfuzzer_sys::fuzz_target;
use model::Timestamp;

fuzz_target!(|data: &[u8]| {
    let mut out = Vec::new();
    let report =
        ingest::flow::json::decode_lines(data, Timestamp::from_millis(1_795_000_000_000), &mut out);
    assert_eq!(report.stats.records as usize, out.len());
    assert_eq!(
        report.stats.json_lines,
        report.stats.records + report.stats.dropped_total()
    );
});

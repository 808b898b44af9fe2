//! Fuzzes the telemetry payload decoders (JSON objects and SenML): never a panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use model::Timestamp;

fuzz_target!(|data: &[u8]| {
    let now = Timestamp::from_millis(1_795_000_000_000);
    let _ = ingest::mqtt::decode::decode(data, now);
    let _ = ingest::mqtt::decode::decode_ack(data, now);
});

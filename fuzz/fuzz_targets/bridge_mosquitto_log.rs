//! Fuzzes the bridge's reading of Mosquitto's log lines (`$SYS/broker/log/#`): never a panic,
//! whatever a broker (or someone able to publish there) sends.

#![no_main]

use libfuzzer_sys::fuzz_target;
use model::Timestamp;

fuzz_target!(|data: &[u8]| {
    let now = Timestamp::from_millis(1_796_204_170_000);
    let text = String::from_utf8_lossy(data);
    let mut log = ingest::bridge::mosquitto::LogCorrelator::new();
    for line in text.split('\n') {
        let _ = ingest::bridge::mosquitto::parse_line(line);
        let _ = log.on_line(line, now);
    }
});

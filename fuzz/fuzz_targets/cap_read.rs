//! Fuzzes the CAP 1.2 reader: arbitrary bytes must give an alert or an error, never a panic,
//! and whatever it accepts must write and read back to the same alert.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(alert) = cap::Alert::from_xml(text) {
        let written = alert.to_xml().expect("an accepted alert can be written");
        let back = cap::Alert::from_xml(&written).expect("what we write we read");
        assert_eq!(back, alert);
    }
});

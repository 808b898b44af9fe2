//! Fuzz the TAXII request parsers: query strings (every endpoint's filters), `next`
//! cursors, and POSTed envelopes down to each object's preparation must never panic, and
//! a cursor that parses must be one this server could have produced.
#![no_main]

use libfuzzer_sys::fuzz_target;
use taxii::query::{Endpoint, Filters};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        for e in [Endpoint::Objects, Endpoint::Object, Endpoint::Delete, Endpoint::Versions] {
            let _ = Filters::parse(Some(text), e);
        }
        if let Ok(c) = taxii::cursor::Cursor::decode(text) {
            assert_eq!(c.encode(), text);
        }
    }
    if let Ok(objects) = taxii::server::parse_envelope(data) {
        for o in &objects {
            let _ = taxii::server::prepare_object(o, stix::object::tlp::Tlp::Amber, 0);
        }
    }
});

//! Fuzz the STIX pattern parser and compiler: any input must parse or fail cleanly, and
//! whatever parses must display to an equivalent pattern and compile or fail cleanly.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(p) = stix::pattern::parse(s) {
        let again = stix::pattern::parse(&p.to_string()).expect("displayed pattern parses");
        assert_eq!(again, p);
        let _ = stix::matcher::CompiledPattern::compile(&p, s);
    }
});

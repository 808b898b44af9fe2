//! Fuzz the STIX JSON readers: validation, observation preparation and matching of
//! arbitrary JSON must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    let _ = stix::object::validate_document(&v);
    if let Ok(obs) = stix::matcher::observations_from_json(&v) {
        let p = stix::matcher::CompiledPattern::new(
            "([ipv4-addr:value ISSUBSET '10.0.0.0/8' OR file:hashes.MD5 = '0cc175b9c0f1b6a831c399e269772661'] FOLLOWEDBY [network-traffic:src_ref.value LIKE '%' AND network-traffic:protocols[*] = 'tcp']) WITHIN 60 SECONDS",
        )
        .expect("fixed pattern compiles");
        let _ = p.bindings(&obs, 10);
    }
});

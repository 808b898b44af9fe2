//! Unit tests: parser, matcher, streaming, objects, tool.

use serde_json::json;

use crate::matcher::{CompiledPattern, observations_from_json};

#[test]
fn smoke() {
    let p = CompiledPattern::new("[ipv4-addr:value = '10.0.0.1']").unwrap();
    let doc = json!({"type": "bundle", "id": "bundle--1", "objects": [
        {"type": "observed-data", "id": "observed-data--a", "first_observed": "2020-01-01T00:00:00Z",
         "last_observed": "2020-01-01T00:00:00Z", "number_observed": 1, "object_refs": ["ipv4-addr--1"]},
        {"type": "ipv4-addr", "id": "ipv4-addr--1", "value": "10.0.0.1"}
    ]});
    let obs = observations_from_json(&doc).unwrap();
    assert!(p.matches(&obs));
}

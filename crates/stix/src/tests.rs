//! Unit tests: parser, matcher, streaming, objects, tool.

use std::sync::Arc;

use proptest::prelude::*;
use serde_json::{Value, json};

use crate::matcher::{CompiledPattern, Observation, observations_from_json};
use crate::object::{sco_id, tlp, validate_document};
use crate::pattern::{ParseError, parse};
use crate::stream::{ObservableView, StreamConfig, StreamMatcher};
use crate::tool::{check_pattern, match_text};

const T0: i64 = 1_577_836_800_000_000; // 2020-01-01T00:00:00Z in microseconds

fn obs(id: &str, at_s: i64, objects: Vec<Value>) -> Observation {
    Observation::new(
        id,
        T0 + at_s * 1_000_000,
        T0 + at_s * 1_000_000,
        1,
        objects.into_iter().map(Arc::new).collect(),
    )
}

fn ip(id: &str, v: &str) -> Value {
    json!({"type": if v.contains(':') { "ipv6-addr" } else { "ipv4-addr" }, "id": id, "value": v})
}

fn matches(p: &str, o: &[Observation]) -> bool {
    CompiledPattern::new(p)
        .unwrap_or_else(|e| panic!("{p}: {e}"))
        .matches(o)
}

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

#[test]
fn parse_errors_name_position_and_expectation() {
    let e = parse("[file:name = ]").unwrap_err();
    assert_eq!(e.position(), 13);
    assert_eq!(e.to_string(), "at 13: expected a literal value, found ']'");
    let e = parse("[file:name = 'a'] AND").unwrap_err();
    assert_eq!(
        e.to_string(),
        "at 21: expected '[' or '(', found end of pattern"
    );
    let e = parse("[file:size > true]").unwrap_err();
    assert!(e.to_string().contains("orderable literal"), "{e}");
    assert!(matches!(
        parse("[a:b = 1] REPEATS 2 TIMES REPEATS 3 TIMES"),
        Err(ParseError::DuplicateQualifier { .. })
    ));
    assert!(matches!(
        parse("[file:hashes.MD5 = 'zz']"),
        Err(ParseError::InvalidHash { .. })
    ));
    assert_eq!(parse("/*c*/[a:b = 1]"), Err(ParseError::MissingBrackets));
    // a qualifier type may repeat on a parenthesised group (as stix2-patterns allows)
    assert!(parse("([a:b = 1]) WITHIN 5 SECONDS WITHIN 6 SECONDS").is_ok());
}

#[test]
fn every_literal_kind_parses_to_its_value() {
    use crate::pattern::{CmpExpr, Literal, ObsExpr, Op};
    let lit = |src: &str| -> Literal {
        let p = parse(&format!("[a:b = {src}]")).unwrap();
        match p.root {
            ObsExpr::Simple(CmpExpr::Test(t)) => match t.op {
                Op::Eq(l) => l,
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(lit("'it\\'s \\\\'"), Literal::Str("it's \\".into()));
    assert_eq!(lit("-12"), Literal::Int(-12));
    assert_eq!(lit("+7"), Literal::Int(7));
    assert_eq!(lit("-.5"), Literal::Float(-0.5));
    assert_eq!(lit("true"), Literal::Bool(true));
    assert_eq!(lit("h'00fF'"), Literal::Hex(vec![0, 255]));
    assert_eq!(lit("b'AQID'"), Literal::Binary(vec![1, 2, 3]));
    assert_eq!(lit("b'AQ=='"), Literal::Binary(vec![1]));
    match lit("t'2020-01-01T00:00:01.5Z'") {
        Literal::Timestamp(t) => assert_eq!(t.micros(), Some(T0 + 1_500_000)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn display_round_trips() {
    for p in [
        "[a:b[*].'c d'[0].e = 'x\\'y'] AND [a:b NOT IN (1, 2.5)]",
        "([a:b > t'2020-01-01T00:00:00Z'] FOLLOWEDBY [NOT EXISTS a:c]) WITHIN 2.5 SECONDS",
        "[a:b = h'00ff' OR (a:c = b'AQID' AND a:d != true)] REPEATS 3 TIMES START t'2020-01-01T00:00:00Z' STOP t'2020-01-02T00:00:00Z'",
    ] {
        let parsed = parse(p).unwrap();
        let again = parse(&parsed.to_string()).unwrap();
        assert_eq!(parsed, again, "{p} -> {parsed}");
    }
}

#[test]
fn comparison_operators() {
    let o = vec![obs(
        "observed-data--1",
        0,
        vec![
            json!({"type": "file", "id": "file--1", "name": "a.exe", "size": 100,
            "hashes": {"MD5": "0cc175b9c0f1b6a831c399e269772661"}, "magic_hex": "ffd8",
            "tags": ["x", "y"], "mtime": "2020-01-01T00:00:05Z", "enc": false}),
        ],
    )];
    for (p, want) in [
        ("[file:name = 'a.exe']", true),
        ("[file:name != 'a.exe']", false),
        ("[file:name NOT = 'a.exe']", false),
        ("[file:size < 101]", true),
        ("[file:size > 100]", false),
        ("[file:size <= 100.0]", true),
        ("[file:size >= 100.5]", false),
        ("[file:size NOT > 100]", true),
        ("[file:size IN (1, 100)]", true),
        ("[file:size NOT IN (1, 100)]", false),
        ("[file:name LIKE '%.exe']", true),
        ("[file:name LIKE 'a_exe']", true),
        ("[file:name LIKE 'A%']", false),
        ("[file:name MATCHES '^a\\\\.']", true),
        ("[file:name NOT MATCHES 'exe$']", false),
        ("[file:magic_hex = h'ffd8']", true),
        ("[file:magic_hex = b'/9g=']", true),
        ("[file:tags[*] = 'y']", true),
        ("[file:tags[0] = 'y']", false),
        ("[file:tags[-1] = 'y']", false),
        ("[file:mtime > t'2020-01-01T00:00:04Z']", true),
        ("[file:mtime = t'2020-01-01T00:00:05.000Z']", true),
        ("[file:enc = false]", true),
        ("[file:enc = 0]", false),
        (
            "[file:hashes.MD5 = '0cc175b9c0f1b6a831c399e269772661']",
            true,
        ),
        (
            "[file:hashes.'MD5' = '0cc175b9c0f1b6a831c399e269772661']",
            true,
        ),
        ("[EXISTS file:name]", true),
        ("[NOT EXISTS file:name]", false),
        ("[NOT EXISTS file:parent_directory_ref]", true),
        ("[file:name = 'a.exe' AND file:size = 1]", false),
        ("[file:name = 'b' OR file:size = 100]", true),
        ("[file:size = 'x']", false),
        ("[file:size != 'x']", true),
        ("[directory:path = 'a.exe']", false),
    ] {
        assert_eq!(matches(p, &o), want, "{p}");
    }
}

#[test]
fn issubset_and_issuperset_for_ipv4_and_ipv6() {
    let o = vec![obs(
        "observed-data--1",
        0,
        vec![
            ip("ipv4-addr--1", "10.1.2.3"),
            ip("ipv6-addr--1", "2001:db8::1"),
            json!({"type": "x-net", "id": "x-net--1", "v4": "10.1.0.0/16", "v6": "2001:db8::/32"}),
        ],
    )];
    for (p, want) in [
        ("[ipv4-addr:value ISSUBSET '10.0.0.0/8']", true),
        ("[ipv4-addr:value ISSUBSET '10.1.3.0/24']", false),
        ("[ipv4-addr:value NOT ISSUBSET '10.1.3.0/24']", true),
        ("[ipv6-addr:value ISSUBSET '2001:db8::/32']", true),
        ("[ipv6-addr:value ISSUBSET '2001:db9::/32']", false),
        ("[ipv6-addr:value ISSUBSET '10.0.0.0/8']", false),
        ("[x-net:v4 ISSUPERSET '10.1.200.7']", true),
        ("[x-net:v4 ISSUPERSET '10.1.0.0/15']", false),
        ("[x-net:v6 ISSUPERSET '2001:db8:ffff::1']", true),
        ("[x-net:v6 ISSUPERSET '2001:db8::/31']", false),
    ] {
        assert_eq!(matches(p, &o), want, "{p}");
    }
}

#[test]
fn references_are_followed() {
    let o = vec![obs(
        "observed-data--1",
        0,
        vec![
            json!({"type": "network-traffic", "id": "network-traffic--1", "src_ref": "ipv4-addr--1",
                "dst_refs_x": ["ipv4-addr--1", "ipv4-addr--2"], "protocols": ["tcp"]}),
            ip("ipv4-addr--1", "10.0.0.1"),
            ip("ipv4-addr--2", "10.0.0.2"),
        ],
    )];
    assert!(matches("[network-traffic:src_ref.value = '10.0.0.1']", &o));
    assert!(!matches("[network-traffic:src_ref.value = '10.0.0.2']", &o));
    assert!(matches(
        "[network-traffic:x_refs_unused = 1 OR network-traffic:protocols[0] = 'tcp']",
        &o
    ));
}

fn two(a_s: i64, b_s: i64) -> Vec<Observation> {
    vec![
        obs(
            "observed-data--a",
            a_s,
            vec![ip("ipv4-addr--1", "10.0.0.1")],
        ),
        obs(
            "observed-data--b",
            b_s,
            vec![ip("ipv4-addr--2", "10.0.0.2")],
        ),
    ]
}

#[test]
fn observation_operators_and_qualifiers() {
    let a = "[ipv4-addr:value = '10.0.0.1']";
    let b = "[ipv4-addr:value = '10.0.0.2']";
    assert!(matches(&format!("{a} AND {b}"), &two(0, 10)));
    assert!(matches(
        &format!("{a} OR [ipv4-addr:value = 'x']"),
        &two(0, 10)
    ));
    assert!(matches(&format!("{a} FOLLOWEDBY {b}"), &two(0, 10)));
    assert!(!matches(&format!("{a} FOLLOWEDBY {b}"), &two(10, 0)));
    assert!(matches(
        &format!("({a} AND {b}) WITHIN 10 SECONDS"),
        &two(0, 10)
    ));
    assert!(!matches(
        &format!("({a} AND {b}) WITHIN 9.5 SECONDS"),
        &two(0, 10)
    ));
    // one observation cannot be bound twice
    assert!(!matches(&format!("{a} AND {a}"), &two(0, 10)));
    assert!(!matches(&format!("{a} REPEATS 2 TIMES"), &two(0, 10)));
    assert!(matches(
        "[ipv4-addr:value LIKE '10.0.0.%'] REPEATS 2 TIMES",
        &two(0, 10)
    ));
    assert!(matches(
        &format!("{a} START t'2020-01-01T00:00:00Z' STOP t'2020-01-01T00:00:01Z'"),
        &two(0, 10)
    ));
    assert!(!matches(
        &format!("{b} START t'2020-01-01T00:00:00Z' STOP t'2020-01-01T00:00:10Z'"),
        &two(0, 10)
    ));
}

#[test]
fn no_cap_on_observations_one_evaluation_spans() {
    let many: Vec<Observation> = (0..300)
        .map(|i| {
            obs(
                &format!("observed-data--{i}"),
                i,
                vec![ip(&format!("ipv4-addr--{i}"), "10.9.9.9")],
            )
        })
        .collect();
    let p = CompiledPattern::new("[ipv4-addr:value = '10.9.9.9'] REPEATS 250 TIMES").unwrap();
    assert!(p.matches(&many));
    let b = p.bindings(&many, 1);
    assert_eq!(b[0].len(), 250);
    let p = CompiledPattern::new("[ipv4-addr:value = '10.9.9.9'] REPEATS 301 TIMES").unwrap();
    assert!(!p.matches(&many));
}

#[test]
fn compile_refuses_what_the_reference_matcher_refuses() {
    for p in [
        "[a:b = 1] WITHIN 0 SECONDS",
        "[a:b = 1] REPEATS 0 TIMES",
        "[a:b IN (1, 'x')]",
        "[a:b = t'2021-02-30T00:00:00Z']",
        "[a:b MATCHES '(?<=x)y']",
    ] {
        assert!(parse(p).is_ok(), "{p} is grammatical");
        assert!(CompiledPattern::new(p).is_err(), "{p} cannot be matched");
    }
}

#[test]
fn bad_input_is_refused_not_a_crash() {
    let deep = format!("{}[a:b = 1]{}", "(".repeat(10_000), ")".repeat(10_000));
    assert!(matches!(parse(&deep), Err(ParseError::TooLarge { .. })));
    let deep_cmp = format!("[{}a:b = 1{}]", "(".repeat(10_000), ")".repeat(10_000));
    assert!(matches!(parse(&deep_cmp), Err(ParseError::TooLarge { .. })));
    let huge = format!("[a:b = '{}']", "x".repeat(100_000));
    assert!(matches!(parse(&huge), Err(ParseError::TooLarge { .. })));
    // a regex whose compiled program is too big is refused
    let big = "[a:b MATCHES '(((a{100}){100}){100})']";
    assert!(parse(big).is_ok());
    assert!(CompiledPattern::new(big).is_err());
    // a classic catastrophic-backtracking regex runs in linear time
    let p = CompiledPattern::new("[a:b MATCHES '^(a+)+$']").unwrap();
    let long = "a".repeat(50_000) + "b";
    let o = vec![obs(
        "observed-data--1",
        0,
        vec![json!({"type": "a", "id": "a--1", "b": long})],
    )];
    let start = std::time::Instant::now();
    assert!(!p.matches(&o));
    assert!(start.elapsed() < std::time::Duration::from_secs(5));
}

struct Event {
    id: String,
    at_s: i64,
    ip: String,
}

impl ObservableView for Event {
    fn observation_id(&self) -> String {
        self.id.clone()
    }
    fn first_observed_us(&self) -> i64 {
        T0 + self.at_s * 1_000_000
    }
    fn objects(&self) -> Vec<Value> {
        vec![ip("ipv4-addr--0", &self.ip)]
    }
}

#[test]
fn streaming_matcher_keeps_bounded_windowed_state() {
    let patterns = vec![
        CompiledPattern::new("[ipv4-addr:value = '10.0.0.1']").unwrap(),
        CompiledPattern::new(
            "([ipv4-addr:value = '10.0.0.1'] FOLLOWEDBY [ipv4-addr:value = '10.0.0.2']) WITHIN 30 SECONDS",
        )
        .unwrap(),
    ];
    let mut m = StreamMatcher::new(
        patterns,
        StreamConfig {
            window_us: 60_000_000,
            max_observations_per_pattern: 4,
        },
    );
    let ev = |id: &str, at_s: i64, ip: &str| Event {
        id: id.into(),
        at_s,
        ip: ip.into(),
    };
    let r = m.push_view(&ev("e1", 0, "10.0.0.1"));
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].pattern, 0);
    assert!(m.push_view(&ev("e2", 5, "10.9.9.9")).is_empty());
    let r = m.push_view(&ev("e3", 20, "10.0.0.2"));
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].pattern, 1);
    assert_eq!(
        r[0].observation_ids,
        vec!["e1".to_string(), "e3".to_string()]
    );
    // too late: e1 is outside the 30 s window
    assert!(m.push_view(&ev("e4", 100, "10.0.0.2")).is_empty());
    // irrelevant events are never held; relevant ones are capped
    for i in 0..20 {
        m.push_view(&ev(&format!("n{i}"), 101 + i, "10.0.0.1"));
    }
    assert!(m.held() <= 4);
    assert!(m.dropped() > 0);
}

#[test]
fn sco_ids_are_deterministic() {
    // the example of STIX 2.1 section 2.9 and values computed by the stix2 library
    let id = |v: Value| sco_id(v.as_object().unwrap()).unwrap();
    assert_eq!(
        id(json!({"type": "ipv4-addr", "value": "1.2.3.4"})),
        "ipv4-addr--0198f97b-e65d-5025-87e5-58bc39d4bdb4"
    );
    assert_eq!(
        id(json!({"type": "ipv4-addr", "value": "1.2.3.4", "x_other": 1})),
        "ipv4-addr--0198f97b-e65d-5025-87e5-58bc39d4bdb4"
    );
    assert!(sco_id(json!({"type": "process", "pid": 1}).as_object().unwrap()).is_none());
}

#[test]
fn tlp_levels() {
    assert_eq!(
        tlp::level(tlp::TLP2_AMBER_STRICT),
        Some(tlp::Tlp::AmberStrict)
    );
    assert_eq!(tlp::level(tlp::TLP1_WHITE), Some(tlp::Tlp::Clear));
    assert!(tlp::Tlp::Red > tlp::Tlp::Amber);
    assert_eq!(tlp::tlp2_id(tlp::Tlp::Green), tlp::TLP2_GREEN);
}

#[test]
fn validation_reports_json_paths() {
    let doc = json!({"type": "bundle", "id": "bundle--6b8c1f2e-3d4a-4b5c-8d6e-000000000001", "objects": [
        {"type": "indicator", "spec_version": "2.1", "id": "indicator--6b8c1f2e-3d4a-4b5c-8d6e-000000000002",
         "created": "2026-01-01T00:00:00Z", "modified": "2026-01-01T00:00:00Z",
         "pattern": "[a:b = ", "pattern_type": "stix", "valid_from": "2026-01-01T00:00:00Z",
         "x_custom": {"kept": true}}
    ]});
    let issues = validate_document(&doc);
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert_eq!(issues[0].path, "$.objects[0].pattern");
    // custom properties survive a round trip
    let o = crate::object::StixObject::from_value(doc["objects"][0].clone()).unwrap();
    assert_eq!(o.to_value(), doc["objects"][0]);
    assert_eq!(o.custom_properties(), vec!["x_custom"]);
}

#[test]
fn tool_match_reports_bindings_in_pattern_order() {
    let doc = json!([
        {"type": "observed-data", "id": "observed-data--b", "first_observed": "2020-01-01T00:00:10Z",
         "last_observed": "2020-01-01T00:00:10Z", "number_observed": 1, "object_refs": ["ipv4-addr--2"]},
        {"type": "observed-data", "id": "observed-data--a", "first_observed": "2020-01-01T00:00:00Z",
         "last_observed": "2020-01-01T00:00:00Z", "number_observed": 1, "object_refs": ["ipv4-addr--1"]},
        ip("ipv4-addr--1", "10.0.0.1"),
        ip("ipv4-addr--2", "10.0.0.2"),
    ]);
    let r = match_text(
        "[ipv4-addr:value = '10.0.0.1'] FOLLOWEDBY [ipv4-addr:value = '10.0.0.2']",
        &doc.to_string(),
        10,
    )
    .unwrap();
    assert_eq!(
        r.to_json(),
        json!({"matched": true, "matches": [["observed-data--a", "observed-data--b"]]})
    );
    assert!(check_pattern("[a:b = 1]").is_ok());
    assert_eq!(check_pattern("[a:b = 1").unwrap_err().position(), 8);
}

proptest! {
    #[test]
    fn parser_never_panics(s in "\\PC{0,80}") {
        let _ = parse(&s);
    }

    #[test]
    fn parser_never_panics_on_pattern_like_input(
        parts in proptest::collection::vec(
            prop_oneof![
                Just("["), Just("]"), Just("("), Just(")"), Just("'"), Just(":"), Just("."),
                Just(" AND "), Just(" OR "), Just(" NOT "), Just(" = "), Just(" IN "),
                Just(" FOLLOWEDBY "), Just(" WITHIN 5 SECONDS"), Just(" REPEATS 2 TIMES"),
                Just("a:b"), Just("file:hashes.MD5"), Just("'x'"), Just("h'00'"), Just("b'AA=='"),
                Just("t'2020-01-01T00:00:00Z'"), Just("1"), Just("-1.5"), Just("[*]"), Just("[0]"),
                Just("EXISTS "), Just("\\"), Just("/*"), Just("é"),
            ],
            0..40,
        )
    ) {
        let s: String = parts.concat();
        if let Ok(p) = parse(&s) {
            // whatever parses must compile or fail cleanly, and display to an equivalent pattern
            let _ = CompiledPattern::compile(&p, &s);
            prop_assert_eq!(parse(&p.to_string()).ok(), Some(p));
        }
    }
}

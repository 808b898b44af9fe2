//! Unit tests of the taxii crate: the cursor (proptests: round trip, order, rejection of
//! anything else), filter parsing (data-driven), media types, access and TLP rules.

use proptest::prelude::*;
use serde_json::json;
use stix::object::tlp::{self, Tlp};

use crate::access::{self, CollectionConfig, Principal};
use crate::cursor::Cursor;
use crate::query::{Endpoint, Filters, VersionMatch};

fn id_strategy() -> impl Strategy<Value = String> {
    (
        "[a-z]{3,12}",
        "[0-9a-f]{8}",
        "[0-9a-f]{4}",
        "[0-9a-f]{3}",
        "[89ab][0-9a-f]{3}",
        "[0-9a-f]{12}",
    )
        .prop_map(|(t, a, b, c, d, e)| format!("{t}--{a}-{b}-4{c}-{d}-{e}"))
}

proptest! {
    #[test]
    fn cursor_round_trips(d in any::<i64>(), v in any::<i64>(), id in id_strategy()) {
        let c = Cursor { date_added_us: d, id, version_us: v };
        let text = c.encode();
        prop_assert!(text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        prop_assert_eq!(Cursor::decode(&text), Ok(c));
    }

    #[test]
    fn cursor_decode_never_panics_and_accepts_only_its_own(s in ".{0,600}") {
        if let Ok(c) = Cursor::decode(&s) {
            prop_assert_eq!(c.encode(), s);
        }
    }

    /// Paging with the cursor over any multiset of records (many sharing an instant)
    /// yields each record exactly once, in order.
    #[test]
    fn cursor_pages_see_every_record_once(
        mut records in proptest::collection::vec((0i64..4, 0u32..6, 0i64..3), 0..60),
        page in 1usize..7,
    ) {
        records.sort();
        records.dedup();
        let keyed: Vec<Cursor> = records
            .iter()
            .map(|(d, n, v)| Cursor {
                date_added_us: *d,
                id: format!("indicator--00000000-0000-4000-8000-{n:012}"),
                version_us: *v,
            })
            .collect();
        let mut seen = Vec::new();
        let mut after: Option<Cursor> = None;
        loop {
            let batch: Vec<&Cursor> = keyed
                .iter()
                .filter(|c| after.as_ref().is_none_or(|a| *c > a))
                .take(page)
                .collect();
            let Some(last) = batch.last() else { break };
            // The cursor goes through its text form, as it would between requests.
            after = Some(Cursor::decode(&last.encode()).unwrap());
            seen.extend(batch.into_iter().cloned());
        }
        prop_assert_eq!(seen, keyed);
    }

    #[test]
    fn filter_parse_never_panics(q in ".{0,300}") {
        for e in [Endpoint::Objects, Endpoint::Object, Endpoint::Delete, Endpoint::Versions] {
            let _ = Filters::parse(Some(&q), e);
        }
    }
}

#[test]
fn cursor_rejects_tampering() {
    let c = Cursor {
        date_added_us: 5,
        id: "indicator--00000000-0000-4000-8000-000000000001".into(),
        version_us: 7,
    };
    let text = c.encode();
    for bad in [
        "".to_owned(),
        "!!!".to_owned(),
        format!("{text}x"),
        text[1..].to_owned(),
        "x".repeat(513),
        crate::cursor::Cursor {
            id: "not an id".into(),
            ..c.clone()
        }
        .encode(),
    ] {
        assert!(Cursor::decode(&bad).is_err(), "{bad}");
    }
}

/// `(endpoint, query, expected)`: the expected rendering of the parse result.
#[test]
fn filters_parse_as_the_spec_says() {
    let cases: &[(Endpoint, &str, &str)] = &[
        (
            Endpoint::Objects,
            "",
            "ok after=None limit=None ids=[] types=[] v=last spec=[]",
        ),
        (
            Endpoint::Objects,
            "added_after=2026-01-01T00:00:00Z&limit=5",
            "ok after=Some(1767225600000000) limit=Some(5) ids=[] types=[] v=last spec=[]",
        ),
        (
            Endpoint::Objects,
            "match%5Btype%5D=indicator,malware",
            "ok after=None limit=None ids=[] types=[\"indicator\", \"malware\"] v=last spec=[]",
        ),
        (
            Endpoint::Objects,
            "match[id]=indicator--00000000-0000-4000-8000-000000000001",
            "ok after=None limit=None ids=[\"indicator--00000000-0000-4000-8000-000000000001\"] types=[] v=last spec=[]",
        ),
        (
            Endpoint::Objects,
            "match[version]=first,2026-01-01T00:00:00.5Z",
            "ok after=None limit=None ids=[] types=[] v=first+[1767225600500000] spec=[]",
        ),
        (
            Endpoint::Objects,
            "match[version]=all",
            "ok after=None limit=None ids=[] types=[] v=all spec=[]",
        ),
        (
            Endpoint::Objects,
            "match[spec_version]=2.0,2.1",
            "ok after=None limit=None ids=[] types=[] v=last spec=[\"2.0\", \"2.1\"]",
        ),
        (
            Endpoint::Objects,
            "match[foo]=bar&other=1",
            "ok after=None limit=None ids=[] types=[] v=last spec=[]",
        ),
        (
            Endpoint::Objects,
            "limit=0",
            "err limit: \"0\" is not a positive integer",
        ),
        (
            Endpoint::Objects,
            "limit=-1",
            "err limit: \"-1\" is not a positive integer",
        ),
        (
            Endpoint::Objects,
            "added_after=2026-13-01T00:00:00Z",
            "err added_after: \"2026-13-01T00:00:00Z\" is not a timestamp",
        ),
        (
            Endpoint::Objects,
            "next=abc",
            "err next: \"abc\" is not a valid cursor",
        ),
        (
            Endpoint::Objects,
            "match[type]=a,,b",
            "err match[type] has an empty value",
        ),
        (
            Endpoint::Objects,
            "match[version]=newest",
            "err match[version]: \"newest\" is not first, last, all or a timestamp",
        ),
        (
            Endpoint::Objects,
            "match[spec_version]=2.2",
            "err match[spec_version]: \"2.2\" is not a STIX version (2.0 or 2.1)",
        ),
        (Endpoint::Objects, "limit=%zz", "err malformed query string"),
        // Filters an endpoint does not take are ignored.
        (
            Endpoint::Versions,
            "match[version]=newest&match[type]=x",
            "ok after=None limit=None ids=[] types=[] v=last spec=[]",
        ),
        (
            Endpoint::Delete,
            "limit=0&match[version]=first",
            "ok after=None limit=None ids=[] types=[] v=first spec=[]",
        ),
    ];
    for (endpoint, q, want) in cases {
        let got = match Filters::parse(Some(q), *endpoint) {
            Ok(f) => {
                let v = &f.versions;
                let mut vs = Vec::new();
                if v.first {
                    vs.push("first".to_owned());
                }
                if v.last {
                    vs.push("last".to_owned());
                }
                if v.all {
                    vs.push("all".to_owned());
                }
                if !v.at.is_empty() {
                    vs.push(format!("{:?}", v.at));
                }
                format!(
                    "ok after={:?} limit={:?} ids={:?} types={:?} v={} spec={:?}",
                    f.added_after,
                    f.limit,
                    f.ids,
                    f.types,
                    vs.join("+"),
                    f.spec_versions
                )
            }
            Err(e) => format!("err {e}"),
        };
        assert_eq!(&got, want, "{endpoint:?} {q}");
    }
    assert!(VersionMatch::default().last);
}

#[test]
fn access_and_tlp_rules() {
    let coll = CollectionConfig {
        id: "c".into(),
        title: "c".into(),
        description: None,
        alias: None,
        public: false,
        read: vec!["*".into()],
        write: vec!["utility".into()],
    };
    let p = |name: &str, clearance| Principal {
        name: name.into(),
        anonymous: false,
        clearance,
    };
    let anon = Principal::anonymous();
    assert!(coll.can_read(&p("isac", Tlp::Green)) && !coll.can_write(&p("isac", Tlp::Green)));
    assert!(coll.can_write(&p("utility", Tlp::Green)));
    assert!(!coll.visible(&anon));
    let public = CollectionConfig {
        public: true,
        read: vec![],
        write: vec!["*".into()],
        ..coll.clone()
    };
    assert!(
        public.can_read(&anon) && !public.can_write(&anon),
        "anonymous never writes"
    );
    let table = [
        (Tlp::Clear, [true, true, true, true]),
        (Tlp::Green, [false, true, true, true]),
        (Tlp::Amber, [false, false, true, true]),
        (Tlp::AmberStrict, [false, false, false, true]),
        (Tlp::Red, [false, false, false, false]),
    ];
    let readers = [
        anon.clone(),
        p("a", Tlp::Green),
        p("b", Tlp::Amber),
        p("c", Tlp::AmberStrict),
    ];
    for (level, expected) in table {
        for (r, e) in readers.iter().zip(expected) {
            assert_eq!(access::may_leave(level, r), e, "{level:?} to {r:?}");
        }
        assert!(
            !access::may_leave(Tlp::Red, &p("root", Tlp::Red)),
            "RED never leaves"
        );
    }
    let obj = |v: serde_json::Value| v.as_object().unwrap().clone();
    assert_eq!(access::object_tlp(&obj(json!({})), Tlp::Amber), Tlp::Amber);
    assert_eq!(
        access::object_tlp(
            &obj(json!({"object_marking_refs": [tlp::TLP2_GREEN]})),
            Tlp::Amber
        ),
        Tlp::Green
    );
    assert_eq!(
        access::object_tlp(
            &obj(
                json!({"object_marking_refs": [tlp::TLP2_GREEN], "granular_markings": [{"marking_ref": tlp::TLP2_RED, "selectors": ["name"]}]})
            ),
            Tlp::Clear
        ),
        Tlp::Red,
        "the most restrictive marking wins"
    );
    assert_eq!(
        access::parse_tlp("TLP:AMBER+STRICT"),
        Some(Tlp::AmberStrict)
    );
    assert_eq!(access::parse_tlp("white"), Some(Tlp::Clear));
    assert_eq!(access::parse_tlp("purple"), None);
    for r in 0..=4 {
        assert_eq!(access::tlp_rank(access::tlp_from_rank(r)), r);
    }
}

#[test]
fn envelopes_and_objects() {
    assert_eq!(crate::server::parse_envelope(b"{}").unwrap().len(), 0);
    assert_eq!(
        crate::server::parse_envelope(br#"{"objects":[1,2]}"#)
            .unwrap()
            .len(),
        2
    );
    for bad in [&b"["[..], b"[]", b"{\"objects\":{}}", b"\"x\""] {
        assert!(crate::server::parse_envelope(bad).is_err());
    }
    let ind = json!({
        "type": "indicator", "spec_version": "2.1",
        "id": "indicator--00000000-0000-4000-8000-000000000001",
        "created": "2026-01-01T00:00:00Z", "modified": "2026-01-02T00:00:00.5Z",
        "pattern": "[ipv4-addr:value = '1.2.3.4']", "pattern_type": "stix",
        "valid_from": "2026-01-01T00:00:00Z", "object_marking_refs": [tlp::TLP2_AMBER]
    });
    let o = crate::server::prepare_object(&ind, Tlp::Clear, 0).unwrap();
    assert_eq!(
        (o.version.as_str(), o.version_us, o.tlp),
        ("2026-01-02T00:00:00.5Z", 1767312000500000, Tlp::Amber)
    );
    let mut bad = ind.clone();
    bad["pattern"] = json!("[broken");
    assert!(
        crate::server::prepare_object(&bad, Tlp::Clear, 0)
            .unwrap_err()
            .contains("pattern")
    );
    assert!(
        crate::server::prepare_object(
            &json!({"type": "bundle", "id": "bundle--00000000-0000-4000-8000-000000000001"}),
            Tlp::Clear,
            0
        )
        .is_err()
    );
}

#[test]
fn client_resolves_relative_urls() {
    use crate::client::resolve;
    assert_eq!(resolve("http://h:1/taxii2/", "/api1/"), "http://h:1/api1/");
    assert_eq!(
        resolve("http://h:1/taxii2/", "api1/"),
        "http://h:1/taxii2/api1/"
    );
    assert_eq!(
        resolve("http://h:1/taxii2/", "https://x/y/"),
        "https://x/y/"
    );
    assert_eq!(resolve("http://h:1", "/a/"), "http://h:1/a/");
}

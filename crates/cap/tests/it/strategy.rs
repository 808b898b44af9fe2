//! Proptest strategies for valid alerts, and the round-trip property.

use cap::{
    Alert, Area, Category, Certainty, Circle, DateTime, Info, MsgType, NamedValue, Point, Polygon,
    Reference, Resource, ResponseType, Scope, Severity, Status, Urgency,
};
use proptest::prelude::*;

/// Free text with the characters that need escaping, line ends, tabs and non-ASCII.
pub fn text() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[a-zA-Z][a-zA-Z0-9 <>&\"'\\n\\r\\té€😀.,;:!?-]{0,39}").unwrap()
}

/// Starts with letters and a dash, because capparselib (lxml.objectify) turns text that looks
/// like a number into one (`.7` comes back as `0.7`).
fn id() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[a-z]{1,3}-[a-zA-Z0-9@._:-]{0,20}").unwrap()
}

fn datetime() -> impl Strategy<Value = DateTime> {
    (0i64..4_102_444_800, -720i16..=840)
        .prop_map(|(unix, off)| DateTime::with_offset(unix, off).expect("in range"))
}

fn point() -> impl Strategy<Value = Point> {
    (-90.0f64..=90.0, -180.0f64..=180.0).prop_map(|(lat, lon)| Point { lat, lon })
}

fn polygon() -> impl Strategy<Value = Polygon> {
    proptest::collection::vec(point(), 3..8).prop_map(|mut points| {
        points.push(points[0]);
        Polygon(points)
    })
}

fn named() -> impl Strategy<Value = NamedValue> {
    (text(), text()).prop_map(|(name, value)| NamedValue { name, value })
}

fn pick<T: Copy + std::fmt::Debug + 'static>(all: &'static [T]) -> impl Strategy<Value = T> {
    proptest::sample::select(all)
}

fn area() -> impl Strategy<Value = Area> {
    (
        text(),
        proptest::collection::vec(polygon(), 0..3),
        proptest::collection::vec((point(), 0.0f64..500.0), 0..3),
        proptest::collection::vec(named(), 0..3),
        // Non-negative: capparselib's extended schema refuses negative altitudes (the
        // official one allows them, and so do we).
        proptest::option::of((0.0f64..1000.0, 0.0f64..5000.0)),
    )
        .prop_map(|(description, polygons, circles, geocodes, alt)| Area {
            description,
            polygons,
            circles: circles
                .into_iter()
                .map(|(center, radius_km)| Circle { center, radius_km })
                .collect(),
            geocodes,
            altitude: alt.map(|(a, _)| a),
            ceiling: alt.map(|(a, h)| a + h),
        })
}

fn resource() -> impl Strategy<Value = Resource> {
    (
        text(),
        proptest::option::of(0u64..10_000_000),
        any::<bool>(),
        proptest::option::of("[0-9a-f]{40}"),
    )
        .prop_map(|(description, size, with_data, digest)| Resource {
            description,
            mime_type: "image/png".into(),
            size,
            uri: Some("https://city.example/r?a=1&b=2".into()),
            deref_uri: with_data.then(|| "aGVsbG8=".into()),
            digest,
        })
}

fn info() -> impl Strategy<Value = Info> {
    (
        (
            proptest::option::of(proptest::sample::select(
                &["en-US", "es", "fr-CA", "de"][..],
            )),
            proptest::collection::vec(pick(Category::ALL), 1..3),
            text(),
            proptest::collection::vec(pick(ResponseType::ALL), 0..3),
            pick(Urgency::ALL),
            pick(Severity::ALL),
            pick(Certainty::ALL),
        ),
        (
            proptest::option::of(text()),
            proptest::collection::vec(named(), 0..2),
            proptest::option::of(datetime()),
            proptest::option::of(text()),
            proptest::option::of(text()),
            proptest::option::of(text()),
        ),
        (
            proptest::collection::vec(named(), 0..2),
            proptest::collection::vec(resource(), 0..2),
            proptest::collection::vec(area(), 0..3),
        ),
    )
        .prop_map(
            |(
                (language, categories, event, response_types, urgency, severity, certainty),
                (audience, event_codes, effective, headline, description, instruction),
                (parameters, resources, areas),
            )| {
                Info {
                    language: language.map(str::to_owned),
                    categories,
                    event,
                    response_types,
                    urgency,
                    severity,
                    certainty,
                    audience,
                    event_codes,
                    effective,
                    onset: effective,
                    expires: effective.map(|e| DateTime::with_offset(e.unix() + 3600, 0).unwrap()),
                    sender_name: Some("City".into()),
                    headline,
                    description,
                    instruction,
                    web: Some("https://city.example/a".into()),
                    contact: None,
                    parameters,
                    resources,
                    areas,
                }
            },
        )
}

pub fn alert() -> impl Strategy<Value = Alert> {
    (
        (
            id(),
            id(),
            datetime(),
            pick(Status::ALL),
            pick(MsgType::ALL),
            pick(Scope::ALL),
        ),
        (
            proptest::option::of(text()),
            proptest::collection::vec(id(), 0..3),
            proptest::option::of(text()),
            proptest::collection::vec((id(), datetime()), 0..3),
            proptest::collection::vec(text(), 0..3),
        ),
        proptest::collection::vec(info(), 0..3),
    )
        .prop_map(
            |(
                (identifier, sender, sent, status, msg_type, scope),
                (source, codes, note, refs, incidents),
                info,
            )| {
                let mut references: Vec<Reference> = refs
                    .into_iter()
                    .map(|(identifier, sent)| Reference {
                        sender: "other-sender".into(),
                        identifier,
                        sent,
                    })
                    .collect();
                if references.is_empty() && msg_type != MsgType::Alert {
                    references.push(Reference {
                        sender: "other-sender".into(),
                        identifier: "earlier".into(),
                        sent,
                    });
                }
                let clean = |items: Vec<String>| -> Vec<String> {
                    items
                        .into_iter()
                        .map(|s| s.replace('"', "q"))
                        .filter(|s| !s.trim().is_empty())
                        .map(|s| s.trim().to_owned())
                        .collect()
                };
                Alert {
                    identifier,
                    sender,
                    sent,
                    status,
                    msg_type,
                    source,
                    scope,
                    restriction: (scope == Scope::Restricted).then(|| "partners".into()),
                    addresses: if scope == Scope::Private {
                        vec!["ops@city".into(), "north district".into()]
                    } else {
                        Vec::new()
                    },
                    codes,
                    note,
                    references,
                    incidents: clean(incidents),
                    info,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn written_alerts_read_back_equal(alert in alert()) {
        let xml = alert.to_xml().expect("generated alerts are valid");
        let back = Alert::from_xml(&xml).map_err(|e| TestCaseError::fail(format!("{e}\n{xml}")))?;
        prop_assert_eq!(back, alert);
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        let _ = Alert::from_xml(&text);
    }
}

//! Unit tests of the small forms: date-times, numbers, geometry, quoted lists, and the
//! cancel helper.

use crate::geo::{Circle, Num, Point, Polygon, decimal};
use crate::{Alert, DateTime, MsgType, Status};

#[test]
fn datetimes_parse_and_print_in_cap_form() {
    let cases = [
        (
            "2026-12-01T18:30:00-00:00",
            Some("2026-12-01T18:30:00-00:00"),
        ),
        (
            "2026-12-01T18:30:00+00:00",
            Some("2026-12-01T18:30:00-00:00"),
        ),
        (
            "2026-12-01T18:30:00+05:30",
            Some("2026-12-01T18:30:00+05:30"),
        ),
        (
            "2024-02-29T23:59:59-11:00",
            Some("2024-02-29T23:59:59-11:00"),
        ),
        ("2026-12-01T18:30:00Z", None),
        ("2026-12-01T18:30:00.1-00:00", None),
        ("2026-12-01 18:30:00-00:00", None),
        ("2025-02-29T00:00:00-00:00", None),
        ("2026-12-01T24:00:00-00:00", None),
        ("2026-12-01T18:30:00+24:00", None),
        ("2026-12-01T18:30:00,01:00", None),
        ("", None),
    ];
    for (text, expected) in cases {
        let parsed = DateTime::parse(text).map(|d| d.to_string());
        assert_eq!(parsed.as_deref(), expected, "{text}");
    }
    let d = DateTime::parse("1970-01-01T01:00:00+01:00").unwrap();
    assert_eq!(d.unix(), 0);
    assert_eq!(d.offset_minutes(), 60);
    assert!(DateTime::from_unix(i64::MAX).is_none());
    assert!(DateTime::with_offset(0, 24 * 60).is_none());
}

#[test]
fn decimals_are_xs_decimal_only() {
    for (text, value) in [
        ("1", Some(1.0)),
        ("-2.5", Some(-2.5)),
        ("+.5", Some(0.5)),
        ("3.", Some(3.0)),
    ] {
        assert_eq!(decimal(text), value, "{text}");
    }
    for text in ["", ".", "1e3", "NaN", "inf", "1,5", " 1", "--1"] {
        assert_eq!(decimal(text), None, "{text}");
    }
    assert_eq!(Num(-0.0).to_string(), "0");
    assert_eq!(
        Num(0.1 + 0.2).to_string().parse::<f64>().unwrap(),
        0.1 + 0.2
    );
}

#[test]
fn geometry_forms() {
    let polygon = Polygon::parse("1,2 3,4\n5,6\t1,2").unwrap();
    assert_eq!(polygon.0.len(), 4);
    assert_eq!(polygon.to_string(), "1,2 3,4 5,6 1,2");
    assert!(Polygon::parse("1,2 3,4 1,2").is_err());
    assert!(Polygon::parse("1,2 3,4 5,6 7,8").is_err());
    assert!(Polygon::parse("1,2 3,4 5,x 1,2").is_err());
    let circle = Circle::parse("45.5,-122.6 0").unwrap();
    assert_eq!(
        circle.center,
        Point {
            lat: 45.5,
            lon: -122.6
        }
    );
    assert_eq!(circle.to_string(), "45.5,-122.6 0");
    for bad in [
        "45.5,-122.6",
        "45.5,-122.6 1 2",
        "91,0 1",
        "0,181 1",
        "0,0 -1",
    ] {
        assert!(Circle::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn quoted_lists_round_trip() {
    let mut alert = Alert::new("a", "s", DateTime::from_unix(0).unwrap(), Status::Test);
    alert.addresses = vec!["ops@city".into(), "north district".into(), "x".into()];
    alert.incidents = vec!["inc 1".into()];
    let xml = alert.to_xml().unwrap();
    assert!(
        xml.contains("<addresses>ops@city \"north district\" x</addresses>"),
        "{xml}"
    );
    assert_eq!(Alert::from_xml(&xml).unwrap(), alert);
}

#[test]
fn cancel_references_the_alert() {
    let alert = Alert::new(
        "a-1",
        "city",
        DateTime::from_unix(1000).unwrap(),
        Status::Actual,
    );
    let cancel = alert.cancel("a-1-cancel", DateTime::from_unix(2000).unwrap(), "not real");
    assert_eq!(cancel.msg_type, MsgType::Cancel);
    assert_eq!(cancel.references.len(), 1);
    assert_eq!(cancel.references[0].identifier, "a-1");
    let xml = cancel.to_xml().unwrap();
    assert!(
        xml.contains("<references>city,a-1,1970-01-01T00:16:40-00:00</references>"),
        "{xml}"
    );
    assert_eq!(Alert::from_xml(&xml).unwrap(), cancel);
}

#[test]
fn writer_refuses_what_breaks_a_rule() {
    let mut alert = Alert::new("a 1", "s", DateTime::from_unix(0).unwrap(), Status::Test);
    assert!(
        alert
            .to_xml()
            .unwrap_err()
            .to_string()
            .contains("alert/identifier")
    );
    alert.identifier = "a1".into();
    alert.msg_type = MsgType::Update;
    assert!(
        alert
            .to_xml()
            .unwrap_err()
            .to_string()
            .contains("alert/references")
    );
}

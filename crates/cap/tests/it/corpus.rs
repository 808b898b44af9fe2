//! The corpus: `test_data/valid/*.xml` read and round-trip; `test_data/invalid/*.xml` are
//! refused, each with the kind listed in `test_data/invalid/KINDS` and the message recorded
//! in `test_data/invalid/EXPECTED` (update with `UPDATE_EXPECT=1`).

use std::path::{Path, PathBuf};

use cap::{Alert, Error};

pub fn data(dir: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("test_data")
        .join(dir)
}

pub fn xml_files(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "xml"))
        .collect();
    files.sort();
    files
}

pub fn kinds() -> Vec<(String, String)> {
    std::fs::read_to_string(data("invalid").join("KINDS"))
        .unwrap()
        .lines()
        .map(|l| {
            let (name, kind) = l.split_once(' ').unwrap();
            (name.to_owned(), kind.to_owned())
        })
        .collect()
}

#[test]
fn valid_documents_read_and_round_trip() {
    let files = xml_files("valid");
    assert!(files.len() >= 3);
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let alert = Alert::from_xml(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let written = alert.to_xml().unwrap();
        let again = Alert::from_xml(&written).unwrap();
        assert_eq!(again, alert, "{}", file.display());
        // Writing is deterministic: a second round gives the same bytes.
        assert_eq!(again.to_xml().unwrap(), written);
    }
}

#[test]
fn the_full_example_keeps_every_element() {
    let text = std::fs::read_to_string(data("valid").join("full.xml")).unwrap();
    let alert = Alert::from_xml(&text).unwrap();
    assert_eq!(alert.codes, ["IPAWSv1.0", "citysec"]);
    assert_eq!(alert.incidents, ["inc-7", "north district"]);
    assert_eq!(alert.references[0].identifier, "city-example-2026-0041");
    assert_eq!(alert.info.len(), 2);
    let en = &alert.info[0];
    assert_eq!(en.language.as_deref(), Some("en-US"));
    assert_eq!(en.categories.len(), 2);
    assert_eq!(en.event_codes[0].value, "CAE");
    assert_eq!(en.expires.unwrap().offset_minutes(), 60);
    assert_eq!(en.parameters[0].name, "sirens");
    let resource = &en.resources[0];
    assert_eq!(resource.size, Some(12345));
    assert_eq!(resource.deref_uri.as_deref(), Some("iVBORw0KGgo="));
    let area = &en.areas[0];
    assert_eq!(area.polygons[0].0.len(), 5);
    assert_eq!(area.circles[0].radius_km, 2.5);
    assert_eq!(area.geocodes[0].name, "FIPS6");
    assert_eq!((area.altitude, area.ceiling), (Some(0.0), Some(1500.5)));
    assert_eq!(alert.info[1].language.as_deref(), Some("es-US"));
    let signed =
        std::fs::read_to_string(data("valid").join("prefixed_cancel_with_signature.xml")).unwrap();
    let cancel = Alert::from_xml(&signed).unwrap();
    assert_eq!(cancel.note.as_deref(), Some("Exercise <ended> early"));
    assert_eq!(
        cancel.restriction.as_deref(),
        Some("operators & partners only")
    );
    assert_eq!(cancel.references.len(), 2);
}

#[test]
fn invalid_documents_are_refused_with_a_reason() {
    let mut report = String::new();
    let listed = kinds();
    assert_eq!(
        listed.len(),
        xml_files("invalid").len(),
        "every invalid file has a kind"
    );
    for (name, kind) in listed {
        let text = std::fs::read_to_string(data("invalid").join(format!("{name}.xml"))).unwrap();
        let err = Alert::from_xml(&text).expect_err(&name);
        let actual = match err {
            Error::Xml { .. } => "xml",
            Error::TooLarge(_) => "too_large",
            Error::Schema { .. } => "schema",
            Error::Rule { .. } => "rule",
        };
        let expected = if kind == "refused" {
            "xml"
        } else {
            kind.as_str()
        };
        assert_eq!(actual, expected, "{name}: {err}");
        report.push_str(&format!("{name}: {err}\n"));
    }
    expect_test::expect_file!["../../test_data/invalid/EXPECTED"].assert_eq(&report);
}

#[test]
fn limits_bound_size_depth_and_count() {
    let limits = cap::Limits {
        max_bytes: 100,
        ..cap::Limits::default()
    };
    let big = format!("<alert>{}</alert>", " ".repeat(200));
    assert!(matches!(
        Alert::from_xml_with_limits(&big, &limits),
        Err(Error::TooLarge(_))
    ));
    let deep = format!(
        "<alert xmlns=\"{}\">{}{}</alert>",
        cap::NAMESPACE,
        "<x>".repeat(40),
        "</x>".repeat(40)
    );
    assert!(matches!(Alert::from_xml(&deep), Err(Error::TooLarge(_))));
    let wide = format!(
        "<alert xmlns=\"{}\">{}</alert>",
        cap::NAMESPACE,
        "<code/>".repeat(60_000)
    );
    assert!(matches!(Alert::from_xml(&wide), Err(Error::TooLarge(_))));
}

#[test]
fn hostile_bytes_never_panic() {
    for text in [
        "",
        "<",
        "<?xml",
        "<alert",
        "&",
        "<a>&#0;</a>",
        "<a>&#xD800;</a>",
        "]]>",
        "<a><![CDATA[",
        "\u{feff}<a/>",
    ] {
        assert!(Alert::from_xml(text).is_err(), "{text:?}");
    }
}

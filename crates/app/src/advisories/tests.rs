//! The pure parts of advisories: the templates (built-in set, selection, refusals) and the
//! area drawn around an incident's devices, checked with the CAP rules.

use expect_test::expect;
use model::{DeviceClass, Location};

use crate::advisories::templates::{self, DEFAULT_TEMPLATES};
use crate::advisories::{MAX_POINTS, distance_km, incident_area};

fn languages(tags: &[&str]) -> Vec<String> {
    tags.iter().map(|t| (*t).to_owned()).collect()
}

#[test]
fn the_built_in_templates_cover_english_and_spanish_and_pick_by_what_the_incident_is_about() {
    let t = templates::parse(DEFAULT_TEMPLATES, &languages(&["en-US", "es-US"])).unwrap();
    let pick = |classes: &[DeviceClass], rules: &[&str]| t.select(classes, rules).id.clone();
    let picks = [
        pick(&[DeviceClass::Siren], &["actuation.uncommanded"]),
        pick(&[DeviceClass::Siren], &["reports.siren_unconfirmed"]),
        // A siren incident that is not about sounding: the generic text.
        pick(&[DeviceClass::Siren], &["auth.brute_force.device"]),
        pick(&[DeviceClass::TrafficSignal], &["policy.conduit"]),
        pick(
            &[DeviceClass::Pump, DeviceClass::Camera],
            &["plausibility.range"],
        ),
        pick(&[DeviceClass::QualitySensor], &["plausibility.range"]),
        pick(&[DeviceClass::StreetLight], &["flow.scan"]),
        pick(&[DeviceClass::FeederBreaker], &["rate.actuation_burst"]),
        pick(&[DeviceClass::Camera], &["flow.scan"]),
        pick(&[], &["policy.new_device"]),
    ];
    expect!["siren_no_warning siren_no_warning generic traffic_signals water_service water_service lighting_power lighting_power generic generic"].assert_eq(&picks.join(" "));
}

#[test]
fn bad_templates_are_refused_with_the_template_named() {
    let err = |text: &str, langs: &[&str]| {
        format!(
            "{:#}",
            templates::parse(text, &languages(langs)).unwrap_err()
        )
    };
    let one = |extra: &str, headline: &str| {
        format!(
            "version = 1\n[[template]]\nid = \"t\"\nevent = \"E\"\ncategories = [\"Infra\"]\nurgency = \"Expected\"\nseverity = \"Minor\"\ncertainty = \"Possible\"\nexpires_h = 6\n{extra}\n[template.texts.en-US]\nheadline = \"{headline}\"\narea = \"here\"\n"
        )
    };
    expect![
        "template 1 (siren_no_warning): has no text in fr-FR (a language of [advisories] languages)"
    ]
    .assert_eq(&err(DEFAULT_TEMPLATES, &["en-US", "fr-FR"]));
    expect!["[advisories] languages must name at least one language"]
        .assert_eq(&err(DEFAULT_TEMPLATES, &[]));
    expect![[r#"[advisories] languages: "en US" is not an RFC 3066 language tag, or repeats"#]]
        .assert_eq(&err(DEFAULT_TEMPLATES, &["en US"]));
    expect!["template 1 (t): the en-US headline: unknown placeholder {hour} (known: {time}, {date}, {devices})"].assert_eq(&err(&one("", "At {hour}"), &["en-US"]));
    expect!["template 1 (t): the en-US headline: a '{' without its '}'"]
        .assert_eq(&err(&one("", "At {time"), &["en-US"]));
    expect!["template 1 (t): the en-US headline is longer than 160 characters once filled in"]
        .assert_eq(&err(&one("", &"x".repeat(161)), &["en-US"]));
    expect![[r#"template 1 (t): category "Roads" is not one of Geo, Met, Safety, Security, Rescue, Fire, Health, Env, Transport, Infra, CBRNE, Other"#]].assert_eq(&err(&one("", "ok").replace("Infra", "Roads"), &["en-US"]));
    expect![
        "no generic template (one without classes and rules) for incidents no other template fits"
    ]
    .assert_eq(&err(&one("classes = [\"siren\"]", "ok"), &["en-US"]));
    expect![[r#"
        invalid advisory templates: TOML parse error at line 10, column 12
           |
        10 | classes = ["sirens"]
           |            ^^^^^^^^
        unknown variant `sirens`, expected one of `siren`, `camera`, `traffic_signal`, `ev_charger`, `smart_meter`, `street_light`, `feeder_breaker`, `pump`, `valve`, `level_sensor`, `quality_sensor`, `air_quality`, `weather`, `hvac`, `access_control`
    "#]].assert_eq(&err(&one("classes = [\"sirens\"]", "ok"), &["en-US"]));
    expect!["template 1 (t): expires_h must be 1 to 720"].assert_eq(&err(
        &one("", "ok").replace("expires_h = 6", "expires_h = 0"),
        &["en-US"],
    ));
    expect!["template 2 (t): id repeats an earlier template"].assert_eq(&err(
        &format!(
            "{}{}",
            one("", "ok"),
            one("", "again").replace("version = 1\n", "")
        ),
        &["en-US"],
    ));
    // And a good one loads.
    assert!(
        templates::parse(
            &one("", "At {time}: {devices} devices"),
            &languages(&["en-US"])
        )
        .is_ok()
    );
}

/// Ray casting: whether `p` is inside the closed ring.
fn inside(ring: &[Location], p: Location) -> bool {
    let mut inside = false;
    for w in ring.windows(2) {
        let (a, b) = (w[0], w[1]);
        if (a.lat > p.lat) != (b.lat > p.lat)
            && p.lon < (b.lon - a.lon) * (p.lat - a.lat) / (b.lat - a.lat) + a.lon
        {
            inside = !inside;
        }
    }
    inside
}

fn to_cap(circles: &[model::AdvisoryCircle], polygons: &[Vec<Location>]) -> cap::Area {
    crate::advisories::cap_area(&model::AdvisoryArea {
        description: "test".into(),
        polygons: polygons.to_vec(),
        circles: circles.to_vec(),
        geocodes: vec![],
    })
}

#[test]
fn the_area_is_a_circle_for_close_devices_and_a_polygon_around_spread_ones() {
    let at = |lat, lon| Location { lat, lon };
    // No position: no shape (the area is its description alone).
    assert_eq!(incident_area(&[], 2.0), (vec![], vec![]));
    // One device: a circle of the radius around it.
    let (circles, polygons) = incident_area(&[at(45.52, -122.68)], 2.0);
    assert!(polygons.is_empty());
    assert_eq!(circles.len(), 1);
    assert_eq!(
        (circles[0].center, circles[0].radius_km),
        (at(45.52, -122.68), 2.0)
    );
    // Two devices 1 km apart: one circle covering both with the radius to spare.
    let (circles, polygons) = incident_area(&[at(45.52, -122.68), at(45.529, -122.68)], 2.0);
    assert!(polygons.is_empty());
    let c = circles[0];
    for p in [at(45.52, -122.68), at(45.529, -122.68)] {
        assert!(distance_km(c.center, p) + 2.0 <= c.radius_km, "{c:?}");
    }
    // Devices across the city: one closed polygon that holds each device and its
    // surroundings, valid CAP.
    let spread = [
        at(45.50, -122.70),
        at(45.60, -122.70),
        at(45.55, -122.55),
        at(45.56, -122.62),
        at(45.53, -122.66),
    ];
    let (circles, polygons) = incident_area(&spread, 1.0);
    assert!(circles.is_empty());
    assert_eq!(polygons.len(), 1);
    let ring = &polygons[0];
    assert_eq!(ring.first(), ring.last());
    assert!(ring.len() >= 4 && ring.len() <= MAX_POINTS);
    for p in spread {
        assert!(inside(ring, p), "{p:?}");
        // 0.95 km away in every direction is still inside.
        for k in 0..8 {
            let a = std::f64::consts::TAU * k as f64 / 8.0;
            let q = at(
                p.lat + 0.95 / 111.32 * a.sin(),
                p.lon + 0.95 / (111.32 * p.lat.to_radians().cos()) * a.cos(),
            );
            assert!(inside(ring, q), "{q:?} near {p:?}");
        }
    }
    let mut alert = cap::Alert::new(
        "t",
        "alerts@city.example",
        cap::DateTime::from_unix(0).unwrap(),
        cap::Status::Test,
    );
    let mut info = cap::Info::new(
        cap::Category::Infra,
        "e".to_owned(),
        cap::Urgency::Expected,
        cap::Severity::Minor,
        cap::Certainty::Possible,
    );
    info.areas = vec![to_cap(&circles, &polygons)];
    alert.info.push(info);
    alert.validate().unwrap();
    // Positions outside WGS 84 are ignored rather than drawn.
    assert_eq!(
        incident_area(&[at(f64::NAN, 1.0), at(91.0, 0.0)], 2.0),
        (vec![], vec![])
    );
}

//! Tests for the model types: identifiers, topics, serialised forms.

use proptest::prelude::*;

use crate::topic::{self, Channel};
use crate::*;

#[test]
fn device_id_rules() {
    assert!(DeviceId::new("siren-0042").is_ok());
    assert!(DeviceId::new("a.b_c-d").is_ok());
    assert_eq!(DeviceId::new(""), Err(DeviceIdError::Empty));
    assert_eq!(DeviceId::new("-x"), Err(DeviceIdError::BadStart));
    assert_eq!(DeviceId::new("a/b"), Err(DeviceIdError::BadChar('/')));
    assert_eq!(DeviceId::new("a+"), Err(DeviceIdError::BadChar('+')));
    assert_eq!(DeviceId::new("#"), Err(DeviceIdError::BadStart));
    assert_eq!(DeviceId::new("x".repeat(65)), Err(DeviceIdError::TooLong));
    assert!(serde_json::from_str::<DeviceId>("\"ok-1\"").is_ok());
    assert!(serde_json::from_str::<DeviceId>("\"no/slash\"").is_err());
}

#[test]
fn topics_round_trip() {
    let id = DeviceId::new("pump-7").unwrap();
    let t = topic::device_topic(Sector::Water, &id, Channel::Telemetry);
    assert_eq!(t, "city/water/pump-7/telemetry");
    let parsed = topic::parse(&t).unwrap();
    assert_eq!(parsed.sector, Sector::Water);
    assert_eq!(parsed.device_id, "pump-7");
    assert_eq!(parsed.channel, Channel::Telemetry);
    for bad in [
        "city/water/pump-7",
        "city/water/pump-7/telemetry/x",
        "city/sewage/pump-7/telemetry",
        "town/water/pump-7/telemetry",
        "city/water/+/telemetry",
        "city/water/pump-7/other",
    ] {
        assert_eq!(topic::parse(bad), None, "{bad}");
    }
}

#[test]
fn class_names_and_sectors_parse_back() {
    for class in DeviceClass::ALL {
        assert_eq!(class.as_str().parse::<DeviceClass>().unwrap(), class);
        let json = serde_json::to_string(&class).unwrap();
        assert_eq!(json, format!("\"{}\"", class.as_str()));
    }
    for sector in Sector::ALL {
        assert_eq!(sector.as_str().parse::<Sector>().unwrap(), sector);
    }
    assert!(
        "sewage"
            .parse::<Sector>()
            .unwrap_err()
            .contains("public_safety")
    );
}

#[test]
fn timestamp_format() {
    let ts = Timestamp::from_millis(1_795_000_000_123);
    let text = ts.to_rfc3339();
    assert_eq!(text, "2026-11-18T11:06:40.123Z");
    assert_eq!(Timestamp::parse_rfc3339(&text), Some(ts));
    assert_eq!(
        Timestamp::parse_rfc3339("2026-11-18T12:06:40.123+01:00"),
        Some(ts)
    );
    assert_eq!(Timestamp::parse_rfc3339("yesterday"), None);
}

#[test]
fn event_json_shape() {
    let ev = Event {
        ts: Timestamp::from_millis(0),
        device_id: Some(DeviceId::new("siren-1").unwrap()),
        sector: Some(Sector::PublicSafety),
        kind: EventKind::Security(SecurityEvent {
            action: SecurityEventKind::AuthFailure,
            client_id: Some("siren-1".into()),
            username: Some("siren-1".into()),
            peer: Some("127.0.0.1:5000".into()),
            topic: None,
            reason: Some("bad password".into()),
        }),
    };
    let json = serde_json::to_string(&ev).unwrap();
    assert_eq!(
        json,
        r#"{"ts":"1970-01-01T00:00:00.000Z","device_id":"siren-1","sector":"public_safety","kind":"security","action":"auth_failure","client_id":"siren-1","username":"siren-1","peer":"127.0.0.1:5000","reason":"bad password"}"#
    );
    let back: Event = serde_json::from_str(&json).unwrap();
    assert_eq!(back, ev);
    assert_eq!(ev.subject(), "obs.security");
}

proptest! {
    #[test]
    fn timestamps_round_trip(ms in -62_135_596_800_000i64..253_402_300_799_000i64) {
        let ts = Timestamp::from_millis(ms);
        prop_assert_eq!(Timestamp::parse_rfc3339(&ts.to_rfc3339()), Some(ts));
    }

    #[test]
    fn parse_never_panics(topic in ".{0,80}") {
        let _ = topic::parse(&topic);
        let _ = DeviceId::new(topic);
    }
}

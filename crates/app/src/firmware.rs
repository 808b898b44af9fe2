//! The vendor firmware catalogue: what each vendor's latest firmware is, read from the file
//! `[readiness] firmware_catalogue` names (relative to the config file), validated with
//! errors that name the entry, and handed to the readiness index as a
//! `readiness::FirmwareCatalogue`. The format is documented in `config/firmware.toml`, the
//! catalogue of the simulated city's vendors that ships with citysec.

use std::path::Path;

use anyhow::{Context, bail};
use model::{DeviceClass, Timestamp};
use readiness::{FirmwareCatalogue, FirmwareRelease};
use serde::Deserialize;

/// The catalogue of the simulated city's vendors (`config/firmware.toml`).
pub const SIMULATED_CITY_CATALOGUE: &str = include_str!("../../../config/firmware.toml");

/// The most entries one catalogue may hold.
const MAX_ENTRIES: usize = 100_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    version: u32,
    #[serde(default)]
    firmware: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    vendor: String,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    class: Option<String>,
    latest: String,
    released: String,
}

/// A `YYYY-MM-DD` date as the start of that day, UTC.
fn date(text: &str) -> Option<Timestamp> {
    let b = text.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let ts = Timestamp::parse_rfc3339(&format!("{text}T00:00:00Z"))?;
    // Refuse dates the parser would roll over (2026-02-30).
    (ts.to_rfc3339().get(..10) == Some(text)).then_some(ts)
}

/// Parses a catalogue; every problem names the entry (1-based, in file order).
pub fn parse(text: &str) -> anyhow::Result<FirmwareCatalogue> {
    let file: File = toml::from_str(text).context("invalid firmware catalogue")?;
    if file.version != 1 {
        bail!(
            "unsupported firmware catalogue version {}; this citysec reads version 1",
            file.version
        );
    }
    if file.firmware.len() > MAX_ENTRIES {
        bail!("a firmware catalogue holds at most {MAX_ENTRIES} entries");
    }
    let mut entries = Vec::with_capacity(file.firmware.len());
    for (i, e) in file.firmware.into_iter().enumerate() {
        let n = i + 1;
        let what = format!(
            "entry {n} ({} {})",
            e.vendor,
            e.model.as_deref().or(e.class.as_deref()).unwrap_or("?")
        );
        let class = match &e.class {
            None => None,
            Some(c) => Some(c.parse::<DeviceClass>().map_err(|_| {
                anyhow::anyhow!(
                    "{what}: class {c:?} is not a device class (one of {})",
                    DeviceClass::ALL.map(DeviceClass::as_str).join(", ")
                )
            })?),
        };
        let released = date(e.released.trim()).with_context(|| {
            format!(
                "{what}: released {:?} is not a date (YYYY-MM-DD)",
                e.released
            )
        })?;
        for (field, value) in [("vendor", &e.vendor), ("latest", &e.latest)] {
            if value.trim().is_empty() || value.chars().count() > 128 {
                bail!("{what}: {field} must be 1 to 128 characters");
            }
        }
        if e.model.as_ref().is_some_and(|m| m.trim().is_empty()) {
            bail!("{what}: model must not be empty (give class for every model of a class)");
        }
        entries.push(FirmwareRelease {
            vendor: e.vendor.trim().to_owned(),
            model: e.model.map(|m| m.trim().to_owned()),
            class,
            latest: e.latest.trim().to_owned(),
            released,
        });
    }
    FirmwareCatalogue::new(entries).map_err(anyhow::Error::msg)
}

/// Reads the catalogue file at `path`.
pub fn load_file(path: &Path) -> anyhow::Result<FirmwareCatalogue> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("failed to read the firmware catalogue {}", path.display()))?;
    parse(&text).with_context(|| format!("in {}", path.display()))
}

/// The catalogue the config names, or an empty one (every device then compared with the
/// fleet's newest version).
pub fn load(config: &crate::Config) -> anyhow::Result<FirmwareCatalogue> {
    match &config.readiness.firmware_catalogue {
        Some(path) => load_file(path),
        None => Ok(FirmwareCatalogue::default()),
    }
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::parse;

    fn err(text: &str) -> String {
        format!("{:#}", parse(text).unwrap_err())
    }

    #[test]
    fn the_shipped_catalogue_loads() {
        let catalogue = parse(super::SIMULATED_CITY_CATALOGUE).unwrap();
        assert!(catalogue.entries().len() >= 30);
        let r = catalogue
            .latest("whelen", "wps-2900", model::DeviceClass::Siren)
            .unwrap();
        assert_eq!(r.latest, "3.4.0");
        assert_eq!(r.released.to_rfc3339(), "2026-05-12T00:00:00.000Z");
    }

    #[test]
    fn bad_catalogues_are_refused_with_the_entry_named() {
        let entry = |extra: &str| {
            format!("version = 1\n[[firmware]]\nvendor = \"Axis\"\nlatest = \"1.0\"\n{extra}\n")
        };
        expect!["unsupported firmware catalogue version 2; this citysec reads version 1"]
            .assert_eq(&err("version = 2\n"));
        expect![[r#"
            invalid firmware catalogue: TOML parse error at line 1, column 1
              |
            1 | firmware = []
              | ^
            missing field `version`
        "#]]
        .assert_eq(&err("firmware = []\n"));
        expect![[r#"entry 1 (Axis P1): released "2026-02-30" is not a date (YYYY-MM-DD)"#]]
            .assert_eq(&err(&entry("model = \"P1\"\nreleased = \"2026-02-30\"")));
        expect![[r#"entry 1 (Axis P1): released "yesterday" is not a date (YYYY-MM-DD)"#]]
            .assert_eq(&err(&entry("model = \"P1\"\nreleased = \"yesterday\"")));
        expect![[r#"entry 1 (Axis sirens): class "sirens" is not a device class (one of siren, camera, traffic_signal, ev_charger, smart_meter, street_light, feeder_breaker, pump, valve, level_sensor, quality_sensor, air_quality, weather, hvac, access_control)"#]].assert_eq(&err(&entry("class = \"sirens\"\nreleased = \"2026-02-03\"")));
        expect!["entry 1 (Axis): give exactly one of model and class"]
            .assert_eq(&err(&entry("released = \"2026-02-03\"")));
        expect!["entry 1 (Axis): give exactly one of model and class"].assert_eq(&err(&entry(
            "model = \"P1\"\nclass = \"camera\"\nreleased = \"2026-02-03\"",
        )));
        expect![[r#"
            invalid firmware catalogue: TOML parse error at line 7, column 1
              |
            7 | url = "x"
              | ^^^
            unknown field `url`, expected one of `vendor`, `model`, `class`, `latest`, `released`
        "#]]
        .assert_eq(&err(&entry(
            "model = \"P1\"\nreleased = \"2026-02-03\"\nurl = \"x\"",
        )));
        expect!["entry 2 (Axis p1) repeats entry 1"].assert_eq(&err(&format!(
            "{}{}",
            entry("model = \"P1\"\nreleased = \"2026-02-03\""),
            entry("model = \" p1\"\nreleased = \"2026-03-03\"").replace("version = 1\n", "")
        )));
    }
}

//! The readiness index: how ready the city is, computed continuously from live data per
//! sector and city-wide, each indicator documented with its source and formula (see
//! `src/docs/indicators.md`, included below).
//!
//! **Architecture invariant:** sans-IO. [`compute`] is a pure function of an [`Input`]
//! (registry, what the stream showed per device, incidents, exercises, sharing counts,
//! history); time is `Input::now`. Indicators without a data source say "no data" with the
//! reason instead of inventing a number.
#![doc = include_str!("docs/indicators.md")]

mod version;

use std::collections::{BTreeMap, HashMap};

use model::{Credential, Device, DeviceClass, DeviceStatus, Sector, Severity, Timestamp};
use serde::Serialize;

/// What the event stream showed about one device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Observed {
    /// The device's last event of any kind.
    pub last_seen: Option<Timestamp>,
    /// Whether its last accepted connect authenticated with a client certificate.
    pub connect_via_certificate: Option<bool>,
}

/// One registered device and what was observed of it.
#[derive(Debug, Clone, Copy)]
pub struct DeviceInput<'a> {
    pub device: &'a Device,
    pub observed: Observed,
}

/// An incident as the readiness index needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IncidentInput {
    pub sector: Option<Sector>,
    pub severity: Severity,
    /// The first event that belongs to it.
    pub first_event: Timestamp,
    pub detected: Timestamp,
    pub acknowledged: Option<Timestamp>,
    pub contained: Option<Timestamp>,
    pub resolved: Option<Timestamp>,
}

/// Where the incidents came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incidents {
    /// Real incidents with their lifecycle.
    Lifecycle(Vec<IncidentInput>),
    /// One pseudo-incident per detection alert (no acknowledge, contain or resolve times);
    /// "open" means raised in the last 24 hours.
    DerivedFromAlerts(Vec<IncidentInput>),
}

/// One scored exercise: attack scenarios played against the live platform
/// (`citysec exercise run --api`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExerciseRun {
    /// When it finished.
    pub at: Timestamp,
    pub scenarios: u32,
    pub detected: u32,
    /// The median time to detect of its detected scenarios, in seconds.
    pub median_time_to_detect_s: Option<f64>,
}

impl ExerciseRun {
    /// `detected / scenarios x min(1, 60 s / median time to detect)`; 0 when nothing was
    /// detected.
    pub fn score(&self) -> f64 {
        if self.scenarios == 0 || self.detected == 0 {
            return 0.0;
        }
        let share = f64::from(self.detected.min(self.scenarios)) / f64::from(self.scenarios);
        let speed = self
            .median_time_to_detect_s
            .map_or(1.0, |t| (EXERCISE_DETECT_TARGET_S / t.max(1e-3)).min(1.0));
        share * speed
    }
}

/// Exercises, any age (only the last 365 days count).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Exercises {
    /// Detection exercises with their results.
    pub runs: Vec<ExerciseRun>,
    /// Public-warning drills: when each issued advisory with CAP status `Exercise` went
    /// out (not scored).
    pub warning_drills: Vec<Timestamp>,
}

/// The time to detect an exercise scenario that scores in full, in seconds.
pub const EXERCISE_DETECT_TARGET_S: f64 = 60.0;

/// The conduits of the zone plan (IEC 62443-3-2): which zones some conduit connects.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Conduits {
    /// Zones named as either end of a conduit.
    pub zones: Vec<String>,
    /// Whether some conduit has `*` (any zone) at one end.
    pub any_zone: bool,
}

impl Conduits {
    fn covers(&self, zone: &str) -> bool {
        self.any_zone || self.zones.iter().any(|z| z == zone)
    }
}

/// Threat intelligence exchanged with partners in the last 30 days: STIX objects the city
/// published to its sharing collections, and objects received from partners (pulled from
/// their feeds, or pushed into the city's collections).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntelCounts {
    pub shared: u64,
    pub received: u64,
}

/// One entry of a vendor's firmware catalogue: the latest version the vendor ships for a
/// model (or for every model of a device class it makes), and when it was released.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FirmwareRelease {
    pub vendor: String,
    /// The model it is for; `None` when it is for every model of `class`.
    pub model: Option<String>,
    pub class: Option<DeviceClass>,
    pub latest: String,
    pub released: Timestamp,
}

/// The vendors' latest firmware, looked up by vendor and model, then by vendor and
/// class; names compare without regard to case or surrounding spaces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FirmwareCatalogue {
    entries: Vec<FirmwareRelease>,
    by_model: HashMap<(String, String), usize>,
    by_class: HashMap<(String, DeviceClass), usize>,
}

fn fold(name: &str) -> String {
    name.trim().to_lowercase()
}

impl FirmwareCatalogue {
    /// Builds the catalogue; an entry that names neither or both of model and class, or
    /// repeats one before it, is refused with its position (1-based).
    pub fn new(entries: Vec<FirmwareRelease>) -> Result<FirmwareCatalogue, String> {
        let mut catalogue = FirmwareCatalogue::default();
        for (i, e) in entries.iter().enumerate() {
            let n = i + 1;
            if e.vendor.trim().is_empty() || e.latest.trim().is_empty() {
                return Err(format!("entry {n}: vendor and latest must not be empty"));
            }
            let clash = match (&e.model, e.class) {
                (Some(model), None) if !model.trim().is_empty() => {
                    catalogue.by_model.insert((fold(&e.vendor), fold(model)), i)
                }
                (None, Some(class)) => catalogue.by_class.insert((fold(&e.vendor), class), i),
                _ => {
                    return Err(format!(
                        "entry {n} ({}): give exactly one of model and class",
                        e.vendor
                    ));
                }
            };
            if let Some(before) = clash {
                return Err(format!(
                    "entry {n} ({} {}) repeats entry {}",
                    e.vendor,
                    e.model
                        .clone()
                        .or(e.class.map(|c| c.as_str().to_owned()))
                        .unwrap_or_default(),
                    before + 1
                ));
            }
        }
        catalogue.entries = entries;
        Ok(catalogue)
    }

    pub fn entries(&self) -> &[FirmwareRelease] {
        &self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The vendor's latest for this model, else for its class.
    pub fn latest(
        &self,
        vendor: &str,
        model: &str,
        class: DeviceClass,
    ) -> Option<&FirmwareRelease> {
        let vendor = fold(vendor);
        self.by_model
            .get(&(vendor.clone(), fold(model)))
            .or_else(|| self.by_class.get(&(vendor, class)))
            .map(|&i| &self.entries[i])
    }
}

/// How long after a vendor release a device not yet on it still counts as current: the
/// patch window.
pub const FIRMWARE_PATCH_WINDOW_DAYS: i64 = 30;

/// Everything the index is computed from.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    pub now: Timestamp,
    pub devices: Vec<DeviceInput<'a>>,
    pub incidents: Incidents,
    /// `None` when there is no source of exercises.
    pub exercises: Option<Exercises>,
    /// `None` when there is no source of sharing counts.
    pub intel: Option<IntelCounts>,
    /// `None` when no conduit is defined.
    pub conduits: Option<Conduits>,
    /// The vendors' latest firmware; devices it has no entry for are compared with the
    /// newest version in the fleet instead (and the index says how many).
    pub firmware: &'a FirmwareCatalogue,
    /// Earlier city scores, any order.
    pub history: Vec<(Timestamp, f64)>,
}

/// The published definition of one indicator.
#[derive(Debug, Clone, Serialize)]
pub struct Indicator {
    pub id: &'static str,
    pub name: &'static str,
    pub weight: f64,
    pub formula: &'static str,
    pub source: &'static str,
    /// Whether it can be attributed to a sector.
    pub per_sector: bool,
}

/// Every indicator, with its weight, formula and source.
pub const INDICATORS: &[Indicator] = &[
    Indicator {
        id: "inventory_coverage",
        name: "inventory coverage",
        weight: 10.0,
        formula: "active registered devices seen in the last 24 h / active registered devices",
        source: "NIST IR 8259A (device identification, asset inventory); IEC 62443-2-1 (asset inventory)",
        per_sector: true,
    },
    Indicator {
        id: "unique_credentials",
        name: "unique credentials and no defaults",
        weight: 12.0,
        formula: "active devices whose every credential is a client certificate or a generated 256-bit secret / active devices",
        source: "ETSI EN 303 645 5.1-1, 5.1-2; NIST IR 8259A (logical access to interfaces)",
        per_sector: true,
    },
    Indicator {
        id: "firmware_current",
        name: "firmware against the vendor's latest",
        weight: 10.0,
        formula: "active devices at or above the vendor catalogue's latest for their vendor and model (or class), or within 30 days of its release / active devices with vendor, model and firmware; without a catalogue entry, the newest version in the fleet for the vendor and model stands in (and the detail says for how many)",
        source: "ETSI EN 303 645 5.3; NIST IR 8259A (device software update); IEC 62443-4-2 CR 3.10",
        per_sector: true,
    },
    Indicator {
        id: "secure_transport",
        name: "encrypted and authenticated transport",
        weight: 10.0,
        formula: "devices whose last accepted connect used a client certificate (mutual TLS) / devices with an accepted connect",
        source: "ETSI EN 303 645 5.5; IEC 62443-4-2 CR 4.1, CR 1.2",
        per_sector: true,
    },
    Indicator {
        id: "telemetry_freshness",
        name: "telemetry freshness",
        weight: 8.0,
        formula: "active devices with an event in the last 15 minutes / active devices",
        source: "IEC 62443-3-3 SR 6.2 (continuous monitoring)",
        per_sector: true,
    },
    Indicator {
        id: "outside_conduits",
        name: "devices outside every conduit",
        weight: 8.0,
        formula: "1 - active devices whose zone no conduit connects / active devices",
        source: "IEC 62443-3-2 ZCR 3 (zones and conduits)",
        per_sector: true,
    },
    Indicator {
        id: "time_to_detect",
        name: "time to detect",
        weight: 8.0,
        formula: "min(1, 15 min / median(detected - first event)) over the last 365 days",
        source: "IEC 62443-2-1 (incident handling); IEC 62443-3-3 SR 6.2",
        per_sector: true,
    },
    Indicator {
        id: "time_to_acknowledge",
        name: "time to acknowledge",
        weight: 6.0,
        formula: "min(1, 30 min / median(acknowledged - detected))",
        source: "IEC 62443-2-1 (incident handling)",
        per_sector: true,
    },
    Indicator {
        id: "time_to_contain",
        name: "time to contain",
        weight: 6.0,
        formula: "min(1, 4 h / median(contained - detected))",
        source: "IEC 62443-2-1 (incident response)",
        per_sector: true,
    },
    Indicator {
        id: "time_to_resolve",
        name: "time to resolve",
        weight: 6.0,
        formula: "min(1, 72 h / median(resolved - detected))",
        source: "IEC 62443-2-1 (incident response)",
        per_sector: true,
    },
    Indicator {
        id: "exercises",
        name: "exercises run and their scores",
        weight: 6.0,
        formula: "min(1, exercises in the last 365 days / 4) x mean exercise score, where an exercise scores detected scenarios / scenarios x min(1, 60 s / median time to detect) (public-warning drills count but are not scored; without scored exercises the count alone)",
        source: "IEC 62443-2-1 (incident response plan tested)",
        per_sector: false,
    },
    Indicator {
        id: "intel_sharing",
        name: "indicators shared with and received from partners",
        weight: 4.0,
        formula: "min(1, shared / 10) / 2 + min(1, received / 10) / 2, counting STIX objects added in the last 30 days to the sharing collection (shared) and to partner feed copies and collections partners write to (received)",
        source: "IEC 62443-2-1 (information sharing); ETSI EN 303 645 5.2",
        per_sector: false,
    },
    Indicator {
        id: "open_critical_incidents",
        name: "open critical incidents",
        weight: 6.0,
        formula: "1 / (1 + open critical incidents)",
        source: "IEC 62443-2-1 (incident response)",
        per_sector: true,
    },
];

/// One indicator's value in one scope.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Value {
    pub id: &'static str,
    /// 0-1, or `None` for no data.
    pub score: Option<f64>,
    /// What the score is made of, e.g. `812 of 1000 devices`.
    pub detail: String,
    /// Why there is no data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub no_data: Option<String>,
    /// What would raise it (used for the improvements).
    #[serde(skip)]
    change: String,
}

/// The indicators and the weighted score of one scope.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scorecard {
    /// 0-100, `None` when no indicator has data.
    pub score: Option<f64>,
    pub devices: usize,
    pub values: Vec<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SectorScorecard {
    pub sector: Sector,
    #[serde(flatten)]
    pub scorecard: Scorecard,
}

/// A change that would raise the city score.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Improvement {
    pub indicator: &'static str,
    /// Points the city score would gain if the indicator reached a full score.
    pub gain: f64,
    pub change: String,
}

/// How the score moved.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Trend {
    /// The oldest history point of the last 30 days it is compared with.
    pub since: Timestamp,
    pub previous: f64,
    pub delta: f64,
    pub per_day: f64,
}

/// The computed index.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Index {
    pub computed_at: Timestamp,
    /// `lifecycle` or `derived_from_alerts`.
    pub incident_source: &'static str,
    pub weights: BTreeMap<&'static str, f64>,
    pub city: Scorecard,
    pub sectors: Vec<SectorScorecard>,
    /// At most three, largest gain first.
    pub improvements: Vec<Improvement>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trend: Option<Trend>,
}

const DAY_MS: i64 = 86_400_000;
const SEEN_WINDOW_MS: i64 = DAY_MS;
const FRESH_WINDOW_MS: i64 = 15 * 60_000;
const INCIDENT_WINDOW_MS: i64 = 365 * DAY_MS;
const DERIVED_OPEN_MS: i64 = DAY_MS;

/// Counts behind the device indicators of one scope.
#[derive(Debug, Default, Clone, Copy)]
struct DeviceCounts {
    devices: usize,
    active: usize,
    seen: usize,
    unique_ok: usize,
    firmware_known: usize,
    firmware_current: usize,
    /// Of `firmware_known`: compared with the vendor catalogue (the rest with the fleet's
    /// newest).
    firmware_catalogued: usize,
    /// The oldest vendor release a device has not installed past the patch window, in ms.
    firmware_oldest_missed_ms: Option<i64>,
    connected: usize,
    via_certificate: usize,
    fresh: usize,
    outside_conduits: usize,
}

#[derive(Debug, Default, Clone)]
struct IncidentCounts {
    detect: Vec<i64>,
    acknowledge: Vec<i64>,
    contain: Vec<i64>,
    resolve: Vec<i64>,
    open_critical: usize,
    total: usize,
}

/// Whether every credential is unique by construction: a certificate, or a secret the
/// platform generated (stored as salted SHA-256; human-chosen ones are Argon2id).
fn unique_by_construction(device: &Device) -> bool {
    !device.credentials.is_empty()
        && device.credentials.iter().all(|c| match c {
            Credential::Certificate { .. } => true,
            Credential::Secret { hash } => hash.starts_with("$sha256$"),
        })
}

/// Whether a device's firmware counts as current, whether it was compared with the vendor
/// catalogue (else the fleet's newest), and the age of the release it missed.
type FirmwareVerdict = (bool, bool, Option<i64>);

/// FNV-1a: the maps of [`compute`] are keyed by short names, where SipHash's setup costs
/// more than the hashing.
#[derive(Default, Clone, Copy)]
struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

type FastMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<Fnv>>;

/// Computes the index.
pub fn compute(input: &Input<'_>) -> Index {
    let now = input.now.as_millis();
    // The newest firmware per vendor and model among active devices.
    let mut newest: FastMap<(&str, &str), &str> = FastMap::default();
    for d in &input.devices {
        let dev = d.device;
        if dev.status != DeviceStatus::Active || !has_firmware(dev) {
            continue;
        }
        let slot = newest
            .entry((dev.vendor.as_str(), dev.model.as_str()))
            .or_insert(dev.firmware.as_str());
        if *slot != dev.firmware && version::newer(&dev.firmware, slot) {
            *slot = dev.firmware.as_str();
        }
    }
    // The firmware verdict of each (vendor, model, class, version), worked out once: a
    // city has many devices but few distinct products and versions.
    let mut verdicts: FastMap<(&str, &str, DeviceClass, &str), FirmwareVerdict> =
        FastMap::default();
    let mut city = DeviceCounts::default();
    let mut sectors: BTreeMap<Sector, DeviceCounts> = BTreeMap::new();
    for d in &input.devices {
        let dev = d.device;
        let firmware = (dev.status == DeviceStatus::Active && has_firmware(dev)).then(|| {
            *verdicts
                .entry((
                    dev.vendor.as_str(),
                    dev.model.as_str(),
                    dev.class,
                    dev.firmware.as_str(),
                ))
                .or_insert_with(|| {
                    match input.firmware.latest(&dev.vendor, &dev.model, dev.class) {
                        Some(r) => {
                            let age = now - r.released.as_millis();
                            let installed = !version::newer(&r.latest, &dev.firmware);
                            let in_window = age < FIRMWARE_PATCH_WINDOW_DAYS * DAY_MS;
                            (
                                installed || in_window,
                                true,
                                (!installed && !in_window).then_some(age),
                            )
                        }
                        None => (
                            newest.get(&(dev.vendor.as_str(), dev.model.as_str()))
                                == Some(&dev.firmware.as_str()),
                            false,
                            None,
                        ),
                    }
                })
        });
        let counts = sectors.entry(dev.sector).or_default();
        for c in [&mut city, counts] {
            c.devices += 1;
            if dev.status != DeviceStatus::Active {
                continue;
            }
            c.active += 1;
            let age = d.observed.last_seen.map(|ts| now - ts.as_millis());
            if age.is_some_and(|a| a <= SEEN_WINDOW_MS) {
                c.seen += 1;
            }
            if age.is_some_and(|a| a <= FRESH_WINDOW_MS) {
                c.fresh += 1;
            }
            if unique_by_construction(dev) {
                c.unique_ok += 1;
            }
            if let Some((current, catalogued, missed)) = firmware {
                c.firmware_known += 1;
                c.firmware_current += usize::from(current);
                c.firmware_catalogued += usize::from(catalogued);
                if let Some(age) = missed {
                    c.firmware_oldest_missed_ms =
                        Some(c.firmware_oldest_missed_ms.map_or(age, |a| a.max(age)));
                }
            }
            if input
                .conduits
                .as_ref()
                .is_some_and(|c| !c.covers(&dev.zone))
            {
                c.outside_conduits += 1;
            }
            if let Some(cert) = d.observed.connect_via_certificate {
                c.connected += 1;
                if cert {
                    c.via_certificate += 1;
                }
            }
        }
    }
    let (incidents, derived) = match &input.incidents {
        Incidents::Lifecycle(list) => (list, false),
        Incidents::DerivedFromAlerts(list) => (list, true),
    };
    let mut city_inc = IncidentCounts::default();
    let mut sector_inc: BTreeMap<Sector, IncidentCounts> = BTreeMap::new();
    for inc in incidents {
        if now - inc.detected.as_millis() > INCIDENT_WINDOW_MS {
            continue;
        }
        let mut targets = vec![&mut city_inc];
        let sector_slot;
        if let Some(sector) = inc.sector {
            sector_slot = sector_inc.entry(sector).or_default();
            targets.push(sector_slot);
        }
        for c in targets {
            c.total += 1;
            let detected = inc.detected.as_millis();
            c.detect
                .push((detected - inc.first_event.as_millis()).max(0));
            for (slot, at) in [
                (&mut c.acknowledge, inc.acknowledged),
                (&mut c.contain, inc.contained),
                (&mut c.resolve, inc.resolved),
            ] {
                if let Some(at) = at {
                    slot.push((at.as_millis() - detected).max(0));
                }
            }
            let open = if derived {
                now - detected <= DERIVED_OPEN_MS
            } else {
                inc.resolved.is_none()
            };
            if open && inc.severity == Severity::Critical {
                c.open_critical += 1;
            }
        }
    }

    let has_conduits = input.conduits.is_some();
    let city_card = scorecard(
        now,
        &city,
        &city_inc,
        derived,
        has_conduits,
        Some((input.exercises.as_ref(), input.intel)),
    );
    let sector_cards = sectors
        .iter()
        .map(|(sector, counts)| SectorScorecard {
            sector: *sector,
            scorecard: scorecard(
                now,
                counts,
                sector_inc.get(sector).unwrap_or(&IncidentCounts::default()),
                derived,
                has_conduits,
                None,
            ),
        })
        .collect();
    let improvements = improvements(&city_card);
    let trend = city_card
        .score
        .and_then(|score| trend(now, score, &input.history));
    Index {
        computed_at: input.now,
        incident_source: if derived {
            "derived_from_alerts"
        } else {
            "lifecycle"
        },
        weights: INDICATORS.iter().map(|i| (i.id, i.weight)).collect(),
        city: city_card,
        sectors: sector_cards,
        improvements,
        trend,
    }
}

fn firmware_value(d: &DeviceCounts) -> Value {
    let fleet = d.firmware_known - d.firmware_catalogued;
    let against = match (d.firmware_catalogued, fleet) {
        (_, 0) => "the vendor catalogue".to_owned(),
        (0, _) => "the fleet's newest (no vendor catalogue entry)".to_owned(),
        (c, f) => format!(
            "the vendor catalogue for {c}, the fleet's newest for {f} without a catalogue entry"
        ),
    };
    let behind = d.firmware_known - d.firmware_current;
    let oldest = d
        .firmware_oldest_missed_ms
        .map(|ms| format!(" (the oldest missed release is {} days old)", ms / DAY_MS))
        .unwrap_or_default();
    ratio(
        "firmware_current",
        d.firmware_current,
        d.firmware_known,
        &format!("devices on the latest firmware, compared with {against}"),
        format!("update {behind} devices to their vendor's latest firmware{oldest}"),
        "no active device records vendor, model and firmware",
    )
}

fn has_firmware(dev: &Device) -> bool {
    !dev.vendor.is_empty() && !dev.model.is_empty() && !dev.firmware.is_empty()
}

fn ratio(id: &'static str, ok: usize, of: usize, what: &str, change: String, empty: &str) -> Value {
    if of == 0 {
        return no_data(id, empty);
    }
    Value {
        id,
        score: Some(ok as f64 / of as f64),
        detail: format!("{ok} of {of} {what}"),
        no_data: None,
        change,
    }
}

fn no_data(id: &'static str, why: &str) -> Value {
    Value {
        id,
        score: None,
        detail: "no data".into(),
        no_data: Some(why.to_owned()),
        change: String::new(),
    }
}

fn median(values: &[i64]) -> Option<i64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    let mid = v.len() / 2;
    let (_, m, _) = v.select_nth_unstable(mid);
    Some(*m)
}

fn minutes(ms: i64) -> String {
    let m = ms as f64 / 60_000.0;
    if m < 120.0 {
        format!("{m:.1} min")
    } else {
        format!("{:.1} h", m / 60.0)
    }
}

fn timing(id: &'static str, values: &[i64], target_ms: i64, why_none: &str, step: &str) -> Value {
    match median(values) {
        None => no_data(id, why_none),
        Some(m) => Value {
            id,
            score: Some((target_ms as f64 / m.max(1) as f64).min(1.0)),
            detail: format!(
                "median {} over {} incidents (target {})",
                minutes(m),
                values.len(),
                minutes(target_ms)
            ),
            no_data: None,
            change: format!(
                "bring the median time to {step} from {} to {} or less",
                minutes(m),
                minutes(target_ms)
            ),
        },
    }
}

fn scorecard(
    now: i64,
    d: &DeviceCounts,
    inc: &IncidentCounts,
    derived: bool,
    has_conduits: bool,
    city_only: Option<(Option<&Exercises>, Option<IntelCounts>)>,
) -> Scorecard {
    let no_devices = "no active registered devices";
    let lifecycle_missing = if derived {
        "incidents are derived from alerts, which have no lifecycle times yet"
    } else {
        "no incident in the last 365 days reached this step"
    };
    let mut values = vec![
        ratio(
            "inventory_coverage",
            d.seen,
            d.active,
            "active devices seen in the last 24 h",
            format!(
                "find out why {} registered devices were not seen in 24 h (offline, mis-registered or gone)",
                d.active - d.seen
            ),
            no_devices,
        ),
        ratio(
            "unique_credentials",
            d.unique_ok,
            d.active,
            "active devices with only certificates or generated secrets",
            format!(
                "give {} devices a client certificate or a generated secret instead of a human-chosen or missing one",
                d.active - d.unique_ok
            ),
            no_devices,
        ),
        firmware_value(d),
        ratio(
            "secure_transport",
            d.via_certificate,
            d.connected,
            "connected devices using mutual TLS",
            format!(
                "move {} devices from password logins to mutual TLS with client certificates",
                d.connected - d.via_certificate
            ),
            "no device has connected since the platform started",
        ),
        ratio(
            "telemetry_freshness",
            d.fresh,
            d.active,
            "active devices heard from in the last 15 min",
            format!(
                "restore reporting from {} silent devices",
                d.active - d.fresh
            ),
            no_devices,
        ),
        if has_conduits {
            ratio(
                "outside_conduits",
                d.active - d.outside_conduits,
                d.active,
                "active devices in a zone some conduit connects",
                format!(
                    "place {} devices in zones with defined conduits (or define the conduits their zones need)",
                    d.outside_conduits
                ),
                no_devices,
            )
        } else {
            no_data(
                "outside_conduits",
                "no conduits are defined ([[detect.conduits]] in the config)",
            )
        },
    ];
    let none_yet = if inc.total == 0 {
        "no incident in the last 365 days"
    } else {
        lifecycle_missing
    };
    values.push(timing(
        "time_to_detect",
        &inc.detect,
        15 * 60_000,
        "no incident in the last 365 days",
        "detect",
    ));
    values.push(timing(
        "time_to_acknowledge",
        &inc.acknowledge,
        30 * 60_000,
        none_yet,
        "acknowledge",
    ));
    values.push(timing(
        "time_to_contain",
        &inc.contain,
        4 * 3_600_000,
        none_yet,
        "contain",
    ));
    values.push(timing(
        "time_to_resolve",
        &inc.resolve,
        72 * 3_600_000,
        none_yet,
        "resolve",
    ));
    if let Some((exercises, intel)) = city_only {
        values.push(match exercises {
            None => no_data("exercises", "no source of exercises"),
            Some(e) => exercises_value(e, now),
        });
        values.push(match intel {
            None => no_data(
                "intel_sharing",
                "no sharing collection, partner feed or collection partners write to is configured ([taxii])",
            ),
            Some(i) => Value {
                id: "intel_sharing",
                score: Some(
                    (i.shared as f64 / 10.0).min(1.0) / 2.0
                        + (i.received as f64 / 10.0).min(1.0) / 2.0,
                ),
                detail: format!(
                    "{} objects shared, {} received in 30 days",
                    i.shared, i.received
                ),
                no_data: None,
                change: format!(
                    "share and receive at least 10 indicators a month with partners ({} more to share, {} more to receive)",
                    10u64.saturating_sub(i.shared),
                    10u64.saturating_sub(i.received)
                ),
            },
        });
    }
    values.push(if inc.total == 0 && d.devices == 0 {
        no_data("open_critical_incidents", "no devices and no incidents")
    } else {
        Value {
            id: "open_critical_incidents",
            score: Some(1.0 / (1.0 + inc.open_critical as f64)),
            detail: if derived {
                format!(
                    "{} critical alerts in the last 24 h (no incident lifecycle yet)",
                    inc.open_critical
                )
            } else {
                format!("{} open critical incidents", inc.open_critical)
            },
            no_data: None,
            change: format!("close the {} open critical incidents", inc.open_critical),
        }
    });
    Scorecard {
        score: weighted(&values),
        devices: d.devices,
        values,
    }
}

const EXERCISE_WINDOW_MS: i64 = 365 * DAY_MS;

fn exercises_value(e: &Exercises, now: i64) -> Value {
    let recent = |at: Timestamp| {
        let age = now - at.as_millis();
        (0..=EXERCISE_WINDOW_MS).contains(&age)
    };
    let runs: Vec<&ExerciseRun> = e.runs.iter().filter(|r| recent(r.at)).collect();
    let drills = e.warning_drills.iter().filter(|t| recent(**t)).count();
    let total = runs.len() + drills;
    let base = (total as f64 / 4.0).min(1.0);
    let kinds = format!(
        "{total} exercises in the last 365 days ({} detection exercises, {drills} public-warning drills)",
        runs.len()
    );
    let more = 4usize.saturating_sub(total);
    if runs.is_empty() {
        return Value {
            id: "exercises",
            score: Some(base),
            detail: format!(
                "{kinds}, not scored (no detection exercise results recorded: citysec exercise run --api)"
            ),
            no_data: None,
            change: format!(
                "run {} scored detection exercises this year (one per quarter, citysec exercise run --api)",
                more.max(1)
            ),
        };
    }
    let mean = runs.iter().map(|r| r.score()).sum::<f64>() / runs.len() as f64;
    let (scenarios, detected) = runs.iter().fold((0u64, 0u64), |(s, d), r| {
        (
            s + u64::from(r.scenarios),
            d + u64::from(r.detected.min(r.scenarios)),
        )
    });
    let mut ttd: Vec<f64> = runs
        .iter()
        .filter_map(|r| r.median_time_to_detect_s)
        .collect();
    ttd.sort_by(f64::total_cmp);
    let ttd = ttd
        .get(ttd.len() / 2)
        .map(|t| format!(", median time to detect {t:.1} s"))
        .unwrap_or_default();
    let change = if more > 0 {
        format!("run {more} more scored exercises this year (one per quarter)")
    } else {
        format!(
            "detect every exercise scenario within {EXERCISE_DETECT_TARGET_S:.0} s (mean exercise score {:.0}%)",
            mean * 100.0
        )
    };
    Value {
        id: "exercises",
        score: Some(base * mean.clamp(0.0, 1.0)),
        detail: format!(
            "{kinds}, mean score {:.0}% ({detected} of {scenarios} scenarios detected{ttd})",
            mean * 100.0
        ),
        no_data: None,
        change,
    }
}

fn weight_of(id: &str) -> f64 {
    INDICATORS
        .iter()
        .find(|i| i.id == id)
        .map_or(0.0, |i| i.weight)
}

fn weighted(values: &[Value]) -> Option<f64> {
    let (mut sum, mut weights) = (0.0, 0.0);
    for v in values {
        if let Some(score) = v.score {
            sum += weight_of(v.id) * score;
            weights += weight_of(v.id);
        }
    }
    (weights > 0.0).then(|| 100.0 * sum / weights)
}

fn improvements(card: &Scorecard) -> Vec<Improvement> {
    let total: f64 = card
        .values
        .iter()
        .filter(|v| v.score.is_some())
        .map(|v| weight_of(v.id))
        .sum();
    let mut out: Vec<Improvement> = card
        .values
        .iter()
        .filter_map(|v| {
            let score = v.score?;
            let gain = 100.0 * weight_of(v.id) * (1.0 - score) / total;
            (gain > 1e-9).then(|| Improvement {
                indicator: v.id,
                gain,
                change: v.change.clone(),
            })
        })
        .collect();
    out.sort_by(|a, b| b.gain.total_cmp(&a.gain).then(a.indicator.cmp(b.indicator)));
    out.truncate(3);
    out
}

fn trend(now: i64, score: f64, history: &[(Timestamp, f64)]) -> Option<Trend> {
    let (since, previous) = history
        .iter()
        .filter(|(ts, _)| now - ts.as_millis() <= 30 * DAY_MS && ts.as_millis() < now)
        .min_by_key(|(ts, _)| ts.as_millis())?;
    let days = (now - since.as_millis()) as f64 / DAY_MS as f64;
    let delta = score - previous;
    Some(Trend {
        since: *since,
        previous: *previous,
        delta,
        per_day: if days > 0.0 { delta / days } else { 0.0 },
    })
}

/// The index as CSV: one row per scope and indicator (`scope,indicator,score,detail,no_data`),
/// scores 0-100, then one `score` row per scope.
pub fn to_csv(index: &Index) -> String {
    let mut out = String::from("scope,indicator,score,detail,no_data\n");
    let mut scope = |name: &str, card: &Scorecard| {
        for v in &card.values {
            let score = v
                .score
                .map(|s| format!("{:.1}", s * 100.0))
                .unwrap_or_default();
            out.push_str(&format!(
                "{},{},{},{},{}\n",
                csv_field(name),
                v.id,
                score,
                csv_field(&v.detail),
                csv_field(v.no_data.as_deref().unwrap_or(""))
            ));
        }
        let score = card.score.map(|s| format!("{s:.1}")).unwrap_or_default();
        out.push_str(&format!("{},score,{score},,\n", csv_field(name)));
    };
    scope("city", &index.city);
    for s in &index.sectors {
        scope(s.sector.as_str(), &s.scorecard);
    }
    out
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
mod tests;

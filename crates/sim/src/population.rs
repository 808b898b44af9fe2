//! The simulated city's devices: a reproducible mix across sectors and classes, the
//! inventory file the platform imports, and equivalent Mosquitto passwd/ACL files.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use model::{DeviceClass, DeviceId, Location, Sector};
use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};
use serde::{Deserialize, Serialize};

/// The inventory file format version written by [`Population::write_json`].
pub const INVENTORY_VERSION: u32 = 1;

/// The fictional city centre devices are scattered around (lat, lon).
pub const CITY_CENTRE: (f64, f64) = (52.37, 4.89);

/// How far from the centre devices are placed, in kilometres.
pub const CITY_RADIUS_KM: f64 = 10.0;

/// One row of the class mix: how common a class is and who makes and owns it.
pub struct ClassProfile {
    pub class: DeviceClass,
    /// Share of the population in per mille; the table sums to 1000.
    pub per_mille: u32,
    /// The prefix of generated device ids, e.g. `siren` gives `siren-0007`.
    pub id_prefix: &'static str,
    pub zone: &'static str,
    pub owner: &'static str,
    /// `(vendor, model)` pairs, picked at random per device.
    pub products: &'static [(&'static str, &'static str)],
    /// Firmware versions seen in the field, picked at random per device.
    pub firmware: &'static [&'static str],
}

/// The class mix of a generated city. Data, not code: change the shares here.
pub const MIX: &[ClassProfile] = &[
    ClassProfile {
        class: DeviceClass::Siren,
        per_mille: 10,
        id_prefix: "siren",
        zone: "ps-field",
        owner: "public-safety",
        products: &[("Whelen", "WPS-2900"), ("Federal Signal", "Modulator 2")],
        firmware: &["3.2.1", "3.4.0"],
    },
    ClassProfile {
        class: DeviceClass::Camera,
        per_mille: 80,
        id_prefix: "camera",
        zone: "ps-field",
        owner: "police",
        products: &[
            ("Axis", "P1455-LE"),
            ("Hanwha", "XNO-6080R"),
            ("Bosch", "DINION 5100i"),
        ],
        firmware: &["10.12.5", "11.2.61", "2.21.3"],
    },
    ClassProfile {
        class: DeviceClass::TrafficSignal,
        per_mille: 60,
        id_prefix: "tsig",
        zone: "transport-field",
        owner: "transport",
        products: &[("Siemens", "sX"), ("Swarco", "ITC-3")],
        firmware: &["4.8.2", "5.1.0"],
    },
    ClassProfile {
        class: DeviceClass::EvCharger,
        per_mille: 30,
        id_prefix: "evc",
        zone: "transport-field",
        owner: "mobility",
        products: &[("Alfen", "Eve Double Pro"), ("ABB", "Terra AC")],
        firmware: &["6.3.0", "1.8.14"],
    },
    ClassProfile {
        class: DeviceClass::SmartMeter,
        per_mille: 400,
        id_prefix: "meter",
        zone: "energy-ami",
        owner: "energy-utility",
        products: &[
            ("Landis+Gyr", "E360"),
            ("Kaifa", "MA304"),
            ("Iskra", "AM550"),
        ],
        firmware: &["2.1.7", "2.2.0", "1.9.3"],
    },
    ClassProfile {
        class: DeviceClass::StreetLight,
        per_mille: 150,
        id_prefix: "light",
        zone: "energy-field",
        owner: "public-works",
        products: &[("Signify", "Interact City"), ("Schreder", "Owlet IV")],
        firmware: &["1.14.2", "4.0.5"],
    },
    ClassProfile {
        class: DeviceClass::FeederBreaker,
        per_mille: 10,
        id_prefix: "breaker",
        zone: "energy-ot",
        owner: "energy-utility",
        products: &[("Schneider", "Easergy P3"), ("SEL", "SEL-751")],
        firmware: &["30.204", "R417"],
    },
    ClassProfile {
        class: DeviceClass::Pump,
        per_mille: 20,
        id_prefix: "pump",
        zone: "water-ot",
        owner: "water",
        products: &[("Grundfos", "CUE"), ("Xylem", "Flygt SmartRun")],
        firmware: &["7.2.1", "2.5.0"],
    },
    ClassProfile {
        class: DeviceClass::Valve,
        per_mille: 20,
        id_prefix: "valve",
        zone: "water-ot",
        owner: "water",
        products: &[("AUMA", "SA 07.2"), ("Rotork", "IQ3")],
        firmware: &["04.00.02", "201"],
    },
    ClassProfile {
        class: DeviceClass::LevelSensor,
        per_mille: 30,
        id_prefix: "level",
        zone: "water-ot",
        owner: "water",
        products: &[
            ("VEGA", "VEGAPULS C 21"),
            ("Endress+Hauser", "Micropilot FMR20"),
        ],
        firmware: &["1.3.0", "01.00.03"],
    },
    ClassProfile {
        class: DeviceClass::QualitySensor,
        per_mille: 20,
        id_prefix: "wq",
        zone: "water-ot",
        owner: "water",
        products: &[("Hach", "SC4500"), ("Xylem", "YSI EXO2")],
        firmware: &["1.20", "2.1.0"],
    },
    ClassProfile {
        class: DeviceClass::AirQuality,
        per_mille: 40,
        id_prefix: "aq",
        zone: "env-sensors",
        owner: "environment",
        products: &[("Clarity", "Node-S"), ("Aeroqual", "AQS 1")],
        firmware: &["3.6.1", "6.4"],
    },
    ClassProfile {
        class: DeviceClass::Weather,
        per_mille: 10,
        id_prefix: "wx",
        zone: "env-sensors",
        owner: "environment",
        products: &[("Vaisala", "WXT536"), ("Lufft", "WS600-UMB")],
        firmware: &["3.86", "1.12"],
    },
    ClassProfile {
        class: DeviceClass::Hvac,
        per_mille: 80,
        id_prefix: "hvac",
        zone: "bldg-bms",
        owner: "facilities",
        products: &[
            ("Siemens", "Desigo PXC5"),
            ("Johnson Controls", "Metasys SNE"),
        ],
        firmware: &["6.0.201", "12.0.4"],
    },
    ClassProfile {
        class: DeviceClass::AccessControl,
        per_mille: 40,
        id_prefix: "door",
        zone: "bldg-bms",
        owner: "facilities",
        products: &[("HID", "VertX EVO V1000"), ("Nedap", "AEOS AP7803")],
        firmware: &["3.5.2.1483", "2023.1"],
    },
];

/// The profile of a class in [`MIX`].
pub fn profile(class: DeviceClass) -> &'static ClassProfile {
    MIX.iter()
        .find(|p| p.class == class)
        .expect("every device class has a row in MIX")
}

/// One simulated device as the inventory file lists it. `Debug` leaves the secret out.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct SimDevice {
    pub id: DeviceId,
    pub sector: Sector,
    pub class: DeviceClass,
    pub zone: String,
    pub owner: String,
    pub vendor: String,
    pub model: String,
    pub firmware: String,
    pub location: Location,
    /// The device's network addresses, from its zone's block ([`crate::zones`]); flow
    /// records are matched to the device by these.
    #[serde(default)]
    pub addresses: Vec<std::net::IpAddr>,
    /// The MQTT password: 32 random bytes, lowercase hex.
    pub secret: String,
}

impl std::fmt::Debug for SimDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimDevice")
            .field("id", &self.id)
            .field("class", &self.class)
            .field("zone", &self.zone)
            .field("secret", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// The inventory file: `{"version": 1, "devices": [...]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct InventoryFile {
    version: u32,
    devices: Vec<SimDevice>,
}

/// A simulated city: every device with its credentials.
#[derive(Debug, Clone, PartialEq)]
pub struct Population {
    pub devices: Vec<SimDevice>,
}

/// The files [`Population::write_mosquitto`] wrote.
#[derive(Debug, Clone)]
pub struct MosquittoFiles {
    pub passwd: PathBuf,
    pub acl: PathBuf,
    /// Whether `mosquitto_passwd -U` hashed the passwd file. When false the file holds
    /// plaintext `user:password` lines, which Mosquitto 2 does not accept: hash it with
    /// `mosquitto_passwd -U FILE` before use.
    pub hashed: bool,
}

impl Population {
    /// Generates `devices` devices reproducibly from `seed`. Class counts follow [`MIX`]
    /// (largest remainder); with 15 or more devices every class appears at least once.
    pub fn generate(devices: usize, seed: u64) -> Population {
        Population::generate_counts(&class_counts(devices), seed, "", crate::zones::CITY_BLOCK)
    }

    /// The small city an exercise registers on a running platform: every class, with
    /// enough sirens, breakers and sensors for the scenarios that need several of one class
    /// (ids prefixed `x-`, addresses from [`crate::zones::EXERCISE_BLOCK`] of each zone, so
    /// they never collide with the city's own devices).
    pub fn generate_exercise(seed: u64) -> Population {
        let counts: Vec<usize> = MIX
            .iter()
            .map(|p| match p.class {
                DeviceClass::SmartMeter => 8,
                DeviceClass::Camera | DeviceClass::Siren | DeviceClass::FeederBreaker => 6,
                DeviceClass::StreetLight | DeviceClass::LevelSensor | DeviceClass::Hvac => 5,
                DeviceClass::Weather | DeviceClass::EvCharger => 2,
                _ => 3,
            })
            .collect();
        Population::generate_counts(&counts, seed, "x-", crate::zones::EXERCISE_BLOCK)
    }

    /// `counts[i]` devices of class `MIX[i]`, ids `<prefix><class prefix>-NNNN`, addresses
    /// from third octet `block` of each zone.
    pub fn generate_counts(counts: &[usize], seed: u64, prefix: &str, block: u8) -> Population {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut out = Vec::with_capacity(counts.iter().sum());
        let mut per_zone: std::collections::HashMap<&str, usize> = Default::default();
        for (profile, &count) in MIX.iter().zip(counts) {
            for n in 1..=count {
                let host = per_zone.entry(profile.zone).or_default();
                let mut device = generate_device(profile, n, prefix, &mut rng);
                if let Some(zone) = crate::zones::zone(profile.zone) {
                    device.addresses = vec![zone.host(block, *host)];
                }
                *host += 1;
                out.push(device);
            }
        }
        Population { devices: out }
    }

    pub fn len(&self) -> usize {
        self.devices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// Looks a device up by id.
    pub fn get(&self, id: &str) -> Option<&SimDevice> {
        self.devices.iter().find(|d| d.id.as_str() == id)
    }

    /// The devices of one class, in id order.
    pub fn of_class(&self, class: DeviceClass) -> impl Iterator<Item = &SimDevice> {
        self.devices.iter().filter(move |d| d.class == class)
    }

    /// Serialises the inventory as JSON (`{"version": 1, "devices": [...]}`).
    pub fn to_json(&self) -> String {
        let file = InventoryFile {
            version: INVENTORY_VERSION,
            devices: self.devices.clone(),
        };
        serde_json::to_string_pretty(&file).expect("inventory serialises")
    }

    /// Parses an inventory file's text, checking the version and that ids are unique and
    /// each device's sector matches its class.
    pub fn from_json(text: &str) -> Result<Population> {
        let file: InventoryFile =
            serde_json::from_str(text).context("parse device inventory json")?;
        if file.version != INVENTORY_VERSION {
            bail!(
                "unsupported inventory version {} (expected {INVENTORY_VERSION})",
                file.version
            );
        }
        let mut seen = std::collections::HashSet::new();
        for device in &file.devices {
            if !seen.insert(device.id.as_str()) {
                bail!("duplicate device id {} in inventory", device.id);
            }
            if device.class.sector() != device.sector {
                bail!(
                    "device {} has class {} but sector {} (expected {})",
                    device.id,
                    device.class,
                    device.sector,
                    device.class.sector()
                );
            }
            if device.secret.is_empty() {
                bail!("device {} has an empty secret", device.id);
            }
        }
        Ok(Population {
            devices: file.devices,
        })
    }

    /// Writes the inventory file the platform's `citysec device import` reads.
    pub fn write_json(&self, path: &Path) -> Result<()> {
        std::fs::write(path, self.to_json())
            .with_context(|| format!("write inventory {}", path.display()))
    }

    /// Reads an inventory file written by [`Population::write_json`] (or exported by the
    /// platform in the same format).
    pub fn read_json(path: &Path) -> Result<Population> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("read inventory {}", path.display()))?;
        Population::from_json(&text).with_context(|| format!("load inventory {}", path.display()))
    }

    /// The Mosquitto ACL granting each device exactly its own topics, plus, for `observer`
    /// when given, reading every device topic and writing commands (as the platform's
    /// command gateway would).
    pub fn mosquitto_acl(observer: Option<&str>) -> String {
        let mut acl = String::new();
        if let Some(user) = observer {
            let _ = writeln!(
                acl,
                "user {user}\ntopic read city/#\ntopic write city/+/+/cmd\ntopic read $SYS/#\n"
            );
        }
        acl.push_str(
            "# every device: its own topics only (%u = username = device id)\n\
             pattern write city/+/%u/telemetry\n\
             pattern write city/+/%u/state\n\
             pattern write city/+/%u/ack\n\
             pattern read city/+/%u/cmd\n",
        );
        acl
    }

    /// Writes `passwd` and `acl` into `dir` so this population can drive Mosquitto with
    /// the same per-device credentials and topic policy as the platform. `observer` adds a
    /// `(user, password)` that may read every device topic and send commands. The passwd file is hashed with
    /// `mosquitto_passwd -U` when that program exists (see [`MosquittoFiles::hashed`]).
    pub fn write_mosquitto(
        &self,
        dir: &Path,
        observer: Option<(&str, &str)>,
    ) -> Result<MosquittoFiles> {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let passwd = dir.join("passwd");
        let acl = dir.join("acl");
        let mut text = String::with_capacity(self.devices.len() * 90);
        if let Some((user, pass)) = observer {
            let _ = writeln!(text, "{user}:{pass}");
        }
        for device in &self.devices {
            let _ = writeln!(text, "{}:{}", device.id, device.secret);
        }
        std::fs::write(&passwd, text).with_context(|| format!("write {}", passwd.display()))?;
        std::fs::write(&acl, Population::mosquitto_acl(observer.map(|(u, _)| u)))
            .with_context(|| format!("write {}", acl.display()))?;
        let hashed = match Command::new("mosquitto_passwd")
            .arg("-U")
            .arg(&passwd)
            .output()
        {
            Ok(out) if out.status.success() => true,
            Ok(out) => bail!(
                "mosquitto_passwd -U {} failed: {}",
                passwd.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(_) => false,
        };
        Ok(MosquittoFiles {
            passwd,
            acl,
            hashed,
        })
    }
}

/// How many devices of each class (in [`MIX`] order) a population of `devices` has:
/// largest-remainder shares of the table, then, with 15 or more devices, every missing
/// class takes one device from the largest class.
pub fn class_counts(devices: usize) -> Vec<usize> {
    let total: u32 = MIX.iter().map(|p| p.per_mille).sum();
    debug_assert_eq!(total, 1000);
    let exact: Vec<f64> = MIX
        .iter()
        .map(|p| devices as f64 * f64::from(p.per_mille) / f64::from(total))
        .collect();
    let mut counts: Vec<usize> = exact.iter().map(|e| e.floor() as usize).collect();
    let assigned: usize = counts.iter().sum();
    let mut order: Vec<usize> = (0..MIX.len()).collect();
    order.sort_by(|&a, &b| {
        let ra = exact[a] - exact[a].floor();
        let rb = exact[b] - exact[b].floor();
        rb.total_cmp(&ra).then(a.cmp(&b))
    });
    for &i in order.iter().take(devices - assigned) {
        counts[i] += 1;
    }
    if devices >= MIX.len() {
        for i in 0..counts.len() {
            if counts[i] == 0 {
                let largest = (0..counts.len())
                    .max_by_key(|&j| (counts[j], usize::MAX - j))
                    .unwrap_or(0);
                counts[largest] -= 1;
                counts[i] += 1;
            }
        }
    }
    counts
}

fn generate_device(
    profile: &ClassProfile,
    n: usize,
    prefix: &str,
    rng: &mut SmallRng,
) -> SimDevice {
    let id = DeviceId::new(format!("{prefix}{}-{n:04}", profile.id_prefix))
        .expect("generated ids are valid");
    let (vendor, model) = profile.products[rng.random_range(0..profile.products.len())];
    let firmware = profile.firmware[rng.random_range(0..profile.firmware.len())];
    // Uniform over a disc: radius grows with the square root.
    let r_km = CITY_RADIUS_KM * rng.random::<f64>().sqrt();
    let angle = rng.random::<f64>() * std::f64::consts::TAU;
    let lat = CITY_CENTRE.0 + r_km * angle.cos() / 111.32;
    let lon = CITY_CENTRE.1 + r_km * angle.sin() / (111.32 * CITY_CENTRE.0.to_radians().cos());
    let mut secret = [0u8; 32];
    rng.fill_bytes(&mut secret);
    SimDevice {
        id,
        sector: profile.class.sector(),
        class: profile.class,
        zone: profile.zone.to_string(),
        owner: profile.owner.to_string(),
        vendor: vendor.to_string(),
        model: model.to_string(),
        firmware: firmware.to_string(),
        location: Location {
            lat: round6(lat),
            lon: round6(lon),
        },
        addresses: Vec::new(),
        secret: hex::encode(secret),
    }
}

fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

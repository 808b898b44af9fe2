//! Reading a city's device inventory from JSON or CSV (`citysec device import`,
//! `POST /api/v1/devices/import`).
//!
//! JSON is either an array of device objects or `{"version": 1, "devices": [...]}` (the
//! simulator's population file). CSV has a header row. The fields, in both:
//! `id, class, sector (optional; must match the class), zone, owner, vendor, model,
//! firmware, lat, lon (or a JSON "location": {"lat", "lon"}), addresses (IP addresses the
//! device uses, a JSON array or, in CSV, separated by `;` or spaces; flow records are matched
//! to devices by these), secret (plaintext; hashed on import and never stored), secret_hash
//! (an already-hashed secret), cert_sha256`.
//! A bad row is reported by number and skipped; the rest are imported.

use model::{Credential, Device, DeviceClass, DeviceId, DeviceStatus, Location, Sector, Timestamp};
use serde::Deserialize;

/// One row that could not be imported.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RowError {
    /// 1-based row (for CSV, the header is row 0) or array index + 1 for JSON.
    pub row: usize,
    pub message: String,
}

/// The input formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Csv,
}

impl Format {
    /// Guesses from a file name: `.csv` is CSV, anything else JSON.
    pub fn from_path(path: &std::path::Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some(ext) if ext.eq_ignore_ascii_case("csv") => Format::Csv,
            _ => Format::Json,
        }
    }
}

/// One inventory row as written in a file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Row {
    pub id: String,
    pub class: String,
    #[serde(default)]
    pub sector: Option<String>,
    #[serde(default)]
    pub zone: Option<String>,
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub vendor: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub firmware: Option<String>,
    #[serde(default)]
    pub lat: Option<f64>,
    #[serde(default)]
    pub lon: Option<f64>,
    #[serde(default)]
    pub location: Option<Location>,
    #[serde(default)]
    pub addresses: Vec<String>,
    #[serde(default)]
    pub secret: Option<String>,
    #[serde(default)]
    pub secret_hash: Option<String>,
    #[serde(default)]
    pub cert_sha256: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum JsonInventory {
    List(Vec<serde_json::Value>),
    File {
        version: u32,
        devices: Vec<serde_json::Value>,
    },
}

/// The most addresses one device may list.
pub const MAX_ADDRESSES: usize = 16;

/// The most rows one import accepts.
pub const MAX_ROWS: usize = 1_000_000;

/// Parses an inventory; returns the devices and the rows that were refused.
pub fn parse(
    bytes: &[u8],
    format: Format,
    now: Timestamp,
) -> Result<(Vec<Device>, Vec<RowError>), String> {
    let mut devices = Vec::new();
    let mut errors = Vec::new();
    let mut accept =
        |row_no: usize, row: Result<Row, String>| match row.and_then(|row| to_device(row, now)) {
            Ok(device) => devices.push(device),
            Err(message) => errors.push(RowError {
                row: row_no,
                message,
            }),
        };
    match format {
        Format::Json => {
            let inventory: JsonInventory = serde_json::from_slice(bytes)
                .map_err(|err| format!("not an inventory (a JSON array of devices or {{\"version\": 1, \"devices\": [...]}}): {err}"))?;
            let rows = match inventory {
                JsonInventory::List(rows) => rows,
                JsonInventory::File {
                    version: 1,
                    devices,
                } => devices,
                JsonInventory::File { version, .. } => {
                    return Err(format!("unsupported inventory version {version}"));
                }
            };
            if rows.len() > MAX_ROWS {
                return Err(format!(
                    "too many rows ({}, at most {MAX_ROWS})",
                    rows.len()
                ));
            }
            for (i, value) in rows.into_iter().enumerate() {
                accept(
                    i + 1,
                    serde_json::from_value::<Row>(value).map_err(|e| e.to_string()),
                );
            }
        }
        Format::Csv => {
            let mut reader = csv::ReaderBuilder::new()
                .trim(csv::Trim::All)
                .from_reader(bytes);
            for (i, record) in reader.deserialize::<CsvRow>().enumerate() {
                if i >= MAX_ROWS {
                    return Err(format!("too many rows (at most {MAX_ROWS})"));
                }
                accept(i + 1, record.map(Row::from).map_err(|e| e.to_string()));
            }
        }
    }
    Ok((devices, errors))
}

/// CSV can't carry nested objects or tell empty from absent, so it has its own row type.
#[derive(Debug, Deserialize)]
struct CsvRow {
    id: String,
    class: String,
    #[serde(default)]
    sector: Option<String>,
    #[serde(default)]
    zone: Option<String>,
    #[serde(default)]
    owner: Option<String>,
    #[serde(default)]
    vendor: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    firmware: Option<String>,
    #[serde(default)]
    lat: Option<f64>,
    #[serde(default)]
    lon: Option<f64>,
    #[serde(default)]
    addresses: Option<String>,
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    secret_hash: Option<String>,
    #[serde(default)]
    cert_sha256: Option<String>,
}

impl From<CsvRow> for Row {
    fn from(r: CsvRow) -> Row {
        let some = |s: Option<String>| s.filter(|s| !s.is_empty());
        Row {
            id: r.id,
            class: r.class,
            sector: some(r.sector),
            zone: some(r.zone),
            owner: some(r.owner),
            vendor: some(r.vendor),
            model: some(r.model),
            firmware: some(r.firmware),
            lat: r.lat,
            lon: r.lon,
            location: None,
            addresses: r
                .addresses
                .unwrap_or_default()
                .split(|c: char| c == ';' || c.is_whitespace())
                .filter(|a| !a.is_empty())
                .map(str::to_owned)
                .collect(),
            secret: some(r.secret),
            secret_hash: some(r.secret_hash),
            cert_sha256: some(r.cert_sha256),
        }
    }
}

/// Validates a row into a device, hashing its secret.
pub fn to_device(row: Row, now: Timestamp) -> Result<Device, String> {
    let id = DeviceId::new(row.id.clone()).map_err(|e| format!("id {:?}: {e}", row.id))?;
    let class: DeviceClass = row.class.parse()?;
    if let Some(sector) = &row.sector {
        let sector: Sector = sector.parse()?;
        if sector != class.sector() {
            return Err(format!(
                "a {class} belongs to sector {}, not {sector}",
                class.sector()
            ));
        }
    }
    let location = match (row.location, row.lat, row.lon) {
        (Some(loc), _, _) => Some(loc),
        (None, Some(lat), Some(lon)) => Some(Location { lat, lon }),
        (None, None, None) => None,
        _ => return Err("lat and lon must be given together".to_owned()),
    };
    if let Some(loc) = location
        && !(loc.lat.is_finite()
            && loc.lon.is_finite()
            && loc.lat.abs() <= 90.0
            && loc.lon.abs() <= 180.0)
    {
        return Err(format!(
            "location {},{} is not a WGS 84 coordinate",
            loc.lat, loc.lon
        ));
    }
    if row.addresses.len() > MAX_ADDRESSES {
        return Err(format!("at most {MAX_ADDRESSES} addresses per device"));
    }
    let mut addresses = Vec::with_capacity(row.addresses.len());
    for address in &row.addresses {
        let ip: std::net::IpAddr = address
            .parse()
            .map_err(|_| format!("address {address:?} is not an IP address"))?;
        if !addresses.contains(&ip) {
            addresses.push(ip);
        }
    }
    let mut credentials = Vec::new();
    match (row.secret, row.secret_hash) {
        (Some(_), Some(_)) => return Err("give secret or secret_hash, not both".to_owned()),
        (Some(secret), None) => {
            if secret.len() < 16 {
                return Err("secret must be at least 16 characters".to_owned());
            }
            // Secrets of 32+ characters are treated as generated (high entropy); shorter
            // ones may be human-chosen and get a slow hash.
            let hash = if secret.len() >= 32 {
                ingest::credentials::hash_secret(&secret)
            } else {
                ingest::credentials::hash_password(&secret)
            };
            credentials.push(Credential::Secret { hash });
        }
        (None, Some(hash)) => {
            if !hash.starts_with('$') {
                return Err(
                    "secret_hash must be a PHC string ($sha256$... or $argon2id$...)".to_owned(),
                );
            }
            credentials.push(Credential::Secret { hash });
        }
        (None, None) => {}
    }
    if let Some(fp) = row.cert_sha256 {
        let fp = normalise_fingerprint(&fp)?;
        credentials.push(Credential::Certificate { sha256: fp });
    }
    let text = |field: Option<String>, name: &str, max: usize| -> Result<String, String> {
        let value = field.unwrap_or_default();
        if value.len() > max {
            return Err(format!("{name} is longer than {max} bytes"));
        }
        if value.chars().any(char::is_control) {
            return Err(format!("{name} contains control characters"));
        }
        Ok(value)
    };
    let sector = class.sector();
    Ok(Device {
        id,
        sector,
        class,
        zone: text(row.zone, "zone", 64)?
            .to_owned()
            .or_default_zone(sector),
        owner: text(row.owner, "owner", 128)?,
        vendor: text(row.vendor, "vendor", 128)?,
        model: text(row.model, "model", 128)?,
        firmware: text(row.firmware, "firmware", 64)?,
        location,
        addresses,
        credentials,
        status: DeviceStatus::Active,
        created_at: now,
    })
}

trait DefaultZone {
    fn or_default_zone(self, sector: Sector) -> String;
}

impl DefaultZone for String {
    /// A device with no zone lands in its sector's default zone.
    fn or_default_zone(self, sector: Sector) -> String {
        if self.is_empty() {
            format!("{}-default", sector.as_str())
        } else {
            self
        }
    }
}

/// Accepts `AB:CD:...` or `abcd...` SHA-256 fingerprints; returns lowercase hex.
pub fn normalise_fingerprint(fp: &str) -> Result<String, String> {
    let hex: String = fp
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!(
            "cert_sha256 {fp:?} is not a SHA-256 fingerprint (64 hex digits)"
        ));
    }
    Ok(hex)
}

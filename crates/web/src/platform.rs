//! What only the running platform can do, as a trait the composition layer (`app`)
//! implements: register devices (hashing secrets, updating the broker's cache), revoke them
//! (dropping their MQTT sessions), report live status, and take flow records sent over HTTP.

use std::fmt;

use async_trait::async_trait;
use model::{Device, DeviceClass, DeviceId, ErrorCode, Location, Sector};
use serde::{Deserialize, Serialize};

use crate::auth::Principal;

/// The operations of the platform the API drives.
#[async_trait]
pub trait Platform: Send + Sync + 'static {
    /// Registers one device; returns it and, when the request asked the platform to
    /// generate a secret, that secret (shown once, never stored in clear).
    ///
    /// The API has already run [`NewDevice::validate`] on the request.
    async fn add_device(
        &self,
        request: NewDevice,
    ) -> Result<(Device, Option<String>), PlatformError>;

    /// Registers many devices from a JSON array of [`NewDevice`] objects or a CSV file with
    /// a header row naming the same fields. Bad rows are reported, good rows imported.
    async fn import_devices(
        &self,
        body: &[u8],
        format: ImportFormat,
    ) -> Result<ImportReport, PlatformError>;

    /// Revokes a device's credentials and drops its sessions; returns the updated device.
    async fn revoke_device(&self, id: &DeviceId, reason: &str) -> Result<Device, PlatformError>;

    /// Live figures for the status endpoint.
    fn status(&self) -> Status;

    /// Sends a request (the body of `POST /api/v1/commands`) through the command gateway on
    /// behalf of `principal`; returns the command, pending approval or delivered. The
    /// gateway audits refusals. Without a gateway: unavailable.
    async fn submit_command(
        &self,
        principal: &Principal,
        request: serde_json::Value,
    ) -> Result<serde_json::Value, PlatformError> {
        let _ = (principal, request);
        Err(PlatformError::new(
            ErrorCode::Unavailable,
            "no command gateway",
        ))
    }

    /// A second person approves command `id`, bound to the payload hash they reviewed.
    async fn approve_command(
        &self,
        principal: &Principal,
        id: &str,
        payload_sha256: &str,
    ) -> Result<serde_json::Value, PlatformError> {
        let _ = (principal, id, payload_sha256);
        Err(PlatformError::new(
            ErrorCode::Unavailable,
            "no command gateway",
        ))
    }

    /// The live state of command `id`.
    async fn get_command(&self, id: &str) -> Result<Option<serde_json::Value>, PlatformError> {
        let _ = id;
        Err(PlatformError::new(
            ErrorCode::Unavailable,
            "no command gateway",
        ))
    }
    /// Takes flow records sent as JSON lines (`POST /api/v1/flows`): each good line becomes
    /// a flow event, each bad one is counted by reason.
    async fn ingest_flows(&self, body: &[u8]) -> Result<FlowReport, PlatformError>;

    /// Marks what an alert saw as normal (the rule stays quiet for its key; baselines
    /// absorb it), durably, attributed to `actor`.
    async fn learn_alert(
        &self,
        alert: &model::Alert,
        actor: &str,
        reason: &str,
    ) -> Result<store::Suppression, PlatformError>;

    /// Silences an alert's rule for its key until `until` (or until lifted).
    async fn mute_alert(
        &self,
        alert: &model::Alert,
        until: Option<model::Timestamp>,
        actor: &str,
        reason: &str,
    ) -> Result<store::Suppression, PlatformError>;

    /// Lifts a learn or mute.
    async fn lift_suppression(
        &self,
        rule: &str,
        key: &str,
        actor: &str,
    ) -> Result<(), PlatformError>;

    /// Adds threat indicators written by the city: a STIX 2.1 bundle, one indicator
    /// object, or an array of them. Each is validated on its own.
    async fn add_indicators(
        &self,
        body: serde_json::Value,
        actor: &str,
    ) -> Result<crate::detect::IndicatorReport, PlatformError>;

    /// What the detection engine runs.
    fn detect_status(&self) -> crate::detect::DetectStatus;
    /// Changes an incident on behalf of `actor` (the running correlator owns open
    /// incidents). Platforms without an incident service answer `Unavailable`.
    async fn update_incident(
        &self,
        id: &model::IncidentId,
        request: crate::IncidentRequest,
        actor: &crate::Principal,
    ) -> Result<crate::IncidentUpdate, PlatformError> {
        let _ = (id, request, actor);
        Err(PlatformError::new(
            ErrorCode::Unavailable,
            "incidents are not handled by this platform",
        ))
    }

    /// Delivery figures of the SIEM forwarders (syslog, webhooks), if any run.
    fn integrations_status(&self) -> Option<serde_json::Value> {
        None
    }

    /// The zones and conduits the console's map draws.
    fn zone_plan(&self) -> crate::console::ZonePlan {
        crate::console::ZonePlan::default()
    }

    /// Threat sharing as configured, for the console: partners (never their
    /// credentials), collections and partner feeds with their bookmarks. `None` when the
    /// platform shares nothing.
    async fn sharing(&self) -> Result<Option<serde_json::Value>, PlatformError> {
        Ok(None)
    }

    /// The dependencies this process cannot reach right now (`"bus"`, `"store"`): `/readyz`
    /// answers 503 naming them.
    fn unavailable(&self) -> Vec<String> {
        Vec::new()
    }
}

/// A failure the platform reports, with the code the API maps to an HTTP status.
///
/// Messages of `Internal` and `Unavailable` errors are logged, never shown to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PlatformError {
    pub code: ErrorCode,
    pub message: String,
}

impl PlatformError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> PlatformError {
        PlatformError {
            code,
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> PlatformError {
        PlatformError::new(ErrorCode::NotFound, message)
    }

    pub fn conflict(message: impl Into<String>) -> PlatformError {
        PlatformError::new(ErrorCode::Conflict, message)
    }

    pub fn invalid(message: impl Into<String>) -> PlatformError {
        PlatformError::new(ErrorCode::Invalid, message)
    }

    pub fn internal(message: impl Into<String>) -> PlatformError {
        PlatformError::new(ErrorCode::Internal, message)
    }
}

impl From<store::Error> for PlatformError {
    fn from(err: store::Error) -> PlatformError {
        PlatformError::new(err.code(), err.to_string())
    }
}

/// A request to register a device (the body of `POST /api/v1/devices`, one element of a
/// JSON import, one row of a CSV import).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewDevice {
    pub id: DeviceId,
    pub class: DeviceClass,
    /// Optional; when given it must equal the class's sector.
    #[serde(default)]
    pub sector: Option<Sector>,
    pub zone: String,
    pub owner: String,
    #[serde(default)]
    pub vendor: String,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub firmware: String,
    #[serde(default)]
    pub location: Option<Location>,
    /// The IP addresses the device uses (flow records are matched to devices by these).
    #[serde(default)]
    pub addresses: Vec<std::net::IpAddr>,
    /// A secret chosen by the caller (at least [`NewDevice::MIN_SECRET_LEN`] characters).
    #[serde(default, skip_serializing)]
    pub secret: Option<String>,
    /// Asks the platform to generate a high-entropy secret and return it once.
    #[serde(default)]
    pub generate_secret: bool,
    /// Lowercase hex SHA-256 of the device's client certificate (DER).
    #[serde(default)]
    pub cert_sha256: Option<String>,
}

impl fmt::Debug for NewDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewDevice")
            .field("id", &self.id)
            .field("class", &self.class)
            .field("sector", &self.sector)
            .field("zone", &self.zone)
            .field("owner", &self.owner)
            .field("vendor", &self.vendor)
            .field("model", &self.model)
            .field("firmware", &self.firmware)
            .field("location", &self.location)
            .field("addresses", &self.addresses)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("generate_secret", &self.generate_secret)
            .field("cert_sha256", &self.cert_sha256)
            .finish()
    }
}

impl NewDevice {
    pub const MIN_SECRET_LEN: usize = 16;
    pub const MAX_SECRET_LEN: usize = 256;
    pub const MAX_TEXT_LEN: usize = 256;

    /// The sector the device will be registered in.
    pub fn sector(&self) -> Sector {
        self.class.sector()
    }

    /// Checks the request on its own (not against the inventory): the sector matches the
    /// class, exactly one way of getting a secret at most, at least one credential, text
    /// fields bounded, the certificate fingerprint well-formed. Returns a lowercase message.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(sector) = self.sector
            && sector != self.class.sector()
        {
            return Err(format!(
                "sector {sector} does not match class {} (which is in {})",
                self.class,
                self.class.sector()
            ));
        }
        for (name, value) in [
            ("zone", &self.zone),
            ("owner", &self.owner),
            ("vendor", &self.vendor),
            ("model", &self.model),
            ("firmware", &self.firmware),
        ] {
            if value.chars().count() > NewDevice::MAX_TEXT_LEN {
                return Err(format!(
                    "{name} is longer than {} characters",
                    NewDevice::MAX_TEXT_LEN
                ));
            }
            if value.chars().any(char::is_control) {
                return Err(format!("{name} contains control characters"));
            }
        }
        if self.addresses.len() > 16 {
            return Err("at most 16 addresses per device".to_owned());
        }
        for (name, value) in [("zone", &self.zone), ("owner", &self.owner)] {
            if value.trim().is_empty() {
                return Err(format!("{name} must not be empty"));
            }
        }
        if let Some(loc) = self.location
            && !(loc.lat.is_finite()
                && loc.lon.is_finite()
                && (-90.0..=90.0).contains(&loc.lat)
                && (-180.0..=180.0).contains(&loc.lon))
        {
            return Err("location must have -90 <= lat <= 90 and -180 <= lon <= 180".into());
        }
        if let Some(secret) = &self.secret {
            if self.generate_secret {
                return Err("give either secret or generate_secret, not both".into());
            }
            let len = secret.chars().count();
            if len < NewDevice::MIN_SECRET_LEN {
                return Err(format!(
                    "secret must be at least {} characters",
                    NewDevice::MIN_SECRET_LEN
                ));
            }
            if len > NewDevice::MAX_SECRET_LEN {
                return Err(format!(
                    "secret must be at most {} characters",
                    NewDevice::MAX_SECRET_LEN
                ));
            }
        }
        if let Some(fp) = &self.cert_sha256
            && !(fp.len() == 64 && fp.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        {
            return Err("cert_sha256 must be 64 lowercase hex digits".into());
        }
        if self.secret.is_none() && !self.generate_secret && self.cert_sha256.is_none() {
            return Err(
                "a device needs a credential: give secret, generate_secret or cert_sha256".into(),
            );
        }
        Ok(())
    }
}

/// The body format of a device import.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImportFormat {
    Json,
    Csv,
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportReport {
    pub imported: u64,
    pub errors: Vec<ImportRowError>,
}

/// Why one row of an import was not imported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportRowError {
    /// 1-based: the element of a JSON array, or the CSV line after the header.
    pub row: u64,
    pub message: String,
}

/// What `POST /api/v1/flows` did with the lines it got.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowReport {
    pub accepted: u64,
    pub refused: u64,
    /// Refused lines per reason (`json_invalid`, `json_field`, `line_too_long`).
    pub refused_by_reason: std::collections::BTreeMap<String, u64>,
    /// The first refused lines, described.
    pub errors: Vec<FlowLineError>,
}

/// Why one line of a flow upload was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowLineError {
    /// 1-based line number.
    pub line: u64,
    pub reason: String,
    pub message: String,
}

/// Live figures of the platform.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub devices_registered: u64,
    /// Devices with an MQTT session right now.
    pub devices_online: u64,
    /// Messages received per second, averaged over the last few seconds.
    pub messages_per_s: f64,
    pub alerts_total: u64,
    pub uptime_s: u64,
    /// Whether this process reaches the bus (and, on the ingest side, the bus takes events).
    pub bus_up: bool,
    /// Whether this process reaches the store.
    pub store_up: bool,
    /// Events held in memory for a bus that does not take them (at most `[bus]
    /// buffer_messages`).
    pub events_buffered: u64,
    /// Events refused because the platform could not take them (MQTT publishes, flows,
    /// HTTP intake), since start.
    pub events_refused: u64,
}

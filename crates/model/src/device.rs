//! Devices: identity, classification, ownership and credentials.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

use crate::Timestamp;

/// The city sectors a device belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sector {
    PublicSafety,
    Transport,
    Energy,
    Water,
    Environment,
    Buildings,
}

impl Sector {
    pub const ALL: [Sector; 6] = [
        Sector::PublicSafety,
        Sector::Transport,
        Sector::Energy,
        Sector::Water,
        Sector::Environment,
        Sector::Buildings,
    ];

    /// The name used in topics, configs and the API, e.g. `public_safety`.
    pub fn as_str(self) -> &'static str {
        match self {
            Sector::PublicSafety => "public_safety",
            Sector::Transport => "transport",
            Sector::Energy => "energy",
            Sector::Water => "water",
            Sector::Environment => "environment",
            Sector::Buildings => "buildings",
        }
    }
}

impl fmt::Display for Sector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Sector {
    type Err = String;
    fn from_str(s: &str) -> Result<Sector, String> {
        Sector::ALL
            .into_iter()
            .find(|sector| sector.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown sector {s:?} (expected one of: {})",
                    names(&Sector::ALL)
                )
            })
    }
}

/// What kind of thing a device is. The class fixes its sector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceClass {
    Siren,
    Camera,
    TrafficSignal,
    EvCharger,
    SmartMeter,
    StreetLight,
    FeederBreaker,
    Pump,
    Valve,
    LevelSensor,
    QualitySensor,
    AirQuality,
    Weather,
    Hvac,
    AccessControl,
}

impl DeviceClass {
    pub const ALL: [DeviceClass; 15] = [
        DeviceClass::Siren,
        DeviceClass::Camera,
        DeviceClass::TrafficSignal,
        DeviceClass::EvCharger,
        DeviceClass::SmartMeter,
        DeviceClass::StreetLight,
        DeviceClass::FeederBreaker,
        DeviceClass::Pump,
        DeviceClass::Valve,
        DeviceClass::LevelSensor,
        DeviceClass::QualitySensor,
        DeviceClass::AirQuality,
        DeviceClass::Weather,
        DeviceClass::Hvac,
        DeviceClass::AccessControl,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeviceClass::Siren => "siren",
            DeviceClass::Camera => "camera",
            DeviceClass::TrafficSignal => "traffic_signal",
            DeviceClass::EvCharger => "ev_charger",
            DeviceClass::SmartMeter => "smart_meter",
            DeviceClass::StreetLight => "street_light",
            DeviceClass::FeederBreaker => "feeder_breaker",
            DeviceClass::Pump => "pump",
            DeviceClass::Valve => "valve",
            DeviceClass::LevelSensor => "level_sensor",
            DeviceClass::QualitySensor => "quality_sensor",
            DeviceClass::AirQuality => "air_quality",
            DeviceClass::Weather => "weather",
            DeviceClass::Hvac => "hvac",
            DeviceClass::AccessControl => "access_control",
        }
    }

    /// The sector this class of device belongs to.
    pub fn sector(self) -> Sector {
        match self {
            DeviceClass::Siren | DeviceClass::Camera => Sector::PublicSafety,
            DeviceClass::TrafficSignal | DeviceClass::EvCharger => Sector::Transport,
            DeviceClass::SmartMeter | DeviceClass::StreetLight | DeviceClass::FeederBreaker => {
                Sector::Energy
            }
            DeviceClass::Pump
            | DeviceClass::Valve
            | DeviceClass::LevelSensor
            | DeviceClass::QualitySensor => Sector::Water,
            DeviceClass::AirQuality | DeviceClass::Weather => Sector::Environment,
            DeviceClass::Hvac | DeviceClass::AccessControl => Sector::Buildings,
        }
    }

    /// Whether the device acts on the physical world and receives commands.
    pub fn is_actuator(self) -> bool {
        matches!(
            self,
            DeviceClass::Siren
                | DeviceClass::TrafficSignal
                | DeviceClass::EvCharger
                | DeviceClass::StreetLight
                | DeviceClass::FeederBreaker
                | DeviceClass::Pump
                | DeviceClass::Valve
                | DeviceClass::Hvac
                | DeviceClass::AccessControl
        )
    }

    /// Whether commands to this class need two-person approval.
    pub fn is_safety_critical(self) -> bool {
        matches!(
            self,
            DeviceClass::Siren
                | DeviceClass::Valve
                | DeviceClass::Pump
                | DeviceClass::FeederBreaker
                | DeviceClass::TrafficSignal
        )
    }
}

impl fmt::Display for DeviceClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DeviceClass {
    type Err = String;
    fn from_str(s: &str) -> Result<DeviceClass, String> {
        DeviceClass::ALL
            .into_iter()
            .find(|class| class.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown device class {s:?} (expected one of: {})",
                    names(&DeviceClass::ALL)
                )
            })
    }
}

fn names<T: fmt::Display>(all: &[T]) -> String {
    all.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A device identifier: 1 to 64 characters of `[A-Za-z0-9._-]`, starting with an
/// alphanumeric. It appears as one MQTT topic level, so it can never hold `/`, `+` or `#`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct DeviceId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceIdError {
    #[error("device id is empty")]
    Empty,
    #[error("device id is longer than 64 characters")]
    TooLong,
    #[error("device id must start with a letter or digit")]
    BadStart,
    #[error("device id contains {0:?}; allowed are letters, digits, '.', '_' and '-'")]
    BadChar(char),
}

impl DeviceId {
    pub const MAX_LEN: usize = 64;

    pub fn new(id: impl Into<String>) -> Result<DeviceId, DeviceIdError> {
        let id = id.into();
        DeviceId::check(&id)?;
        Ok(DeviceId(id))
    }

    pub fn check(id: &str) -> Result<(), DeviceIdError> {
        let first = id.chars().next().ok_or(DeviceIdError::Empty)?;
        if id.len() > DeviceId::MAX_LEN {
            return Err(DeviceIdError::TooLong);
        }
        if !first.is_ascii_alphanumeric() {
            return Err(DeviceIdError::BadStart);
        }
        if let Some(c) = id
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(DeviceIdError::BadChar(c));
        }
        Ok(())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for DeviceId {
    type Err = DeviceIdError;
    fn from_str(s: &str) -> Result<DeviceId, DeviceIdError> {
        DeviceId::new(s)
    }
}

impl<'de> Deserialize<'de> for DeviceId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<DeviceId, D::Error> {
        let s = String::deserialize(d)?;
        DeviceId::new(s).map_err(serde::de::Error::custom)
    }
}

/// WGS 84 coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Location {
    pub lat: f64,
    pub lon: f64,
}

/// How a device proves who it is. A device may hold several (for example a secret and a
/// certificate during a migration); secrets are never stored, only their hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Credential {
    /// A shared secret, stored as a PHC-format hash string (`$argon2id$...` or
    /// `$sha256$...` for generated high-entropy secrets).
    Secret { hash: String },
    /// A client certificate, identified by the lowercase hex SHA-256 of its DER encoding.
    Certificate { sha256: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DeviceStatus {
    #[default]
    Active,
    /// Credentials revoked: the broker refuses the device and drops its sessions.
    Revoked,
    /// Quarantined by a response action: refused like a revoked device, and its flows
    /// count as blocked, until an operator releases it.
    Quarantined,
}

impl DeviceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceStatus::Active => "active",
            DeviceStatus::Revoked => "revoked",
            DeviceStatus::Quarantined => "quarantined",
        }
    }
}

/// A registered device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Device {
    pub id: DeviceId,
    pub sector: Sector,
    pub class: DeviceClass,
    /// The network zone (IEC 62443 style) the device sits in.
    pub zone: String,
    /// The department or company responsible for the device.
    pub owner: String,
    pub vendor: String,
    pub model: String,
    pub firmware: String,
    #[serde(default)]
    pub location: Option<Location>,
    /// The network addresses the device uses; flow records are matched to devices by these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<IpAddr>,
    #[serde(default)]
    pub credentials: Vec<Credential>,
    #[serde(default)]
    pub status: DeviceStatus,
    pub created_at: Timestamp,
}

impl Device {
    /// The topic prefix this device owns: `city/<sector>/<device-id>`.
    pub fn topic_prefix(&self) -> String {
        crate::topic::device_prefix(self.sector, &self.id)
    }
}

//! The MQTT topic scheme: `city/<sector>/<device-id>/<channel>`.

use crate::{DeviceId, Sector};

/// The channels a device topic may end in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// Device to platform: readings.
    Telemetry,
    /// Device to platform: actuator state.
    State,
    /// Platform to device: commands.
    Cmd,
    /// Device to platform: command acknowledgements.
    Ack,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Telemetry => "telemetry",
            Channel::State => "state",
            Channel::Cmd => "cmd",
            Channel::Ack => "ack",
        }
    }

    fn parse(s: &str) -> Option<Channel> {
        Some(match s {
            "telemetry" => Channel::Telemetry,
            "state" => Channel::State,
            "cmd" => Channel::Cmd,
            "ack" => Channel::Ack,
            _ => return None,
        })
    }
}

/// `city/<sector>/<device-id>`.
pub fn device_prefix(sector: Sector, id: &DeviceId) -> String {
    format!("city/{}/{}", sector.as_str(), id.as_str())
}

/// `city/<sector>/<device-id>/<channel>`.
pub fn device_topic(sector: Sector, id: &DeviceId, channel: Channel) -> String {
    format!(
        "city/{}/{}/{}",
        sector.as_str(),
        id.as_str(),
        channel.as_str()
    )
}

/// A parsed device topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceTopic<'a> {
    pub sector: Sector,
    pub device_id: &'a str,
    pub channel: Channel,
}

/// Parses `city/<sector>/<device-id>/<channel>`; anything else is `None`.
pub fn parse(topic: &str) -> Option<DeviceTopic<'_>> {
    let mut parts = topic.split('/');
    if parts.next()? != "city" {
        return None;
    }
    let sector = parts.next()?.parse().ok()?;
    let device_id = parts.next()?;
    let channel = Channel::parse(parts.next()?)?;
    if parts.next().is_some() || DeviceId::check(device_id).is_err() {
        return None;
    }
    Some(DeviceTopic {
        sector,
        device_id,
        channel,
    })
}

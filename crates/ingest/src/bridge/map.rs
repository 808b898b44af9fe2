//! A message consumed from the city's broker becomes an event, pure: the topic names the
//! device and the channel (`city/<sector>/<device-id>/{telemetry,state,ack}`), the payload
//! is decoded by the embedded broker's own [`decode`](crate::mqtt::decode), so the same
//! payload from the same device gives the same event in both modes.
//!
//! The event time is the device's own `ts` (or SenML time) when it sent a plausible one, as
//! in the embedded broker; that is also what makes a redelivered message (the broker sends
//! it again after an ingest process died before acknowledging) the identical event, which
//! the store keeps once. A payload without its own time takes the receive time, so its
//! redelivery is a second event: the limit is documented in `docs/bridge.md`.

use model::topic::{self, Channel};
use model::{Device, Event, EventKind, Timestamp};

use crate::mqtt::decode::{self, DecodeError};

/// Why a message gave no event (each is counted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Skip {
    /// Not `city/<sector>/<device-id>/<channel>`.
    #[error("not a device topic")]
    NotDeviceTopic,
    /// A command topic: the platform's own deliveries (or someone else's) seen on `city/#`.
    #[error("command topic")]
    Command,
    /// No registered device has this id.
    #[error("unknown device")]
    UnknownDevice,
    /// The device is registered under another sector than the topic names.
    #[error("device registered in another sector")]
    WrongSector,
    /// The payload does not decode.
    #[error("payload invalid: {0}")]
    Payload(DecodeError),
}

/// The device id a topic names, if it is a device topic (for the directory lookup).
pub fn device_of(topic_name: &str) -> Option<&str> {
    topic::parse(topic_name).map(|t| t.device_id)
}

/// Maps one message to its event. `device` is the directory's entry for
/// [`device_of`]`(topic)`, `received` the time the bridge read the message.
pub fn to_event(
    topic_name: &str,
    payload: &[u8],
    device: Option<&Device>,
    received: Timestamp,
) -> Result<Event, Skip> {
    let parsed = topic::parse(topic_name).ok_or(Skip::NotDeviceTopic)?;
    if parsed.channel == Channel::Cmd {
        return Err(Skip::Command);
    }
    let device = device
        .filter(|d| d.id.as_str() == parsed.device_id)
        .ok_or(Skip::UnknownDevice)?;
    if device.sector != parsed.sector {
        return Err(Skip::WrongSector);
    }
    let decoded = match parsed.channel {
        Channel::Ack => decode::decode_ack(payload, received),
        _ => decode::decode(payload, received),
    }
    .map_err(Skip::Payload)?;
    let ts = decoded.event_time(received);
    let kind = match parsed.channel {
        Channel::Telemetry => EventKind::Telemetry {
            readings: decoded.readings,
        },
        _ => EventKind::State {
            readings: decoded.readings,
        },
    };
    Ok(Event {
        ts,
        device_id: Some(device.id.clone()),
        sector: Some(device.sector),
        kind,
    })
}

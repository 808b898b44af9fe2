//! Payload decoding, pure: the bytes a device publishes on `.../telemetry`, `.../state` or
//! `.../ack` become [`Reading`]s.
//!
//! Two shapes are accepted:
//!
//! - A JSON object: `{"ts": "2026-11-22T08:00:00Z", "temp_c": 21.5, "door": "open",
//!   "nested": {"a": 1}}`. Numbers, strings and booleans become readings; nested objects are
//!   flattened with `.` (`nested.a`), arrays by index (`list.0`); `null` is skipped.
//!   `ts` (RFC 3339 text or epoch milliseconds) is the event time when it is within a day of
//!   the receive time, otherwise the receive time is used.
//! - SenML (RFC 8428) as a JSON array of records with `bn`, `bt`, `bu`, `bv`, `n`, `u`, `v`,
//!   `vs`, `vb`, `vd`, `s`, `t`. Base fields carry forward to later records. Times are in
//!   seconds; a resolved time below 2^28 is relative to the receive time (RFC 8428 4.5.3).
//!   One payload becomes one event whose time is the first record's resolved time (subject to
//!   the same one-day window).
//!
//! Acks (`.../ack`) decode the same way into `State` readings with every name prefixed by
//! `ack.`, so detection can tell an acknowledgement from reported state.
//! Anything else (not JSON, another shape, more than [`MAX_READINGS`] readings, names longer
//! than [`MAX_NAME_LEN`]) is a [`DecodeError`], which the broker counts and reports as
//! `payload_invalid`; it never panics.

use model::{Reading, Timestamp, Value};
use serde_json::Value as Json;

/// The most readings one payload may carry.
pub const MAX_READINGS: usize = 256;
/// The longest reading name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 256;
/// How far a device's own timestamp may be from the receive time to be believed.
pub const MAX_CLOCK_SKEW_MS: i64 = 24 * 60 * 60 * 1000;
/// SenML: resolved times below this are relative to now.
const SENML_RELATIVE_LIMIT: f64 = 268_435_456.0;

/// Why a payload did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("payload is not json")]
    NotJson,
    #[error("payload is neither a json object nor a senml array")]
    WrongShape,
    #[error("senml record {0} is not an object")]
    SenmlRecord(usize),
    #[error("senml record {0} has no name")]
    SenmlNoName(usize),
    #[error("senml record {0} has no value")]
    SenmlNoValue(usize),
    #[error("more than {MAX_READINGS} readings")]
    TooManyReadings,
    #[error("reading name longer than {MAX_NAME_LEN} bytes")]
    NameTooLong,
}

/// A decoded payload: readings and the time the device claims for them, if any.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// The device's own timestamp, already checked against the receive time: `None` when
    /// absent or implausible.
    pub ts: Option<Timestamp>,
    pub readings: Vec<Reading>,
}

impl Decoded {
    /// The event time: the device's timestamp when plausible, else `received`.
    pub fn event_time(&self, received: Timestamp) -> Timestamp {
        self.ts.unwrap_or(received)
    }
}

/// Decodes a JSON-object or SenML payload received at `received`.
pub fn decode(payload: &[u8], received: Timestamp) -> Result<Decoded, DecodeError> {
    let json: Json = serde_json::from_slice(payload).map_err(|_| DecodeError::NotJson)?;
    match json {
        Json::Object(map) => decode_object(map, received),
        Json::Array(records) => decode_senml(records, received),
        _ => Err(DecodeError::WrongShape),
    }
}

/// Decodes an ack payload: like [`decode`], names prefixed with `ack.`.
pub fn decode_ack(payload: &[u8], received: Timestamp) -> Result<Decoded, DecodeError> {
    let mut decoded = decode(payload, received)?;
    for r in &mut decoded.readings {
        r.name.insert_str(0, "ack.");
    }
    Ok(decoded)
}

/// Accepts a device timestamp only within [`MAX_CLOCK_SKEW_MS`] of `received`.
pub fn plausible(ts: Timestamp, received: Timestamp) -> Option<Timestamp> {
    (ts.as_millis().abs_diff(received.as_millis()) <= MAX_CLOCK_SKEW_MS as u64).then_some(ts)
}

fn decode_object(
    map: serde_json::Map<String, Json>,
    received: Timestamp,
) -> Result<Decoded, DecodeError> {
    let mut readings = Vec::with_capacity(map.len().min(MAX_READINGS));
    let mut ts = None;
    for (key, value) in map {
        if key == "ts" {
            ts = match &value {
                Json::String(s) => Timestamp::parse_rfc3339(s),
                Json::Number(n) => n.as_i64().map(Timestamp::from_millis),
                _ => None,
            }
            .and_then(|t| plausible(t, received));
            continue;
        }
        flatten(key, value, &mut readings)?;
    }
    Ok(Decoded { ts, readings })
}

fn flatten(name: String, value: Json, out: &mut Vec<Reading>) -> Result<(), DecodeError> {
    if name.len() > MAX_NAME_LEN {
        return Err(DecodeError::NameTooLong);
    }
    let value = match value {
        Json::Null => return Ok(()),
        Json::Bool(b) => Value::Bool(b),
        Json::Number(n) => match n.as_f64() {
            Some(f) if f.is_finite() => Value::Number(f),
            _ => return Ok(()),
        },
        Json::String(s) => Value::Text(s),
        Json::Object(map) => {
            for (k, v) in map {
                flatten(format!("{name}.{k}"), v, out)?;
            }
            return Ok(());
        }
        Json::Array(items) => {
            for (i, v) in items.into_iter().enumerate() {
                flatten(format!("{name}.{i}"), v, out)?;
            }
            return Ok(());
        }
    };
    if out.len() >= MAX_READINGS {
        return Err(DecodeError::TooManyReadings);
    }
    out.push(Reading {
        name,
        value,
        unit: None,
    });
    Ok(())
}

fn decode_senml(records: Vec<Json>, received: Timestamp) -> Result<Decoded, DecodeError> {
    if records.len() > MAX_READINGS {
        return Err(DecodeError::TooManyReadings);
    }
    let mut base_name = String::new();
    let mut base_time = 0.0f64;
    let mut base_unit: Option<String> = None;
    let mut base_value = 0.0f64;
    let mut first_time: Option<f64> = None;
    let mut readings = Vec::with_capacity(records.len());
    for (i, record) in records.into_iter().enumerate() {
        let Json::Object(rec) = record else {
            return Err(DecodeError::SenmlRecord(i));
        };
        if let Some(bn) = rec.get("bn").and_then(Json::as_str) {
            base_name = bn.to_owned();
        }
        if let Some(bt) = rec.get("bt").and_then(Json::as_f64) {
            base_time = bt;
        }
        if let Some(bu) = rec.get("bu").and_then(Json::as_str) {
            base_unit = Some(bu.to_owned());
        }
        if let Some(bv) = rec.get("bv").and_then(Json::as_f64) {
            base_value = bv;
        }
        let name = match rec.get("n").and_then(Json::as_str) {
            Some(n) => format!("{base_name}{n}"),
            None if !base_name.is_empty() => base_name.clone(),
            None => return Err(DecodeError::SenmlNoName(i)),
        };
        if name.len() > MAX_NAME_LEN {
            return Err(DecodeError::NameTooLong);
        }
        let value = if let Some(v) = rec.get("v").and_then(Json::as_f64) {
            Value::Number(base_value + v)
        } else if let Some(s) = rec.get("s").and_then(Json::as_f64) {
            Value::Number(s)
        } else if let Some(vs) = rec.get("vs").and_then(Json::as_str) {
            Value::Text(vs.to_owned())
        } else if let Some(vd) = rec.get("vd").and_then(Json::as_str) {
            Value::Text(vd.to_owned())
        } else if let Some(vb) = rec.get("vb").and_then(Json::as_bool) {
            Value::Bool(vb)
        } else if rec.contains_key("bv") && !rec.contains_key("n") {
            // A base-only record with a base value and no name of its own: nothing to report.
            continue;
        } else if !rec.contains_key("n") && (rec.contains_key("bn") || rec.contains_key("bt")) {
            // A pure base record.
            continue;
        } else {
            return Err(DecodeError::SenmlNoValue(i));
        };
        let unit = rec
            .get("u")
            .and_then(Json::as_str)
            .map(str::to_owned)
            .or_else(|| base_unit.clone());
        let t = base_time + rec.get("t").and_then(Json::as_f64).unwrap_or(0.0);
        first_time.get_or_insert(t);
        readings.push(Reading { name, value, unit });
    }
    let ts = first_time
        .and_then(|t| senml_time(t, received))
        .and_then(|t| plausible(t, received));
    Ok(Decoded { ts, readings })
}

/// Resolves a SenML time (seconds) to a timestamp; small values are relative to `received`.
fn senml_time(t: f64, received: Timestamp) -> Option<Timestamp> {
    if !t.is_finite() {
        return None;
    }
    let ms = if t.abs() < SENML_RELATIVE_LIMIT {
        received.as_millis() as f64 + t * 1000.0
    } else {
        t * 1000.0
    };
    // Out-of-range values saturate in `as`; `plausible` then rejects them.
    Some(Timestamp::from_millis(ms as i64))
}

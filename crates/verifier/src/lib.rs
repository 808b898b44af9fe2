//! The device side of the citysec command gateway: checks that a command payload was signed
//! by the gateway's Ed25519 key, is meant for this device, carries a counter above the last
//! one this device accepted (no replays), and has not expired (no stale commands).
//!
//! `no_std`, no allocation, and no dependency on the rest of citysec, so an actuator vendor
//! can embed it as is. The simulator's actuators use it.
//!
//! # Wire format
//!
//! A command is one JSON object whose members come in a fixed order, the signature last:
//!
//! ```text
//! {"t":"citysec.cmd.v1","device":"<id>","counter":<u64>,"expires_at":<unix ms>, ...,"sig":"<128 hex>"}
//! ```
//!
//! The signature covers every byte before `,"sig":"`. The members in between (`id`, `action`,
//! `params`, ...) are for the device's application, which parses the payload as ordinary
//! JSON once [`Verifier::check`] accepted it. Device ids are `[A-Za-z0-9._-]`, so the fixed
//! prefix never needs JSON escapes and is parsed here byte by byte.
//!
//! A device persists [`Verifier::last_counter`] across restarts (flash, EEPROM), or at
//! least refuses commands until the gateway's clock-bound expiry has passed for anything it
//! may have seen.

#![no_std]
#![forbid(unsafe_code)]

use core::fmt;

use ed25519_dalek::{Signature, VerifyingKey};

/// The value of the `t` member: the format and its version.
pub const FORMAT: &str = "citysec.cmd.v1";
/// What a payload starts with, up to the device id.
pub const PREFIX: &str = "{\"t\":\"citysec.cmd.v1\",\"device\":\"";
/// What separates the signed part from the signature.
pub const SIG_MARKER: &str = ",\"sig\":\"";
/// Length of the signature member at the end: `,"sig":"` + 128 hex digits + `"}`.
pub const SIG_SUFFIX_LEN: usize = SIG_MARKER.len() + 128 + 2;
/// The longest device id (as in citysec's `DeviceId`).
pub const MAX_DEVICE_ID_LEN: usize = 64;

/// Why a command was refused. `Display` gives a short lowercase reason a device can put in
/// its acknowledgement; [`Refusal::code`] a stable machine-readable name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The public key given to [`Verifier::new`] is not a valid Ed25519 key.
    BadKey,
    /// The payload does not have the command format.
    Malformed(&'static str),
    /// The signature does not verify with the gateway's key: forged or tampered.
    BadSignature,
    /// Signed by the gateway, but for another device.
    WrongDevice,
    /// The counter is not above the last accepted one: a replay (or a reordering).
    Replayed { counter: u64, last: u64 },
    /// The command's expiry has passed: a stale command held back and sent later.
    Expired { expires_at_ms: u64, now_ms: u64 },
}

impl Refusal {
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::BadKey => "bad_key",
            Refusal::Malformed(_) => "malformed",
            Refusal::BadSignature => "bad_signature",
            Refusal::WrongDevice => "wrong_device",
            Refusal::Replayed { .. } => "replayed",
            Refusal::Expired { .. } => "expired",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::BadKey => f.write_str("the gateway public key is invalid"),
            Refusal::Malformed(what) => write!(f, "malformed command: {what}"),
            Refusal::BadSignature => f.write_str("bad signature"),
            Refusal::WrongDevice => f.write_str("command is for another device"),
            Refusal::Replayed { counter, last } => write!(
                f,
                "replayed command: counter {counter} is not above the last accepted {last}"
            ),
            Refusal::Expired {
                expires_at_ms,
                now_ms,
            } => write!(
                f,
                "stale command: expired at {expires_at_ms} ms, now {now_ms} ms"
            ),
        }
    }
}

/// The fixed fields of a command payload, read without checking the signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Envelope<'p> {
    pub device: &'p str,
    pub counter: u64,
    pub expires_at_ms: u64,
    /// The bytes the signature covers.
    pub signed: &'p [u8],
    pub signature: [u8; 64],
}

/// A command that passed every check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked<'p> {
    pub counter: u64,
    pub expires_at_ms: u64,
    /// The whole payload, now trustworthy, for the application to parse.
    pub payload: &'p [u8],
}

/// One device's verifier: the gateway's public key and the last counter accepted.
#[derive(Debug, Clone)]
pub struct Verifier {
    key: VerifyingKey,
    last_counter: u64,
}

impl Verifier {
    /// A verifier for the gateway key `public_key` that has accepted counters up to
    /// `last_counter` (0 for a fresh device).
    pub fn new(public_key: &[u8; 32], last_counter: u64) -> Result<Verifier, Refusal> {
        let key = VerifyingKey::from_bytes(public_key).map_err(|_| Refusal::BadKey)?;
        Ok(Verifier { key, last_counter })
    }

    /// The highest counter accepted so far; persist it.
    pub fn last_counter(&self) -> u64 {
        self.last_counter
    }

    /// Checks a command for device `device_id` at the device's time `now_ms` (Unix
    /// milliseconds). On success the counter is remembered, so the same payload is refused
    /// the next time; on refusal nothing changes.
    ///
    /// The order of checks: format, signature, device, counter, expiry.
    pub fn check<'p>(
        &mut self,
        device_id: &str,
        payload: &'p [u8],
        now_ms: u64,
    ) -> Result<Checked<'p>, Refusal> {
        let envelope = parse(payload)?;
        let signature = Signature::from_bytes(&envelope.signature);
        self.key
            .verify_strict(envelope.signed, &signature)
            .map_err(|_| Refusal::BadSignature)?;
        if envelope.device != device_id {
            return Err(Refusal::WrongDevice);
        }
        if envelope.counter <= self.last_counter {
            return Err(Refusal::Replayed {
                counter: envelope.counter,
                last: self.last_counter,
            });
        }
        if now_ms >= envelope.expires_at_ms {
            return Err(Refusal::Expired {
                expires_at_ms: envelope.expires_at_ms,
                now_ms,
            });
        }
        self.last_counter = envelope.counter;
        Ok(Checked {
            counter: envelope.counter,
            expires_at_ms: envelope.expires_at_ms,
            payload,
        })
    }
}

/// Reads the fixed fields and the signature of a payload without verifying anything.
pub fn parse(payload: &[u8]) -> Result<Envelope<'_>, Refusal> {
    if payload.len() < PREFIX.len() + SIG_SUFFIX_LEN {
        return Err(Refusal::Malformed("too short"));
    }
    let split = payload.len() - SIG_SUFFIX_LEN;
    let (signed, suffix) = payload.split_at(split);
    let hex = suffix
        .strip_prefix(SIG_MARKER.as_bytes())
        .and_then(|rest| rest.strip_suffix(b"\"}"))
        .ok_or(Refusal::Malformed("the signature must be the last member"))?;
    let mut signature = [0u8; 64];
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        signature[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }

    let rest = signed
        .strip_prefix(PREFIX.as_bytes())
        .ok_or(Refusal::Malformed("unknown format"))?;
    let end = rest
        .iter()
        .position(|&b| b == b'"')
        .ok_or(Refusal::Malformed("unterminated device id"))?;
    let device = &rest[..end];
    if device.is_empty()
        || device.len() > MAX_DEVICE_ID_LEN
        || !device
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(Refusal::Malformed("bad device id"));
    }
    // Only ASCII was accepted above, so this cannot fail.
    let device = core::str::from_utf8(device).map_err(|_| Refusal::Malformed("bad device id"))?;
    let rest = rest[end..]
        .strip_prefix(b"\",\"counter\":")
        .ok_or(Refusal::Malformed("counter must follow the device"))?;
    let (counter, rest) = number(rest)?;
    let rest = rest
        .strip_prefix(b",\"expires_at\":")
        .ok_or(Refusal::Malformed("expires_at must follow the counter"))?;
    let (expires_at_ms, rest) = number(rest)?;
    if !matches!(rest.first(), Some(b',' | b'}')) {
        return Err(Refusal::Malformed("bad expires_at"));
    }
    Ok(Envelope {
        device,
        counter,
        expires_at_ms,
        signed,
        signature,
    })
}

fn nibble(b: u8) -> Result<u8, Refusal> {
    match b {
        b'0'..=b'9' => Ok(b - b'0'),
        b'a'..=b'f' => Ok(b - b'a' + 10),
        _ => Err(Refusal::Malformed("the signature must be lowercase hex")),
    }
}

/// A decimal `u64` without sign or leading zeros, and what follows it.
fn number(text: &[u8]) -> Result<(u64, &[u8]), Refusal> {
    let digits = text.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || (digits > 1 && text[0] == b'0') {
        return Err(Refusal::Malformed("bad number"));
    }
    let mut value: u64 = 0;
    for &b in &text[..digits] {
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(b - b'0')))
            .ok_or(Refusal::Malformed("number out of range"))?;
    }
    Ok((value, &text[digits..]))
}

#[cfg(test)]
mod tests;

//! Values seen while walking object paths, and the comparison rules of the reference
//! matcher (stix2-matcher): which type pairs compare, how strings compare with binary
//! values, how timestamps in JSON meet `t'...'` literals.

use std::cmp::Ordering;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde_json::Value;

use crate::time::Timestamp;

/// A compiled literal.
#[derive(Debug, Clone, PartialEq)]
pub enum Lit {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Ts(i64),
    Bytes(Vec<u8>),
}

/// A value reached by an object path.
#[derive(Debug, Clone)]
pub enum Val<'a> {
    Json(&'a Value),
    /// decoded `*_hex` / `*_bin` property
    Bytes(Vec<u8>),
    /// dereferenced `*_refs` list
    Objs(Vec<&'a Value>),
}

/// A scalar view of a value for comparisons.
#[derive(Debug, Clone, Copy)]
pub enum Scalar<'v> {
    Str(&'v str),
    Int(i64),
    Float(f64),
    Bool(bool),
    Ts(i64),
    Bytes(&'v [u8]),
    Other,
}

impl<'a> Val<'a> {
    pub fn scalar(&self) -> Scalar<'_> {
        match self {
            Val::Json(v) => match v {
                Value::String(s) => Scalar::Str(s),
                Value::Bool(b) => Scalar::Bool(*b),
                Value::Number(n) => {
                    if let Some(i) = n.as_i64() {
                        Scalar::Int(i)
                    } else if n.is_u64() || n.is_f64() {
                        n.as_f64().map_or(Scalar::Other, Scalar::Float)
                    } else {
                        Scalar::Other
                    }
                }
                _ => Scalar::Other,
            },
            Val::Bytes(b) => Scalar::Bytes(b),
            Val::Objs(_) => Scalar::Other,
        }
    }
}

impl Lit {
    pub fn scalar(&self) -> Scalar<'_> {
        match self {
            Lit::Str(s) => Scalar::Str(s),
            Lit::Int(i) => Scalar::Int(*i),
            Lit::Float(f) => Scalar::Float(*f),
            Lit::Bool(b) => Scalar::Bool(*b),
            Lit::Ts(t) => Scalar::Ts(*t),
            Lit::Bytes(b) => Scalar::Bytes(b),
        }
    }
}

/// JSON strings meet timestamp literals as timestamps. `None`: the string is not a
/// timestamp (the reference matcher raises an error there; we treat it as incomparable).
pub fn coerce_ts<'v>(v: Scalar<'v>, lit_is_ts: bool) -> Scalar<'v> {
    match v {
        Scalar::Str(s) if lit_is_ts => match Timestamp::parse(s).and_then(|t| t.micros()) {
            Some(us) => Scalar::Ts(us),
            None => Scalar::Other,
        },
        other => other,
    }
}

fn latin1(s: &str) -> Option<Vec<u8>> {
    s.chars().map(|c| u8::try_from(u32::from(c)).ok()).collect()
}

fn int_float_cmp(i: i64, f: f64) -> Option<Ordering> {
    if f.is_nan() {
        return None;
    }
    let fi = i as f64;
    match fi.partial_cmp(&f)? {
        Ordering::Equal => {
            // exact comparison near 2^53
            if f >= 9.223_372_036_854_776e18 {
                Some(Ordering::Less)
            } else if f < -9.223_372_036_854_776e18 {
                Some(Ordering::Greater)
            } else {
                Some(i.cmp(&(f as i64)))
            }
        }
        o => Some(o),
    }
}

/// Equality table (symmetric). `None`: the types do not compare (so not equal).
pub fn py_eq(a: Scalar<'_>, b: Scalar<'_>) -> Option<bool> {
    use Scalar::*;
    Some(match (a, b) {
        (Int(x), Int(y)) => x == y,
        (Int(x), Float(y)) | (Float(y), Int(x)) => int_float_cmp(x, y) == Some(Ordering::Equal),
        (Float(x), Float(y)) => x == y,
        (Bytes(x), Bytes(y)) => x == y,
        (Bytes(x), Str(s)) | (Str(s), Bytes(x)) => latin1(s).is_some_and(|l| l == x),
        (Str(x), Str(y)) => x == y,
        (Bool(x), Bool(y)) => x == y,
        (Ts(x), Ts(y)) => x == y,
        _ => return None,
    })
}

/// Order table. `Err(())`: types do not order (result false, NOT not applied);
/// `Ok(None)`: a binary/string pair the spec says compares false (NOT applies).
#[allow(clippy::result_unit_err)]
pub fn py_cmp(a: Scalar<'_>, b: Scalar<'_>) -> Result<Option<Ordering>, ()> {
    use Scalar::*;
    Ok(match (a, b) {
        (Int(x), Int(y)) => Some(x.cmp(&y)),
        (Int(x), Float(y)) => int_float_cmp(x, y),
        (Float(x), Int(y)) => int_float_cmp(y, x).map(Ordering::reverse),
        (Float(x), Float(y)) => x.partial_cmp(&y),
        (Bytes(x), Bytes(y)) => Some(x.cmp(y)),
        (Bytes(x), Str(s)) => latin1(s).map(|l| x.cmp(&l[..])),
        (Str(s), Bytes(y)) => latin1(s).map(|l| l[..].cmp(y)),
        (Str(x), Str(y)) => Some(x.cmp(y)),
        (Ts(x), Ts(y)) => Some(x.cmp(&y)),
        _ => return Err(()),
    })
}

/// Python set membership: hashing equality, where `True == 1 == 1.0`.
pub fn py_set_eq(a: Scalar<'_>, b: Scalar<'_>) -> bool {
    use Scalar::*;
    let num = |s: Scalar<'_>| match s {
        Int(i) => Some(i as f64),
        Float(f) => Some(f),
        Bool(b) => Some(if b { 1.0 } else { 0.0 }),
        _ => None,
    };
    match (a, b) {
        (Int(x), Int(y)) => x == y,
        (Str(x), Str(y)) => x == y,
        (Bytes(x), Bytes(y)) => x == y,
        (Ts(x), Ts(y)) => x == y,
        _ => match (num(a), num(b)) {
            (Some(x), Some(y)) => x == y,
            _ => false,
        },
    }
}

/// An IPv4 or IPv6 network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Net {
    V4(u32, u8),
    V6(u128, u8),
}

impl Net {
    /// Parses `addr` or `addr/prefix`. With `require_prefix`, a bare address is refused.
    /// IPv4 prefixes must be 1..=32 (as the reference matcher requires), IPv6 0..=128.
    pub fn parse(s: &str, require_prefix: bool) -> Option<Net> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => {
                if p.is_empty() || !p.bytes().all(|c| c.is_ascii_digit()) || p.len() > 3 {
                    return None;
                }
                (a, Some(p.parse::<u8>().ok()?))
            }
            None if require_prefix => return None,
            None => (s, None),
        };
        if let Ok(v4) = addr.parse::<Ipv4Addr>() {
            let p = prefix.unwrap_or(32);
            if !(1..=32).contains(&p) {
                return None;
            }
            return Some(Net::V4(u32::from(v4), p));
        }
        if let Ok(v6) = addr.parse::<Ipv6Addr>() {
            let p = prefix.unwrap_or(128);
            if p > 128 {
                return None;
            }
            return Some(Net::V6(u128::from(v6), p));
        }
        None
    }

    /// Whether `self` (an address or subnet) lies within `container`.
    pub fn within(self, container: Net) -> bool {
        match (self, container) {
            (Net::V4(a, ap), Net::V4(c, cp)) => {
                if cp > ap {
                    return false;
                }
                let mask = if cp == 0 {
                    0
                } else {
                    u32::MAX << (32 - u32::from(cp))
                };
                a & mask == c & mask
            }
            (Net::V6(a, ap), Net::V6(c, cp)) => {
                if cp > ap {
                    return false;
                }
                let mask = if cp == 0 {
                    0
                } else {
                    u128::MAX << (128 - u32::from(cp))
                };
                a & mask == c & mask
            }
            _ => false,
        }
    }
}

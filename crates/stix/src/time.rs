//! STIX timestamps (`YYYY-MM-DDTHH:MM:SS[.s+]Z`, always UTC), kept as text plus
//! microseconds since the Unix epoch (the precision the reference matcher compares at).

use std::fmt;

/// A STIX timestamp. `micros` is `None` when the text is well-formed but not a real
/// calendar instant (e.g. February 30th or second 60).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timestamp {
    text: String,
    micros: Option<i64>,
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// Formats microseconds since the epoch as a STIX timestamp with millisecond precision
/// when possible, microseconds otherwise.
pub fn format_micros(us: i64) -> String {
    let secs = us.div_euclid(1_000_000);
    let frac = us.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // civil_from_days
    let z = days + 719468;
    let era = if z >= 0 { z } else { z - 146096 } / 146097;
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let (h, mi, s) = (sod / 3600, sod % 3600 / 60, sod % 60);
    if frac % 1000 == 0 {
        format!(
            "{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{:03}Z",
            frac / 1000
        )
    } else {
        format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{frac:06}Z")
    }
}

impl Timestamp {
    /// Parses the strict STIX form. Returns `None` when the text does not have that form.
    pub fn parse(text: &str) -> Option<Timestamp> {
        let b = text.as_bytes();
        if b.len() < 20 || b.len() > 64 {
            return None;
        }
        let num = |r: std::ops::Range<usize>| -> Option<i64> {
            let s = b.get(r)?;
            if !s.iter().all(u8::is_ascii_digit) {
                return None;
            }
            std::str::from_utf8(s).ok()?.parse().ok()
        };
        let y = num(0..4)?;
        let mo = num(5..7)?;
        let d = num(8..10)?;
        let h = num(11..13)?;
        let mi = num(14..16)?;
        let s = num(17..19)?;
        if b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
            return None;
        }
        let mut frac_us = 0i64;
        let rest = &b[19..];
        match rest {
            [b'Z'] => {}
            [b'.', digits @ .., b'Z']
                if !digits.is_empty() && digits.iter().all(u8::is_ascii_digit) =>
            {
                for k in 0..6 {
                    frac_us = frac_us * 10 + digits.get(k).map_or(0, |c| i64::from(c - b'0'));
                }
            }
            _ => return None,
        }
        let valid = (1..=12).contains(&mo)
            && d >= 1
            && d <= days_in_month(y, mo)
            && h <= 23
            && mi <= 59
            && s <= 59;
        let micros = valid.then(|| {
            ((days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s) * 1_000_000) + frac_us
        });
        Some(Timestamp {
            text: text.to_owned(),
            micros,
        })
    }

    /// The timestamp as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Microseconds since the epoch (truncated), `None` if not a real instant.
    pub fn micros(&self) -> Option<i64> {
        self.micros
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

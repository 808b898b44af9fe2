//! CAP date-times: `YYYY-MM-DDThh:mm:ss` plus an explicit offset `+hh:mm` or `-hh:mm`.
//! The standard forbids the `Z` designator (UTC is written `-00:00`) and the schema allows
//! no fractional seconds.

use std::fmt;

use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time};

/// A point in time with the offset it is written in, to the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DateTime {
    unix: i64,
    offset_minutes: i16,
}

/// The range of the four-digit years CAP can write.
const MIN_UNIX: i64 = -62_167_219_200; // 0000-01-01T00:00:00Z
const MAX_UNIX: i64 = 253_402_300_799; // 9999-12-31T23:59:59Z

impl DateTime {
    /// `unix` seconds written in UTC (`-00:00`).
    pub fn from_unix(unix: i64) -> Option<DateTime> {
        DateTime::with_offset(unix, 0)
    }

    /// `unix` seconds written at an offset of `offset_minutes` (at most ±23:59), as long as
    /// the local year has four digits.
    pub fn with_offset(unix: i64, offset_minutes: i16) -> Option<DateTime> {
        if offset_minutes.unsigned_abs() >= 24 * 60 {
            return None;
        }
        let local = unix.checked_add(i64::from(offset_minutes) * 60)?;
        if !(MIN_UNIX..=MAX_UNIX).contains(&local) {
            return None;
        }
        Some(DateTime {
            unix,
            offset_minutes,
        })
    }

    /// Seconds since the Unix epoch.
    pub fn unix(self) -> i64 {
        self.unix
    }

    /// The offset from UTC it is written in, in minutes.
    pub fn offset_minutes(self) -> i16 {
        self.offset_minutes
    }

    /// Parses the CAP form; `None` for anything else (including `Z` and fractions).
    pub fn parse(text: &str) -> Option<DateTime> {
        let b = text.as_bytes();
        if b.len() != 25 {
            return None;
        }
        let digits = |range: std::ops::Range<usize>| -> Option<u32> {
            let mut n = 0u32;
            for &c in &b[range] {
                if !c.is_ascii_digit() {
                    return None;
                }
                n = n * 10 + u32::from(c - b'0');
            }
            Some(n)
        };
        let punct = [
            (4, b'-'),
            (7, b'-'),
            (10, b'T'),
            (13, b':'),
            (16, b':'),
            (22, b':'),
        ];
        if punct.iter().any(|&(i, c)| b[i] != c) {
            return None;
        }
        let sign: i16 = match b[19] {
            b'+' => 1,
            b'-' => -1,
            _ => return None,
        };
        let year = i32::try_from(digits(0..4)?).ok()?;
        let month = Month::try_from(u8::try_from(digits(5..7)?).ok()?).ok()?;
        let day = u8::try_from(digits(8..10)?).ok()?;
        let date = Date::from_calendar_date(year, month, day).ok()?;
        let hour = u8::try_from(digits(11..13)?).ok()?;
        let minute = u8::try_from(digits(14..16)?).ok()?;
        let second = u8::try_from(digits(17..19)?).ok()?;
        let time = Time::from_hms(hour, minute, second).ok()?;
        let off_h = i16::try_from(digits(20..22)?).ok()?;
        let off_m = i16::try_from(digits(23..25)?).ok()?;
        if off_h > 23 || off_m > 59 {
            return None;
        }
        let offset_minutes = sign * (off_h * 60 + off_m);
        let local = PrimitiveDateTime::new(date, time)
            .assume_utc()
            .unix_timestamp();
        DateTime::with_offset(local - i64::from(offset_minutes) * 60, offset_minutes)
    }
}

impl fmt::Display for DateTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let local = self.unix + i64::from(self.offset_minutes) * 60;
        // The constructor keeps `local` within the four-digit years.
        let dt = OffsetDateTime::from_unix_timestamp(local).unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let sign = if self.offset_minutes > 0 { '+' } else { '-' };
        let off = self.offset_minutes.unsigned_abs();
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{sign}{:02}:{:02}",
            dt.year(),
            u8::from(dt.month()),
            dt.day(),
            dt.hour(),
            dt.minute(),
            dt.second(),
            off / 60,
            off % 60
        )
    }
}

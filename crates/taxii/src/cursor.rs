//! The stateless `next` cursor: the position of the last record of a page in the order
//! pages are read, `(date_added, id, version)`. The server keeps no session: any server
//! instance (and the same one after a restart) continues from a cursor, and because the
//! position is a total order key, records added in the same instant are neither lost nor
//! repeated across pages.
//!
//! The text form is unpadded base64url of `v1.<date_added_us>.<version_us>.<id>`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// A position in `(date_added, id, version)` order; a page continues strictly after it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    /// `date_added` in microseconds since the Unix epoch.
    pub date_added_us: i64,
    /// The object id.
    pub id: String,
    /// The object version (`modified`) in microseconds since the Unix epoch.
    pub version_us: i64,
}

/// Why a `next` value is not a cursor of this server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid next cursor")]
pub struct CursorError;

/// The longest cursor text accepted.
const MAX_CURSOR_LEN: usize = 512;

impl Cursor {
    /// The text form handed to clients as `next`.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!(
            "v1.{}.{}.{}",
            self.date_added_us, self.version_us, self.id
        ))
    }

    /// Parses a `next` value; anything this server did not produce is an error.
    pub fn decode(text: &str) -> Result<Cursor, CursorError> {
        if text.is_empty() || text.len() > MAX_CURSOR_LEN {
            return Err(CursorError);
        }
        let raw = URL_SAFE_NO_PAD.decode(text).map_err(|_| CursorError)?;
        let raw = String::from_utf8(raw).map_err(|_| CursorError)?;
        let rest = raw.strip_prefix("v1.").ok_or(CursorError)?;
        let (date_added, rest) = rest.split_once('.').ok_or(CursorError)?;
        let (version, id) = rest.split_once('.').ok_or(CursorError)?;
        let date_added_us = parse_int(date_added)?;
        let version_us = parse_int(version)?;
        if !stix::object::is_identifier(id, None) {
            return Err(CursorError);
        }
        Ok(Cursor {
            date_added_us,
            id: id.to_owned(),
            version_us,
        })
    }
}

fn parse_int(s: &str) -> Result<i64, CursorError> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    if digits.is_empty() || digits.len() > 19 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CursorError);
    }
    s.parse().map_err(|_| CursorError)
}

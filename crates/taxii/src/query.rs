//! The request filters of TAXII 2.1 section 3.4 (`added_after`, `limit`, `next`,
//! `match[id]`, `match[type]`, `match[version]`, `match[spec_version]`) parsed from a
//! raw query string, and the [`Query`] a backend answers.
//!
//! Parsing is strict about the filters it knows (a malformed value is an error the server
//! answers with `400`) and ignores parameters it does not know, as the specification lets
//! servers do with unsupported filters.

use stix::object::tlp::Tlp;

use crate::cursor::Cursor;

/// The most values one `match[...]` filter may list.
pub const MAX_MATCH_VALUES: usize = 100;
/// The longest query string accepted.
pub const MAX_QUERY_LEN: usize = 16 * 1024;

/// Which versions of an object to return (`match[version]`, default `last`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionMatch {
    pub first: bool,
    pub last: bool,
    pub all: bool,
    /// Specific versions, in microseconds since the epoch.
    pub at: Vec<i64>,
}

impl Default for VersionMatch {
    fn default() -> VersionMatch {
        VersionMatch {
            first: false,
            last: true,
            all: false,
            at: Vec::new(),
        }
    }
}

/// The filters of one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters {
    /// Only records added strictly after this instant (microseconds).
    pub added_after: Option<i64>,
    pub limit: Option<usize>,
    pub next: Option<Cursor>,
    pub ids: Vec<String>,
    pub types: Vec<String>,
    pub versions: VersionMatch,
    /// Empty means the latest spec version only (`2.1`).
    pub spec_versions: Vec<String>,
}

/// A filter the client got wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FilterError(pub String);

fn bad(msg: impl Into<String>) -> FilterError {
    FilterError(msg.into())
}

/// Which filters an endpoint accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// objects GET and manifest: every filter.
    Objects,
    /// object GET: `added_after`, `limit`, `next`, `match[version]`, `match[spec_version]`.
    Object,
    /// object DELETE: `match[version]`, `match[spec_version]`.
    Delete,
    /// versions: `added_after`, `limit`, `next`, `match[spec_version]`.
    Versions,
}

/// Decodes `%XX` escapes and `+` (as a space); `None` on a broken escape or non-UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Parses a TAXII timestamp (RFC 3339 in UTC, the STIX form) into microseconds.
pub fn parse_timestamp(s: &str) -> Option<i64> {
    stix::time::Timestamp::parse(s).and_then(|t| t.micros())
}

fn values(v: &str, what: &str) -> Result<Vec<String>, FilterError> {
    let list: Vec<String> = v.split(',').map(|s| s.trim().to_owned()).collect();
    if list.len() > MAX_MATCH_VALUES {
        return Err(bad(format!(
            "{what} lists more than {MAX_MATCH_VALUES} values"
        )));
    }
    if list.iter().any(String::is_empty) {
        return Err(bad(format!("{what} has an empty value")));
    }
    Ok(list)
}

fn valid_type(t: &str) -> bool {
    (1..=250).contains(&t.len())
        && t.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
}

impl Filters {
    /// Parses the raw query string of a request to `endpoint`.
    pub fn parse(query: Option<&str>, endpoint: Endpoint) -> Result<Filters, FilterError> {
        let mut f = Filters::default();
        let Some(query) = query.filter(|q| !q.is_empty()) else {
            return Ok(f);
        };
        if query.len() > MAX_QUERY_LEN {
            return Err(bad("query string too long"));
        }
        let paging = endpoint != Endpoint::Delete;
        let mut seen_version = false;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let k = percent_decode(k).ok_or_else(|| bad("malformed query string"))?;
            let v = percent_decode(v).ok_or_else(|| bad("malformed query string"))?;
            match k.as_str() {
                "added_after" if paging => {
                    f.added_after =
                        Some(parse_timestamp(&v).ok_or_else(|| {
                            bad(format!("added_after: {v:?} is not a timestamp"))
                        })?);
                }
                "limit" if paging => {
                    let n: usize =
                        v.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                            bad(format!("limit: {v:?} is not a positive integer"))
                        })?;
                    f.limit = Some(n);
                }
                "next" if paging => {
                    f.next = Some(
                        Cursor::decode(&v)
                            .map_err(|_| bad(format!("next: {v:?} is not a valid cursor")))?,
                    );
                }
                "match[id]" if endpoint == Endpoint::Objects => {
                    let ids = values(&v, "match[id]")?;
                    if let Some(id) = ids.iter().find(|i| !stix::object::is_identifier(i, None)) {
                        return Err(bad(format!("match[id]: {id:?} is not a STIX identifier")));
                    }
                    f.ids.extend(ids);
                }
                "match[type]" if endpoint == Endpoint::Objects => {
                    let types = values(&v, "match[type]")?;
                    if let Some(t) = types.iter().find(|t| !valid_type(t)) {
                        return Err(bad(format!("match[type]: {t:?} is not a STIX type")));
                    }
                    f.types.extend(types);
                }
                "match[version]" if endpoint != Endpoint::Versions => {
                    if !seen_version {
                        f.versions = VersionMatch {
                            last: false,
                            ..VersionMatch::default()
                        };
                        seen_version = true;
                    }
                    for item in values(&v, "match[version]")? {
                        match item.as_str() {
                            "first" => f.versions.first = true,
                            "last" => f.versions.last = true,
                            "all" => f.versions.all = true,
                            ts => f.versions.at.push(parse_timestamp(ts).ok_or_else(|| {
                                bad(format!(
                                    "match[version]: {ts:?} is not first, last, all or a timestamp"
                                ))
                            })?),
                        }
                    }
                }
                "match[spec_version]" => {
                    let list = values(&v, "match[spec_version]")?;
                    if let Some(s) = list.iter().find(|s| !matches!(s.as_str(), "2.0" | "2.1")) {
                        return Err(bad(format!(
                            "match[spec_version]: {s:?} is not a STIX version (2.0 or 2.1)"
                        )));
                    }
                    f.spec_versions.extend(list);
                }
                _ => {}
            }
        }
        Ok(f)
    }
}

/// What a backend is asked for: the records of one collection in `(date_added, id,
/// version)` order, after `after`, at most `limit` of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// Only this object (object, versions and delete endpoints).
    pub object_id: Option<String>,
    pub added_after: Option<i64>,
    /// Continue strictly after this position.
    pub after: Option<Cursor>,
    pub limit: usize,
    pub ids: Vec<String>,
    pub types: Vec<String>,
    pub versions: VersionMatch,
    /// Never empty here: the server fills in the default (`2.1`).
    pub spec_versions: Vec<String>,
    /// Only records whose TLP is at most this.
    pub max_tlp: Tlp,
    /// Whether the object bodies are needed (objects) or only the metadata (manifest,
    /// versions).
    pub with_objects: bool,
}

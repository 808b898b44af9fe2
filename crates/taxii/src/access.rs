//! Who may see what: the server's collections with per-partner read and write grants,
//! the authenticated [`Principal`], and TLP 2.0 on what leaves.
//!
//! The rules, in one place:
//! - a collection is visible to a principal who may read or write it; anonymous
//!   principals see only collections marked `public`, and only for reading;
//! - `TLP:RED` never leaves; `TLP:AMBER+STRICT`, `TLP:AMBER`, `TLP:GREEN` and
//!   `TLP:CLEAR` leave only to principals whose clearance is at least that level
//!   (anonymous principals are cleared for `TLP:CLEAR` only);
//! - an object without a TLP marking counts as the server's `unmarked` level.

use serde_json::{Map, Value};
use stix::object::tlp::{self, Tlp};

/// Credentials a request presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    None,
    Basic {
        user: String,
        password: String,
    },
    Bearer(String),
    /// The lowercase hex SHA-256 of the DER client certificate the TLS layer verified.
    ClientCertificate(String),
}

/// A request extension the TLS layer adds when the client presented a certificate: the
/// lowercase hex SHA-256 of its DER form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate(pub String);

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The partner's name (`anonymous` for an unauthenticated request).
    pub name: String,
    pub anonymous: bool,
    /// The most restrictive TLP level this principal may receive (never `Red`).
    pub clearance: Tlp,
}

impl Principal {
    /// The unauthenticated principal.
    pub fn anonymous() -> Principal {
        Principal {
            name: "anonymous".to_owned(),
            anonymous: true,
            clearance: Tlp::Clear,
        }
    }
}

/// One collection and its grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectionConfig {
    /// A UUID.
    pub id: String,
    pub title: String,
    pub description: Option<String>,
    pub alias: Option<String>,
    /// Readable without credentials (and by every partner).
    pub public: bool,
    /// Partner names that may read; `*` is every authenticated partner.
    pub read: Vec<String>,
    /// Partner names that may write; `*` is every authenticated partner.
    pub write: Vec<String>,
}

/// One API root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootConfig {
    /// The path segment, e.g. `city`.
    pub name: String,
    pub title: String,
    pub description: Option<String>,
    pub collections: Vec<CollectionConfig>,
}

/// What the server serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Where the router is mounted, e.g. `/taxii2` (no trailing slash).
    pub base_path: String,
    pub title: String,
    pub description: Option<String>,
    pub contact: Option<String>,
    /// The default API root's name, if any.
    pub default_root: Option<String>,
    pub roots: Vec<RootConfig>,
    /// The most records one page holds (a larger `limit` is lowered to it).
    pub max_page_size: usize,
    /// The largest request body accepted, in bytes (the API roots' `max_content_length`).
    pub max_body_bytes: usize,
    /// The level of objects that carry no TLP marking.
    pub unmarked: Tlp,
}

impl CollectionConfig {
    fn granted(list: &[String], p: &Principal) -> bool {
        !p.anonymous && list.iter().any(|n| n == "*" || *n == p.name)
    }

    pub fn can_read(&self, p: &Principal) -> bool {
        self.public || CollectionConfig::granted(&self.read, p)
    }

    pub fn can_write(&self, p: &Principal) -> bool {
        CollectionConfig::granted(&self.write, p)
    }

    pub fn visible(&self, p: &Principal) -> bool {
        self.can_read(p) || self.can_write(p)
    }
}

impl ServerConfig {
    pub fn root(&self, name: &str) -> Option<&RootConfig> {
        self.roots.iter().find(|r| r.name == name)
    }
}

impl RootConfig {
    pub fn collection(&self, id: &str) -> Option<&CollectionConfig> {
        self.collections
            .iter()
            .find(|c| c.id == id || c.alias.as_deref() == Some(id))
    }
}

/// Whether an object at `level` may be sent to `p`.
pub fn may_leave(level: Tlp, p: &Principal) -> bool {
    level != Tlp::Red && level <= p.clearance
}

/// The TLP level of an object: the most restrictive TLP marking among its
/// `object_marking_refs` and `granular_markings`, or `unmarked` when it has none.
pub fn object_tlp(object: &Map<String, Value>, unmarked: Tlp) -> Tlp {
    let mut level: Option<Tlp> = None;
    let mut see = |id: &str| {
        if let Some(l) = tlp::level(id) {
            level = Some(level.map_or(l, |m| m.max(l)));
        }
    };
    if let Some(refs) = object.get("object_marking_refs").and_then(Value::as_array) {
        refs.iter().filter_map(Value::as_str).for_each(&mut see);
    }
    if let Some(g) = object.get("granular_markings").and_then(Value::as_array) {
        g.iter()
            .filter_map(|m| m.get("marking_ref").and_then(Value::as_str))
            .for_each(&mut see);
    }
    level.unwrap_or(unmarked)
}

/// Parses a TLP level name as configs write it: `clear`, `green`, `amber`,
/// `amber+strict`, `red` (TLP 1.0's `white` counts as `clear`).
pub fn parse_tlp(s: &str) -> Option<Tlp> {
    Some(match s.to_ascii_lowercase().trim_start_matches("tlp:") {
        "clear" | "white" => Tlp::Clear,
        "green" => Tlp::Green,
        "amber" => Tlp::Amber,
        "amber+strict" => Tlp::AmberStrict,
        "red" => Tlp::Red,
        _ => return None,
    })
}

/// The level as a small integer (0 = CLEAR .. 4 = RED), for storage and indexes.
pub fn tlp_rank(level: Tlp) -> u8 {
    match level {
        Tlp::Clear => 0,
        Tlp::Green => 1,
        Tlp::Amber => 2,
        Tlp::AmberStrict => 3,
        Tlp::Red => 4,
    }
}

/// The inverse of [`tlp_rank`] (anything above 4 is RED).
pub fn tlp_from_rank(rank: u8) -> Tlp {
    match rank {
        0 => Tlp::Clear,
        1 => Tlp::Green,
        2 => Tlp::Amber,
        3 => Tlp::AmberStrict,
        _ => Tlp::Red,
    }
}

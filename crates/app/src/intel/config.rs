//! `[taxii]`: the TAXII server's partners and collections, and the partner feeds polled.
//! No partner and no collection exist by default, so nothing is shared until configured.

use anyhow::bail;
use serde::{Deserialize, Serialize};

/// `[taxii]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TaxiiConfig {
    /// Serve TAXII 2.1 at `/taxii2/` of the HTTP listener.
    pub enabled: bool,
    /// The discovery title.
    pub title: String,
    /// The name of the city's STIX identity, which sees what it publishes
    /// (`where_sighted_refs`) and creates it (`created_by_ref`).
    pub identity_name: String,
    pub contact: Option<String>,
    /// The API root's path segment (`/taxii2/<root>/`).
    pub root: String,
    /// The most objects one page holds.
    pub max_page_size: usize,
    /// The largest POST body accepted, in bytes.
    pub max_body_bytes: usize,
    /// How long POST statuses are kept, in hours (at least 24).
    pub status_retention_hours: u32,
    /// The TLP of objects without a TLP marking: `clear`, `green`, `amber`,
    /// `amber+strict` or `red`.
    pub unmarked: String,
    pub partners: Vec<PartnerConfig>,
    pub collections: Vec<CollectionConfig>,
    pub feeds: Vec<FeedConfig>,
}

impl Default for TaxiiConfig {
    fn default() -> TaxiiConfig {
        TaxiiConfig {
            enabled: true,
            title: "citysec TAXII".to_owned(),
            identity_name: "City security operations".to_owned(),
            contact: None,
            root: "city".to_owned(),
            max_page_size: 1000,
            max_body_bytes: 10 * 1024 * 1024,
            status_retention_hours: 24,
            unmarked: "amber".to_owned(),
            partners: Vec::new(),
            collections: Vec::new(),
            feeds: Vec::new(),
        }
    }
}

/// `[[taxii.partners]]`: one identity; at least one credential.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartnerConfig {
    pub name: String,
    /// HTTP Basic: the argon2id PHC hash of the password (`citysec taxii hash-password`).
    pub password_hash: Option<String>,
    /// Bearer: the lowercase hex SHA-256 of the token.
    pub token_sha256: Option<String>,
    /// Client certificate: the lowercase hex SHA-256 of its DER form.
    pub cert_sha256: Option<String>,
    /// The most restrictive TLP this partner may receive: `clear`, `green` (default),
    /// `amber` or `amber+strict`. TLP:RED never leaves.
    #[serde(default = "default_partner_tlp")]
    pub tlp: String,
}

fn default_partner_tlp() -> String {
    "green".to_owned()
}

/// `[[taxii.collections]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectionConfig {
    /// A UUID.
    pub id: String,
    pub title: String,
    pub description: Option<String>,
    pub alias: Option<String>,
    /// Readable without credentials (TLP:CLEAR content only).
    #[serde(default)]
    pub public: bool,
    /// Partner names that may read (`*`: every partner).
    #[serde(default)]
    pub read: Vec<String>,
    /// Partner names that may write (`*`: every partner).
    #[serde(default)]
    pub write: Vec<String>,
    /// The city's sharing collection, where confirmed incidents' sightings and indicators
    /// are published (at most one).
    #[serde(default)]
    pub sharing: bool,
}

/// `[[taxii.feeds]]`: a partner's TAXII 2.1 collection polled for indicators.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedConfig {
    /// The partner's name (named in alerts as the indicator's source).
    pub name: String,
    /// The API root URL, e.g. `https://isac.example/taxii2/api1/`.
    pub api_root: String,
    /// The collection id.
    pub collection: String,
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    /// Seconds between polls.
    #[serde(default = "default_interval")]
    pub interval_s: u64,
}

fn default_interval() -> u64 {
    300
}

fn is_uuid(s: &str) -> bool {
    stix::object::is_identifier(&format!("x-c--{s}"), None)
}

impl TaxiiConfig {
    pub fn unmarked_tlp(&self) -> stix::object::tlp::Tlp {
        taxii::access::parse_tlp(&self.unmarked).unwrap_or(stix::object::tlp::Tlp::Amber)
    }

    /// Checks the section; the error names the offending entry.
    pub fn validate(&self) -> anyhow::Result<()> {
        if taxii::access::parse_tlp(&self.unmarked).is_none() {
            bail!("taxii.unmarked: {:?} is not a TLP level", self.unmarked);
        }
        if self.identity_name.trim().is_empty() {
            bail!("taxii.identity_name must not be empty");
        }
        if self.root.is_empty()
            || !self
                .root
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            bail!(
                "taxii.root: {:?} must be a non-empty path segment (letters, digits, - and _)",
                self.root
            );
        }
        if self.max_page_size == 0 || self.max_page_size > 10_000 {
            bail!("taxii.max_page_size must be between 1 and 10000");
        }
        if self.max_body_bytes < 1024 || self.max_body_bytes > 1024 * 1024 * 1024 {
            bail!("taxii.max_body_bytes must be between 1024 and 1073741824");
        }
        if self.status_retention_hours < 24 {
            bail!("taxii.status_retention_hours must be at least 24");
        }
        let mut names = std::collections::HashSet::new();
        for p in &self.partners {
            let ctx = || format!("taxii.partners {:?}", p.name);
            if p.name.is_empty() || p.name == "*" || p.name == "anonymous" || !names.insert(&p.name)
            {
                bail!(
                    "{}: names must be unique, non-empty, and not * or anonymous",
                    ctx()
                );
            }
            if p.password_hash.is_none() && p.token_sha256.is_none() && p.cert_sha256.is_none() {
                bail!(
                    "{}: needs password_hash, token_sha256 or cert_sha256",
                    ctx()
                );
            }
            if let Some(h) = &p.password_hash
                && !h.starts_with("$argon2")
            {
                bail!(
                    "{}: password_hash must be an argon2 PHC string (citysec taxii hash-password); plain passwords are not accepted",
                    ctx()
                );
            }
            for (what, v) in [
                ("token_sha256", &p.token_sha256),
                ("cert_sha256", &p.cert_sha256),
            ] {
                if let Some(v) = v
                    && (v.len() != 64
                        || !v
                            .bytes()
                            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
                {
                    bail!("{}: {what} must be 64 lowercase hex digits", ctx());
                }
            }
            match taxii::access::parse_tlp(&p.tlp) {
                Some(stix::object::tlp::Tlp::Red) | None => {
                    bail!("{}: tlp must be clear, green, amber or amber+strict", ctx())
                }
                Some(_) => {}
            }
        }
        let mut ids = std::collections::HashSet::new();
        for c in &self.collections {
            if !is_uuid(&c.id) || !ids.insert(&c.id) {
                bail!("taxii.collections {:?}: id must be a unique UUID", c.id);
            }
            for n in c.read.iter().chain(&c.write) {
                if n != "*" && !names.contains(n) {
                    bail!("taxii.collections {:?}: unknown partner {n:?}", c.id);
                }
            }
        }
        if self.collections.iter().filter(|c| c.sharing).count() > 1 {
            bail!("taxii.collections: at most one collection may be the sharing collection");
        }
        let mut feeds = std::collections::HashSet::new();
        for f in &self.feeds {
            if f.name.is_empty() || !feeds.insert(&f.name) {
                bail!(
                    "taxii.feeds {:?}: names must be unique and non-empty",
                    f.name
                );
            }
            if !(f.api_root.starts_with("http://") || f.api_root.starts_with("https://")) {
                bail!("taxii.feeds {:?}: api_root must be an http(s) URL", f.name);
            }
            if f.interval_s == 0 {
                bail!("taxii.feeds {:?}: interval_s must be at least 1", f.name);
            }
            if f.user.is_some() != f.password.is_some() {
                bail!("taxii.feeds {:?}: user and password go together", f.name);
            }
        }
        Ok(())
    }
}

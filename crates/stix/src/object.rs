//! The STIX 2.1 object model as JSON-preserving objects with typed accessors, a table of
//! per-type requirements used for validation, deterministic SCO identifiers (UUIDv5,
//! STIX 2.1 section 2.9) and the TLP 1.0/2.0 marking definitions.
//!
//! Objects keep every property (custom properties and extensions included), so a round
//! trip through [`StixObject`] is lossless.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use thiserror::Error;

use crate::time::Timestamp;

/// A STIX object: any JSON object with a `type`. All properties are kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StixObject(pub Map<String, Value>);

/// Why JSON is not a STIX object at all.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ObjectError {
    #[error("expected a json object")]
    NotAnObject,
    #[error("missing string property 'type'")]
    NoType,
}

/// What kind of object a type is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    Sdo,
    Sro,
    Sco,
    /// language-content, marking-definition, extension-definition
    Meta,
    Bundle,
    /// a type this crate does not know (custom object)
    Custom,
}

/// The STIX Domain Objects.
pub const SDO_TYPES: &[&str] = &[
    "attack-pattern",
    "campaign",
    "course-of-action",
    "grouping",
    "identity",
    "incident",
    "indicator",
    "infrastructure",
    "intrusion-set",
    "location",
    "malware",
    "malware-analysis",
    "note",
    "observed-data",
    "opinion",
    "report",
    "threat-actor",
    "tool",
    "vulnerability",
];

/// The STIX Cyber-observable Objects.
pub const SCO_TYPES: &[&str] = &[
    "artifact",
    "autonomous-system",
    "directory",
    "domain-name",
    "email-addr",
    "email-message",
    "file",
    "ipv4-addr",
    "ipv6-addr",
    "mac-addr",
    "mutex",
    "network-traffic",
    "process",
    "software",
    "url",
    "user-account",
    "windows-registry-key",
    "x509-certificate",
];

/// The category of a type name.
pub fn category(t: &str) -> Category {
    if SDO_TYPES.contains(&t) {
        Category::Sdo
    } else if t == "relationship" || t == "sighting" {
        Category::Sro
    } else if SCO_TYPES.contains(&t) {
        Category::Sco
    } else if matches!(
        t,
        "language-content" | "marking-definition" | "extension-definition"
    ) {
        Category::Meta
    } else if t == "bundle" {
        Category::Bundle
    } else {
        Category::Custom
    }
}

impl StixObject {
    /// Wraps a JSON object that has a string `type`.
    pub fn from_value(v: Value) -> Result<StixObject, ObjectError> {
        match v {
            Value::Object(m) => {
                if !m.get("type").is_some_and(Value::is_string) {
                    return Err(ObjectError::NoType);
                }
                Ok(StixObject(m))
            }
            _ => Err(ObjectError::NotAnObject),
        }
    }
    /// The JSON form (identical to the input, property for property).
    pub fn to_value(&self) -> Value {
        Value::Object(self.0.clone())
    }
    /// `type`.
    pub fn object_type(&self) -> &str {
        self.0.get("type").and_then(Value::as_str).unwrap_or("")
    }
    /// `id`, if present.
    pub fn id(&self) -> Option<&str> {
        self.str("id")
    }
    /// A string property.
    pub fn str(&self, k: &str) -> Option<&str> {
        self.0.get(k).and_then(Value::as_str)
    }
    /// Any property.
    pub fn get(&self, k: &str) -> Option<&Value> {
        self.0.get(k)
    }
    /// `created` as a timestamp.
    pub fn created(&self) -> Option<Timestamp> {
        self.str("created").and_then(Timestamp::parse)
    }
    /// `modified` as a timestamp.
    pub fn modified(&self) -> Option<Timestamp> {
        self.str("modified").and_then(Timestamp::parse)
    }
    /// `object_marking_refs`.
    pub fn marking_refs(&self) -> Vec<&str> {
        self.0
            .get("object_marking_refs")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    }
    /// The category of this object's type.
    pub fn category(&self) -> Category {
        category(self.object_type())
    }
    /// Properties not defined by the specification for this type (custom properties).
    pub fn custom_properties(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter(|k| k.starts_with("x_") || k.starts_with("x-"))
            .map(String::as_str)
            .collect()
    }
}

/// TLP marking definitions (TLP 1.0 from STIX 2.1 section 7.2.1.4, TLP 2.0 from the
/// OASIS TLP 2.0 extension definition).
pub mod tlp {
    /// The TLP 2.0 extension definition.
    pub const TLP2_EXTENSION: &str = "extension-definition--60a3c5c5-0d10-413e-aab3-9e08dde9e88d";
    pub const TLP2_CLEAR: &str = "marking-definition--94868c89-83c2-464b-929b-a1a8aa3c8487";
    pub const TLP2_GREEN: &str = "marking-definition--bab4a63c-aed9-4cf5-a766-dfca5abac2bb";
    pub const TLP2_AMBER: &str = "marking-definition--55d920b0-5e8b-4f79-9ee9-91f868d9b421";
    pub const TLP2_AMBER_STRICT: &str = "marking-definition--939a9414-2ddd-4d32-a0cd-375ea402b003";
    pub const TLP2_RED: &str = "marking-definition--e828b379-4e03-4974-9ac4-e53a884c97c1";
    pub const TLP1_WHITE: &str = "marking-definition--613f2e26-407d-48c7-9eca-b8e91df99dc9";
    pub const TLP1_GREEN: &str = "marking-definition--34098fce-860f-48ae-8e50-ebd3cc5e41da";
    pub const TLP1_AMBER: &str = "marking-definition--f88d31f6-486f-44da-b317-01333bde0b82";
    pub const TLP1_RED: &str = "marking-definition--5e57c739-391a-4eb3-b6be-7d15ca92d5ed";

    /// TLP levels, ordered from least to most restrictive.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    pub enum Tlp {
        Clear,
        Green,
        Amber,
        AmberStrict,
        Red,
    }

    /// The TLP level a marking-definition id stands for (TLP 1.0 WHITE counts as CLEAR).
    pub fn level(marking_id: &str) -> Option<Tlp> {
        Some(match marking_id {
            TLP2_CLEAR | TLP1_WHITE => Tlp::Clear,
            TLP2_GREEN | TLP1_GREEN => Tlp::Green,
            TLP2_AMBER | TLP1_AMBER => Tlp::Amber,
            TLP2_AMBER_STRICT => Tlp::AmberStrict,
            TLP2_RED | TLP1_RED => Tlp::Red,
            _ => return None,
        })
    }

    /// The TLP 2.0 marking-definition id of a level.
    pub fn tlp2_id(level: Tlp) -> &'static str {
        match level {
            Tlp::Clear => TLP2_CLEAR,
            Tlp::Green => TLP2_GREEN,
            Tlp::Amber => TLP2_AMBER,
            Tlp::AmberStrict => TLP2_AMBER_STRICT,
            Tlp::Red => TLP2_RED,
        }
    }
}

// ---------------------------------------------------------------- deterministic ids

/// The namespace of deterministic SCO identifiers (STIX 2.1 section 2.9).
pub const SCO_NAMESPACE: [u8; 16] = [
    0x00, 0xab, 0xed, 0xb4, 0xaa, 0x42, 0x46, 0x6c, 0x9c, 0x01, 0xfe, 0xd2, 0x33, 0x15, 0xa9, 0xb7,
];

/// ID-contributing properties per SCO type (STIX 2.1 section 6).
pub fn id_contributing_properties(t: &str) -> &'static [&'static str] {
    match t {
        "artifact" => &["hashes", "payload_bin"],
        "autonomous-system" => &["number"],
        "directory" => &["path"],
        "domain-name" | "email-addr" | "ipv4-addr" | "ipv6-addr" | "mac-addr" | "url" => &["value"],
        "email-message" => &["from_ref", "subject", "body"],
        "file" => &["hashes", "name", "extensions", "parent_directory_ref"],
        "mutex" => &["name"],
        "network-traffic" => &[
            "start",
            "end",
            "src_ref",
            "dst_ref",
            "src_port",
            "dst_port",
            "protocols",
            "extensions",
        ],
        "software" => &["name", "cpe", "swid", "vendor", "version"],
        "user-account" => &["account_type", "user_id", "account_login"],
        "windows-registry-key" => &["key", "values"],
        "x509-certificate" => &["hashes", "serial_number"],
        _ => &[],
    }
}

/// RFC 4122 version-5 UUID of `name` in `namespace`, formatted.
pub fn uuid_v5(namespace: &[u8; 16], name: &[u8]) -> String {
    let mut h = sha1_smol::Sha1::new();
    h.update(namespace);
    h.update(name);
    let d = h.digest().bytes();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex = crate::codec::hex_encode(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// JSON canonical form (RFC 8785) for the values SCO ids are computed from: sorted keys,
/// no whitespace. Numbers are printed as serde_json prints them, which agrees with
/// RFC 8785 for integers and for the usual floats.
pub fn canonical_json(v: &Value) -> String {
    fn write(v: &Value, out: &mut String) {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort_by(|a, b| a.encode_utf16().cmp(b.encode_utf16()));
                out.push('{');
                for (i, k) in keys.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String((*k).clone()).to_string());
                    out.push(':');
                    write(&m[*k], out);
                }
                out.push('}');
            }
            Value::Array(a) => {
                out.push('[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(x, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut s = String::new();
    write(v, &mut s);
    s
}

fn choose_one_hash(h: &Map<String, Value>) -> Option<Value> {
    for k in ["MD5", "SHA-1", "SHA-256", "SHA-512"] {
        if let Some(v) = h.get(k) {
            return Some(Value::Object(Map::from_iter([(k.to_owned(), v.clone())])));
        }
    }
    h.iter()
        .next()
        .map(|(k, v)| Value::Object(Map::from_iter([(k.clone(), v.clone())])))
}

/// The deterministic identifier of an SCO from its ID-contributing properties, or `None`
/// when the type has none or none are present (the spec then calls for a UUIDv4).
pub fn sco_id(obj: &Map<String, Value>) -> Option<String> {
    let t = obj.get("type")?.as_str()?;
    let mut contrib = Map::new();
    for &k in id_contributing_properties(t) {
        if let Some(v) = obj.get(k) {
            let v = if k == "hashes" {
                choose_one_hash(v.as_object()?)?
            } else {
                v.clone()
            };
            contrib.insert(k.to_owned(), v);
        }
    }
    if contrib.is_empty() {
        return None;
    }
    let name = canonical_json(&Value::Object(contrib));
    Some(format!("{t}--{}", uuid_v5(&SCO_NAMESPACE, name.as_bytes())))
}

// ---------------------------------------------------------------- validation

/// One validation finding, with the JSON path of the offending value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for Issue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

struct V<'a> {
    issues: &'a mut Vec<Issue>,
}

impl V<'_> {
    fn add(&mut self, path: &str, message: impl Into<String>) {
        self.issues.push(Issue {
            path: path.to_owned(),
            message: message.into(),
        });
    }
}

fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 36 {
        return false;
    }
    for (i, &c) in b.iter().enumerate() {
        let ok = match i {
            8 | 13 | 18 | 23 => c == b'-',
            14 => (b'1'..=b'5').contains(&c),
            19 => matches!(c, b'8' | b'9' | b'a' | b'b' | b'A' | b'B'),
            _ => c.is_ascii_hexdigit(),
        };
        if !ok {
            return false;
        }
    }
    true
}

fn valid_type_name(t: &str) -> bool {
    let b = t.as_bytes();
    (3..=250).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
        && !t.contains("--")
}

/// Whether `s` is a STIX identifier, optionally of type `of`.
pub fn is_identifier(s: &str, of: Option<&str>) -> bool {
    match s.split_once("--") {
        Some((t, u)) => valid_type_name(t) && is_uuid(u) && of.is_none_or(|o| o == t),
        None => false,
    }
}

fn valid_timestamp(s: &str) -> bool {
    Timestamp::parse(s).is_some_and(|t| t.micros().is_some())
}

const HASH_ALGOS: &[&str] = &[
    "MD5", "SHA-1", "SHA-256", "SHA-512", "SHA3-256", "SHA3-512", "SSDEEP", "TLSH",
];

const OPINIONS: &[&str] = &[
    "strongly-disagree",
    "disagree",
    "neutral",
    "agree",
    "strongly-agree",
];

/// STIX 2.1 section 10.4, `encryption-algorithm-enum`.
const ENCRYPTION_ALGORITHMS: &[&str] = &["AES-256-GCM", "ChaCha20-Poly1305", "mime-type-indicated"];

const EXTENSION_TYPES: &[&str] = &[
    "new-sdo",
    "new-sco",
    "new-sro",
    "property-extension",
    "toplevel-property-extension",
];

/// Validates a document: a bundle, a single object, or a JSON array of objects.
pub fn validate_document(doc: &Value) -> Vec<Issue> {
    let mut issues = Vec::new();
    match doc {
        Value::Array(a) => {
            for (i, o) in a.iter().enumerate() {
                validate_at(o, &format!("$[{i}]"), &mut issues);
            }
        }
        other => validate_at(other, "$", &mut issues),
    }
    issues
}

/// Validates one object (or bundle) found at `path`.
pub fn validate_at(v: &Value, path: &str, issues: &mut Vec<Issue>) {
    let mut out = V { issues };
    let Some(m) = v.as_object() else {
        out.add(path, "expected a json object");
        return;
    };
    let Some(t) = m.get("type").and_then(Value::as_str) else {
        out.add(path, "missing required property 'type'");
        return;
    };
    if !valid_type_name(t) {
        out.add(&format!("{path}.type"), format!("invalid type name '{t}'"));
    }
    let cat = category(t);
    // id
    match m.get("id").map(|x| x.as_str()) {
        None => out.add(path, "missing required property 'id'"),
        Some(None) => out.add(&format!("{path}.id"), "must be a string"),
        Some(Some(id)) => {
            if !is_identifier(id, Some(t)) {
                out.add(
                    &format!("{path}.id"),
                    format!("'{id}' is not a valid identifier for type '{t}'"),
                );
            }
        }
    }
    if cat == Category::Bundle {
        if m.contains_key("spec_version") {
            out.add(
                &format!("{path}.spec_version"),
                "bundles must not have spec_version",
            );
        }
        if let Some(objs) = m.get("objects") {
            match objs.as_array() {
                Some(a) => {
                    for (i, o) in a.iter().enumerate() {
                        validate_at(o, &format!("{path}.objects[{i}]"), out.issues);
                    }
                }
                None => out.add(&format!("{path}.objects"), "must be an array"),
            }
        }
        return;
    }
    // property names
    for k in m.keys() {
        let ok = (1..=250).contains(&k.len())
            && k.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_');
        if !ok {
            out.add(
                &format!("{path}.{k}"),
                format!("invalid property name '{k}'"),
            );
        }
    }
    let needs_common = matches!(
        cat,
        Category::Sdo | Category::Sro | Category::Meta | Category::Custom
    );
    match m.get("spec_version") {
        None if needs_common => out.add(path, "missing required property 'spec_version'"),
        Some(sv) if sv.as_str() != Some("2.1") => {
            out.add(&format!("{path}.spec_version"), "must be '2.1'")
        }
        _ => {}
    }
    let ts = |out: &mut V<'_>, k: &str, required: bool| match m.get(k) {
        None if required => out.add(path, format!("missing required property '{k}'")),
        None => {}
        Some(x) => {
            if !x.as_str().is_some_and(valid_timestamp) {
                out.add(
                    &format!("{path}.{k}"),
                    "must be a timestamp like 2016-05-12T08:17:27.000Z",
                );
            }
        }
    };
    if needs_common {
        ts(&mut out, "created", true);
        ts(&mut out, "modified", t != "marking-definition");
        if let (Some(c), Some(md)) = (
            m.get("created")
                .and_then(Value::as_str)
                .and_then(Timestamp::parse)
                .and_then(|t| t.micros()),
            m.get("modified")
                .and_then(Value::as_str)
                .and_then(Timestamp::parse)
                .and_then(|t| t.micros()),
        ) {
            if md < c {
                out.add(
                    &format!("{path}.modified"),
                    "must be later than or equal to 'created'",
                );
            }
        }
    }
    // common optional properties
    if let Some(r) = m.get("created_by_ref") {
        if !r
            .as_str()
            .is_some_and(|s| is_identifier(s, Some("identity")))
        {
            out.add(
                &format!("{path}.created_by_ref"),
                "must be an identity identifier",
            );
        }
    }
    if let Some(r) = m.get("object_marking_refs") {
        check_ref_list(
            &mut out,
            &format!("{path}.object_marking_refs"),
            r,
            Some("marking-definition"),
        );
    }
    if let Some(c) = m.get("confidence") {
        if c.as_u64().is_none_or(|c| c > 100) {
            out.add(
                &format!("{path}.confidence"),
                "must be an integer from 0 to 100",
            );
        }
    }
    if let Some(l) = m.get("labels") {
        if !l.as_array().is_some_and(|a| a.iter().all(Value::is_string)) {
            out.add(&format!("{path}.labels"), "must be a list of strings");
        }
    }
    if let Some(er) = m.get("external_references") {
        match er.as_array() {
            Some(a) => {
                for (i, e) in a.iter().enumerate() {
                    if !e.get("source_name").is_some_and(Value::is_string) {
                        out.add(
                            &format!("{path}.external_references[{i}]"),
                            "missing required property 'source_name'",
                        );
                    }
                }
            }
            None => out.add(&format!("{path}.external_references"), "must be a list"),
        }
    }
    if let Some(gm) = m.get("granular_markings") {
        match gm.as_array() {
            Some(a) => {
                for (i, g) in a.iter().enumerate() {
                    let p = format!("{path}.granular_markings[{i}]");
                    if g.get("selectors")
                        .and_then(Value::as_array)
                        .is_none_or(|s| s.is_empty())
                    {
                        out.add(&p, "missing required property 'selectors'");
                    }
                    if g.get("marking_ref").is_none() && g.get("lang").is_none() {
                        out.add(&p, "requires 'marking_ref' or 'lang'");
                    }
                }
            }
            None => out.add(&format!("{path}.granular_markings"), "must be a list"),
        }
    }
    if let Some(h) = m.get("hashes") {
        match h.as_object() {
            Some(hm) if !hm.is_empty() => {
                for (k, v) in hm {
                    if HASH_ALGOS.contains(&k.as_str()) && !valid_hash(k, v.as_str().unwrap_or(""))
                    {
                        out.add(&format!("{path}.hashes.{k}"), format!("invalid {k} hash"));
                    }
                }
            }
            _ => out.add(&format!("{path}.hashes"), "must be a non-empty dictionary"),
        }
    }
    type_rules(&mut out, t, m, path);
}

fn valid_hash(algo: &str, v: &str) -> bool {
    let hex = |n: usize| v.len() == n && v.bytes().all(|c| c.is_ascii_hexdigit());
    match algo {
        "MD5" => hex(32),
        "SHA-1" => hex(40),
        "SHA-256" | "SHA3-256" => hex(64),
        "SHA-512" | "SHA3-512" => hex(128),
        _ => !v.is_empty(),
    }
}

fn check_ref_list(out: &mut V<'_>, p: &str, v: &Value, of: Option<&str>) {
    match v.as_array() {
        Some(a) if !a.is_empty() => {
            for (i, r) in a.iter().enumerate() {
                if !r.as_str().is_some_and(|s| is_identifier(s, of)) {
                    out.add(&format!("{p}[{i}]"), "must be an identifier");
                }
            }
        }
        _ => out.add(p, "must be a non-empty list of identifiers"),
    }
}

fn type_rules(out: &mut V<'_>, t: &str, m: &Map<String, Value>, path: &str) {
    let req = |out: &mut V<'_>, k: &str| {
        if !m.contains_key(k) {
            out.add(path, format!("missing required property '{k}'"));
        }
    };
    let string = |out: &mut V<'_>, k: &str| {
        if let Some(v) = m.get(k) {
            if !v.is_string() {
                out.add(&format!("{path}.{k}"), "must be a string");
            }
        }
    };
    let refs = |out: &mut V<'_>, k: &str, of: Option<&str>| {
        if let Some(v) = m.get(k) {
            check_ref_list(out, &format!("{path}.{k}"), v, of);
        }
    };
    let one_ref = |out: &mut V<'_>, k: &str| {
        if let Some(v) = m.get(k) {
            if !v.as_str().is_some_and(|s| is_identifier(s, None)) {
                out.add(&format!("{path}.{k}"), "must be an identifier");
            }
        }
    };
    let ts = |out: &mut V<'_>, k: &str| {
        if let Some(v) = m.get(k) {
            if !v.as_str().is_some_and(valid_timestamp) {
                out.add(&format!("{path}.{k}"), "must be a timestamp");
            }
        }
    };
    match t {
        "attack-pattern" | "campaign" | "course-of-action" | "identity" | "incident"
        | "infrastructure" | "intrusion-set" | "threat-actor" | "tool" | "vulnerability" => {
            req(out, "name");
            string(out, "name");
        }
        "grouping" => {
            req(out, "context");
            req(out, "object_refs");
            refs(out, "object_refs", None);
        }
        "indicator" => {
            req(out, "pattern");
            req(out, "pattern_type");
            req(out, "valid_from");
            ts(out, "valid_from");
            ts(out, "valid_until");
            if m.get("pattern_type").and_then(Value::as_str) == Some("stix") {
                if let Some(p) = m.get("pattern").and_then(Value::as_str) {
                    if let Err(e) = crate::pattern::parse(p) {
                        out.add(
                            &format!("{path}.pattern"),
                            format!("invalid stix pattern: {e}"),
                        );
                    }
                }
            }
            if let (Some(a), Some(b)) = (
                m.get("valid_from")
                    .and_then(Value::as_str)
                    .and_then(Timestamp::parse)
                    .and_then(|t| t.micros()),
                m.get("valid_until")
                    .and_then(Value::as_str)
                    .and_then(Timestamp::parse)
                    .and_then(|t| t.micros()),
            ) {
                if b <= a {
                    out.add(
                        &format!("{path}.valid_until"),
                        "must be later than 'valid_from'",
                    );
                }
            }
        }
        "location" => {
            let has = |k: &str| m.contains_key(k);
            if !(has("region") || has("country") || (has("latitude") && has("longitude"))) {
                out.add(
                    path,
                    "requires 'region', 'country', or 'latitude' and 'longitude'",
                );
            }
            if has("latitude") != has("longitude") {
                out.add(path, "'latitude' and 'longitude' must appear together");
            }
        }
        "malware" => {
            req(out, "is_family");
            if m.get("is_family") == Some(&Value::Bool(true)) {
                req(out, "name");
            }
        }
        "malware-analysis" => {
            req(out, "product");
            if !m.contains_key("result") && !m.contains_key("analysis_sco_refs") {
                out.add(path, "requires 'result' or 'analysis_sco_refs'");
            }
        }
        "note" => {
            req(out, "content");
            req(out, "object_refs");
            refs(out, "object_refs", None);
        }
        "observed-data" => {
            req(out, "first_observed");
            req(out, "last_observed");
            req(out, "number_observed");
            ts(out, "first_observed");
            ts(out, "last_observed");
            if let Some(n) = m.get("number_observed") {
                if !n.as_u64().is_some_and(|n| (1..=999_999_999).contains(&n)) {
                    out.add(
                        &format!("{path}.number_observed"),
                        "must be an integer from 1 to 999999999",
                    );
                }
            }
            match (m.contains_key("object_refs"), m.contains_key("objects")) {
                (false, false) => out.add(path, "requires 'object_refs'"),
                (true, true) => out.add(path, "'objects' and 'object_refs' are mutually exclusive"),
                _ => {}
            }
            refs(out, "object_refs", None);
        }
        "opinion" => {
            req(out, "opinion");
            req(out, "object_refs");
            if let Some(o) = m.get("opinion") {
                if !o.as_str().is_some_and(|s| OPINIONS.contains(&s)) {
                    out.add(
                        &format!("{path}.opinion"),
                        "must be one of the opinion enumeration values",
                    );
                }
            }
            refs(out, "object_refs", None);
        }
        "report" => {
            req(out, "name");
            req(out, "published");
            req(out, "object_refs");
            ts(out, "published");
            refs(out, "object_refs", None);
        }
        "relationship" => {
            req(out, "relationship_type");
            req(out, "source_ref");
            req(out, "target_ref");
            one_ref(out, "source_ref");
            one_ref(out, "target_ref");
        }
        "sighting" => {
            req(out, "sighting_of_ref");
            one_ref(out, "sighting_of_ref");
            refs(out, "observed_data_refs", Some("observed-data"));
            refs(out, "where_sighted_refs", None);
        }
        "marking-definition" => {
            let has_ext = m.contains_key("extensions");
            if !has_ext {
                req(out, "definition_type");
                req(out, "definition");
            }
            if let Some(dt) = m.get("definition_type").and_then(Value::as_str) {
                let d = m.get("definition");
                match dt {
                    "tlp" => {
                        let ok = d
                            .and_then(|d| d.get("tlp"))
                            .and_then(Value::as_str)
                            .is_some_and(|l| matches!(l, "white" | "green" | "amber" | "red"));
                        if !ok {
                            out.add(
                                &format!("{path}.definition.tlp"),
                                "must be white, green, amber or red",
                            );
                        }
                    }
                    "statement" => {
                        if !d
                            .and_then(|d| d.get("statement"))
                            .is_some_and(Value::is_string)
                        {
                            out.add(&format!("{path}.definition.statement"), "must be a string");
                        }
                    }
                    _ => {}
                }
            }
        }
        "language-content" => {
            req(out, "object_ref");
            req(out, "contents");
            one_ref(out, "object_ref");
        }
        "extension-definition" => {
            for k in [
                "name",
                "schema",
                "version",
                "extension_types",
                "created_by_ref",
            ] {
                req(out, k);
            }
            if let Some(et) = m.get("extension_types") {
                let ok = et.as_array().is_some_and(|a| {
                    !a.is_empty()
                        && a.iter()
                            .all(|x| x.as_str().is_some_and(|s| EXTENSION_TYPES.contains(&s)))
                });
                if !ok {
                    out.add(
                        &format!("{path}.extension_types"),
                        "must be a list of extension type values",
                    );
                }
            }
        }
        // SCOs
        "autonomous-system" => {
            req(out, "number");
            if let Some(n) = m.get("number") {
                if !n.is_u64() {
                    out.add(&format!("{path}.number"), "must be a non-negative integer");
                }
            }
        }
        "directory" => req(out, "path"),
        "domain-name" | "email-addr" | "ipv4-addr" | "ipv6-addr" | "mac-addr" | "url" => {
            req(out, "value");
            string(out, "value");
        }
        "email-message" => req(out, "is_multipart"),
        "file" => {
            if !m.contains_key("hashes") && !m.contains_key("name") {
                out.add(path, "requires 'hashes' or 'name'");
            }
        }
        "mutex" | "software" => req(out, "name"),
        "network-traffic" => {
            req(out, "protocols");
            if !m.contains_key("src_ref") && !m.contains_key("dst_ref") {
                out.add(path, "requires 'src_ref' or 'dst_ref'");
            }
            for k in ["src_port", "dst_port"] {
                if let Some(p) = m.get(k) {
                    if p.as_u64().is_none_or(|p| p > 65535) {
                        out.add(&format!("{path}.{k}"), "must be an integer from 0 to 65535");
                    }
                }
            }
        }
        "artifact" => {
            if m.contains_key("payload_bin") == m.contains_key("url") {
                out.add(path, "requires exactly one of 'payload_bin' or 'url'");
            }
            if m.contains_key("url") && !m.contains_key("hashes") {
                out.add(path, "'hashes' is required with 'url'");
            }
            if let Some(alg) = m.get("encryption_algorithm")
                && !alg
                    .as_str()
                    .is_some_and(|a| ENCRYPTION_ALGORITHMS.contains(&a))
            {
                out.add(
                    &format!("{path}.encryption_algorithm"),
                    "must be one of the encryption-algorithm-enum values (AES-256-GCM, ChaCha20-Poly1305, mime-type-indicated)",
                );
            }
        }
        _ => {}
    }
}

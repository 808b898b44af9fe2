//! The OASIS Common Alerting Protocol, version 1.2: alert documents as Rust values, written
//! and read as XML (`urn:oasis:names:tc:emergency:cap:1.2`), checked against the schema and
//! against the rules the standard states in prose beyond it, plus the Atom index that
//! alerting networks poll for a feed of alerts.
//!
//! - [`Alert::to_xml`] validates and writes one document; [`Alert::from_xml`] reads one,
//!   refusing anything the CAP 1.2 XSD refuses (unknown or misplaced elements, bad
//!   enumerations, bad dates) and anything that breaks a rule of the standard
//!   ([`Alert::validate`], see `rules.rs` for the list).
//! - [`feed::Feed`] writes an Atom 1.0 feed whose entries embed the CAP documents.
//!
//! **API boundary:** this crate knows nothing of citysec and could be published unchanged.

mod datetime;
pub mod feed;
mod geo;
mod read;
mod rules;
mod write;

use std::fmt;

pub use crate::datetime::DateTime;
pub use crate::geo::{Circle, Point, Polygon};
pub use crate::read::Limits;

/// The CAP 1.2 namespace.
pub const NAMESPACE: &str = "urn:oasis:names:tc:emergency:cap:1.2";
/// The XML-DSig namespace, whose elements the schema allows at the end of an alert.
pub const XMLDSIG_NAMESPACE: &str = "http://www.w3.org/2000/09/xmldsig#";

/// Why a document could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The input is not well-formed XML (or uses a feature this reader refuses, such as a DTD).
    #[error("malformed xml at byte {offset}: {message}")]
    Xml { offset: u64, message: String },
    /// The input is larger or deeper than the reader's [`Limits`].
    #[error("document too large: {0}")]
    TooLarge(String),
    /// Well-formed XML that the CAP 1.2 schema refuses.
    #[error("not valid CAP 1.2 at {path}: {message}")]
    Schema { path: String, message: String },
    /// Schema-valid, but a rule of the CAP 1.2 standard is broken.
    #[error("breaks a CAP 1.2 rule at {path}: {message}")]
    Rule { path: String, message: String },
}

impl Error {
    pub(crate) fn schema(path: impl Into<String>, message: impl Into<String>) -> Error {
        Error::Schema {
            path: path.into(),
            message: message.into(),
        }
    }

    pub(crate) fn rule(path: impl Into<String>, message: impl Into<String>) -> Error {
        Error::Rule {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Defines a closed CAP enumeration with its XML spelling.
macro_rules! cap_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The spelling in CAP XML.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// Parses the exact CAP spelling (case-sensitive, as the schema is).
            pub fn parse(text: &str) -> Option<$name> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

cap_enum!(
    /// `<status>`: how to handle the message.
    Status { Actual = "Actual", Exercise = "Exercise", System = "System", Test = "Test", Draft = "Draft" }
);
cap_enum!(
    /// `<msgType>`: what the message does.
    MsgType { Alert = "Alert", Update = "Update", Cancel = "Cancel", Ack = "Ack", Error = "Error" }
);
cap_enum!(
    /// `<scope>`: who may see the message.
    Scope { Public = "Public", Restricted = "Restricted", Private = "Private" }
);
cap_enum!(
    /// `<category>` of an info block.
    Category {
        Geo = "Geo", Met = "Met", Safety = "Safety", Security = "Security", Rescue = "Rescue",
        Fire = "Fire", Health = "Health", Env = "Env", Transport = "Transport", Infra = "Infra",
        Cbrne = "CBRNE", Other = "Other",
    }
);
cap_enum!(
    /// `<responseType>`: the action recommended to the audience.
    ResponseType {
        Shelter = "Shelter", Evacuate = "Evacuate", Prepare = "Prepare", Execute = "Execute",
        Avoid = "Avoid", Monitor = "Monitor", Assess = "Assess", AllClear = "AllClear", None = "None",
    }
);
cap_enum!(
    /// `<urgency>`.
    Urgency { Immediate = "Immediate", Expected = "Expected", Future = "Future", Past = "Past", Unknown = "Unknown" }
);
cap_enum!(
    /// `<severity>`.
    Severity { Extreme = "Extreme", Severe = "Severe", Moderate = "Moderate", Minor = "Minor", Unknown = "Unknown" }
);
cap_enum!(
    /// `<certainty>`.
    Certainty { Observed = "Observed", Likely = "Likely", Possible = "Possible", Unlikely = "Unlikely", Unknown = "Unknown" }
);

/// One CAP alert message (`<alert>`).
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// Unique for the sender; no spaces, commas, `<` or `&`.
    pub identifier: String,
    /// Globally unique id of the sender (for example a domain name); the same restrictions.
    pub sender: String,
    pub sent: DateTime,
    pub status: Status,
    pub msg_type: MsgType,
    pub source: Option<String>,
    pub scope: Scope,
    /// Required when `scope` is `Restricted`.
    pub restriction: Option<String>,
    /// The intended recipients; required when `scope` is `Private`. Written space-separated,
    /// with entries that contain spaces in double quotes.
    pub addresses: Vec<String>,
    pub codes: Vec<String>,
    pub note: Option<String>,
    /// The earlier messages this one refers to; required for `Update`, `Cancel`, `Ack` and
    /// `Error`.
    pub references: Vec<Reference>,
    /// Incident ids that relate messages; written like `addresses`.
    pub incidents: Vec<String>,
    /// One block per language (or per distinct event).
    pub info: Vec<Info>,
}

/// One entry of `<references>`: `sender,identifier,sent`.
#[derive(Debug, Clone, PartialEq)]
pub struct Reference {
    pub sender: String,
    pub identifier: String,
    pub sent: DateTime,
}

impl Reference {
    /// The reference to `alert`.
    pub fn to(alert: &Alert) -> Reference {
        Reference {
            sender: alert.sender.clone(),
            identifier: alert.identifier.clone(),
            sent: alert.sent,
        }
    }
}

/// `<valueName>` and `<value>` (event codes, parameters, geocodes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedValue {
    pub name: String,
    pub value: String,
}

/// `<info>`: the event, its urgency, severity and certainty, texts for one language, and
/// the affected areas.
#[derive(Debug, Clone, PartialEq)]
pub struct Info {
    /// An RFC 3066 language tag; absent means `en-US`.
    pub language: Option<String>,
    /// At least one.
    pub categories: Vec<Category>,
    pub event: String,
    pub response_types: Vec<ResponseType>,
    pub urgency: Urgency,
    pub severity: Severity,
    pub certainty: Certainty,
    pub audience: Option<String>,
    pub event_codes: Vec<NamedValue>,
    pub effective: Option<DateTime>,
    pub onset: Option<DateTime>,
    pub expires: Option<DateTime>,
    pub sender_name: Option<String>,
    pub headline: Option<String>,
    pub description: Option<String>,
    pub instruction: Option<String>,
    /// An absolute URI with more information.
    pub web: Option<String>,
    pub contact: Option<String>,
    pub parameters: Vec<NamedValue>,
    pub resources: Vec<Resource>,
    pub areas: Vec<Area>,
}

impl Info {
    /// An info block with the required elements and nothing else.
    pub fn new(
        category: Category,
        event: impl Into<String>,
        urgency: Urgency,
        severity: Severity,
        certainty: Certainty,
    ) -> Info {
        Info {
            language: None,
            categories: vec![category],
            event: event.into(),
            response_types: Vec::new(),
            urgency,
            severity,
            certainty,
            audience: None,
            event_codes: Vec::new(),
            effective: None,
            onset: None,
            expires: None,
            sender_name: None,
            headline: None,
            description: None,
            instruction: None,
            web: None,
            contact: None,
            parameters: Vec::new(),
            resources: Vec::new(),
            areas: Vec::new(),
        }
    }
}

/// `<resource>`: a file that supplements the info block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    pub description: String,
    pub mime_type: String,
    /// Size in bytes.
    pub size: Option<u64>,
    /// An absolute URI.
    pub uri: Option<String>,
    /// The content itself, base64.
    pub deref_uri: Option<String>,
    /// SHA-1 of the content, hex.
    pub digest: Option<String>,
}

/// `<area>`: a region described in words and by polygons, circles and geocodes.
#[derive(Debug, Clone, PartialEq)]
pub struct Area {
    pub description: String,
    pub polygons: Vec<Polygon>,
    pub circles: Vec<Circle>,
    pub geocodes: Vec<NamedValue>,
    /// Feet above mean sea level.
    pub altitude: Option<f64>,
    /// Feet above mean sea level; only with `altitude`.
    pub ceiling: Option<f64>,
}

impl Area {
    pub fn new(description: impl Into<String>) -> Area {
        Area {
            description: description.into(),
            polygons: Vec::new(),
            circles: Vec::new(),
            geocodes: Vec::new(),
            altitude: None,
            ceiling: None,
        }
    }
}

impl Alert {
    /// A public `Alert` message with no info block yet.
    pub fn new(
        identifier: impl Into<String>,
        sender: impl Into<String>,
        sent: DateTime,
        status: Status,
    ) -> Alert {
        Alert {
            identifier: identifier.into(),
            sender: sender.into(),
            sent,
            status,
            msg_type: MsgType::Alert,
            source: None,
            scope: Scope::Public,
            restriction: None,
            addresses: Vec::new(),
            codes: Vec::new(),
            note: None,
            references: Vec::new(),
            incidents: Vec::new(),
            info: Vec::new(),
        }
    }

    /// Checks the rules of the standard that the schema cannot express; the first broken
    /// rule is the error.
    pub fn validate(&self) -> Result<(), Error> {
        rules::check(self)
    }

    /// Validates and writes the document (UTF-8, with an XML declaration).
    pub fn to_xml(&self) -> Result<String, Error> {
        self.validate()?;
        Ok(write::alert(self))
    }

    /// Reads and validates one document with the default [`Limits`].
    pub fn from_xml(text: &str) -> Result<Alert, Error> {
        Alert::from_xml_with_limits(text, &Limits::default())
    }

    /// Reads and validates one document.
    pub fn from_xml_with_limits(text: &str, limits: &Limits) -> Result<Alert, Error> {
        let alert = read::alert(text, limits)?;
        alert.validate()?;
        Ok(alert)
    }

    /// The `Cancel` message for this alert: same sender and scope, referencing it.
    pub fn cancel(&self, identifier: impl Into<String>, sent: DateTime, note: &str) -> Alert {
        Alert {
            identifier: identifier.into(),
            sender: self.sender.clone(),
            sent,
            status: self.status,
            msg_type: MsgType::Cancel,
            source: self.source.clone(),
            scope: self.scope,
            restriction: self.restriction.clone(),
            addresses: self.addresses.clone(),
            codes: self.codes.clone(),
            note: (!note.is_empty()).then(|| note.to_owned()),
            references: vec![Reference::to(self)],
            incidents: self.incidents.clone(),
            info: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests;

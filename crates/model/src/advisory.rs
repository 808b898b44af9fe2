//! Public advisories (warnings to residents) as the platform keeps them: who drafted,
//! approved and issued them, their content, and once issued the CAP document and its
//! signature. The `cap` crate renders them; `model` stays free of XML.

use serde::{Deserialize, Serialize};

use crate::{Location, Timestamp};

/// Where an advisory is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdvisoryState {
    /// Written, not yet approved.
    Draft,
    /// Approved by a second person; ready to issue.
    Approved,
    /// Published in the public feed.
    Issued,
    /// Issued, then withdrawn by its cancel message.
    Cancelled,
    /// Issued, then replaced by an update.
    Superseded,
    /// A prepared cancel that was never needed, or a draft that was discarded.
    Withdrawn,
}

impl AdvisoryState {
    pub fn as_str(self) -> &'static str {
        match self {
            AdvisoryState::Draft => "draft",
            AdvisoryState::Approved => "approved",
            AdvisoryState::Issued => "issued",
            AdvisoryState::Cancelled => "cancelled",
            AdvisoryState::Superseded => "superseded",
            AdvisoryState::Withdrawn => "withdrawn",
        }
    }

    /// Whether the advisory was published (it stays in the public feed).
    pub fn was_issued(self) -> bool {
        matches!(
            self,
            AdvisoryState::Issued | AdvisoryState::Cancelled | AdvisoryState::Superseded
        )
    }
}

/// CAP `status` values an advisory may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AdvisoryStatus {
    /// A real warning to the public.
    Actual,
    /// Part of an exercise.
    Exercise,
    /// A technical test; the public should ignore it.
    Test,
}

/// CAP `msgType` values an advisory may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AdvisoryMsgType {
    Alert,
    Update,
    Cancel,
}

/// What an advisory was drafted from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "id", rename_all = "snake_case")]
pub enum AdvisoryOrigin {
    Alert(String),
    Incident(String),
}

/// The text of an advisory in one language (one CAP `info` block).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdvisoryText {
    /// An RFC 3066 tag such as `en-US`.
    pub language: String,
    pub headline: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub instruction: String,
}

/// A circle: centre and radius in kilometres.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdvisoryCircle {
    pub center: Location,
    pub radius_km: f64,
}

/// A named code for an area (CAP `geocode`), e.g. a district number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Geocode {
    pub name: String,
    pub value: String,
}

/// An affected area.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdvisoryArea {
    pub description: String,
    /// Closed rings (first point equal to the last, at least four points).
    #[serde(default)]
    pub polygons: Vec<Vec<Location>>,
    #[serde(default)]
    pub circles: Vec<AdvisoryCircle>,
    #[serde(default)]
    pub geocodes: Vec<Geocode>,
}

/// A supplementary file (CAP `resource`), by URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdvisoryResource {
    pub description: String,
    pub mime_type: String,
    pub uri: String,
}

/// What an advisory says. The enumerations use CAP's spellings (`Safety`, `Immediate`,
/// `Minor`, `Observed`, `AllClear`); they are checked when the advisory is drafted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdvisoryContent {
    /// What the event is, e.g. `Siren false alarm`.
    pub event: String,
    pub categories: Vec<String>,
    pub urgency: String,
    pub severity: String,
    pub certainty: String,
    #[serde(default)]
    pub response_types: Vec<String>,
    /// One entry per language; the first is the primary one.
    pub texts: Vec<AdvisoryText>,
    #[serde(default)]
    pub areas: Vec<AdvisoryArea>,
    #[serde(default)]
    pub resources: Vec<AdvisoryResource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<String>,
    /// A note for the CAP `note` element (for example why an advisory is cancelled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A public advisory as the platform keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Advisory {
    pub id: String,
    /// Grows with every change; updates name the version they replace.
    pub version: u64,
    pub state: AdvisoryState,
    pub status: AdvisoryStatus,
    pub msg_type: AdvisoryMsgType,
    /// The advisory an update or cancel acts on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub references: Option<String>,
    pub content: AdvisoryContent,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<AdvisoryOrigin>,
    /// The authenticated principal who drafted it.
    pub drafted_by: String,
    pub drafted_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<Timestamp>,
    /// For an issued advisory: its prepared cancel (an advisory in `draft`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_id: Option<String>,
    /// Once issued: the CAP identifier, the exact document served and its signature
    /// (base64 Ed25519 over the document's bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap_identifier: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

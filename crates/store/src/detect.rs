//! Detection state kept by the store: the analysts' learns and mutes (so a restart does
//! not bring back alerts someone closed) and the indicators the city wrote itself.

use async_trait::async_trait;
use model::Timestamp;
use serde::{Deserialize, Serialize};

use crate::Result;

/// A learn or a mute: `rule` stays quiet for `key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suppression {
    pub rule: String,
    pub key: String,
    /// `learned` or `muted`.
    pub kind: String,
    /// For mutes: when the mute ends (none: until lifted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<Timestamp>,
    /// Who decided, and why.
    pub actor: String,
    #[serde(default)]
    pub reason: String,
    /// The alert it was decided on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_id: Option<String>,
    pub created_at: Timestamp,
}

/// A threat indicator written by the city (a STIX 2.1 `indicator` object, kept whole).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalIndicator {
    pub id: String,
    pub name: String,
    pub pattern: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<Timestamp>,
    /// The STIX object as received.
    pub object: serde_json::Value,
    /// Who added it.
    pub actor: String,
    pub created_at: Timestamp,
}

/// What a detection engine had learned when its owner last saved it (`detect::Learned`
/// as JSON: the store does not look inside).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LearnedState {
    /// Which engine: a partition, or the cross-device engine, named by the caller.
    pub shard: String,
    pub taken_at: Timestamp,
    pub body: String,
}

/// Durable detection state.
#[async_trait]
pub trait DetectStore: Send + Sync + 'static {
    /// Adds or replaces the suppression for (`rule`, `key`).
    async fn put_suppression(&self, suppression: &Suppression) -> Result<()>;
    /// Removes it; `NotFound` if there was none.
    async fn delete_suppression(&self, rule: &str, key: &str) -> Result<()>;
    async fn list_suppressions(&self) -> Result<Vec<Suppression>>;

    /// Adds or replaces indicators (by id) in one transaction.
    async fn put_indicators(&self, indicators: &[LocalIndicator]) -> Result<()>;
    /// Removes an indicator; `NotFound` if there was none.
    async fn delete_indicator(&self, id: &str) -> Result<()>;
    /// Indicators in the order they were added; pass the last id of a page as `after`.
    async fn list_indicators(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<LocalIndicator>>;

    /// Replaces the saved learned state of `state.shard`, unless the saved one was taken
    /// later (a slow writer does not undo a newer save); returns whether it was written.
    async fn put_learned(&self, state: &LearnedState) -> Result<bool>;
    /// The saved learned state of a shard.
    async fn get_learned(&self, shard: &str) -> Result<Option<LearnedState>>;
}

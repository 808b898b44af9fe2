//! Threat intelligence storage ([`IntelStore`]): the STIX objects of sharing collections
//! with every version and its `date_added`, the manifest data, TAXII POST statuses and
//! the `added_after` bookmarks of partner feeds.
//!
//! Records are read in `(date_added, id, version)` order, continuing strictly after a
//! position, so paging costs O(page) whatever the collection's size. Each write gets one
//! `date_added`, strictly later than any before it in the collection.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::Result;

/// One version of an object to store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntelObject {
    pub id: String,
    pub object_type: String,
    /// The version as written (`modified`, else `created`).
    pub version: String,
    pub version_us: i64,
    pub spec_version: String,
    /// TLP rank: 0 CLEAR, 1 GREEN, 2 AMBER, 3 AMBER+STRICT, 4 RED.
    pub tlp: u8,
    /// The object's JSON text.
    pub body: String,
}

/// One stored version, as read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntelRecord {
    pub id: String,
    pub version: String,
    pub version_us: i64,
    pub date_added_us: i64,
    pub spec_version: String,
    pub tlp: u8,
    /// Present when the query asked for bodies.
    pub body: Option<String>,
}

/// What storing one object did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntelAdded {
    pub id: String,
    pub version: String,
    /// `false` when the version was already stored (it keeps its first `date_added`).
    pub new: bool,
    pub date_added_us: i64,
}

/// Which versions of each object (`match[version]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntelVersions {
    pub first: bool,
    pub last: bool,
    pub all: bool,
    pub at: Vec<i64>,
}

/// A read (or delete) of one collection's records.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntelQuery {
    pub collection: String,
    pub object_id: Option<String>,
    /// Continue strictly after this `(date_added_us, id, version_us)`.
    pub after: Option<(i64, String, i64)>,
    /// Only records added strictly after this.
    pub added_after: Option<i64>,
    pub ids: Vec<String>,
    pub types: Vec<String>,
    pub versions: IntelVersions,
    /// Empty matches every spec version.
    pub spec_versions: Vec<String>,
    /// Only records with at most this TLP rank.
    pub max_tlp: u8,
    /// At most this many (capped at [`crate::MAX_LIMIT`]).
    pub limit: usize,
    pub with_body: bool,
}

/// A TAXII status resource as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntelStatus {
    pub root: String,
    pub id: String,
    pub owner: String,
    pub created_us: i64,
    /// The status resource's JSON text.
    pub body: String,
}

/// Threat intelligence storage. Every method is safe to call from many tasks.
#[async_trait]
pub trait IntelStore: Send + Sync {
    /// Stores objects in one transaction (all or none), every new one with the same
    /// `date_added`: `max(now_us, last date_added of the collection + 1)`.
    async fn intel_add(
        &self,
        collection: &str,
        objects: &[IntelObject],
        now_us: i64,
    ) -> Result<Vec<IntelAdded>>;
    /// Records matching `query` in `(date_added, id, version)` order.
    async fn intel_query(&self, query: &IntelQuery) -> Result<Vec<IntelRecord>>;
    /// How many distinct objects of `collection` had a version added strictly after
    /// `added_after_us` (an object with several new versions counts once).
    async fn intel_count(&self, collection: &str, added_after_us: i64) -> Result<u64>;
    /// Deletes the versions of `query.object_id` matching its version and spec-version
    /// filters; returns how many. `Invalid` without an object id.
    async fn intel_delete(&self, query: &IntelQuery) -> Result<u64>;
    /// Creates or replaces a status.
    async fn intel_put_status(&self, status: &IntelStatus) -> Result<()>;
    async fn intel_get_status(&self, root: &str, id: &str) -> Result<Option<IntelStatus>>;
    /// Deletes statuses created before `before_us`; returns how many.
    async fn intel_prune_statuses(&self, before_us: i64) -> Result<u64>;
    /// A partner feed's `added_after` bookmark.
    async fn intel_bookmark(&self, feed: &str) -> Result<Option<String>>;
    async fn intel_set_bookmark(&self, feed: &str, added_after: &str) -> Result<()>;
}

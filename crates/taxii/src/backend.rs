//! The storage and identity the server sits on, implemented by the embedding application.

use async_trait::async_trait;
use stix::object::tlp::Tlp;

use crate::access::{Credentials, Principal};
use crate::query::Query;
use crate::types::Status;

/// One stored version of an object, as a backend returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub id: String,
    /// The version as written (`modified`, else `created`, else `date_added`).
    pub version: String,
    pub version_us: i64,
    pub date_added_us: i64,
    /// `2.0` or `2.1`.
    pub spec_version: String,
    pub tlp: Tlp,
    /// The object's JSON text, when the query asked for objects.
    pub object: Option<String>,
}

/// One object to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewObject {
    pub id: String,
    pub object_type: String,
    pub version: String,
    pub version_us: i64,
    pub spec_version: String,
    pub tlp: Tlp,
    /// The object's JSON text.
    pub object: String,
}

/// What storing one object did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Added {
    pub id: String,
    pub version: String,
    /// `false` when this version was already stored (it keeps its `date_added`).
    pub new: bool,
}

/// A stored status resource and who may read it.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusRecord {
    /// The principal that posted the envelope.
    pub owner: String,
    pub created_us: i64,
    pub status: Status,
}

/// A backend failure (reported to clients as a `500` or `503` without details).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    #[error("backend failure: {0}")]
    Internal(String),
}

/// Storage and authentication for [`crate::server::router`]. Collections are named by
/// `(api root, collection id)`.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Maps credentials to a principal; `None` when they are wrong (the server answers
    /// `401`). Never called with [`Credentials::None`].
    async fn authenticate(
        &self,
        credentials: &Credentials,
    ) -> Result<Option<Principal>, BackendError>;

    /// Records in `(date_added, id, version)` order matching `query`, at most
    /// `query.limit`.
    async fn query(
        &self,
        root: &str,
        collection: &str,
        query: &Query,
    ) -> Result<Vec<Record>, BackendError>;

    /// Stores objects in one transaction: either all of them are stored or none is.
    /// Every object of one call gets the same `date_added`, later than any record already
    /// in the collection, so a reader's cursor never skips a record added after it.
    async fn add(
        &self,
        root: &str,
        collection: &str,
        objects: Vec<NewObject>,
    ) -> Result<Vec<Added>, BackendError>;

    /// Deletes the versions of `object_id` matching `query`'s version and spec-version
    /// filters; returns how many were deleted.
    async fn delete(
        &self,
        root: &str,
        collection: &str,
        object_id: &str,
        query: &Query,
    ) -> Result<u64, BackendError>;

    /// Creates or replaces a status resource.
    async fn save_status(&self, root: &str, status: &StatusRecord) -> Result<(), BackendError>;

    async fn load_status(&self, root: &str, id: &str)
    -> Result<Option<StatusRecord>, BackendError>;
}
